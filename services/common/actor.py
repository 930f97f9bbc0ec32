"""Who is calling: a signed-in user's id, display name and global roles (pure, no I/O).

Authentication (services.common.auth) makes one from a token; the access policy and the
audit records only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

COMPLIANCE_OFFICER = "compliance_officer"
ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """Who is calling: the token's subject, display name and global roles."""

    user_id: str
    name: str
    roles: frozenset[str]
    # When the token that vouched for this caller stops vouching (its `exp`); None for
    # callers no token vouched for (a command-line operator). Two actors are the same
    # person whatever their tokens' expiry.
    expires_at: datetime | None = field(default=None, compare=False)

    def expired(self, now: datetime) -> bool:
        """True once the caller's token has expired: nothing more is served on it."""
        return self.expires_at is not None and now >= self.expires_at

    @property
    def is_compliance_officer(self) -> bool:
        return COMPLIANCE_OFFICER in self.roles

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles
