"""The README's main job: `slither-example feature_store` on an embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_BIN = Path(
    os.environ.get("SLITHER_EXAMPLE_BIN", REPO / "build" / "examples" / "slither-example")
)


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SLITHER_PYTHON=sys.executable)
    return subprocess.run(
        [str(EXAMPLE_BIN), *args], env=env, capture_output=True, text=True, timeout=120
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
    assert "--all" in done.stdout and "--list" in done.stdout
