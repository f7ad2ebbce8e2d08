"""slither.launch, the operator's commands (python -m slither) and SIGHUP, with real brokers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import slither
from conftest import BROKER_BIN, unique_namespace

CONFIG_FILE = """\
[[stores]]
name = "scratch"

[[stores.tables]]
name = "t"
kind = "set"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLITHER_BROKER_BIN", str(BROKER_BIN))
    path = tmp_path / "slither.toml"
    path.write_text(CONFIG_FILE)
    return path


def shm_objects(ns: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"slither.{ns}.*"))


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLITHER_BROKER_BIN": str(BROKER_BIN)}
    return subprocess.run([sys.executable, "-m", "slither", *args], capture_output=True,
                          text=True, timeout=60, check=check, env=env)


def test_launch_starts_a_broker_and_stops_it_gracefully(config: Path) -> None:
    ns = unique_namespace("launch")
    with slither.launch(config=config, namespace=ns) as client:
        assert isinstance(client, slither.LaunchedClient)
        store = client.store("scratch")
        store.put("t", "k", "v")
        assert store.get("t", "k") == "v"
        proc, run_dir = client.process, client.runtime_dir
        assert run_dir.is_dir() and shm_objects(ns)
    assert proc.returncode == 0
    assert not run_dir.exists()
    assert shm_objects(ns) == []


def test_a_broker_that_dies_early_raises_with_its_log(tmp_path: Path, config: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stores]]\nname = 'x'\n[[stores.tables]]\nname = 't'\nkind = 'tree'\n")
    with pytest.raises(slither.BrokerUnavailable, match="tree"):
        slither.launch(config=bad, namespace=unique_namespace("bad"))


def processes_naming(text: str) -> list[str]:
    """Command lines of this user's live processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(text.encode() in a for a in args):
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(0, slither.InvalidArgument), (-1, slither.InvalidArgument),
     (float("nan"), slither.InvalidArgument), (float("inf"), slither.InvalidArgument),
     ("5", slither.InvalidType), (None, slither.InvalidType), (True, slither.InvalidType)],
)
def test_a_bad_timeout_is_refused_before_a_broker_starts(
    config: Path, timeout: object, error: type[Exception]
) -> None:
    """A timeout of the wrong type raised TypeError after the broker had started, and
    left it running; 0 or less started a broker only to kill it, and nan waited forever."""
    ns = unique_namespace("badtimeout")
    with pytest.raises(error, match="timeout"):
        slither.launch(config=config, namespace=ns, timeout=timeout)  # type: ignore[arg-type]
    assert processes_naming(ns) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"namespace": 5}, "namespace"), ({"config": 5}, "config"),
     ({"runtime_dir": 5}, "runtime_dir"), ({"broker": 5}, "broker"),
     ({"args": "--log-level debug"}, "args"), ({"args": [5]}, "args")],
)
def test_arguments_of_the_wrong_type_are_named_and_leave_nothing(
    tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict, named: str
) -> None:
    """They raised a bare TypeError (or, for args given as one str, passed the broker
    its characters) and left a slither-launch-* directory in the temp dir each time."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(slither.InvalidType, match=named):
        slither.launch(**{"config": config, **kwargs})
    with pytest.raises(ValueError):
        slither.launch(config=config, namespace="a\0b")
    assert list(temp.iterdir()) == []


