"""The pure-Python baselines' harness.

Runs one example's work in the original's modes at the same parallelism as
Slither's pool: `unsafe_threaded` (naive shared state across threads),
`safe_python` (thread-local state or locks, then a merge) and, where the
work is CPU-bound, `multiprocessing_pool` (a `multiprocessing.Pool`). Each
mode is timed alone and its output checked by the example's own invariant
checks; the results go to a JSON file that slither-example reads and prints
beside Slither's.

A broken invariant in `unsafe_threaded` is the point of that mode; in the
other modes it is a bug in this harness, and slither-example fails on it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from example_common import read_data

T = TypeVar("T")

#: A mode: takes the example's data and the parallelism, returns its output.
Mode = Callable[[Any, int], Any]
#: An invariant check: takes the data and a mode's output, returns
#: {invariant name: held}.
Check = Callable[[Any, Any], dict]



@dataclass
class PoolMode:
    """A `multiprocessing.Pool` mode. The pool's processes start before the
    timer, as Slither's workers do before its run is timed; `run` gets the
    data and the pool."""

    run: Callable[[Any, Any], Any]
    initializer: Callable[..., None] | None = None
    #: The initializer's arguments, from the data.
    initargs: Callable[[Any], tuple] = lambda data: ()


def _ready(_: int) -> int:
    time.sleep(0.01)  # long enough that every process gets a task
    return os.getpid()


@dataclass
class ModeResult:
    """One mode's run: what slither-example prints and reports."""

    mode: str
    seconds: float
    items: int
    invariants: dict[str, bool] = field(default_factory=dict)
    peak_rss_mib: float = 0.0

    @property
    def held(self) -> bool:
        return all(self.invariants.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["throughput"] = self.items / self.seconds if self.seconds > 0 else 0.0
        out["held"] = self.held
        return out


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` cut into lists of `size` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_mode(name: str, mode: Mode | PoolMode, check: Check, data: Any, workers: int,
             items: int) -> ModeResult:
    """Times `mode` over `data` and checks its output."""
    if isinstance(mode, PoolMode):
        with multiprocessing.Pool(workers, mode.initializer, mode.initargs(data)) as pool:
            # Every process up and answering before the clock starts.
            for _ in range(100):
                if len(set(pool.map(_ready, range(2 * workers), chunksize=1))) == workers:
                    break
            start = time.perf_counter()
            output = mode.run(data, pool)
            seconds = time.perf_counter() - start
    else:
        start = time.perf_counter()
        output = mode(data, workers)
        seconds = time.perf_counter() - start
    invariants = {k: bool(v) for k, v in check(data, output).items()}
    return ModeResult(name, seconds, items, invariants)


def peak_rss_mib() -> float:
    """The peak resident memory of this process and of its waited-for children."""
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kib, children_kib) / 1024


def run_alone(script: str, args: argparse.Namespace, mode: str) -> dict:
    """Runs one mode in a fresh interpreter, so that no mode inherits another's
    warm caches, threads or memory peak."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = [sys.executable, script, "--data", args.data, "--workers", str(args.workers),
                "--modes", mode, "--out", out.name]
        done = subprocess.run(argv, check=False)
        if done.returncode != 0:
            raise SystemExit(f"baseline mode {mode} failed (exit status {done.returncode})")
        return json.loads(Path(out.name).read_text(encoding="utf-8"))[0]


def main(
    doc: str | None, modes: dict[str, Mode | PoolMode], check: Check, count: Callable[[Any], int]
) -> int:
    """The command line of one example's baselines:
    `--data FILE --workers N [--modes a,b] [--out FILE]`. Each mode runs in
    its own process when several are asked for."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--data", required=True, help="the data file the example's generator wrote")
    ap.add_argument("--workers", type=int, default=2,
                    help="threads or processes (Slither's pool size)")
    ap.add_argument("--modes", default=",".join(modes),
                    help=f"comma-separated, of: {', '.join(modes)}")
    ap.add_argument("--out", help="write the results here as JSON (default: stdout)")
    args = ap.parse_args()
    if args.workers < 1:
        ap.error(f"--workers must be at least 1 (got {args.workers})")
    chosen = [m for m in args.modes.split(",") if m]
    unknown = [m for m in chosen if m not in modes]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(modes)}")

    results = []
    if len(chosen) == 1:
        data = read_data(args.data)
        r = run_mode(chosen[0], modes[chosen[0]], check, data, args.workers, count(data))
        r.peak_rss_mib = round(peak_rss_mib(), 1)
        broken = [k for k, held in r.invariants.items() if not held]
        state = "held" if not broken else "BROKEN: " + ", ".join(broken)
        print(f"[baseline] {r.mode}: {r.seconds:.3f} s, invariants {state}", file=sys.stderr)
        results.append(r.as_dict())
    else:
        results = [run_alone(sys.argv[0], args, m) for m in chosen]
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0
