"""A 256 MiB float32 array put from Python (through shared memory, Store.put's large
path) against a memcpy of the same bytes into fresh shared memory, in the same run;
and what another client's pings see meanwhile.

Two kinds of put: a put that replaces a value of its size (the broker keeps a freed
large block's pages for a couple of seconds, so from the third put on the copy lands in
pages the previous value had: no page to allocate, fault in or zero), and a "fresh" put
after the value was deleted and its pages handed back to /dev/shm (the broker allocates
pages and the copy faults them in, as the memcpy baseline does).

Another process pings the broker every millisecond for the whole run; each ping is
counted against what ran when it was sent: a put, a fresh put, the memcpy baseline (no
broker work at all: what the copy alone costs other processes on this machine), or a put
made with the copying process on a CPU of its own and the broker and the pinging client
on another (the same work, without the copy competing for their CPU).

Prints a markdown table of medians, then:
  BENCH py.put.256m <MiB/s> MiB/s
  RATIO py.put.256m.vs_memcpy <x>             (the put's rate over the memcpy's; target >= 0.8)
  BENCH py.put.256m.ping_p99 <us> us          (pings during the puts)
  BENCH py.put.256m.ping_p99.memcpy <us> us   (pings during the memcpy baseline)
  RATIO py.put.256m.ping_p99.vs_memcpy <x>    (the baseline's p99 over the puts'; 1: the put
                                               costs other clients no more than a plain copy)
  BENCH py.put.256m.ping_p99.pinned <us> us   (pings during puts with the copy on its own CPU;
                                               nan with fewer than 2 CPUs)
  BENCH py.put.256m.fresh <MiB/s> MiB/s       (puts into pages the store had handed back)
  RATIO py.put.256m.fresh.vs_memcpy <x>
  BENCH py.put.256m.ping_p99.fresh <us> us    (pings during the fresh puts)

Environment: SLITHER_BROKER_BIN (the slither-broker to start), SLITHER_BENCH_REPS (5).
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

REPS = int(os.environ.get("SLITHER_BENCH_REPS", "5"))
ARRAY = np.arange(64 * 1024 * 1024, dtype=np.float32)  # 256 MiB
MIB = ARRAY.nbytes / (1 << 20)
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


def main() -> None:
    spans: dict[str, list[tuple[int, int]]] = {"put": [], "memcpy": [], "pinned": [], "fresh": []}
    seconds: dict[str, list[float]] = {"put": [], "memcpy": [], "fresh": []}

    def timed(what: str, fn) -> None:
        t = time.perf_counter_ns()
        fn()
        end = time.perf_counter_ns()
        spans[what].append((t, end))
        if what in seconds:
            seconds[what].append((end - t) / 1e9)

    with tempfile.TemporaryDirectory(prefix="slither-bench-large-") as tmp, \
            BenchBroker(Path(tmp), CONFIG) as broker:
        client = broker.client
        store = client.store("bench")
        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        ping = ctx.Process(target=pinger, args=(str(broker.runtime_dir), broker.namespace, stop, out))
        ping.start()
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

        for _ in range(REPS):
            timed("memcpy", memcpy_into_fresh_shm)
            timed("put", lambda: store.put("kv", "big", ARRAY))
            settle()
        for _ in range(REPS):
            store.delete("kv", "big")
            handed_back()
            timed("fresh", lambda: store.put("kv", "big", ARRAY))
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            everything = set(cpus)
            set_affinity(broker.proc.pid, {cpus[-1]})
            set_affinity(ping.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})
            try:
                for _ in range(REPS):
                    timed("pinned", lambda: store.put("kv", "big", ARRAY))
                    settle()
            finally:
                os.sched_setaffinity(0, everything)
                set_affinity(broker.proc.pid, everything)
        stop.set()
        sent = out.get(timeout=30)
        ping.join(timeout=10)
        got = store.table("kv").view("big")
        assert got is not None and np.array_equal(np.asarray(got)[-4:], ARRAY[-4:])
        del got

    def during(what: str) -> list[float]:
        return [rtt for t, rtt in sent if any(a <= t <= b for a, b in spans[what])]

    pings = {what: during(what) for what in spans}
    tail = {what: p99(pings[what]) for what in spans}
    put_rate = MIB / statistics.median(seconds["put"])
    fresh_rate = MIB / statistics.median(seconds["fresh"])
    copy_rate = MIB / statistics.median(seconds["memcpy"])
    print("| figure | median | unit |")
    print("|---|---:|---|")
    print(f"| put 256 MiB f32 (in place), replacing one of its size | {put_rate:.0f} | MiB/s |")
    print(f"| put 256 MiB f32 (in place) into fresh pages | {fresh_rate:.0f} | MiB/s |")
    print(f"| memcpy 256 MiB into fresh shared memory | {copy_rate:.0f} | MiB/s |")
    print()
    print("| another client's pings | pings | p99 (us) | max (us) |")
    print("|---|---:|---:|---:|")
    for what, label in (("put", "during the puts"), ("fresh", "during the fresh puts"),
                        ("memcpy", "during the memcpy baseline"),
                        ("pinned", "during puts, the copy on a CPU of its own")):
        print(f"| {label} | {len(pings[what])} | {tail[what]:.0f} | {max(pings[what], default=0):.0f} |")
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


if __name__ == "__main__":
    sys.exit(main())
