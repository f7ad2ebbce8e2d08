"""Several processes at once: cross-process reads, a hammer run, a killed broker;
fork, Ctrl-C and a restarted broker seen from the Python client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
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


# ---- fork, Ctrl-C and a broker restart --------------------------------------


def _is_stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state."""
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        stat = (task / "stat").read_text()
        if stat[stat.rindex(")") + 2] != "T":
            return False
    return True


@contextlib.contextmanager
def stopped(broker) -> Iterator[None]:
    """The broker process is SIGSTOPped (alive, answering nothing) for the block."""
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        # kill() returns before every thread has stopped: wait until the
        # kernel reports the whole process stopped, or a loaded machine lets
        # the broker answer one more request.
        deadline = time.monotonic() + 10
        while not _is_stopped(broker.proc.pid):
            assert time.monotonic() < deadline, "the broker did not stop"
            time.sleep(0.01)
        yield
    finally:
        broker.proc.send_signal(signal.SIGCONT)


def test_fork_while_another_thread_is_inside_a_call(fresh_broker):
    # The parent's mutex is held by a thread that does not exist in the child,
    # and its socket belongs to the parent: the child must connect anew, not
    # wait forever on that mutex or blame the broker after its timeout.
    out = run_python(f"""
        import os, signal, threading, time, slither
        c = slither.connect(runtime_dir={str(fresh_broker.runtime_dir)!r},
                            namespace={fresh_broker.namespace!r}, timeout=20)
        store = c.store("scratch")
        store.put("t", "before-fork", 1)
        os.kill({fresh_broker.proc.pid}, signal.SIGSTOP)
        blocked = threading.Thread(target=c.ping)
        blocked.start()
        time.sleep(0.3)  # it is now inside c.ping(), holding the client's mutex
        child = os.fork()
        if child == 0:
            try:
                c.ping()
                store.put("t", "from-child", 2)
                ok = store.get("t", "from-child") == 2 and store.get("t", "before-fork") == 1
                os._exit(0 if ok else 1)
            except BaseException as e:
                print("child:", repr(e), flush=True)
                os._exit(2)
        os.kill({fresh_broker.proc.pid}, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid:
                print("child exit", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.02)
        else:
            os.kill(child, signal.SIGKILL)
            print("child hung")
        blocked.join()
        c.ping()
    """)
    assert "child exit 0" in out, out


def test_a_broker_that_answers_nothing_is_unavailable_not_timeout(fresh_broker):
    c = fresh_broker.connect(timeout=0.5)
    store = c.store("scratch")
    with stopped(fresh_broker):  # alive as a process, but it answers not even a ping
        start = time.monotonic()
        with pytest.raises(slither.BrokerUnavailable, match="nor a ping"):
            store.put("t", "k", 1)
        assert time.monotonic() - start < 0.5 + 0.5 + 2.0  # the timeout, then the ping's
    c.ping()


def test_ctrl_c_interrupts_a_blocked_call_promptly(fresh_broker, scratch_of):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, slither
        c = slither.connect(runtime_dir={str(fresh_broker.runtime_dir)!r},
                            namespace={fresh_broker.namespace!r}, timeout=60)
        store = c.store("scratch")
        print("ready", flush=True)
        sys.stdin.readline()
        print("putting", flush=True)
        try:
            store.put("t", "interrupted", 1)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with stopped(fresh_broker):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "putting"
            time.sleep(0.3)  # the put is now waiting for a reply
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - start
    finally:
        proc.kill()
    assert proc.returncode == 3, (out, err)
    assert "interrupted" in out
    # Signals are looked at every 50 ms: well under a second, 3 s for a loaded
    # machine (and the child's exit), never the 60 s timeout.
    assert elapsed < 3, elapsed
    # An interrupted write may already be applied: the entry's version tells.
    store = scratch_of(fresh_broker)
    deadline = time.monotonic() + 10
    while store.version("t", "interrupted") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.version("t", "interrupted") > 0
    assert store.get("t", "interrupted") == 1


