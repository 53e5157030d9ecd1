"""The configuration reference, generated from the environment model (docs/configuration.md): every key,
its type, its default and what it is for. `tests/test_reference.py` fails when the file is stale."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mfe_deploy.config.models import Environment, SecretRef, Service

HEADER = """# Configuration reference

Generated from the environment model (`src/mfe_deploy/config/models.py`) by `mfe-deploy docs`; do not edit.
An environment file sets any of these keys; `extends: NAME` takes another file's values first. `services.<name>`
keys are per service; secrets are references (`${VAR}`, `${VAR:-default}` in development, `file:PATH`).
"""


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args if a is not type(None)) + " or null"
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is dict:
        return f"map of {_type(args[1])}"
    if origin in (tuple, list):
        return f"list of {_type(args[0])}"
    if annotation is SecretRef:
        return "secret reference"
    if annotation is Service:
        return "service (below)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo, given: Any = PydanticUndefined) -> str:
    """The default, as the enclosing section's own default holds it when there is one (database.resources
    is not Resources()'s)."""
    if given is PydanticUndefined:
        if field.default is PydanticUndefined and field.default_factory is None:
            return "required"
        given = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
    if isinstance(given, BaseModel):
        return "(section)"
    return f"`{json.dumps(given, default=str)}`" if given not in ((), {}, None) else "-"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _rows(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if model is Environment and name == "name":
            continue  # the file's name, not a key
        key = f"{prefix}{name}"
        about = " ".join((field.description or "").split()).replace("|", "\\|")
        given = getattr(defaults, name) if defaults is not None else PydanticUndefined
        rows.append(f"| `{key}` | {_type(field.annotation)} | {_default(field, given)} | {about} |")
        inner = _model_of(field.annotation)
        if inner in (Service, SecretRef, None, model):
            continue  # a service's keys have a table of their own; a secret reference is one string
        origin = typing.get_origin(field.annotation)
        if origin is dict:
            rows += _rows(inner, f"{key}.<name>.")
        elif origin in (tuple, list):
            rows += _rows(inner, f"{key}[].")
        else:
            section = given if isinstance(given, BaseModel) else field.default
            rows += _rows(inner, f"{key}.", section if isinstance(section, BaseModel) else None)
    return rows


def reference() -> str:
    table = ["| key | type | default | what it is |", "|---|---|---|---|"]
    services = ["| key | type | default | what it is |", "|---|---|---|---|", *_rows(Service, "services.<name>.")]
    return "\n".join(
        [HEADER, "## The environment", "", *table, *_rows(Environment, ""), "", "## A service", "", *services, ""]
    )
