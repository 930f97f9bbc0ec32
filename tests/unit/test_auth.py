"""Bearer tokens: minting, decoding, and every way a token is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from services.common.actor import Actor
from services.common.auth import (
    AuthError,
    actor_from_authorization,
    decode_token,
    mint_token,
)

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, object] = {
        "sub": "u-1",
        "name": "Dr Test",
        "roles": [],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_minted_token_decodes_to_the_same_actor() -> None:
    token = mint_token(secret=SECRET, sub="u-1", name="Dr Test", roles=["compliance_officer"])

    actor = decode_token(token, secret=SECRET)

    assert actor == Actor(user_id="u-1", name="Dr Test", roles=frozenset({"compliance_officer"}))
    assert actor.is_compliance_officer
    assert not actor.is_admin


def test_an_admin_role_makes_the_actor_an_admin() -> None:
    actor = decode_token(
        mint_token(secret=SECRET, sub="a", name="A", roles=["admin"]), secret=SECRET
    )

    assert actor.is_admin
    assert not actor.is_compliance_officer


def test_an_expired_token_is_refused_as_expired() -> None:
    token = mint_token(
        secret=SECRET,
        sub="u-1",
        name="N",
        ttl_seconds=60,
        now=datetime.now(UTC) - timedelta(hours=1),
    )

    with pytest.raises(AuthError, match="expired"):
        decode_token(token, secret=SECRET)


def test_leeway_accepts_a_token_that_expired_moments_ago() -> None:
    token = mint_token(
        secret=SECRET,
        sub="u-1",
        name="N",
        ttl_seconds=60,
        now=datetime.now(UTC) - timedelta(seconds=70),
    )

    assert decode_token(token, secret=SECRET, leeway=30).user_id == "u-1"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token(secret=OTHER_SECRET, sub="u-1", name="N")

    with pytest.raises(AuthError, match="signature"):
        decode_token(token, secret=SECRET)


def test_an_unsigned_alg_none_token_is_refused() -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."

    with pytest.raises(AuthError, match="HS256"):
        decode_token(token, secret=SECRET)


def test_a_token_signed_with_another_algorithm_is_refused() -> None:
    token = jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512")

    with pytest.raises(AuthError, match="HS256"):
        decode_token(token, secret=SECRET)


@pytest.mark.parametrize("claim", ["sub", "exp", "iat"])
def test_a_token_missing_a_required_claim_is_refused_naming_it(claim: str) -> None:
    token = jwt.encode(_claims(**{claim: None}), SECRET, algorithm="HS256")

    with pytest.raises(AuthError, match=f"'{claim}'"):
        decode_token(token, secret=SECRET)


def test_a_token_without_a_name_is_refused() -> None:
    token = jwt.encode(_claims(name=None), SECRET, algorithm="HS256")

    with pytest.raises(AuthError, match="'name'"):
        decode_token(token, secret=SECRET)


def test_roles_that_are_not_a_list_of_strings_are_refused() -> None:
    token = jwt.encode(_claims(roles="admin"), SECRET, algorithm="HS256")

    with pytest.raises(AuthError, match="'roles'"):
        decode_token(token, secret=SECRET)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "\u00e9\u00e9.\u00e9.\u00e9"])
def test_garbage_is_refused_as_malformed_without_echoing_it(garbage: str) -> None:
    with pytest.raises(AuthError) as caught:
        decode_token(garbage, secret=SECRET)

    assert "malformed" in caught.value.message
    if garbage:
        assert garbage not in caught.value.message


def test_a_missing_authorization_header_means_no_actor() -> None:
    assert actor_from_authorization(None, secret=SECRET) is None


def test_a_bearer_header_yields_the_actor() -> None:
    token = mint_token(secret=SECRET, sub="u-9", name="Nurse Nine")

    actor = actor_from_authorization(f"Bearer {token}", secret=SECRET)

    assert actor is not None
    assert actor.user_id == "u-9"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc", "Bearer a b"]
)
def test_a_header_that_is_not_bearer_and_a_token_is_refused(header: str) -> None:
    with pytest.raises(AuthError, match="Bearer <token>"):
        actor_from_authorization(header, secret=SECRET)


def test_without_a_configured_secret_every_token_is_refused() -> None:
    token = mint_token(secret=SECRET, sub="u-1", name="N")

    with pytest.raises(AuthError, match="CARECOORD_JWT_SECRET"):
        actor_from_authorization(f"Bearer {token}", secret=None)


def test_a_server_secret_too_short_for_hs256_refuses_tokens_instead_of_warning() -> None:
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")

    with pytest.raises(AuthError, match="32 bytes"):
        decode_token(token, secret="short")


def test_minting_with_a_short_secret_is_an_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token(secret="short", sub="u-1", name="N")
