#!/usr/bin/env python3
"""mmkit's Python package measured against its peers, in the same run.

    python python/bench/bench.py                 # tables
    python python/bench/bench.py --json          # rows: workload, peer, median, ...
    python python/bench/bench.py --size-mb 64 --messages 100000 --runs 3

Workloads (each peer runs in this same invocation, on the same machine):

- ``array_colsum``: open a C-order float32 ``.npy`` file of shape (N, 4)
  and sum its columns, then drop the array. mmkit: ``mmkit.open_array``;
  peer: ``numpy.memmap`` (and ``numpy.load(mmap_mode="r")``, which wraps
  it). The file is in the page cache (one warm-up pass each).
- ``array_open``: the same open and drop, without reading: what mmkit adds.
- ``queue_64B``: one Python process appends ``--messages`` messages of 64
  bytes, another reads them all; timed from a common start until the reader
  has the last one. mmkit: ``Queue.append`` / ``Reader.next`` on a fresh
  queue (and ``append_batch`` of 256 as a second row); peers:
  ``multiprocessing.Queue`` (put/get) and a ``multiprocessing.Pipe``
  (send_bytes/recv_bytes).

Medians of ``--runs`` rounds are reported with their range (min-max);
the peers run interleaved, one run each per round, and mmkit's ratio to a
peer is the median of the per-round ratios. Throughputs are messages per
second.
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import mmkit

PAYLOAD = bytes(range(64))


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def summary(workload, peer, samples, unit):
    return {
        "workload": workload,
        "peer": peer,
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "unit": unit,
        "runs": len(samples),
        "samples": samples,
    }


# --- arrays -------------------------------------------------------------


def make_array(path, size_mb):
    rows = size_mb * (1 << 20) // 16
    a = mmkit.create_array(path, np.float32, (rows, 4))
    chunk = 1 << 20
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        a[start : start + n] = (np.arange(start, start + n, dtype=np.float32) % 1000)[:, None]
    a.base.flush()
    del a
    return rows


def colsum_mmkit(path, rows):
    a = mmkit.open_array(path)
    s = a.sum(axis=0)
    del a
    return s


def colsum_memmap(path, rows):
    offset = np.lib.format.open_memmap(path, mode="r").offset
    m = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(rows, 4))
    s = m.sum(axis=0)
    del m
    return s


def colsum_load(path, rows):
    m = np.load(path, mmap_mode="r")
    s = m.sum(axis=0)
    del m
    return s


def open_mmkit(path, rows):
    a = mmkit.open_array(path)
    del a


def open_memmap(path, rows):
    m = np.memmap(path, dtype=np.float32, mode="r", offset=128, shape=(rows, 4))
    del m


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench_arrays(dirname, size_mb, runs):
    path = os.path.join(dirname, "colsum.npy")
    rows = make_array(path, size_mb)
    peers = {
        "array_colsum": [("mmkit.open_array", colsum_mmkit), ("numpy.memmap", colsum_memmap), ("numpy.load(mmap_mode='r')", colsum_load)],
        "array_open": [("mmkit.open_array", open_mmkit), ("numpy.memmap", open_memmap)],
    }
    expected = None
    rows_out = []
    for workload, fns in peers.items():
        repeat = runs if workload == "array_colsum" else runs * 200
        samples = {name: [] for name, _ in fns}
        for _, fn in fns:
            fn(path, rows)  # warm-up: page cache and page tables
        # Interleave the peers so that drift (other load, frequency) hits all alike.
        for _ in range(repeat):
            for name, fn in fns:
                t, out = timed(fn, path, rows)
                samples[name].append(t)
                if out is not None:
                    if expected is None:
                        expected = out
                    assert np.allclose(out, expected), (name, out, expected)
        for name, _ in fns:
            rows_out.append(summary(workload, name, samples[name], "s"))
    os.unlink(path)
    return rows_out, rows


# --- queues -------------------------------------------------------------


def mmkit_producer(path, n, batch, ready, go):
    q = mmkit.Queue(path)
    ready.wait()
    go.wait()
    if batch:
        msgs = [PAYLOAD] * batch
        for _ in range(n // batch):
            q.append_batch(msgs)
    else:
        append = q.append
        for _ in range(n):
            append(PAYLOAD)


def mmkit_consumer(path, n, ready, go, result):
    r = mmkit.Queue(path).reader("beginning")
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    nxt = r.next
    got = 0
    while got < n:
        rec = nxt(10.0)
        if rec is None:
            raise SystemExit("mmkit consumer timed out")
        got += 1
    result.put(time.perf_counter() - t0)


def mpq_producer(q, n, ready, go):
    ready.wait()
    go.wait()
    put = q.put
    for _ in range(n):
        put(PAYLOAD)


def mpq_consumer(q, n, ready, go, result):
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    get = q.get
    for _ in range(n):
        get(timeout=10)
    result.put(time.perf_counter() - t0)


def pipe_producer(conn, n, ready, go):
    ready.wait()
    go.wait()
    send = conn.send_bytes
    for _ in range(n):
        send(PAYLOAD)


def pipe_consumer(conn, n, ready, go, result):
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    recv = conn.recv_bytes
    for _ in range(n):
        recv()
    result.put(time.perf_counter() - t0)


def run_pair(ctx, producer, pargs, consumer, cargs):
    """Starts both processes, releases them together, returns the consumer's time."""
    ready = ctx.Barrier(3)
    go = ctx.Event()
    result = ctx.Queue()
    p = ctx.Process(target=producer, args=(*pargs, ready, go))
    c = ctx.Process(target=consumer, args=(*cargs, ready, go, result))
    p.start()
    c.start()
    ready.wait()
    go.set()
    elapsed = result.get(timeout=600)
    p.join()
    c.join()
    if p.exitcode or c.exitcode:
        raise RuntimeError(f"{producer.__name__}/{consumer.__name__} failed: {p.exitcode}, {c.exitcode}")
    return elapsed


