"""Errors surface as slither exceptions with clear messages, never crashes or hangs."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

import slither


def test_unknown_store(client):
    with pytest.raises(slither.NotFound, match="nosuchstore"):
        client.store("nosuchstore")


def test_unknown_table(features):
    with pytest.raises(slither.NotFound, match="nosuchtable"):
        features.get("nosuchtable", "k")
    with pytest.raises(slither.NotFound):
        features.table("nosuchtable")
    with pytest.raises(slither.NotFound):
        features.put("nosuchtable", "k", 1)


def test_unencodable_value_names_type_and_path(scratch):
    with pytest.raises(TypeError, match=r"value\['a'\]\[1\]: object of type 'complex' has no Value form"):
        scratch.put("t", "k", {"a": [1, 2j]})
    with pytest.raises(OverflowError, match=r"value\[0\]"):
        scratch.put("t", "k", [2**64])
    with pytest.raises(TypeError, match="element format"):
        scratch.put("t", "k", np.zeros(2, dtype=np.complex128))
    assert "k" not in scratch.table("t")


def test_no_broker_is_unavailable_within_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(slither.BrokerUnavailable):
        slither.connect(runtime_dir=tmp_path / "nobody-here", namespace="nobody", timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_bad_timeout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="timeout"):
        slither.connect(runtime_dir=tmp_path, timeout=0)


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("nan"), float("inf"), -float("inf"),
                                     9.2e9, 1e300, 10**400, 365 * 24 * 3600 + 1])
def test_timeout_out_of_range_is_invalid_argument_at_once(tmp_path, timeout):
    # Checked before anything else: no broker is needed to be told.
    with pytest.raises(slither.InvalidArgument, match="timeout"):
        slither.connect(runtime_dir=tmp_path, timeout=timeout)


@pytest.mark.parametrize("timeout", ["5", b"5", True, None, [1]])
def test_timeout_of_the_wrong_type_is_invalid_type(tmp_path, timeout):
    with pytest.raises(slither.InvalidType, match="timeout"):
        slither.connect(runtime_dir=tmp_path, timeout=timeout)


def test_a_year_is_the_longest_timeout(broker):
    slither.connect(runtime_dir=broker.runtime_dir, namespace=broker.namespace,
                    timeout=365 * 24 * 3600).ping()
    slither.connect(runtime_dir=broker.runtime_dir, namespace=broker.namespace,
                    timeout=np.float32(2.5)).ping()


def test_invalid_type_is_a_slither_error_and_a_type_error():
    assert issubclass(slither.InvalidType, slither.InvalidArgument)
    assert issubclass(slither.InvalidType, slither.SlitherError)
    assert issubclass(slither.InvalidType, TypeError)
    assert issubclass(slither.InvalidArgument, ValueError)
    assert not issubclass(slither.Timeout, slither.BrokerUnavailable)


@pytest.mark.parametrize("entries", [["ab", "cd"], "abcd", b"ab", [("a", 1, 2)], [("a",)], 5,
                                     [{"a": 1}], [b"ab"], None])
def test_put_many_takes_only_a_mapping_or_pairs(scratch, entries):
    # ["ab", "cd"] once stored a -> "b" and c -> "d".
    with pytest.raises(slither.InvalidType, match="entries"):
        scratch.put_many("t", entries)
    assert len(scratch.table("t")) == 0


def test_put_many_accepts_mappings_tuples_lists_and_generators(scratch):
    scratch.put_many("t", {"a": 1})
    scratch.put_many("t", [("b", 2), ["c", 3]])
    scratch.put_many("t", ((k, v) for k, v in [("d", 4)]))
    scratch.put_many("t", {"e": 5}.items())
    assert sorted(scratch.items("t")) == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]


def test_an_iterable_that_fails_keeps_its_own_error(scratch):
    def pairs():
        yield ("a", 1)
        raise RuntimeError("from the caller's generator")

    with pytest.raises(RuntimeError, match="caller's generator"):
        scratch.put_many("t", pairs())
    assert "a" not in scratch.table("t")


def test_bad_input_to_the_client_is_a_slither_error(client, scratch):
    cases = [
        lambda: scratch.put("t", 5, 1),                      # key: str or bytes
        lambda: scratch.put(5, "k", 1),                      # table: str
        lambda: scratch.delete("t", 1.5),
        lambda: scratch.compare_and_set("t", "k", "1", 2),   # version: int
        lambda: scratch.call_view(3),
        lambda: client._native.put(None, "t", "k", 1),
        lambda: slither.connect(namespace=3),
        lambda: slither.connect(runtime_dir=3.5),
    ]
    for case in cases:
        with pytest.raises(slither.InvalidType):
            case()
    with pytest.raises(slither.InvalidArgument, match="expected_version"):
        scratch.compare_and_set("t", "k", -1, 2)
    with pytest.raises(slither.InvalidArgument, match="expected_version"):
        scratch.compare_and_set("t", "k", 2**64, 2)


def test_bad_values_and_codec_input_are_slither_errors(scratch):
    # The codec path the client encodes with raises InvalidType / InvalidArgument,
    # never a bare TypeError or ValueError.
    cases = [
        (slither.InvalidType, lambda: scratch.put("t", "k", {"a": {1, 2}})),
        (slither.InvalidType, lambda: scratch.put("t", "k", {1: "int key"})),
        (slither.InvalidType, lambda: scratch.put("t", "k", np.zeros(2, dtype=np.complex64))),
        (slither.OutOfRange, lambda: scratch.put("t", "k", {"n": 2**63})),
        (slither.InvalidType, lambda: scratch.put_many("t", {"k": object()})),
        (slither.InvalidArgument, lambda: scratch.put("t", "k", "lone \ud800 surrogate")),
        (slither.InvalidArgument, lambda: scratch.put("t", "\ud800", 1)),
        (slither.InvalidArgument, lambda: scratch.put("t", "k", np.zeros((1,) * 40))),
        (slither.InvalidType, lambda: scratch.get("t", 3.5)),
        (slither.InvalidType, lambda: slither.encode(object())),
        (slither.InvalidType, lambda: slither.encode(1, buffers=())),
        (slither.InvalidType, lambda: slither.decode(12)),
    ]
    for expected, call in cases:
        with pytest.raises(expected) as info:
            call()
        assert isinstance(info.value, slither.SlitherError)
    assert "k" not in scratch.table("t")


class _Unconvertible:
    """An argument no public function accepts where it expects a str, int, value..."""

    def __repr__(self) -> str:
        return "<unconvertible>"


# Arguments of the wrong type or value, tried in every position of every call below.
_BAD_ARGS = [_Unconvertible(), 3.5, -1, b"\xff\xfe", ["list"], "no such name"]


def _calls(client, scratch):
    """Every public function and method with arguments it accepts: (name, fn, good args)."""
    table = scratch.table("t")
    return [
        ("connect", lambda *a: slither.connect(*a), [None, None, "default", 0.5]),
        ("encode", slither.encode, [{"a": 1}]),
        ("decode", slither.decode, [slither.encode(1)]),
        ("default_runtime_dir", slither.default_runtime_dir, ["default"]),
        ("Reader", lambda *a: slither.Reader(*a), [scratch.namespace, "scratch"]),
        ("Client.store", client.store, ["scratch"]),
        ("Client.map", lambda *a: client.map(*a[:2], batch_size=a[2], timeout=a[3]),
         ["m:f", [1], 1, 0.5]),
        ("Client.dispatch", lambda *a: list(client.dispatch(a[0], a[1], max_in_flight=a[2])),
         [[1], "m:f", 1]),
        ("Pipe.run", lambda *a: slither.Pipe("p").local("s", lambda x: x).run(
            None, a[0], session_id=a[1]), [[1], "s1"]),
        ("Store.get", scratch.get, ["t", "k"]),
        ("Store.get_all", scratch.get_all, ["t", "k"]),
        ("Store.view", scratch.view, ["t", "k"]),
        ("Store.version", scratch.version, ["t", "k"]),
        ("Store.contains", scratch.contains, ["t", "k"]),
        ("Store.size", scratch.size, ["t"]),
        ("Store.keys", scratch.keys, ["t", "k"]),
        ("Store.items", scratch.items, ["t"]),
        ("Store.table", scratch.table, ["t"]),
        ("Store.put", scratch.put, ["t", "k", 1]),
        ("Store.put_many", scratch.put_many, ["t", {"k": 1}]),
        ("Store.delete", scratch.delete, ["t", "k"]),
        ("Store.compare_and_set", scratch.compare_and_set, ["t", "k", 0, 1]),
        ("Store.compare_and_erase", scratch.compare_and_erase, ["t", "k", 0]),
        ("Store.get_with_version", scratch.get_with_version, ["t", "k"]),
        ("Store.kind", scratch.kind, ["t"]),
        ("Store.clear", scratch.clear, ["t"]),
        ("Table.__getitem__", table.__getitem__, ["k"]),
        ("Table.__contains__", table.__contains__, ["k"]),
        ("Table.get", table.get, ["k"]),
        ("Table.view", table.view, ["k"]),
        ("Table.version", table.version, ["k"]),
        ("Table.keys", table.keys, ["k"]),
        ("Table.put", table.put, ["k", 1]),
        ("Table.put_many", table.put_many, [{"k": 1}]),
        ("Table.delete", table.delete, ["k"]),
        ("Table.compare_and_set", table.compare_and_set, ["k", 0, 1]),
        ("Table.compare_and_erase", table.compare_and_erase, ["k", 0]),
        ("Table.get_with_version", table.get_with_version, ["k"]),
        ("Table.pop", table.pop, ["k"]),
        ("Table.setdefault", table.setdefault, ["k", 1]),
        ("Pipe", slither.Pipe, ["p"]),
        ("Pipe.local", slither.Pipe("p").local, ["s", lambda x: x]),
        ("Pipe.python", slither.Pipe("p").python, ["s", "m:f"]),
        ("Pipe.router", slither.Pipe("p").router, ["r", [(lambda x: True, "o")]]),
        ("Pipe.output", slither.Pipe("p").output, ["o"]),
        ("Pipe.on_error", slither.Pipe("p").local("s", lambda x: x).on_error, ["s", "skip"]),
        ("telemetry.attach", slither.telemetry.attach, ["slither.", lambda *a: None]),
        ("Retry", slither.Retry, [3, 0.1, "halt"]),
    ]


def test_every_public_function_raises_only_slither_errors_for_bad_arguments(client, scratch):
    # Each argument in turn replaced by each bad one: whatever is refused is
    # refused with a SlitherError (InvalidType is also a TypeError, InvalidArgument
    # a ValueError, NotFound a KeyError), never a bare built-in exception.
    scratch.put("t", "k", 1)
    refused, offenders = 0, []
    for name, fn, good in _calls(client, scratch):
        for i in range(len(good)):
            for bad in _BAD_ARGS:
                args = list(good)
                args[i] = bad
                try:
                    result = fn(*args)
                except slither.SlitherError:
                    refused += 1
                except Exception as e:  # noqa: BLE001 - the point of the test
                    offenders.append(f"{name}(argument {i} = {bad!r}) raised {type(e).__name__}: {e}")
                else:
                    if hasattr(result, "detach"):
                        result.detach()
                    if isinstance(result, slither.Client):
                        result.close()
    assert not offenders, "\n".join(offenders)
    assert refused > 100  # the loop did reach the checks
    assert "k" in scratch.table("t")  # writes refused, not half-applied


def test_a_message_that_is_not_utf8_is_raised_as_itself(scratch):
    # Keys are bytes: a message that quotes one is not always UTF-8. The error
    # must still be the slither error, its bad bytes replaced.
    with pytest.raises(slither.NotFound, match="no key '\ufffd\ufffd'") as info:
        scratch.view("t", b"\xff\xfe")
    assert isinstance(info.value, KeyError)
    with pytest.raises(slither.InvalidType, match=r"entries\['\ufffd'\]: object of type 'set'"):
        scratch.put_many("t", {b"\xff": {1}})


def test_closed_client(broker):
    c = broker.connect()
    store = c.store("features")
    c.close()
    c.close()
    with pytest.raises(slither.BrokerUnavailable, match="closed"):
        c.ping()
    assert store.get("emb", "user:1")["name"] == "ada"  # reads need no broker


def test_reader_of_unknown_store(broker):
    with pytest.raises(slither.NotFound):
        slither.Reader(broker.namespace, "nosuchstore")


@pytest.fixture
def silent_broker(tmp_path):
    """A runtime dir whose control socket accepts connections but never answers."""
    run = tmp_path / "silent"
    run.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(run / "control"))
    sock.listen(16)
    yield run
    sock.close()


def test_silent_broker_is_unavailable_within_timeout(silent_broker):
    start = time.monotonic()
    with pytest.raises(slither.BrokerUnavailable):
        slither.connect(runtime_dir=silent_broker, namespace="silent", timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3.0


def test_waiting_for_a_broker_releases_the_gil(silent_broker):
    # While one thread waits out a connect timeout, Python code in another keeps running.
    result: list[BaseException] = []

    def wait() -> None:
        try:
            slither.connect(runtime_dir=silent_broker, namespace="silent", timeout=1.0)
        except slither.BrokerUnavailable as e:
            result.append(e)

    th = threading.Thread(target=wait)
    th.start()
    spins = 0
    while th.is_alive():
        spins += 1
    th.join()
    assert result and spins > 100_000
