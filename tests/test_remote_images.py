"""Images go to a remote engine without a registry: `docker save` here streamed into `docker load`
there over SSH, only for the tags it lacks. The "remote" engine is a second dockerd started by this
test (its own data root and socket, no networking of its own), reached through a real sshd whose
sessions point DOCKER_HOST at it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfe_deploy import images
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.remote import ssh
from mfe_deploy.remote.target import SshTarget
from tests.engines import engine_answers, second_engine
from tests.sshd import SSHD, sshd

if os.geteuid() != 0 or not SSHD.exists() or not engine_answers() or shutil.which("dockerd") is None:
    if os.environ.get("MFE_REQUIRE_DOCKER") == "1":
        raise RuntimeError("MFE_REQUIRE_DOCKER=1 but no sshd, root or Docker engine for the image shipping test")
    pytest.skip("needs root, openssh-server and dockerd", allow_module_level=True)


@pytest.fixture(scope="module")
def other_engine() -> Iterator[str]:
    with second_engine() as sock:
        yield sock


def _tiny_image(tag: str, content: bytes) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("probe.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    subprocess.run(["docker", "import", "-", tag], input=data.getvalue(), capture_output=True, check=True)


def test_only_the_missing_images_are_shipped_over_ssh(tmp_path: Path, other_engine: str) -> None:
    run = uuid.uuid4().hex[:8]
    tags = [f"mfe-ship/probe:{run}-1", f"mfe-ship/probe:{run}-2"]
    for n, tag in enumerate(tags):
        _tiny_image(tag, f"{run} {n}\n".encode())
    here = LocalProcess()
    try:
        with sshd(tmp_path / "sshd", setenv=f"DOCKER_HOST={other_engine}") as server:
            target = SshTarget("root", "127.0.0.1", server.port, server.user_key, tmp_path / "known", "mfe", 5)
            ssh.trust(target, ssh.scan(target))
            with ssh.session(target, "remote") as there:
                local_ids = images.image_ids(here, tags)
                assert all(local_ids.values())
                assert images.image_ids(there, tags) == dict.fromkeys(tags, "")  # the other engine has neither
                todo = images.plan_ship(local_ids, images.image_ids(there, tags))
                assert todo == sorted(tags)
                sent = images.ship(todo, here, there)
                assert sent > 0
                assert images.image_ids(there, tags) == local_ids  # same image ids on both engines
                assert images.plan_ship(local_ids, images.image_ids(there, tags)) == []  # nothing twice

                # A tag that now names another image here is sent again; the other one is not.
                _tiny_image(tags[0], f"{run} changed\n".encode())
                local_ids = images.image_ids(here, tags)
                assert images.plan_ship(local_ids, images.image_ids(there, tags)) == [tags[0]]

                with pytest.raises(images.BuildFailed, match="failed in docker save"):
                    images.ship([f"mfe-ship/probe:{run}-missing"], here, there)
    finally:
        subprocess.run(["docker", "image", "rm", *tags], capture_output=True)
