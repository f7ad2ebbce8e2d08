"""``slither.launch``: a ``slither-broker`` child process and a client connected to it."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from slither import _native
from slither._api import Client

__all__ = ["LaunchedClient", "find_broker", "launch"]

#: How many bytes of the broker's log an error quotes.
_LOG_TAIL_BYTES = 4000


def find_broker() -> str:
    """The ``slither-broker`` executable to start.

    In order: ``$SLITHER_BROKER_BIN``; the one the wheel installed beside this
    interpreter's scripts (the venv's ``bin``); the first on ``PATH``. Raises
    :class:`NotFound` naming where it looked.
    """
    env = os.environ.get("SLITHER_BROKER_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise _native.NotFound(f"$SLITHER_BROKER_BIN={env!r} is not an executable file")
        return env
    scripts = Path(sysconfig.get_path("scripts")) / "slither-broker"
    if os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("slither-broker")
    if found:
        return found
    raise _native.NotFound(
        f"no slither-broker executable: not in $SLITHER_BROKER_BIN, {scripts.parent} or PATH "
        "(it ships in the slither wheel; a source build has it in build/broker/)"
    )


class _Process:
    """The broker process and what was made for it; stopped when collected or at exit."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, scratch: Path | None) -> None:
        self.proc = proc
        self.log = log
        self.scratch = scratch
        self.owner = os.getpid()
        self._finalizer = weakref.finalize(self, _stop, proc, scratch, 10.0, self.owner)

    def stop(self, timeout: float) -> int | None:
        self._finalizer.detach()
        return _stop(self.proc, self.scratch, timeout, self.owner)


