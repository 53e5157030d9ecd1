"""What a runtime does not offer is a sentence it declares (`lacks`), checked by the CLI through able()
before anything runs: never a method that raises, never an AttributeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfe_deploy.config import loader
from mfe_deploy.console import Console
from mfe_deploy.exec.host import Host, LocalFiles
from mfe_deploy.exec.process import LocalProcess
from mfe_deploy.runtimes import registry
from mfe_deploy.runtimes.contract import (
    Acme,
    Deployment,
    Images,
    Nodes,
    OneOff,
    Rollbacks,
    Runtime,
    Stepwise,
    Unsupported,
    able,
)
from tests.conftest import Project

ALL = (Rollbacks, Images, OneOff, Acme, Nodes)


def _runtime(project: Project, name: str, *, remote: bool = False) -> Runtime:
    root = project.root / "remote"
    host = Host("deploy@example.test" if remote else "local", LocalProcess(), LocalFiles(), root, remote=remote)
    loaded = loader.load(project.root, "staging")
    return registry.create(name, Deployment(project.root, loaded, Console(), host, lambda: pytest.fail("no secret")))


@pytest.mark.parametrize(
    ("name", "remote", "offered"),
    [
        ("docker", False, {Rollbacks, Images, OneOff, Acme}),
        ("docker", True, {Rollbacks, Images, Acme}),
        ("swarm", False, {Rollbacks, Nodes}),
        ("local", False, {OneOff, Acme}),
    ],
)
def test_each_runtime_offers_what_it_implements_and_says_why_not_for_the_rest(
    project: Project, name: str, remote: bool, offered: set[type]
) -> None:
    rt = _runtime(project, name, remote=remote)
    for capability in ALL:
        if capability in offered:
            assert able(rt, capability) is rt
            continue
        with pytest.raises(Unsupported) as refused:
            able(rt, capability)
        why = str(refused.value)
        assert why == rt.lacks[capability.__name__], (name, capability.__name__)
        assert len(why.splitlines()) == 1 and len(why) > 30  # a sentence, not a class name


def test_a_declared_lack_is_every_lack_the_runtime_has(project: Project) -> None:
    """`lacks` names capabilities only, and none the runtime implements without also lacking it here."""
    names = {c.__name__ for c in ALL}
    for name in registry.available():
        rt = _runtime(project, name)
        assert set(rt.lacks) <= names, (name, rt.lacks)
        missing = {c.__name__ for c in ALL if not isinstance(rt, c)}
        assert missing <= set(rt.lacks), (name, missing - set(rt.lacks))


def test_the_cli_says_the_sentence_and_exits_1(project: Project) -> None:
    result = project.cli("rollback", "auth", "--env", "development", "--runtime", "local")
    assert result.code == 1, result
    assert "rollback needs versioned images: it works on the docker runtime" in result.err
    assert "Traceback" not in result.err and "AttributeError" not in result.err
    result = project.cli("run", "auth", "--env", "development", "--runtime", "swarm", "--", "true")
    assert result.code == 1 and "one-off commands and db shell on a swarm are not offered yet" in result.err, result


def test_swarm_carries_none_of_dockers_rollout(tmp_path: Path, project: Project) -> None:
    """Swarm composes the parts it shares with docker: the start-first rollout, compose and the gateway's
    colours are not in it (it inherited all of them before)."""
    rt = _runtime(project, "swarm")
    for name in ("rollout", "compose", "_switch_gateways", "_roll", "_publish_gateways"):
        assert not hasattr(rt, name), name


@pytest.mark.parametrize("name", ["docker", "swarm", "local"])
def test_every_runtime_runs_up_as_a_plan(project: Project, name: str) -> None:
    """app.up executes a plan on every runtime: each implements the stepwise primitives (prepare, a phase,
    failed, rolled_back, finish); none converges on its own any more."""
    assert isinstance(_runtime(project, name), Stepwise)
