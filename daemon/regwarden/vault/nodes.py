"""Which Vault node to ask next: the pure part of failover across the nodes of an HA cluster.

`[vault].address` may list every node of a cluster. Any unsealed node serves a request (a standby
forwards writes to the active node and, in OpenBao 2.x, serves reads from its own replica), so the
client stays on the node that answered last and moves on only when that node fails: connection
refused, timeout, 5xx (sealed, no active leader, bad gateway), 429. A failed node is skipped until
its own back-off delay has passed (1 s doubling up to `retry_max`, full jitter); a node that answers
again is reset. When every node is backing off, nothing is sent until the earliest of them is due:
a fleet that lost its whole cluster retries at the back-off rhythm, not in a storm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backoff import Backoff

__all__ = ["NodePool"]


@dataclass
class _Node:
    address: str
    backoff: Backoff
    retry_at: float = 0.0  # not before this unix time; 0: healthy


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
        self.preferred = index

    def failed(self, index: int, now: float, hint: float | None = None) -> float:
        """Node `index` failed at `now`: skip it for its next back-off delay (returned, in seconds)."""
        node = self._nodes[index]
        delay = node.backoff.next(hint)
        node.retry_at = now + delay
        if index == self.preferred:
            self.preferred = (index + 1) % len(self._nodes)
        return delay

    def address(self, index: int) -> str:
        return self._nodes[index].address

    def backing_off(self, now: float) -> list[str]:
        """Addresses of the nodes skipped at `now`."""
        return [n.address for n in self._nodes if n.retry_at > now]