@pytest.fixture
def scratch_of():
    clients = []

    def open_scratch(broker):
        c = broker.connect()
        clients.append(c)
        return c.store("scratch")

    yield open_scratch
    for c in clients:
        c.close()


def test_a_store_follows_its_broker_across_a_restart(fresh_broker):
    c = fresh_broker.connect(timeout=2)
    store = c.store("scratch")
    v1 = store.put("t", "k", "old")
    held = store.view("t", "k")  # over the old mapping: must stay valid
    old = store.incarnation

    assert fresh_broker.stop() == 0
    fresh_broker.start()  # same namespace: a new store
    other = fresh_broker.connect().store("scratch")
    other.put("t", "k", "written after the restart")  # its version may well equal v1

    # A write meant for the old store is refused, and so never overwrites the new one.
    with pytest.raises(slither.WriterGone, match="not applied"):
        store.compare_and_set("t", "k", v1, "stale overwrite")
    assert other.get("t", "k") == "written after the restart"
    assert store.incarnation != old  # the Store now reads the new store
    assert store.incarnation == other.incarnation
    assert store.get("t", "k") == "written after the restart"
    v = store.put("t", "k", "new")
    assert store.get("t", "k") == "new" and store.version("t", "k") == v  # read-your-writes
    assert slither.decode(bytes(held)) == "old"


def test_reads_follow_a_killed_and_restarted_broker(fresh_broker):
    c = fresh_broker.connect(timeout=2)
    store = c.store("scratch")
    store.put("t", "k", "old")
    fresh_broker.kill()
    fresh_broker.start()  # replaces the dead broker's store
    fresh_broker.connect().store("scratch").put("t", "k", "new")
    assert store.get("t", "k") == "new"  # attached again on its own
    assert store.table("t")["k"] == "new"


def test_a_table_handle_follows_a_restart_whose_store_numbers_tables_otherwise(fresh_broker):
    # The handle caches its table's number; the new store gives that number to
    # another table, so a number kept across the restart would read the wrong one.
    store = fresh_broker.connect(timeout=2).store("scratch")
    table = store.create_table("late")
    table["k"] = "old"
    assert table["k"] == "old" and table.get("k") == "old"
    fresh_broker.kill()
    fresh_broker.start()
    new = fresh_broker.connect().store("scratch")
    new.create_table("squatter")["k"] = "not mine"
    new.create_table("late")["k"] = "new"
    assert table["k"] == "new" and table.get("k") == "new" and "k" in table


def test_reads_of_a_store_whose_broker_stopped_raise_writer_gone(fresh_broker):
    store = fresh_broker.connect(timeout=2).store("scratch")
    store.put("t", "k", 1)
    assert fresh_broker.stop() == 0
    with pytest.raises(slither.WriterGone, match="closed by its broker"):
        store.get("t", "k")


def test_array_erased_between_the_two_reads_of_get_reads_as_absent(broker, scratch):
    # get() of an array peeks at the entry, then reads it; an erase between
    # the two must read as absent, never as an error or garbage. The window is
    # short: a tight loop meets it a few times a second.
    seconds = 5.0
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, numpy as np, slither
        store = slither.connect(runtime_dir={str(broker.runtime_dir)!r},
                                namespace={broker.namespace!r}).store("scratch")
        arr = np.arange(64, dtype=np.float64)
        end = time.monotonic() + {seconds}
        while time.monotonic() < end:
            store.put("t", "arr", arr)
            store.delete("t", "arr")
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrays = absent = 0
    last = None
    errors: list[str] = []
    get = scratch.get
    try:
        while writer.poll() is None:
            try:
                v = get("t", "arr")
            except slither.SlitherError as e:
                errors.append(repr(e))
                continue
            if v is None:
                absent += 1
            else:
                arrays += 1
                last = v
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert not errors, (len(errors), errors[:3])
    assert arrays > 0 and absent > 0, (arrays, absent)
    np.testing.assert_array_equal(last, np.arange(64, dtype=np.float64))
