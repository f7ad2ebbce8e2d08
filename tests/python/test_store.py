"""Store reads (what the C++ broker loaded), writes through the broker, the Table API."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import slither
from conftest import LOADED_ROWS


def test_python_reads_what_the_cpp_broker_loaded(features):
    table = features.table("emb")
    assert len(table) == len(LOADED_ROWS)
    for row in LOADED_ROWS:
        got = features.get("emb", row["id"])
        assert isinstance(got, dict)
        for name, value in row.items():
            if name != "id":
                assert got[name] == value, (row["id"], name)
                assert type(got[name]) is type(value)


def test_store_describes_itself(client, features):
    assert features.name == "features"
    assert features.namespace == client.namespace
    assert set(features.tables) == {"emb", "docs", "bag"}
    assert "features" in repr(features)


def test_missing_key_gives_default(features):
    assert features.get("emb", "nobody") is None
    sentinel = object()
    assert features.get("emb", "nobody", sentinel) is sentinel
    with pytest.raises(slither.NotFound):
        features.table("emb")["nobody"]
    with pytest.raises(KeyError):  # NotFound is a KeyError too
        features.table("emb")["nobody"]


VALUES = {
    "null": None,
    "true": True,
    "int": -(2**62),
    "float": 3.25,
    "str": "héllo",
    "bytes": b"\x00\x01\xfe",
    "list": [1, [2, [3, None]], "x"],
    "map": {"nested": {"deep": [1.5, b"b"]}, "empty": {}},
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_value_kind_round_trips_through_the_broker(scratch, name):
    version = scratch.put("t", name, VALUES[name])
    assert version >= 1
    # read-your-writes: visible as soon as put returns
    assert scratch.get("t", name) == VALUES[name]
    assert scratch.version("t", name) == version


@pytest.mark.parametrize("dtype", ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                   "uint32", "uint64", "float16", "float32", "float64"])
def test_arrays_round_trip_through_the_broker(scratch, dtype):
    a = np.arange(60).astype(dtype).reshape(3, 4, 5)
    scratch.put("t", "arr", a)
    b = scratch.get("t", "arr")
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    v = scratch.view("t", "arr")  # zero-copy over the store's block
    assert v.dtype == a.dtype and v.shape == a.shape
    np.testing.assert_array_equal(a, v)


def test_arrays_nested_in_maps(scratch):
    scratch.put("t", "doc", {"emb": np.ones(8, dtype=np.float32), "id": 7})
    got = scratch.get("t", "doc")
    assert got["id"] == 7
    np.testing.assert_array_equal(got["emb"], np.ones(8, dtype=np.float32))


def test_bytes_and_str_keys(scratch):
    scratch.put("t", b"\xffraw", 1)
    scratch.put("t", "text", 2)
    assert scratch.get("t", b"\xffraw") == 1
    assert scratch.get("t", b"text") == 2  # a str key is its UTF-8 bytes
    assert set(scratch.table("t")) == {b"\xffraw", "text"}
    with pytest.raises(TypeError, match="key must be str or bytes, not 'int'"):
        scratch.get("t", 5)


def test_versions_grow_and_delete(scratch):
    v1 = scratch.put("t", "k", 1)
    v2 = scratch.put("t", "k", 2)
    assert v2 > v1
    assert scratch.delete("t", "k") is True
    assert scratch.delete("t", "k") is False
    assert "k" not in scratch.table("t")
    assert scratch.version("t", "k") == 0


def test_put_many_mapping_and_pairs(scratch):
    scratch.put_many("t", {f"m{i}": i for i in range(100)})
    scratch.put_many("t", [(f"p{i}", {"i": i}) for i in range(50)])
    t = scratch.table("t")
    assert len(t) == 150
    assert t["m42"] == 42 and t["p7"] == {"i": 7}
    assert sorted(t.keys(prefix="p")) == sorted(f"p{i}" for i in range(50))
    assert dict(t.items())["m99"] == 99


def test_put_many_is_all_or_nothing_on_bad_value(scratch):
    with pytest.raises(TypeError, match=r"entries\['bad'\]\['x'\]: object of type 'set'"):
        scratch.put_many("t", {"good": 1, "bad": {"x": {1}}})
    assert len(scratch.table("t")) == 0


def test_compare_and_set(scratch):
    v1 = scratch.compare_and_set("t", "c", 0, "first")  # 0 = must be absent
    v2 = scratch.compare_and_set("t", "c", v1, "second")
    assert scratch.get("t", "c") == "second"
    with pytest.raises(slither.Conflict):
        scratch.compare_and_set("t", "c", v1, "stale")
    with pytest.raises(slither.Conflict):
        scratch.compare_and_set("t", "c", 0, "not absent")
    assert scratch.get("t", "c") == "second" and scratch.version("t", "c") == v2


def test_clear(scratch):
    scratch.put_many("t", {"a": 1, "b": 2})
    scratch.clear("t")
    assert len(scratch.table("t")) == 0


def test_bag_table_keeps_every_value(client):
    store = client.store("features")
    store.clear("bag")
    for i in range(3):
        store.put("bag", "k", i)
    assert store.get_all("bag", "k") == [0, 1, 2]
    assert store.get("bag", "k") == 0
    store.clear("bag")


def test_table_api(scratch):
    t = scratch.table("t")
    assert t.name == "t" and t.store is scratch
    t.put("x", {"v": 1})
    assert "x" in t and t.get("x") == {"v": 1} and t.version("x") >= 1
    assert list(t) == ["x"]
    assert t.delete("x")
    assert len(t) == 0


def test_client_is_usable_from_threads(scratch):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                scratch.put("t", f"th{n}-{i}", i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(scratch.table("t")) == 200


def test_stats_and_ping(client):
    client.ping()
    stats = client.stats()
    assert isinstance(stats, dict) and stats


def test_connect_takes_what_it_is_not_given_from_the_environment(broker, monkeypatch):
    # The variables a broker sets for its workers: code calling slither.connect()
    # runs unchanged against another broker (the README's blocks rely on it).
    for name in ("SLITHER_CONTROL_ENDPOINT", "SLITHER_RUNTIME_DIR", "SLITHER_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLITHER_RUNTIME_DIR", str(broker.runtime_dir))
    monkeypatch.setenv("SLITHER_NAMESPACE", broker.namespace)
    with slither.connect(timeout=2) as c:
        assert c.namespace == broker.namespace
        c.ping()
    # The endpoint wins over the runtime directory, and arguments over both.
    monkeypatch.setenv("SLITHER_CONTROL_ENDPOINT", f"ipc://{broker.runtime_dir}/control")
    monkeypatch.setenv("SLITHER_RUNTIME_DIR", "/nonexistent/slither")
    with slither.connect(timeout=2) as c:
        c.ping()
    with pytest.raises(slither.SlitherError):
        slither.connect(runtime_dir="/nonexistent/slither", timeout=0.5).ping()
    monkeypatch.setenv("SLITHER_NAMESPACE", "not a namespace!")
    with pytest.raises(slither.InvalidArgument):
        slither.connect()


def test_dict_key_order_survives_the_store(scratch):
    # Python users rely on insertion order: keys come back as written, not sorted.
    keys = ["zeta", "alpha", "mid", "beta", "0", "Z"] + [f"k{i}" for i in range(40, 10, -1)]
    row = {k: {"b": i, "a": [{"q": 1, "p": 2}]} for i, k in enumerate(keys)}
    scratch.put("t", "row", row)
    scratch.put_many("t", {"many": row})
    for key in ("row", "many"):
        got = scratch.get("t", key)
        assert list(got) == keys
        assert all(list(v) == ["b", "a"] and list(v["a"][0]) == ["q", "p"] for v in got.values())
    assert list(slither.decode(bytes(scratch.view("t", "row")))) == keys  # the stored bytes
    assert list(dict(scratch.items("t"))["row"]) == keys


def test_stats_say_where_a_stores_memory_is(client, scratch):
    """Live, free, garbage, pinned and resident bytes, and who pins the oldest epoch;
    a large value deleted gives its pages back to /dev/shm."""
    scratch.put("t", "big", b"x" * (24 << 20))
    scratch.delete("t", "big")
    deadline = time.monotonic() + 30
    while True:  # the broker reclaims on a timer, and hands pages back a little later
        st = client.stats()["stores"]["scratch"]
        back = st["segment_bytes"] - st["bytes_resident"] >= 20 << 20
        if (st["bytes_retired"] == 0 and back) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for key in ("bytes_used", "bytes_free", "bytes_retired", "bytes_pinned",
                "oldest_epoch_pid", "bytes_resident", "segment_bytes"):
        assert isinstance(st[key], int) and st[key] >= 0, key
    assert st["bytes_retired"] == 0
    assert st["bytes_free"] >= 24 << 20
    assert st["segment_bytes"] - st["bytes_resident"] >= 20 << 20


def test_large_arrays_are_put_in_place(client, scratch):
    """Arrays of LARGE_PUT_BYTES and more go through shared memory (reserve, copy, commit),
    smaller ones through the socket; readers see the same either way."""
    big = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)  # 4 MiB
    assert big.nbytes >= slither._api.LARGE_PUT_BYTES
    v1 = scratch.put("t", "big", big)
    got = scratch.get("t", "big")
    assert got.dtype == np.float32 and got.shape == (1024, 1024)
    assert np.array_equal(got, big)
    # Not C-contiguous (steps, a transpose, Fortran order, a reversed view): copied to
    # a contiguous array, then in place too, and read back as the same array.
    before = reservations_made(client)
    version = v1
    for i, strided in enumerate(
        [big[:, ::2], big.T, np.asfortranarray(big), big[::-1, ::-1]]
    ):
        assert not strided.flags.c_contiguous
        assert strided.nbytes >= slither._api.LARGE_PUT_BYTES
        v = scratch.put("t", "big", strided)
        assert v > version
        version = v
        assert reservations_made(client) == before + i + 1
        got = scratch.get("t", "big")
        assert got.shape == strided.shape and got.dtype == strided.dtype
        assert np.array_equal(got, strided)
    v2 = version
    native = scratch._client._native
    v3 = native.put_in_place("scratch", "t", "small", np.ones(10, dtype=np.int64))
    assert v3 > v2
    assert scratch.get("t", "small").tolist() == [1] * 10
    with pytest.raises(slither.SlitherError):
        native.put_in_place("scratch", "t", "x", "not an array")
    with pytest.raises(slither.SlitherError):
        native.put_in_place("scratch", "nope", "x", np.ones(10))


def test_large_values_with_no_value_form_are_refused_by_name(scratch):
    """A large put of a dtype with no Value form, or of a released memoryview, raises
    InvalidType naming why (a released memoryview raised a bare ValueError) and stores
    nothing."""
    with pytest.raises(slither.InvalidType, match="cannot include dtype 'M'"):
        scratch.put("t", "dt", np.zeros(1 << 18, dtype="datetime64[s]"))
    released = memoryview(bytearray(2 << 20))
    released.release()
    with pytest.raises(slither.InvalidType, match="released"):
        scratch.put("t", "mv", released)
    assert scratch.get("t", "dt") is None and scratch.get("t", "mv") is None


def reservations_made(client) -> float:
    """put_reserve requests the broker has answered: one per put in place."""
    family = client.stats()["metrics"].get("slither_requests_total", {})
    samples = family.get("samples", [])
    return sum(m["value"] for m in samples if m["labels"].get("type") == "put_reserve")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_bytes_are_put_in_place_as_the_socket_stores_them(client, scratch, kind):
    """bytes, bytearray and memoryview values of LARGE_PUT_BYTES and more go through shared
    memory too; readers get what a put through the socket of the same value stores (bytes
    for bytes and bytearray, a uint8 array for a memoryview)."""
    data = bytes(range(256)) * ((2 << 20) // 256) + b"tail"
    value = kind(data)
    before = reservations_made(client)
    v1 = scratch.put("t", "in-place", value)
    assert reservations_made(client) == before + 1
    scratch._client._native.put("scratch", "t", "socket", value)  # the socket path
    assert reservations_made(client) == before + 1
    got, want = scratch.get("t", "in-place"), scratch.get("t", "socket")
    assert type(got) is type(want)
    if kind is memoryview:
        assert got.dtype == np.uint8 and np.array_equal(got, want)
        assert got.tobytes() == data
    else:
        assert type(got) is bytes and got == want == data
    # Short ones take the socket, and a large one replaces them in place.
    assert scratch.put("t", "in-place", kind(b"short")) > v1
    assert reservations_made(client) == before + 1
    scratch.put("t", "in-place", value)
    assert reservations_made(client) == before + 2
    assert bytes(scratch.get("t", "in-place")) == data


def test_a_strided_memoryview_takes_the_socket(client, scratch):
    big = np.arange(1 << 20, dtype=np.int32)
    strided = memoryview(big)[::2]
    assert strided.nbytes >= slither._api.LARGE_PUT_BYTES and not strided.c_contiguous
    before = reservations_made(client)
    scratch.put("t", "strided", strided)
    assert reservations_made(client) == before
    assert np.array_equal(scratch.get("t", "strided"), big[::2])


def test_get_names_its_table_by_any_equal_str(features):
    # get remembers the table it read last by its str object: another object
    # with the same text, and another table in between, read the right table.
    features.put("docs", "k", "in docs")
    features.put("bag", "k", "in bag")
    docs = "".join(["do", "cs"])  # equal to "docs", not the same object
    try:
        for _ in range(3):
            assert features.get("docs", "k") == "in docs"
            assert features.get("bag", "k") == "in bag"
            assert features.get(docs, "k") == "in docs"
        with pytest.raises(slither.NotFound, match="unknown table 'nope'"):
            features.get("nope", "k")
        assert features.get("docs", "k") == "in docs"
        with pytest.raises(slither.InvalidType):
            features.get(b"docs", "k")
    finally:
        features.delete("docs", "k")
        features.clear("bag")


@pytest.mark.parametrize("size", [0, 1, 64, 127, 128, 300])
def test_get_of_bytes_around_the_short_form(scratch, size):
    value = bytes(range(256))[:size] if size <= 256 else bytes(size)
    scratch.put("t", "b", value)
    got = scratch.get("t", "b")
    assert type(got) is bytes and got == value
