"""A 256 MiB float32 array put from Python (through shared memory, Store.put's large
path) against a memcpy of the same bytes into fresh shared memory, in the same run;
and what another client's pings see meanwhile.

Two kinds of put: a put that replaces a value of its size (the broker keeps a freed
large block's pages for a couple of seconds, so from the third put on the copy lands in
pages the previous value had: no page to allocate, fault in or zero), and a "fresh" put
after the value was deleted and its pages handed back to /dev/shm (the broker allocates
pages and the copy faults them in, as the memcpy baseline does). Memory just released
can cost more to fault in again than memory released a while before (on a VM with free
page reporting, the host takes it back), so the fresh puts have a baseline of their own:
the same memcpy made right after the store handed the same 256 MiB back.

Another process pings the broker every millisecond for the whole run; each ping is
counted against what ran when it was sent: a put, a fresh put, the memcpy baseline (no
broker work at all: what the copy alone costs other processes on this machine), or a put
made with the copying process on a CPU of its own and the broker and the pinging client
on another (the same work, without the copy competing for their CPU).

A p99 over a few dozen pings is one unlucky preemption away from another figure, so the
run is made of windows (SLITHER_BENCH_WINDOWS, 5), each doing every kind of work in turn
(SLITHER_BENCH_REPS times each); the ping figure of a kind is the median of its windows'
p99s, printed with their range. With SLITHER_BENCH_TRACE=1 it also prints, per kind, the
CPU time and run delay (time runnable, waiting for a CPU: /proc/.../schedstat) of the
broker's threads, the copying process and the pinger, and every ping over 1 ms with where
it fell in its put: contention for a CPU shows as run delay, blocking as a slow ping
without it.

Prints a markdown table of medians, then:
  BENCH py.put.256m <MiB/s> MiB/s
  RATIO py.put.256m.vs_memcpy <x>             (the put's rate over the memcpy's; target >= 0.8)
  BENCH py.put.256m.ping_p99 <us> us          (pings during the puts: median of the windows' p99s)
  BENCH py.put.256m.ping_p99.memcpy <us> us   (pings during the memcpy baseline)
  RATIO py.put.256m.ping_p99.vs_memcpy <x>    (the baseline's p99 over the puts'; 1: the put
                                               costs other clients no more than a plain copy)
  BENCH py.put.256m.ping_p99.pinned <us> us   (pings during puts with the copy on its own CPU;
                                               nan with fewer than 2 CPUs)
  BENCH py.put.256m.fresh <MiB/s> MiB/s       (puts into pages the store had handed back)
  RATIO py.put.256m.fresh.vs_memcpy <x>
  BENCH py.put.256m.ping_p99.fresh <us> us    (pings during the fresh puts)
  BENCH py.put.256m.memcpy_trimmed <MiB/s> MiB/s  (the memcpy baseline made, as a fresh put
                                               is, right after the store handed 256 MiB back)
  RATIO py.put.256m.fresh.vs_memcpy_trimmed <x>
  BENCH py.put.256m.ping_p99.memcpy_trimmed <us> us  (pings during that memcpy: what faulting
                                               in just-released memory costs other processes
                                               on this machine, with no broker work at all)

Environment: SLITHER_BROKER_BIN (the slither-broker to start), SLITHER_BENCH_WINDOWS (5),
SLITHER_BENCH_REPS (3, puts of each kind per window), SLITHER_BENCH_TRACE (0).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

import slither
from bench_broker import BenchBroker

WINDOWS = int(os.environ.get("SLITHER_BENCH_WINDOWS", "5"))
REPS = int(os.environ.get("SLITHER_BENCH_REPS", "3"))
TRACE = os.environ.get("SLITHER_BENCH_TRACE", "0") not in ("", "0")
ARRAY = np.arange(64 * 1024 * 1024, dtype=np.float32)  # 256 MiB
MIB = ARRAY.nbytes / (1 << 20)
KINDS = ("put", "fresh", "memcpy", "memcpy_trimmed", "pinned")
CONFIG = """\
    [[stores]]
    name = "bench"

    [[stores.tables]]
    name = "kv"
