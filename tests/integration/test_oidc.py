"""OpenID Connect sign-in against a local provider: discovery, JWKS cache, rotation, refusals."""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from services.api.app import create_app
from services.common.actor import Actor
from services.common.auth import Authenticator, AuthError, mint_token
from services.common.oidc import REFETCH_SECONDS, RETRY_AFTER_FAILURE_SECONDS, OidcVerifier
from services.settings import Settings

SECRET = "oidc-integration-test-secret-long-enough"
AUDIENCE = "carecoord"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {**data, "kid": kid, "use": "sig", "alg": "RS256"}
    data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", "alg": "ES256"}


class Provider:
    """A local OpenID provider: discovery and JWKS over HTTP, with hit counts."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: dict[str, PrivateKey] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.hits: Counter[str] = Counter()
        self.delay = 0.0
        self.declared_issuer: str | None = None
        self.failing = False
        app = web.Application()
        app.router.add_get("/realms/care/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/realms/care/protocol/openid-connect/certs", self._jwks)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def issuer(self) -> str:
        return str(self.server.make_url("/realms/care"))

    async def _discovery(self, _: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        if self.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return web.json_response(
            {
                "issuer": self.declared_issuer or self.issuer,
                "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        await asyncio.sleep(self.delay)
        keys = [_jwk(kid, key) for kid, key in self.published.items()]
        # Keycloak publishes an encryption key beside its signing keys.
        encryption = {**_jwk("enc-1", self.rsa), "use": "enc", "alg": "RSA-OAEP"}
        return web.json_response({"keys": [*keys, encryption]})

    def token(self, kid: str = "rsa-1", key: PrivateKey | None = None, **claims: Any) -> str:
        key = key or self.published[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(_claims(self.issuer, **claims), key, algorithm=alg, headers={"kid": kid})


def _claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "sub": f"user-{uuid.uuid4().hex[:8]}",
        "name": "Dr Open",
        "roles": ["compliance_officer"],
        "iss": issuer,
        "aud": [AUDIENCE, "account"],
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider()
    await provider.server.start_server()
    try:
        yield provider
    finally:
        await provider.server.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verifier(provider: Provider, clock: Clock) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(
        issuer=provider.issuer, audience=AUDIENCE, cache_seconds=300, clock=clock
    )
    try:
        yield verifier
    finally:
        await verifier.close()


@pytest.fixture
def auth(verifier: OidcVerifier) -> Authenticator:
    return Authenticator(secret=SECRET, oidc=verifier)


async def refusal(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        await auth.actor(f"Bearer {token}")
    assert token not in caught.value.message
    return caught.value.message


async def test_a_valid_rs256_token_is_accepted_as_its_subject_name_and_roles(
    provider: Provider, auth: Authenticator
) -> None:
    actor = await auth.actor(f"Bearer {provider.token(sub='kc-1', name='Dr Rivera')}")

    assert actor == Actor(user_id="kc-1", name="Dr Rivera", roles=frozenset({"compliance_officer"}))
    assert provider.hits == {"discovery": 1, "jwks": 1}


async def test_a_valid_es256_token_is_accepted(provider: Provider, auth: Authenticator) -> None:
    actor = await auth.actor(f"Bearer {provider.token('ec-1', sub='kc-2')}")

    assert actor is not None
    assert actor.user_id == "kc-2"


async def test_keycloak_realm_roles_and_preferred_username_map_to_the_actor(
    provider: Provider,
) -> None:
    verifier = OidcVerifier(
        issuer=provider.issuer + "/",  # as pasted from a browser: the slash is tolerated
        audience=AUDIENCE,
        roles_claim="realm_access.roles",
    )
    token = provider.token(
        sub="kc-3",
        name=None,
        roles=None,
        preferred_username="a.admin",
        realm_access={"roles": ["admin", "offline_access"]},
    )
    try:
        actor = await Authenticator(secret=None, oidc=verifier).actor(f"Bearer {token}")
    finally:
        await verifier.close()

    assert actor == Actor("kc-3", "a.admin", frozenset({"admin", "offline_access"}))
    assert actor.is_admin


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "another-app"}, "'aud' does not contain 'carecoord'"),
        ({"exp": int(datetime.now(UTC).timestamp()) - 120}, "has expired"),
        ({"iss": "http://127.0.0.1:1/realms/other"}, "issued by another identity provider"),
        ({"iat": None}, "lacks the required 'iat' claim"),
        ({"aud": None}, "lacks the required 'aud' claim"),
    ],
    ids=["wrong-audience", "expired", "wrong-issuer", "no-iat", "no-aud"],
)
async def test_a_token_with_bad_claims_is_refused_saying_which(
    provider: Provider, auth: Authenticator, claims: dict[str, Any], reason: str
) -> None:
    assert reason in await refusal(auth, provider.token(**claims))


async def test_a_token_naming_an_unpublished_kid_is_refused(
    provider: Provider, auth: Authenticator
) -> None:
    token = provider.token("rsa-9", key=provider.rsa)

    assert "unknown 'kid'" in await refusal(auth, token)


async def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(
    provider: Provider, auth: Authenticator
) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    message = await refusal(auth, provider.token("rsa-1", key=forger))

    assert "signature does not match the identity provider's key" in message


async def test_an_es256_token_naming_the_rsa_key_is_refused(
    provider: Provider, auth: Authenticator
) -> None:
    message = await refusal(auth, provider.token("rsa-1", key=provider.ec))

    assert "algorithm does not match" in message


async def test_an_hs256_token_signed_with_the_providers_public_key_is_refused(
    provider: Provider, auth: Authenticator
) -> None:
    public_pem = provider.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT itself refuses to HMAC with a PEM key, so the token is assembled by hand.
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode())
        for part in (header, _claims(provider.issuer))
    )
    signature = jwt.utils.base64url_encode(hmac.digest(public_pem, signing_input, "sha256"))
    token = (signing_input + b"." + signature).decode()

    assert "does not match this server's secret" in await refusal(auth, token)
    assert provider.hits["jwks"] == 0  # the HS256 path never consults the provider's keys


async def test_an_unsigned_token_naming_a_published_kid_is_refused(
    provider: Provider, auth: Authenticator
) -> None:
    token = jwt.encode(_claims(provider.issuer), None, algorithm="none", headers={"kid": "rsa-1"})

    assert "unsigned (alg 'none')" in await refusal(auth, token)


async def test_a_key_set_larger_than_one_read_is_read_whole(
    provider: Provider, auth: Authenticator
) -> None:
    provider.published.update({f"bulk-{i}": provider.rsa for i in range(250)})  # ~110 KB

    actor = await auth.actor(f"Bearer {provider.token('bulk-249', sub='last-key')}")

    assert actor is not None
    assert actor.user_id == "last-key"


async def test_a_rotated_in_key_is_accepted_without_restart_while_the_jwks_stays_cached(
    provider: Provider, auth: Authenticator, clock: Clock
) -> None:
    assert await auth.actor(f"Bearer {provider.token('rsa-1')}") is not None
    provider.published["rsa-2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    clock.now += REFETCH_SECONDS + 1

    actor = await auth.actor(f"Bearer {provider.token('rsa-2', sub='rotated')}")
    for kid in ("rsa-1", "rsa-2", "ec-1", "rsa-2"):
        await auth.actor(f"Bearer {provider.token(kid)}")

    assert actor is not None
    assert actor.user_id == "rotated"
    assert provider.hits == {"discovery": 1, "jwks": 2}


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(
    provider: Provider, auth: Authenticator, clock: Clock
) -> None:
    await auth.actor(f"Bearer {provider.token('rsa-1')}")
    for i in range(5):
        await refusal(auth, provider.token(f"junk-{i}", key=provider.rsa))
    assert provider.hits["jwks"] == 1  # fetched moments ago: no refetch yet

    clock.now += REFETCH_SECONDS + 1
    for i in range(5):
        await refusal(auth, provider.token(f"junk-{i}", key=provider.rsa))

    assert provider.hits["jwks"] == 2


async def test_the_keys_are_fetched_again_once_the_cache_expires(
    provider: Provider, auth: Authenticator, clock: Clock
) -> None:
    await auth.actor(f"Bearer {provider.token('rsa-1')}")
    clock.now += 299
    await auth.actor(f"Bearer {provider.token('ec-1')}")
    assert provider.hits == {"discovery": 1, "jwks": 1}

    clock.now += 2
    await auth.actor(f"Bearer {provider.token('rsa-1')}")

    assert provider.hits == {"discovery": 2, "jwks": 2}


async def test_concurrent_requests_on_a_cold_cache_share_one_fetch(
    provider: Provider, auth: Authenticator
) -> None:
    provider.delay = 0.2
    tokens = [provider.token("rsa-1" if i % 2 else "ec-1", sub=f"u-{i}") for i in range(10)]

    actors = await asyncio.gather(*(auth.actor(f"Bearer {t}") for t in tokens))

    assert [a.user_id for a in actors if a] == [f"u-{i}" for i in range(10)]
    assert provider.hits == {"discovery": 1, "jwks": 1}


async def test_a_provider_that_cannot_be_reached_refuses_clearly_and_logs_the_host(
    provider: Provider, auth: Authenticator
) -> None:
    token = provider.token("rsa-1")
    host = f"127.0.0.1:{provider.server.port}"
    await provider.server.close()

    with structlog.testing.capture_logs() as logs:
        message = await refusal(auth, token)

    assert "identity provider could not be reached" in message
    [warning] = [entry for entry in logs if entry["event"] == "oidc.provider_unavailable"]
    assert warning["log_level"] == "warning"
    assert warning["issuer_host"] == host
    assert warning["error"] == "ClientConnectorError"
    assert token not in str(logs)


async def test_after_a_provider_outage_tokens_are_accepted_again_without_restart(
    provider: Provider, auth: Authenticator, clock: Clock
) -> None:
    provider.failing = True
    assert "could not be reached" in await refusal(auth, provider.token("rsa-1"))
    assert "could not be reached" in await refusal(auth, provider.token("rsa-1"))
    assert provider.hits == {"discovery": 1}  # the second was refused without asking again

    provider.failing = False
    clock.now += RETRY_AFTER_FAILURE_SECONDS

    assert await auth.actor(f"Bearer {provider.token('rsa-1', sub='back')}") is not None
    assert provider.hits == {"discovery": 2, "jwks": 1}


async def test_a_discovery_document_for_another_issuer_is_not_trusted(
    provider: Provider, auth: Authenticator
) -> None:
    provider.declared_issuer = "http://127.0.0.1:1/realms/evil"

    message = await refusal(auth, provider.token("rsa-1"))

    assert "discovery document or keys could not be used" in message
    assert provider.hits == {"discovery": 1}


async def test_hs256_dev_tokens_are_accepted_beside_provider_tokens(
    provider: Provider, auth: Authenticator
) -> None:
    dev = mint_token(secret=SECRET, sub="dev-1", name="Dev One")

    dev_actor = await auth.actor(f"Bearer {dev}")
    oidc_actor = await auth.actor(f"Bearer {provider.token('ec-1', sub='kc-9')}")

    assert dev_actor is not None
    assert oidc_actor is not None
    assert (dev_actor.user_id, oidc_actor.user_id) == ("dev-1", "kc-9")


class _FakePool:
    """`me` reads no tables; the pool is never used."""


async def _ok(*_: Any) -> None:
    return None


async def test_the_api_answers_me_for_a_provider_token_and_refuses_a_bad_one(
    provider: Provider, tmp_path: Path
) -> None:
    settings = Settings(
        jwt_secret=SecretStr(SECRET),
        oidc_issuer=provider.issuer,
        data_dir=tmp_path,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, pool=_FakePool(), kafka_ping=_ok, db_check=_ok)  # type: ignore[arg-type]
    query = {"query": "{ me { userId name } }"}
    good = provider.token("rsa-1", sub="kc-api", name="Dr Api")
    bad = provider.token("rsa-1", aud="someone-else")
    # The lifespan closes the verifier's HTTP session, as in production.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        accepted = await client.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {good}"}
        )
        refused = await client.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {bad}"}
        )

    assert accepted.json() == {"data": {"me": {"userId": "kc-api", "name": "Dr Api"}}}
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "'aud' does not contain 'carecoord'" in error["message"]
    assert provider.hits == {"discovery": 1, "jwks": 1}


async def test_a_token_accepted_earlier_is_refused_once_the_keys_fetched_again_withdraw_its_key(
    provider: Provider, auth: Authenticator, clock: Clock
) -> None:
    token = provider.token("rsa-1")
    assert await auth.actor(f"Bearer {token}") is not None
    assert await auth.actor(f"Bearer {token}") is not None  # remembered: no fetch
    assert provider.hits == {"discovery": 1, "jwks": 1}
    del provider.published["rsa-1"]

    clock.now += 301  # the keys are due again: the token is checked against the new set

    assert "unknown 'kid'" in await refusal(auth, token)
    assert provider.hits == {"discovery": 2, "jwks": 2}
