"""image_pipeline data: 200 generated images (Pillow), written as PNG files.

Writes the images into `<out>.images/` and {"images": [{"id", "path",
"width", "height", "pixels"}]} to `--out`. Sizes vary from thumbnails to
about a megapixel, so batches weighted by pixel count differ in length.
"""

from __future__ import annotations

import random
from pathlib import Path

from example_common import generator_args, progress, require, scaled, write_data

Image = require("PIL.Image")
ImageDraw = require("PIL.ImageDraw")

FULL_SIZE = 200


def image(rng: random.Random, width: int, height: int):
    """Gradients and shapes: content that thumbnails visibly."""
    top = tuple(rng.randrange(256) for _ in range(3))
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    im = Image.blend(im, Image.new("RGB", (width, height), top), 0.5)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(8, max(9, width // 2)), y0 + rng.randint(8, max(9, height // 2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    return im


def generate(scale: float, seed: int, out: Path) -> dict:
    rng = random.Random(seed)
    folder = out.with_name(out.name + ".images")
    folder.mkdir(mode=0o700, exist_ok=True)
    n = scaled(FULL_SIZE, scale)
    images = []
    for i in progress(range(n), n, "generating images"):
        width, height = rng.randint(64, 1280), rng.randint(64, 960)
        path = folder / f"image-{i:04d}.png"
        image(rng, width, height).save(path, compress_level=1)
        images.append({"id": i, "path": str(path), "width": width, "height": height,
                       "pixels": width * height})
    return {"images": images}


if __name__ == "__main__":
    args = generator_args(__doc__)
    out = Path(args.out)
    write_data(out, generate(args.scale, args.seed, out))
