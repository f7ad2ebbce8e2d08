"""A 256 MiB float32 array put from Python (through shared memory, Store.put's large
path) against a memcpy of the same bytes into fresh shared memory, in the same run;
and what another client's pings see meanwhile.

Prints a markdown table of medians, then:
  BENCH py.put.256m <MiB/s> MiB/s
  RATIO py.put.256m.vs_memcpy <x>       (the put's rate over the memcpy's; target >= 0.8)
  BENCH py.put.256m.ping_p99 <us> us    (another process pinging the broker during the puts)

Environment: SLITHER_BROKER_BIN (the slither-broker to start), SLITHER_BENCH_REPS (5).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

import slither

BROKER_BIN = Path(os.environ.get("SLITHER_BROKER_BIN", "build/broker/slither-broker"))
REPS = int(os.environ.get("SLITHER_BENCH_REPS", "5"))
ARRAY = np.arange(64 * 1024 * 1024, dtype=np.float32)  # 256 MiB
MIB = ARRAY.nbytes / (1 << 20)


def start_broker(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    namespace = f"bench-{os.getpid()}-{secrets.token_hex(3)}"
    config = base / "slither.toml"
    config.write_text(textwrap.dedent("""\
        [[stores]]
        name = "bench"

        [[stores.tables]]
        name = "kv"
    """))
    log = open(base / "broker.log", "wb")
    proc = subprocess.Popen(
        [str(BROKER_BIN), "--config", str(config), "--runtime-dir", str(base / "run"),
         "--namespace", namespace], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            slither.connect(runtime_dir=base / "run", namespace=namespace, timeout=0.5).close()
            return proc, namespace
        except slither.BrokerUnavailable:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slither-broker did not start; see {base / 'broker.log'}")
            time.sleep(0.05)


def pinger(runtime_dir: str, namespace: str, stop, out) -> None:
    client = slither.connect(runtime_dir=runtime_dir, namespace=namespace)
    lat = []
    while not stop.is_set():
        t = time.perf_counter_ns()
        client.ping()
        lat.append((time.perf_counter_ns() - t) / 1e3)
        time.sleep(0.001)
    client.close()
    out.put(lat)


def memcpy_seconds() -> float:
    """Fresh shared memory (created, then faulted in by the copy), as a client would fill it."""
    t = time.perf_counter()
    shm = shared_memory.SharedMemory(create=True, size=ARRAY.nbytes)
    try:
        dst = np.ndarray(ARRAY.shape, dtype=ARRAY.dtype, buffer=shm.buf)
        np.copyto(dst, ARRAY)
        elapsed = time.perf_counter() - t
        del dst
    finally:
        shm.close()
        shm.unlink()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="slither-bench-large-") as tmp:
        base = Path(tmp)
        proc, namespace = start_broker(base)
        try:
            client = slither.connect(runtime_dir=base / "run", namespace=namespace)
            store = client.store("bench")
            ctx = mp.get_context("spawn")
            stop, out = ctx.Event(), ctx.Queue()
            ping = ctx.Process(target=pinger, args=(str(base / "run"), namespace, stop, out))
            ping.start()
            time.sleep(0.5)
            put_s, copy_s = [], []
            for _ in range(REPS):
                copy_s.append(memcpy_seconds())
                t = time.perf_counter()
                store.put("kv", "big", ARRAY)
                put_s.append(time.perf_counter() - t)
                # The replaced block is freed by the broker's reclaim timer; wait for it so
                # that every put finds the same room.
                deadline = time.monotonic() + 10
                while (client.stats()["stores"]["bench"]["bytes_retired"] != 0
                       and time.monotonic() < deadline):
                    time.sleep(0.02)
            stop.set()
            lat = sorted(out.get(timeout=30))
            ping.join(timeout=10)
            got = store.table("kv").view("big")
            assert got is not None and np.array_equal(np.asarray(got)[-4:], ARRAY[-4:])
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    put_rate = MIB / statistics.median(put_s)
    copy_rate = MIB / statistics.median(copy_s)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    print("| figure | median | unit |")
    print("|---|---:|---|")
    print(f"| put 256 MiB f32 (in place) | {put_rate:.0f} | MiB/s |")
    print(f"| memcpy 256 MiB into fresh shared memory | {copy_rate:.0f} | MiB/s |")
    print(f"| another client's ping p99 meanwhile ({len(lat)} pings) | {p99:.0f} | us |")
    print()
    print(f"BENCH py.put.256m {put_rate:.6g} MiB/s")
    print(f"RATIO py.put.256m.vs_memcpy {put_rate / copy_rate:.4g}")
    print(f"BENCH py.put.256m.ping_p99 {p99:.6g} us")


if __name__ == "__main__":
    sys.exit(main())
