#!/usr/bin/env python3
"""Load of a cluster having a bad day, against one server: keep-alive narinfo clients, NAR
downloads and idle sockets at once; reports narinfo latency percentiles, errors and what the
server's memory peaked at. Driven by bench/hostile; asyncio, one core.

Usage: hostile.py HOST:PORT SERVER_PID HASHES_FILE NAR_URL NAR_SIZE
         [--seconds 20] [--clients 1000] [--streams 256] [--idle 2000]
Every client comes from its own 127.x.y.z address, as nodes of a cluster would. A 503 (the
server asking a download to come back later) is counted as a retry, not an error.
"""

import argparse
import asyncio
import json
import random
import statistics
import time


def source(n):
    """The n-th client address, 127.1.0.1 and up (never 127.0.0.1, the server's)."""
    return f"127.{1 + n // 62500}.{(n // 250) % 250}.{n % 250 + 1}"


async def read_response(reader):
    """Reads one response; returns (status, body length). Handles Content-Length and chunked."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, chunked = None, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    total = 0
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            while size:
                chunk = await reader.read(min(size, 1 << 20))
                if not chunk:
                    raise ConnectionError("short chunk")
                size -= len(chunk)
                total += len(chunk)
            await reader.readline()
    elif length is not None:
        remaining = length
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError(f"short body: {length - remaining} of {length}")
            remaining -= len(chunk)
            total += len(chunk)
    return status, total


class Stats:
    def __init__(self):
        self.latencies = []
        self.narinfo_errors = {}
        self.nar_done = 0
        self.nar_bytes = 0
        self.nar_retries = 0
        self.nar_errors = {}
        self.idle_open = 0
        self.idle_failed = 0

    def error(self, table, what):
        table[what] = table.get(what, 0) + 1


async def narinfo_client(n, host, port, hashes, deadline, stats):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source(n), 0))
        except OSError as e:
            stats.error(stats.narinfo_errors, f"connect: {e.strerror or e}")
            await asyncio.sleep(0.5)
            continue
        try:
            while time.monotonic() < deadline:
                h = random.choice(hashes)
                started = time.monotonic()
                writer.write(f"GET /{h}.narinfo HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                status, _ = await read_response(reader)
                stats.latencies.append(time.monotonic() - started)
                if status != 200:
                    stats.error(stats.narinfo_errors, f"status {status}")
                await asyncio.sleep(random.uniform(0, 0.05))
        except (ConnectionError, OSError) as e:
            # A keep-alive connection closed by the server between requests is routine.
            stats.error(stats.narinfo_errors, f"connection: {e}")
        finally:
            writer.close()


async def nar_stream(n, host, port, url, size, deadline, stats):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source(100_000 + n // 4), 0))
        except OSError as e:
            stats.error(stats.nar_errors, f"connect: {e.strerror or e}")
            await asyncio.sleep(0.5)
            continue
        try:
            writer.write(f"GET {url} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            status, got = await read_response(reader)
            if status == 503:
                stats.nar_retries += 1
                await asyncio.sleep(1)
            elif status != 200 or got != size:
                stats.error(stats.nar_errors, f"status {status}, {got} bytes")
            else:
                stats.nar_done += 1
                stats.nar_bytes += got
        except (ConnectionError, OSError) as e:
            stats.error(stats.nar_errors, f"connection: {e}")
        finally:
            writer.close()


async def idle_socket(n, host, port, until, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source(200_000 + n), 0))
    except OSError:
        stats.idle_failed += 1
        return
    stats.idle_open += 1
    try:
        await asyncio.wait_for(reader.read(1), max(0.0, until - time.monotonic()))
    except (asyncio.TimeoutError, OSError):
        pass
    writer.close()


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("pid", type=int)
    p.add_argument("hashes")
    p.add_argument("nar_url")
    p.add_argument("nar_size", type=int)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--idle", type=int, default=2000)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    hashes = open(a.hashes).read().split()
    stats = Stats()
    start = time.monotonic()
    deadline = start + a.seconds
    idle = [asyncio.create_task(idle_socket(n, host, port, deadline, stats)) for n in range(a.idle)]
    await asyncio.sleep(1)
    streams = [asyncio.create_task(nar_stream(n, host, port, a.nar_url, a.nar_size, deadline, stats))
               for n in range(a.streams)]
    clients = [asyncio.create_task(narinfo_client(n, host, port, hashes, deadline, stats)) for n in range(a.clients)]
    await asyncio.gather(*clients)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await asyncio.gather(*idle, return_exceptions=True)
    lat = sorted(stats.latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 100 else [float("nan")] * 99
    print(json.dumps({
        "seconds": round(time.monotonic() - start, 1),
        "narinfo_requests": len(lat),
        "narinfo_per_s": round(len(lat) / a.seconds),
        "narinfo_p50_ms": round(q[49] * 1e3, 2),
        "narinfo_p99_ms": round(q[98] * 1e3, 2),
        "narinfo_max_ms": round(lat[-1] * 1e3, 1) if lat else None,
        "narinfo_errors": stats.narinfo_errors,
        "nar_downloads": stats.nar_done,
        "nar_mib": round(stats.nar_bytes / 2**20),
        "nar_503_retries": stats.nar_retries,
        "nar_errors": stats.nar_errors,
        "idle_sockets_open": stats.idle_open,
        "idle_sockets_refused": stats.idle_failed,
        "server_peak_rss_mib": round(peak_rss_mib(a.pid), 1),
    }))


if __name__ == "__main__":
    asyncio.run(main())
