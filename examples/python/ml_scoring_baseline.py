"""ml_scoring in pure Python: two sessions train and score concurrently.

unsafe_threaded: one shared "current model" that a batch retrains when it
belongs to the other session (a global swapped under the threads' feet);
safe_python: a model per session, trained once under a lock;
multiprocessing_pool: each process trains and keeps a model per session.
Batches of both sessions interleave, as two concurrent sessions' would.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from baseline_harness import PoolMode, chunks, main
from ml_scoring_data import features
from ml_scoring_worker import predict, train

BATCH = 50


def batches(data: dict) -> list[tuple[str, list]]:
    """Both sessions' batches, interleaved."""
    per_session = {s: chunks([r for r in data["records"] if r["session"] == s], BATCH)
                   for s in data["sessions"]}
    out = []
    for i in range(max(len(b) for b in per_session.values())):
        out += [(s, b[i]) for s, b in per_session.items() if i < len(b)]
    return out


def score_batch(model, batch: list) -> dict:
    rows = predict(model, [features(r["raw"]) for r in batch])
    return {r["id"]: (label, model.session_) for r, (label, _) in zip(batch, rows)}


def unsafe_threaded(data: dict, workers: int) -> dict:
    current: dict = {"session": None, "model": None}
    predictions: dict = {}

    def work(task: tuple[str, list]) -> None:
        session, batch = task
        if current["session"] != session:
            s = data["sessions"][session]
            current["model"] = train(s["X"], s["y"], session)
            current["session"] = session
        predictions.update(score_batch(current["model"], batch))

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(work, batches(data)))
    return predictions


def safe_python(data: dict, workers: int) -> dict:
    lock = threading.Lock()
    models: dict = {}

    def work(task: tuple[str, list]) -> dict:
        session, batch = task
        with lock:
            if session not in models:
                s = data["sessions"][session]
                models[session] = train(s["X"], s["y"], session)
            model = models[session]
        return score_batch(model, batch)

    predictions: dict = {}
    with ThreadPoolExecutor(workers) as ex:
        for part in ex.map(work, batches(data)):
            predictions.update(part)
    return predictions


_process_models: dict = {}
_process_sessions: dict = {}


def _pool_init(sessions: dict) -> None:
    _process_sessions.update(sessions)


def _pool_work(task: tuple[str, list]) -> dict:
    session, batch = task
    if session not in _process_models:
        s = _process_sessions[session]
        _process_models[session] = train(s["X"], s["y"], session)
    return score_batch(_process_models[session], batch)


def multiprocessing_pool(data: dict, pool) -> dict:
    predictions: dict = {}
    for part in pool.imap(_pool_work, batches(data)):
        predictions.update(part)
    return predictions


def reference(data: dict) -> dict:
    models = {s: train(d["X"], d["y"], s) for s, d in data["sessions"].items()}
    out: dict = {}
    for session, batch in batches(data):
        out.update(score_batch(models[session], batch))
    return out


def check(data: dict, out: dict) -> dict[str, bool]:
    ref = reference(data)
    session_of = {r["id"]: r["session"] for r in data["records"]}
    return {
        "every record scored once": sorted(out) == sorted(session_of),
        "each session's records scored by its own model": all(
            model_session == session_of.get(rid) for rid, (_, model_session) in out.items()),
        "predictions match a sequential run": out == ref,
    }


MODES = {
    "unsafe_threaded": unsafe_threaded,
    "safe_python": safe_python,
    "multiprocessing_pool": PoolMode(multiprocessing_pool, _pool_init,
                                     lambda data: (data["sessions"],)),
}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODES, check, lambda data: len(data["records"])))