def one_queue_run(ctx, peer, dirname, n):
    if peer.startswith("mmkit"):
        path = os.path.join(dirname, "q")
        shutil.rmtree(path, ignore_errors=True)
        mmkit.Queue(path, create=True).close()
        batch = 256 if "batch" in peer else 0
        return run_pair(ctx, mmkit_producer, (path, n, batch), mmkit_consumer, (path, n))
    if peer == "multiprocessing.Queue":
        q = ctx.Queue()
        return run_pair(ctx, mpq_producer, (q, n), mpq_consumer, (q, n))
    recv_end, send_end = ctx.Pipe(duplex=False)
    return run_pair(ctx, pipe_producer, (send_end, n), pipe_consumer, (recv_end, n))


def bench_queues(dirname, n, runs):
    ctx = mp.get_context("fork")
    n = n - n % 256
    peers = ["mmkit.Queue", "mmkit.Queue (append_batch 256)", "multiprocessing.Queue", "multiprocessing.Pipe"]
    samples = {p: [] for p in peers}
    for _ in range(runs):
        for peer in peers:
            samples[peer].append(n / one_queue_run(ctx, peer, dirname, n))
    return [summary("queue_64B", p, samples[p], "msg/s") for p in peers], n


# --- report -------------------------------------------------------------


def fmt(row):
    if row["unit"] == "s":
        scale, unit = (1e3, "ms") if row["median"] >= 1e-3 else (1e6, "us")
        return f"{row['median'] * scale:10.3f} {unit}  ({row['min'] * scale:.3f}-{row['max'] * scale:.3f})"
    return f"{row['median'] / 1e6:10.3f} M/s  ({row['min'] / 1e6:.3f}-{row['max'] / 1e6:.3f})"


def paired_ratio(mine, peer):
    """mmkit's speed-up over `peer`: the median of the per-round ratios
    (both measured in the same round, so drift between rounds cancels)."""
    pairs = zip(mine["samples"], peer["samples"])
    if mine["unit"] == "s":
        return statistics.median(p / m for m, p in pairs)
    return statistics.median(m / p for m, p in pairs)


def add_ratios(rows):
    """Gives each peer row `mmkit_ratio` against its workload's first row."""
    for w in dict.fromkeys(r["workload"] for r in rows):
        group = [r for r in rows if r["workload"] == w]
        for r in group[1:]:
            if not r["peer"].startswith("mmkit"):
                r["mmkit_ratio"] = paired_ratio(group[0], r)


def print_tables(rows, out):
    for w in dict.fromkeys(r["workload"] for r in rows):
        group = [r for r in rows if r["workload"] == w]
        better = "higher is better" if group[0]["unit"] == "msg/s" else "lower is better"
        print(f"\n{w} (median of {group[0]['runs']}, range min-max; {better})", file=out)
        for r in group:
            note = f"   mmkit is {r['mmkit_ratio']:.2f}x" if "mmkit_ratio" in r else ""
            print(f"  {r['peer']:<34}{fmt(r)}{note}", file=out)
    print("\nmmkit is Nx: the median over rounds of mmkit's speed over the peer's in that round.", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=256, help="size of the array's data (default 256 MiB)")
    ap.add_argument("--messages", type=int, default=300_000, help="messages per queue run (default 300000)")
    ap.add_argument("--runs", type=int, default=7, help="rounds per measurement (default 7)")
    ap.add_argument("--dir", help="directory for the files (default: a new one in the system temp dir)")
    ap.add_argument("--only", choices=["array", "queue"], help="run one part only")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON (tables go to stderr)")
    args = ap.parse_args()

    out = sys.stderr if args.json else sys.stdout
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}", file=out)
    print(f"Python {platform.python_version()}, numpy {np.__version__}, mmkit {mmkit.__version__}", file=out)
    dirname = tempfile.mkdtemp(prefix="mmkit-pybench-", dir=args.dir)
    rows = []
    try:
        if args.only in (None, "array"):
            array_rows, nrows = bench_arrays(dirname, args.size_mb, args.runs)
            print(f"arrays: float32 ({nrows}, 4), {args.size_mb} MiB, in the page cache", file=out)
            rows += array_rows
        if args.only in (None, "queue"):
            queue_rows, n = bench_queues(dirname, args.messages, args.runs)
            print(f"queues: {n} messages of 64 B from one process to another", file=out)
            rows += queue_rows
    finally:
        shutil.rmtree(dirname, ignore_errors=True)
    add_ratios(rows)
    print_tables(rows, out)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
