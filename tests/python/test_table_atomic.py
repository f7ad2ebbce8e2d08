"""Table.pop, popitem and setdefault raced by forked processes, and the
compare_and_erase and get_with_version they are built on."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import slither
from conftest import make_broker

CHILDREN = 4
KEYS = 200


def race(tmp_path: Path, work: Callable[[int], Any], n: int = CHILDREN) -> list[Any]:
    """Runs ``work(i)`` in ``n`` forked children that start together; their results.

    A child reports through a file (an exception as its repr), so that a failure
    names what the child saw."""
    start_at = time.monotonic() + 0.5  # after every fork
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its file
            code = 1
            try:
                while time.monotonic() < start_at:
                    time.sleep(0.001)
                try:
                    out: Any = {"result": work(i)}
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    out = {"error": repr(e)}
                (tmp_path / f"child{i}.json").write_text(json.dumps(out))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    deadline = time.monotonic() + 120
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() > deadline:
                for p in pids:
                    os.kill(p, signal.SIGKILL)
                pytest.fail("a racing child did not finish in 120 s")
            time.sleep(0.01)
    outs = [json.loads((tmp_path / f"child{i}.json").read_text()) for i in range(n)]
    errors = [o["error"] for o in outs if "error" in o]
    assert not errors, errors
    return [o["result"] for o in outs]


def test_racing_pops_return_each_value_once_and_never_fail(scratch, tmp_path):
    t = scratch.table("t")
    for round_ in range(3):
        values = {f"k{i}": f"r{round_}-v{i}" for i in range(KEYS)}
        t.update(values)
        keys = list(values)

        def pop_all(i: int) -> list[str]:
            got = []
            # Every child walks the keys in the same order: each pop meets the others'.
            for key in keys:
                # With a default, a pop never raises: not even for a key another
                # child removed between this pop's read and its delete.
                v = t.pop(key, None)
                if v is not None:
                    got.append(v)
            return got

        popped = [v for got in race(tmp_path, pop_all) for v in got]
        assert Counter(popped) == Counter(values.values())  # each exactly once
        assert len(t) == 0


def test_racing_popitems_empty_the_table_once(scratch, tmp_path):
    t = scratch.table("t")
    values = {f"k{i}": f"v{i}" for i in range(KEYS)}
    t.update(values)

    def pop_items(i: int) -> dict[str, Any]:
        got = []
        while True:
            try:
                got.append(list(t.popitem()))
            except KeyError:
                # Nothing is added meanwhile: a table empty when popitem gave up is
                # empty now, and one that is not was not empty then.
                return {"got": got, "left_when_it_gave_up": len(t)}

    outs = race(tmp_path, pop_items)
    assert [o["left_when_it_gave_up"] for o in outs] == [0] * CHILDREN
    pairs = [tuple(p) for o in outs for p in o["got"]]
    assert Counter(pairs) == Counter(values.items())
    assert len(t) == 0


def test_racing_setdefaults_all_return_the_value_stored(scratch, tmp_path):
    t = scratch.table("t")
    keys = [f"k{i}" for i in range(KEYS)]

    def set_defaults(i: int) -> dict[str, Any]:
        return {key: t.setdefault(key, f"child{i}") for key in keys}

    outs = race(tmp_path, set_defaults)
    for key in keys:
        stored = t[key]
        assert [o[key] for o in outs] == [stored] * CHILDREN, key


def test_pop_racing_replacements_never_loses_one(scratch, tmp_path):
    """Replacers swap values in by compare_and_set, poppers pop: every value ever
    written is popped once, replaced once (by the replacer that read it) or still
    stored. A pop that removed a replacement while returning the value it read
    before would leave that replacement nowhere, and return the other twice."""
    t = scratch.table("t")
    keys = [f"k{i}" for i in range(20)]
    t.update({key: f"first-{key}" for key in keys})
    seconds = 1.5

    def work(i: int) -> dict[str, Any]:
        written, replaced, popped = [], [], []
        n = pop_errors = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key in keys:
                if i % 2 == 0:
                    try:
                        v = t.pop(key, None)
                    except KeyError:
                        pop_errors += 1  # checked after what was lost
                        continue
                    if v is not None:
                        popped.append(v)
                    continue
                n += 1
                new = f"child{i}-{n}"
                old, version = t.get_with_version(key)
                try:
                    t.compare_and_set(key, version, new)
                except slither.Conflict:
                    continue
                written.append(new)
                if version != 0:
                    replaced.append(old)
        return {"written": written, "replaced": replaced, "popped": popped,
                "pop_errors": pop_errors}

    outs = race(tmp_path, work)
    written = [f"first-{key}" for key in keys] + [v for o in outs for v in o["written"]]
    gone = [v for o in outs for v in o["replaced"] + o["popped"]]
    remaining = [t[key] for key in keys if key in t]
    assert sum(len(o["popped"]) for o in outs) > len(keys)  # the poppers did meet replacements
    assert Counter(gone + remaining) == Counter(written)
    assert sum(o["pop_errors"] for o in outs) == 0


def test_compare_and_erase_removes_only_the_version_read(scratch):
    t = scratch.table("t")
    v1 = t.put("k", "one")
    assert t.get_with_version("k") == ("one", v1)
    v2 = t.put("k", "two")
    with pytest.raises(slither.Conflict, match=f"version {v2}, not {v1}"):
        t.compare_and_erase("k", v1)
    assert t["k"] == "two"
    assert t.compare_and_erase("k", v2) is True
    assert "k" not in t
    assert t.compare_and_erase("k", 0) is False  # absent, as expected: nothing to remove
    with pytest.raises(slither.Conflict, match="version 0"):
        t.compare_and_erase("k", v2)
    assert t.get_with_version("k") == (None, 0)
    assert t.get_with_version("k", "dflt") == ("dflt", 0)
    with pytest.raises(slither.InvalidArgument, match="expected_version"):
        scratch.compare_and_erase("t", "k", -1)
    with pytest.raises(slither.InvalidType):
        scratch.compare_and_erase("t", "k", "1")


def test_get_with_version_reads_arrays_and_ordered_tables(scratch):
    arr = np.arange(10, dtype=np.int32)
    v = scratch.put("t", "a", arr)
    value, version = scratch.get_with_version("t", "a")
    assert version == v and np.array_equal(value, arr)
    o = scratch.table("ord")
    o["b"] = 1
    assert o.setdefault("b", 2) == 1 and o.setdefault("a", 3) == 3
    assert o.pop("a") == 3 and o.range() == [("b", 1)]
    assert (scratch.kind("t"), scratch.kind("ord")) == ("set", "ordered_set")
    with pytest.raises(slither.NotFound, match="nope"):
        scratch.kind("nope")


def test_a_bag_refuses_compare_and_erase_and_keeps_its_mapping_methods(client):
    store = client.store("features")
    name = f"atomic_bag_{secrets.token_hex(3)}"
    bag = store.create_table(name, kind="bag")
    try:
        assert store.kind(name) == "bag"
        bag["k"] = 1
        bag["k"] = 2
        with pytest.raises(slither.InvalidArgument, match=f"'{name}' is a bag"):
            bag.compare_and_erase("k", bag.version("k"))
        assert bag.get_all("k") == [1, 2]
        assert bag.setdefault("k", 3) == 1 and bag.setdefault("j", 4) == 4
        assert bag.pop("k") == 1 and "k" not in bag
        assert bag.popitem() == ("j", 4)
        with pytest.raises(KeyError):
            bag.popitem()
    finally:
        store.drop_table(name)


def test_pop_and_get_with_version_take_arguments_as_dict_and_get_do(scratch):
    t = scratch.table("t")
    t["k"] = "v"
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        t.pop()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^pop expected at most 2 arguments, got 3$"):
        t.pop("k", 1, 2)
    assert t["k"] == "v"  # a refused call removes nothing
    with pytest.raises(slither.NotFound, match="no key 'nope' in table 't'") as e:
        t.pop("nope")
    assert isinstance(e.value, KeyError)  # as dict.pop raises
    default = object()
    assert t.pop("nope", default) is default
    assert t.get_with_version("nope", default)[0] is default
    for bad in (5, None, 1.5):
        with pytest.raises(slither.InvalidType, match="key must be str or bytes"):
            t.get_with_version(bad)  # type: ignore[arg-type]
    with pytest.raises(slither.NotFound, match="unknown table 'nope'"):
        scratch.get_with_version("nope", "k")
    # A value read, like get's, is a copy: a view taken before the pop stays
    # valid after it (a reader's snapshot), and the array popped is the caller's.
    arr = np.arange(1000, dtype=np.int64)
    t["a"] = arr
    view = t.view("a")
    got, version = t.get_with_version("a")
    assert version == t.version("a") and got.flags.writeable
    popped = t.pop("a")
    assert np.array_equal(popped, arr) and np.array_equal(view, arr)


def test_versions_past_what_the_wire_carries_are_named_as_given(scratch):
    scratch.put("t", "k", 1)
    for op in (lambda v: scratch.compare_and_erase("t", "k", v),
               lambda v: scratch.compare_and_set("t", "k", v, 2)):
        with pytest.raises(slither.InvalidArgument,
                           match=r"9223372036854775808 is not a version \(0 to 2\*\*63 - 1\)"):
            op(2**63)
        with pytest.raises(slither.Conflict, match="not 9223372036854775807"):
            op(2**63 - 1)
    assert scratch.get("t", "k") == 1


@pytest.mark.parametrize("call", ["pop", "pop_default", "popitem", "setdefault"])
def test_a_table_dropped_mid_loop_raises_not_found(client, monkeypatch, call):
    """The table goes between the read and the conditional write: the write's
    NotFound ends the call, which neither loops nor returns a default."""
    store = client.store("features")
    name = f"atomic_drop_{secrets.token_hex(3)}"
    t = store.create_table(name)
    t["k"] = 1
    writes = 0

    def dropping(method):
        def write(self, *args):
            nonlocal writes
            writes += 1
            if writes == 1:
                store.drop_table(name)
            return method(self, *args)
        return write

    for method in ("compare_and_erase", "compare_and_set"):
        monkeypatch.setattr(slither.Store, method, dropping(getattr(slither.Store, method)))
    key = "k" if call != "setdefault" else "absent"
    with pytest.raises(slither.NotFound, match=f"'{name}'"):
        {"pop": lambda: t.pop(key),
         "pop_default": lambda: t.pop(key, None),
         "popitem": t.popitem,
         "setdefault": lambda: t.setdefault(key, 2)}[call]()
    assert writes == 1
    with pytest.raises(slither.NotFound, match=f"'{name}'"):
        t.pop("k", None)  # the read sees it gone too


def test_pops_end_while_another_process_rewrites_the_key(scratch, tmp_path):
    """Two poppers and a rewriter putting the one key back-to-back: a pop only
    reads again after another write to the key, so each one ends."""
    t = scratch.table("t")
    seconds = 1.5

    def work(i: int) -> dict[str, Any]:
        end = time.monotonic() + seconds
        if i == 0:
            n = 0
            while time.monotonic() < end:
                n += 1
                t["k"] = n
            return {"puts": n}
        pops = 0
        slowest = 0.0
        while time.monotonic() < end:
            start = time.monotonic()
            if t.pop("k", None) is not None:
                pops += 1
            slowest = max(slowest, time.monotonic() - start)
        return {"pops": pops, "slowest": slowest}

    rewriter, *poppers = race(tmp_path, work, n=3)
    assert rewriter["puts"] > 100
    for p in poppers:
        assert p["pops"] > 10, poppers
        assert p["slowest"] < 1.0, poppers


def test_get_with_version_reads_value_and_version_of_one_write(scratch, tmp_path):
    """A writer replaces the key back-to-back; readers' (value, version) pairs must
    each be a pair one put made (a value read, then the next write's version,
    would pair a value with a version that is not its own)."""
    t = scratch.table("t")
    t["k"] = -1
    seconds = 1.0

    def work(i: int) -> dict[str, Any]:
        end = time.monotonic() + seconds
        if i == 0:
            made = {}
            n = 0
            while time.monotonic() < end:
                n += 1
                made[str(t.put("k", n))] = n
            return made
        pairs = []
        while time.monotonic() < end:
            value, version = t.get_with_version("k")
            pairs.append([value, version])
        return {"pairs": pairs}

    made, *readers = race(tmp_path, work, n=3)
    seen = [p for r in readers for p in r["pairs"] if p[0] != -1]
    assert len({v for _, v in seen}) > 100  # the readers did meet many writes
    wrong = [p for p in seen if made.get(str(p[1])) != p[0]]
    assert not wrong, wrong[:5]


def test_a_setdefault_over_the_message_limit_says_why_put_would_go_through(tmp_path):
    """The atomic setdefault sends its default with compare_and_set, through the
    socket; a large put takes shared memory. Over the broker's message limit the
    error names setdefault, the key and that difference, and nothing is stored."""
    b = make_broker(tmp_path, "big")
    b.config.write_text("[broker]\nmax_message_bytes = 1048576\n\n" + b.config.read_text())
    b.start()
    try:
        with b.connect() as c:
            t = c.store("scratch").table("t")
            big = b"y" * (2 << 20)
            with pytest.raises(slither.LimitExceeded,
                               match=r"setdefault of key 'k' in table 't'.*over the broker's "
                                     r"limit of 1048576.*put .*shared memory"):
                t.setdefault("k", big)
            assert "k" not in t
            t.put("k", big)  # the shared-memory path takes it
            assert t.setdefault("k", big) == big  # present: read, nothing sent
    finally:
        b.stop()
