"""The bus: items and batches reach every handler in order; its bound counts Events, not queue items."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime

import pytest

from regwarden.bus import MAX_BATCH, Bus
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics

AT = datetime(2026, 11, 27, 7, 9, 50, tzinfo=UTC)


def ev(i: int, kind: str = "image.pull") -> Event:
    return Event(source="registry-log", kind=kind, time=AT, observed=AT, request_id=str(i))


def test_batch_handlers_get_batches_and_item_handlers_get_each_event_in_order() -> None:
    bus = Bus(Metrics())
    singles: list[str] = []
    batches: list[list[str]] = []
    bus.subscribe("items", lambda item: singles.append(item.request_id if isinstance(item, Event) else "signal"))
    bus.subscribe("both", lambda item: batches.append([item.request_id if isinstance(item, Event) else "signal"]),
                  lambda events: batches.append([e.request_id or "" for e in events]))
    bus.start()
    bus.publish(ev(0))
    bus.publish_batch([ev(1), ev(2), ev(3)])
    bus.publish(Signal(labels={"alertname": "X"}))
    bus.publish_batch([ev(4)])
    assert bus.flush(5.0)
    bus.stop(5.0)
    assert singles == ["0", "1", "2", "3", "signal", "4"]
    assert batches == [["0"], ["1", "2", "3"], ["signal"], ["4"]]


def test_the_bound_counts_the_events_of_a_batch() -> None:
    """A bus of capacity 4 holding a batch of 3 takes one more item, then blocks the publisher."""
    bus = Bus(Metrics(), capacity=4)
    bus.publish_batch([ev(1), ev(2), ev(3)])
    bus.publish(ev(4))
    assert bus.depth() == 4
    with pytest.raises(queue.Full):
        bus.publish(ev(5), timeout=0.05)
    with pytest.raises(queue.Full):
        bus.publish_batch([ev(6), ev(7)], timeout=0.05)
    assert isinstance(bus.take(), list) and bus.depth() == 1
    bus.publish_batch([ev(6), ev(7)], timeout=0.05)
    assert bus.depth() == 3


def test_a_publisher_blocked_on_a_full_bus_goes_on_once_it_drains() -> None:
    bus = Bus(Metrics(), capacity=2)
    seen: list[Event | Signal] = []
    bus.subscribe("collect", seen.append)
    bus.publish_batch([ev(1), ev(2)])
    done = threading.Event()
    threading.Thread(target=lambda: (bus.publish(ev(3)), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    bus.start()
    assert done.wait(5.0) and bus.flush(5.0)
    bus.stop(5.0)
    assert [e.request_id for e in seen if isinstance(e, Event)] == ["1", "2", "3"]


def test_an_oversized_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        Bus(Metrics()).publish_batch([ev(i) for i in range(MAX_BATCH + 1)])


def test_every_event_of_a_batch_is_counted_and_a_failing_handler_does_not_stop_the_others() -> None:
    metrics = Metrics()
    bus = Bus(metrics)
    got: list[int] = []

    def broken(events: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe("broken", lambda item: None, broken)
    bus.subscribe("counting", lambda item: None, lambda events: got.append(len(events)))
    bus.dispatch_batch([ev(1), ev(2), ev(3, "auth.failure")])
    assert got == [3]
    assert metrics.registry.get_sample_value(
        "regwarden_events_total", {"source": "registry-log", "kind": "image.pull"}) == 2
    assert metrics.registry.get_sample_value("regwarden_handler_errors_total", {"handler": "broken"}) == 1


def test_a_checkpoint_runs_after_what_came_before_and_never_reaches_the_handlers() -> None:
    bus = Bus(Metrics())
    seen: list[object] = []
    bus.subscribe("collect", seen.append, seen.extend)
    bus.publish_batch([ev(1), ev(2)])
    bus.publish_checkpoint(lambda: seen.append("checkpoint"))
    bus.publish(ev(3))
    assert bus.depth() == 3  # a checkpoint weighs nothing against the capacity
    bus.start()
    assert bus.flush(5.0)
    bus.stop(5.0)
    assert [getattr(item, "request_id", item) for item in seen] == ["1", "2", "checkpoint", "3"]


def test_a_keeper_takes_the_checkpoints_and_a_failing_one_does_not_stop_the_bus() -> None:
    bus = Bus(Metrics())
    kept: list[object] = []
    ran: list[str] = []

    def keeper(checkpoint: object) -> None:
        kept.append(checkpoint)
        if len(kept) == 1:
            raise RuntimeError("disk on fire")

    bus.set_keeper(keeper)
    bus.start()
    bus.publish_checkpoint(lambda: ran.append("first"))
    bus.publish_checkpoint(lambda: ran.append("second"))
    bus.publish(ev(1))
    assert bus.flush(5.0)
    assert len(kept) == 2 and ran == []  # the keeper runs them when it is time, not the bus
    bus.set_keeper(None)
    bus.publish_checkpoint(lambda: ran.append("no keeper"))
    assert bus.flush(5.0) and ran == ["no keeper"]
    bus.stop(5.0)
