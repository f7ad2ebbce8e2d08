"""The examples' pure-Python baselines: their safe modes hold every invariant,
and the checks see a broken one (they are what slither-example reports)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))

import batch_stats_baseline  # noqa: E402
import batch_stats_data  # noqa: E402
import data_etl_baseline  # noqa: E402
import data_etl_data  # noqa: E402
import text_analysis_baseline  # noqa: E402
import text_analysis_data  # noqa: E402


@pytest.fixture(scope="module")
def etl() -> dict:
    return data_etl_data.generate(0.02, 7)


def test_data_etl_safe_mode_holds_and_the_checks_see_breaks(etl: dict) -> None:
    out = data_etl_baseline.safe_python(etl, 2)
    assert all(data_etl_baseline.check(etl, out).values())

    wrong_schema = copy.deepcopy(out)
    wrong_schema["results"][0]["schema_version"] += 1
    held = data_etl_baseline.check(etl, wrong_schema)
    assert not held["every row saw its phase's schema"]

    lost = copy.deepcopy(out)
    lost["results"].pop()
    assert not data_etl_baseline.check(etl, lost)["every row accounted for once"]


def test_batch_stats_checks_see_a_poison_dataset_not_skipped() -> None:
    data = batch_stats_data.generate(0.02, 3)
    assert data["poison"]
    out = batch_stats_baseline.safe_python(data, 2)
    assert all(batch_stats_baseline.check(data, out).values())
    out["skipped"] = out["skipped"][1:]
    assert not batch_stats_baseline.check(data, out)["poison datasets skipped, and only they"]


def test_batch_stats_welford_merge_matches_one_pass() -> None:
    from batch_stats_worker import Welford, dataset_stats

    values = [float(i % 7) - 2.5 for i in range(1000)]
    whole = dataset_stats(values)
    merged = Welford()
    for i in range(0, 1000, 137):
        merged.merge(dataset_stats(values[i : i + 137]))
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-12)


def test_text_analysis_checks_see_a_lost_index_update() -> None:
    data = text_analysis_data.generate(0.01, 5)
    out = text_analysis_baseline.safe_python(data, 2)
    assert all(text_analysis_baseline.check(data, out).values())
    word = next(iter(out["index"]))
    out["index"][word] -= 1
    assert not text_analysis_baseline.check(data, out)["word index matches a sequential run"]
