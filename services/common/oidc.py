"""OpenID Connect: RS256/ES256 tokens verified against the provider's published keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from services.common.actor import Actor
from services.common.auth import (
    DEFAULT_MAX_LIFETIME_SECONDS,
    MALFORMED,
    OIDC_ALGORITHMS,
    Authenticator,
    AuthError,
    actor_of,
    shared_refusal,
)
from services.common.log import get_logger
from services.settings import Settings

_log = get_logger(__name__)
_REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud")
# Clocks of the provider and this server drift; half a minute is the usual allowance.
LEEWAY_SECONDS = 30
# An unknown kid fetches the keys again at most this often, so made-up kids cannot
# turn every request into a request to the provider.
REFETCH_SECONDS = 10.0
# After a failed fetch, requests within this window are refused without trying again.
RETRY_AFTER_FAILURE_SECONDS = 2.0
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5)
_MAX_DOCUMENT_BYTES = 1 << 20
_UNREACHABLE = (
    "the identity provider could not be reached to check the token's signature; try again shortly"
)
_UNUSABLE = (
    "the identity provider's discovery document or keys could not be used to check the "
    "token's signature (the server log says why); tell the operators"
)


class ProviderError(Exception):
    """The provider's discovery document or keys could not be fetched or made no sense."""


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (realm_access.roles); None when absent.

    A claim whose own name contains dots (namespaced claims such as
    https://example.org/roles) is found under its full name first.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def actor_from_claims(
    claims: Mapping[str, Any],
    *,
    name_claim: str,
    roles_claim: str,
    max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
) -> Actor:
    """The Actor of verified OIDC claims: sub, a display name and the roles list."""
    name = claim_at(claims, name_claim)
    if name is None:
        name = claims.get("preferred_username")
    if not isinstance(name, str) or not name.strip():
        raise AuthError(
            f"the access token needs a '{name_claim}' or 'preferred_username' claim: the "
            "user's display name (set CARECOORD_OIDC_NAME_CLAIM to the claim that holds it)"
        )
    roles = claim_at(claims, roles_claim)
    return actor_of(
        claims,
        name=name,
        roles=[] if roles is None else roles,
        roles_claim=roles_claim,
        max_lifetime=max_lifetime,
    )


