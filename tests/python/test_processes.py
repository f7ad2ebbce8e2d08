"""Several processes at once: cross-process reads, a hammer run, a killed broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import slither
from hammer_worker import HOT_KEYS, check_value

HERE = Path(__file__).resolve().parent
HAMMER_SECONDS = float(os.environ.get("SLITHER_HAMMER_SECONDS", "30"))


def run_python(code: str, timeout: float = 60) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=HERE)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fresh_process_reads_what_python_wrote(broker, scratch):
    arr = np.linspace(0, 1, 1000, dtype=np.float32)
    scratch.put("t", "from-python", {"arr": arr, "s": "ü", "n": 42})
    out = run_python(f"""
        import numpy as np, slither
        r = slither.Reader({broker.namespace!r}, "scratch")
        v = r.get("t", "from-python")
        print(v["n"], v["s"], float(v["arr"].sum()), v["arr"].dtype)
    """)
    n, s, total, dtype = out.split()
    assert (int(n), s, dtype) == (42, "ü", "float32")
    assert abs(float(total) - float(arr.sum())) < 1e-3


def spawn(role: str, broker, table: str, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "hammer_worker.py"), role, str(broker.runtime_dir),
         broker.namespace, "features", table, str(HAMMER_SECONDS), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)


def test_hammer_two_readers_one_writer(broker, features):
    features.clear("docs")
    procs = [spawn("writer", broker, "docs", 1), spawn("reader", broker, "docs", 2),
             spawn("reader", broker, "docs", 3)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=HAMMER_SECONDS + 120)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    w, *readers = reports
    assert w["writes"] > 100
    for r in readers:
        assert r["error_count"] == 0, r["errors"]
        assert r["reads"] > 1000 and r["views"] > 0
    # Nothing lost: every key holds the writer's last value, every batch entry is there.
    docs = features.table("docs")
    for key, seq in w["last"].items():
        v = docs[key]
        check_value(v, key)
        assert v["seq"] == seq, key
    assert len(w["last"]) == HOT_KEYS
    for u in range(1, w["unique"] + 1):
        v = docs[f"u{u}"]
        assert v["seq"] == u and zlib.crc32(v["payload"]) == v["crc"]
    features.clear("docs")


def test_killed_broker_is_unavailable_then_restart_serves(fresh_broker):
    c = fresh_broker.connect(timeout=1.0)
    store = c.store("scratch")
    store.put("t", "before", 1)
    fresh_broker.kill()  # SIGKILL: no cleanup at all

    start = time.monotonic()
    with pytest.raises(slither.BrokerUnavailable):
        store.put("t", "after", 2)
    assert time.monotonic() - start < 1.0 + 2.0
    with pytest.raises(slither.BrokerUnavailable):
        c.ping()

    fresh_broker.start()  # same namespace and runtime dir: it cleans up and serves again
    c.ping()  # the old client reconnects by itself
    fresh = fresh_broker.connect().store("scratch")
    assert fresh.put("t", "after", 2) >= 1
    assert fresh.get("t", "after") == 2
    assert fresh.get("t", "before") is None  # a restarted broker starts its stores anew
    assert fresh_broker.stop() == 0
    assert not list(Path("/dev/shm").glob(f"slither.{fresh_broker.namespace}.*"))
