"""Who is calling: a signed-in user's id, display name and global roles (pure, no I/O).

Authentication (services.common.auth) makes one from a token; the access policy and the
audit records only read it.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPLIANCE_OFFICER = "compliance_officer"
ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """Who is calling: the token's subject, display name and global roles."""

    user_id: str
    name: str
    roles: frozenset[str]

    @property
    def is_compliance_officer(self) -> bool:
        return COMPLIANCE_OFFICER in self.roles

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles
