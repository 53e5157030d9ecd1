"""docs/configuration.md is the reference `mfe-deploy docs` prints from the model: a key added, renamed or
given another default without the file regenerated fails here (`mfe-deploy docs > docs/configuration.md`)."""

from __future__ import annotations

from mfe_deploy.config.models import Environment, Logs
from mfe_deploy.config.reference import reference
from tests.conftest import REPO


def test_the_checked_in_reference_is_the_models() -> None:
    assert (REPO / "docs" / "configuration.md").read_text() == reference()


def test_every_key_is_in_the_reference_with_its_default() -> None:
    text = reference()
    for name in Environment.model_fields:
        assert name == "name" or f"| `{name}` |" in text, name
    assert f'| `logs.max_size` | str | `"{Logs().max_size}"` |' in text
    assert '| `database.resources.memory` | str | `"512m"` |' in text  # the section's own default, not Resources()'s
    assert "| `notify.webhooks[].url` | secret reference | required |" in text
