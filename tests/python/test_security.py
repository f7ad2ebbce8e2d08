"""Owner-only permissions (runtime directory 0700, shared-memory segments 0600), and
tcp endpoints that let in only CURVE keys on the broker's allow-list."""

from __future__ import annotations

import glob
import os
import re
import signal
import stat
import subprocess
import time

import pytest

import slither
from conftest import BROKER_BIN, START_TIMEOUT, unique_namespace


def test_runtime_dir_is_owner_only(broker):
    mode = stat.S_IMODE(os.stat(broker.runtime_dir).st_mode)
    assert mode == 0o700, oct(mode)


def test_segments_are_owner_only(broker, features):
    segments = glob.glob(f"/dev/shm/slither.{broker.namespace}.*")
    assert any(".features." in s for s in segments), segments
    for path in segments:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))
        assert st.st_uid == os.getuid()


def _keygen(base):
    subprocess.run([str(BROKER_BIN), "keygen", "--out", str(base)], check=True, capture_output=True)
    return (base.with_suffix(".pub").read_text().strip(), base.with_suffix(".key").read_text().strip())


@pytest.fixture
def tcp_broker(tmp_path):
    """A broker on a loopback tcp port with CURVE keys: (endpoint, server key, dir)."""
    server_pub, _ = _keygen(tmp_path / "broker")
    _keygen(tmp_path / "worker")
    (tmp_path / "clients").write_text("# the worker\n" + (tmp_path / "worker.pub").read_text())
    os.chmod(tmp_path / "clients", 0o600)
    (tmp_path / "slither.toml").write_text(
        '[broker]\ncontrol_endpoint = "tcp://127.0.0.1:*"\n'
        'curve_secret_key_file = "broker.key"\ncurve_allowed_clients_file = "clients"\n'
        '[[stores]]\nname = "s"\n[[stores.tables]]\nname = "t"\n')
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BROKER_BIN), "--config", str(tmp_path / "slither.toml"), "--runtime-dir",
             str(tmp_path / "run"), "--namespace", unique_namespace("tcp")],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        endpoint = None
        while endpoint is None:
            match = re.search(r" at (tcp://127\.0\.0\.1:\d+)", log.read_text())
            if match:
                endpoint = match.group(1)
            elif proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tcp broker did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        yield endpoint, server_pub, tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_tcp_serves_an_allowed_key(tcp_broker):
    endpoint, server_pub, keys = tcp_broker
    with slither.connect(endpoint=endpoint, curve_server_key=server_pub,
                         curve_secret_key=(keys / "worker.key").read_text().strip()) as c:
        c.ping()
        assert c.store("s").put("t", "k", 1) >= 1


def test_tcp_refuses_an_unknown_key_and_no_key(tcp_broker):
    endpoint, server_pub, keys = tcp_broker
    _, stranger_secret = _keygen(keys / "stranger")
    with pytest.raises(slither.BrokerUnavailable):
        slither.connect(endpoint=endpoint, curve_server_key=server_pub,
                        curve_secret_key=stranger_secret, timeout=1.0)
    with pytest.raises(slither.BrokerUnavailable):
        slither.connect(endpoint=endpoint, timeout=1.0)
