"""CPU and wall time of probing 1,000 registry endpoints in one interval: regwarden vs blackbox_exporter.

One helper process serves N local ports, each answering `GET /v2/` as a registry asking for
credentials does (401, `Docker-Distribution-API-Version: registry/2.0`, `WWW-Authenticate: Basic`).
Then, in the same run and against the same targets:

- regwarden: a separate process builds a real Context with N `[[registries]]` entries and runs
  `ProbeComponent.run_probe` for each on 32 threads (the component's executor size): probe, verdict,
  metrics, bus. CPU is the process's own (`time.process_time`, all threads), measured around the probing.
- blackbox_exporter: `prometheus-blackbox-exporter` with an http module accepting 200/401 is asked
  `/probe?module=registry_v2&target=...` N times, 32 at a time; CPU is the exporter process's
  utime+stime from /proc, so the driver's own cost is not counted.

Run:   python bench/bench_probe.py [--targets 1000] [--rounds 3] [--tls]
Prints one line per round and tool, then the medians and the CPU ratio; record them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CONCURRENCY = 32
BODY = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}\n'
RESPONSE = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Docker-Distribution-Api-Version: registry/2.0\r\nWww-Authenticate: Basic realm=\"bench\"\r\n"
            b"X-Content-Type-Options: nosniff\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


# --------------------------------------------------------------------------- the 1,000 endpoints


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _serve(count: int, cert: str | None, key: str | None) -> None:
    ctx = None
    if cert and key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    servers = [await asyncio.start_server(_handle, "127.0.0.1", 0, ssl=ctx, backlog=256) for _ in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def serve_main(count: int, cert: str | None, key: str | None) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count * 3 + 256)), hard))
    asyncio.run(_serve(count, cert, key))


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench registry")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "bench.crt", workdir / "bench.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------------------- regwarden's side


def regwarden_main(ports_file: str, scheme: str, ca: str | None, concurrency: int) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from regwarden.bus import Bus
    from regwarden.component import Context
    from regwarden.config import parse_config
    from regwarden.logging import configure_logging
    from regwarden.metrics import Metrics
    from regwarden.probe.component import ProbeComponent
    from regwarden.state import StateStore

    configure_logging("json", "info")  # as the daemon runs: debug lines are dropped, not formatted
    ports = json.loads(Path(ports_file).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"ca_cert": ca} if ca else {}
        cfg = parse_config({"daemon": {"state_dir": tmp}, "registries": [
            {"name": f"r{i}", "url": f"{scheme}://127.0.0.1:{port}", "probe_interval": "30s", **extra}
            for i, port in enumerate(ports)]})
        metrics = Metrics()
        state = StateStore(Path(tmp))
        bus = Bus(metrics)
        bus.subscribe("drop", lambda item: None)
        bus.start()
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.start(paused=True)
        ctx = Context(config=cfg, metrics=metrics, state=state, bus=bus, scheduler=scheduler, host="bench")
        component = ProbeComponent()
        component.start(ctx)
        names = [reg.name for reg in cfg.registries]
        passes = []
        for _ in range(2):  # the first interval states every alert once; the second is the steady state
            cpu0, wall0 = time.process_time(), time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                results = list(pool.map(component.run_probe, names))
            passes.append({"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0,
                           "ok": sum(1 for r in results if r is not None and r.ok)})
        component.stop()
        scheduler.shutdown(wait=False)
        bus.stop(5.0)
        state.close()
    print(json.dumps({**passes[1], "first_cpu": passes[0]["cpu"], "first_wall": passes[0]["wall"]}))


def run_regwarden(ports_file: Path, scheme: str, ca: Path | None, concurrency: int) -> dict[str, float]:
    argv = [sys.executable, __file__, "--worker", str(ports_file), "--scheme", scheme,
            "--concurrency", str(concurrency)]
    if ca is not None:
        argv += ["--ca", str(ca)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- blackbox_exporter's side


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def blackbox(workdir: Path, ca: Path | None) -> Any:
    exe = shutil.which("prometheus-blackbox-exporter")
    if exe is None:
        sys.exit("prometheus-blackbox-exporter is not installed (apt-get install prometheus-blackbox-exporter)")
    tls = f"\n      tls_config:\n        ca_file: {ca}" if ca else ""
    config = workdir / "blackbox.yml"
    config.write_text(
        "modules:\n  registry_v2:\n    prober: http\n    timeout: 5s\n    http:\n      method: GET\n"
        "      valid_status_codes: [200, 401]\n      preferred_ip_protocol: ip4\n"
        "      ip_protocol_fallback: false" + tls + "\n")
    port = _free_port()
    proc = subprocess.Popen([exe, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/healthy", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc, base
    finally:
        proc.terminate()
        proc.wait(10)


def run_blackbox(proc: subprocess.Popen[bytes], base: str, targets: list[str], concurrency: int) -> dict[str, float]:
    import requests

    local = threading.local()

    def one(target: str) -> bool:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        text = session.get(f"{base}/probe", params={"module": "registry_v2", "target": target}, timeout=30).text
        return "\nprobe_success 1" in text

    cpu0, wall0 = _proc_cpu(proc.pid), time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ok = sum(pool.map(one, targets))
    return {"wall": time.perf_counter() - wall0, "cpu": _proc_cpu(proc.pid) - cpu0, "ok": ok}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="probes in flight at once")
    parser.add_argument("--tls", action="store_true", help="endpoints serve TLS (self-signed, trusted as CA)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scheme", default="http", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve, args.cert, args.key)
        return
    if args.worker:
        regwarden_main(args.worker, args.scheme, args.ca, args.concurrency)
        return

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        serve = [sys.executable, __file__, "--serve", str(args.targets)]
        ca: Path | None = None
        if args.tls:
            ca, key = self_signed(workdir)
            serve += ["--cert", str(ca), "--key", str(key)]
        server = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            ports = json.loads(server.stdout.readline())
            ports_file = workdir / "ports.json"
            ports_file.write_text(json.dumps(ports))
            scheme = "https" if args.tls else "http"
            targets = [f"{scheme}://127.0.0.1:{port}/v2/" for port in ports]
            rows: dict[str, list[dict[str, float]]] = {"regwarden": [], "blackbox_exporter": []}
            with blackbox(workdir, ca) as (exporter, base):
                for round_ in range(1, args.rounds + 1):
                    for tool in ("regwarden", "blackbox_exporter"):
                        row = run_regwarden(ports_file, scheme, ca, args.concurrency) if tool == "regwarden" \
                            else run_blackbox(exporter, base, targets, args.concurrency)
                        rows[tool].append(row)
                        first = f"  (first interval: cpu {row['first_cpu']:.2f} s)" if "first_cpu" in row else ""
                        print(f"round {round_} {tool:18} wall {row['wall']:6.2f} s  cpu {row['cpu']:6.2f} s"
                              f"  ok {int(row['ok'])}/{len(targets)}{first}", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    print(f"\n{args.targets} endpoints ({'TLS' if args.tls else 'plain HTTP'}), {args.concurrency} concurrent,"
          f" median of {args.rounds} rounds:")
    medians = {}
    for tool, results in rows.items():
        wall = statistics.median(r["wall"] for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        medians[tool] = cpu
        print(f"  {tool:18} wall {wall:6.2f} s  cpu {cpu:6.2f} s  cpu/probe {cpu / args.targets * 1000:6.3f} ms")
    print(f"  cpu ratio regwarden / blackbox_exporter = {medians['regwarden'] / medians['blackbox_exporter']:.2f}")


if __name__ == "__main__":
    main()
