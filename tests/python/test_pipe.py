"""slither.Pipe: local stages, python stages (real worker processes under a real
broker) and routers on the C++ engine; every return form and policy, validation,
real streaming, per-item accounting under poison items and killed workers, and
telemetry."""

from __future__ import annotations

import gc
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import slither
from conftest import Broker, pool_broker, wait_for, wait_workers, workers

H = "pipe_handlers"


@pytest.fixture(scope="module")
def pbroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = pool_broker(tmp_path_factory.mktemp("pipe"), "p")
    b.start()
    yield b
    b.stop()


def ident(x: Any) -> Any:
    return x


# --- local stages: every return form -------------------------------------------------------


def test_every_return_form_of_a_local_stage() -> None:
    def form(x: int) -> Any:
        match x:
            case 0:
                return None                              # a value: None
            case 1:
                return [1, 1]                            # a value: a list
            case 2:
                return slither.Many([20, 21, 22])        # three new items
            case 3:
                return slither.Many([])                  # none: the item is skipped
            case 4:
                return slither.Skip
            case 5:
                return slither.Route("side")             # leaves, unchanged
            case 6:
                return slither.Route("side", "six")      # leaves with a new value
            case 7:
                raise ValueError("seven")
            case _:
                return x * 10

    p = slither.Pipe("forms").local("form", form).output("side").on_error("form", "skip")
    out = p.run(None, range(10))
    assert out["default"] == [None, [1, 1], 20, 21, 22, 80, 90]
    assert out["side"] == [5, "six"]
    assert sorted(out.skipped) == [3, 4]
    assert [(i, f.stage, f.kind, f.type, f.message) for i, f in out.failures] == [
        (7, "form", "exception", "ValueError", "seven")]
    assert out.pulled == 10 and out.unfinished == []


def test_children_of_many_carry_new_ids_and_their_parent() -> None:
    seen: list[tuple[int, Any, Any]] = []

    def look(x: Any, ctx: slither.PipeContext) -> Any:
        seen.append((ctx.item_id, ctx.meta.get("parent"), x))
        return x

    p = slither.Pipe("kids").local("split", lambda x: slither.Many([x, -x])).local(
        "look", look, context=True)
    assert p.run(None, [1, 2])["default"] == [1, -1, 2, -2]
    assert all(i >= 2**63 for i, _, _ in seen)
    assert [(parent, x) for _, parent, x in seen] == [(0, 1), (0, -1), (1, 2), (1, -2)]


def test_context_of_a_local_stage() -> None:
    got: list[tuple[str, str, str, dict[str, Any]]] = []

    def look(x: int, ctx: slither.PipeContext) -> int:
        got.append((ctx.pipe, ctx.stage, ctx.session_id, ctx.metadata))
        return x

    p = slither.Pipe("ctx").local("look", look, context=True)
    p.run(None, [1], session_id="s7", metadata={"k": [1, "v"]})
    assert got == [("ctx", "look", "s7", {"k": [1, "v"]})]


def test_batch_local_stages_get_lists_and_fail_whole_batches() -> None:
    sizes: list[int] = []

    def tens(xs: list[int]) -> list[Any]:
        sizes.append(len(xs))
        if 13 in xs:
            raise KeyError("thirteen")
        return [slither.Skip if x == 3 else x * 10 for x in xs]

    p = slither.Pipe("b").local("tens", tens, batch=True, batch_size=5).on_error("*", "skip")
    out = p.run(None, range(20), chunk_items=20)
    assert max(sizes) <= 5
    assert out["default"] == [x * 10 for x in range(20) if x != 3 and not 10 <= x < 15]
    assert out.skipped == [3]
    assert sorted(i for i, _ in out.failures) == [10, 11, 12, 13, 14]
    assert {f.type for _, f in out.failures} == {"KeyError"}

    short = slither.Pipe("s").local("short", lambda xs: xs[:-1], batch=True).on_error("*", "skip")
    out = short.run(None, range(4))
    assert out["default"] == [] and len(out.failures) == 4
    assert "returned 3 steps for 4 items" in out.failures[0][1].message


