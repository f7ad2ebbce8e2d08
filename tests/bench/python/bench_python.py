"""Python-side benchmark of slither against its baselines (issue 4, `scripts/bench.sh python`).

Run with the project's .venv python after `pip install -r tests/bench/python/requirements.txt`.
It starts its own slither-broker ($SLITHER_BROKER_BIN, else build/broker/slither-broker)
and redis-server (on a unix socket in a temp dir), measures every case several times
and prints a markdown table of medians, then the BENCH/RATIO lines. RATIO > 1 means
slither is better. A baseline that cannot run here prints `nan` with a note on stderr.

Environment: SLITHER_BENCH_REPS (default 5), SLITHER_BENCH_SECONDS per repetition (0.2).

In-process cases (gets from our store, dict, lmdb, UltraDict, views) are timed in CPU time
of this process, which other processes on a loaded machine do not add to; cases that wait
for another process (the broker, redis, Ray, a ZeroMQ peer) in wall time, which counts the
wait. The get cases whose ratio is reported (ours, dict.get) run interleaved, one repetition
of each in turn, so load that comes and goes meets both alike; their RATIO is the median of
the per-repetition ratios.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import slither
from bench_broker import BenchBroker

REPS = int(os.environ.get("SLITHER_BENCH_REPS", "5"))
REP_SECONDS = float(os.environ.get("SLITHER_BENCH_SECONDS", "0.2"))

SMALL = b"v" * 64  # the 64-byte value of the get/put cases
BIG = np.random.default_rng(0).random(4 * 1024 * 1024, dtype=np.float32)  # 16 MiB
KIB = np.random.default_rng(1).random(256, dtype=np.float32)  # 1 KiB
BATCH = 1000  # items per put_many / per pipeline

rows: list[tuple[str, str, float, str]] = []  # (case, system, median, unit)
paired_ratios: dict[str, float] = {}  # RATIO name -> median of per-repetition ratios


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


Clock = Callable[[], int]
WALL: Clock = time.perf_counter_ns  # cases that wait for another process
CPU: Clock = time.process_time_ns  # in-process cases: immune to other processes' load


def calibrate(run: Callable[[int], None], clock: Clock, min_n: int = 1) -> int:
    """An n for which `run(n)` lasts about REP_SECONDS."""
    n = min_n
    while True:
        t = clock()
        run(n)
        elapsed = clock() - t
        if elapsed >= REP_SECONDS * 1e9 * 0.5 or n >= 1 << 24:
            return n
        n = max(n * 2, int(n * REP_SECONDS * 1e9 / max(elapsed, 1)))


def sample_ns(run: Callable[[int], None], n: int, clock: Clock) -> float:
    t = clock()
    run(n)
    return (clock() - t) / n


def per_op_ns(run: Callable[[int], None], min_n: int = 1, clock: Clock = WALL) -> float:
    """Median ns per operation of `run(n)` (n operations) over REPS repetitions of ~REP_SECONDS."""
    n = calibrate(run, clock, min_n)
    return statistics.median(sample_ns(run, n, clock) for _ in range(REPS))


def paired_ns(ours: Callable[[int], None], base: Callable[[int], None],
              clock: Clock = CPU) -> tuple[float, float, float]:
    """(ours, base, ratio): median ns per operation of each, measured in turn in every
    repetition, and the median over repetitions of base/ours (> 1: ours is faster)."""
    n_ours, n_base = calibrate(ours, clock), calibrate(base, clock)
    a, b = [], []
    for _ in range(REPS):
        a.append(sample_ns(ours, n_ours, clock))
        b.append(sample_ns(base, n_base, clock))
    ratio = statistics.median(y / x for x, y in zip(a, b))
    return statistics.median(a), statistics.median(b), ratio


def record(case: str, system: str, value: float, unit: str) -> float:
    rows.append((case, system, value, unit))
    return value


def guarded(name: str, fn: Callable[[], float]) -> float:
    """fn(), or nan with a note when the baseline cannot run here."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a missing baseline must not stop the others
        note(f"bench: {name} unavailable: {type(e).__name__}: {e}")
        return math.nan


