"""Bearer tokens: JWT in, Actor out (HS256 dev tokens here, RS256/ES256 via a verifier)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt

from services.common.actor import Actor

ALGORITHM = "HS256"
# Signed by an OpenID provider's published keys; never by a secret this server holds.
OIDC_ALGORITHMS = ("RS256", "ES256")
_REQUIRED_CLAIMS = ("sub", "exp", "iat")
# Shorter HMAC keys are guessable offline from any token; PyJWT would only warn.
_DECODE_OPTIONS: Any = {"require": list(_REQUIRED_CLAIMS), "enforce_minimum_key_length": True}


class AuthError(Exception):
    """The caller's credentials were refused; the message says why, never echoing the token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    # A bad signature is a DecodeError to PyJWT, but not a malformed token.
    if isinstance(exc, jwt.DecodeError) and not isinstance(exc, jwt.InvalidSignatureError):
        return MALFORMED
    return None


def decode_token(token: str, *, secret: str, leeway: int = 0) -> Actor:
    """Verify an HS256 token and return its Actor, or raise AuthError saying what is wrong."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS, leeway=leeway
        )
    except jwt.PyJWTError as exc:  # InvalidKeyError is not an InvalidTokenError
        raise AuthError(_hs256_refusal(exc)) from None
    return _actor_from_claims(claims)


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
    # PyJWT's remaining messages name claims, never the token's content.
    return f"the access token was refused: {exc}"


def _actor_from_claims(claims: Mapping[str, Any]) -> Actor:
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise AuthError("the access token's 'sub' claim must be a non-empty string (the user id)")
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AuthError("the access token needs a 'name' claim: the user's display name")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthError("the access token's 'roles' claim must be a list of strings")
    return Actor(user_id=sub, name=name, roles=frozenset(roles))


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

    async def close(self) -> None: ...


class Authenticator:
    """Authorization header in, Actor out: HS256 dev tokens against the server's secret,
    RS256/ES256 tokens against the OpenID provider's keys when one is configured."""

    def __init__(self, *, secret: str | None, oidc: TokenVerifier | None = None) -> None:
        self._secret = secret
        self._oidc = oidc

    async def actor(self, authorization: str | None) -> Actor | None:
        """The caller, None without a header, or AuthError saying why the token was refused."""
        token = bearer_token(authorization)
        if token is None:
            return None
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
            return decode_token(token, secret=self._secret)
        if alg in OIDC_ALGORITHMS:
            if self._oidc is None:
                raise AuthError(
                    f"the access token is signed with {alg}, but this server accepts only its "
                    "own HS256 dev tokens (CARECOORD_OIDC_ISSUER is not set)"
                )
            return await self._oidc.verify(token)
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
) -> str:
    """Sign an HS256 token for sub; used by `carecoord token` and tests."""
    if len(secret.encode()) < 32:
        raise ValueError("the token secret must be at least 32 bytes for HS256")
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    claims = {
        "sub": sub,
        "name": name,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
