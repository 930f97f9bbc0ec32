"""Token claims fuzzed through the in-process API: whatever a token's header and claims
hold (surrogates, huge numbers, the wrong types, unknown algorithms), the answer is the
caller or UNAUTHENTICATED in our own words: never a 500, never a masked internal error,
never a library's message, never the claim's value quoted back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from services.api.app import create_app
from services.common.text import check_user_id, clean
from services.settings import Settings

SECRET = "fuzz-test-secret-that-is-long-enough-for-hs256"
ME = "query Me { me { userId name } }"
# Words of the libraries underneath, which must never reach a client.
FOREIGN = (
    "Internal server error",
    "validation error",
    "Input should",
    "pydantic",
    "Traceback",
    "surrogates not allowed",
    "must be an integer",
    "Signature verification failed",
    "Expected a string value",
)


class _NoPool:
    """The token path reads no database."""


hidden = st.characters(codec=None, categories=("Cs", "Cf", "Cc", "Zl", "Zp"))
# Plain text, and text with a surrogate, control or invisible character inside it.
texts = st.text(max_size=40) | st.builds(
    lambda head, odd, tail: head + odd + tail,
    st.text(alphabet="Dr Who", min_size=1, max_size=5),
    st.text(alphabet=hidden, min_size=1, max_size=3),
    st.text(max_size=5),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def _times() -> st.SearchStrategy[Any]:
    real = st.integers(min_value=-3 * 86400, max_value=3 * 86400)
    return st.one_of(real, values, st.integers(min_value=10**15, max_value=10**400))


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid token with one to three of its parts fuzzed (so each fuzzed claim meets
    the checks behind the signature), now and then signed with another secret."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "u-1", "name": "Dr Who", "roles": [], "iat": now}
    claims["exp"] = now + 600
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    fuzzers: dict[str, st.SearchStrategy[Any]] = {
        "sub": values,
        "name": values,
        "roles": st.lists(st.one_of(texts, values), max_size=5) | values,
        "iat": _times(),
        "exp": _times(),
        "alg": st.sampled_from(["none", "RS256", "ES256", "HS512"]) | values,
        "kid": values,
        "extra": values,
    }
    for part in draw(st.lists(st.sampled_from(sorted(fuzzers)), min_size=1, max_size=3)):
        value = draw(fuzzers[part] | st.just(_MISSING))
        target = header if part in ("alg", "kid") else claims
        if value is _MISSING:
            target.pop(part, None)
            continue
        if part in ("iat", "exp") and isinstance(value, int) and not isinstance(value, bool):
            value = now + value if abs(value) < 10**6 else value
        target[part] = value
    secret = draw(st.sampled_from([SECRET] * 5 + ["another-secret-that-is-long-enough-too"]))
    return _sign(header, claims, secret), claims


_MISSING = object()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()


def _json(value: Any) -> str:
    text = json.dumps(value, allow_nan=True)  # ensure_ascii: surrogates travel as \\udxxx
    return text.replace("-Infinity", "-1e999").replace("Infinity", "1e999").replace("NaN", "null")


def _sign(header: dict[str, Any], claims: dict[str, Any], secret: str) -> str:
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _quotable(value: Any) -> list[str]:
    """Claim values long enough that finding them in a message means they were quoted."""
    if isinstance(value, str) and len(value.strip()) >= 5:
        return [value]
    if isinstance(value, list):
        return [q for v in value for q in _quotable(v)]
    return []


APP = create_app(
    Settings(jwt_secret=SecretStr(SECRET), _env_file=None),  # type: ignore[call-arg]
    pool=_NoPool(),  # type: ignore[arg-type]
    kafka_ping=lambda: asyncio.sleep(0),
)


def _with(**claims: Any) -> tuple[str, dict[str, Any]]:
    now = int(time.time())
    full = {"sub": "u-1", "name": "Dr Who", "roles": [], "iat": now, "exp": now + 600, **claims}
    return _sign({"alg": "HS256", "typ": "JWT"}, full, SECRET), full


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens())
@example(_with(sub="u\ud800"))
@example(_with(name="Dr \udfff Who"))
@example(_with(name="Dr \u202eWho"))
@example(_with(exp=10**20))
def test_no_token_claims_give_a_500_or_a_message_in_anyone_elses_words(
    token: tuple[str, dict[str, Any]],
) -> None:
    text, claims = token
    response = asyncio.run(_ask(text))

    assert response.status_code == 200, response.text
    body = response.json()
    if body.get("data") and body["data"].get("me"):
        me = body["data"]["me"]
        assert check_user_id(me["userId"]) == claims["sub"]
        assert clean(me["name"]) == me["name"]
        return
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED", error
    for words in FOREIGN:
        assert words not in error["message"], error
    for claim in ("sub", "name", "roles"):
        for value in _quotable(claims.get(claim)):
            assert value not in error["message"], (claim, error)


async def _ask(token: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=APP), base_url="http://testserver"
    ) as client:
        return await client.post(
            "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"}
        )


def test_a_token_signed_the_way_the_fuzzer_signs_is_accepted() -> None:
    # Else every fuzzed token would be refused at its signature and prove nothing.
    now = int(time.time())
    claims = {"sub": "u-1", "name": "Dr Who", "iat": now, "exp": now + 60}

    response = asyncio.run(_ask(_sign({"alg": "HS256", "typ": "JWT"}, claims, SECRET)))

    assert response.json()["data"]["me"] == {"userId": "u-1", "name": "Dr Who"}
