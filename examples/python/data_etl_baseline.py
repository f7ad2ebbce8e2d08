"""data_etl in pure Python: 15,000 rows over 3 schema phases, hot-swapped.

unsafe_threaded: one shared schema, replaced as soon as a phase's rows are
handed to the threads (the naive hot swap: rows still queued read the next
schema); safe_python: each phase ends before the swap,
and each batch reads one schema snapshot under a lock. No process-pool mode:
the work per row is too light to be CPU-bound.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from baseline_harness import chunks, main
from data_etl_worker import transform

BATCH = 100


def outcome(results: list) -> dict:
    return {"results": results}


def unsafe_threaded(data: dict, workers: int) -> dict:
    shared = {"schema": None}
    results: list = []

    def work(batch: list) -> None:
        for row in batch:
            results.append(transform(row, shared["schema"]))

    with ThreadPoolExecutor(workers) as ex:
        futures = []
        for phase, rows in enumerate(data["phases"]):
            shared["schema"] = data["schemas"][phase]
            futures += [ex.submit(work, b) for b in chunks(rows, BATCH)]
        for f in futures:
            f.result()
    return outcome(results)


def safe_python(data: dict, workers: int) -> dict:
    lock = threading.Lock()
    current = {"schema": None}

    def work(batch: list) -> list:
        with lock:
            schema = current["schema"]
        return [transform(row, schema) for row in batch]

    results: list = []
    with ThreadPoolExecutor(workers) as ex:
        for phase, rows in enumerate(data["phases"]):
            with lock:
                current["schema"] = data["schemas"][phase]
            for part in ex.map(work, chunks(rows, BATCH)):
                results.extend(part)
    return outcome(results)


def check(data: dict, out: dict) -> dict[str, bool]:
    return audit(data, out["results"])


def audit(data: dict, results: list) -> dict[str, bool]:
    """The data_etl invariants over results (dicts as `transform` makes)."""
    phase_of = {row["id"]: p + 1 for p, rows in enumerate(data["phases"]) for row in rows}
    ids = [r["id"] for r in results]
    invalid = sorted(r["id"] for r in results if not r["valid"])
    total = sum(r["amount_cents"] for r in results if r["valid"])
    return {
        "every row accounted for once": sorted(ids) == sorted(phase_of),
        "every row saw its phase's schema": all(
            phase_of.get(r["id"]) == r["schema_version"] for r in results),
        "invalid rows are the broken ones": invalid == sorted(data["expected"]["invalid"]),
        "total of valid amounts": total == data["expected"]["total_cents"],
    }


MODES = {"unsafe_threaded": unsafe_threaded, "safe_python": safe_python}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODES, check, lambda data: sum(len(p) for p in data["phases"])))
