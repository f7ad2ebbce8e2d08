"""ml_scoring worker: one scikit-learn model per session, kept in the worker.

`score(items, ctx)`: items are {"id", "session"}; their features were
written through to the Store (`ml`, table `features`) by the native stage
and are read here in place. The first batch of a session trains its model
from the session's training set in the Store (`ml`, table `training`) and
keeps it in this process; session affinity sends the session's next batches
to this same worker, so a model is trained once per session, not per batch.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.linear_model import LogisticRegression

# Models trained in this worker, by session.
_models: dict[str, LogisticRegression] = {}
_trained = 0


def train(X, y, session: str) -> LogisticRegression:
    model = LogisticRegression(max_iter=500)
    model.fit(np.asarray(X), np.asarray(y))
    model.session_ = session  # which session's data made it: checked by the driver
    return model


def predict(model: LogisticRegression, features) -> list[tuple[int, float]]:
    """(label, confidence) per row of `features`."""
    proba = model.predict_proba(np.asarray(features, dtype=np.float64))
    return [(int(p.argmax()), float(p.max())) for p in proba]


def model_for(session: str, ctx) -> LogisticRegression:
    global _trained
    model = _models.get(session)
    if model is None:
        store = ctx.store("ml")
        model = train(store.get("training", f"{session}:X"), store.get("training", f"{session}:y"),
                      session)
        _models[session] = model
        _trained += 1
    return model


def score(items: list, ctx) -> list:
    """The Python stage: this session's model over the batch's features."""
    session = ctx.session_id
    model = model_for(session, ctx)
    store = ctx.store("ml")
    features = [store.get("features", item["id"]) for item in items]
    out = []
    for item, (label, confidence) in zip(items, predict(model, features)):
        out.append({"id": item["id"], "session": item["session"], "label": label,
                    "confidence": confidence, "model_session": model.session_,
                    "worker": os.getpid(), "models_trained": _trained})
    return out
