"""data_etl worker: validates and transforms rows against the current schema.

The schema lives in a Store (`etl`, table `schema`, key `current`); the C++
driver hot-swaps it with `reload` between phases. Workers read it in place,
once per batch: no copy travels with the rows, and a batch sees one whole
schema, never half of one.
"""

from __future__ import annotations

TYPES = {"int": int, "float": (int, float), "str": str}


def transform(row: dict, schema: dict) -> dict:
    """The row validated and normalized by `schema`: {"id", "schema_version",
    "valid", "amount_cents" or "error"}."""
    version = schema["version"]
    for name in schema["required"]:
        if name not in row:
            return {"id": row.get("id"), "schema_version": version, "valid": False,
                    "error": f"missing field {name!r}"}
    for name, type_name in schema["fields"].items():
        value = row.get(name)
        wrong = isinstance(value, bool) or not isinstance(value, TYPES[type_name])
        if value is not None and wrong:
            return {"id": row.get("id"), "schema_version": version, "valid": False,
                    "error": f"field {name!r} is not {type_name}"}
    out = {schema["rename"].get(k, k): v for k, v in row.items()}
    currency = out["currency"].upper()
    if currency not in ("EUR", "USD", "GBP"):
        return {"id": row["id"], "schema_version": version, "valid": False,
                "error": f"unknown currency {out['currency']!r}"}
    cents = out["amount"] if schema["cents"] else round(out["amount"] * 100)
    return {"id": row["id"], "schema_version": version, "valid": True, "amount_cents": cents,
            "currency": currency}


def validate(items: list, ctx) -> list:
    """The Python stage: every row of the batch against the schema in the Store."""
    schema = ctx.store("etl").get("schema", "current")
    return [transform(row, schema) for row in items]