"""


def pinger(runtime_dir: str, namespace: str, stop, out) -> None:
    client = slither.connect(runtime_dir=runtime_dir, namespace=namespace)
    sent = []  # (when sent, round trip in us)
    while not stop.is_set():
        t = time.perf_counter_ns()
        client.ping()
        sent.append((t, (time.perf_counter_ns() - t) / 1e3))
        time.sleep(0.001)
    client.close()
    out.put(sent)


def memcpy_into_fresh_shm() -> None:
    """Fresh shared memory (created, then faulted in by the copy), as a client would fill it."""
    shm = shared_memory.SharedMemory(create=True, size=ARRAY.nbytes)
    try:
        dst = np.ndarray(ARRAY.shape, dtype=ARRAY.dtype, buffer=shm.buf)
        np.copyto(dst, ARRAY)
        del dst
    finally:
        shm.close()
        shm.unlink()


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


def schedstat(procs: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(CPU time, run delay) in ns of every thread of `procs`, by "process/thread name"."""
    out: dict[str, tuple[int, int]] = {}
    for who, pid in procs.items():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f"{who}/{f.read().strip()}"
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ran, waited = (int(x) for x in f.read().split()[:2])
            except OSError:
                continue
            was = out.get(name, (0, 0))
            out[name] = (was[0] + ran, was[1] + waited)
    return out


