"""data_etl data: 15,000 rows in 3 schema phases, and the 3 schemas.

Writes {"schemas": [...], "phases": [[row...], ...], "expected": {"invalid":
[ids], "total_cents": n}}. The rows of phase k have the shape schema k
describes (phase 2 renames `amount` to `value`, phase 3 sends cents); about
6% of them are broken on purpose (a missing field, a wrong type, an unknown
currency), and the generator records which, and the cents of the others.
"""

from __future__ import annotations

import random

from example_common import generator_args, scaled, write_data

FULL_SIZE = 15000
CURRENCIES = ["EUR", "USD", "GBP"]

SCHEMAS = [
    {"version": 1, "fields": {"id": "int", "name": "str", "amount": "float", "currency": "str"},
     "required": ["id", "name", "amount", "currency"], "rename": {}, "cents": False},
    {"version": 2, "fields": {"id": "int", "name": "str", "value": "float", "currency": "str",
                              "country": "str"},
     "required": ["id", "name", "value", "currency", "country"], "rename": {"value": "amount"},
     "cents": False},
    {"version": 3, "fields": {"id": "int", "name": "str", "amount_cents": "int",
                              "currency": "str", "country": "str"},
     "required": ["id", "name", "amount_cents", "currency", "country"],
     "rename": {"amount_cents": "amount"}, "cents": True},
]


def row(rng: random.Random, phase: int, row_id: int) -> tuple[dict, int | None]:
    """A row of `phase` (0-based) and its cents, or None if it is broken."""
    cents = rng.randint(100, 1_000_000)
    r: dict = {"id": row_id, "name": f"customer-{rng.randint(0, 9999):04d}",
               "currency": rng.choice(CURRENCIES).lower()}
    if phase == 0:
        r["amount"] = cents / 100
    elif phase == 1:
        r["value"] = cents / 100
        r["country"] = rng.choice(["NZ", "FR", "US", "JP"])
    else:
        r["amount_cents"] = cents
        r["country"] = rng.choice(["NZ", "FR", "US", "JP"])
    if rng.random() < 0.06:
        fault = rng.choice(["missing", "type", "currency"])
        if fault == "missing":
            del r["name"]
        elif fault == "type":
            r["name"] = rng.randint(0, 100)
        else:
            r["currency"] = "xxx"
        return r, None
    return r, cents


def generate(scale: float, seed: int) -> dict:
    rng = random.Random(seed)
    per_phase = scaled(FULL_SIZE // 3, scale)
    phases, invalid, total = [], [], 0
    for phase in range(3):
        rows = []
        for i in range(per_phase):
            r, cents = row(rng, phase, phase * per_phase + i)
            rows.append(r)
            if cents is None:
                invalid.append(r["id"])
            else:
                total += cents
        phases.append(rows)
    return {"schemas": SCHEMAS, "phases": phases,
            "expected": {"invalid": invalid, "total_cents": total}}


if __name__ == "__main__":
    args = generator_args(__doc__)
    write_data(args.out, generate(args.scale, args.seed))