def test_router_first_match_wins_unmatched_go_on_and_predicates_may_fail() -> None:
    def bad(x: int) -> bool:
        if x == 7:
            raise TypeError("no sevens")
        return False

    p = (slither.Pipe("r")
         .router("route", [(bad, "never"), (lambda x: x % 3 == 0, "three"),
                           (lambda x: x % 2 == 0, "two")])
         .local("after", lambda x: -x)
         .output("three").output("two").output("never")
         .on_error("route", "skip"))
    out = p.run(None, range(10))
    assert out["three"] == [0, 3, 6, 9]
    assert out["two"] == [2, 4, 8]
    assert out["default"] == [-1, -5]            # unmatched go on to the next stage
    assert out["never"] == []
    assert [(i, f.stage, f.type, f.message) for i, f in out.failures] == [
        (7, "route", "TypeError", "no sevens")]


# --- policies ----------------------------------------------------------------------------------


def poison(bad: set[int]) -> Any:
    def fn(x: int) -> int:
        if x in bad:
            raise RuntimeError(f"poison {x}")
        return x
    return fn


def test_halt_raises_pipe_error_with_partial_outputs_and_every_id_accounted() -> None:
    p = slither.Pipe("h").local("a", ident).local("check", poison({500}))
    with pytest.raises(slither.PipeError) as ei:
        p.run(None, list(range(5000)), queue_items=16, chunk_items=4)
    e = ei.value
    assert isinstance(e, slither.SlitherError)
    assert e.item == 500 and e.error.stage == "check" and e.error.type == "RuntimeError"
    assert "stage 'check', item 500: RuntimeError: poison 500" in str(e)
    ids = [*e.outputs["default"], e.item, *e.unfinished]
    assert sorted(ids) == list(range(5000))          # each id once: output, error or unfinished
    assert e.unfinished                              # it stopped early


def test_skip_route_and_star_fallback() -> None:
    p = (slither.Pipe("p")
         .local("a", poison({1}))
         .local("b", poison({2}))
         .output("bad")
         .on_error("a", slither.on_error.skip())
         .on_error("*", slither.on_error.route("bad")))
    out = p.run(None, range(4))
    assert out["default"] == [0, 3]
    assert [i for i, _ in out.failures] == [1]
    [f] = out["bad"]
    assert isinstance(f, slither.Failed) and f.item == 2 and f.output == "bad"
    assert (f.error.stage, f.error.type, f.error.message) == ("b", "RuntimeError", "poison 2")


def test_retry_runs_a_failing_item_again_then_falls_back() -> None:
    tries: dict[int, int] = {}

    def flaky(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        if x == 1 and tries[x] < 3:
            raise OSError("flaky")
        if x == 2:
            raise OSError("always")
        return x

    p = (slither.Pipe("r").local("flaky", flaky)
         .on_error("flaky", slither.on_error.retry(3, backoff=0.001, then="skip")))
    out = p.run(None, range(4))
    assert sorted(out["default"]) == [0, 1, 3]      # a retried item comes out after the others
    assert tries[1] == 3 and tries[2] == 3
    [(item, f)] = out.failures
    assert item == 2 and f.attempt == 3 and f.message == "always"


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("build, message", [
    (lambda: slither.Pipe("v").local("a", ident).local("a", ident), "stage name 'a' is used twice"),
    (lambda: slither.Pipe("v").router("r", [(bool, "nowhere")]),
     "router 'r' routes to undeclared output 'nowhere'"),
    (lambda: slither.Pipe("v").local("a", ident).on_error("a", ("route", "nowhere")),
     "on_error for 'a' routes to undeclared output 'nowhere'"),
    (lambda: slither.Pipe("v").local("a", ident).on_error("b", "skip"),
     "on_error for unknown stage 'b'"),
    (lambda: slither.Pipe("v").python("p", "predict_batch"),
     "python stage 'p' needs both a module and a function (got ':predict_batch')"),
    (lambda: slither.Pipe("v").python("p", "my_model:"), "needs both a module and a function"),
    (lambda: slither.Pipe("v"), "it has no stages"),
])
def test_validation_errors_name_the_bad_part(build: Any, message: str) -> None:
    p = build()
    for check in (p.validate, lambda: p.run(None, [1]), lambda: p.stream(None, [1])):
        with pytest.raises(slither.InvalidArgument, match=re.escape(message)) as ei:
            check()
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, slither.SlitherError)


