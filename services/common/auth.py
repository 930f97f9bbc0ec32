"""Bearer tokens: JWT in, Actor out (HS256 dev tokens here, RS256/ES256 via a verifier)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt

from services.common.actor import Actor
from services.common.text import TextProblem, check_user_id, clean

ALGORITHM = "HS256"
# Signed by an OpenID provider's published keys; never by a secret this server holds.
OIDC_ALGORITHMS = ("RS256", "ES256")
_REQUIRED_CLAIMS = ("sub", "exp", "iat")
# Shorter HMAC keys are guessable offline from any token; PyJWT would only warn.
_DECODE_OPTIONS: Any = {"require": list(_REQUIRED_CLAIMS), "enforce_minimum_key_length": True}
# The longest a token may live (exp - iat) unless the server says otherwise
# (CARECOORD_TOKEN_MAX_LIFETIME_SECONDS): a clinical shift and its handover.
DEFAULT_MAX_LIFETIME_SECONDS = 12 * 3600
# NumericDates past this (9999-12-31) are no date a token can mean; they must not reach
# datetime arithmetic, where they would overflow.
_LAST_NUMERIC_DATE = 253_402_300_799
# Display names and roles are short; a token carrying more is not one we issued.
NAME_MAX = 200
ROLE_MAX = 128
ROLES_MAX = 256


class AuthError(Exception):
    """The caller's credentials were refused; the message says why, never echoing the token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# The claimed subject of a token whose `sub` could not be read or is no user id (the
# audit record's words, schemas.audit.UNREADABLE_SUBJECT).
UNREADABLE = "(unreadable)"

MALFORMED = "the access token is malformed; expected a JWT (three base64url parts joined by dots)"


def shared_refusal(exc: jwt.PyJWTError, *, issuer: str) -> str | None:
    """What is wrong with a token, in the words every kind of token shares (None when the
    kind of token decides). PyJWT's own messages can quote claim values: ours never do."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the access token has expired; sign in again"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return f"the access token is not valid yet (issued in the future); check {issuer}'s clock"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the access token lacks the required '{exc.claim}' claim"
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "the access token's 'sub' claim must be a string (the user id)"
    if isinstance(exc, jwt.exceptions.InvalidIssuedAtError):
        return "the access token's 'iat' claim must be a date in seconds since 1970"
    # A bad signature is a DecodeError to PyJWT, but not a malformed token.
    if isinstance(exc, jwt.DecodeError) and not isinstance(exc, jwt.InvalidSignatureError):
        return MALFORMED
    return None


def decode_token(
    token: str,
    *,
    secret: str,
    leeway: int = 0,
    max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
) -> Actor:
    """Verify an HS256 token and return its Actor, or raise AuthError saying what is wrong."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS, leeway=leeway
        )
    except jwt.PyJWTError as exc:  # InvalidKeyError is not an InvalidTokenError
        raise AuthError(_hs256_refusal(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        # A payload PyJWT could not even compare (its own messages may quote it).
        raise AuthError(MALFORMED) from None
    return _actor_from_claims(claims, max_lifetime=max_lifetime)


def _hs256_refusal(exc: jwt.PyJWTError) -> str:
    if message := shared_refusal(exc, issuer="the issuing system"):
        return message
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"the access token must be signed with {ALGORITHM}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return (
            "the access token's signature does not match this server's secret "
            "(was it issued for another environment?)"
        )
    if isinstance(exc, jwt.InvalidKeyError):
        return (
            "this server's token secret is shorter than 32 bytes, so no token is accepted; "
            "set a longer CARECOORD_JWT_SECRET"
        )
    # PyJWT's own words stay out: clients get ours only.
    return "the access token was refused: its claims are not valid"


def _actor_from_claims(claims: Mapping[str, Any], *, max_lifetime: float) -> Actor:
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AuthError("the access token needs a 'name' claim: the user's display name")
    return actor_of(
        claims,
        name=name,
        roles=claims.get("roles", []),
        roles_claim="roles",
        max_lifetime=max_lifetime,
    )


def actor_of(
    claims: Mapping[str, Any],
    *,
    name: str,
    roles: Any,
    roles_claim: str,
    max_lifetime: float,
) -> Actor:
    """The Actor of a verified token's claims, each checked: `sub` a user id in the safe
    form, the name clean text, the roles a short list of short names, and a lifetime
    (exp - iat) no longer than `max_lifetime`. Refusals name the claim, never its value."""
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise AuthError("the access token's 'sub' claim must be a string (the user id)")
    try:
        check_user_id(sub)
    except TextProblem as problem:
        raise AuthError(f"the access token's 'sub' claim (the user id) {problem}") from None
    try:
        name = clean(name).strip()
    except TextProblem as problem:
        raise AuthError(f"the access token's display name {problem}") from None
    if not name or len(name) > NAME_MAX:
        raise AuthError(f"the access token's display name must be 1 to {NAME_MAX} characters")
    return Actor(
        user_id=sub,
        name=name,
        roles=_roles(roles, roles_claim),
        expires_at=lifetime(claims, max_lifetime=max_lifetime),
    )


def _roles(roles: Any, claim: str) -> frozenset[str]:
    refusal = AuthError(
        f"the access token's '{claim}' claim must be a list of at most {ROLES_MAX} role "
        f"names of 1 to {ROLE_MAX} characters"
    )
    if not isinstance(roles, list) or len(roles) > ROLES_MAX:
        raise refusal
    for role in roles:
        if not isinstance(role, str) or not 1 <= len(role) <= ROLE_MAX:
            raise refusal
        try:
            if clean(role) != role:
                raise refusal
        except TextProblem:
            raise refusal from None
    return frozenset(roles)


def _numeric_date(claims: Mapping[str, Any], claim: str) -> float:
    value = claims.get(claim)
    # Range first: an int too large for a float must not reach float arithmetic.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= _LAST_NUMERIC_DATE
        or not math.isfinite(value)
    ):
        raise AuthError(
            f"the access token's '{claim}' claim must be a date in seconds since 1970 "
            "(a NumericDate)"
        )
    return float(value)


