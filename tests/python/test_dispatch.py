"""Client.dispatch and `python -m slither.worker`, across real processes: a broker
that spawns a pool of Python workers running tests/python/workers/dispatch_handlers.py."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import slither
from conftest import WORKERS, Broker, pool_broker, wait_for, wait_workers, workers

H = "dispatch_handlers"


@pytest.fixture(scope="module")
def pbroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = pool_broker(tmp_path_factory.mktemp("dispatch"), "d")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker with a pool of its own, for tests that kill workers or the broker."""
    b = pool_broker(tmp_path, "k")
    b.start()
    yield b
    b.kill()


# --- basics --------------------------------------------------------------------------------


def test_dispatch_returns_results_in_order(pclient: slither.Client) -> None:
    out = list(pclient.dispatch(range(1000), f"{H}:double", batch_size=16))
    assert out == [2 * x for x in range(1000)]
    assert pclient.map(f"{H}:identity", ["a", {"b": [1, 2.5, None]}, b"c"]) == [
        "a", {"b": [1, 2.5, None]}, b"c"]
    assert pclient.map(f"{H}:identity", []) == []


def test_dict_key_order_survives_the_trip_to_a_worker_and_back(pclient: slither.Client) -> None:
    keys = ["zeta", "alpha", "mid", "beta"] + [f"k{i}" for i in range(30, 10, -1)]
    item = {k: {"y": i, "x": -i} for i, k in enumerate(keys)}
    assert pclient.map(f"{H}:keys", [item]) == [keys]           # as the worker saw it
    back = pclient.map(f"{H}:identity", [item])[0]              # and as it came back
    assert list(back) == keys and all(list(v) == ["y", "x"] for v in back.values())


def test_context_fields_reach_the_handler(pclient: slither.Client) -> None:
    out = pclient.map(f"{H}:context", [1, 2], session_id="s1", stage="score",
                      metadata={"k": [1, "v"]})
    ids = {w["id"] for w in workers(pclient)}
    for r in out:
        assert r["session_id"] == "s1" and r["stage"] == "score"
        assert r["metadata"] == {"k": [1, "v"]} and r["attempt"] == 1
        assert r["worker_id"] in ids


def test_stats_length_hint_and_progress(pclient: slither.Client) -> None:
    seen: list[int] = []
    with pclient.dispatch(list(range(100)), f"{H}:identity", batch_size=10,
                          progress=seen.append) as d:
        assert d.__length_hint__() == 100
        first = next(d)
        assert first == 0
        rest = list(d)
    assert len(rest) == 99 and seen[-1] == 100 and seen == sorted(seen)
    assert d.stats["pulled"] == 100 and d.stats["yielded"] == 100
    gen = pclient.dispatch((x for x in range(3)), f"{H}:identity")
    assert gen.__length_hint__() is NotImplemented
    assert list(gen) == [0, 1, 2]


def test_bad_options_are_named(pclient: slither.Client) -> None:
    # Slither's own errors, which are ValueError / TypeError too.
    with pytest.raises(slither.InvalidArgument, match="batch_size"):
        pclient.dispatch([1], f"{H}:identity", batch_size=0)
    with pytest.raises(slither.InvalidType, match="metadata"):
        pclient.dispatch([1], f"{H}:identity", metadata=["not", "a", "dict"])
    with pytest.raises(ValueError, match="ordering"):
        pclient.dispatch([1], f"{H}:identity", ordering="random")
    with pytest.raises(ValueError, match="on_error"):
        pclient.dispatch([1], f"{H}:identity", on_error="ignore")
    with pytest.raises(slither.NotFound):
        pclient.dispatch([1], f"{H}:identity", pool="nope")
    with pytest.raises(TypeError, match="item"):
        pclient.map(f"{H}:identity", [object()])


# --- handler failures ---------------------------------------------------------------------


def test_missing_module_or_function_names_it_and_the_pool_does_not_spin(
        pclient: slither.Client) -> None:
    before = pclient.stats()["dispatch"]["pools"]["default"]
    pids = {w["pid"] for w in workers(pclient)}
    with pytest.raises(slither.DispatchError) as e:
        pclient.map("no_such_module_xyz:f", [1, 2, 3])
    assert e.value.error.type == "ImportError" and "no_such_module_xyz" in e.value.error.message
    assert e.value.error.kind == "exception" and "Traceback" in e.value.error.traceback
    with pytest.raises(slither.DispatchError) as e:
        pclient.map(f"{H}:no_such_function", [1])
    assert e.value.error.type == "AttributeError" and "no_such_function" in e.value.error.message
    after = pclient.stats()["dispatch"]["pools"]["default"]
    assert after["restarts"] == before["restarts"]
    assert {w["pid"] for w in workers(pclient)} == pids