def test_builder_rejects_bad_arguments_at_once() -> None:
    p = slither.Pipe("v")
    with pytest.raises(TypeError, match="must be callable"):
        p.local("a", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be an int of at least 1"):
        p.python("p", "m:f", batch_size=0)
    with pytest.raises(ValueError, match="on_error must be"):
        p.on_error("*", "explode")
    with pytest.raises(TypeError, match="predicate must be callable"):
        p.router("r", [(1, "x")])
    with pytest.raises(ValueError, match="ordering must be"):
        p.python("p", "m:f", ordering="random")
    with pytest.raises(slither.InvalidArgument, match="needs a batch runner"):
        slither.Pipe("v").python("p", "m:f").run(None, [1])


# --- input -------------------------------------------------------------------------------------


def test_what_the_input_raises_comes_out_and_bad_input_is_a_type_error() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise KeyError("input broke")

    p = slither.Pipe("i").local("a", ident)
    with pytest.raises(KeyError, match="input broke"):
        list(p.stream(None, broken()))
    with pytest.raises(TypeError, match="input item: object of type 'object' has no Value form"):
        p.run(None, [1, object()])


def test_streaming_is_real_endless_input_bounded_pulls_early_output() -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    p = slither.Pipe("s").local("a", ident).local("b", lambda x: x * 2)
    with p.stream(None, endless(), queue_items=32, chunk_items=8) as st:
        first = next(st)
        at_first = pulled
        rest = list(itertools.islice(st, 99))
    assert first == ("default", 0) and [v for _, v in rest] == [2 * i for i in range(1, 100)]
    # 3 queues of 32 and a sink of 32 between input and consumer, plus a chunk in hand
    assert at_first <= 5 * 32 and pulled <= 100 + 5 * 32
    assert st.pulled == pulled


def test_concurrency_and_concurrent_runs_of_one_pipe() -> None:
    p = slither.Pipe("c").local("sq", lambda x: x * x, concurrency=3).local("tag", ident)
    results: dict[int, list[int]] = {}

    def go(k: int) -> None:
        results[k] = sorted(p.run(None, range(k * 1000, k * 1000 + 1000), session_id=f"s{k}")["default"])

    threads = [threading.Thread(target=go, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == sorted(x * x for x in range(k * 1000, k * 1000 + 1000))


def test_an_abandoned_stream_is_collected_and_ends_its_run() -> None:
    calls = 0

    def fn(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    holder: list[Any] = []

    def endless() -> Iterator[int]:  # refers back to the stream: a cycle
        for i in itertools.count():
            yield i + len(holder) * 0

    p = slither.Pipe("g").local("fn", fn)
    st = p.stream(None, endless(), queue_items=8, chunk_items=2)
    holder.append(st)
    next(st)
    del st, holder
    gc.collect()
    before = calls
    time.sleep(0.05)
    assert calls == before  # the run ended: nothing calls fn any more


# --- python stages on a broker ----------------------------------------------------------------


def scored_pipe() -> slither.Pipe:
    return (slither.Pipe("score")
            .local("prepare", lambda i: {"id": i})
            .python("predict", f"{H}:score", batch_size=16, max_in_flight=4)
            .router("route", [(lambda r: r["score"] > 0.75, "accept"),
                              (lambda r: r["score"] > 0.45, "review")])
            .output("accept").output("review"))


def test_native_python_router_pipe_on_a_broker(pclient: slither.Client) -> None:
    out = scored_pipe().run(pclient, range(1000), session_id="s1")
    assert [r["id"] for r in out["accept"]] == [i for i in range(1000) if i % 10 >= 8]
    assert [r["id"] for r in out["review"]] == [i for i in range(1000) if 5 <= i % 10 <= 7]
    assert [r["id"] for r in out["default"]] == [i for i in range(1000) if i % 10 <= 4]


def test_python_stage_context_reaches_the_worker(pclient: slither.Client) -> None:
    p = slither.Pipe("ctxp").python("predict", f"{H}:context").store("features")
    [r] = p.run(pclient, [5], session_id="s9", metadata={"k": 1})["default"]
    assert (r["value"], r["pipe"], r["stage"], r["session_id"]) == (5, "ctxp", "predict", "s9")
    assert r["metadata"] == {"k": 1, "stores": ["features"]}
    with pytest.raises(slither.NotFound, match="no store 'nope'"):
        slither.Pipe("ctxp").python("predict", f"{H}:context").store("nope").run(pclient, [1])


def test_python_stage_policies(pclient: slither.Client) -> None:
    def pipe(policy: Any) -> slither.Pipe:
        return (slither.Pipe("pp").local("prep", lambda i: {"id": i})
                .python("predict", f"{H}:work", batch_size=4).output("bad")
                .on_error("predict", policy))

    meta = {"bad": [3], "raise": [9]}
    out = pipe("skip").run(pclient, range(12), metadata=meta)
    assert [r["id"] for r in out["default"]] == [0, 1, 2, 4, 5, 6, 7]
    failed = {i: f for i, f in out.failures}
    assert set(failed) == {3, 8, 9, 10, 11}          # item 3 alone, 9's whole batch
    assert failed[3].kind == "item_error" and failed[3].type == "ValueError"
    assert failed[9].kind == "exception" and "poison 9" in failed[9].message
    assert failed[9].stage == "predict" and "RuntimeError" in failed[9].traceback

    out = pipe(("route", "bad")).run(pclient, range(12), metadata=meta)
    assert sorted(f.item["id"] for f in out["bad"]) == [3, 8, 9, 10, 11]
    assert {f.error.stage for f in out["bad"]} == {"predict"}

    with pytest.raises(slither.PipeError) as ei:
        pipe("halt").run(pclient, range(12), metadata={"bad": [3]})
    assert ei.value.item == 3 and ei.value.error.stage == "predict"


def test_streaming_through_a_python_stage_pulls_only_what_fits(pclient: slither.Client) -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    with scored_pipe().stream(pclient, endless(), queue_items=64, chunk_items=16) as st:
        first = next(st)
        at_first = pulled
        taken = [first, *itertools.islice(st, 499)]
    assert len(taken) == 500
    # 3 queues and the sink of 64, plus a python stage's 4 batches of 16 in flight
    bound = 4 * 64 + 4 * 16 + 16
    assert at_first <= bound and pulled <= 500 + bound


def test_every_input_ends_once_with_poison_items_and_killed_workers(
        tmp_path: Path) -> None:
    b = pool_broker(tmp_path, "k")
    b.start()
    try:
        with b.connect() as c:
            wait_workers(c, 2)
            n = 3000
            crash = [101, 1700]          # SIGKILL their worker on the first attempt
            bad = [5, 600, 2999]         # ItemError: fail alone
            raise_on = [1234]            # fail their whole batch, on every attempt
            p = (slither.Pipe("acct")
                 .local("prep", poison({77, 78}))
                 .local("wrap", lambda i: {"id": i})
                 .python("predict", f"{H}:work", batch_size=8, max_in_flight=4)
                 .router("route", [(lambda r: r["id"] % 3 == 0, "three")])
                 .output("three")
                 .on_error("prep", "skip")
                 .on_error("predict", slither.Retry(3, backoff=0.01, then="skip")))
            before = {w["pid"] for w in workers(c)}
            killed: list[int] = []

            def killer() -> None:  # one more worker SIGKILLed while the run goes on
                pids = wait_for(lambda: [w["pid"] for w in workers(c)], what="workers")
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

            t = threading.Thread(target=killer)
            t.start()
            out = p.run(c, range(n), metadata={"crash": crash, "bad": bad, "raise": raise_on})
            t.join()
            ids = [r["id"] for r in out["default"]] + [r["id"] for r in out["three"]]
            assert all(r["scored"] for r in out["default"] + out["three"])
            failed = [i for i, _ in out.failures]
            everything = sorted(ids + failed + out.skipped + out.unfinished)
            assert everything == list(range(n))                 # every input id exactly once
            assert set(failed) >= {77, 78, *bad, *raise_on}
            # besides them, only the poison batch of 1234 (at most a batch of 8) failed
            batch = {i: f for i, f in out.failures if i not in {77, 78, *bad}}
            assert 1234 in batch and len(batch) <= 8
            assert all("poison 1234" in f.message and f.attempt == 3 for f in batch.values())
            assert not set(crash) & set(failed)                  # killed batches ran again
            assert killed and wait_for(lambda: {w["pid"] for w in workers(c)} - before,
                                       what="restarted workers")
    finally:
        b.kill()


# --- telemetry ---------------------------------------------------------------------------------


def test_telemetry_events_in_order_with_their_metadata(pclient: slither.Client) -> None:
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    with slither.telemetry.attach("slither.pipe.", lambda e, m, md: events.append((e, m, md))):
        def check(r: dict[str, Any]) -> dict[str, Any]:
            poison({42})(r["id"])
            return r

        p = scored_pipe().local("check", check).on_error("check", "skip")
        p.run(pclient, range(100), session_id="tel")
    names = [e for e, _, _ in events]
    assert names[0] == "slither.pipe.run.start" and names[-1] == "slither.pipe.run.stop"
    run_ids = {md["run"] for _, _, md in events}
    assert len(run_ids) == 1
    assert all(md["pipe"] == "score" and md["session"] == "tel" for _, _, md in events)
    kinds = {(md["stage"], md["kind"]) for e, _, md in events if e == "slither.pipe.stage.start"}
    assert kinds >= {("prepare", "native"), ("predict", "python"), ("route", "router")}
    for e, m, _ in events:
        if e == "slither.pipe.stage.stop":
            assert m["duration_us"] >= 0 and m["size"] >= 1
    [(_, m, md)] = [x for x in events if x[0] == "slither.pipe.stage.exception"]
    assert (md["stage"], md["item"], md["type"], md["policy"]) == ("check", 42, "RuntimeError", "skip")
    _, stop, md = events[-1]
    assert stop["items_in"] == 100 and stop["failures"] == 1 and md["status"] == "ok"

    # a halt ends with run.exception; a detached handler hears nothing more
    events.clear()
    a = slither.telemetry.attach("slither.pipe.run", lambda e, m, md: events.append((e, m, md)))
    with pytest.raises(slither.PipeError):
        slither.Pipe("h").local("x", poison({1})).run(None, range(3))
    a.detach()
    slither.Pipe("h").local("x", ident).run(None, range(3))
    assert [e for e, _, _ in events] == ["slither.pipe.run.start", "slither.pipe.run.exception"]
    assert events[1][2]["stage"] == "x" and events[1][2]["item"] == 1


def test_a_telemetry_handler_that_raises_does_not_break_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(u.exc_value))

    def bad(e: str, m: Any, md: Any) -> None:
        raise RuntimeError("handler broke")

    with slither.telemetry.attach("slither.pipe.run.start", bad):
        assert slither.Pipe("t").local("x", ident).run(None, [1])["default"] == [1]
    assert seen and isinstance(seen[0], RuntimeError)
