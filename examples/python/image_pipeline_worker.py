"""image_pipeline worker: thumbnails, written next to each other on disk.

`thumbnail(items, ctx)`: items are {"id", "path", ...}; each image is opened,
shrunk to fit 128x128 (aspect kept) and saved as PNG into the directory the
job's metadata names (`thumbs_dir`). Results report the thumbnail and this
worker's peak resident memory so far, which stays bounded because the
driver weighs batches by pixel count and bounds the batches in flight.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from PIL import Image, ImageStat

THUMB = (128, 128)


def make_thumbnail(path: str, out: Path) -> dict:
    with Image.open(path) as im:
        im.draft("RGB", THUMB)
        im = im.convert("RGB")
        im.thumbnail(THUMB)
        im.save(out, compress_level=1)
        mean = [round(c, 2) for c in ImageStat.Stat(im).mean]
        return {"thumb": str(out), "size": list(im.size), "mean": mean}


def peak_rss_kib() -> int:
    """This process's peak resident memory since it started its program.

    VmHWM, not getrusage's ru_maxrss: a worker is forked from the broker's
    process and then execs Python, and ru_maxrss keeps the forked image's
    peak across the exec."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def thumbnail(items: list, ctx) -> list:
    """The Python stage: one thumbnail per image."""
    folder = Path(ctx.metadata["thumbs_dir"])
    out = []
    for item in items:
        done = make_thumbnail(item["path"], folder / f"thumb-{item['id']:04d}.png")
        out.append({"id": item["id"], **done, "worker": os.getpid(),
                    "peak_rss_kib": peak_rss_kib()})
    return out