def test_wrong_length_unencodable_and_not_a_list_fail_their_batch(pclient: slither.Client) -> None:
    for fn, text in (("wrong_length", "3 results for a batch of 4"),
                     ("unencodable", "cannot be sent"), ("not_a_list", "not a list")):
        with pytest.raises(slither.DispatchError) as e:
            pclient.map(f"{H}:{fn}", [1, 2, 3, 4])
        assert text in e.value.error.message and fn in e.value.error.message
        assert e.value.error.batch > 0
        assert [item for item, _ in e.value.failed] == [1, 2, 3, 4]


def test_item_error_fails_one_item(pclient: slither.Client) -> None:
    d = pclient.dispatch(range(10), f"{H}:work", batch_size=5, on_error="skip",
                         metadata={"bad": [3, 7]})
    assert list(d) == [2 * x for x in range(10) if x not in (3, 7)]
    assert [item for item, _ in d.errors] == [3, 7]
    err = d.errors[0][1]
    assert err.kind == "item_error" and err.type == "ValueError" and "bad item 3" in err.message


def test_route_yields_failed_items_in_place(pclient: slither.Client) -> None:
    out = pclient.map(f"{H}:work", range(8), batch_size=2, on_error=("route", "bad"),
                      metadata={"raise": [4], "bad": [1]})
    assert out[0] == 0 and out[2:4] == [4, 6] and out[6:] == [12, 14]
    for i in (1, 4, 5):
        assert isinstance(out[i], slither.Failed) and out[i].item == i and out[i].output == "bad"
    assert out[4].error.type == "RuntimeError" and out[1].error.kind == "item_error"


def test_halt_keeps_partial_results(pclient: slither.Client) -> None:
    with pytest.raises(slither.DispatchError) as e:
        pclient.map(f"{H}:work", range(64), batch_size=8, max_in_flight=1,
                    metadata={"raise": [20]})
    assert e.value.results == [2 * x for x in range(16)]
    assert [item for item, _ in e.value.failed] == list(range(16, 24))
    assert "poison item 20" in str(e.value)


def test_input_that_raises_cancels_and_propagates(pclient: slither.Client) -> None:
    def source():
        yield from range(10)
        raise KeyError("input broke")

    with pytest.raises(KeyError, match="input broke"):
        list(pclient.dispatch(source(), f"{H}:identity", batch_size=4))


# --- ordering --------------------------------------------------------------------------------


def test_preserve_keeps_input_order_under_random_delays(pclient: slither.Client) -> None:
    rng = random.Random(7)
    delays = {str(i): rng.choice([0.0, 0.0, 0.01, 0.05]) for i in range(0, 200, 4)}
    out = pclient.map(f"{H}:delayed", range(200), batch_size=4, metadata={"delays": delays})
    assert out == list(range(200))


def test_as_completed_returns_faster_batches_first(pclient: slither.Client) -> None:
    # Batch 0 sleeps; the others do not: they come out before it.
    out = pclient.map(f"{H}:delayed", range(40), batch_size=4, ordering="as_completed",
                      metadata={"delays": {"0": 1.0}})
    assert sorted(out) == list(range(40))
    assert out.index(0) > 4


# --- backpressure --------------------------------------------------------------------------


def test_backpressure_bounds_what_is_pulled_from_an_endless_generator(
        pclient: slither.Client) -> None:
    pulled = 0

    def endless():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    batch, in_flight = 8, 4
    window = batch * in_flight
    d = pclient.dispatch(endless(), f"{H}:identity", batch_size=batch, max_in_flight=in_flight)
    consumed = 0
    for pause in (0.0, 0.3, 1.0):
        for _ in range(100):
            assert next(d) == consumed
            consumed += 1
            assert pulled <= consumed + window
        time.sleep(pause)  # the consumer pauses: the workers are idle, input stops
        assert pulled <= consumed + window, (pulled, consumed)
    d.close()
    assert d.stats["pulled"] == pulled


