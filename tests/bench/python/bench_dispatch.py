"""Dispatch benchmark from Python (issue 8, `scripts/bench.sh dispatch`), side by side.

Starts a slither-broker ($SLITHER_BROKER_BIN) with a pool of 2 Python workers
(`python -m slither.worker`, this interpreter) and measures, as medians of
SLITHER_BENCH_REPS (default 5) runs:

- items/s of a trivial handler over 200k small dicts, batch 64: Client.dispatch
  against multiprocessing.Pool.imap(chunksize=64), ProcessPoolExecutor.map
  (chunksize=64), mpire.WorkerPool.imap (chunk_size=64) and Ray tasks over
  batches of 64 (local, 2 CPUs), all with 2 worker processes;
- the same with ~20 µs of pure-Python work per item (against Pool.imap);
- items pulled from a 2,000,000-item generator of 1 KiB strings while the
  consumer pauses 2 s, and the driving process's peak RSS (each in a fresh process),
  ours against Pool.imap;
- the round trip of a one-item batch (one job, one item in flight) against a raw
  pyzmq ipc REQ/REP round trip between two processes.

Prints a markdown table, then BENCH/RATIO lines (RATIO > 1: slither is better).
$SLITHER_BENCH_CXX_REPORT, if set, is the output of the C++ broker bench: its
`BENCH dispatch.cxx.trivial` gives `RATIO dispatch.cxx.trivial.vs_pool_imap`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BROKER_BIN = Path(os.environ.get("SLITHER_BROKER_BIN", REPO / "build" / "broker" / "slither-broker"))
REPS = int(os.environ.get("SLITHER_BENCH_REPS", "5"))
N_TRIVIAL = 200_000
N_WORK = 40_000
BATCH = 64
IN_FLIGHT = 16
WORKERS = 2
PAUSE_ITEMS = 2_000_000
PAUSE_SECONDS = 2.0

sys.path.insert(0, str(HERE))
import dispatch_bench_handlers as handlers  # noqa: E402

FN = "dispatch_bench_handlers"
rows: list[tuple[str, str, float, str]] = []


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def record(case: str, system: str, value: float, unit: str) -> float:
    rows.append((case, system, value, unit))
    note(f"  {case:<28} {system:<34} {value:>14,.1f} {unit}")
    return value


def median_rate(run: Callable[[], int]) -> float:
    """Median items/s of `run()` (which returns the items it did) over REPS runs."""
    run()  # warm-up: imports, first batches
    samples = []
    for _ in range(REPS):
        t = time.perf_counter()
        n = run()
        samples.append(n / (time.perf_counter() - t))
    return statistics.median(samples)


def guarded(fn: Callable[[], float], what: str) -> float:
    try:
        return fn()
    except Exception as e:  # a baseline that cannot run here is reported, not fatal
        note(f"  {what}: not measured ({type(e).__name__}: {e})")
        return math.nan


def items_trivial(n: int) -> list[dict]:
    return [{"id": i, "name": "item", "score": 0.5} for i in range(n)]


# --- the broker ----------------------------------------------------------------------------

POOL_CONFIG = """
[[pools]]
name = "default"
size = {size}
python = "{python}"
pythonpath = ["{path}"]
"""


class Broker:
    def __init__(self, base: Path) -> None:
        import slither

        self.ns = f"bench-dispatch-{os.getpid()}-{secrets.token_hex(3)}"
        self.run_dir = base / "run"
        config = base / "slither.toml"
        config.write_text(POOL_CONFIG.format(size=WORKERS, python=sys.executable, path=HERE))
        self.log = open(base / "broker.log", "wb")
        self.proc = subprocess.Popen(
            [str(BROKER_BIN), "--config", str(config), "--runtime-dir", str(self.run_dir),
             "--namespace", self.ns], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client = slither.connect(runtime_dir=self.run_dir, namespace=self.ns)
                ws = self.client.stats()["dispatch"]["pools"]["default"]["workers"]
                if len(ws) >= WORKERS:
                    return
                self.client.close()
            except slither.SlitherError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the broker or its workers did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- throughput --------------------------------------------------------------------------


def throughput(broker: Broker, work: bool) -> dict[str, float]:
    n = N_WORK if work else N_TRIVIAL
    items = items_trivial(n)
    fn_ours = f"{FN}:{'work20us' if work else 'identity'}"
    fn_one = handlers.spin if work else handlers.one
    fn_batch = handlers.work_batch if work else handlers.one_batch
    case = "work20us" if work else "trivial"
    out: dict[str, float] = {}

    def ours() -> int:
        k = 0
        for _ in broker.client.dispatch(items, fn_ours, batch_size=BATCH, max_in_flight=IN_FLIGHT):
            k += 1
        assert k == n
        return k

    out["ours"] = record(case, "slither Client.dispatch", median_rate(ours), "items/s")

    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        def pool_imap() -> int:
            return sum(1 for _ in pool.imap(fn_one, items, chunksize=BATCH))

        out["pool_imap"] = record(case, "multiprocessing.Pool.imap", median_rate(pool_imap),
                                  "items/s")
    if work:
        return out

    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as ex:
        def ppe() -> int:
            return sum(1 for _ in ex.map(fn_one, items, chunksize=BATCH))

        out["ppe"] = record(case, "ProcessPoolExecutor.map", median_rate(ppe), "items/s")

    def mpire_rate() -> float:
        from mpire import WorkerPool

        # mpire unpacks dict items as keyword arguments: wrap each in a 1-tuple.
        args = [(x,) for x in items]
        with WorkerPool(n_jobs=WORKERS) as wp:
            def run() -> int:
                return sum(1 for _ in wp.imap(fn_one, args, chunk_size=BATCH))

            return median_rate(run)

    out["mpire"] = record(case, "mpire.WorkerPool.imap", guarded(mpire_rate, "mpire"), "items/s")

    def ray_rate() -> float:
        import ray

        ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        try:
            remote = ray.remote(fn_batch)
            batches = [items[i:i + BATCH] for i in range(0, n, BATCH)]

            def run() -> int:
                # Tasks over batches, at most IN_FLIGHT × WORKERS outstanding, as a
                # streaming user would submit them.
                refs, k = [], 0
                for b in batches:
                    refs.append(remote.remote(b))
                    if len(refs) >= IN_FLIGHT * WORKERS:
                        done, refs = ray.wait(refs, num_returns=1)
                        k += sum(len(r) for r in ray.get(done))
                k += sum(len(r) for r in ray.get(refs))
                assert k == n
                return k

            return median_rate(run)
        finally:
            ray.shutdown()

    out["ray"] = record(case, "Ray tasks (batches of 64)", guarded(ray_rate, "ray"), "items/s")
    return out


# --- the pause -----------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, reset by exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan


def pause_child(kind: str, runtime_dir: str, ns: str) -> None:
    """Runs in a fresh process: prints {"pulled": ..., "rss_mib": ...} as JSON."""
    pulled = 0

    def source():
        nonlocal pulled
        pad = "x" * 1014
        for i in range(PAUSE_ITEMS):
            pulled += 1
            yield f"{i:010d}{pad}"

    if kind == "ours":
        import slither

        client = slither.connect(runtime_dir=runtime_dir, namespace=ns)
        it = client.dispatch(source(), f"{FN}:identity", batch_size=BATCH,
                             max_in_flight=IN_FLIGHT)
    else:
        pool = multiprocessing.get_context("fork").Pool(WORKERS)
        it = pool.imap(handlers.one, source(), chunksize=BATCH)
    for _ in range(1000):
        next(it)
    before = pulled
    time.sleep(PAUSE_SECONDS)
    during = pulled - before
    print(json.dumps({"pulled": during, "rss_mib": peak_rss_mib()}), flush=True)
    # Pool.terminate() would first wait for its task thread to drain the generator.
    os._exit(0)


def pause(broker: Broker) -> dict[str, dict[str, float]]:
    out = {}
    for kind in ("ours", "pool_imap"):
        samples = []
        for _ in range(max(1, min(REPS, 3))):
            done = subprocess.run(
                [sys.executable, __file__, "--pause", kind, str(broker.run_dir), broker.ns],
                capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
        pulled = statistics.median(s["pulled"] for s in samples)
        rss = statistics.median(s["rss_mib"] for s in samples)
        system = "slither Client.dispatch" if kind == "ours" else "multiprocessing.Pool.imap"
        record("pulled_during_pause", system, pulled, "items")
        record("driver_peak_rss", system, rss, "MiB")
        out[kind] = {"pulled": pulled, "rss": rss}
    return out


# --- round trip ----------------------------------------------------------------------------


def rtt(broker: Broker) -> dict[str, float]:
    import itertools

    d = broker.client.dispatch(itertools.count(), f"{FN}:identity", batch_size=1,
                               max_in_flight=1)
    for _ in range(200):
        next(d)
    samples = []
    for _ in range(REPS):
        n = 2000
        t = time.perf_counter_ns()
        for _ in range(n):
            next(d)
        samples.append((time.perf_counter_ns() - t) / n / 1000)
    d.close()
    ours = record("rtt (one-item batch)", "slither Client.dispatch", statistics.median(samples),
                  "us")

    def zmq_rate() -> float:
        import zmq

        with tempfile.TemporaryDirectory() as tmp:
            ep = f"ipc://{tmp}/rep"
            server = subprocess.Popen([sys.executable, "-c", (
                "import zmq,sys\nctx=zmq.Context()\ns=ctx.socket(zmq.REP)\n"
                f"s.bind('{ep}')\nprint('up',flush=True)\n"
                "while True:\n  m=s.recv()\n  s.send(m)\n")], stdout=subprocess.PIPE, text=True)
            try:
                server.stdout.readline()
                ctx = zmq.Context()
                s = ctx.socket(zmq.REQ)
                s.connect(ep)
                for _ in range(200):
                    s.send(b"x")
                    s.recv()
                zs = []
                for _ in range(REPS):
                    n = 5000
                    t = time.perf_counter_ns()
                    for _ in range(n):
                        s.send(b"x")
                        s.recv()
                    zs.append((time.perf_counter_ns() - t) / n / 1000)
                s.close(0)
                ctx.term()
                return statistics.median(zs)
            finally:
                server.kill()
                server.wait()

    z = record("rtt (one-item batch)", "raw pyzmq ipc REQ/REP", guarded(zmq_rate, "pyzmq"), "us")
    return {"ours": ours, "zmq": z}


def cxx_trivial() -> float:
    report = os.environ.get("SLITHER_BENCH_CXX_REPORT")
    if not report or not Path(report).exists():
        return math.nan
    m = re.search(r"^BENCH dispatch\.cxx\.trivial ([0-9.eE+]+)", Path(report).read_text(), re.M)
    return float(m.group(1)) if m else math.nan


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="slither-bench-dispatch-") as tmp:
        broker = Broker(Path(tmp))
        try:
            note(f"## dispatch from Python ({WORKERS} workers, medians of {REPS})")
            triv = throughput(broker, work=False)
            work = throughput(broker, work=True)
            paused = pause(broker)
            r = rtt(broker)
        finally:
            broker.stop()
    cxx = cxx_trivial()
    if not math.isnan(cxx):
        rows.insert(0, ("trivial", "slither C++ driver (dispatch)", cxx, "items/s"))
    print("| case | system | median | unit |")
    print("|---|---|---:|---|")
    for case, system, value, unit in rows:
        print(f"| {case} | {system} | {value:,.1f} | {unit} |")
    print()

    def ratio(a: float, b: float) -> float:
        return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan

    if not math.isnan(cxx):
        print(f"RATIO dispatch.cxx.trivial.vs_pool_imap {ratio(cxx, triv['pool_imap']):.3f}")
    print(f"BENCH dispatch.py.trivial {triv['ours']:.0f} items/s")
    print(f"RATIO dispatch.py.trivial.vs_pool_imap {ratio(triv['ours'], triv['pool_imap']):.3f}")
    print(f"RATIO dispatch.py.trivial.vs_ppe {ratio(triv['ours'], triv['ppe']):.3f}")
    print(f"RATIO dispatch.py.trivial.vs_mpire {ratio(triv['ours'], triv['mpire']):.3f}")
    print(f"RATIO dispatch.py.trivial.vs_ray {ratio(triv['ours'], triv['ray']):.3f}")
    print(f"RATIO dispatch.work20us.vs_pool_imap {ratio(work['ours'], work['pool_imap']):.3f}")
    ours_p, pool_p = paused["ours"]["pulled"], paused["pool_imap"]["pulled"]
    print(f"BENCH dispatch.pulled_during_pause {ours_p:.0f} items")
    print(f"RATIO dispatch.pulled_during_pause.vs_pool_imap {ratio(pool_p, max(ours_p, 1)):.3f}")
    print(f"BENCH dispatch.driver_rss {paused['ours']['rss']:.1f} MiB")
    print(f"BENCH dispatch.py.rtt {r['ours']:.1f} us")
    print(f"RATIO dispatch.py.rtt.vs_zmq {ratio(r['zmq'], r['ours']):.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--pause":
        pause_child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
