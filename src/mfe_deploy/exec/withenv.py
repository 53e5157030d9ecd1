"""`python -m mfe_deploy.exec.withenv ENV_FILE DIR -- COMMAND...`: run a service of yours with the
variables of its env file (0600), from DIR. The values never pass through argv or a supervisor's config."""

from __future__ import annotations

import os
import sys


def read_env_file(path: str) -> dict[str, str]:
    """KEY='value' lines as mfe-deploy writes them (single quotes, taken literally); # comments."""
    with open(path, encoding="utf-8", newline="") as handle:
        return parse_env_text(handle.read())


def parse_env_text(text: str) -> dict[str, str]:
    values = {}
    for raw in text.split("\n"):  # only \n ends a line: text mode also splits on \r
        line = raw.strip(" \t")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key.strip(" \t")] = value
    return values


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: python -m mfe_deploy.exec.withenv ENV_FILE DIR -- COMMAND [ARG...]\n")
        sys.exit(2)
    env_file, folder, command = argv[0], argv[1], argv[3:]
    os.chdir(folder)
    try:
        os.execvpe(command[0], command, {**os.environ, **read_env_file(env_file)})  # noqa: S606 - argv, no shell
    except OSError as exc:
        sys.stderr.write(f"{command[0]}: {exc.strerror}\n")
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