def signing_keys(jwks: Any) -> dict[str, jwt.PyJWK]:
    """The RS256/ES256 signing keys of a JWKS document, by kid; other keys are skipped."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ProviderError("the JWKS document has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in jwks["keys"]:
        # Providers publish encryption keys beside signing keys (Keycloak: RSA-OAEP).
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        try:
            key = jwt.PyJWK(jwk)
        except jwt.PyJWTError:
            continue
        if isinstance(kid, str) and key.algorithm_name in OIDC_ALGORITHMS:
            keys[kid] = key
    if not keys:
        raise ProviderError("the JWKS document holds no RS256 or ES256 signing key with a kid")
    return keys


class OidcVerifier:
    """Verifies tokens of one issuer; its keys are cached and refetched for unknown kids.

    One per app: it holds the aiohttp session (opened at first use) and the key cache.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        name_claim: str = "name",
        roles_claim: str = "roles",
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
    ) -> None:
        self.issuer = issuer
        self._issuers = {issuer, issuer.rstrip("/")}
        self._audience = audience
        self._name_claim = name_claim
        self._roles_claim = roles_claim
        self._cache_seconds = cache_seconds
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._key_set = 0
        self._expires_at = -math.inf
        self._last_fetch = -math.inf
        self._retry_at = -math.inf
        self._last_failure = _UNREACHABLE
        self._inflight: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The configured provider's verifier; None when CARECOORD_OIDC_ISSUER is not set."""
        if not settings.oidc_issuer:
            return None
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            name_claim=settings.oidc_name_claim,
            roles_claim=settings.oidc_roles_claim,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            max_lifetime=settings.token_max_lifetime_seconds,
        )

    async def verify(self, token: str) -> Actor:
        """The Actor of a token signed by the provider, or AuthError saying what is wrong."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            kid = None
        if not isinstance(kid, str) or not kid:
            raise AuthError(
                "the access token's header names no signing key ('kid'), so it cannot be "
                "checked against the identity provider's keys"
            )
        key = await self._signing_key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(OIDC_ALGORITHMS),
                audience=self._audience,
                issuer=self._issuers,
                leeway=LEEWAY_SECONDS,
                options={"require": list(_REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthError(self._refusal(exc)) from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            # Claims PyJWT could not compare (an 'iss' list, say); its messages may quote them.
            raise AuthError(MALFORMED) from None
        return actor_from_claims(
            claims,
            name_claim=self._name_claim,
            roles_claim=self._roles_claim,
            max_lifetime=self._max_lifetime,
        )

    def _refusal(self, exc: jwt.InvalidTokenError) -> str:
        if message := shared_refusal(exc, issuer="the identity provider"):
            return message
        if isinstance(exc, jwt.InvalidAudienceError):
            return (
                f"the access token is not meant for this service: its 'aud' does not "
                f"contain '{self._audience}' (CARECOORD_OIDC_AUDIENCE)"
            )
        if isinstance(exc, jwt.InvalidIssuerError):
            return (
                "the access token was issued by another identity provider than the one this "
                "server trusts (CARECOORD_OIDC_ISSUER)"
            )
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return "the access token's algorithm does not match the provider key it names"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "the access token's signature does not match the identity provider's key"
        return "the access token was refused: its claims are not valid"

    async def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._clock() >= self._expires_at:
            await self._refresh(discover=True)
        elif kid not in self._keys and (
            self._inflight is not None or self._clock() - self._last_fetch >= REFETCH_SECONDS
        ):
            # A kid we have not seen: the provider may have rotated its keys.
            await self._refresh(discover=False)
        key = self._keys.get(kid)
        if key is None:
            raise AuthError(
                "the access token is signed with a key the identity provider does not publish "
                "(unknown 'kid'); sign in again for a fresh token"
            )
        return key

    async def _refresh(self, *, discover: bool) -> None:
        """Fetch the keys once for everyone waiting; AuthError if the provider failed."""
        if self._inflight is None:
            if self._clock() < self._retry_at:
                raise AuthError(self._last_failure)
            self._last_fetch = self._clock()
            self._inflight = asyncio.create_task(self._fetch(discover), name="oidc-jwks")
            self._inflight.add_done_callback(self._fetched)
        try:
            # Shielded: one caller giving up must not cancel the fetch the others await.
            await asyncio.shield(self._inflight)
        except ProviderError:
            raise AuthError(self._last_failure) from None

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            self._retry_at = self._clock() + RETRY_AFTER_FAILURE_SECONDS

    async def _fetch(self, discover: bool) -> None:
        try:
            if discover or self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            keys = signing_keys(await self._get_json(self._jwks_uri))
        except (aiohttp.ClientError, TimeoutError, OSError, ProviderError) as exc:
            unusable = isinstance(exc, ProviderError)
            _log.warning(
                "oidc.provider_unavailable",
                issuer_host=urlsplit(self.issuer).netloc,
                error=type(exc).__name__,
                status=getattr(exc, "status", None),
                reason=str(exc) if unusable else None,
            )
            self._last_failure = _UNUSABLE if unusable else _UNREACHABLE
            raise ProviderError(type(exc).__name__) from exc
        self._keys = keys
        self._key_set += 1
        self._expires_at = self._clock() + self._cache_seconds

    @property
    def key_set(self) -> int:
        """Which fetch of the provider's keys is current: it changes with every fetch, and is
        -1 once they are due to be fetched again (a token checked before is checked anew,
        which fetches them)."""
        return self._key_set if self._clock() < self._expires_at else -1

    async def _discover(self) -> str:
        document = await self._get_json(
            f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        )
        if not isinstance(document, Mapping):
            raise ProviderError("the discovery document is not a JSON object")
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer.rstrip("/"):
            raise ProviderError(
                "the discovery document names another issuer than CARECOORD_OIDC_ISSUER"
            )
        self._issuers.add(issuer)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ProviderError("the discovery document has no 'jwks_uri'")
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_FETCH_TIMEOUT)
        body = bytearray()
        async with self._session.get(url, raise_for_status=True) as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > _MAX_DOCUMENT_BYTES:
                    raise ProviderError(
                        f"{url} answered with more than {_MAX_DOCUMENT_BYTES} bytes"
                    )
        try:
            return json.loads(body)
        except ValueError:
            raise ProviderError(f"{url} did not answer with JSON") from None

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError, ProviderError):
                await self._inflight
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_authenticator(settings: Settings) -> Authenticator:
    """The app's Authenticator: the dev-token secret, and the OpenID provider if configured."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return Authenticator(
        secret=secret,
        oidc=OidcVerifier.from_settings(settings),
        max_lifetime=settings.token_max_lifetime_seconds,
    )
