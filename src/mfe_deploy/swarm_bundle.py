"""What a Swarm environment deploys, rendered: the compose bundle turned into `stack.yml` (every unit) and
`stores.yml` (the stores, deployed first). `up` on Swarm and `render` both write this, so `render --check`
compares with what `up` wrote. Files `up` makes once beside the bundle (nginx's self-signed pair, the
database's TLS set) are read through `made`: the stack names its secrets by their contents' digests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from mfe_deploy import swarm_stack
from mfe_deploy.config.models import Environment
from mfe_deploy.config.urls import DB_TLS_DIR
from mfe_deploy.render import LIVE_NETWORK, Bundle, BundleFile, Capabilities, NginxPaths, nginx_conf

MADE_ONCE = (
    "nginx/ssl/cert.pem",
    "nginx/ssl/key.pem",
    *(f"{DB_TLS_DIR}/{name}" for name in ("ca.pem", "server.crt", "server.key")),
)


def swarm_bundle(env: Environment, base: Bundle, caps: Capabilities, made: Callable[[str], str | None]) -> Bundle:
    files = dict(base.files)
    compose = yaml.safe_load(files.pop("compose.yml").text)
    # nginx resolves the gateway's service name per request here (Swarm's DNS lists the running tasks):
    # the docker runtime's live network and colours have no use.
    compose["networks"].pop(LIVE_NETWORK, None)
    if "nginx" in compose["services"]:
        nets = compose["services"]["nginx"]["networks"]
        compose["services"]["nginx"]["networks"] = [n for n in nets if n != LIVE_NETWORK]
    if env.nginx.enabled:
        paths = NginxPaths(resolver="127.0.0.11")
        files["nginx/nginx.conf"] = BundleFile(nginx_conf(env, paths, caps))
        tls = env.nginx.tls
        if tls.mode == "files":
            assert tls.certificate is not None and tls.key is not None
            files["nginx/ssl/cert.pem"] = BundleFile(Path(tls.certificate).read_text())
            files["nginx/ssl/key.pem"] = BundleFile(Path(tls.key).read_text(), secret=True)
    contents = {path: file.text.encode() for path, file in files.items()}
    for path in MADE_ONCE:  # made once by `up` beside the bundle, not rendered
        if path not in contents:
            contents[path] = (made(path) or "").encode()
    doc = swarm_stack.stack(env, compose, contents)
    files["stack.yml"] = BundleFile(swarm_stack.dump(doc, env.name))
    stores = swarm_stack.only(doc, [u for u in swarm_stack.STORES if u in doc["services"]])
    files["stores.yml"] = BundleFile(swarm_stack.dump(stores, env.name))
    return Bundle(dict(sorted(files.items())))
