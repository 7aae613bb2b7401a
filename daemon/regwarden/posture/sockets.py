"""Exposure of a registry endpoint: on which addresses it can be reached, against where it should be.

For a registry on this host (its URL resolves to one of the host's own addresses), the listening
sockets on its port are read from `/proc/net/tcp` and `/proc/net/tcp6`, with the owning process from
`/proc/<pid>/fd`; a socket bound to the unspecified address counts as every address the host has. For
a registry elsewhere, the address its URL resolves to is all that can be judged. The expected exposure is
`expected_exposure`, or for a local registry the class of the address its URL names (a registry
configured as http://127.0.0.1:5000 but bound to 0.0.0.0 is reachable beyond what was meant).
The parse functions are pure; `exposure()` reads /proc at the edge.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .checks import EXPOSURES, Exposure, ExposureClass, address_class

__all__ = ["Listener", "exposure", "exposure_of", "holder", "parse_fib_trie", "parse_if_inet6", "parse_proc_net_tcp",
           "read_or_empty", "tcp_listeners"]

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    inode: int


def parse_proc_net_tcp(text: str, *, ipv6: bool) -> list[Listener]:
    """The LISTEN sockets of a /proc/net/tcp{,6} table (addresses in the kernel's byte order)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        hex_addr, _, hex_port = fields[1].partition(":")
        try:
            raw = bytes.fromhex(hex_addr)
            # each 32-bit word is in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = str(ipaddress.ip_address(packed))
            out.append(Listener(address, int(hex_port, 16), int(fields[9])))
        except ValueError:
            continue  # a line the kernel did not write: skip it
    if not ipv6:
        out = [listener for listener in out if ":" not in listener.address]
    return out


def parse_fib_trie(text: str) -> set[str]:
    """The host's own IPv4 addresses: entries of /proc/net/fib_trie followed by `/32 host LOCAL`."""
    found, last = set(), None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif "/32 host LOCAL" in stripped and last is not None:
            found.add(last)
    return found


def parse_if_inet6(text: str) -> set[str]:
    """The host's own IPv6 addresses from /proc/net/if_inet6."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(str(ipaddress.ip_address(bytes.fromhex(fields[0]))))
            except ValueError:
                continue
    return found


def exposure_of(listeners: Iterable[Listener], local_addresses: Iterable[str]) -> ExposureClass | None:
    """The widest exposure of these listeners; an unspecified bind counts as every local address."""
    local = list(local_addresses)
    classes: list[ExposureClass] = []
    for listener in listeners:
        ip = ipaddress.ip_address(listener.address)
        if ip.is_unspecified:
            classes.extend(address_class(a) for a in local if ip.version == 6 or ":" not in a)
            classes.append("loopback")
        else:
            classes.append(address_class(listener.address))
    return max(classes, key=EXPOSURES.index) if classes else None


def exposure(host: str, port: int, expected: ExposureClass | None, *, proc: Path = Path("/proc")) -> Exposure:
    """Judge the endpoint `host:port` (from the registry's URL)."""
    try:
        resolved = sorted({str(info[4][0]) for info in socket.getaddrinfo(host.strip("[]"), port,
                                                                           type=socket.SOCK_STREAM)})
    except OSError as exc:
        return Exposure(detail=f"cannot resolve {host}: {exc.strerror or exc}")
    local = _local_addresses(proc)
    is_local = [a for a in resolved if a in local or ipaddress.ip_address(a).is_loopback]
    if not is_local:
        if expected is None:
            return Exposure(detail="a registry on another host: set expected_exposure to check it")
        actual = max((address_class(a) for a in resolved), key=EXPOSURES.index)
        return Exposure(checked=True, actual=actual, expected=expected, listen=tuple(f"{a}:{port}" for a in resolved))
    if expected is None:
        expected = min((address_class(a) for a in is_local), key=EXPOSURES.index)
    listeners = [entry for entry in tcp_listeners(proc) if entry.port == port]
    if not listeners:
        return Exposure(expected=expected, detail=f"no listening socket on port {port} in this network namespace")
    widest = exposure_of(listeners, local)
    owner = _owner(proc, {entry.inode for entry in listeners})
    listen = tuple(sorted({f"[{e.address}]:{port}" if ":" in e.address else f"{e.address}:{port}"
                           for e in listeners}))
    return Exposure(checked=True, actual=widest, expected=expected, listen=listen, process=owner)


def tcp_listeners(proc: Path = Path("/proc")) -> list[Listener]:
    """Every LISTEN socket of this network namespace, IPv4 and IPv6."""
    return [entry for name, v6 in (("tcp", False), ("tcp6", True))
            for entry in parse_proc_net_tcp(read_or_empty(proc / "net" / name), ipv6=v6)]


def _local_addresses(proc: Path) -> set[str]:
    net = proc / "net"
    return parse_fib_trie(read_or_empty(net / "fib_trie")) | parse_if_inet6(read_or_empty(net / "if_inet6"))


def read_or_empty(path: Path) -> str:
    """A system file's text (/proc, /etc); "" when it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return ""


def holder(proc: Path, inodes: set[int]) -> Path | None:
    """The /proc/<pid> of the first process holding one of the socket inodes (needs root for others' fds)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(entry / "fd"):
                if os.readlink(fd.path) in wanted:
                    return entry
        except OSError:
            continue
    return None


def _owner(proc: Path, inodes: set[int]) -> str | None:
    """`comm (pid N)` of the first process holding one of the socket inodes."""
    entry = holder(proc, inodes)
    if entry is None:
        return None
    try:
        return f"{(entry / 'comm').read_text().strip()} (pid {entry.name})"
    except OSError:
        return None
