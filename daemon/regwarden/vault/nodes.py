"""Which Vault node to ask next: the pure part of failover across the nodes of an HA cluster.

`[vault].address` may list every node of a cluster. Any unsealed node serves a request (a standby
forwards writes to the active node and, in OpenBao 2.x, serves reads from its own replica), so the
client stays on the node that answered last and moves on only when that node fails: connection
refused, timeout, 5xx (sealed, no active leader, bad gateway), 429. A failed node is skipped until
its own back-off delay has passed (1 s doubling up to `retry_max`, full jitter); a node that answers
again is reset. When every node is backing off, nothing is sent until the earliest of them is due:
a fleet that lost its whole cluster retries at the back-off rhythm, not in a storm.

A host stays on the node that answered, so it would not learn that a failed node is back until a
request failed over to it. `due_rechecks` names the failed nodes whose back-off is over; the client
asks each `sys/health` (no data) and marks it `recovered` (healthy, not preferred: hosts do
not all move back at once) or failed again (a longer back-off). So a recovered node is reported as such
within one back-off delay, at the cost of one health request per failed node and delay.

A standby's replica lags the active node: read right after a write, it answers the old state (measured
on the test cluster: 200 of 200 reads of a key just written, through another standby). `StorageIndex`
keeps the highest storage index the cluster has shown this client (`X-Vault-Index` on every answer);
the client sends it back with `X-Vault-Inconsistent: forward-active-node`, so a standby that has not
applied that index yet forwards the request to the active node (OpenBao's index headers, the same
names as Vault Enterprise's). Reads are then never older than this client's own last write or read,
on whichever node they land: a watch cannot go back a version, and the read-back after an ambiguous
write sees it. A server that does not know the headers ignores them.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass, field

from ..backoff import Backoff

__all__ = ["NodePool", "NodeState", "StorageIndex"]


def _index_key(value: str) -> tuple[str, int] | None:
    """OpenBao's index (base64 of `{"cluster": ID, "value": "N"}`) as (cluster, N); None if it is not that."""
    try:
        doc = json.loads(base64.b64decode(value, validate=True))
        return str(doc["cluster"]), int(doc["value"])
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


class StorageIndex:
    """The newest storage index seen from the cluster (thread-safe: answers arrive in any order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None
        self._key: tuple[str, int] | None = None

    @property
    def value(self) -> str | None:
        with self._lock:
            return self._value

    def observe(self, value: str | None) -> None:
        """Keep `value` if it is newer than what is kept. An index of another cluster (the cluster was
        rebuilt) replaces it; one that cannot be read (another server's opaque format) is kept as the
        latest, since it cannot be compared."""
        if not value or len(value) > 4096:
            return
        key = _index_key(value)
        with self._lock:
            if key is None or self._key is None or key[0] != self._key[0] or key[1] > self._key[1]:
                self._value, self._key = value, key


@dataclass
class _Node:
    address: str
    backoff: Backoff
    retry_at: float = 0.0  # not before this unix time; 0: healthy
    failing_since: float | None = None  # the first of the failures since it last answered
    failed_at: float | None = None  # the last of them
    last_error: str | None = None


@dataclass(frozen=True)
class NodeState:
    """What a host knows of one node (shown by `/status`): failing from its first failure until it answers
    a request or a health check (`retry_at` None: its back-off is over, the next check is due)."""

    address: str
    preferred: bool  # tried first: the node that answered last
    failing_since: float | None
    failed_at: float | None
    retry_at: float | None  # skipped until then; None: may be tried now
    last_error: str | None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


@dataclass
class NodePool:
    """The nodes of one Vault cluster with a per-node back-off; the clock is always passed in."""

    addresses: tuple[str, ...]
    initial: float = 1.0
    maximum: float = 300.0
    preferred: int = 0  # the node that answered last: tried first
    _nodes: list[_Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a Vault cluster needs at least one address")
        self._nodes = [_Node(a, Backoff(initial=self.initial, maximum=self.maximum)) for a in self.addresses]

    def order(self, now: float) -> list[int]:
        """Indexes of the nodes to try now, in order: the preferred one, then the next ones in the list.

        Nodes still in back-off are left out; an empty list means every node is backing off (wait
        until `next_attempt()`).
        """
        count = len(self._nodes)
        ring = [(self.preferred + step) % count for step in range(count)]
        return [i for i in ring if self._nodes[i].retry_at <= now]

    def next_attempt(self) -> float:
        """The earliest time at which some node may be tried again."""
        return min(node.retry_at for node in self._nodes)

    def succeeded(self, index: int) -> None:
        """Node `index` answered: it becomes the preferred node and its back-off is reset."""
        node = self._nodes[index]
        node.backoff.reset()
        node.retry_at = 0.0
        node.failing_since = node.failed_at = node.last_error = None
        self.preferred = index

    def failed(self, index: int, now: float, hint: float | None = None, error: str | None = None) -> float:
        """Node `index` failed at `now` (with `error`): skip it for its next back-off delay (returned, in seconds)."""
        node = self._nodes[index]
        delay = node.backoff.next(hint)
        node.retry_at = now + delay
        node.failing_since = now if node.failing_since is None else node.failing_since
        node.failed_at, node.last_error = now, error
        if index == self.preferred:
            self.preferred = (index + 1) % len(self._nodes)
        return delay

    def recovered(self, index: int) -> None:
        """Node `index` answered a health check: healthy again, but the preferred node stays."""
        node = self._nodes[index]
        node.backoff.reset()
        node.retry_at = 0.0
        node.failing_since = node.failed_at = node.last_error = None

    def due_rechecks(self, now: float) -> list[int]:
        """The failed nodes (other than the preferred one) whose back-off is over: to be health-checked."""
        return [i for i, n in enumerate(self._nodes)
                if n.failing_since is not None and n.retry_at <= now and i != self.preferred]

    def address(self, index: int) -> str:
        return self._nodes[index].address

    def failing(self, index: int) -> bool:
        """Node `index` has failed since it last answered."""
        return self._nodes[index].failing_since is not None

    def states(self, now: float) -> list[NodeState]:
        """Every node in configured order, as a host reports it."""
        return [NodeState(n.address, i == self.preferred, n.failing_since, n.failed_at,
                          n.retry_at if n.retry_at > now else None, n.last_error)
                for i, n in enumerate(self._nodes)]

    def backing_off(self, now: float) -> list[str]:
        """Addresses of the nodes skipped at `now`."""
        return [n.address for n in self._nodes if n.retry_at > now]
