#!/usr/bin/env python3
"""Helpers for bench/scale, for the parts that are awkward in bash.

  scale-helper.py gen ROOT N           fill the chroot store ROOT (made by `nix-store --init`)
                                       with N synthetic valid paths: ValidPaths and Refs rows,
                                       one empty file per path in ROOT/nix/store, and the
                                       request lists ROOT/present.txt and ROOT/absent.txt;
                                       prints `db_seconds=… files_seconds=… refs=…`
  scale-helper.py store-key            what a generated store depends on (the code of `gen`),
                                       hashed: stores are regenerated when it changes
  scale-helper.py check BASE ROOT K    GET K present narinfos and compare them with the DB
                                       (StorePath, NarHash, NarSize, References, Deriver),
                                       and K absent ones (404)
  scale-helper.py report TSV META      the markdown table from the raw runs

Standard library only (Python 3.11).
"""

import base64
import hashlib
import inspect
import os
import random
import sqlite3
import statistics
import sys
import time
import urllib.error
import urllib.request

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
STORE_DIR = "/nix/store"
# Hashes per request list: all paths of a small store, a random sample of a big one.
SAMPLE = 100_000
ABSENT = 10_000


def db_path(root):
    return os.path.join(root, "nix/var/nix/db/db.sqlite")


def nix32(data):
    """Nix's base-32 (the order of bits Nix uses, not RFC 4648)."""
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        j, k = divmod(b, 8)
        c = data[j] >> k
        if j + 1 < len(data):
            c |= data[j + 1] << (8 - k)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def gen(root, n):
    """N paths registered the way Nix registers them: in topological order (a path's
    references have smaller ids), ValidPaths then Refs, with WAL as `nix-store --init` left it."""
    n = int(n)
    rng = random.Random(n)
    now = int(time.time())
    hashes = set()
    rows = []
    refs = []
    for i in range(1, n + 1):
        while True:
            h = "".join(rng.choices(NIX32, k=32))
            if h not in hashes:
                break
        hashes.add(h)
        path = f"{STORE_DIR}/{h}-pkg-{i}"
        drv_hash = "".join(rng.choices(NIX32, k=32))
        deriver = f"{STORE_DIR}/{drv_hash}-pkg-{i}.drv"
        nar_hash = "sha256:" + rng.randbytes(32).hex()
        nar_size = int(2 ** rng.uniform(9, 27)) // 8 * 8  # 512 B … 128 MiB, log-uniform
        reg_time = now - rng.randrange(365 * 86400)
        if rng.random() < 0.5:  # substituted: carries the cache's signature
            ultimate, sigs = None, "cache.nixos.org-1:" + base64.b64encode(rng.randbytes(64)).decode()
        else:  # built locally
            ultimate, sigs = 1, None
        ca = None
        if rng.random() < 0.01:  # a fixed-output path
            ca = "fixed:r:sha256:" + nix32(rng.randbytes(32))
        rows.append((path, nar_hash, reg_time, deriver, nar_size, ultimate, sigs, ca))
        # 0–8 references to earlier paths (a few to the first 1 % — the "glibc"s — the rest
        # anywhere), and a self reference for about a quarter of the paths.
        targets = set()
        for _ in range(rng.randrange(9) if i > 1 else 0):
            hub = rng.random() < 0.3
            targets.add(rng.randrange(1, max(2, min(i, n // 100 + 1))) if hub else rng.randrange(1, i))
        if rng.random() < 0.25:
            targets.add(i)
        refs.extend((i, t) for t in sorted(targets))

    db = db_path(root)
    t0 = time.monotonic()
    conn = sqlite3.connect(db, isolation_level=None)
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    (count,) = conn.execute("SELECT count(*) FROM ValidPaths").fetchone()
    if count:
        sys.exit(f"scale-helper: {db} is not empty")
    # Bulk load without a journal, then back to the mode Nix left (WAL).
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany("INSERT INTO Refs (referrer, reference) VALUES (?, ?)", refs)
    conn.execute("COMMIT")
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.close()
    db_seconds = time.monotonic() - t0

    t0 = time.monotonic()
    store = os.path.join(root, "nix/store")
    dfd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        for row in rows:
            os.close(os.open(row[0][len(STORE_DIR) + 1 :], flags, 0o444, dir_fd=dfd))
    finally:
        os.close(dfd)
    files_seconds = time.monotonic() - t0

    present = [r[0][len(STORE_DIR) + 1 :][:32] for r in rows]
    rng.shuffle(present)
    with open(os.path.join(root, "present.txt"), "w") as f:
        f.write("\n".join(present[:SAMPLE]) + "\n")
    absent = []
    while len(absent) < ABSENT:
        h = "".join(rng.choices(NIX32, k=32))
        if h not in hashes:
            absent.append(h)
    with open(os.path.join(root, "absent.txt"), "w") as f:
        f.write("\n".join(absent) + "\n")
    print(f"db_seconds={db_seconds:.1f} files_seconds={files_seconds:.1f} refs={len(refs)}")


def store_key():
    parts = [inspect.getsource(f) for f in (gen, nix32, db_path)] + [repr((NIX32, STORE_DIR, SAMPLE, ABSENT))]
    print(hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16])


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def check(base, root, k):
    k = int(k)
    conn = sqlite3.connect(f"file:{db_path(root)}?mode=ro", uri=True)
    with open(os.path.join(root, "present.txt")) as f:
        present = f.read().split()[:k]
    with open(os.path.join(root, "absent.txt")) as f:
        absent = f.read().split()[:k]
    bad = []
    for h in present:
        (id_, path, nar_hash, nar_size, deriver) = conn.execute(
            "SELECT id, path, hash, narSize, deriver FROM ValidPaths WHERE path > ? AND path < ?",
            (f"{STORE_DIR}/{h}-", f"{STORE_DIR}/{h}."),
        ).fetchone()
        refs = sorted(
            p[len(STORE_DIR) + 1 :]
            for (p,) in conn.execute(
                "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?", (id_,)
            )
        )
        status, body = get(f"{base}/{h}.narinfo")
        if status != 200:
            bad.append(f"{h}.narinfo: status {status}, want 200")
            continue
        got = dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)
        want = {
            "StorePath": path,
            "NarHash": "sha256:" + nix32(bytes.fromhex(nar_hash.removeprefix("sha256:"))),
            "NarSize": str(nar_size),
            "References": " ".join(refs),
            "Deriver": deriver[len(STORE_DIR) + 1 :],
        }
        for key, value in want.items():
            if got.get(key, "") != value:
                bad.append(f"{h}.narinfo: {key} is {got.get(key)!r}, want {value!r}")
        if not got.get("Sig"):
            bad.append(f"{h}.narinfo: no Sig")
    for h in absent:
        status, _ = get(f"{base}/{h}.narinfo")
        if status != 404:
            bad.append(f"{h}.narinfo (absent): status {status}, want 404")
    if bad:
        print("\n".join(bad[:20]), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(present)} present, {len(absent)} absent")


def fmt(x, digits=0):
    return f"{x:,.{digits}f}"


def report(tsv, meta_file):
    meta = {}
    with open(meta_file) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    runs = {}
    with open(tsv) as f:
        for line in f:
            size, kind, conns, rps, p50, p99, cpu = line.split()
            runs.setdefault((int(size), kind, int(conns)), []).append((float(rps), int(p50), int(p99), int(cpu)))
    sizes = sorted({k[0] for k in runs})
    med = {k: [statistics.median(col) for col in zip(*v)] for k, v in runs.items()}
    out = [
        "# subserve narinfo latency vs store size (bench/scale)",
        "",
        f"{meta['date']}, subserve at `{meta['rev']}`, {meta['mode']} mode: {meta['reps']} runs of "
        f"{meta['wrk_seconds']} s per cell, sizes interleaved, DB re-read before every run. "
        f"{meta['cpu']}, {meta['cores']} cores (shared with wrk), {meta['mem']}, kernel {meta['kernel']}, "
        f"wrk {meta['wrk']}. Whole run: {meta['elapsed']} s.",
        "",
        "Each cell is the median of the runs; req/s with (min–max). Latencies in µs. "
        f"**p50 ×** is the median p50 over the {sizes[0]:,}-path store's, same request kind and connections. "
        "CPU µs/req is subserve's user + system CPU time during the run over its requests (10 ms "
        "ticks; less disturbed by other tenants than latency), and CPU × the same ratio for it.",
        "",
        "| paths in store | requests | conns | req/s | p50 µs | p99 µs | **p50 ×** | CPU µs/req | CPU × |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("present", "absent"):
        for conns in sorted({k[2] for k in runs}):
            for size in sizes:
                key = (size, kind, conns)
                if key not in runs:
                    continue
                rps, p50, p99, cpu = med[key]
                lo, hi = min(r[0] for r in runs[key]), max(r[0] for r in runs[key])
                base = med.get((sizes[0], kind, conns))
                ratio = f"**{p50 / base[1]:.2f}**" if base and base[1] else "–"
                cpu_ratio = f"{cpu / base[3]:.2f}" if base and base[3] else "–"
                out.append(
                    f"| {size:,} | {kind} | {conns} | {fmt(rps)} ({fmt(lo)}–{fmt(hi)}) | {fmt(p50)} | {fmt(p99)} "
                    f"| {ratio} | {fmt(cpu)} | {cpu_ratio} |"
                )
    out += ["", "The stores (generated once with BENCH_DIR, reused while the generator is unchanged):", ""]
    out += [
        "| paths | Refs rows | db.sqlite | generation s: total | of which DB inserts | empty files |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        out.append(
            f"| {size:,} | {int(meta[f'refs_{size}']):,} | {int(meta[f'dbbytes_{size}']) / 1048576:,.1f} MiB "
            f"| {meta.get(f'total_seconds_{size}', '?')} | {meta.get(f'db_seconds_{size}', '?')} "
            f"| {meta.get(f'files_seconds_{size}', '?')} |"
        )
    target = [
        f"{kind}/{conns}: {med[(sizes[-1], kind, conns)][1] / med[(sizes[0], kind, conns)][1]:.2f}"
        for kind in ("present", "absent")
        for conns in sorted({k[2] for k in runs})
        if (sizes[-1], kind, conns) in med and (sizes[0], kind, conns) in med
    ]
    out += [
        "",
        f"Target (issue #5): p50 at {sizes[-1]:,} paths within 1.5× of {sizes[0]:,}. "
        f"Ratios: {', '.join(target)}.",
    ]
    print("\n".join(out))


def main():
    cmds = {"gen": (gen, 2), "store-key": (store_key, 0), "check": (check, 3), "report": (report, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) != cmds[sys.argv[1]][1] + 2:
        sys.exit(__doc__)
    fn, _ = cmds[sys.argv[1]]
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
