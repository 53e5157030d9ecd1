"""Find, read, merge and validate an environment; every failure becomes file:line: path: message."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mfe_deploy.config import checks, secrets, source
from mfe_deploy.config.models import Environment
from mfe_deploy.config.project import ENV_DIR
from mfe_deploy.config.source import Document, KeyPath
from mfe_deploy.errors import ConfigError, Problem, UnknownEnvironment, UsageError

MAX_EXTENDS = 8
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")


@dataclass(frozen=True)
class Loaded:
    env: Environment
    doc: Document
    file: str

    def problem(self, path: KeyPath, message: str) -> Problem:
        where = self.doc.locate(path)
        return Problem(where.file, where.line, source.format_path(path), message)


def require_project(project_dir: Path) -> None:
    if not (project_dir / ENV_DIR).is_dir():
        raise UsageError(
            f"no {ENV_DIR}/ folder in {project_dir}: run mfe-deploy in a project (the folder that holds "
            f"{ENV_DIR}/, or one below it), or give it with -C DIR"
        )


def list_environments(project_dir: Path) -> list[str]:
    folder = project_dir / ENV_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_"))


def load(project_dir: Path, name: str) -> Loaded:
    known = list_environments(project_dir)
    if name not in known:
        listing = ", ".join(known) if known else f"none (no {ENV_DIR}/*.yaml under {project_dir})"
        raise UnknownEnvironment(f"unknown environment {name!r}; known environments: {listing}")
    doc = _read_chain(project_dir, name, [])
    display = f"{ENV_DIR}/{name}.yaml"
    if "name" in doc.data:
        raise ConfigError([_locate(doc, ("name",), "the name comes from the file name; remove this key")])
    try:
        env = Environment.model_validate({**doc.data, "name": name})
    except ValidationError as exc:
        raise ConfigError(sorted((_from_pydantic(doc, e) for e in exc.errors()), key=_order)) from None
    loaded = Loaded(env=env, doc=doc, file=display)
    findings = checks.check(env, lambda path: path in doc.lines)
    if findings:
        raise ConfigError(sorted((loaded.problem(path, msg) for path, msg in findings), key=_order))
    return loaded


def load_with_secrets(
    project_dir: Path, name: str, environ: Mapping[str, str] | None = None, *, loaded: Loaded | None = None
) -> tuple[Loaded, secrets.Secrets]:
    """`loaded`: the environment when the caller has read it already."""
    loaded = loaded or load(project_dir, name)
    resolved, problems = secrets.resolve(loaded.env, os.environ if environ is None else environ, project_dir)
    if resolved is None:
        raise ConfigError(sorted((loaded.problem(path, msg) for path, msg in problems), key=_order))
    return loaded, resolved


def _read_chain(project_dir: Path, name: str, seen: list[str]) -> Document:
    display = f"{ENV_DIR}/{name}.yaml"
    if name in seen:
        cycle = " -> ".join([*seen, name])
        raise ConfigError([Problem(display, None, "extends", f"circular extends: {cycle}")])
    if len(seen) > MAX_EXTENDS:
        raise ConfigError([Problem(display, None, "extends", f"more than {MAX_EXTENDS} levels of extends")])
    path = project_dir / ENV_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError([Problem(display, None, "", "file not found")])
    doc = source.read(path, display)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
        got = kind.get(type(doc.data), type(doc.data).__name__)
        raise ConfigError([Problem(display, 1, "", f"expected a mapping of settings at the top level, got {got}")])
    parent = doc.data.pop("extends", None)
    if parent is None:
        return doc
    if not isinstance(parent, str) or not parent:
        raise ConfigError([_locate(doc, ("extends",), "expected the name of another environment file")])
    if not _NAME.fullmatch(parent):
        why = f"{parent!r}: the name of another file in {ENV_DIR}/ (no folders, no ..)"
        raise ConfigError([_locate(doc, ("extends",), why)])
    if not (project_dir / ENV_DIR / f"{parent}.yaml").is_file():
        raise ConfigError([_locate(doc, ("extends",), f"no file {ENV_DIR}/{parent}.yaml to extend")])
    base = _read_chain(project_dir, parent, [*seen, name])
    return source.merge(base, doc)


def _locate(doc: Document, path: KeyPath, message: str) -> Problem:
    where = doc.locate(path)
    return Problem(where.file, where.line, source.format_path(path), message)


def _from_pydantic(doc: Document, err: Any) -> Problem:
    loc: KeyPath = tuple(err["loc"])
    kind = err["type"]
    message = str(err["msg"])
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        message = f"unknown name {loc[-1]!r}: {message}"
    elif kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.7)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        message = f"unknown key (not part of the environment model){hint}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    elif kind == "control_character":
        loc = (*loc, *err["ctx"]["at"])  # the line of the very key or item that holds it
    # Offending values are quoted to help, except anywhere under secrets: they may be a pasted secret.
    value = err.get("input")
    secret = bool(loc) and loc[0] == "secrets"
    if not secret and kind != "missing" and isinstance(value, str | int | float | bool) and "[key]" not in err["loc"]:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        message = f"{message} (got {shown})"
    return _locate(doc, loc, message)


def _keys_at(loc: KeyPath) -> list[str]:
    """The keys the model takes at `loc`, a path through models, dicts of them (services.<name>) and
    lists of them: what an unknown key may have meant."""
    current: Any = Environment
    for key in loc:
        current = _container(current)
        origin, args = typing.get_origin(current), typing.get_args(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(key))
            if field is None:
                return []
            current = field.annotation
        elif origin is dict and args:
            current = args[1]
        elif origin in (tuple, list) and args:
            current = args[0]
        else:
            return []
    current = _container(current)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _container(annotation: Any) -> Any:
    """An Optional's (or a union's) model, dict or list; anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (isinstance(arg, type) and issubclass(arg, BaseModel)) or typing.get_origin(arg) in (dict, tuple, list):
                return arg
    return annotation


def _order(problem: Problem) -> tuple[str, int]:
    return problem.file, problem.line or 0
