"""Processes start in the execution layer only (mfe_deploy/exec): every other module builds a Command and
hands it to a Runner, so a command line is a value a test can read, and where it runs (here, an engine,
a remote host) is the runner's business."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mfe_deploy"


def test_no_module_outside_the_execution_layer_imports_subprocess() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "exec":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "subprocess" or name.startswith("subprocess.") for name in names):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found
