"""The effective configuration as plain data, with every secret reference masked."""

from __future__ import annotations

from typing import Any

from mfe_deploy.config.models import Environment, SecretRef
from mfe_deploy.console import MASK


def effective(env: Environment) -> dict[str, Any]:
    data = env.model_dump(mode="json", exclude={"secrets"})
    data["secrets"] = {name: _masked(value) for name, value in env.secrets if value is not None}
    return data


def _masked(value: SecretRef | dict[str, SecretRef] | tuple[SecretRef, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple):
        return [_mask(v) for v in value]
    return _mask(value)


def _mask(ref: SecretRef) -> str:
    # The source is shown, never a value, not even a development default.
    return f"{MASK} ({ref.describe()})"
