"""The operator's command line: ``python -m slither {stats,ls,get,clean}``.

``stats`` prints a running broker's figures, ``ls`` its stores and tables,
``get`` one value, and ``clean`` removes what dead brokers of this user left
behind (shared-memory segments, runtime directories). Every command takes
``--help``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from slither import _native
from slither._api import connect

__all__ = ["main"]

_SHM = Path("/dev/shm")
_LOCK_MAGIC = b"slither-broker lock\n"


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace",
                   help="the broker's namespace (default: $SLITHER_NAMESPACE, else 'default')")
    p.add_argument("--runtime-dir",
                   help="the broker's runtime directory (default: $SLITHER_RUNTIME_DIR, else "
                        "the namespace's)")
    p.add_argument("--endpoint", help="a ZeroMQ endpoint instead of the runtime directory")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")


def _connect(a: argparse.Namespace) -> Any:
    return connect(runtime_dir=a.runtime_dir, endpoint=a.endpoint, namespace=a.namespace,
                   timeout=a.timeout)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slither",
        description="Look at and tidy up Slither brokers and their stores.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("stats", help="print a running broker's figures",
                       description="Print a running broker's figures: requests, queues, clients "
                                   "and, per store, entries, bytes, garbage and readers.")
    _connection_args(s)
    s.add_argument("--json", action="store_true", help="print the whole stats reply as JSON")

    s = sub.add_parser("ls", help="list a broker's stores and tables",
                       description="List a running broker's stores (entries, bytes in use, "
                                   "garbage not yet freed, attached readers, and the oldest "
                                   "pinned epoch when the broker reports it) and each store's "
                                   "tables with their entries.")
    _connection_args(s)
    s.add_argument("--json", action="store_true", help="print the listing as JSON")

    s = sub.add_parser("get", help="print one value",
                       description="Print the value under KEY in TABLE of STORE (read from "
                                   "shared memory). Exits with 1 if the key is absent.")
    _connection_args(s)
    s.add_argument("store")
    s.add_argument("table")
    s.add_argument("key")
    s.add_argument("--json", action="store_true", help="print the value as JSON")

    s = sub.add_parser(
        "clean", help="remove what dead brokers of this user left behind",
        description="Remove the shared-memory segments (/dev/shm/slither.*) and runtime "
                    "directories that brokers of this user left when they died. Only objects "
                    "owned by this user are considered, and only once the broker is provably "
                    "dead: a store's writer lock and a runtime directory's lock file are locks "
                    "the kernel drops when their process dies; anything still locked is left "
                    "alone. Runtime directories are looked for under the default root "
                    "($XDG_RUNTIME_DIR/slither or /tmp/slither-<uid>) and in each --runtime-dir.")
    s.add_argument("--namespace", help="only this namespace's stores and runtime directory")
    s.add_argument("--runtime-dir", action="append", default=[],
                   help="also clean this runtime directory (may be repeated)")
    return p


def _print_stats(st: dict[str, Any], out: TextIO) -> None:
    for k, v in st.items():
        if not isinstance(v, dict):
            print(f"{k}: {v}", file=out)
    for k, v in st.items():
        if isinstance(v, dict) and k != "stores":
            print(f"{k}: {json.dumps(v, default=str, sort_keys=True)}", file=out)
    stores = st.get("stores") or {}
    for name, fig in sorted(stores.items()):
        figures = " ".join(f"{fk}={fv}" for fk, fv in fig.items())
        print(f"store {name}: {figures}", file=out)


def _pinned(fig: dict[str, Any]) -> str:
    epoch = fig.get("oldest_pinned_epoch")
    if epoch is None:
        return "-"
    pid = fig.get("oldest_pinned_pid")
    return f"{epoch} (pid {pid})" if pid else str(epoch)


def _ls(client: Any) -> list[dict[str, Any]]:
    stores = []
    for name, fig in sorted((client.stats().get("stores") or {}).items()):
        row: dict[str, Any] = {
            "store": name,
            "entries": fig.get("entries"),
            "bytes": fig.get("bytes_used"),
            "garbage": fig.get("bytes_retired"),
            "readers": fig.get("readers"),
            "oldest_pinned": _pinned(fig),
            "tables": {},
        }
        try:
            with client.store(name) as s:
                row["tables"] = {t: s.size(t) for t in s.tables}
        except _native.SlitherError as e:
            row["error"] = str(e)
        stores.append(row)
    return stores


def _print_ls(rows: list[dict[str, Any]], out: TextIO) -> None:
    head = ("STORE", "TABLE", "ENTRIES", "BYTES", "GARBAGE", "READERS", "OLDEST PINNED")
    lines = [head]
    for r in rows:
        lines.append((r["store"], "", str(r["entries"]), str(r["bytes"]), str(r["garbage"]),
                      str(r["readers"]), r["oldest_pinned"]))
        for t, n in r["tables"].items():
            lines.append(("", t, str(n), "", "", "", ""))
        if "error" in r:
            lines.append(("", f"(cannot attach: {r['error']})", "", "", "", "", ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)


# -- clean --------------------------------------------------------------------


def _clean_stores(uid: int, namespace: str | None, out: TextIO) -> int:
    """Removes the objects of stores whose writer is dead; returns how many stores."""
    stores: set[tuple[str, str]] = set()
    try:
        entries = list(os.scandir(_SHM))
    except OSError as e:
        print(f"cannot list {_SHM}: {e}", file=out)
        return 0
    for entry in entries:
        parts = entry.name.split(".")
        if len(parts) != 4 or parts[0] != "slither":
            continue
        if namespace is not None and parts[1] != namespace:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        stores.add((parts[1], parts[2]))
    removed = 0
    for ns, name in sorted(stores):
        try:
            if _native._remove_dead_store(ns, name):
                removed += 1
                print(f"removed store {ns}.{name} (its broker is dead)", file=out)
            else:
                print(f"kept store {ns}.{name}: its broker is alive", file=out)
        except _native.SlitherError as e:
            print(f"kept store {ns}.{name}: {e}", file=out)
    return removed


def _default_root() -> Path:
    return Path(_native.default_runtime_dir("x")).parent


def _clean_runtime_dir(d: Path, uid: int, out: TextIO) -> bool:
    """Removes a dead broker's runtime directory ``d``; False if it is kept."""
    try:
        st = os.lstat(d)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        print(f"kept {d}: not a directory of this user", file=out)
        return False
    lock = d / "lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENOENT:
            print(f"kept {d}: cannot open its lock file: {e.strerror}", file=out)
        return False  # no lock file: not a broker's directory, or one still starting
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or fst.st_uid != uid or fst.st_nlink != 1:
            print(f"kept {d}: its lock file is not a broker's lock of this user", file=out)
            return False
        record = os.pread(fd, 512, 0)
        if record and not record.startswith(_LOCK_MAGIC):
            print(f"kept {d}: its lock file is not a broker's lock", file=out)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"kept {d}: its broker is alive", file=out)
            return False
        # Dead, and the lock is ours: no broker can start here until it is released.
        for entry in os.scandir(d):
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISSOCK(est.st_mode) and est.st_uid == uid:
                os.unlink(entry.path)
        now = os.stat(lock, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (fst.st_dev, fst.st_ino):
            os.unlink(lock)
    finally:
        os.close(fd)
    try:
        os.rmdir(d)
        print(f"removed runtime directory {d} (its broker is dead)", file=out)
    except OSError:
        print(f"cleaned runtime directory {d} (its broker is dead); left it: not empty", file=out)
    return True


def _clean(namespace: str | None, extra_dirs: Sequence[str], out: TextIO) -> int:
    uid = os.geteuid()
    _clean_stores(uid, namespace, out)
    dirs: list[Path] = []
    root = _default_root()
    if root.is_dir() and not root.is_symlink() and root.stat().st_uid == uid:
        dirs += sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                       and (namespace is None or p.name == namespace))
    dirs += [Path(d) for d in extra_dirs]
    for d in dirs:
        _clean_runtime_dir(d, uid, out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs one command; returns the exit status (0 ok, 1 not found or failed)."""
    out = out or sys.stdout
    a = _parser().parse_args(argv)
    try:
        if a.command == "clean":
            return _clean(a.namespace, a.runtime_dir, out)
        with _connect(a) as client:
            if a.command == "stats":
                st = client.stats()
                if a.json:
                    print(json.dumps(st, indent=2, default=str, sort_keys=True), file=out)
                else:
                    _print_stats(st, out)
            elif a.command == "ls":
                rows = _ls(client)
                if a.json:
                    print(json.dumps(rows, indent=2, default=str), file=out)
                else:
                    _print_ls(rows, out)
            elif a.command == "get":
                missing = object()
                with client.store(a.store) as s:
                    value = s.get(a.table, a.key, missing)
                if value is missing:
                    print(f"no key {a.key!r} in table {a.table!r} of store {a.store!r}",
                          file=sys.stderr)
                    return 1
                if a.json:
                    print(json.dumps(value, default=repr), file=out)
                else:
                    print(repr(value), file=out)
        return 0
    except _native.SlitherError as e:
        print(f"python -m slither {a.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
