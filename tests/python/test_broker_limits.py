"""The broker's bounds as a Python client meets them: connections past max_clients
are refused, a request that would decode too large is refused, and errors never
repeat a request's bulk."""

from __future__ import annotations

import time

import pytest

import slither
from conftest import make_broker

LIMITS = """
[broker]
max_clients = 3
max_decoded_bytes = 8388608
"""


@pytest.fixture
def limited_broker(tmp_path):
    b = make_broker(tmp_path, "lim")
    b.config.write_text(LIMITS + b.config.read_text())
    b.start()
    yield b
    b.stop()


def _wait_for_clients(c, n):
    deadline = time.monotonic() + 10
    while c.stats()["clients"] != n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.stats()["clients"] == n


def test_connections_past_max_clients_are_refused(limited_broker):
    first = limited_broker.connect(timeout=2.0)
    # The fixture's own probe connection must be gone before the count is full.
    _wait_for_clients(first, 1)
    clients = [first] + [limited_broker.connect(timeout=2.0) for _ in range(2)]
    try:
        with pytest.raises(slither.BrokerUnavailable):
            limited_broker.connect(timeout=1.0)
        for c in clients:
            c.ping()
        stats = clients[0].stats()
        assert stats["max_clients"] == 3 and stats["refused_connections"] >= 1
    finally:
        for c in clients:
            c.close()
    # The places are free again, once the broker has seen them go.
    deadline = time.monotonic() + 10
    while True:
        try:
            with limited_broker.connect(timeout=1.0) as c:
                c.ping()
            break
        except slither.BrokerUnavailable:
            assert time.monotonic() < deadline



def test_a_request_that_decodes_too_large_is_refused(limited_broker):
    with limited_broker.connect() as c:
        store = c.store("scratch")
        # 1M nulls: about 1 MB on the wire, tens of MB once decoded.
        with pytest.raises(slither.LimitExceeded, match="max_decoded_bytes"):
            store.put("t", "nulls", [None] * 1_000_000)
        assert "nulls" not in store.table("t")
        store.put("t", "few", [None] * 1000)


def test_errors_do_not_repeat_the_request(limited_broker):
    with limited_broker.connect() as c:
        store = c.store("scratch")
        with pytest.raises(slither.NotFound) as info:
            store.put("x" * 1_000_000, "k", 1)
        assert len(str(info.value)) < 1024
