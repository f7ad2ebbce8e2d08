"""text_analysis worker: the `analyze` stage, run by Slither's Python workers.

Each item is a prepared document {"id", "tokens"} (the native stage lowered,
split and dropped stopwords). `analyze` scores its sentiment and adds its
words to this worker's own word index: a module-level dict that lives as
long as the worker process and that no other process touches. Every result
carries a snapshot of this worker's statistics, which the driver merges per
worker (the isolation probe).
"""

from __future__ import annotations

import os
from collections import Counter

POSITIVE = frozenset(["good", "great", "excellent", "happy", "love", "wonderful", "fast",
                      "reliable", "clean", "bright", "friendly", "smooth"])
NEGATIVE = frozenset(["bad", "poor", "terrible", "sad", "hate", "awful", "slow", "broken",
                      "dirty", "dark", "rude", "noisy"])

# This worker's word index and counters. One worker process = one state:
# no locks, since nothing else runs here.
_index: Counter[str] = Counter()
_docs = 0
_tokens = 0


def tokenize(text: str, stopwords: frozenset[str]) -> list[str]:
    """The prepare stage in Python (the baselines' copy of the native one):
    lower-case ASCII words, split at every other character, stopwords dropped."""
    words = "".join(c if "a" <= c <= "z" else " " for c in text.lower()).split()
    return [w for w in words if w not in stopwords]


def sentiment(tokens: list[str]) -> float:
    """(positive - negative) / (positive + negative) words; 0 with neither."""
    pos = sum(1 for t in tokens if t in POSITIVE)
    neg = sum(1 for t in tokens if t in NEGATIVE)
    return (pos - neg) / (pos + neg) if pos + neg else 0.0


def classify(score: float) -> str:
    """The router's rule: positive above 0.2, negative below -0.2, else default."""
    if score > 0.2:
        return "positive"
    if score < -0.2:
        return "negative"
    return "default"


def analyze(items: list, ctx) -> list:
    """The Python stage: sentiment, token count and this worker's statistics."""
    global _docs, _tokens
    out = []
    pid = os.getpid()
    for doc in items:
        tokens = doc["tokens"]
        _index.update(tokens)
        _docs += 1
        _tokens += len(tokens)
        out.append({
            "id": doc["id"],
            "sentiment": sentiment(tokens),
            "tokens": len(tokens),
            "worker": pid,
            "worker_docs": _docs,
            "worker_tokens": _tokens,
            "worker_vocabulary": len(_index),
        })
    return out
