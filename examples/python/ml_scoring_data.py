"""ml_scoring data: two sessions' training sets and records to score.

Writes {"sessions": {name: {"X": float64 array, "y": int64 array}},
"records": [{"id", "session", "raw": [8 floats]}]}. Each session's labels
follow its own hidden weights (the two nearly opposite), so a record scored
by the other session's model comes out wrong. Raw records are in sensor
units; the native stage turns them into features, (raw - 50) / 10.
"""

from __future__ import annotations

from example_common import generator_args, require, scaled, write_data

np = require("numpy")

FULL_SAMPLES = 2000
FULL_RECORDS = 2000
FEATURES = 8
SESSIONS = {"alpha": [1.5, -1.0, 0.5, 0.0, 2.0, -0.5, 1.0, 0.25],
            "beta": [-1.5, 1.0, -0.25, 0.5, -2.0, 0.5, -1.0, 0.0]}


def generate(scale: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sessions, records = {}, []
    for name, weights in SESSIONS.items():
        X = rng.normal(size=(scaled(FULL_SAMPLES, scale, 50), FEATURES))
        noise = rng.normal(scale=0.5, size=X.shape[0])
        y = (X @ np.asarray(weights) + noise > 0).astype(np.int64)
        sessions[name] = {"X": X, "y": y}
    n = scaled(FULL_RECORDS, scale)
    for session in SESSIONS:
        raw = rng.normal(loc=50, scale=10, size=(n, FEATURES))
        records += [{"id": f"{session}-{i:05d}", "session": session, "raw": raw[i].tolist()}
                    for i in range(n)]
    return {"sessions": sessions, "records": records}


def features(raw: list[float]) -> list[float]:
    """The native prepare stage in Python, for the baselines."""
    return [(x - 50.0) / 10.0 for x in raw]


if __name__ == "__main__":
    args = generator_args(__doc__)
    write_data(args.out, generate(args.scale, args.seed))
