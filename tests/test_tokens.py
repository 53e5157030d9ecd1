"""Access tokens (pure): Ed25519 under a kid, verified with the published public keys only."""

from __future__ import annotations

import time

import pytest

from mfe_deploy.config import jwtkeys
from mfe_services.common import tokens

USER = "00000000-0000-4000-8000-000000000009"


def _pair(kid: str) -> tuple[tokens.Signer, str]:
    key = jwtkeys.new(kid)
    return tokens.Signer.parse(key.private.reveal()), key.public


def test_a_token_verifies_with_its_kids_public_key_only() -> None:
    (old, old_public), (new, new_public) = _pair("old"), _pair("new")
    both = tokens.KeySet.parse(f"{old_public},{new_public}")
    for signer in (old, new):
        token = tokens.issue(signer, user_id=USER, email="a@b.io", role="user", ttl=60)
        assert tokens.verify(both, token).user_id == USER
    only_old = tokens.KeySet.parse(old_public)
    with pytest.raises(tokens.InvalidToken, match="unknown key"):
        tokens.verify(only_old, tokens.issue(new, user_id=USER, email="a@b.io", role="user", ttl=60))
    # The new key's private half under the old kid: the old public key refuses its signature.
    forged = tokens.issue(tokens.Signer("old", new.key), user_id=USER, email="a@b.io", role="user", ttl=60)
    with pytest.raises(tokens.InvalidToken, match="Signature"):
        tokens.verify(both, forged)


def test_a_remembered_token_still_expires() -> None:
    signer, public = _pair("k")
    keys = tokens.KeySet.parse(public)
    # Expired 4 s ago: inside the 5 s leeway for about a second more.
    token = tokens.issue(signer, user_id=USER, email="a@b.io", role="user", ttl=6, now=time.time() - 10)
    assert tokens.verify(keys, token).user_id == USER
    assert token in keys.verified
    time.sleep(1.2)
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(keys, token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("nokid", "not <kid>:<base64url key>"),
        ("k:!!!", "not base64url"),
        ("k:AAAA", "not 32 bytes"),
    ],
)
def test_bad_key_sets_are_refused_at_start(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tokens.KeySet.parse(text)


def test_the_private_key_is_never_in_a_repr() -> None:
    key = jwtkeys.new("k")
    secret_half = key.private.reveal().split(":")[1]
    assert secret_half not in repr(key) and secret_half not in repr(tokens.Signer.parse(key.private.reveal()))


def test_the_printer_masks_a_keys_private_half_on_its_own() -> None:
    from mfe_deploy.config import loader
    from tests.conftest import REPO, strong_secrets

    environ = strong_secrets()
    _, secrets = loader.load_with_secrets(REPO, "staging", environ=environ)
    half = environ["STAGING_JWT_KEY"].partition(":")[2]
    assert environ["STAGING_JWT_KEY"] in secrets.maskable() and half in secrets.maskable()
    assert all(key.public not in secrets.maskable() for key in secrets.jwt_keys)
