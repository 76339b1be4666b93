#!/usr/bin/env python3
"""Helpers for bench/run, for the parts that are awkward in bash.

  helper.py absent-hashes N              N random, valid-looking store path hashes
  helper.py curl-config BASE HASHES OUT [bare]
                                         a curl --config file fetching the NAR of every path
                                         (URLs from BASE's narinfos; `bare`: the uncompressed
                                         NAR at the same URL stem); prints the NarSize sum
  helper.py narinfo BASE HASH FIELD      one field of one narinfo
  helper.py rss PID...                   the summed VmHWM of the PIDs and their children, MiB
  helper.py concurrent URL N PID         N truly concurrent downloads of URL; prints the
                                         peak RSS (MiB) of PID and its children
  helper.py report TSV META              the markdown results table from the raw results

Standard library only (Python 3.11).
"""

import os
import random
import selectors
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def fetch_narinfo(base, h):
    with urllib.request.urlopen(f"{base}/{h}.narinfo", timeout=30) as r:
        text = r.read().decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def absent_hashes(n):
    rng = random.Random(42)
    for _ in range(int(n)):
        print("".join(rng.choice(NIX32) for _ in range(32)))


def curl_config(base, hashes_file, out, bare=None):
    total = 0
    with open(hashes_file) as f, open(out, "w") as cfg:
        for h in f.read().split():
            info = fetch_narinfo(base, h)
            total += int(info["NarSize"])
            url = info["URL"]
            if bare:
                url = url[: url.index(".nar") + 4]
            cfg.write(f'url = "{base}/{url}"\noutput = "/dev/null"\n')
    print(total)


def narinfo(base, h, field):
    print(fetch_narinfo(base, h)[field])


