"""OpenID Connect sign-in without a provider: claims to Actor, JWKS parsing, token routing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from services.common.actor import Actor
from services.common.auth import Authenticator, AuthError, mint_token
from services.common.oidc import (
    OidcVerifier,
    ProviderError,
    actor_from_claims,
    build_authenticator,
    claim_at,
    signing_keys,
)
from services.settings import Settings

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {"sub": "u-1", "name": "Dr Test", "iat": now, "exp": now + 60}
    claims.update(overrides)
    return claims


def _rs256(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": "k1"})


def _jwk(key: Any, **fields: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPublicKey):
        return {**jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True), **fields}
    return {**jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True), **fields}


def _verifier() -> OidcVerifier:
    # Never asked to fetch here: nothing listens on the discard port.
    return OidcVerifier(issuer="http://127.0.0.1:9/realms/unit", audience="carecoord")


def test_a_dotted_roles_claim_reads_the_nested_list() -> None:
    claims = _claims(realm_access={"roles": ["admin", "nurse"]})

    actor = actor_from_claims(claims, name_claim="name", roles_claim="realm_access.roles")

    assert actor == Actor(user_id="u-1", name="Dr Test", roles=frozenset({"admin", "nurse"}))
    assert actor.is_admin


def test_a_namespaced_claim_with_dots_in_its_name_is_found_whole() -> None:
    claims = _claims(**{"https://carecoord.example/roles": ["compliance_officer"]})

    assert claim_at(claims, "https://carecoord.example/roles") == ["compliance_officer"]


def test_a_missing_roles_claim_means_no_roles() -> None:
    actor = actor_from_claims(_claims(), name_claim="name", roles_claim="realm_access.roles")

    assert actor.roles == frozenset()


def test_roles_that_are_not_a_list_of_strings_are_refused_naming_the_claim() -> None:
    claims = _claims(realm_access={"roles": "admin"})

    with pytest.raises(AuthError, match=r"'realm_access\.roles' claim must be a list"):
        actor_from_claims(claims, name_claim="name", roles_claim="realm_access.roles")


def test_without_the_name_claim_the_preferred_username_is_the_name() -> None:
    claims = _claims(preferred_username="dr.test")
    del claims["name"]

    actor = actor_from_claims(claims, name_claim="name", roles_claim="roles")

    assert actor.name == "dr.test"


def test_a_token_with_neither_name_nor_preferred_username_is_refused() -> None:
    claims = _claims()
    del claims["name"]

    with pytest.raises(AuthError, match="'display_name' or 'preferred_username'"):
        actor_from_claims(claims, name_claim="display_name", roles_claim="roles")


def test_a_jwks_keeps_rsa_and_p256_signing_keys_and_skips_encryption_keys() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks = {
        "keys": [
            _jwk(RSA_KEY.public_key(), kid="rsa", use="sig", alg="RS256"),
            _jwk(ec_key, kid="ec"),
            _jwk(RSA_KEY.public_key(), kid="enc", use="enc", alg="RSA-OAEP"),
            _jwk(RSA_KEY.public_key(), kid="rs512", alg="RS512"),
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        ]
    }

    keys = signing_keys(jwks)

    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "ec": "ES256",
    }


def test_a_jwks_without_usable_signing_keys_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="no RS256 or ES256 signing key"):
        signing_keys({"keys": [_jwk(RSA_KEY.public_key(), kid="enc", use="enc")]})


async def test_an_rs256_token_is_refused_when_no_issuer_is_configured() -> None:
    settings = Settings(jwt_secret=SecretStr(SECRET), oidc_issuer=None, _env_file=None)  # type: ignore[call-arg]
    authenticator = build_authenticator(settings)

    with pytest.raises(AuthError, match=r"only its own HS256 dev tokens \(CARECOORD_OIDC_ISSUER"):
        await authenticator.actor(f"Bearer {_rs256(_claims())}")


async def test_an_unsigned_alg_none_token_is_refused_before_any_key_is_fetched() -> None:
    token = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(_claims())}."
    authenticator = Authenticator(secret=SECRET, oidc=_verifier())

    with pytest.raises(AuthError, match=r"unsigned \(alg 'none'\)"):
        await authenticator.actor(f"Bearer {token}")


async def test_a_token_with_another_algorithm_is_refused_naming_what_is_accepted() -> None:
    token = jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512")
    authenticator = Authenticator(secret=SECRET, oidc=_verifier())

    with pytest.raises(AuthError, match="signed with HS512; this server accepts HS256 dev"):
        await authenticator.actor(f"Bearer {token}")


async def test_a_made_up_algorithm_is_not_echoed() -> None:
    token = f"{_b64({'alg': 'XX<script>'})}.{_b64(_claims())}.c2ln"
    authenticator = Authenticator(secret=SECRET)

    with pytest.raises(AuthError, match="unknown signing algorithm") as caught:
        await authenticator.actor(f"Bearer {token}")

    assert "script" not in caught.value.message


async def test_hs256_dev_tokens_are_refused_when_only_the_provider_is_configured() -> None:
    authenticator = Authenticator(secret=None, oidc=_verifier())
    token = mint_token(secret=SECRET, sub="u-1", name="N")

    with pytest.raises(AuthError, match="accepts no HS256 dev tokens"):
        await authenticator.actor(f"Bearer {token}")


async def test_hs256_dev_tokens_still_decode_beside_a_provider() -> None:
    authenticator = Authenticator(secret=SECRET, oidc=_verifier())
    token = mint_token(secret=SECRET, sub="u-7", name="Dev Seven", roles=["admin"])

    actor = await authenticator.actor(f"Bearer {token}")

    assert actor == Actor(user_id="u-7", name="Dev Seven", roles=frozenset({"admin"}))


async def test_without_secret_or_provider_every_token_is_refused() -> None:
    token = mint_token(secret=SECRET, sub="u-1", name="N")

    with pytest.raises(AuthError, match="CARECOORD_JWT_SECRET"):
        await Authenticator(secret=None).actor(f"Bearer {token}")


async def test_no_authorization_header_means_no_actor() -> None:
    assert await Authenticator(secret=SECRET, oidc=_verifier()).actor(None) is None


def test_a_provider_token_issued_to_live_longer_than_the_maximum_is_refused() -> None:
    now = int(datetime.now(UTC).timestamp())
    claims = _claims(iat=now, exp=now + 7201)

    with pytest.raises(AuthError, match="longer than this server accepts"):
        actor_from_claims(claims, name_claim="name", roles_claim="roles", max_lifetime=7200)
    actor = actor_from_claims(
        _claims(iat=now, exp=now + 7200), name_claim="name", roles_claim="roles", max_lifetime=7200
    )
    assert actor.expires_at == datetime.fromtimestamp(now + 7200, UTC)


@pytest.mark.parametrize("sub", ["u\ud800", "dr\u202ex", "d\u0440"])
def test_a_provider_sub_that_is_no_safe_user_id_is_refused(sub: str) -> None:
    with pytest.raises(AuthError, match="'sub'"):
        actor_from_claims(_claims(sub=sub), name_claim="name", roles_claim="roles")
