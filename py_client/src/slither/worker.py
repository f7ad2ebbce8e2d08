"""The worker runtime: ``python -m slither.worker`` serves a broker's worker pool.

A broker spawns its pools' workers with this command and the environment that
tells them where to connect (``SLITHER_CONTROL_ENDPOINT``, ``SLITHER_NAMESPACE``,
``SLITHER_POOL``, ``SLITHER_WORKER_TOKEN``, ``SLITHER_WORKER_CREDITS``); workers
started by hand give the same with flags, which override the environment::

    python -m slither.worker --runtime-dir /run/user/1000/slither/app --pool default

Each batch names its handler as ``"module:function"``: the module is imported on
first use (from ``sys.path``, which includes the pool's ``pythonpath``) and the
function is cached. A handler takes the batch's items and a :class:`Context` and
returns a list of as many results, in order::

    def score(items, ctx):
        model = ctx.store("models").get("weights", "current")
        return [model["bias"] + x for x in items]

A result that is a :class:`slither.ItemError` fails that item alone; an exception
fails the whole batch (its type, message and traceback reach the caller). The
serving loop itself (waiting, decoding, encoding, answering) runs in C++ with the
GIL released while it waits; heartbeats run on their own thread, so a handler may
hold the GIL as long as it needs.

Caveats: a worker dies with its broker (it exits when heartbeats stop). A worker
killed mid-batch loses nothing: the broker runs the batch again elsewhere or
applies the job's error policy. Ctrl-C (SIGINT) stops a worker cleanly between
batches; during a batch it interrupts the handler and the batch is retried or
failed by the broker like a dead worker's.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from slither import _native
from slither.dispatch import ItemError

__all__ = ["Context", "ItemError", "main", "resolve"]


class Context:
    """What a handler knows about the batch it runs (its second argument).

    ``session_id``, ``stage``, ``pipe`` and ``metadata`` come from the dispatch
    call; ``attempt`` is 1 on the first run, 2 on the first retry...;
    ``worker_id`` is this worker's id in its pool; ``job`` and ``batch`` are the
    broker's ids. :meth:`store` gives the broker's stores, read-only, in place.
    """

    __slots__ = ("_worker", "attempt", "batch", "job", "metadata", "pipe", "session_id", "stage")

    def __init__(
        self,
        worker: _Worker,
        session_id: str,
        stage: str,
        pipe: str,
        metadata: dict[str, Any],
        attempt: int,
        job: int,
        batch: int,
    ) -> None:
        self._worker = worker
        self.session_id = session_id
        self.stage = stage
        self.pipe = pipe
        self.metadata = metadata
        self.attempt = attempt
        self.job = job
        self.batch = batch

    @property
    def worker_id(self) -> int:
        """This worker's id in its pool (as ``client.stats()`` shows it)."""
        return self._worker.info["id"]

    def store(self, name: str) -> _native.Reader:
        """The broker's store ``name``, attached read-only (cached by this worker).

        Reads (``get``, ``view``, ...) come straight from shared memory: ``view``
        gives zero-copy arrays. Raises :class:`slither.NotFound` for an unknown
        store, and on a worker of a ``tcp://`` pool (another machine), which has
        no local stores.
        """
        return self._worker.store(name)

    def __repr__(self) -> str:
        return (
            f"<slither.worker.Context worker={self.worker_id} job={self.job} "
            f"batch={self.batch} attempt={self.attempt} session={self.session_id!r}>"
        )


def resolve(name: str) -> Callable[..., Any]:
    """The handler ``"module:function"`` names (``function`` may be dotted).

    Raises ValueError for a malformed name, ImportError (naming the module) if the
    module cannot be imported, AttributeError (naming both) if it has no such
    function, TypeError if that is not callable.
    """
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {name!r} is not 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"cannot import module {module_name!r} for handler {name!r}: {e}", name=module_name
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no function {attr!r}") from None
    if not callable(obj):
        raise TypeError(f"handler {name!r} is a {type(obj).__name__}, not a function")
    return obj


class _Worker:
    """A joined worker: the native runtime plus its attached stores."""

    def __init__(self, runtime: _native.WorkerRuntime) -> None:
        self.runtime = runtime
        self.info: dict[str, Any] = runtime.info
        self._stores: dict[str, _native.Reader] = {}

    def store(self, name: str) -> _native.Reader:
        reader = self._stores.get(name)
        if reader is not None:
            return reader
        if not self.info["local"]:
            raise _native.NotFound(
                f"ctx.store({name!r}): this worker runs on another machine (a tcp pool) and "
                "has no local stores"
            )
        if name not in self.info["stores"]:
            raise _native.NotFound(
                f"ctx.store({name!r}): the broker has no such store (it has "
                f"{', '.join(self.info['stores']) or 'none'})"
            )
        reader = _native.Reader(self.info["namespace"], name)
        self._stores[name] = reader
        return reader

    def serve(self) -> str:
        # The runtime makes each batch's Context from the batch's fields, in
        # Context's order after the worker.
        return self.runtime.serve(resolve, functools.partial(Context, self), ItemError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slither.worker",
        description="Serve a slither broker's worker pool: run the 'module:function' "
        "handlers its dispatch jobs name. Flags override the environment a broker sets "
        "for the workers it spawns.",
    )
    p.add_argument("--endpoint", default="", help="the broker's control endpoint "
                   "(env SLITHER_CONTROL_ENDPOINT)")
    p.add_argument("--runtime-dir", default="", help="the broker's runtime directory "
                   "(env SLITHER_RUNTIME_DIR)")
    p.add_argument("--namespace", default="", help="the broker's namespace (env SLITHER_NAMESPACE)")
    p.add_argument("--pool", default="", help="the pool to serve; default: the broker's only "
                   "pool (env SLITHER_POOL)")
    p.add_argument("--credits", type=int, default=0, help="batches held at once "
                   "(env SLITHER_WORKER_CREDITS, default 2)")
    p.add_argument("--timeout", type=float, default=0.0, help="seconds to wait for the "
                   "broker to answer the join (default 5)")
    p.add_argument("--curve-server-key", default="", help="tcp pools: the broker's public key, "
                   "Z85 (env SLITHER_CURVE_SERVER_KEY)")
    p.add_argument("--curve-secret-key-file", default="", help="tcp pools: a file holding this "
                   "worker's secret key, Z85 (env SLITHER_CURVE_SECRET_KEY holds the key itself)")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="prepend DIR to sys.path for handler imports (repeatable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a worker until its broker stops it; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.credits < 0:
        print("slither.worker: --credits must be at least 1", file=sys.stderr)
        return 2
    for d in reversed(args.path):
        sys.path.insert(0, os.path.abspath(d))
    # `python -m` puts the working directory first; handlers come from the pool's path too.
    secret = ""
    if args.curve_secret_key_file:
        with open(args.curve_secret_key_file, encoding="ascii") as f:
            secret = f.read().strip()
    try:
        runtime = _native.WorkerRuntime(
            endpoint=args.endpoint,
            runtime_dir=args.runtime_dir,
            namespace=args.namespace,
            pool=args.pool,
            credits=args.credits,
            timeout=args.timeout,
            curve_server_key=args.curve_server_key,
            curve_secret_key=secret,
        )
    except _native.SlitherError as e:
        print(f"slither.worker: cannot join: {e}", file=sys.stderr)
        return 1
    worker = _Worker(runtime)
    try:
        why = worker.serve()
    except KeyboardInterrupt:
        why = "interrupted (Ctrl-C)"
    finally:
        runtime.close()
    print(f"slither.worker {os.getpid()}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
