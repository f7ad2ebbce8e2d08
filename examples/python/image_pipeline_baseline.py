"""image_pipeline in pure Python: 200 thumbnails with threads or processes.

unsafe_threaded: threads append to shared result lists and bump shared
counters; safe_python: each batch returns its results, merged in order;
multiprocessing_pool: the same batches in processes. Every mode writes its
thumbnails into a directory of its own, which the check removes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from baseline_harness import PoolMode, chunks, main
from example_common import require

require("PIL")
from image_pipeline_worker import make_thumbnail  # noqa: E402  (after the package check)

Image = require("PIL.Image")

BATCH = 8


def thumbs_batch(task: tuple[list, str]) -> list[dict]:
    batch, folder = task
    return [dict(make_thumbnail(im["path"], Path(folder) / f"thumb-{im['id']:04d}.png"),
                 id=im["id"]) for im in batch]


def unsafe_threaded(data: dict, workers: int) -> dict:
    folder = tempfile.mkdtemp(prefix="slither-thumbs-")
    results: list = []
    stats = {"images": 0, "pixels": 0}

    def work(batch: list) -> None:
        for im in batch:
            thumb = make_thumbnail(im["path"], Path(folder) / f"thumb-{im['id']:04d}.png")
            results.append(dict(thumb, id=im["id"]))
            stats["images"] += 1
            stats["pixels"] += im["pixels"]

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(work, chunks(data["images"], BATCH)))
    return {"folder": folder, "results": results, **stats}


def merge(data: dict, folder: str, parts) -> dict:
    results = [r for part in parts for r in part]
    pixels = {im["id"]: im["pixels"] for im in data["images"]}
    return {"folder": folder, "results": results, "images": len(results),
            "pixels": sum(pixels[r["id"]] for r in results)}


def safe_python(data: dict, workers: int) -> dict:
    folder = tempfile.mkdtemp(prefix="slither-thumbs-")
    with ThreadPoolExecutor(workers) as ex:
        tasks = [(b, folder) for b in chunks(data["images"], BATCH)]
        return merge(data, folder, ex.map(thumbs_batch, tasks))


def multiprocessing_pool(data: dict, pool) -> dict:
    folder = tempfile.mkdtemp(prefix="slither-thumbs-")
    tasks = [(b, folder) for b in chunks(data["images"], BATCH)]
    return merge(data, folder, pool.imap(thumbs_batch, tasks))


def audit(data: dict, results: list) -> dict[str, bool]:
    """The image_pipeline invariants over results with "id", "thumb", "size"."""
    by_id = {im["id"]: im for im in data["images"]}
    ids = sorted(r["id"] for r in results)
    fits = True
    for r in results:
        im = by_id.get(r["id"])
        w, h = r["size"]
        if im is None or w > 128 or h > 128 or not Path(r["thumb"]).is_file():
            fits = False
            break
        with Image.open(r["thumb"]) as t:
            if list(t.size) != [w, h]:
                fits = False
                break
        # The aspect ratio survives within a pixel's rounding.
        if abs(w / h - im["width"] / im["height"]) > max(1 / h, w / h**2) * 1.01 + 1e-9:
            fits = False
            break
    return {"every image has one thumbnail": ids == sorted(by_id),
            "thumbnails on disk, within 128x128, aspect kept": fits}


def check(data: dict, out: dict) -> dict[str, bool]:
    try:
        held = audit(data, out["results"])
        held["image and pixel counts"] = out["images"] == len(data["images"]) and out[
            "pixels"] == sum(im["pixels"] for im in data["images"])
        return held
    finally:
        shutil.rmtree(out["folder"], ignore_errors=True)


MODES = {
    "unsafe_threaded": unsafe_threaded,
    "safe_python": safe_python,
    "multiprocessing_pool": PoolMode(multiprocessing_pool),
}

if __name__ == "__main__":
    sys.exit(main(__doc__, MODES, check, lambda data: len(data["images"])))
