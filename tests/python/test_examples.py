"""The README's main job: `slither-example` runs feature_store and the five
demos on an embedded broker, each beside its pure-Python baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_BIN = Path(
    os.environ.get("SLITHER_EXAMPLE_BIN", REPO / "build" / "examples" / "slither-example")
)


DEMOS = ["text_analysis", "batch_stats", "data_etl", "ml_scoring", "image_pipeline"]


def run_example(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SLITHER_PYTHON=sys.executable, **env)
    return subprocess.run(
        [str(EXAMPLE_BIN), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_feature_store_demo_runs_end_to_end() -> None:
    done = run_example("feature_store")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "loaded 500 users from features.jsonl" in out
    assert "[reader] 500 users read in place" in out
    assert "zero-copy view (4096, 1024) float32" in out
    assert "all visible at once" in out
    assert "users now 600 (100 written by Python through the broker)" in out


def test_unknown_example_is_a_clear_error() -> None:
    done = run_example("no_such_demo")
    assert done.returncode == 2
    assert "no example named 'no_such_demo'" in done.stderr


def test_help_lists_options() -> None:
    done = run_example("--help")
    assert done.returncode == 0
    for flag in ("--all", "--list", "--no-baseline", "--workers", "--scale", "--json"):
        assert flag in done.stdout


def test_no_argument_lists_every_example() -> None:
    done = run_example()
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == ["feature_store", *DEMOS]


@pytest.mark.parametrize("name", DEMOS)
def test_demo_holds_its_invariants_beside_the_baselines(name: str) -> None:
    done = run_example(name, "--scale", "0.1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)  # stdout holds only the summary with --json
    assert summary["scale"] == 0.1
    (report,) = summary["examples"]
    assert report["name"] == name and report["ok"], report
    slither = report["slither"]
    assert slither["held"] and slither["invariants"] and all(slither["invariants"].values())
    assert slither["items"] > 0 and slither["seconds"] > 0
    modes = {b["mode"]: b for b in report["baselines"]}
    assert {"unsafe_threaded", "safe_python"} <= set(modes)
    # A safe baseline that breaks an invariant is a harness bug.
    assert modes["safe_python"]["held"], modes["safe_python"]
    assert "slither" in done.stderr and "invariants" in done.stderr


@pytest.mark.parametrize("name", DEMOS)
def test_a_broken_invariant_fails_the_demo(name: str) -> None:
    done = run_example(name, "--scale", "0.1", "--no-baseline", "--break-invariant")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout
    assert "Slither broke an invariant" in done.stdout


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    # A Pillow that cannot be imported, first on the path.
    (tmp_path / "PIL").mkdir()
    (tmp_path / "PIL" / "__init__.py").write_text("raise ImportError('no PIL here')\n")
    done = run_example("image_pipeline", "--scale", "0.1", PYTHONPATH=str(tmp_path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "needs the Python package 'Pillow'" in done.stderr
    assert "examples/requirements.txt" in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_and_no_baseline() -> None:
    done = run_example("text_analysis", "--scale", "0.05", "--workers", "1", "--no-baseline",
                       "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["workers"] == 1
    (report,) = summary["examples"]
    assert report["baselines"] == []
    assert report["facts"]["workers"] == 1


def test_json_keeps_stdout_for_the_summary_with_child_processes() -> None:
    # feature_store's Python processes print too: with --json they print to stderr.
    done = run_example("feature_store", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)["examples"]
    assert report == {"name": "feature_store", "ok": True, "baselines": [],
                      "facts": {"users_loaded": 500, "users_after": 600}}
    assert "[reader] 500 users read in place" in done.stderr
