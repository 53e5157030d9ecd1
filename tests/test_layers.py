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


def test_no_runtime_module_is_over_400_lines() -> None:
    """A runtime is a package of small modules (issue 31): the runtime class composes its parts."""
    runtimes = SRC / "runtimes"
    long = {
        str(path.relative_to(SRC)): n
        for path in sorted(runtimes.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, long


def test_the_registry_lists_the_runtime_packages_and_nothing_else() -> None:
    from mfe_deploy.runtimes import registry

    packages = sorted(p.parent.name for p in (SRC / "runtimes").glob("*/__init__.py"))
    assert registry.available() == packages == ["docker", "local", "swarm"]


def test_no_module_imports_itself_back_through_others() -> None:
    """0 cycles, the type checker's imports included: a part of a runtime takes a Site (the protocol of
    what it uses), never the class of the runtime that composes it."""
    import grimp

    graph = grimp.build_graph("mfe_deploy", exclude_type_checking_imports=False)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in graph.modules}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(edges[module]):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_state_files_are_named_in_one_place() -> None:
    """releases.jsonl, audit.jsonl, deploy.lock, migrated, watch.json: spelled in exec/host.py alone."""
    from mfe_deploy.exec import host

    names = {host.RELEASES, host.AUDIT, host.DEPLOY_LOCK, host.MIGRATED, host.WATCH}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "exec" / "host.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value}")
    assert not found, found
