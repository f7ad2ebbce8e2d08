"""A slither-broker of its own for a Python benchmark: started from a config text in a
temporary directory, waited for until it answers, stopped with SIGTERM.

The binary is $SLITHER_BROKER_BIN, else build/broker/slither-broker of this checkout.
Benchmarks outside this directory import it after putting the directory on sys.path.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import slither

REPO = Path(__file__).resolve().parents[3]
BROKER_BIN = Path(os.environ.get("SLITHER_BROKER_BIN", REPO / "build" / "broker" / "slither-broker"))


class BenchBroker:
    """A running broker: ``client`` is connected to it, ``namespace`` and ``runtime_dir``
    say where, ``proc`` is its process. ``stop()`` (or leaving a ``with`` block) ends it."""

    def __init__(self, base: Path, config: str, prefix: str = "bench", timeout: float = 5.0) -> None:
        self.namespace = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.runtime_dir = base / "run"
        path = base / "slither.toml"
        path.write_text(textwrap.dedent(config))
        self.log_path = base / "broker.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BROKER_BIN), "--config", str(path), "--runtime-dir", str(self.runtime_dir),
             "--namespace", self.namespace], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                slither.connect(runtime_dir=self.runtime_dir, namespace=self.namespace,
                                timeout=0.5).close()
                break
            except slither.BrokerUnavailable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slither-broker did not start; see {self.log_path}")
                time.sleep(0.05)
        self.client = slither.connect(runtime_dir=self.runtime_dir, namespace=self.namespace,
                                      timeout=timeout)

    def stop(self) -> None:
        """Closes the client and stops the broker (its shared memory goes with it). Safe twice."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> BenchBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
