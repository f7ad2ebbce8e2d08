"""Fixtures that run a real `slither-broker` process for the Python client tests.

The broker binary comes from $SLITHER_BROKER_BIN (set by scripts/test.sh), else
<repo>/build/broker/slither-broker. Every broker gets a fresh runtime directory
under pytest's tmp dir and a namespace unique to this test session, and is
stopped (SIGTERM, then SIGKILL) when its fixture ends. At the end of the
session, whatever those namespaces left in /dev/shm is removed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import slither

# A test run started in the background of a non-interactive shell (CI, nohup,
# `cmd &`) inherits SIGINT ignored, and exec passes that on: every Python
# child would then ignore Ctrl-C, and the tests of Ctrl-C could not work. A
# handler of our own is reset to the default across exec, so children start
# as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[2]
BROKER_BIN = Path(os.environ.get("SLITHER_BROKER_BIN", REPO / "build" / "broker" / "slither-broker"))
START_TIMEOUT = 20.0

# Rows the broker loads from JSON Lines into features.emb: what "C++ wrote".
LOADED_ROWS = [
    {"id": "user:1", "name": "ada", "score": 0.5, "tags": ["a", "b"], "n": 1},
    {"id": "user:2", "name": "bob", "score": -1.25, "tags": [], "n": -7},
    {"id": "user:3", "name": "cyd", "score": 1e300, "tags": ["x"], "n": 9007199254740993},
    {"id": "item:1", "name": "émoji ✓", "score": 0.0, "tags": None, "n": 0},
]

CONFIG = """\
[[stores]]
name = "features"
load = {{ file = "{rows}", table = "emb", key = "id" }}

[[stores.tables]]
name = "emb"
kind = "set"

[[stores.tables]]
name = "docs"
kind = "set"

[[stores.tables]]
name = "bag"
kind = "bag"

[[stores]]
name = "scratch"

[[stores.tables]]
name = "t"
kind = "set"

[[stores.tables]]
name = "ord"
kind = "ordered_set"
"""


#: Every namespace this session handed out, for the cleanup at its end.
_NAMESPACES: set[str] = set()


def unique_namespace(tag: str) -> str:
    ns = f"pyt-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    _NAMESPACES.add(ns)
    return ns


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Removes the shared-memory objects of this session's namespaces.

    A broker killed with SIGKILL (tests of crashes and restarts do that) leaves
    its segments, registry and lock in /dev/shm. Only names of namespaces this
    session made are touched: they are unique to it, so other runs sharing the
    machine keep theirs.
    """
    shm = Path("/dev/shm")
    for ns in _NAMESPACES:
        for leftover in shm.glob(f"slither.{ns}.*"):
            leftover.unlink(missing_ok=True)


@dataclass
class Broker:
    """A `slither-broker` child process and where to reach it."""

    namespace: str
    runtime_dir: Path
    config: Path
    log: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if not BROKER_BIN.exists():
            pytest.fail(f"broker binary {BROKER_BIN} not found: build it or set SLITHER_BROKER_BIN")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BROKER_BIN), "--config", str(self.config), "--runtime-dir",
                 str(self.runtime_dir), "--namespace", self.namespace, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self.connect(timeout=0.5) as c:
                    c.ping()
                return
            except slither.BrokerUnavailable:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"broker did not answer within {START_TIMEOUT}s:\n{self.log_tail()}")
                time.sleep(0.05)

    def connect(self, timeout: float = 5.0) -> slither.Client:
        return slither.connect(runtime_dir=self.runtime_dir, namespace=self.namespace, timeout=timeout)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 10 s); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def make_broker(base: Path, tag: str) -> Broker:
    base.mkdir(parents=True, exist_ok=True)
    rows = base / "rows.jsonl"
    rows.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in LOADED_ROWS))
    config = base / "slither.toml"
    config.write_text(CONFIG.format(rows=rows))
    return Broker(namespace=unique_namespace(tag), runtime_dir=base / "run", config=config,
                  log=base / "broker.log")


#: The worker modules the pools' Python workers import (dispatch and pipe handlers).
WORKERS = Path(__file__).resolve().parent / "workers"

#: A pool of Python workers quick to notice a dead worker and to restart it.
POOL = """
[[pools]]
name = "default"
size = {size}
python = "{python}"
pythonpath = ["{workers}"]
heartbeat_ms = 200
heartbeat_misses = 5
restart_backoff_ms = 20
restart_backoff_max_ms = 200
max_start_failures = 3
"""


def pool_broker(base: Path, tag: str, size: int = 2, extra: str = "") -> Broker:
    """A broker (not started) with the stores of CONFIG and a pool of `size` Python workers."""
    b = make_broker(base, tag)
    b.config.write_text(
        CONFIG.format(rows=base / "rows.jsonl")
        + POOL.format(size=size, python=sys.executable, workers=WORKERS)
        + extra
    )
    return b


def workers(client: slither.Client, pool: str = "default") -> list[dict]:
    """The workers `pool` has now, as the broker's stats show them."""
    return client.stats()["dispatch"]["pools"][pool]["workers"]


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    """`cond()`'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_workers(client: slither.Client, n: int) -> list[dict]:
    return wait_for(lambda: (w := workers(client)) and len(w) >= n and w, what=f"{n} workers")


@pytest.fixture(scope="module")
def pclient(pbroker: Broker) -> Iterator[slither.Client]:
    """A client of the module's own `pbroker` (a pool_broker), once its 2 workers have joined."""
    with pbroker.connect() as c:
        wait_workers(c, 2)
        yield c


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker shared by the session (tests that kill a broker start their own)."""
    b = make_broker(tmp_path_factory.mktemp("broker"), "s")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of its own, for tests that stop or kill it."""
    b = make_broker(tmp_path, "f")
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="session")
def client(broker: Broker) -> Iterator[slither.Client]:
    with broker.connect() as c:
        yield c


@pytest.fixture(scope="session")
def features(client: slither.Client) -> slither.Store:
    return client.store("features")


@pytest.fixture
def scratch(client: slither.Client) -> Iterator[slither.Store]:
    """The `scratch` store with tables `t` and `ord` emptied before each test."""
    store = client.store("scratch")
    store.clear("t")
    store.clear("ord")
    yield store
