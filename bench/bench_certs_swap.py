"""How often does a certs.d reader see a broken client pair while certificates are swapped?

Readers do what the Docker engine does on every pull (registry.ReadCertsDirectory): list
`certs.d/<host:port>/`, then for each `*.cert` read it and its `*.key` by path. Each version's cert and
key carry the same marker, so a reader can tell a mismatched pair, a missing file or an empty listing.
Two strategies are compared under the same swap rate:

- `in-place`: overwrite client.cert, then client.key in the directory (each file atomically renamed,
  as a careful shell script would);
- `symlink`: regwarden's CertsDirTarget (versioned directories behind one atomically replaced symlink).

    python bench/bench_certs_swap.py --swaps 2000 --readers 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

from regwarden.credentials.model import CredentialSecret
from regwarden.docker.certs import CertsDirTarget

HOST = "registry.bench:5443"


def pem(n: int) -> tuple[str, str]:
    return f"-----BEGIN CERTIFICATE-----\nV{n}\n-----END CERTIFICATE-----", f"KEY V{n} 0123456789"


def reader(directory: str, stop: mp.synchronize.Event, out: mp.Queue[tuple[int, int, int, int]]) -> None:
    reads = mismatched = missing = empty = 0
    while not stop.is_set():
        reads += 1
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            empty += 1
            continue
        certs = [n for n in names if n.endswith(".cert")]
        if not certs:
            empty += 1
            continue
        for name in certs:
            try:
                cert = Path(directory, name).read_text()
                key = Path(directory, name[:-5] + ".key").read_text()
            except FileNotFoundError:
                missing += 1
                continue
            marker = cert.split("\n")[1]
            if f"KEY {marker} " not in key:
                mismatched += 1
    out.put((reads, mismatched, missing, empty))


def swap_in_place(path: Path, n: int) -> None:
    cert, key = pem(n)
    for name, text in (("client.cert", cert), ("client.key", key)):
        tmp = path / f".{name}.tmp"
        tmp.write_text(text + "\n")
        os.replace(tmp, path / name)


def run(strategy: str, swaps: int, readers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs.d"
        target = CertsDirTarget(certs, HOST)
        path = certs / HOST
        if strategy == "in-place":
            path.mkdir(parents=True)
            swap_in_place(path, 0)
        else:
            cert, key = pem(0)
            target.apply(CredentialSecret("bench", 0, certificate=cert, private_key=key))
        stop, out = mp.Event(), mp.Queue()
        procs = [mp.Process(target=reader, args=(str(path), stop, out)) for _ in range(readers)]
        for proc in procs:
            proc.start()
        time.sleep(0.2)
        started = time.perf_counter()
        for n in range(1, swaps + 1):
            if strategy == "in-place":
                swap_in_place(path, n)
            else:
                cert, key = pem(n)
                target.apply(CredentialSecret("bench", n, certificate=cert, private_key=key))
        elapsed = time.perf_counter() - started
        stop.set()
        totals = [0, 0, 0, 0]
        for _ in procs:
            for i, value in enumerate(out.get()):
                totals[i] += value
        for proc in procs:
            proc.join()
    return {"swaps/s": swaps / elapsed, "reads": totals[0], "mismatched": totals[1], "missing": totals[2],
            "empty": totals[3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=2)
    args = parser.parse_args()
    print("| strategy | swaps | swaps/s | reads | mismatched pair | missing file | no pair listed |")
    print("|---|---|---|---|---|---|---|")
    for strategy in ("in-place", "symlink"):
        r = run(strategy, args.swaps, args.readers)
        print(f"| {strategy} | {args.swaps} | {r['swaps/s']:.0f} | {r['reads']:.0f} | {r['mismatched']:.0f} |"
              f" {r['missing']:.0f} | {r['empty']:.0f} |")


if __name__ == "__main__":
    main()
