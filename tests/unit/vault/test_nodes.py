"""Failover across the nodes of a Vault cluster: which node is tried, which is skipped, and for how long;
the storage index sent back for read-your-writes across nodes."""

from __future__ import annotations

import base64
import json
import random

import pytest

from regwarden.vault.nodes import NodePool, NodeState, StorageIndex

NODES = ("http://a:8200", "http://b:8200", "http://c:8200")


def pool(initial: float = 1.0, maximum: float = 60.0) -> NodePool:
    made = NodePool(NODES, initial=initial, maximum=maximum)
    for node in made._nodes:  # deterministic jitter: every delay is its ceiling
        node.backoff._rng = random.Random(0)
        node.backoff._rng.uniform = lambda low, high: high  # type: ignore[method-assign]
    return made


def test_a_healthy_cluster_is_asked_in_list_order_starting_with_the_first_node() -> None:
    """With no failures, the first address is tried first, the others follow in list order."""
    assert pool().order(now=0) == [0, 1, 2]


def test_the_node_that_answered_last_is_tried_first() -> None:
    """After a success on node b, requests start at b and wrap around the list."""
    nodes = pool()
    nodes.succeeded(1)
    assert nodes.order(now=0) == [1, 2, 0]


def test_a_failed_node_is_skipped_until_its_backoff_has_passed() -> None:
    """A node that failed at t=10 with a 1 s back-off is left out at t=10.5 and back at t=11."""
    nodes = pool()
    assert nodes.failed(0, now=10) == 1.0
    assert nodes.order(now=10.5) == [1, 2]
    assert nodes.order(now=11) == [1, 2, 0]


def test_a_failing_node_backs_off_exponentially_up_to_the_cap() -> None:
    """Repeated failures of one node double its delay, never beyond `maximum`."""
    nodes = pool(maximum=5.0)
    assert [nodes.failed(2, now=0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_an_answer_resets_the_nodes_backoff() -> None:
    """A node that answers again starts its next back-off from the initial delay."""
    nodes = pool()
    for _ in range(4):
        nodes.failed(0, now=0)
    nodes.succeeded(0)
    assert nodes.failed(0, now=100) == 1.0


def test_when_every_node_backs_off_nothing_is_tried_until_the_earliest_is_due() -> None:
    """All three nodes failed: no node is offered before the first retry time, then that node is."""
    nodes = pool()
    nodes.failed(0, now=0)
    nodes.failed(0, now=1)  # a: due at 3
    nodes.failed(1, now=1)  # b: due at 2
    nodes.failed(2, now=1.5)  # c: due at 2.5
    assert nodes.order(now=1.9) == []
    assert nodes.next_attempt() == 2.0
    assert nodes.order(now=2.0) == [1]


def test_the_preferred_node_moves_on_when_it_fails() -> None:
    """The preferred node failing makes the next node in the list the first to try."""
    nodes = pool()
    nodes.succeeded(2)
    nodes.failed(2, now=0)
    assert nodes.order(now=0) == [0, 1]


def test_backing_off_names_the_skipped_nodes() -> None:
    """`backing_off` lists the addresses of nodes still in back-off."""
    nodes = pool()
    nodes.failed(1, now=0)
    assert nodes.backing_off(now=0.5) == ["http://b:8200"]
    assert nodes.backing_off(now=5) == []


def test_states_report_a_failing_node_from_its_first_failure_until_it_answers() -> None:
    """A node failing twice keeps its first failure time and its latest error; it is skipped until its
    back-off ends, stays failing after that until it answers, and an answer clears it."""
    nodes = pool()
    nodes.failed(0, now=10, error="read x: 503 sealed or unavailable")
    nodes.failed(0, now=11, error="read x: connection failed")
    a, b, c = nodes.states(now=11.5)
    assert (a.failing, a.failing_since, a.failed_at, a.retry_at, a.last_error) == (
        True, 10, 11, 13, "read x: connection failed")
    assert b.preferred and not b.failing and b.retry_at is None and not c.preferred
    assert nodes.states(now=20)[0].retry_at is None and nodes.states(now=20)[0].failing
    assert nodes.failing(0) and not nodes.failing(1)
    nodes.succeeded(0)
    assert nodes.states(now=20)[0] == NodeState("http://a:8200", True, None, None, None, None)


def test_failed_nodes_are_due_for_a_health_check_once_their_backoff_is_over() -> None:
    """A failed node other than the preferred one is due for a health check when its back-off has passed;
    a good check makes it healthy without making it preferred, a bad one backs it off further."""
    nodes = pool()
    nodes.failed(0, now=100, error="HTTP 503")  # b becomes preferred
    assert nodes.due_rechecks(100.5) == [] and nodes.due_rechecks(101) == [0]
    nodes.failed(0, now=101, error="HTTP 503")  # still sealed: 2 s now
    assert nodes.due_rechecks(102) == [] and nodes.due_rechecks(103) == [0]
    nodes.recovered(0)
    assert nodes.due_rechecks(103) == [] and nodes.preferred == 1
    assert [s.failing for s in nodes.states(103)] == [False, False, False]
    assert nodes.due_rechecks(300) == []  # the preferred node is asked by the next request, not checked
    nodes.failed(1, now=200)  # it fails: c takes over, b is checked like any failed node
    assert nodes.preferred == 2 and nodes.due_rechecks(300) == [1]


def test_a_pool_needs_an_address() -> None:
    """An empty address list is refused at construction."""
    with pytest.raises(ValueError, match="at least one address"):
        NodePool(())


def _index(cluster: str, value: int) -> str:
    return base64.b64encode(json.dumps({"cluster": cluster, "value": str(value)}).encode()).decode()


def test_storage_index_keeps_the_newest_of_answers_in_any_order() -> None:
    index = StorageIndex()
    assert index.value is None
    for value in (5, 9, 7):
        index.observe(_index("c1", value))
    assert index.value == _index("c1", 9)
    index.observe(None)
    index.observe("")
    assert index.value == _index("c1", 9)


def test_storage_index_of_a_rebuilt_cluster_or_an_opaque_one_replaces_it() -> None:
    index = StorageIndex()
    index.observe(_index("c1", 90))
    index.observe(_index("c2", 3))  # a new cluster starts again from low indexes
    assert index.value == _index("c2", 3)
    index.observe("not-base64-json")  # another server's format: cannot compare, the latest wins
    assert index.value == "not-base64-json"
    index.observe(_index("c2", 4))
    assert index.value == _index("c2", 4)
    index.observe("x" * 5000)  # absurdly long: ignored
    assert index.value == _index("c2", 4)
