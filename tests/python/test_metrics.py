"""Broker metrics from outside: the real slither-broker with its metrics
endpoint scraped by urllib, `slither-broker stats`, and the endpoint's
refusals (non-loopback addresses, other paths, garbage)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BROKER_BIN, Broker, make_broker


def sample(text: str, series: str) -> float | None:
    """The value of the exposition line for `series` (name and labels as printed)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1:])
    return None


def scrape(endpoint: str, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{endpoint}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def stats_cmd(b: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BROKER_BIN), "stats", "--namespace", b.namespace,
                           "--runtime-dir", str(b.runtime_dir), *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def metrics_broker(tmp_path: Path) -> Iterator[Broker]:
    b = make_broker(tmp_path, "m")
    b.extra_args = ["--metrics", "127.0.0.1:0"]
    b.start()
    yield b
    b.stop()


def endpoint_of(b: Broker) -> str:
    out = stats_cmd(b, "--json")
    assert out.returncode == 0, out.stderr
    ep = json.loads(out.stdout)["metrics_endpoint"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", ep) and not ep.endswith(":0"), ep
    return ep


def test_scrapes_move_with_puts(metrics_broker: Broker) -> None:
    ep = endpoint_of(metrics_broker)
    status, ctype, before = scrape(ep)
    assert status == 200
    assert "version=0.0.4" in ctype
    assert "# TYPE slither_requests_total counter" in before
    assert "# TYPE slither_dispatch_batch_duration_seconds histogram" in before
    bytes0 = sample(before, 'slither_store_bytes{store="scratch"}')
    assert bytes0 is not None
    puts0 = sample(before, 'slither_requests_total{type="put"}') or 0

    with metrics_broker.connect() as c:
        store = c.store("scratch")
        for i in range(10):
            store.put("t", f"k{i}", "v" * 1000)
        with pytest.raises(KeyError):
            store.put("nope", "k", 1)
        _, _, after = scrape(ep)
        assert sample(after, 'slither_requests_total{type="put"}') == puts0 + 11
        assert sample(after, 'slither_store_bytes{store="scratch"}') > bytes0 + 10_000
        assert sample(after, 'slither_store_entries{store="scratch"}') == 10
        assert sample(after, 'slither_request_errors_total{code="not_found"}') >= 1
        assert sample(after, "slither_clients_connected") >= 1
        # Replacing values leaves garbage until readers move on.
        for i in range(10):
            store.put("t", f"k{i}", "w" * 1000)
        _, _, later = scrape(ep)
        assert sample(later, 'slither_store_garbage_bytes{store="scratch"}') is not None


def test_only_get_metrics_is_served(metrics_broker: Broker) -> None:
    ep = endpoint_of(metrics_broker)
    assert scrape(ep, "/")[0] == 404
    assert scrape(ep, "/metricsx")[0] == 404
    req = urllib.request.Request(f"http://{ep}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code in (400, 404)


def test_garbage_does_not_hurt_it(metrics_broker: Broker) -> None:
    ep = endpoint_of(metrics_broker)
    host, port = ep.rsplit(":", 1)
    for junk in [b"\x00\xff" * 1000 + b"\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000,
                 b"GET\r\n\r\n", b""]:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                reply = s.recv(4096)
            except OSError:  # reset or closed by the server while we wrote
                reply = b""
            assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    assert scrape(ep)[0] == 200
    assert metrics_broker.proc is not None and metrics_broker.proc.poll() is None


def test_non_loopback_needs_allow_remote(tmp_path: Path) -> None:
    b = make_broker(tmp_path, "r")
    proc = subprocess.run([str(BROKER_BIN), "--config", str(b.config), "--runtime-dir",
                           str(b.runtime_dir), "--namespace", b.namespace, "--metrics",
                           "0.0.0.0:0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "allow_remote" in proc.stderr and "0.0.0.0:0" in proc.stderr


def test_the_config_sets_the_endpoint(tmp_path: Path) -> None:
    b = make_broker(tmp_path, "c")
    b.config.write_text('[broker]\nmetrics_endpoint = "127.0.0.1:0"\n\n' + b.config.read_text())
    b.start()
    try:
        assert scrape(endpoint_of(b))[0] == 200
    finally:
        assert b.stop() == 0


def test_stats_command_prints_a_summary_and_the_metrics(metrics_broker: Broker) -> None:
    out = stats_cmd(metrics_broker)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"# broker namespace={metrics_broker.namespace} pid=")
    assert "# metrics endpoint: http://127.0.0.1:" in out.stdout
    assert "# TYPE slither_write_queue_depth gauge" in out.stdout
    assert sample(out.stdout, 'slither_store_entries{store="features"}') == 4
    doc = json.loads(stats_cmd(metrics_broker, "--json").stdout)
    assert doc["ns"] == metrics_broker.namespace
    assert doc["metrics"]["slither_store_entries"]["type"] == "gauge"
    # --config finds the broker through its file too (the runtime dir comes from the flag).
    by_config = subprocess.run([str(BROKER_BIN), "stats", "--config", str(metrics_broker.config),
                                "--namespace", metrics_broker.namespace, "--runtime-dir",
                                str(metrics_broker.runtime_dir)],
                               capture_output=True, text=True, timeout=30)
    assert by_config.returncode == 0, by_config.stderr


def test_stats_command_without_a_broker_and_its_help(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run([str(BROKER_BIN), "stats", "--namespace", "nobody-here", "--runtime-dir",
                          str(tmp_path / "none"), "--timeout-ms", "300"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "no broker of namespace 'nobody-here'" in out.stderr
    assert time.monotonic() - t0 < 20
    help_text = subprocess.run([str(BROKER_BIN), "stats", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    for flag in ("--namespace", "--config", "--runtime-dir", "--json", "--timeout-ms"):
        assert flag in help_text
    assert "--metrics" in subprocess.run([str(BROKER_BIN), "--help"], capture_output=True,
                                         text=True, timeout=30).stdout
