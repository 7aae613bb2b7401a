"""The pipeline's pure decisions: group timing, notify-or-not per sink, and what a delivery means."""

from __future__ import annotations

import random

import pytest

from regwarden.alerting.policy import change_allowed_at, decide, judge_delivery, repeat_every
from regwarden.backoff import Backoff
from regwarden.sink_api import Delivery


@pytest.mark.parametrize(("created", "last_flush", "expected"), [
    (100.0, None, 110.0),  # a new group waits group_wait
    (100.0, 110.0, 410.0),  # then news at most once per group_interval
    (100.0, 1000.0, 1300.0),
])
def test_change_allowed_at(created: float, last_flush: float | None, expected: float) -> None:
    """News may go out group_wait after the group appeared, then once per group_interval."""
    assert change_allowed_at(created, last_flush, group_wait=10, group_interval=300) == expected


def test_repeat_every_takes_the_sinks_shorter_resend_interval() -> None:
    """A sink's resend_interval (Alertmanager: 60 s) shortens repeat_interval, never lengthens it."""
    assert repeat_every(14400, 60) == 60
    assert repeat_every(30, 60) == 30
    assert repeat_every(14400, None) == 14400


A, B, C = "a" * 16, "b" * 16, "c" * 16
NOW = 1000.0


@pytest.mark.parametrize(("case", "firing_now", "resolved_now", "last_firing", "last_sent", "change_ok",
                          "reason", "firing", "resolved"), [
    ("first firing", {A}, set(), set(), None, True, "new", {A}, set()),
    ("first firing, still in group_wait", {A}, set(), set(), None, False, None, set(), set()),
    ("identical state is not re-sent", {A}, set(), {A}, NOW - 10, True, None, {A}, set()),
    ("a new alert joins the group", {A, B}, set(), {A}, NOW - 10, True, "new", {A, B}, set()),
    ("resolution of a notified alert", set(), {A}, {A}, NOW - 10, True, "resolved", set(), {A}),
    ("resolution waits for group_interval", set(), {A}, {A}, NOW - 10, False, None, {A}, set()),
    ("resolution of a never-notified alert is not sent", set(), {A}, set(), None, True, None, set(), set()),
    ("repeat after repeat_after", {A}, set(), {A}, NOW - 100, False, "repeat", {A}, set()),
    ("repeat does not leak news early", {A, B}, set(), {A}, NOW - 100, False, "repeat", {A}, set()),
    ("silenced alert is forgotten without a notification", {B}, set(), {A, B}, NOW - 10, True, None, {B}, set()),
    ("firing and resolved together", {B}, {A}, {A}, NOW - 10, True, "new", {B}, {A}),
])
def test_decide(case: str, firing_now: set[str], resolved_now: set[str], last_firing: set[str],
                last_sent: float | None, change_ok: bool, reason: str | None, firing: set[str],
                resolved: set[str]) -> None:
    """decide() notifies news when allowed, repeats unchanged alerts only after repeat_after."""
    decision = decide(firing_now=firing_now, resolved_now=resolved_now, last_firing=last_firing,
                      last_sent_at=last_sent, now=NOW, change_ok=change_ok, repeat_after=60)
    assert (decision.reason, set(decision.firing), set(decision.resolved)) == (reason, firing, resolved), case


def _backoff() -> Backoff:
    backoff = Backoff(initial=1.0, maximum=300.0)
    backoff._rng = random.Random(7)
    return backoff


def test_delivery_ok_is_delivered_and_resets_backoff() -> None:
    """A successful delivery removes the row and resets the backoff."""
    backoff = _backoff()
    backoff.next()
    assert judge_delivery(Delivery.success(), backoff).outcome == "delivered"
    assert backoff.attempts == 0


def test_retryable_failure_backs_off_exponentially_with_jitter() -> None:
    """Retryable failures wait a growing, jittered delay bounded by the maximum (retry_max)."""
    backoff = _backoff()
    delays = [judge_delivery(Delivery(ok=False, retryable=True), backoff).delay for _ in range(12)]
    assert all(1.0 <= d <= 300.0 for d in delays)
    ceilings = [min(300.0, 2.0**n) for n in range(12)]
    assert all(d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[8:]) > 16


def test_retry_after_is_a_floor() -> None:
    """A sink's Retry-After hint is never shortened by jitter."""
    attempt = judge_delivery(Delivery(ok=False, retryable=True, retry_after=42.0), _backoff())
    assert attempt.outcome == "retry" and attempt.delay >= 42.0


def test_permanent_failure_is_failed() -> None:
    """ok=False, retryable=False is a permanent failure (the sink is broken)."""
    assert judge_delivery(Delivery(ok=False, retryable=False, detail="HTTP 404"), _backoff()).outcome == "failed"
