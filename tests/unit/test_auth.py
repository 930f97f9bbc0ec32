"""Bearer tokens: minting, decoding, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from services.common.actor import Actor
from services.common.auth import (
    Authenticator,
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


def _signed(**overrides: object) -> str:
    return jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")


def test_a_token_carries_its_expiry_to_the_actor() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = mint_token(secret=SECRET, sub="u-1", name="N", ttl_seconds=600, now=now)

    actor = decode_token(token, secret=SECRET)

    assert actor.expires_at == now + timedelta(seconds=600)
    assert not actor.expired(now)
    assert actor.expired(now + timedelta(seconds=600))


def test_a_token_issued_to_live_longer_than_the_maximum_is_refused() -> None:
    now = int(datetime.now(UTC).timestamp())
    token = _signed(iat=now, exp=now + 3601)

    with pytest.raises(AuthError, match="longer than this server accepts"):
        decode_token(token, secret=SECRET, max_lifetime=3600)
    assert decode_token(_signed(iat=now, exp=now + 3600), secret=SECRET, max_lifetime=3600)


def _hand_signed(claims: dict[str, object]) -> str:
    """A token PyJWT would refuse to encode (infinite or huge numbers), signed by hand."""
    header = _b64({"alg": "HS256", "typ": "JWT"})
    text = json.dumps(claims, allow_nan=True).replace("Infinity", "1e999")
    body = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "exp",
    [10**20, 10**400, 1e308, float("inf"), "9999999999", True, None, [1], {"a": 1}],
    ids=["1e20", "1e400", "1e308", "inf", "string", "bool", "null", "list", "object"],
)
def test_an_exp_that_is_no_sane_date_is_refused_in_our_words(exp: object) -> None:
    claims = _claims()
    claims["exp"] = exp

    with pytest.raises(AuthError) as caught:
        decode_token(_hand_signed(claims), secret=SECRET)

    message = caught.value.message
    assert "'exp'" in message or "expired" in message or "malformed" in message
    assert "integer" not in message  # PyJWT's words


def test_a_token_that_expires_before_it_was_issued_is_refused() -> None:
    now = int(datetime.now(UTC).timestamp())
    token = _signed(iat=now + 20, exp=now + 10)  # within the leeway for a clock ahead

    with pytest.raises(AuthError, match="before it was issued"):
        decode_token(token, secret=SECRET, leeway=30)


@pytest.mark.parametrize(
    "sub",
    ["\ud800", "dr\u202eevil", "d\u0440-house", " u-1", "", "a" * 129, 42, None, ["u-1"]],
    ids=["surrogate", "bidi", "cyrillic", "space", "empty", "long", "int", "null", "list"],
)
def test_a_sub_that_is_not_a_safe_user_id_is_refused_without_quoting_it(sub: object) -> None:
    claims = _claims()
    claims["sub"] = sub
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    with pytest.raises(AuthError, match="'sub'") as caught:
        decode_token(token, secret=SECRET)

    if isinstance(sub, str) and sub.strip():
        assert sub not in caught.value.message


@pytest.mark.parametrize(
    "name",
    ["\udfff", "Dr\u200bWho", "Dr\x1b[31mWho", "Dr\u202eWho", "x" * 201],
    ids=["surrogate", "zero-width", "ansi", "bidi", "long"],
)
def test_a_display_name_that_is_not_clean_text_is_refused_without_quoting_it(name: str) -> None:
    token = _signed(name=name)

    with pytest.raises(AuthError, match="display name") as caught:
        decode_token(token, secret=SECRET)

    assert name not in caught.value.message


def test_a_display_name_is_stored_nfc_normalised() -> None:
    actor = decode_token(_signed(name="Zo\u0065\u0301"), secret=SECRET)

    assert actor.name == "Zo\u00e9"


@pytest.mark.parametrize(
    "roles", [["\ud800"], [""], ["r" * 129], ["r"] * 257, [["admin"]], "admin"]
)
def test_roles_that_are_not_short_clean_names_are_refused(roles: object) -> None:
    with pytest.raises(AuthError, match="'roles'"):
        decode_token(_signed(roles=roles), secret=SECRET)


def test_minting_a_token_past_the_maximum_lifetime_is_an_error() -> None:
    with pytest.raises(ValueError, match="at most 3600 seconds"):
        mint_token(secret=SECRET, sub="u-1", name="N", ttl_seconds=3601, max_lifetime=3600)


class _CountedDecode:
    """jwt.decode, counting the tokens it checks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._decode = jwt.decode
        monkeypatch.setattr("services.common.auth.jwt.decode", self)

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self._decode(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_token_accepted_once_is_not_checked_again_on_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decode = _CountedDecode(monkeypatch)
    authenticator = Authenticator(secret=SECRET)
    header = f"Bearer {mint_token(secret=SECRET, sub='u-1', name='Dr Test')}"

    first = await authenticator.actor(header)
    again = await authenticator.actor(header)

    assert first == again == Actor(user_id="u-1", name="Dr Test", roles=frozenset())
    assert decode.calls == 1


async def test_a_remembered_token_past_its_expiry_is_checked_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decode = _CountedDecode(monkeypatch)
    now = datetime.now(UTC)
    clock = [now]
    authenticator = Authenticator(secret=SECRET, clock=lambda: clock[0])
    header = f"Bearer {mint_token(secret=SECRET, sub='u-1', name='Dr Test', ttl_seconds=60)}"
    await authenticator.actor(header)

    clock[0] = now + timedelta(seconds=61)
    await authenticator.actor(header)

    # The second request is decided by the full check (which words an expiry), not by
    # the memory of the first.
    assert decode.calls == 2


async def test_a_refused_token_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = _CountedDecode(monkeypatch)
    authenticator = Authenticator(secret=SECRET)
    header = f"Bearer {mint_token(secret=OTHER_SECRET, sub='u-1', name='Dr Test')}"

    for _ in range(2):
        with pytest.raises(AuthError, match="signature does not match"):
            await authenticator.actor(header)

    assert decode.calls == 2


async def test_the_tokens_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.common.auth.VERIFIED_TOKENS", 3)
    decode = _CountedDecode(monkeypatch)
    authenticator = Authenticator(secret=SECRET)
    headers = [
        f"Bearer {mint_token(secret=SECRET, sub=f'u-{n}', name='Dr Test')}" for n in range(4)
    ]
    for header in headers:
        await authenticator.actor(header)

    await authenticator.actor(headers[0])  # the oldest was let go: checked again
    await authenticator.actor(headers[3])  # still held

    assert decode.calls == 5