def _stop(
    proc: subprocess.Popen[bytes], scratch: Path | None, timeout: float, owner: int
) -> int | None:
    """SIGTERM (a graceful stop: the broker unlinks its segments and runtime
    directory), SIGKILL after ``timeout`` seconds; then removes ``scratch``.

    Only in the process that launched the broker: a ``fork()`` child inherits the
    finalizer and runs it when it exits, and must leave the parent's broker, its
    runtime directory and its log alone (the child cannot even wait for it).
    """
    if os.getpid() != owner:
        return None
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _tail(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class LaunchedClient(Client):
    """A :class:`Client` of a broker that :func:`launch` started as a child process.

    :meth:`close` (or leaving a ``with`` block) closes the connection and stops
    the broker gracefully. A pickled LaunchedClient unpickles as a plain
    :class:`Client` of the same broker: only this process stops it.

    Caveats: a ``fork()`` child may use the inherited client, but only the process
    that called :func:`launch` stops the broker: in a child, :meth:`stop` and
    :meth:`close` close the child's connection and return None, and the child's
    exit leaves the broker, its runtime directory and its log in place.
    """

    __slots__ = ("_process",)

    def __init__(self, native: _native.Client, where: dict[str, Any], process: _Process) -> None:
        super().__init__(native, where)
        self._process = process

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The broker's process."""
        return self._process.proc

    @property
    def runtime_dir(self) -> Path:
        """The broker's runtime directory (its control socket is ``control`` in it)."""
        return Path(self._where["runtime_dir"])

    @property
    def log_path(self) -> Path:
        """The file the broker's output goes to."""
        return self._process.log

    def stop(self, timeout: float = 10.0) -> int | None:
        """Closes the connection and stops the broker: SIGTERM, then SIGKILL after
        ``timeout`` seconds. Returns its exit code (0 after a graceful stop), or None
        in a ``fork()`` child, which leaves the broker running. Safe twice."""
        super().close()
        return self._process.stop(timeout)

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    def __repr__(self) -> str:
        return f"<slither.LaunchedClient namespace={self.namespace!r} pid={self.process.pid}>"


def launch(
    config: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    runtime_dir: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
    broker: str | os.PathLike[str] | None = None,
    args: list[str] | None = None,
    client_timeout: float = 5.0,
) -> LaunchedClient:
    """Starts a ``slither-broker`` as a child process and returns a client connected to it.

    ``config`` is a ``slither.toml`` declaring its stores and pools (without one
    the broker serves no stores). ``namespace`` defaults to one unique to this
    call, so two launches never meet; ``runtime_dir`` defaults to a new private
    directory under the temp dir, removed when the broker stops. ``timeout``
    bounds the wait for the broker's first answer; ``client_timeout`` is the
    returned client's per-call timeout. ``broker`` overrides :func:`find_broker`;
    ``args`` are passed on to it (``["--log-level", "debug"]``).

    Use it as a context manager: leaving the block stops the broker gracefully
    (SIGTERM; its segments and runtime directory are removed). It is also
    stopped when the client is garbage-collected or the interpreter exits, and
    stops by itself within a second of this process's death, even by SIGKILL or
    a crash (``--parent-pid``, unless ``args`` give one: it watches this
    process, not the calling thread, so a launch from a thread that ends is
    fine). A ``broker`` wrapper must pass its arguments on (``"$@"``); it may
    start the real broker as its child rather than exec it. The temporary
    directory that holds the broker's log stays behind after such a death.

    Raises :class:`BrokerUnavailable` with the tail of the broker's log if it
    exits before answering or does not answer within ``timeout`` (it is then
    killed), :class:`NotFound` if there is no ``slither-broker`` executable,
    :class:`InvalidArgument` (:class:`InvalidType`) for a ``timeout`` that is not a
    finite number of seconds more than 0, :class:`InvalidType` naming an argument of
    the wrong type (``args`` is a list of str), before anything starts. Whatever
    interrupts the wait (Ctrl-C too) stops the broker before it propagates.
    """
    # Checked before anything is made: a mistake leaves no directory or process.
    timeout = _check_timeout(timeout)
    config_path = _path_arg(config, "config")
    run_path = _path_arg(runtime_dir, "runtime_dir")
    if namespace is not None and not isinstance(namespace, str):
        raise _native.InvalidType(f"namespace must be a str, not '{type(namespace).__name__}'")
    extra = _args(args)
    exe = _path_arg(broker, "broker") or find_broker()
    ns = namespace if namespace is not None else f"py-{os.getpid()}-{secrets.token_hex(4)}"
    scratch = Path(tempfile.mkdtemp(prefix="slither-launch-"))  # 0700
    # Absolute: clients made from it later may run in another working directory.
    run_dir = Path(run_path).absolute() if run_path is not None else scratch / "run"
    log = scratch / "broker.log"
    cmd = [exe, "--runtime-dir", str(run_dir), "--namespace", ns]
    if config_path is not None:
        cmd += ["--config", config_path]
    if not any(a == "--parent-pid" or a.startswith("--parent-pid=") for a in extra):
        # The broker stops by itself if this process dies without stopping it
        # (SIGKILL, a crash): it checks that this process is still its ancestor.
        cmd += ["--parent-pid", str(os.getpid())]
    cmd += extra
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
    except BaseException as e:
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(e, OSError):
            raise _native.BrokerUnavailable(f"cannot start {exe!r}: {e}") from None
        raise  # ValueError for a NUL in an argument, KeyboardInterrupt
    process = _Process(proc, log, scratch)
    where = {
        "endpoint": "", "runtime_dir": str(run_dir), "namespace": ns, "timeout": client_timeout,
        "curve_server_key": "", "curve_secret_key": "", "curve_public_key": "",
    }
    try:
        return _first_answer(process, where, timeout)
    except BaseException:
        # Whatever ends the wait (Ctrl-C included) stops the broker now, not when
        # the traceback that holds `process` is collected. Safe twice.
        process.stop(1.0)
        raise


def _path_arg(value: object, name: str) -> str | None:
    """A path argument of ``launch`` as a str (None stays None)."""
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise _native.InvalidType(
            f"{name} must be a str or os.PathLike path, not '{type(value).__name__}'"
        )
    return path


def _args(args: object) -> list[str]:
    """``launch``'s extra broker arguments: a list (or tuple) of str. One str is refused:
    it would be passed on as its characters."""
    if args is None:
        return []
    if not isinstance(args, (list, tuple)):
        raise _native.InvalidType(f"args must be a list of str, not '{type(args).__name__}'")
    for i, a in enumerate(args):
        if not isinstance(a, str):
            raise _native.InvalidType(f"args[{i}] must be a str, not '{type(a).__name__}'")
    return list(args)


def _check_timeout(timeout: object) -> float:
    """``launch``'s timeout, checked before anything is started."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise _native.InvalidType(
            f"timeout must be a number of seconds, not '{type(timeout).__name__}'"
        )
    if not 0 < timeout < math.inf:  # False for nan too
        raise _native.InvalidArgument(f"timeout must be more than 0 and finite, got {timeout!r}")
    return float(timeout)


def _first_answer(process: _Process, where: dict[str, Any], timeout: float) -> LaunchedClient:
    """Waits up to ``timeout`` seconds for the broker's first answer; a client of it."""
    proc, log = process.proc, process.log
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = _tail(log)
            process.stop(0)
            raise _native.BrokerUnavailable(
                f"slither-broker exited with code {proc.returncode} before answering; "
                f"its log ends with:\n{tail}"
            )
        try:
            probe = _native.Client(**{**where, "timeout": 0.5})
            try:
                answering = probe.stats().get("pid")
            finally:
                probe.close()
            # Another broker may serve this runtime directory: ours then exits,
            # and its log says why (above, on a later turn).
            if _started_by(answering, proc.pid):
                return LaunchedClient(_native.Client(**where), where, process)
        except (_native.BrokerUnavailable, _native.Timeout):
            pass
        if time.monotonic() > deadline:
            tail = _tail(log)
            process.stop(0)
            raise _native.BrokerUnavailable(
                f"slither-broker (pid {proc.pid}) did not answer within {timeout} s; "
                f"killed; its log ends with:\n{tail}"
            )
        time.sleep(0.05)


def _started_by(pid: object, root: int) -> bool:
    """Whether the process ``pid`` is ``root`` or a descendant of it (``broker`` may be
    a wrapper that starts the real one)."""
    for _ in range(64):
        if not isinstance(pid, int) or pid <= 1:
            return False
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return False
