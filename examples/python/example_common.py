"""What the examples' Python sides share: imports that name the missing
package, the data files the generators write, progress bars."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator, TypeVar

# The import name of each third-party module the examples use, and the
# package that provides it.
PACKAGES = {
    "numpy": "numpy",
    "sklearn": "scikit-learn",
    "PIL": "Pillow",
    "tqdm": "tqdm",
    "slither": "slither",
}

#: The exit status of an example process whose Python package is missing;
#: slither-example passes the message on instead of a traceback.
MISSING_PACKAGE_EXIT = 3

T = TypeVar("T")


def missing_package_message(module: str) -> str:
    """The message for a module that failed to import."""
    package = PACKAGES.get(module.split(".")[0], module)
    if package == "slither":
        how = "run scripts/setup.sh, which builds and installs it into .venv"
    else:
        how = f"install it with: .venv/bin/pip install -r examples/requirements.txt ({package})"
    return f"this example needs the Python package '{package}': {how}"


def require(module: str) -> ModuleType:
    """Imports `module`, or exits naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"{Path(sys.argv[0]).stem}: {missing_package_message(module)}", file=sys.stderr)
        raise SystemExit(MISSING_PACKAGE_EXIT) from None


def read_data(path: str | Path) -> Any:
    """The value a generator wrote with `write_data`."""
    slither = require("slither")
    return slither.decode(Path(path).read_bytes())


def write_data(path: str | Path, value: Any) -> None:
    """Writes `value` in Slither's encoding, which the C++ driver decodes."""
    slither = require("slither")
    Path(path).write_bytes(slither.encode(value))


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """`items` with a progress bar on a terminal (none when stderr is not one)."""
    tqdm = require("tqdm")
    bar = tqdm.tqdm(items, total=total, desc=desc, file=sys.stderr, disable=None, leave=False)
    return iter(bar)


def generator_args(doc: str | None, default_seed: int = 42) -> argparse.Namespace:
    """The command line of a data generator: --scale, --seed, --out."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    ap.add_argument("--seed", type=int, default=default_seed)
    ap.add_argument("--out", required=True, help="file to write the data to")
    args = ap.parse_args()
    if not 0 < args.scale <= 100:
        ap.error(f"--scale must be in (0, 100] (got {args.scale})")
    return args


def scaled(full: int, scale: float, least: int = 1) -> int:
    """`full * scale`, rounded, at least `least`."""
    return max(least, round(full * scale))


def warm_up(items: list, ctx) -> list:
    """A worker handler: each item is a list of module names (an example's
    worker module), imported here so that the timed run that follows does not
    pay for imports the baselines paid before their timers started."""
    for names in items:
        for name in names:
            importlib.import_module(name)
    return items
