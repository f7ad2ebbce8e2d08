"""The reads bound as single C calls: `Store.get`'s argument forms and a Table's
`table[key]`, `get` and `in`, which keep every documented behaviour."""

from __future__ import annotations

import secrets

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