def family(pid):
    """pid and its descendants (nginx: the master and its workers)."""
    pids = [int(pid)]
    for p in pids:
        for task in os.listdir(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
            except FileNotFoundError:
                pass
    return pids


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss(*pids, field="VmHWM"):
    return sum(status_kib(p, field) for pid in pids for p in family(pid)) / 1024


def cpu(*pids):
    """CPU seconds (user + system) used so far by pids and their descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        for p in family(pid):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def reset_peak(*pids):
    """Resets the peak RSS (VmHWM) of pids and their descendants to their current RSS."""
    for pid in pids:
        for p in family(pid):
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")


def wave_report(tsv, out):
    """The job-wave table: medians per mode of the runs in tsv (mode, key, value lines)."""
    runs = {}
    for line in open(tsv):
        mode, key, value = line.rstrip("\n").split("\t")
        runs.setdefault(mode, {}).setdefault(key, []).append(float(value))
    med = lambda mode, key: statistics.median(runs[mode][key]) if key in runs.get(mode, {}) else float("nan")
    rows = [
        ("makespan (s)", "makespan_s", "{:.2f}"),
        ("node p50 (s)", "node_p50_s", "{:.2f}"),
        ("node p99 (s)", "node_p99_s", "{:.2f}"),
        ("errors", "errors", "{:.0f}"),
        ("retries (503 and cut connections)", "retries", "{:.0f}"),
        ("GiB sent", "gib", "{:.2f}"),
        ("server peak RSS (MiB)", "rss_mib", "{:.0f}"),
        ("server CPU (s)", "cpu_s", "{:.1f}"),
        ("client CPU (s)", "client_cpu_s", "{:.1f}"),
    ]
    modes = [m for m in ("nginx-zstd", "subserve-cold", "subserve-warm") if m in runs]
    n = max(len(v) for m in modes for v in runs[m].values())
    lines = ["| medians of %d runs | %s |" % (n, " | ".join(modes)), "|---|" + "---:|" * len(modes)]
    for label, key, f in rows:
        lines.append("| %s | %s |" % (label, " | ".join(f.format(med(m, key)) for m in modes)))
    for m in modes[1:]:
        lines.append("| makespan ÷ nginx-zstd, %s | %.2f |" % (m, med(m, "makespan_s") / med("nginx-zstd", "makespan_s")))
    text = "\n".join(lines) + "\n"
    open(out, "w").write(text)
    print(text)


def concurrent(url, n, pid):
    """n downloads of url at once, over raw sockets (HTTP/1.0, body until EOF).

    Phase 1 opens every connection and reads each until it has 1 MiB of body (or its end),
    then stops reading it: once all n got there, all n responses are in flight at the same
    time, whatever the server's buffering. A server with admission control sends no more
    than its cap at once and queues the rest, so phase 1 also ends when nothing moves for
    2 s (open_at_once counts the streams in flight then). Phase 2 reads them all to the end
    and checks every body is whole.
    """
    n = int(n)
    u = urllib.parse.urlsplit(url)
    request = f"GET {u.path} HTTP/1.0\r\nHost: {u.netloc}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        s = socket.create_connection((u.hostname, u.port))
        s.sendall(request)
        s.setblocking(False)
        c = {"sock": s, "head": bytearray(), "body": 0, "length": None, "i": i}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    buf = bytearray(1 << 20)
    barrier = 1 << 20
    paused = []
    finished = 0
    open_at_barrier = None
    rss_at_barrier = 0.0
    started = time.monotonic()
    # VmHWM can lag behind VmRSS, so the peak is also sampled (every 0.2 s).
    peak = rss(pid, field="VmRSS")
    sampled = started
    while finished < n:
        if time.monotonic() - sampled > 0.2:
            peak = max(peak, rss(pid, field="VmRSS"))
            sampled = time.monotonic()
        if open_at_barrier is None and len(paused) + finished == n:
            open_at_barrier = len(paused)
            rss_at_barrier = rss(pid, field="VmRSS")
            for c in paused:
                sel.register(c["sock"], selectors.EVENT_READ, c)
        waiting = open_at_barrier is None and paused
        events = sel.select(timeout=2 if waiting else 60)
        if not events and waiting:
            # The rest are queued behind the paused ones: release them.
            open_at_barrier = len(paused)
            rss_at_barrier = rss(pid, field="VmRSS")
            for c in paused:
                sel.register(c["sock"], selectors.EVENT_READ, c)
            continue
        if not events:
            sys.exit(f"concurrent: {url}: no progress for 60 s")
        for key, _ in events:
            c = key.data
            k = c["sock"].recv_into(buf)
            if k == 0:
                finished += 1
                sel.unregister(c["sock"])
                c["sock"].close()
                if c["length"] is None:
                    sys.exit(f"concurrent: {url}: connection closed before the headers")
                continue
            if c["length"] is None:
                c["head"] += buf[:k]
                end = c["head"].find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = c["head"][:end].decode("latin-1").split("\r\n")
                if head[0].split()[1] != "200":
                    sys.exit(f"concurrent: {url}: {head[0]}")
                c["length"] = -1
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        c["length"] = int(value)
                c["body"] = len(c["head"]) - end - 4
            else:
                c["body"] += k
            if open_at_barrier is None and c["body"] >= barrier:
                sel.unregister(c["sock"])
                paused.append(c)
    elapsed = time.monotonic() - started
    sizes = {c["body"] for c in conns}
    for c in conns:
        if c["length"] not in (-1, c["body"]):
            sys.exit(f"concurrent: stream {c['i']}: {c['body']} bytes of {c['length']}")
    if len(sizes) != 1:
        sys.exit(f"concurrent: streams of different sizes: {sorted(sizes)[:5]}")
    print(
        f"streams={n} open_at_once={open_at_barrier} bytes_each={sizes.pop()} "
        f"seconds={elapsed:.1f} rss_at_barrier_mib={rss_at_barrier:.1f} "
        f"peak_mib={max(peak, rss_at_barrier, rss(pid)):.1f}"
    )


def fmt(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(tsv, meta):
    """Medians with min–max, and ratios, as markdown."""
    data = {}
    with open(tsv) as f:
        for line in f:
            key, who, value = line.rstrip("\n").split("\t")
            data.setdefault((key, who), []).append(float(value))
    with open(meta) as f:
        info = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)

    def med(key, who):
        return statistics.median(data[(key, who)]) if (key, who) in data else None

    def cell(key, who):
        vs = data.get((key, who))
        if not vs:
            return "–"
        m = statistics.median(vs)
        return f"{fmt(m)} ({fmt(min(vs))}–{fmt(max(vs))})" if len(vs) > 1 else fmt(m)

    def ratio(key, a, b):
        x, y = med(key, a), med(key, b)
        return f"{x / y:.2f}" if x and y else "–"

    out = []
    w = out.append
    w("# subserve benchmark results\n")
    w(f"{info['date']} · subserve {info['rev']} · {info['mode']} mode, {info['reps']} runs per figure, "
      "interleaved subserve/nginx · medians, (min–max)\n")
    w(f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem']}, kernel {info['kernel']}; "
      f"nginx {info['nginx']}, wrk {info['wrk']}, curl {info['curl']}, zstd {info['zstd']}, xz {info['xz']}.\n")
    w(f"Closure: {info['paths']} paths, {int(info['closure_bytes']) / 2**20:.0f} MiB of NARs "
      f"({int(info['nginx_zstd_bytes']) / 2**20:.0f} MiB as `nix copy` zstd files); "
      f"big NAR {int(info['big_bytes']) / 2**20:.1f} MiB.\n")

    baked, unprofitable = info.get("baked", "?"), info.get("unprofitable", "?")
    w("subserve: **defaults** is the README's command (only `--listen`, the store and `--upstream none` set: "
      "bakes zstd in the background); **--bake none** is the same with baking off; **otf** is `--bake none "
      "--compression zstd` (zstd on the fly); **--audit=off** is the defaults without the audit trail. Ratios are subserve / other: above 1 is better for subserve in "
      "req/s and MiB/s, worse in seconds and latency.\n")

    w("## Baking: narinfo throughput while the defaults server bakes\n")
    w(f"The closure's narinfos were requested once at start-up, which queued the bakes: {baked} NARs baked, "
      f"{unprofitable} found not worth it, all done {float(info.get('bake_seconds') or 0):.0f} s after "
      f"the first request (30 s of it `--bake-delay`; paused {float(info.get('bake_paused') or 0):.0f} s "
      "while wrk kept the CPUs busy). wrk at 16 connections on present paths, back to back while the "
      "bakes ran, then idle runs after they were done.\n")
    w("| runs | req/s while idle | req/s while a bake runs | ratio |")
    w("|---|---|---|---|")
    k = "baking/c16/rps"
    n_idle, n_baking = len(data.get((k, "idle"), [])), len(data.get((k, "baking"), []))
    w(f"| {n_idle} idle, {n_baking} baking | {cell(k, 'idle')} | {cell(k, 'baking')} | {ratio(k, 'baking', 'idle')} |")
    w("")

    w(f"## narinfo (wrk, {info['wrk_seconds']} s per run)\n")
    w("| paths | conns | defaults req/s | nginx req/s | **ratio** | --bake none req/s | ratio | "
      "--audit=off req/s | defaults / --audit=off | defaults p50 / p99 µs | nginx p50 / p99 µs |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("present", "absent"):
        for c in (1, 16, 64):
            k = f"narinfo/{kind}/c{c}"
            w(f"| {kind} | {c} | {cell(k + '/rps', 'defaults')} | {cell(k + '/rps', 'nginx')} | "
              f"**{ratio(k + '/rps', 'defaults', 'nginx')}** | {cell(k + '/rps', 'nobake')} | "
              f"{ratio(k + '/rps', 'nobake', 'nginx')} | {cell(k + '/rps', 'noaudit')} | "
              f"{ratio(k + '/rps', 'defaults', 'noaudit')} | "
              f"{fmt(med(k + '/p50', 'defaults') or 0)} / {fmt(med(k + '/p99', 'defaults') or 0)} | "
              f"{fmt(med(k + '/p50', 'nginx') or 0)} / {fmt(med(k + '/p99', 'nginx') or 0)} |")
    w("")

    w("## Closure download (every NAR of the closure, `curl --parallel`, seconds)\n")
    w("| served as | parallel | subserve | subserve s | nginx s | **time ratio** | MiB sent subserve / nginx |")
    w("|---|---|---|---|---|---|---|")
    for comp, label, whos in (
            ("named", "as the narinfos name them (defaults: baked zstd, bare where baking does not pay; "
                      "nginx: `nix copy` zstd)", ("defaults",)),
            ("none", "uncompressed", ("defaults", "nobake")),
            ("zstd", "zstd (subserve on the fly, nginx `nix copy` files)", ("otf",))):
        for p in (1, 4, 16):
            k = f"closure/{comp}/p{p}/s"
            for who in whos:
                if med(k, who) is None:
                    continue
                sb, nb = med(f"closure/{comp}/bytes", who), med(f"closure/{comp}/bytes", "nginx")
                w(f"| {label} | {p} | {who} | {cell(k, who)} | {cell(k, 'nginx')} | **{ratio(k, who, 'nginx')}** | "
                  f"{(sb or 0) / 2**20:.0f} / {(nb or 0) / 2**20:.0f} |")
    w("")

    w("## One NAR: serving and compressing (MiB/s of uncompressed NAR; output to /dev/null)\n")
    w("| what | subserve | subserve MiB/s | compared with | its MiB/s | **ratio** | output MiB subserve / other |")
    w("|---|---|---|---|---|---|---|")
    rows = (
        ("nar256/none", "big NAR, uncompressed", "defaults", "nginx", "nginx (sendfile)"),
        ("nar256/none", "big NAR, uncompressed", "nobake", "nginx", "nginx (sendfile)"),
        ("nar256/zstd", "big NAR, zstd level 3 on the fly", "otf", "zstd-3", "`zstd -3 -T1`"),
        ("nar256/zstd", "big NAR, zstd level 3 on the fly", "otf", "zstd-1", "`zstd -1 -T1`"),
        ("nar256/zstd", "big NAR, zstd level 3 on the fly", "otf", "zstd-3-st", "`zstd -3 --single-thread`"),
        ("nar256/zstd", "big NAR, zstd level 3 on the fly", "otf", "zstd-1-st", "`zstd -1 --single-thread`"),
        ("narxz/xz", f"xz preset 2 on the fly ({int(info['xz_nar_bytes']) / 2**20:.0f} MiB NAR of tree-0)",
         "defaults", "xz-2", "`xz -2 -T1`"),
    )
    for key, label, who, other, other_label in rows:
        k = key + "/MiBps"
        so, oo = med(key + "/out", who), med(key + "/out", other)
        sizes = f"{so / 2**20:.1f} / {oo / 2**20:.1f}" if so and oo else "–"
        w(f"| {label} | {who} | {cell(k, who)} | {other_label} | {cell(k, other)} | **{ratio(k, who, other)}** | "
          f"{sizes} |")
    w("")

    w("## Memory (peak RSS: VmHWM, or the highest VmRSS sampled; MiB; nginx: master + workers)\n")
    w("| downloads at once | subserve idle | subserve peak | nginx idle | nginx peak | seconds subserve / nginx "
      "| streams in flight subserve / nginx |")
    w("|---|---|---|---|---|---|---|")
    for comp, label in (("none", f"{info['mem_streams']} × big NAR, uncompressed"),
                        ("zstd", f"{info['mem_streams']} × {int(info['mem_zstd_nar_bytes']) / 2**20:.0f} MiB NAR, zstd")):
        k = f"memory/{comp}"
        ns, nn = med(k + "/seconds", "subserve"), med(k + "/seconds", "nginx")
        w(f"| {label} | {cell(k + '/idle', 'subserve')} | {cell(k + '/peak', 'subserve')} | "
          f"{cell(k + '/idle', 'nginx')} | {cell(k + '/peak', 'nginx')} | "
          f"{fmt(ns or 0)} / {fmt(nn) if nn else '–'} | "
          f"{fmt(med(k + '/open', 'subserve') or 0)} / {fmt(med(k + '/open', 'nginx') or 0)} |")
    w("")
    w("Memory: subserve with defaults for the uncompressed downloads, otf for the zstd ones.")
    print("\n".join(out))


def main():
    cmd, *args = sys.argv[1:]
    {
        "absent-hashes": absent_hashes,
        "curl-config": curl_config,
        "narinfo": narinfo,
        "rss": lambda *pids: print(f"{rss(*pids):.1f}"),
        "concurrent": concurrent,
        "cpu": lambda *pids: print(f"{cpu(*pids):.2f}"),
        "reset-peak": reset_peak,
        "wave-report": wave_report,
        "report": report,
    }[cmd](*args)


if __name__ == "__main__":
    main()