# ---------------------------------------------------------------- servers


BENCH_CONFIG = """\
    [[stores]]
    name = "bench"
    initial_segment_bytes = 268435456

    [[stores.tables]]
    name = "kv"
    kind = "set"
    initial_capacity = 65536
"""


class Redis:
    def __init__(self, base: Path) -> None:
        import redis

        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.socket = base / "redis.sock"
        self.proc = subprocess.Popen(
            [server, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        self.r = redis.Redis(unix_socket_path=str(self.socket))
        self.r.ping()

    def stop(self) -> None:
        self.r.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------- cases


def bench_get(store: slither.Store, redis: Redis | None, base: Path) -> None:
    store.put("kv", "small", SMALL)
    get = store.get

    def ours(n: int) -> None:
        for _ in range(n):
            get("kv", "small")

    d = {"small": SMALL}
    dget = d.get

    def with_dict(n: int) -> None:
        for _ in range(n):
            dget("small")

    ours_ns, dict_ns, paired_ratios["py.get.vs_dict"] = paired_ns(ours, with_dict)
    record("get 64 B", "slither store.get", ours_ns, "ns")
    record("get 64 B", "dict.get", dict_ns, "ns")

    def lmdb_get() -> float:
        import lmdb

        env = lmdb.open(str(base / "lmdb-get"), map_size=1 << 28)
        with env.begin(write=True) as txn:
            txn.put(b"small", SMALL)
        with env.begin(buffers=True) as txn:
            tget = txn.get

            def run(n: int) -> None:
                for _ in range(n):
                    tget(b"small")

            return per_op_ns(run, clock=CPU)

    record("get 64 B", "lmdb txn.get(buffers=True)", guarded("lmdb", lmdb_get), "ns")

    def redis_get() -> float:
        if redis is None:
            raise RuntimeError("redis-server is not running")
        redis.r.set("small", SMALL)
        rget = redis.r.get

        def run(n: int) -> None:
            for _ in range(n):
                rget("small")

        return per_op_ns(run)

    record("get 64 B", "redis GET (unix socket)", guarded("redis", redis_get), "ns")

    def ultradict_get() -> float:
        from UltraDict import UltraDict

        ud = UltraDict(name=f"slbench{os.getpid()}", create=True, buffer_size=1 << 20)
        try:
            ud["small"] = SMALL

            def run(n: int) -> None:
                for _ in range(n):
                    ud["small"]

            return per_op_ns(run, clock=CPU)
        finally:
            ud.unlink()

    record("get 64 B", "UltraDict[key]", guarded("UltraDict", ultradict_get), "ns")


def bench_get_many(store: slither.Store) -> None:
    """BATCH keys of 64 B values read with one get_many against a loop of get, per key."""
    keys = [f"many:{i:06d}" for i in range(BATCH)]
    store.put_many("kv", {k: SMALL for k in keys})
    get, get_many = store.get, store.get_many

    def ours(n: int) -> None:
        for _ in range(n):
            get_many("kv", keys)

    def one_by_one(n: int) -> None:
        for _ in range(n):
            for k in keys:
                get("kv", k)

    many_ns, loop_ns, paired_ratios["py.get_many.vs_get"] = paired_ns(ours, one_by_one)
    record(f"get_many ({BATCH} x 64 B), per key", "slither store.get_many", many_ns / BATCH, "ns")
    record(f"get_many ({BATCH} x 64 B), per key", "slither store.get in a loop", loop_ns / BATCH,
           "ns")


def bench_view(store: slither.Store, redis: Redis | None, base: Path) -> None:
    store.put("kv", "big", BIG)
    store.put("kv", "kib", KIB)
    view = store.view

    def ours(key: str) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                view("kv", key)

        return run

    record("view 16 MiB f32", "slither store.view", per_op_ns(ours("big"), clock=CPU) / 1e3, "us")
    record("view 1 KiB f32", "slither store.view", per_op_ns(ours("kib"), clock=CPU) / 1e3, "us")

    def lmdb_view() -> float:
        import lmdb

        env = lmdb.open(str(base / "lmdb-view"), map_size=1 << 28)
        with env.begin(write=True) as txn:
            txn.put(b"big", BIG.tobytes())
        with env.begin(buffers=True) as txn:

            def run(n: int) -> None:
                for _ in range(n):
                    np.frombuffer(txn.get(b"big"), dtype=np.float32)

            return per_op_ns(run, clock=CPU) / 1e3

    record("view 16 MiB f32", "lmdb get + np.frombuffer", guarded("lmdb", lmdb_view), "us")

    def redis_view() -> float:
        if redis is None:
            raise RuntimeError("redis-server is not running")
        redis.r.set("big", BIG.tobytes())

        def run(n: int) -> None:
            for _ in range(n):
                np.frombuffer(redis.r.get("big"), dtype=np.float32)

        return per_op_ns(run) / 1e3

    record("view 16 MiB f32", "redis GET + np.frombuffer", guarded("redis", redis_view), "us")
    record("view 16 MiB f32", "ray.get (put by another process)", guarded("ray", ray_view), "us")


def ray_view() -> float:
    import ray

    ray.init(num_cpus=1, object_store_memory=128 * 1024 * 1024, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote
        def make() -> np.ndarray:  # runs in a Ray worker process, which puts the array
            return np.random.default_rng(0).random(4 * 1024 * 1024, dtype=np.float32)

        ref = make.remote()
        ray.get(ref, timeout=120)

        def run(n: int) -> None:
            for _ in range(n):
                ray.get(ref)

        return per_op_ns(run) / 1e3
    finally:
        ray.shutdown()


ZMQ_ECHO = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.REP)
s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    s.send(s.recv())
"""


def zmq_rtt(base: Path) -> float:
    import zmq

    endpoint = f"ipc://{base / 'echo.sock'}"
    echo = subprocess.Popen([sys.executable, "-c", ZMQ_ECHO, endpoint], stdout=subprocess.PIPE)
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
        ctx = zmq.Context()
        s = ctx.socket(zmq.REQ)
        s.connect(endpoint)

        def run(n: int) -> None:
            for _ in range(n):
                s.send(SMALL)
                s.recv()

        ns = per_op_ns(run)
        s.close(linger=0)
        ctx.term()
        return ns
    finally:
        echo.kill()
        echo.wait()


def bench_put(store: slither.Store, redis: Redis | None, base: Path) -> None:
    put = store.put

    def ours(n: int) -> None:
        for _ in range(n):
            put("kv", "p", SMALL)

    record("put 64 B (sync round trip)", "slither store.put", 1e9 / per_op_ns(ours), "ops/s")

    def redis_set() -> float:
        if redis is None:
            raise RuntimeError("redis-server is not running")
        rset = redis.r.set

        def run(n: int) -> None:
            for _ in range(n):
                rset("p", SMALL)

        return 1e9 / per_op_ns(run)

    record("put 64 B (sync round trip)", "redis SET", guarded("redis", redis_set), "ops/s")
    record("put 64 B (sync round trip)", "raw ZeroMQ ipc REQ/REP",
           1e9 / guarded("pyzmq", lambda: zmq_rtt(base)), "ops/s")

    batch = {f"m{i}": SMALL for i in range(BATCH)}

    def ours_many(n: int) -> None:
        for _ in range(n):
            store.put_many("kv", batch)

    record(f"put_many ({BATCH} x 64 B)", "slither store.put_many",
           1e9 * BATCH / per_op_ns(ours_many), "items/s")

    def redis_pipelined() -> float:
        if redis is None:
            raise RuntimeError("redis-server is not running")

        def run(n: int) -> None:
            for _ in range(n):
                pipe = redis.r.pipeline(transaction=False)
                for k, v in batch.items():
                    pipe.set(k, v)
                pipe.execute()

        return 1e9 * BATCH / per_op_ns(run)

    record(f"put_many ({BATCH} x 64 B)", "redis pipelined SET", guarded("redis", redis_pipelined),
           "items/s")


# ---------------------------------------------------------------- report


def value(case: str, system: str) -> float:
    return next(v for c, s, v, _ in rows if c == case and s == system)


def ratio(num: float, den: float) -> str:
    r = num / den if den and not math.isnan(num) and not math.isnan(den) else math.nan
    return "nan" if math.isnan(r) else f"{r:.2f}"


def report() -> None:
    print(f"\n## Python client benchmark (median of {REPS} repetitions)\n")
    print("| case | system | median | unit |")
    print("|---|---|---:|---|")
    for case, system, v, unit in rows:
        shown = "nan" if math.isnan(v) else f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
        print(f"| {case} | {system} | {shown} | {unit} |")
    print()

    get_ns = value("get 64 B", "slither store.get")
    print(f"BENCH py.get {get_ns:.0f} ns")
    print(f"BENCH py.get.hot64 {get_ns:.0f} ns")  # the same case: a hot key, a 64-byte value
    print(f"RATIO py.get.vs_dict {paired_ratios['py.get.vs_dict']:.2f}")
    print(f"RATIO py.get.vs_lmdb {ratio(value('get 64 B', 'lmdb txn.get(buffers=True)'), get_ns)}")
    print(f"RATIO py.get.vs_redis {ratio(value('get 64 B', 'redis GET (unix socket)'), get_ns)}")
    many_ns = value(f"get_many ({BATCH} x 64 B), per key", "slither store.get_many")
    print(f"BENCH py.get_many {many_ns:.0f} ns")
    print(f"RATIO py.get_many.vs_get {paired_ratios['py.get_many.vs_get']:.2f}")
    view_us = value("view 16 MiB f32", "slither store.view")
    print(f"BENCH py.view.16m {view_us:.2f} us")
    print(f"BENCH py.view.1k {value('view 1 KiB f32', 'slither store.view'):.2f} us")
    print(f"RATIO py.view.vs_lmdb {ratio(value('view 16 MiB f32', 'lmdb get + np.frombuffer'), view_us)}")
    print(f"RATIO py.view.vs_redis "
          f"{ratio(value('view 16 MiB f32', 'redis GET + np.frombuffer'), view_us)}")
    print(f"RATIO py.view.vs_ray "
          f"{ratio(value('view 16 MiB f32', 'ray.get (put by another process)'), view_us)}")
    print(f"RATIO py.get.vs_ultradict {ratio(value('get 64 B', 'UltraDict[key]'), get_ns)}")
    put_case = "put 64 B (sync round trip)"
    put_ops = value(put_case, "slither store.put")
    print(f"BENCH py.put.sync {put_ops:.0f} ops/s")
    print(f"RATIO py.put.sync.vs_redis {ratio(put_ops, value(put_case, 'redis SET'))}")
    # ZeroMQ round-trip time / our put time = our ops/s / ZeroMQ's ops/s.
    print(f"RATIO py.put.sync.vs_zmq_rtt {ratio(put_ops, value(put_case, 'raw ZeroMQ ipc REQ/REP'))}")
    many_case = f"put_many ({BATCH} x 64 B)"
    many = value(many_case, "slither store.put_many")
    print(f"BENCH py.put_many {many:.0f} items/s")
    print(f"RATIO py.put_many.vs_redis_pipelined {ratio(many, value(many_case, 'redis pipelined SET'))}")


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="slither-pybench-"))
    os.chmod(base, 0o700)
    broker = BenchBroker(base, BENCH_CONFIG)
    try:
        redis = Redis(base)
    except Exception as e:  # noqa: BLE001 - reported, and its cases print nan
        note(f"bench: redis unavailable: {e}")
        redis = None
    try:
        store = broker.client.store("bench")
        bench_get(store, redis, base)
        bench_get_many(store)
        bench_view(store, redis, base)
        bench_put(store, redis, base)
    finally:
        if redis is not None:
            redis.stop()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    report()


if __name__ == "__main__":
    main()
