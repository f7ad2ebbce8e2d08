"""text_analysis in pure Python: tokenize, score, index, classify 5,000 documents.

unsafe_threaded: threads share one word index and counters (read-modify-write
with no lock); safe_python: each batch builds its own index, merged at the
end; multiprocessing_pool: the same batches in processes.
"""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from baseline_harness import PoolMode, chunks, main
from text_analysis_worker import classify, sentiment, tokenize

BATCH = 50


def analyze_batch(batch: list, stopwords: frozenset[str]) -> tuple[dict, Counter, int, int]:
    """One batch with its own state: labels, word index, documents, tokens."""
    labels, index, tokens_seen = {}, Counter(), 0
    for doc in batch:
        tokens = tokenize(doc["text"], stopwords)
        index.update(tokens)
        tokens_seen += len(tokens)
        labels[doc["id"]] = classify(sentiment(tokens))
    return labels, index, len(batch), tokens_seen


def _pool_batch(args: tuple[list, frozenset[str]]) -> tuple[dict, Counter, int, int]:
    return analyze_batch(*args)


def merge(parts) -> dict:
    """Partial results merged in batch order: the same whatever ran them."""
    labels, index, docs, tokens = {}, Counter(), 0, 0
    for part_labels, part_index, part_docs, part_tokens in parts:
        for doc_id, label in part_labels.items():
            if doc_id in labels:
                raise ValueError(f"document {doc_id} classified twice")
            labels[doc_id] = label
        index.update(part_index)
        docs += part_docs
        tokens += part_tokens
    return {"labels": labels, "index": index, "docs": docs, "tokens": tokens}


def unsafe_threaded(data: dict, workers: int) -> dict:
    stopwords = frozenset(data["stopwords"])
    index: dict[str, int] = {}
    stats = {"docs": 0, "tokens": 0}
    labels: dict[int, str] = {}

    def work(batch: list) -> None:
        for doc in batch:
            tokens = tokenize(doc["text"], stopwords)
            for t in tokens:
                index[t] = index.get(t, 0) + 1
            stats["docs"] += 1
            stats["tokens"] += len(tokens)
            labels[doc["id"]] = classify(sentiment(tokens))

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(work, chunks(data["docs"], BATCH)))
    return {"labels": labels, "index": Counter(index), **stats}


def safe_python(data: dict, workers: int) -> dict:
    stopwords = frozenset(data["stopwords"])
    with ThreadPoolExecutor(workers) as ex:
        return merge(ex.map(lambda b: analyze_batch(b, stopwords), chunks(data["docs"], BATCH)))


def multiprocessing_pool(data: dict, pool) -> dict:
    stopwords = frozenset(data["stopwords"])
    tasks = [(b, stopwords) for b in chunks(data["docs"], BATCH)]
    return merge(pool.imap(_pool_batch, tasks))


def reference(data: dict) -> dict:
    """One thread, one state: what every mode must produce."""
    return merge([analyze_batch(data["docs"], frozenset(data["stopwords"]))])


def check(data: dict, out: dict) -> dict[str, bool]:
    ref = reference(data)
    return {
        "every document classified once": out["labels"] == ref["labels"],
        "document count": out["docs"] == len(data["docs"]),
        "token count": out["tokens"] == ref["tokens"],
        "word index matches a sequential run": out["index"] == ref["index"],
    }


MODES = {
    "unsafe_threaded": unsafe_threaded,
    "safe_python": safe_python,
    "multiprocessing_pool": PoolMode(multiprocessing_pool),
}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODES, check, lambda data: len(data["docs"])))
