"""Python side of `scripts/bench.sh codec` (issue 12): slither's codec against
pickle (protocol 5) and orjson on the same batches, and a Store `get` of a row
against `pickle.loads` of the same row, all measured in this run.

Prints a markdown table of medians, then BENCH/RATIO lines (RATIO > 1 means
slither is better). Run with the project's .venv python after
`pip install -r tests/bench/codec/requirements.txt`; the row case starts its
own slither-broker ($SLITHER_BROKER_BIN, else build/broker/slither-broker).

Environment: SLITHER_BENCH_REPS (default 7), SLITHER_BENCH_SECONDS per repetition (0.2).
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

import slither

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from bench_broker import BenchBroker  # noqa: E402 - the shared start-up helper, found above

REPS = int(os.environ.get("SLITHER_BENCH_REPS", "7"))
REP_SECONDS = float(os.environ.get("SLITHER_BENCH_SECONDS", "0.2"))

# The two batches.
ITEMS3 = [{"v": i, "name": f"name-{i}", "score": i * 0.5} for i in range(64)]
ITEMS1 = [{"v": i} for i in range(64)]
# A realistic stored row: six fields of the usual kinds.
ROW6 = {"id": 42, "name": "user-0042", "email": "user42@example.com", "score": 0.73,
        "active": True, "tags": ["admin", "beta"]}

rows: list[tuple[str, str, float, str]] = []  # (case, system, median, unit)


def per_op_ns(run: Callable[[int], None]) -> float:
    """Median ns per call of `run(n)` (n calls) over REPS repetitions of ~REP_SECONDS."""
    n = 1
    while True:
        t = time.perf_counter_ns()
        run(n)
        elapsed = time.perf_counter_ns() - t
        if elapsed >= REP_SECONDS * 1e9 * 0.5 or n >= 1 << 24:
            break
        n = max(n * 2, int(n * REP_SECONDS * 1e9 / max(elapsed, 1)))
    samples = []
    for _ in range(REPS):
        t = time.perf_counter_ns()
        run(n)
        samples.append((time.perf_counter_ns() - t) / n)
    return statistics.median(samples)


def looped(fn: Callable[[], object]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def record(case: str, system: str, value: float, unit: str) -> float:
    rows.append((case, system, value, unit))
    return value


def bench_batch(label: str, batch: list) -> dict[str, tuple[float, float, int]]:
    """ns per item to encode and decode `batch`, and its size, for each system."""
    out = {}
    systems = {
        "slither": (slither.encode, slither.decode),
        "pickle": (lambda v: pickle.dumps(v, protocol=5), pickle.loads),
        "orjson": (orjson.dumps, orjson.loads),
    }
    for name, (enc, dec) in systems.items():
        data = enc(batch)
        assert dec(data) == batch, name
        e = per_op_ns(looped(lambda: enc(batch))) / len(batch)
        d = per_op_ns(looped(lambda: dec(data))) / len(batch)
        record(f"{label}: encode", name, e, "ns/item")
        record(f"{label}: decode", name, d, "ns/item")
        record(f"{label}: size", name, len(data), "bytes")
        out[name] = (e, d, len(data))
    return out


ROWS_CONFIG = """\
    [[stores]]
    name = "bench"

    [[stores.tables]]
    name = "rows"
    kind = "set"
"""


def bench_row_get() -> tuple[float, float]:
    base = Path(tempfile.mkdtemp(prefix="slither-codecbench-"))
    os.chmod(base, 0o700)
    broker = BenchBroker(base, ROWS_CONFIG, prefix="codecbench", timeout=0.5)
    try:
        store = broker.client.store("bench")
        store.put("rows", "user-0042", ROW6)
        get = store.get
        assert get("rows", "user-0042") == ROW6
        ours = record("row of 6 fields", "slither store.get", per_op_ns(looped(lambda: get("rows", "user-0042"))), "ns")
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    pickled = pickle.dumps(ROW6, protocol=5)
    loads = pickle.loads
    theirs = record("row of 6 fields", "pickle.loads", per_op_ns(looped(lambda: loads(pickled))), "ns")
    return ours, theirs


def report(three: dict, one: dict, get_ns: float, loads_ns: float) -> None:
    print(f"## bench: codec, Python (medians of {REPS} repetitions)\n")
    print("| case | system | median | unit |")
    print("|---|---|---:|---|")
    for case, system, v, unit in rows:
        print(f"| {case} | {system} | {v:,.0f} | {unit} |")
    print()
    e, d, size = three["slither"]
    pe, pd, psize = three["pickle"]
    oe, od, _ = three["orjson"]
    print(f"BENCH codec.py.encode64 {e:.0f} ns")
    print(f"RATIO codec.py.encode64.vs_pickle {pe / e:.2f}")
    print(f"RATIO codec.py.encode64.vs_orjson {oe / e:.2f}")
    print(f"BENCH codec.py.decode64 {d:.0f} ns")
    print(f"RATIO codec.py.decode64.vs_pickle {pd / d:.2f}")
    print(f"RATIO codec.py.decode64.vs_orjson {od / d:.2f}")
    print(f"RATIO codec.py.size64.vs_pickle {psize / size:.2f}")
    e1, d1, _ = one["slither"]
    pe1, pd1, _ = one["pickle"]
    print(f"BENCH codec.py.encode64.v {e1:.0f} ns")
    print(f"RATIO codec.py.encode64.v.vs_pickle {pe1 / e1:.2f}")
    print(f"BENCH codec.py.decode64.v {d1:.0f} ns")
    print(f"RATIO codec.py.decode64.v.vs_pickle {pd1 / d1:.2f}")
    print(f"BENCH py.get.row6 {get_ns:.0f} ns")
    print(f"RATIO py.get.row6.vs_pickle_loads {loads_ns / get_ns:.2f}")


def main() -> None:
    three = bench_batch('64 x {"v", "name", "score"}', ITEMS3)
    one = bench_batch('64 x {"v"}', ITEMS1)
    get_ns, loads_ns = bench_row_get()
    report(three, one, get_ns, loads_ns)


if __name__ == "__main__":
    sys.exit(main())