# --- workers dying ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["skip", "route", "retry", "halt"])
def test_exactly_once_with_poison_items_and_killed_workers(own_broker: Broker,
                                                           policy: str) -> None:
    n = 100_000
    rng = random.Random(hash(policy) & 0xFFFF)
    poison = sorted(rng.sample(range(n), 5))
    crash = sorted(rng.sample(range(n), 3))  # SIGKILL on the first attempt
    on_error = {"skip": "skip", "route": ("route", "errors"),
                "retry": slither.Retry(4, backoff=0.01, then="skip"), "halt": "halt"}[policy]
    with own_broker.connect() as c:
        wait_workers(c, 2)
        stop = threading.Event()
        killed = []

        def killer() -> None:
            # Random SIGKILLs of workers during the run, besides the crash items.
            while not stop.wait(0.15):
                ws = [w for w in workers(c) if w["pid"] > 0]
                if ws and len(killed) < 3:
                    pid = rng.choice(ws)["pid"]
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass

        t = threading.Thread(target=killer)
        t.start()
        ended: dict[int, str] = {}
        d = c.dispatch(range(n), f"{H}:work", batch_size=32, on_error=on_error,
                       metadata={"raise": poison, "crash": crash, "sleep": 0.002})
        try:
            for r in d:
                if isinstance(r, slither.Failed):
                    assert r.item not in ended
                    ended[r.item] = "routed"
                else:
                    assert r % 2 == 0 and r // 2 not in ended
                    ended[r // 2] = "ok"
        except slither.DispatchError as e:
            assert policy == "halt"
            for item, _ in e.failed:
                assert item not in ended
                ended[item] = "failed"
            # Every item taken from the input ended once (the rest was never read).
            assert len(ended) + e.cancelled == d.stats["pulled"]
            assert any(str(p) in e.error.message for p in poison) or e.error.kind in (
                "worker_died", "exception")
        finally:
            stop.set()
            t.join()
        for item, err in d.errors:
            assert item not in ended
            ended[item] = "skipped"
        if policy == "halt":
            return
        assert len(ended) == n
        bad = {i for i, s in ended.items() if s != "ok"}
        poison_batches = {p // 32 for p in poison}
        # Only items of the poison batches failed: killed batches ran again (retry),
        # or, without retry, failed whole with the worker's death.
        if policy == "retry":
            assert {i // 32 for i in bad} == poison_batches
        else:
            assert poison_batches <= {i // 32 for i in bad}
        assert killed, "the killer thread killed no worker"


def test_retry_recovers_a_batch_whose_worker_was_killed(pclient: slither.Client) -> None:
    out = pclient.map(f"{H}:work", range(64), batch_size=8, on_error=slither.Retry(3, 0.01),
                      metadata={"crash": [13]})
    assert out == [2 * x for x in range(64)]


def test_a_poison_batch_that_kills_every_worker_is_quarantined(pclient: slither.Client) -> None:
    d = pclient.dispatch(range(32), f"{H}:work", batch_size=8, on_error=slither.Retry(2, 0.01,
                         then="skip"), metadata={"crash_always": [9]})
    out = list(d)
    assert out == [2 * x for x in range(32) if not 8 <= x < 16]
    assert {e.kind for _, e in d.errors} == {"quarantined"}


def test_hung_handler_times_out_and_the_policy_applies(pclient: slither.Client) -> None:
    t0 = time.monotonic()
    out = pclient.map(f"{H}:hang", range(4), batch_size=4, timeout=0.5,
                      on_error=slither.Retry(2, 0.01))
    assert out == [0, 1, 2, 3] and time.monotonic() - t0 < 30
    d = pclient.dispatch(range(4), f"{H}:hang", batch_size=4, timeout=0.5, on_error="skip")
    assert list(d) == []
    assert {e.kind for _, e in d.errors} == {"timeout"}
    wait_workers(pclient, 2)


def test_affinity_keeps_a_session_on_one_worker_and_reports_the_move(own_broker: Broker) -> None:
    with own_broker.connect() as c:
        wait_workers(c, 2)
        out = c.map(f"{H}:pid", range(64), batch_size=4, session_id="model-a",
                    affinity="strict")
        pids = {p for p, _ in out}
        assert len(pids) == 1
        (pid,) = pids
        d = c.dispatch(range(64), f"{H}:pid", batch_size=4, max_in_flight=2,
                       session_id="model-a", affinity="strict")
        first = [next(d) for _ in range(4)]
        assert {p for p, _ in first} == {pid}
        os.kill(pid, signal.SIGKILL)
        d2 = c.dispatch(range(64), f"{H}:pid", batch_size=4, session_id="model-a",
                        on_error=slither.Retry(3, 0.01))
        rest = list(d2)
        later = {p for p, _ in rest}
        assert pid not in later and len(later) == 1
        d.close()


def test_session_move_is_reported(own_broker: Broker) -> None:
    with own_broker.connect() as c:
        wait_workers(c, 2)
        d = c.dispatch(range(10_000), f"{H}:pid", batch_size=4, max_in_flight=2,
                       session_id="sess", on_error=slither.Retry(3, 0.01))
        first = next(d)
        os.kill(first[0], signal.SIGKILL)
        rest = list(d)
        assert len(rest) == 9_999
        assert {p for p, _ in rest[-100:]} != {first[0]}
        moves = d.moves
        assert moves and moves[0]["session"] == "sess"


def test_killed_broker_ends_workers_and_raises_broker_unavailable(own_broker: Broker) -> None:
    with own_broker.connect(timeout=1.0) as c:
        pids = [w["pid"] for w in wait_workers(c, 2)]
        d = c.dispatch(itertools.count(), f"{H}:identity", batch_size=8)
        assert next(d) == 0
        own_broker.kill()
        t0 = time.monotonic()
        with pytest.raises(slither.BrokerUnavailable):
            for _ in d:
                pass
        assert time.monotonic() - t0 < 10

        def gone() -> bool:
            # Exited: no such process, or a zombie its new parent has not
            # reaped yet (that is up to init, not to the worker).
            for p in pids:
                try:
                    stat = Path(f"/proc/{p}/stat").read_text()
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if stat[stat.rindex(")") + 2] != "Z":
                    return False
            return True

        wait_for(gone, timeout=5, what="workers to exit")


def test_ctx_store_reads_the_brokers_store(pclient: slither.Client) -> None:
    out = pclient.map(f"{H}:store_view", ["user:1", "user:2"])
    assert out == [["ada", True], ["bob", True]]
    with pytest.raises(slither.DispatchError, match="no such store"):
        pclient.map(f"{H}:no_store", [1])


# --- the worker command ---------------------------------------------------------------------


def test_worker_help() -> None:
    done = subprocess.run([sys.executable, "-m", "slither.worker", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--runtime-dir" in done.stdout and "--pool" in done.stdout


def test_worker_started_by_hand_serves_and_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    b = pool_broker(tmp_path, "h", size=0)
    b.start()
    try:
        env = dict(os.environ, PYTHONPATH=str(WORKERS))
        for k in list(env):
            if k.startswith("SLITHER_"):
                del env[k]
        w = subprocess.Popen([sys.executable, "-m", "slither.worker", "--runtime-dir",
                              str(b.runtime_dir), "--namespace", b.namespace],
                             env=env, stderr=subprocess.PIPE, text=True)
        with b.connect() as c:
            wait_workers(c, 1)
            assert c.map(f"{H}:pid", [1]) == [[w.pid, 1]]
            w.send_signal(signal.SIGINT)
            assert w.wait(timeout=10) == 0
            err = w.stderr.read()
            assert "interrupted" in err and "Traceback" not in err
            wait_for(lambda: not workers(c), what="the worker to leave")
    finally:
        b.stop()


def test_worker_without_a_broker_fails_to_join(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "slither.worker", "--runtime-dir",
                           str(tmp_path), "--timeout", "0.5"], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("SLITHER_")})
    assert done.returncode == 1 and "cannot join" in done.stderr


# --- batching ----------------------------------------------------------------------------------


def test_key_fn_puts_items_of_one_key_together(pclient: slither.Client) -> None:
    out = pclient.map(f"{H}:batch_of", range(50), batch_size=4, key_fn=lambda x: x % 3,
                      ordering="as_completed")
    batches = {tuple(b) for b in out}
    for batch in batches:
        assert len({x % 3 for x in batch}) == 1 and len(batch) <= 4
    assert sorted(x for b in batches for x in b) == list(range(50))


def test_weight_fn_bounds_each_batch(pclient: slither.Client) -> None:
    items = [1, 5, 5, 2, 9, 30, 1, 1]
    out = pclient.map(f"{H}:batch_of", items, batch_size=8, weight_fn=float, max_weight=10)
    batches = [tuple(b) for b in out]
    for b in set(batches):
        assert sum(b) <= 10 or len(b) == 1
    with pytest.raises(ValueError, match="weight"):
        pclient.map(f"{H}:batch_of", [1, -1], weight_fn=float, max_weight=10)