def lifetime(claims: Mapping[str, Any], *, max_lifetime: float) -> datetime:
    """When a verified token expires; AuthError when it was issued to live longer than
    `max_lifetime` seconds (or expires before it was issued). PyJWT has already refused an
    expired token or one issued in the future."""
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    if exp <= iat:
        raise AuthError("the access token expires before it was issued ('exp' <= 'iat')")
    if exp - iat > max_lifetime:
        raise AuthError(
            f"the access token was issued to live longer than this server accepts "
            f"({max_lifetime:g} seconds between 'iat' and 'exp'); sign in for a shorter-lived one"
        )
    return datetime.fromtimestamp(exp, UTC)


def bearer_token(header: str | None) -> str | None:
    """The token of an Authorization header value; None when there is no header."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token


def _no_secret() -> AuthError:
    return AuthError(
        "this server has no token secret configured (CARECOORD_JWT_SECRET), "
        "so no token can be accepted"
    )


def actor_from_authorization(header: str | None, *, secret: str | None) -> Actor | None:
    """Actor from an Authorization header value carrying an HS256 dev token; None when
    there is no header.

    A secret of None means the server was started without CARECOORD_JWT_SECRET: every
    token is refused, rather than accepted unverified.
    """
    token = bearer_token(header)
    if token is None:
        return None
    if not secret:
        raise _no_secret()
    return decode_token(token, secret=secret)


def claimed_subject(authorization: str | None) -> str | None:
    """The `sub` a refused token claims, unverified, for the record of the refusal: the
    user id if it is one in the safe form, UNREADABLE otherwise; None without a token.
    Never the token itself, nor a `sub` that is no user id (it may be anything)."""
    try:
        token = bearer_token(authorization)
    except AuthError:
        return UNREADABLE
    if token is None:
        return None
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
        return check_user_id(sub) if isinstance(sub, str) else UNREADABLE
    except Exception:  # a token too broken to read says nothing about who sent it
        return UNREADABLE


def signing_algorithm(token: str) -> str:
    """The `alg` of a token's (not yet verified) header, to choose how it is verified."""
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        alg = None
    if not isinstance(alg, str):
        raise AuthError(MALFORMED)
    return alg


class TokenVerifier(Protocol):
    """Verifies tokens signed by someone else's keys (an OpenID provider)."""

    async def verify(self, token: str) -> Actor: ...

    @property
    def key_set(self) -> int:
        """Which fetch of the provider's keys is current: it changes with every fetch, and
        whenever the keys are due to be fetched again."""
        ...

    async def close(self) -> None: ...


