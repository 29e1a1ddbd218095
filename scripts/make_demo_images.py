"""Draw the bundled model's demo pictures (src/torchclip/data/demo_images/), one per drawing style.

    .venv/bin/python scripts/make_demo_images.py

Six single-object pictures named COLOUR_SHAPE.png; three show colour x shape pairs held out of the model's
training (red triangle, yellow circle, blue ring). Each is drawn by `torchclip.datasets.synthetic` in a
different style, two of them in the styles training never draws (the checks background, the light outline),
so `make demo` shows the model naming pictures unlike its training ones. They illustrate; they do not measure
(the bundled model misses some pictures in every varied style: its model card gives the accuracy on each
evaluation split). Deterministic: the same files each run.
"""

from __future__ import annotations

import random
from pathlib import Path

from torchclip.datasets.synthetic import COLOURS, Style, Thing, render_styled

OUT = Path(__file__).resolve().parent.parent / "src" / "torchclip" / "data" / "demo_images"

# (colour, shape, size word, centre, style)
PICTURES = [
    ("red", "triangle", "large", (0.5, 0.5), Style(160, "checks", (200, 200, 205), "light", 0.02, True, 0.0, None)),
    ("yellow", "circle", "medium", (0.4, 0.6), Style(128, "gradient", (40, 45, 60), "none", 0.02, True, 0.0, None)),
    ("blue", "ring", "large", (0.55, 0.45), Style(224, "flat", (245, 245, 245), "none", 0.02, False, 0.0, None)),
    ("green", "star", "large", (0.55, 0.45), Style(96, "noise", (120, 115, 110), "dark", 0.025, True, 0.6, None)),
    ("purple", "cross", "medium", (0.5, 0.5), Style(192, "stripes", (190, 190, 175), "shade", 0.02, True, 0.0, 60)),
    ("white", "square", "medium", (0.4, 0.6), Style(128, "blotches", (60, 60, 70), "light", 0.03, False, 0.0, None)),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for colour, shape, size, centre, style in PICTURES:
        assert colour in COLOURS
        image = render_styled([Thing(colour, shape, size, centre, 0.0)], random.Random(f"demo/{colour}/{shape}"), style)
        image.save(OUT / f"{colour}_{shape}.png", optimize=True)
        print(f"{OUT / f'{colour}_{shape}.png'}: {image.size[0]} px, {style.background}, outline {style.outline}")


if __name__ == "__main__":
    main()
