"""What seeding the demo made: the team's members with their tokens, and the records' ids."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    user_id: str
    name: str
    discipline: str
    lead: bool
    # A development bearer token for this member (the stack's HS256 secret signs it).
    token: str
    # Whether the patient's consent lets this member see the GENETIC items in full.
    sees_genetic: bool


@dataclass(frozen=True)
class Demo:
    base_url: str
    team_id: str
    patient_id: str
    plan_id: str
    huddle_id: str
    members: tuple[Member, ...]  # all seven, the lead physician first

    def member(self, discipline: str) -> Member:
        """The member of a discipline, e.g. "PHARMACIST"."""
        wanted = discipline.strip().upper()
        for member in self.members:
            if member.discipline == wanted:
                return member
        held = ", ".join(m.discipline for m in self.members)
        raise KeyError(f"the demo team has no {wanted}; it has {held}")

    def board_url(self, member: Member) -> str:
        # The token travels in the fragment, which browsers never send to the server.
        return f"{self.base_url}/board/{self.team_id}#token={member.token}"

    @property
    def viewers(self) -> tuple[Member, Member]:
        """Two members who see the genetic items differently: the pharmacist (in full,
        by the patient's consent) and the social worker (redacted)."""
        return self.member("PHARMACIST"), self.member("SOCIAL_WORKER")
