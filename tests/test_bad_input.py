from __future__ import annotations

import pytest

from tests.bad_inputs import CASES, Case
from tests.conftest import Project


def _apply(project: Project, case: Case) -> None:
    if case.old:
        project.edit(case.env, case.old, case.new)
    if case.whole is not None:
        project.env_file(case.env).write_text(case.whole)
    for key, value in case.environ.items():
        if value is None:
            project.environ.pop(key, None)
        else:
            project.environ[key] = value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_render_refuses_bad_input(project: Project, case: Case) -> None:
    _apply(project, case)
    out = project.root / "out"
    result = project.cli("render", "--env", case.env, "--out", str(out))
    assert result.code == 2
    assert result.err.splitlines() == [f"error: {line}" for line in case.expected]
    assert result.out == ""
    assert "Traceback" not in result.err
    assert not out.exists()
    assert not (project.root / ".mfe").exists()


@pytest.mark.parametrize("case", [c for c in CASES if c.id in {"secret-weak-jwt", "unknown-service", "yaml-tab"}])
def test_validate_reports_the_same(project: Project, case: Case) -> None:
    _apply(project, case)
    result = project.cli("validate", "--env", case.env)
    assert (result.code, result.err.splitlines()) == (2, [f"error: {line}" for line in case.expected])


def test_secret_literal_is_never_echoed(project: Project) -> None:
    literal = "my-literal-jwt-secret-that-is-long-enough"
    project.edit("staging", "${STAGING_JWT_KEY}", literal)
    result = project.cli("render", "--env", "staging")
    assert result.code == 2
    assert literal not in result.out + result.err


def test_unknown_environment_lists_the_known_ones(project: Project) -> None:
    result = project.cli("render", "--env", "stagin")
    assert result.code == 2
    assert result.err == ("error: unknown environment 'stagin'; known environments: development, production, staging\n")


def test_usage_error_exits_2_without_traceback(project: Project) -> None:
    result = project.cli("render")
    assert result.code == 2
    assert "Missing option '--env'" in result.err
    assert "Traceback" not in result.err


def test_layers_are_not_environments(project: Project) -> None:
    result = project.cli("validate", "--env", "_base")
    assert result.code == 2
    assert "unknown environment '_base'" in result.err
