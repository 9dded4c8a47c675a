"""API latency and the page's first render, against a real `qdisk serve`.

A VM with 10 thin 1 TiB qcow2 disks; `qdisk serve` as its own process on a free loopback
port; 50 concurrent clients, each on its own keep-alive connection, sending requests
back to back (a closed loop), for ``GET .../config`` and ``POST .../qcow2-cache/preview``,
and ``GET .../config`` for 49 clients while one sends the costliest preview there is (the
longest drive string taken, every property of it a problem) back to back.
Reports p50/p99 latency and throughput per endpoint. Then Chromium loads the page: the
first contentful paint of the login page, and the time until a logged-in page shows the
VM list (the page's own first render: its script, its API calls, the table).

Targets: p99 under 50 ms for both endpoints, first render under 1 s.

    .venv/bin/python benchmarks/web_api.py [--clients 50] [--requests 40] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from qdisk import storage
from qdisk.config.propstring import MAX_LENGTH as MAX_DRIVE_LENGTH
from qdisk.settings import Settings, Tools
from qdisk.vm import changes
from qdisk.web import tokens
from qdisk.web.http import node_name

VMID = 100
DISKS = 10
QDISK = str(Path(sys.executable).parent / "qdisk")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_LENGTH_RE = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_SERVING_RE = re.compile(r"at (http://\S+)/ ")


def make_home(root: Path) -> tuple[Settings, str]:
    settings = Settings(home=root, tools=Tools())
    storage.ensure_default(settings)
    disks = {f"scsi{index}": "local:1024,format=qcow2,cache=none,qcow2-cache-size-based-on-disk=1"
             for index in range(DISKS)}
    changes.create(settings, VMID, {"name": "bench", "memory": "512", "scsihw": "virtio-scsi-single", **disks})
    return settings, tokens.create(settings, "bench")


def _request(method: str, host: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: PVEAPIToken={token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _client(host: str, port: int, request: bytes, count: int, warmup: int,
                  latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for number in range(warmup + count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the server answered {head.splitlines()[0]!r}")
            length = _LENGTH_RE.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if number >= warmup:
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _load(host: str, port: int, request: bytes, clients: int, count: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, port, request, count, 5, latencies) for _ in range(clients)))
    return latencies, time.perf_counter() - started


async def _beside_hostile(host: str, port: int, request: bytes, hostile: bytes, clients: int,
                          count: int) -> tuple[list[float], float]:
    """``_load`` of ``clients - 1`` clients while one more sends ``hostile`` back to back."""
    done = asyncio.Event()

    async def attacker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not done.is_set():
                writer.write(hostile)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _LENGTH_RE.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
        finally:
            writer.close()

    task = asyncio.create_task(attacker())
    try:
        return await _load(host, port, request, clients - 1, count)
    finally:
        done.set()
        await task


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used (user + system): a figure the load of the
    machine's other work does not inflate, unlike latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_api(url: str, token: str, clients: int, count: int,
                server_pid: int) -> dict[str, dict[str, float]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    base = f"/api2/json/nodes/{node_name()}/qemu/{VMID}"
    drive = f"local:{VMID}/vm-{VMID}-disk-3.qcow2,cache=none,qcow2-l2-cache-size=64"
    endpoints = {
        "GET config": _request("GET", host, f"{base}/config", token),
        "POST qcow2-cache/preview": _request("POST", host, f"{base}/qcow2-cache/preview", token,
                                             json.dumps({"disk": "scsi3", "drive": drive}).encode()),
    }
    # The longest drive string taken, of 4096 empty properties: each a problem to report.
    hostile = _request("POST", host, f"{base}/qcow2-cache/preview", token, json.dumps(
        {"disk": "scsi3", "drive": ",".join(["="] * (MAX_DRIVE_LENGTH // 2))}).encode())
    results = {}
    latencies, elapsed = asyncio.run(_beside_hostile(host, port, endpoints["GET config"], hostile,
                                                     clients, count))
    results["GET config beside hostile previews"] = {
        "requests": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * _percentile(latencies, 0.99), "max_ms": 1000 * max(latencies),
        "per_second": len(latencies) / elapsed}
    for name, request in endpoints.items():
        cpu = _cpu_seconds(server_pid)
        latencies, elapsed = asyncio.run(_load(host, port, request, clients, count))
        cpu = _cpu_seconds(server_pid) - cpu
        results[name] = {"requests": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
                         "p99_ms": 1000 * _percentile(latencies, 0.99),
                         "max_ms": 1000 * max(latencies), "per_second": len(latencies) / elapsed,
                         # warm-up requests included: 5 per client
                         "server_cpu_ms_per_request": 1000 * cpu / (len(latencies) + 5 * clients)}
    return results


def measure_page(url: str, token: str, rounds: int = 5) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    paints, renders = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(rounds):
                context = browser.new_context()
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector("#login-view:not([hidden])")
                paints.append(page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0].startTime"))
                page.fill("#token-input", token)
                page.click("#login-button")
                page.wait_for_selector("#vm-table tbody tr")
                # Logged in (the session cookie), a fresh load up to the VM list.
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("#vm-table tbody tr")
                renders.append(1000 * (time.perf_counter() - started))
                context.close()
        finally:
            browser.close()
    return {"login_page_first_contentful_paint_ms": statistics.median(paints),
            "vm_list_rendered_ms": statistics.median(renders)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings, token = make_home(Path(directory))
        process = subprocess.Popen([QDISK, "serve", "--listen", "127.0.0.1:0"], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "QDISK_HOME": str(settings.home)})
        try:
            assert process.stdout is not None
            match = _SERVING_RE.search(process.stdout.readline())
            if match is None:
                raise SystemExit("qdisk serve did not start")
            url = match.group(1)
            result = {"load_average": os.getloadavg(), "cpus": os.cpu_count(),
                      "api": measure_api(url, token, arguments.clients, arguments.requests,
                                                process.pid),
                      "page": measure_page(url, token)}
        finally:
            process.terminate()
            process.wait(timeout=30)
    if arguments.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{arguments.clients} clients, {DISKS} qcow2 disks; load average before: "
          f"{', '.join(f'{value:.1f}' for value in result['load_average'])} on {result['cpus']} cores")
    for name, figures in result["api"].items():
        print(f"{name:36} p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms  "
              f"max {figures['max_ms']:6.1f} ms  {figures['per_second']:7.0f} req/s"
              + (f"  server CPU {figures['server_cpu_ms_per_request']:.2f} ms/request"
                 if "server_cpu_ms_per_request" in figures else ""))
    page = result["page"]
    print(f"page: login page first contentful paint {page['login_page_first_contentful_paint_ms']:.0f} ms, "
          f"VM list rendered {page['vm_list_rendered_ms']:.0f} ms after navigation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
