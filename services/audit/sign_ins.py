"""Refused sign-ins as security events in the audit log, bounded however many arrive
(pure: time is passed in).

HIPAA 164.308(a)(5)(ii)(C) asks for log-in monitoring: a token refused (forged, expired,
malformed, or, on a request naming patient data, missing) is an event a compliance
officer must be able to find. An unsigned client can send such requests as fast as it
likes, so each is not an entry of its own: refusals are keyed by where they came from
and what they reached for (client address, record named, claimed subject). The first
refusal of a key in a window is recorded at once; later ones in the same window are
counted and recorded as one entry when the window ends. At most `max_keys` keys are open
at a time, beyond which refusals share one overflow key: a window adds at most
2 * (max_keys + 1) entries per API process, however many refusals arrive.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from schemas.audit import UNAUTHENTICATED_ACTOR, AccessAction, AccessRecorded, SignInOutcome
from schemas.common import Purpose

# What a refusal that named no record reached for.
SIGN_IN = "SignIn"


@dataclass(frozen=True)
class Refusal:
    """One refused sign-in: from where, reaching for what, claiming to be whom, and why.
    Never the token."""

    client_addr: str | None
    reason: str
    # The record the request named ("Patient", id), or SIGN_IN and None.
    resource_type: str = SIGN_IN
    resource_id: str | None = None
    # The token's unverified `sub` (UNREADABLE_SUBJECT if no user id; None: no token).
    claimed_subject: str | None = None
    purpose: Purpose = Purpose.TREATMENT
    request_id: str | None = None
    correlation_id: str | None = None
    user_agent: str | None = None
    # The caller's own handle on the record named, to find its patients by (opaque here).
    locator: object = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str | None, ...]:
        return (self.client_addr, self.resource_type, self.resource_id, self.claimed_subject)


_OVERFLOW: tuple[str | None, ...] = ("overflow",)


@dataclass
class _Window:
    ends: float
    counted: int = 0
    last: Refusal | None = None


@dataclass(frozen=True)
class Summary:
    """Refusals counted in a window after its first was recorded: `last` of `count`."""

    last: Refusal
    count: int
    window_seconds: float
    overflow: bool = False


@dataclass
class SignInTally:
    """Which refused sign-ins to record now and which to count (module docstring)."""

    window_seconds: float
    max_keys: int
    _open: dict[tuple[str | None, ...], _Window] = field(default_factory=dict)
    _ended: list[Summary] = field(default_factory=list)

    def refused(self, refusal: Refusal, now: float) -> bool:
        """True when this refusal is to be recorded at once; False when it was counted
        (its window's Summary will say so)."""
        self._ended += self._close_ended(now)
        key = refusal.key
        if key not in self._open and len(self._open) >= self.max_keys + (_OVERFLOW in self._open):
            key = _OVERFLOW
        window = self._open.get(key)
        if window is None:
            self._open[key] = _Window(ends=now + self.window_seconds)
            return True
        window.counted += 1
        window.last = refusal
        return False

    def due(self, now: float) -> list[Summary]:
        """The counts of the windows that have ended (and closes them)."""
        summaries, self._ended = [*self._ended, *self._close_ended(now)], []
        return summaries

    def _close_ended(self, now: float) -> list[Summary]:
        ended = [key for key, window in self._open.items() if window.ends <= now]
        summaries = []
        for key in ended:
            window = self._open.pop(key)
            if window.last is not None:
                summaries.append(
                    Summary(window.last, window.counted, self.window_seconds, key == _OVERFLOW)
                )
        return summaries

    def next_end(self) -> float | None:
        """When the next window with counted refusals ends (None: none pending)."""
        pending = [w.ends for w in self._open.values() if w.counted]
        return min(pending) if pending else None

    def __len__(self) -> int:
        return len(self._open)


def record(
    refusal: Refusal, *, at: datetime, patient_id: str | None, refusals: int = 1, reason: str = ""
) -> AccessRecorded:
    """The audit record of `refusals` refused sign-ins like `refusal`."""
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=at,
        actor_id=UNAUTHENTICATED_ACTOR,
        actor_name=UNAUTHENTICATED_ACTOR,
        patient_id=patient_id,
        action=AccessAction.SIGN_IN,
        resource_type=refusal.resource_type,
        # An id the caller typed may be anything: the record keeps enough to name it.
        resource_id=refusal.resource_id[:200] if refusal.resource_id else None,
        purpose=refusal.purpose,
        outcome=SignInOutcome.UNAUTHENTICATED,
        reason=(reason or refusal.reason)[:2000],
        request_id=refusal.request_id,
        correlation_id=refusal.correlation_id,
        client_addr=refusal.client_addr,
        user_agent=(refusal.user_agent or None) and refusal.user_agent[:512],
        claimed_subject=refusal.claimed_subject,
        refusals=refusals,
    )


def summary_reason(summary: Summary) -> str:
    """What a count record says: how many, over what time, and the last reason."""
    source = (
        "from clients past the tracking limit (their addresses and records vary)"
        if summary.overflow
        else "like the one recorded before it"
    )
    return (
        f"{summary.count} more refused sign-in(s) {source} within "
        f"{summary.window_seconds:g} s; the last: {summary.last.reason}"
    )


def overflowed(summary: Summary) -> Refusal:
    """An overflow count names no address, record or subject: they varied."""
    if not summary.overflow:
        return summary.last
    return replace(
        summary.last,
        client_addr=None,
        resource_type=SIGN_IN,
        resource_id=None,
        claimed_subject=None,
    )