def main() -> None:
    # Per kind, per window: the (start, end) of each piece of work.
    spans = {k: [[] for _ in range(WINDOWS)] for k in KINDS}
    seconds: dict[str, list[float]] = {k: [] for k in KINDS}
    sched: dict[str, dict[str, list[int]]] = {k: {} for k in KINDS}
    procs: dict[str, int] = {}

    def timed(what: str, window: int, fn) -> None:
        before = schedstat(procs) if TRACE else {}
        t = time.perf_counter_ns()
        fn()
        end = time.perf_counter_ns()
        spans[what][window].append((t, end))
        seconds[what].append((end - t) / 1e9)
        if TRACE:
            for name, (ran, waited) in schedstat(procs).items():
                r0, w0 = before.get(name, (ran, waited))
                acc = sched[what].setdefault(name, [0, 0])
                acc[0] += ran - r0
                acc[1] += waited - w0

    with tempfile.TemporaryDirectory(prefix="slither-bench-large-") as tmp, \
            BenchBroker(Path(tmp), CONFIG) as broker:
        client = broker.client
        store = client.store("bench")
        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        ping = ctx.Process(target=pinger, args=(str(broker.runtime_dir), broker.namespace, stop, out))
        ping.start()
        procs.update(broker=broker.proc.pid, client=os.getpid(), pinger=ping.pid)
        time.sleep(0.5)

        def settle() -> None:
            # The replaced block is freed by the broker's reclaim timer; wait for it so
            # that every put finds the same room.
            deadline = time.monotonic() + 10
            while (client.stats()["stores"]["bench"]["bytes_retired"] != 0
                   and time.monotonic() < deadline):
                time.sleep(0.02)

        def handed_back() -> None:
            # A deleted value's pages go back to /dev/shm a couple of seconds after its
            # reclaim, in the background: wait for that, so that the next put is into
            # fresh pages.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st = client.stats()["stores"]["bench"]
                if st["bytes_retired"] == 0 and st["bytes_resident"] < ARRAY.nbytes // 4:
                    break
                time.sleep(0.05)

        def put() -> None:
            store.put("kv", "big", ARRAY)

        cpus = sorted(os.sched_getaffinity(0))
        everything = set(cpus)
        # Two puts first: from the third on, a put replaces a value of its size whose
        # pages are still there (see above).
        put()
        settle()
        put()
        settle()
        for w in range(WINDOWS):
            for _ in range(REPS):
                timed("memcpy", w, memcpy_into_fresh_shm)
                timed("put", w, put)
                settle()
            for _ in range(REPS):
                store.delete("kv", "big")
                handed_back()
                timed("fresh", w, put)
                # The baseline of the fresh puts: the same copy into the same state of
                # memory, right after the store handed the value's pages back.
                store.delete("kv", "big")
                handed_back()
                timed("memcpy_trimmed", w, memcpy_into_fresh_shm)
                put()
            settle()
            put()  # the pinned puts replace a value, as "put" does
            settle()
            if len(cpus) >= 2:
                set_affinity(broker.proc.pid, {cpus[-1]})
                set_affinity(ping.pid, {cpus[-1]})
                os.sched_setaffinity(0, {cpus[0]})
                try:
                    for _ in range(REPS):
                        timed("pinned", w, put)
                        settle()
                finally:
                    os.sched_setaffinity(0, everything)
                    set_affinity(broker.proc.pid, everything)
                    set_affinity(ping.pid, everything)
        stop.set()
        sent = out.get(timeout=30)
        ping.join(timeout=10)
        got = store.table("kv").view("big")
        assert got is not None and np.array_equal(np.asarray(got)[-4:], ARRAY[-4:])
        del got

    def during(ranges: list[tuple[int, int]]) -> list[float]:
        return [rtt for t, rtt in sent if any(a <= t <= b for a, b in ranges)]

    pings = {k: [during(spans[k][w]) for w in range(WINDOWS)] for k in KINDS}
    window_p99 = {k: [p99(p) for p in pings[k] if p] for k in KINDS}
    tail = {k: statistics.median(v) if v else float("nan") for k, v in window_p99.items()}

    def rate(what: str) -> float:
        return MIB / statistics.median(seconds[what]) if seconds[what] else float("nan")

    put_rate, fresh_rate, copy_rate = rate("put"), rate("fresh"), rate("memcpy")
    trimmed_rate = rate("memcpy_trimmed")
    print("| figure | median | unit |")
    print("|---|---:|---|")
    print(f"| put 256 MiB f32 (in place), replacing one of its size | {put_rate:.0f} | MiB/s |")
    print(f"| put 256 MiB f32 (in place) into fresh pages | {fresh_rate:.0f} | MiB/s |")
    print(f"| memcpy 256 MiB into fresh shared memory | {copy_rate:.0f} | MiB/s |")
    print(f"| the same memcpy right after the store handed 256 MiB back | {trimmed_rate:.0f} "
          "| MiB/s |")
    print()
    print(f"| another client's pings ({WINDOWS} windows of {REPS}) | pings | p99 (us): median "
          "of windows | windows' p99s (us) | max (us) |")
    print("|---|---:|---:|---|---:|")
    for what, label in (("put", "during the puts"), ("fresh", "during the fresh puts"),
                        ("memcpy", "during the memcpy baseline"),
                        ("memcpy_trimmed", "during the memcpy after a hand-back"),
                        ("pinned", "during puts, the copy on a CPU of its own")):
        every = [x for p in pings[what] for x in p]
        spread = ", ".join(f"{x:.0f}" for x in window_p99[what])
        print(f"| {label} | {len(every)} | {tail[what]:.0f} | {spread} | "
              f"{max(every, default=0):.0f} |")
    if TRACE:
        print()
        print("| during | thread | CPU (ms) | run delay (ms) |")
        print("|---|---|---:|---:|")
        for what in KINDS:
            for name, (ran, waited) in sorted(sched[what].items()):
                if ran or waited:
                    print(f"| {what} | {name} | {ran / 1e6:.1f} | {waited / 1e6:.1f} |")
        print()
        print("| during | ping (us) | sent at (ms into its put) | put took (ms) |")
        print("|---|---:|---:|---:|")
        for what in KINDS:
            ranges = [r for w in spans[what] for r in w]
            for t, rtt in sent:
                if rtt <= 1000:
                    continue
                for a, b in ranges:
                    if a <= t <= b:
                        print(f"| {what} | {rtt:.0f} | {(t - a) / 1e6:.1f} | {(b - a) / 1e6:.1f} |")
    print()
    print(f"BENCH py.put.256m {put_rate:.6g} MiB/s")
    print(f"RATIO py.put.256m.vs_memcpy {put_rate / copy_rate:.4g}")
    print(f"BENCH py.put.256m.ping_p99 {tail['put']:.6g} us")
    print(f"BENCH py.put.256m.ping_p99.memcpy {tail['memcpy']:.6g} us")
    print(f"RATIO py.put.256m.ping_p99.vs_memcpy {tail['memcpy'] / tail['put']:.4g}")
    print(f"BENCH py.put.256m.ping_p99.pinned {tail['pinned']:.6g} us")
    print(f"BENCH py.put.256m.fresh {fresh_rate:.6g} MiB/s")
    print(f"RATIO py.put.256m.fresh.vs_memcpy {fresh_rate / copy_rate:.4g}")
    print(f"BENCH py.put.256m.ping_p99.fresh {tail['fresh']:.6g} us")
    print(f"BENCH py.put.256m.memcpy_trimmed {trimmed_rate:.6g} MiB/s")
    print(f"RATIO py.put.256m.fresh.vs_memcpy_trimmed {fresh_rate / trimmed_rate:.4g}")
    print(f"BENCH py.put.256m.ping_p99.memcpy_trimmed {tail['memcpy_trimmed']:.6g} us")


if __name__ == "__main__":
    sys.exit(main())
