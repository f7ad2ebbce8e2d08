"""The Python distribution: its name on a package index, and what it installs."""

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import slither

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "slither-coordinator"


def test_the_distribution_is_not_named_like_the_unrelated_index_packages():
    # "slither" on the public index is an unrelated package (so is "slither-analyzer",
    # which also installs a top-level `slither`): ours must not be installed by
    # `pip install slither`, nor replace theirs.
    project = tomllib.loads((ROOT / "py_client" / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION


def test_import_slither_is_the_installed_slither_coordinator():
    dist = importlib.metadata.distribution(DISTRIBUTION)
    files = {str(f) for f in dist.files or []}
    assert "slither/__init__.py" in files
    assert Path(slither.__file__).resolve() == Path(dist.locate_file("slither/__init__.py")).resolve()
    assert dist.version == slither.__version__


def test_no_other_distribution_named_slither_is_installed_beside_it():
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("slither")
