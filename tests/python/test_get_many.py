"""Store.get_many and Table.get_many: the values `get` reads key by key, on
every table kind and value form, in one call, against a real broker."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

import slither

#: One value of each form a stored value takes (small and large encodings, an array).
VALUES: list[object] = [
    0,
    -7,
    None,
    "text",
    "ü" * 40,
    b"\x00\xff",
    b"x" * 9000,
    [1, "two", 3.5],
    {"a": [1, 2], "b": None},
    np.arange(6, dtype=np.float32).reshape(2, 3),
]


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b and type(a) is type(b)


def _check_like_get(store: slither.Store, table: str, keys: list[object]) -> None:
    missing = object()
    got = store.get_many(table, keys, default=missing)
    assert len(got) == len(keys)
    for key, value in zip(keys, got):
        one = store.get(table, key, missing)
        assert _same(value, one), (table, key, value, one)
    # The Table form reads the same, with None for what is absent by default.
    by_table = store.table(table).get_many(keys)
    assert all(_same(a, None if b is missing else b) for a, b in zip(by_table, got))


@pytest.mark.parametrize("table", ["t", "ord"])
def test_get_many_reads_what_get_reads(scratch: slither.Store, table: str) -> None:
    entries = {f"k{i}": VALUES[i % len(VALUES)] for i in range(60)}
    scratch.put_many(table, entries)
    keys: list[object] = list(entries) + ["absent", b"k3", "k3", "ab\u00e9"]
    keys[10:10] = [f"gone{i}" for i in range(9)]
    _check_like_get(scratch, table, keys)
    got = scratch.get_many(table, keys, default="?")
    assert got[keys.index("absent")] == "?" and got[keys.index("gone0")] == "?"
    # Any iterable of keys: a generator, a tuple, bytes keys for str ones.
    assert scratch.get_many(table, (k for k in ["k1", "k0"])) == [-7, 0]
    assert scratch.get_many(table, (b"k3", "k5")) == [VALUES[3], VALUES[5]]


def test_get_many_reads_a_bags_first_values(features: slither.Store) -> None:
    tag = secrets.token_hex(3)
    keys = [f"{tag}:{i}" for i in range(20)]
    for i, key in enumerate(keys):
        for j in range(i % 3 + 1):
            features.put("bag", key, VALUES[(i + j) % len(VALUES)])
    _check_like_get(features, "bag", keys + [f"{tag}:absent"])
    assert features.get_many("bag", keys[:2]) == [VALUES[0], VALUES[1]]


def test_get_many_refuses_bad_keys_naming_them(features: slither.Store) -> None:
    with pytest.raises(TypeError, match=r"keys\[1\] must be str or bytes, not 'int'"):
        features.get_many("emb", ["user:1", 5])
    with pytest.raises(slither.InvalidType, match="not 'float'"):
        features.table("emb").get_many(["user:1", "user:2", 2.5])
    with pytest.raises(TypeError, match="iterable of keys, not 'int'"):
        features.get_many("emb", 5)
    with pytest.raises(TypeError, match="not a single 'str'"):
        features.get_many("emb", "user:1")

    def broken():
        yield "user:1"
        raise ZeroDivisionError("from the keys")

    with pytest.raises(ZeroDivisionError, match="from the keys"):
        features.get_many("emb", broken())


def test_get_many_on_a_closed_store_raises(client: slither.Client) -> None:
    store = client.store("features")
    assert store.get_many("emb", ["user:1"])[0]["name"] == "ada"
    store.close()
    with pytest.raises(slither.InvalidArgument, match="closed"):
        store.get_many("emb", ["user:1"])
    with pytest.raises(slither.InvalidArgument, match="closed"):
        store.table("emb").get_many(["user:1"])
