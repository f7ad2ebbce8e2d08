"""Owner-only permissions (runtime directory 0700, shared-memory segments 0600), tcp
endpoints that let in only CURVE keys on the broker's allow-list, and what a client
refuses to trust: another user's runtime directory, socket or ancestor."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BROKER_BIN, START_TIMEOUT, make_broker, unique_namespace

import slither


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


# ---- what a client checks before it connects -------------------------------

OTHER_UID = 65534  # "another local user" (tests run as root)


@contextlib.contextmanager
def owned_by(path: Path, uid: int) -> Iterator[None]:
    """Hands `path` to `uid` for the block, then back to this user."""
    os.lchown(path, uid, -1)
    try:
        yield
    finally:
        os.lchown(path, os.geteuid(), -1)


def test_runtime_dir_of_another_user_is_refused(fresh_broker):
    with owned_by(fresh_broker.runtime_dir, OTHER_UID):
        with pytest.raises(slither.InvalidArgument, match=f"refusing.*{fresh_broker.runtime_dir}.*uid {OTHER_UID}"):
            fresh_broker.connect()
    fresh_broker.connect().ping()


def test_control_socket_of_another_user_is_refused(fresh_broker):
    socket_file = fresh_broker.runtime_dir / "control"
    with owned_by(socket_file, OTHER_UID):
        with pytest.raises(slither.InvalidArgument, match=f"control.*uid {OTHER_UID}"):
            fresh_broker.connect()
        with pytest.raises(slither.InvalidArgument, match=f"uid {OTHER_UID}"):
            slither.connect(endpoint=f"ipc://{socket_file}")


def test_runtime_dir_others_may_enter_is_refused(fresh_broker):
    os.chmod(fresh_broker.runtime_dir, 0o755)
    try:
        with pytest.raises(slither.InvalidArgument, match="0755"):
            fresh_broker.connect()
    finally:
        os.chmod(fresh_broker.runtime_dir, 0o700)


def test_every_ancestor_of_a_custom_runtime_dir_is_checked(tmp_path):
    # Whoever owns a directory above the runtime dir can swap what is below it.
    broker = make_broker(tmp_path, "anc")
    broker.runtime_dir = tmp_path / "a" / "b" / "run"
    broker.runtime_dir.parent.mkdir(parents=True)
    broker.start()
    try:
        with owned_by(tmp_path / "a", OTHER_UID):
            with pytest.raises(slither.InvalidArgument, match=f"'{tmp_path / 'a'}'.*uid {OTHER_UID}"):
                broker.connect()
        os.chmod(tmp_path / "a", 0o777)
        with pytest.raises(slither.InvalidArgument, match="0777"):
            broker.connect()
        os.chmod(tmp_path / "a", 0o1777)  # sticky, like /tmp: fine
        broker.connect().ping()
    finally:
        os.chmod(tmp_path / "a", 0o755)
        broker.stop()


def test_default_runtime_dir_planted_by_another_user_does_not_capture_the_client(
    tmp_path, monkeypatch
):
    # With XDG_RUNTIME_DIR unset the default is /tmp/slither-<uid>/<ns>: any
    # local user can create that first. Here a broker serves there, and the
    # directory then belongs to another user: the client must not talk to it.
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    broker = make_broker(tmp_path, "xdg")
    broker.runtime_dir = Path(slither.default_runtime_dir(broker.namespace))
    assert str(broker.runtime_dir).startswith(f"/tmp/slither-{os.geteuid()}/")
    broker.start()
    try:
        slither.connect(namespace=broker.namespace, timeout=2).ping()
        with owned_by(broker.runtime_dir, OTHER_UID):
            with pytest.raises(slither.InvalidArgument, match=f"uid {OTHER_UID}"):
                slither.connect(namespace=broker.namespace, timeout=2)
    finally:
        broker.stop()


@pytest.mark.parametrize("namespace", ["../../x", "", "a/b", "a.b", "n" * 65, "with space"])
def test_namespace_is_validated_by_the_client(tmp_path, namespace):
    with pytest.raises(slither.InvalidArgument, match="namespace"):
        slither.connect(namespace=namespace)
    with pytest.raises(slither.InvalidArgument, match="namespace"):
        slither.connect(runtime_dir=tmp_path, namespace=namespace)
    with pytest.raises(slither.InvalidArgument, match="namespace"):
        slither.default_runtime_dir(namespace)
    with pytest.raises(slither.InvalidArgument):
        slither.Reader(namespace, "store")
