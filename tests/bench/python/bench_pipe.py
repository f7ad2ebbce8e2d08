"""The Pipe driven from Python (issue 9, `scripts/bench.sh pipe`), against the same
work written with multiprocessing.Pool.imap plus plain Python for the local stages.

Starts a slither-broker ($SLITHER_BROKER_BIN) with a pool of 2 Python workers and
runs, over 100k small dicts, as medians of SLITHER_BENCH_REPS (default 5) runs:

- slither: ``Pipe.local("prepare") -> .python("predict", batch 64) ->
  .router("route", accept / review)``, ``pipe.run(client, items)``;
- the baseline: ``for r in pool.imap(predict, (prepare(x) for x in items),
  chunksize=64)``, routing each result with the same predicates into the same
  buckets, on a ``Pool(2)`` started before its timer.

Both check that every item lands in the right bucket. Prints a markdown table,
then ``BENCH pipe.py_driver <items/s> items/s`` and ``RATIO
pipe.py_driver.vs_pool_imap <x>`` (> 1: the pipe is faster).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipe_bench_handlers as h  # noqa: E402
from bench_dispatch import REPS, WORKERS, Broker, median_rate, note, record, rows  # noqa: E402

import slither  # noqa: E402

N = 100_000
BATCH = 64
IN_FLIGHT = 8


def expected(items: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"accept": 0, "review": 0, "default": 0}
    for x in items:
        r = h.predict(h.prepare(x))
        counts["accept" if h.accept(r) else "review" if h.review(r) else "default"] += 1
    return counts


def main() -> None:
    items = [{"id": i, "text": "item"} for i in range(N)]
    want = expected(items)
    pipe = (slither.Pipe("bench")
            .local("prepare", h.prepare)
            .python("predict", "pipe_bench_handlers:predict_batch", batch_size=BATCH,
                    max_in_flight=IN_FLIGHT)
            .router("route", [(h.accept, "accept"), (h.review, "review")])
            .output("accept").output("review"))

    with tempfile.TemporaryDirectory(prefix="slither-bench-pipe-") as tmp:
        broker = Broker(Path(tmp))
        try:
            note(f"## the pipe driven from Python ({WORKERS} workers, {N} items, medians of {REPS})")

            def ours() -> int:
                out = pipe.run(broker.client, items)
                assert {k: len(v) for k, v in out.items()} == want
                return N

            slither_rate = record("native→python→router", "slither Pipe.run", median_rate(ours),
                                  "items/s")
        finally:
            broker.stop()

    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        def pool_imap() -> int:
            buckets: dict[str, list[Any]] = {"accept": [], "review": [], "default": []}
            for r in pool.imap(h.predict, (h.prepare(x) for x in items), chunksize=BATCH):
                buckets["accept" if h.accept(r) else "review" if h.review(r) else "default"].append(r)
            assert {k: len(v) for k, v in buckets.items()} == want
            return N

        pool_rate = record("native→python→router", "Pool.imap + plain Python", median_rate(pool_imap),
                           "items/s")

    print("| case | system | median | unit |")
    print("|---|---|---:|---|")
    for case, system, value, unit in rows:
        print(f"| {case} | {system} | {value:,.1f} | {unit} |")
    print()
    print(f"BENCH pipe.py_driver {slither_rate:.0f} items/s")
    print(f"RATIO pipe.py_driver.vs_pool_imap {slither_rate / pool_rate:.3f}")


if __name__ == "__main__":
    main()
