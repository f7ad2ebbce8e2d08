"""batch_stats data: seeded sensor datasets, some of them poison.

Writes {"datasets": [{"id", "sensor", "values"}], "poison": [ids]}. A poison
dataset holds a value that is not a number (a string), as a corrupt upload
would; the worker fails on it and `on_error: skip` keeps it from stopping
the job.
"""

from __future__ import annotations

import random

from example_common import generator_args, scaled, write_data

FULL_SIZE = 2000
FULL_POISON = 50
SENSORS = [f"sensor-{i}" for i in range(8)]


def generate(scale: float, seed: int) -> dict:
    rng = random.Random(seed)
    n = scaled(FULL_SIZE, scale)
    poison = set(rng.sample(range(n), min(n, scaled(FULL_POISON, scale))))
    datasets = []
    for i in range(n):
        sensor = rng.choice(SENSORS)
        center, spread = rng.uniform(-50, 50), rng.uniform(0.5, 10)
        values: list = [rng.gauss(center, spread) for _ in range(rng.randint(100, 900))]
        if i in poison:
            values[rng.randrange(len(values))] = "ERR"
        datasets.append({"id": i, "sensor": sensor, "values": values})
    return {"datasets": datasets, "poison": sorted(poison)}


if __name__ == "__main__":
    args = generator_args(__doc__)
    write_data(args.out, generate(args.scale, args.seed))