def test_ctrl_c_while_launch_waits_stops_the_broker(tmp_path: Path, config: Path) -> None:
    """A KeyboardInterrupt while launch waits for the broker's first answer stops the
    broker before it propagates (it ran on until its traceback was collected)."""
    slow = tmp_path / "slow-broker"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{BROKER_BIN}" "$@"\n')
    slow.chmod(0o700)
    ns = unique_namespace("ctrlc")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt) as caught:
            slither.launch(config=config, namespace=ns, broker=slow, timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Checked while the traceback (and the frames it holds) is still alive, as in a
    # REPL or a logger that keeps it: the broker must not wait for them to go.
    assert caught.tb is not None
    assert processes_naming(ns) == []


def test_a_launch_where_another_broker_serves_fails_with_its_log(
    tmp_path: Path, config: Path
) -> None:
    """launch's broker that finds another serving its runtime directory exits, and
    launch says so; it returned a client of the other broker, whose stop() left that
    broker running."""
    ns = unique_namespace("twice")
    run_dir = tmp_path / "run"
    with slither.launch(config=config, namespace=ns, runtime_dir=run_dir) as first:
        with pytest.raises(slither.BrokerUnavailable, match="another broker"):
            second = slither.launch(config=config, namespace=ns, runtime_dir=run_dir)
            second.stop()
        first.ping()
        assert first.stats()["pid"] == first.process.pid


def test_a_relative_runtime_dir_is_taken_from_the_directory_of_the_call(
    tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that connect again (unpickled, in a fork child, for a dispatch job) looked
    for a relative runtime_dir in the working directory of that moment."""
    import pickle

    monkeypatch.chdir(tmp_path)
    with slither.launch(config=config, namespace=unique_namespace("rel"), runtime_dir="rt") as c:
        assert c.runtime_dir == tmp_path / "rt"
        plain = slither.connect(runtime_dir="rt", namespace=c.namespace)
        monkeypatch.chdir("/")
        for client in (c, plain):
            again = pickle.loads(pickle.dumps(client))
            again.ping()
            again.close()
        plain.close()


def test_find_broker_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLITHER_BROKER_BIN", "/nonexistent/slither-broker")
    with pytest.raises(slither.NotFound, match="SLITHER_BROKER_BIN"):
        slither.find_broker()


FORK_CHILD_EXITS = """
import os, sys
import slither
client = slither.launch(config=sys.argv[1])
pid = os.fork()
if pid == 0:
    client.store("scratch").put("t", "child", 1)
    code = 0 if client.stop() is None else 3
    sys.exit(code)  # a normal exit: atexit handlers and finalizers run
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert client.runtime_dir.is_dir(), "the child's exit removed the runtime directory"
assert client.process.poll() is None, "the child's exit stopped the broker"
again = slither.connect(runtime_dir=client.runtime_dir, namespace=client.namespace)
assert again.store("scratch").get("t", "child") == 1
again.close()
assert client.stop() == 0 and not client.runtime_dir.exists()
print("ok")
"""


def test_a_fork_child_leaves_the_launched_broker_alone(config: Path) -> None:
    env = {**os.environ, "SLITHER_BROKER_BIN": str(BROKER_BIN)}
    r = subprocess.run([sys.executable, "-c", FORK_CHILD_EXITS, str(config)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


KILLED_LAUNCHER = """
import sys, time
import slither
client = slither.launch(config=sys.argv[1], namespace=sys.argv[2], broker=sys.argv[3] or None)
print(client.stats()["pid"], client.runtime_dir, client.log_path, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("wrapped", [False, True], ids=["direct", "wrapper"])
def test_a_broker_stops_when_its_launcher_is_killed(
    tmp_path: Path, config: Path, wrapped: bool
) -> None:
    """A Python process that launched a broker and died by SIGKILL (no atexit, no
    finalizer) left the broker running for ever, holding its segments and runtime
    directory. Also through a wrapper that starts the broker as its child."""
    ns = unique_namespace("orphan")
    wrapper = ""
    if wrapped:
        script = tmp_path / "wrapper"
        script.write_text(f'#!/bin/sh\n"{BROKER_BIN}" "$@"\n')  # no exec: the broker's parent
        script.chmod(0o700)
        wrapper = str(script)
    # TMPDIR: the launcher's temp directory (the broker's log) stays behind.
    env = {**os.environ, "SLITHER_BROKER_BIN": str(BROKER_BIN), "TMPDIR": str(tmp_path)}
    launcher = subprocess.Popen([sys.executable, "-c", KILLED_LAUNCHER, str(config), ns, wrapper],
                                stdout=subprocess.PIPE, text=True, env=env)
    broker = 0
    try:
        assert launcher.stdout is not None
        pid, run_dir, log = launcher.stdout.readline().split()
        broker = int(pid)
        assert shm_objects(ns) and Path(run_dir).is_dir()
        launcher.kill()
        launcher.wait()
        assert wait_gone(broker, 10), "the broker outlived its launcher"
        assert shm_objects(ns) == []
        assert not Path(run_dir).exists()
        assert f"parent process {launcher.pid} is gone: stopping" in Path(log).read_text()
    finally:
        launcher.kill()
        launcher.wait()
        if broker and not gone(broker):
            os.kill(broker, signal.SIGKILL)


THREAD_LAUNCHER = """
import sys, threading, time
import slither
launched = []
thread = threading.Thread(target=lambda: launched.append(
    slither.launch(config=sys.argv[1], namespace=sys.argv[2])))
thread.start()
thread.join()
client = launched[0]
time.sleep(1.0)  # several of the broker's checks of its parent
assert client.process.poll() is None, "the broker stopped when the launching thread ended"
client.store("scratch").put("t", "k", 1)
assert client.stop() == 0
print("ok")
"""


def test_a_broker_launched_from_a_thread_outlives_the_thread(config: Path) -> None:
    """The broker watches the launching process, not its thread (as a parent-death
    signal would): a launch from a thread that ends keeps its broker."""
    env = {**os.environ, "SLITHER_BROKER_BIN": str(BROKER_BIN)}
    r = subprocess.run([sys.executable, "-c", THREAD_LAUNCHER, str(config),
                        unique_namespace("thread")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_parent_pid_that_is_not_an_ancestor_is_refused(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    run_dir = tmp_path / "run"
    try:
        r = subprocess.run([str(BROKER_BIN), "--parent-pid", str(other.pid), "--namespace",
                            unique_namespace("notparent"), "--runtime-dir", str(run_dir)],
                           capture_output=True, text=True, timeout=30)
    finally:
        other.kill()
        other.wait()
    assert r.returncode != 0
    assert f"parent_pid {other.pid} is not the parent of this broker" in r.stderr, r.stderr
    assert f"its parent pid {os.getpid()}" in r.stderr, r.stderr
    assert not run_dir.exists()
    help_text = subprocess.run([str(BROKER_BIN), "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert "--parent-pid" in help_text


def test_sighup_stops_the_broker_and_removes_its_files(config: Path) -> None:
    ns = unique_namespace("hup")
    client = slither.launch(config=config, namespace=ns)
    proc, run_dir = client.process, client.runtime_dir
    assert shm_objects(ns)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 0
    assert not run_dir.exists()
    assert shm_objects(ns) == []
    client.stop()


def test_cli_stats_ls_get(config: Path) -> None:
    ns = unique_namespace("cli")
    with slither.launch(config=config, namespace=ns) as client:
        client.store("scratch").put_many("t", {"a": {"x": 1}, "b": 2})
        where = ["--namespace", ns, "--runtime-dir", str(client.runtime_dir)]
        stats = run_cli("stats", *where).stdout
        assert f"ns: {ns}" in stats and "store scratch:" in stats
        assert '"stores"' in run_cli("stats", "--json", *where).stdout
        ls = run_cli("ls", *where).stdout
        assert "scratch" in ls and "READERS" in ls
        table_line = next(line for line in ls.splitlines() if line.split()[:1] == ["t"])
        assert table_line.split()[1] == "2"
        assert run_cli("get", *where, "scratch", "t", "a").stdout.strip() == "{'x': 1}"
        assert run_cli("get", *where, "--json", "scratch", "t", "a").stdout.strip() == '{"x": 1}'
        missing = run_cli("get", *where, "scratch", "t", "zz", check=False)
        assert missing.returncode == 1 and "no key" in missing.stderr
    for command in ("stats", "ls", "get", "clean"):
        assert "usage" in run_cli(command, "--help").stdout


def test_cli_clean_removes_only_what_dead_brokers_left(config: Path) -> None:
    alive_ns, dead_ns = unique_namespace("alive"), unique_namespace("dead")
    with slither.launch(config=config, namespace=alive_ns) as alive:
        dead = slither.launch(config=config, namespace=dead_ns)
        dead_dir = dead.runtime_dir
        dead.process.kill()
        dead.process.wait()
        assert shm_objects(dead_ns) and (dead_dir / "lock").exists()
        for ns, run_dir in ((dead_ns, dead_dir), (alive_ns, alive.runtime_dir)):
            out = run_cli("clean", "--namespace", ns, "--runtime-dir", str(run_dir)).stdout
            if ns == alive_ns:
                assert "alive" in out
        assert shm_objects(dead_ns) == []
        assert not dead_dir.exists()
        # The live broker lost nothing.
        assert shm_objects(alive_ns) and (alive.runtime_dir / "control").exists()
        alive.store("scratch").put("t", "k", 1)
        dead.stop()


def test_the_installed_package_ships_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # pip installs slither-broker from the wheel into this interpreter's scripts dir.
    monkeypatch.delenv("SLITHER_BROKER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    found = Path(slither.find_broker())
    assert found.parent == Path(sysconfig.get_path("scripts"))
    out = subprocess.run([str(found), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SIGHUP" in out.stdout