# Tokens accepted lately, so that a client's every request does not pay for the signature
# and the claims' checks again (about a tenth of a command's CPU in the API).
VERIFIED_TOKENS = 4096


class Authenticator:
    """Authorization header in, Actor out: HS256 dev tokens against the server's secret,
    RS256/ES256 tokens against the OpenID provider's keys when one is configured.

    A token accepted once is remembered, keyed by the whole token (the most recent
    VERIFIED_TOKENS of them). Served again only while it has not expired, judged at each
    use, and for a provider's token only while the key set it was checked against is the
    current one: a refresh that withdraws a key withdraws the tokens it signed. A refused
    token is never remembered, so every refusal is decided (and worded) afresh.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        oidc: TokenVerifier | None = None,
        max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secret = secret
        self._oidc = oidc
        self._max_lifetime = max_lifetime
        self._clock = clock
        # token -> (its actor, the provider's key set it was checked against; None: HS256)
        self._accepted: OrderedDict[str, tuple[Actor, int | None]] = OrderedDict()

    async def actor(self, authorization: str | None) -> Actor | None:
        """The caller, None without a header, or AuthError saying why the token was refused."""
        token = bearer_token(authorization)
        if token is None:
            return None
        if (known := self._accepted.get(token)) is not None:
            actor, key_set = known
            current = key_set is None or (self._oidc is not None and key_set == self._oidc.key_set)
            if current and not actor.expired(self._clock()):
                self._accepted.move_to_end(token)
                return actor
            # Expired (the full check words the refusal) or checked against withdrawn keys.
            del self._accepted[token]
        actor, key_set = await self._verify(token)
        self._accepted[token] = (actor, key_set)
        if len(self._accepted) > VERIFIED_TOKENS:
            self._accepted.popitem(last=False)
        return actor

    async def _verify(self, token: str) -> tuple[Actor, int | None]:
        if not self._secret and self._oidc is None:
            raise _no_secret()
        # Which path verifies the token is chosen by its header, but each path allows only
        # its own algorithms: an HS256 token never meets a public key, nor RS256 a secret.
        alg = signing_algorithm(token)
        if alg == ALGORITHM:
            if not self._secret:
                raise AuthError(
                    "this server has no token secret configured (CARECOORD_JWT_SECRET), so it "
                    "accepts no HS256 dev tokens; sign in through the identity provider"
                )
            return decode_token(token, secret=self._secret, max_lifetime=self._max_lifetime), None
        if alg in OIDC_ALGORITHMS:
            if self._oidc is None:
                raise AuthError(
                    f"the access token is signed with {alg}, but this server accepts only its "
                    "own HS256 dev tokens (CARECOORD_OIDC_ISSUER is not set)"
                )
            # The key set after the check is the one it used: nothing awaits in between.
            actor = await self._oidc.verify(token)
            return actor, self._oidc.key_set
        raise AuthError(_unsupported(alg, oidc=self._oidc is not None))

    async def close(self) -> None:
        if self._oidc is not None:
            await self._oidc.close()


def _unsupported(alg: str, *, oidc: bool) -> str:
    accepted = (
        "HS256 dev tokens and RS256 or ES256 tokens from its identity provider"
        if oidc
        else "only HS256 dev tokens"
    )
    if alg.lower() == "none":
        return f"the access token is unsigned (alg 'none'); this server accepts {accepted}"
    # The header is the caller's text: name the algorithm only when it is a real one.
    if alg in jwt.algorithms.get_default_algorithms():
        return f"the access token is signed with {alg}; this server accepts {accepted}"
    return f"the access token names an unknown signing algorithm; this server accepts {accepted}"


def mint_token(
    *,
    secret: str,
    sub: str,
    name: str,
    roles: Sequence[str] = (),
    ttl_seconds: int = 8 * 3600,
    now: datetime | None = None,
    max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
) -> str:
    """Sign an HS256 token for sub; used by `carecoord token` and tests. A lifetime past
    `max_lifetime` is refused (ValueError): the server would refuse the token."""
    if len(secret.encode()) < 32:
        raise ValueError("the token secret must be at least 32 bytes for HS256")
    if not 0 < ttl_seconds <= max_lifetime:
        raise ValueError(
            f"a token may live at most {max_lifetime:g} seconds "
            "(CARECOORD_TOKEN_MAX_LIFETIME_SECONDS)"
        )
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    claims = {
        "sub": sub,
        "name": name,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
