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
    with pytest.raises(TypeError, match="float16|element format"):
        scratch.put("t", "k", np.zeros(2, dtype=np.float16))
    assert "k" not in scratch.table("t")


def test_no_broker_is_unavailable_within_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(slither.BrokerUnavailable):
        slither.connect(runtime_dir=tmp_path / "nobody-here", namespace="nobody", timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_bad_timeout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="timeout"):
        slither.connect(runtime_dir=tmp_path, timeout=0)


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
