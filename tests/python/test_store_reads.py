"""The reads bound as single C calls: `Store.get`'s argument forms and a Table's
`table[key]`, `get` and `in`, which keep every documented behaviour."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

import slither


def test_store_get_takes_its_arguments_by_position_or_name(scratch: slither.Store) -> None:
    scratch.put("t", "k", "v")
    sentinel = object()
    assert scratch.get("t", "k") == "v"
    assert scratch.get(table="t", key="k") == "v"
    assert scratch.get("t", key="k", default=sentinel) == "v"
    assert scratch.get("t", "nope", sentinel) is sentinel
    assert scratch.get("t", "nope", default=sentinel) is sentinel
    assert scratch.get("t", b"nope") is None
    assert slither.Reader.get(scratch, "t", "k") == "v"  # unbound, as a method descriptor


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("t",), {}, "missing its argument 'key'"),
        ((), {"key": "k"}, "missing its argument 'table'"),
        (("t", "k", None, 1), {}, "at most 3 arguments"),
        (("t", "k"), {"dflt": 1}, "unexpected argument 'dflt'"),
        (("t", "k"), {"table": "t"}, "repeated argument 'table'"),
        (("t", None), {}, "key must be str or bytes"),
        (("t", 5), {}, "key must be str or bytes, not 'int'"),
        ((None, "k"), {}, "table"),
    ],
)
def test_store_get_refuses_bad_arguments_with_invalid_type(
    scratch: slither.Store, args: tuple, kwargs: dict, match: str
) -> None:
    with pytest.raises(slither.InvalidType, match=match) as raised:
        scratch.get(*args, **kwargs)
    assert isinstance(raised.value, TypeError)


def test_store_get_of_an_unknown_table_raises_not_found(scratch: slither.Store) -> None:
    with pytest.raises(slither.NotFound, match="unknown table 'nope'"):
        scratch.get("nope", "k")


def test_table_reads_are_mapping_reads(scratch: slither.Store) -> None:
    t = scratch.table("t")
    t.put("k", [1, 2])
    t.put(b"\xff", b"raw")
    assert t["k"] == [1, 2] and t[b"\xff"] == b"raw"
    assert t.get("k") == [1, 2] and t.get(key="k") == [1, 2]
    assert t.get("nope") is None and t.get("nope", 5) == 5 and t.get("nope", default=6) == 6
    assert "k" in t and b"\xff" in t and "nope" not in t
    with pytest.raises(slither.NotFound, match=r"no key 'nope' in table 't'"):
        t["nope"]
    with pytest.raises(KeyError, match=r"no key b'\\x00' in table 't'"):
        t[b"\x00"]
    with pytest.raises(slither.InvalidType, match="key must be str or bytes"):
        t[5]
    with pytest.raises(slither.InvalidType, match="key must be str or bytes"):
        5 in t  # noqa: B015 - the membership test is what raises
    with pytest.raises(slither.InvalidType, match="at most 2 arguments"):
        t.get("k", 1, 2)
    with pytest.raises(slither.InvalidType, match="missing its argument 'key'"):
        t.get()
    assert t.name == "t" and t.store is scratch


def test_a_table_handle_reads_the_table_of_its_name_after_a_drop(client: slither.Client) -> None:
    store = client.store("scratch")
    name = f"re_{secrets.token_hex(4)}"
    other = f"other_{secrets.token_hex(4)}"
    table = store.create_table(name)
    table["k"] = "first"
    assert table["k"] == "first"  # its number is now cached in the handle
    store.drop_table(name)
    with pytest.raises(slither.NotFound, match="unknown table"):
        table["k"]
    with pytest.raises(slither.NotFound, match="unknown table"):
        table.get("k")
    # The name comes back under another number, after a table that took none of its.
    store.create_table(other)["k"] = "other's"
    store.create_table(name)["k"] = "second"
    assert table["k"] == "second" and table.get("k") == "second" and "k" in table
    store.drop_table(name)
    store.drop_table(other)


def test_a_table_handle_needs_a_store_and_an_initialized_instance(
    scratch: slither.Store,
) -> None:
    with pytest.raises(slither.InvalidType, match="must be a slither.Store or Reader"):
        slither.Table(object(), "t")  # type: ignore[arg-type]
    with pytest.raises(slither.InvalidType, match="name must be"):
        slither.Table(scratch, 5)  # type: ignore[arg-type]
    blank = slither.Table.__new__(slither.Table)
    with pytest.raises(slither.InvalidType, match="uninitialized"):
        blank["k"]
    blank_store = slither.Store.__new__(slither.Store)
    with pytest.raises(slither.InvalidType, match="uninitialized"):
        blank_store.get("t", "k")


class _Str(str):
    pass


class _Bytes(bytes):
    pass


@pytest.mark.parametrize(
    "key",
    ["k", "clé", "日本語", "🐍 snake", "", _Str("k"), _Str("clé"), b"k", _Bytes(b"k"), "k" * 300],
)
def test_every_key_form_reads_its_utf8_bytes(scratch: slither.Store, key: str | bytes) -> None:
    # ASCII str and bytes are read in place; other str through their UTF-8 form: all alike.
    raw = key.encode() if isinstance(key, str) else bytes(key)
    scratch.put("t", raw, "v")
    t = scratch.table("t")
    text = raw.decode()
    assert scratch.get("t", key) == "v" and scratch.get("t", text) == "v"
    assert t[key] == "v" and t.get(key) == "v" and key in t
    other = key + (b"!" if isinstance(key, bytes) else "!")
    assert scratch.get("t", other) is None and t.get(other, 7) == 7 and other not in t


def test_keys_that_are_not_str_or_bytes_or_not_utf8_are_refused(scratch: slither.Store) -> None:
    t = scratch.table("t")
    for read in (lambda k: scratch.get("t", k), lambda k: t[k], lambda k: t.get(k)):
        with pytest.raises(slither.InvalidType, match="key must be str or bytes, not 'bytearray'"):
            read(bytearray(b"k"))
        with pytest.raises(slither.InvalidArgument, match="key is not encodable as UTF-8"):
            read("\ud800")  # a lone surrogate has no UTF-8 form


VALUES = {
    "null": None,
    "true": True,
    "int": -(2**62),
    "float": 3.25,
    "str": "héllo",
    "short bytes": b"\x00" * 127,  # the longest bytes built without the decoder
    "bytes": b"\x01" * 128,
    "empty bytes": b"",
    "list": [1, [2, [3, None]], "x"],
    "map": {"nested": {"deep": [1.5, b"b"]}, "empty": {}},
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_a_table_handle_reads_every_value_kind(scratch: slither.Store, name: str) -> None:
    scratch.put("t", name, VALUES[name])
    t = scratch.table("t")
    assert t[name] == VALUES[name] and t.get(name) == VALUES[name]
    assert scratch.get("t", name) == VALUES[name]
    assert type(t[name]) is type(VALUES[name])


def test_a_table_handle_reads_arrays_and_a_bags_first_value(client: slither.Client) -> None:
    scratch = client.store("scratch")
    scratch.put("t", "arr", np.arange(6, dtype=np.int32))
    np.testing.assert_array_equal(scratch.table("t")["arr"], np.arange(6, dtype=np.int32))
    store = client.store("features")
    store.clear("bag")
    for i in range(3):
        store.put("bag", "k", i)
    bag = store.table("bag")
    assert bag["k"] == 0 and bag.get("k") == 0 and store.get("bag", "k") == 0
    store.clear("bag")


def test_reads_of_a_closed_store_raise_through_every_handle(client: slither.Client) -> None:
    store = client.store("scratch")
    t = store.table("t")
    t["k"] = "v"
    assert t["k"] == "v" and store.get("t", "k") == "v"  # the table's number is cached
    store.close()
    for read in (lambda: store.get("t", "k"), lambda: t["k"], lambda: t.get("k"),
                 lambda: "k" in t):
        with pytest.raises(slither.InvalidArgument, match="closed by this process"):
            read()


def test_a_fork_child_reads_through_handles_made_before(scratch: slither.Store) -> None:
    t = scratch.table("t")
    t["k"] = "parent"
    assert t["k"] == "parent" and scratch.get("t", "k") == "parent"  # warm: number and lane kept
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        ok = False
        try:
            ok = t["k"] == "parent" and t.get("k") == "parent" and scratch.get("t", "k") == "parent"
            ok = ok and t.get("nope", 3) == 3 and "k" in t
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t["k"] == "parent"  # the parent reads on as before
