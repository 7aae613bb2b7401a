"""Pure decisions of the alert pipeline: when a group may notify, whether a sink gets a notification,
and what a delivery attempt means for the outbox row. Times are Unix seconds (floats).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Literal

from ..backoff import Backoff
from ..sink_api import Delivery

__all__ = [
    "Attempt",
    "Reason",
    "SinkDecision",
    "change_allowed_at",
    "decide",
    "judge_delivery",
    "repeat_every",
]

Reason = Literal["new", "resolved", "repeat"]


def change_allowed_at(created_at: float, last_flush_at: float | None, group_wait: float,
                      group_interval: float) -> float:
    """When a group may next send news (a new or resolved alert): `group_wait` after the group appeared,
    then at most once per `group_interval`."""
    first = created_at + group_wait
    if last_flush_at is None:
        return first
    return max(first, last_flush_at + group_interval)


def repeat_every(repeat_interval: float, resend_interval: float | None) -> float:
    """How often unchanged firing alerts are sent again to one sink (a sink may ask for more often)."""
    return repeat_interval if resend_interval is None else min(repeat_interval, resend_interval)


@dataclass(frozen=True)
class SinkDecision:
    """What to do for one sink and one group: notify (and why), and what the sink has now been told."""

    reason: Reason | None
    firing: frozenset[str]  # fingerprints in the notification (or still believed firing by the sink)
    resolved: frozenset[str]  # resolved fingerprints to include in the notification

    @property
    def notify(self) -> bool:
        return self.reason is not None


def decide(*, firing_now: Set[str], resolved_now: Set[str], last_firing: Set[str], last_sent_at: float | None,
           now: float, change_ok: bool, repeat_after: float) -> SinkDecision:
    """Should this sink get a notification for this group now?

    `firing_now`: fingerprints firing, not silenced, accepted by the sink; `resolved_now`: fingerprints
    resolved and accepted by the sink; `last_firing`: what the sink was last told is firing.
    News (a firing alert the sink does not know, a resolution of one it does) waits for `change_ok`;
    an identical state is re-sent only after `repeat_after` seconds.
    """
    firing = frozenset(firing_now)
    ended = frozenset(resolved_now) & frozenset(last_firing)
    if change_ok and firing - frozenset(last_firing):
        return SinkDecision("new", firing, ended)
    if change_ok and ended:
        return SinkDecision("resolved", firing, ended)
    known = firing & frozenset(last_firing)  # news waiting for change_ok is not sent ahead of time
    if known and last_sent_at is not None and now >= last_sent_at + repeat_after:
        return SinkDecision("repeat", known, frozenset())
    # nothing to send: forget alerts the sink no longer sees (silenced, filtered), keep pending news
    return SinkDecision(None, frozenset(last_firing) & (firing | frozenset(resolved_now)), frozenset())


@dataclass(frozen=True)
class Attempt:
    """What a delivery attempt means for its outbox row."""

    outcome: Literal["delivered", "retry", "failed"]
    delay: float = 0.0  # seconds until the next attempt (outcome "retry")


def judge_delivery(delivery: Delivery, backoff: Backoff) -> Attempt:
    """Delivered; retryable (next try after backoff with jitter, never before `retry_after`); or permanent."""
    if delivery.ok:
        backoff.reset()
        return Attempt("delivered")
    if delivery.retryable:
        return Attempt("retry", backoff.next(delivery.retry_after))
    return Attempt("failed")
