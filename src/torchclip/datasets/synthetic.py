"""A procedural image-caption world: coloured shapes on varied backgrounds, described in several phrasings.

It is what the bundled model is trained on (it needs no downloaded data), and it makes
a clean test of compositional generalisation: some colour x shape pairs (`HELD_OUT`) never appear in
training, neither in an image nor in a caption, yet zero-shot classification must name them.

Pictures come in three rendering styles (`STYLES`): "classic", the fixed cartoon look the first bundled model
was trained on; "varied", where everything about the drawing that does not change what it shows varies
(outline, edges, size, rotation, background, blur, JPEG, pixel size); and "unseen", varied but with a
background texture and an outline that training never draws (`UNSEEN_BACKGROUND`, `UNSEEN_OUTLINE`): an
evaluation of robustness to drawing styles the model has not met.

Every sample is a pure function of `(seed, index)`, so a data set is just a range of indices: any rank or
DataLoader worker can make any sample, and a resumed run sees exactly the samples it would have seen.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 140, 0),
    "yellow": (245, 225, 30),
    "green": (30, 165, 60),
    "blue": (35, 80, 235),
    "purple": (145, 50, 195),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
# Colours that only training uses, with every shape: so that each shape is seen in many colours and the
# image tower learns shape apart from colour. Zero-shot evaluation uses the 8 colours above (48 classes).
EXTRA_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (255, 160, 205),
    "cyan": (20, 210, 230),
    "brown": (135, 80, 35),
    "lime": (170, 235, 60),
}
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
OUTLINE = (20, 20, 20)
PLURALS = {"cross": "crosses"}
# One unseen pair per colour; every shape is held out with at least one colour.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("orange", "star"),
        ("yellow", "circle"),
        ("green", "cross"),
        ("blue", "ring"),
        ("purple", "square"),
        ("white", "star"),
        ("black", "circle"),
    }
)
SIZES = {"small": (0.14, 0.17), "medium": (0.2, 0.24), "large": (0.27, 0.32)}  # radius, fraction of side
POSITIONS = {  # name -> centre as a fraction of the side
    "top left": (0.25, 0.25),
    "top": (0.5, 0.25),
    "top right": (0.75, 0.25),
    "left": (0.25, 0.5),
    "center": (0.5, 0.5),
    "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75),
    "bottom": (0.5, 0.75),
    "bottom right": (0.75, 0.75),
}
NUMBERS = {2: "two", 3: "three", 4: "four"}


def composition_name(colour: str, shape: str) -> str:
    """The class name zero-shot evaluation uses for a colour x shape pair, e.g. "red triangle"."""
    return f"{colour} {shape}"


def all_compositions() -> list[tuple[str, str]]:
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str
    centre: tuple[float, float]  # fraction of the side
    angle: float  # degrees
    rgb: tuple[int, int, int] | None = None  # an unnamed colour (instead of the named one)

    @property
    def drawn_rgb(self) -> tuple[int, int, int]:
        """The colour it is drawn in (before the per-picture jitter)."""
        return self.rgb or COLOURS.get(self.colour) or EXTRA_COLOURS[self.colour]


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def polygon(corners: int, radii: list[float], start: float) -> list[tuple[float, float]]:
        points = []
        for k in range(corners * len(radii)):
            a = math.radians(start + angle + k * 360 / (corners * len(radii)))
            radius = radii[k % len(radii)]
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points

    if shape == "square":
        return polygon(4, [r * 1.15], 45)
    if shape == "triangle":
        return polygon(3, [r * 1.2], -90)
    if shape == "star":
        return polygon(5, [r * 1.2, r * 0.5], -90)
    if shape == "cross":
        w = r * 0.38
        arm = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm]
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _shape_mask(thing: Thing, side: int, cx: float, cy: float, r: float) -> Image.Image:
    """The thing's silhouette (255 inside) on a `side` x `side` canvas, centred at (cx, cy), radius r."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if thing.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif thing.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, round(r * 0.45)))
    else:
        draw.polygon(_shape_points(thing.shape, cx, cy, r, thing.angle), fill=255)
    return mask


def _background(rng: random.Random, side: int) -> Image.Image:
    """A muted background (flat, gradient, noise or stripes) that no object colour can hide in."""
    base = [rng.randint(80, 175) for _ in range(3)]
    grey = sum(base) / 3
    base = [int(grey + (c - grey) * 0.35) for c in base]  # desaturate
    kind = rng.choice(["flat", "gradient", "noise", "stripes"])
    image = Image.new("RGB", (side, side), tuple(base))
    draw = ImageDraw.Draw(image)
    if kind == "gradient":
        other = [min(255, max(0, c + rng.randint(-45, 45))) for c in base]
        vertical = rng.random() < 0.5
        for i in range(side):
            t = i / (side - 1)
            colour = tuple(int(a + (b - a) * t) for a, b in zip(base, other))
            draw.line([(0, i), (side, i)] if vertical else [(i, 0), (i, side)], fill=colour)
    elif kind == "noise":
        pixels = np.random.default_rng(rng.getrandbits(64)).normal(128, rng.uniform(10, 30), (side, side, 1))
        noise = Image.fromarray(np.repeat(pixels.clip(0, 255).astype(np.uint8), 3, axis=2))
        image = Image.blend(image, noise, 0.25).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))
    elif kind == "stripes":
        step = rng.randint(side // 16, side // 6)
        shade = tuple(min(255, max(0, c + rng.choice([-20, 20]))) for c in base)
        for x in range(-side, side, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step + side, side), (x + side, side)], fill=shade)
    return image


def render(things: list[Thing], rng: random.Random, size: int = 64) -> Image.Image:
    """Draw the things in the classic style: on a random muted background, at 2x and then downsampled
    (anti-aliased edges), `size` pixels square.

    Every object has a thin dark outline, as in a cartoon: its shape shows in the same way whatever its
    colour, so a model can learn shape apart from colour (and name a colour x shape pair it never saw).
    """
    side = size * 2
    image = _background(rng, side)
    for thing in things:
        low, high = SIZES[thing.size]
        r = rng.uniform(low, high) * side
        margin = r * 1.2  # keep the whole shape inside the picture
        cx = min(max(thing.centre[0] * side, margin), side - margin)
        cy = min(max(thing.centre[1] * side, margin), side - margin)
        rgb = thing.drawn_rgb
        colour = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in rgb)
        mask = _shape_mask(thing, side, cx, cy, r)
        box = mask.getbbox()
        if box is None:
            continue
        box = (max(0, box[0] - 3), max(0, box[1] - 3), min(side, box[2] + 3), min(side, box[3] + 3))
        mask = mask.crop(box)  # the outline is local: widen the shape's box and work there only
        image.paste(OUTLINE, box, mask=mask.filter(ImageFilter.MaxFilter(5)))
        image.paste(colour, box, mask=mask)
    return image.resize((size, size), Image.Resampling.BOX)


# --- Varied drawing styles -----------------------------------------------------------------------------------

STYLES = ("classic", "varied", "unseen")
BACKGROUNDS = ("flat", "gradient", "noise", "stripes", "blotches", "waves", "clouds")
OUTLINES = ("none", "dark", "shade", "grey", "colour")
# Drawn only in the "unseen" evaluation style, never in training.
UNSEEN_BACKGROUND = "checks"
UNSEEN_OUTLINE = "light"
# radius / side; the smallest is about 15 px across at the bundled model's 64 px input
VARIED_SIZES = {"small": (0.12, 0.17), "medium": (0.17, 0.25), "large": (0.25, 0.42)}
MIN_CONTRAST = 100.0  # RGB distance from a background's base colour to every object colour on it
CLASSIC_SHARE = 0.3  # of the "varied" training pictures, this share is drawn in the classic style
# How training scenes are mixed, as cumulative shares: one shape in an unnamed colour with a shape-only caption,
# then one named object, then several identical ones; two different objects take the rest. The varied world
# shows twice as many unnamed-colour shapes: where a shape is uncertain, the model otherwise guesses the shape
# it has seen most in that colour, which is always wrong for a held-out pair.
SCENE_THRESHOLDS = {"classic": (0.15, 0.55, 0.75), "varied": (0.3, 0.63, 0.795)}


@dataclass(frozen=True)
class Style:
    """How a picture is drawn. None of it changes what the picture shows, so none of it is in the caption."""

    side: int  # the picture's pixel size, before a processor resizes it
    background: str  # one of BACKGROUNDS, or UNSEEN_BACKGROUND
    base: tuple[int, int, int]  # the background's main colour: a grey, lightly tinted
    outline: str  # one of OUTLINES, or UNSEEN_OUTLINE
    outline_width: float  # fraction of the side
    smooth: bool  # anti-aliased edges (drawn at 2x and downsampled) or hard ones
    blur: float  # Gaussian blur radius in pixels of a 64-pixel picture; 0 for none
    jpeg_quality: int | None  # saved as a JPEG of this quality and decoded again; None for lossless


def random_style(
    rng: random.Random, image_size: int, colours: list[tuple[int, int, int]], unseen: bool = False
) -> Style:
    """A drawing style for a picture of objects in `colours`; `unseen` takes the background texture and
    outline that training never draws."""
    side = rng.randint(round(image_size * 0.75), image_size * 4)
    background = UNSEEN_BACKGROUND if unseen else rng.choice(BACKGROUNDS)
    outline = UNSEEN_OUTLINE if unseen else rng.choice(OUTLINES)
    for _ in range(100):  # a grey anywhere from black to white that every object stands out from
        grey = rng.randint(0, 255)
        base = tuple(min(255, max(0, grey + rng.randint(-20, 20))) for _ in range(3))
        if all(math.dist(base, colour) >= MIN_CONTRAST for colour in colours):
            break
    return Style(
        side=side,
        background=background,
        base=base,
        outline=outline,
        outline_width=rng.uniform(0.01, 0.035),
        smooth=rng.random() < 0.6,
        blur=rng.uniform(0.3, 0.8) if rng.random() < 0.3 else 0.0,
        jpeg_quality=rng.randint(40, 90) if rng.random() < 0.3 else None,
    )


def _styled_background(rng: random.Random, style: Style) -> Image.Image:
    """The style's background at the picture's pixel size."""
    side = style.side
    base = np.array(style.base, dtype=np.float32)
    shade = base + rng.choice([-1, 1]) * rng.uniform(15, 35)  # the texture's second colour
    ys, xs = np.ogrid[0:side, 0:side]
    ys, xs = ys.astype(np.float32) / side, xs.astype(np.float32) / side
    angle = rng.uniform(0, math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)  # distance along a random direction
    kind = style.background
    if kind == "flat":
        weight = np.zeros((side, side), np.float32)
    elif kind == "gradient":
        weight = (along - along.min()) / max(1e-6, float(along.max() - along.min())) * rng.uniform(1, 2.5)
    elif kind == "noise":
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0, rng.uniform(0.3, 1.0), (side, side))
        weight = noise.astype(np.float32)
    elif kind == "stripes":
        weight = (np.floor(along / rng.uniform(0.04, 0.15)) % 2).astype(np.float32)
    elif kind == "blotches":
        weight = np.zeros((side, side), np.float32)
        for _ in range(rng.randint(3, 8)):
            cx, cy, radius = rng.random(), rng.random(), rng.uniform(0.08, 0.3)
            weight[(xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = 1.0
    elif kind == "waves":  # smooth bands along a random direction
        weight = 0.5 + 0.5 * np.sin(along * (2 * math.pi / rng.uniform(0.05, 0.25)) + rng.uniform(0, 2 * math.pi))
    elif kind == "clouds":  # low-frequency noise: a coarse random grid smoothly enlarged
        cells = rng.randint(3, 8)
        coarse = np.random.default_rng(rng.getrandbits(64)).uniform(0, 1, (cells, cells)).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse, mode="F").resize((side, side), Image.Resampling.BICUBIC))
    elif kind == UNSEEN_BACKGROUND:
        step = rng.uniform(0.06, 0.2)
        weight = ((np.floor(xs / step) + np.floor(ys / step)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}; known: {BACKGROUNDS + (UNSEEN_BACKGROUND,)}")
    pixels = base + weight[..., None] * (shade - base)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _outline_colour(style: Style, rng: random.Random, fill: tuple[int, int, int]) -> tuple[int, int, int]:
    if style.outline == "dark":
        return (rng.randint(0, 60),) * 3
    if style.outline == "shade":  # a darker version of the object's own colour
        return tuple(round(c * 0.45) for c in fill)
    if style.outline == "grey":  # a mid grey: lighter than "dark", never as light as the unseen outline
        return (rng.randint(60, 170),) * 3
    if style.outline == "colour":  # any colour but a light grey (the unseen outline)
        while True:
            rgb = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
            if min(rgb) <= 170:
                return rgb
    if style.outline == UNSEEN_OUTLINE:
        return (rng.randint(215, 255),) * 3
    raise ValueError(f"no outline colour for outline {style.outline!r}")


def _dilate(mask: Image.Image, width: int) -> Image.Image:
    """The mask grown by about `width` pixels on every side (a blur and a threshold: cost independent of the
    width, unlike a max filter)."""
    grown = mask.filter(ImageFilter.GaussianBlur(width / 1.4))
    return grown.point(lambda value: 255 if value > 20 else 0)


def render_styled(things: list[Thing], rng: random.Random, style: Style) -> Image.Image:
    """Draw the things in `style`: any rotation, sizes from small to filling the frame, the style's
    background, outline, edges, blur and JPEG compression, at the style's pixel size."""
    side = style.side * (2 if style.smooth else 1)
    image = _styled_background(rng, style).resize((side, side), Image.Resampling.NEAREST)
    for thing in things:
        low, high = VARIED_SIZES[thing.size]
        r = rng.uniform(low, high) * side
        margin = r * 1.3  # keep the whole shape and its outline inside the picture
        cx = min(max((thing.centre[0] + rng.uniform(-0.05, 0.05)) * side, margin), side - margin)
        cy = min(max((thing.centre[1] + rng.uniform(-0.05, 0.05)) * side, margin), side - margin)
        rgb = thing.drawn_rgb
        colour = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in rgb)
        mask = _shape_mask(dataclasses.replace(thing, angle=rng.uniform(0, 360)), side, cx, cy, r)
        box = mask.getbbox()
        if box is None:
            continue
        width = max(1, round(style.outline_width * side))
        pad = 2 * width + 2
        box = (max(0, box[0] - pad), max(0, box[1] - pad), min(side, box[2] + pad), min(side, box[3] + pad))
        mask = mask.crop(box)  # the outline is local: widen the shape's box and work there only
        if style.outline != "none":
            image.paste(_outline_colour(style, rng, colour), box, mask=_dilate(mask, width))
        image.paste(colour, box, mask=mask)
    if style.smooth:
        image = image.resize((style.side, style.side), Image.Resampling.BOX)
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur * style.side / 64))
    if style.jpeg_quality is not None:
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=style.jpeg_quality)
        image = Image.open(io.BytesIO(encoded.getvalue())).convert("RGB")
    return image


def _jitter(rng: random.Random, centre: tuple[float, float], amount: float = 0.06) -> tuple[float, float]:
    return (centre[0] + rng.uniform(-amount, amount), centre[1] + rng.uniform(-amount, amount))


def with_article(word: str) -> str:
    """The word with its indefinite article: "a red", "an orange"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _where(position: str) -> str:
    if position in ("left", "right"):
        return f"on the {position}"
    if position in ("top", "bottom"):
        return f"at the {position}"
    return f"in the {position}"


def _single_caption(rng: random.Random, t: Thing, position: str) -> str:
    c, s, z, where = t.colour, t.shape, t.size, _where(position)
    return rng.choice(
        [
            f"{with_article(c)} {s}",
            f"{c} {s}",
            f"{with_article(z)} {c} {s}",
            f"a photo of {with_article(c)} {s}",
            f"a picture of {with_article(z)} {c} {s}",
            f"{with_article(c)} {s} {where}",
            f"{with_article(z)} {c} {s} {where}",
            f"there is {with_article(c)} {s} {where}",
            f"a {s} that is {c}",
            f"{with_article(z)} {s}, coloured {c}",
            f"one {c} {s} on a plain background",
            f"an image showing {with_article(c)} {s}",
            f"{with_article(s)}",  # one attribute alone: the words for colour and shape are learnt apart
            f"a {s} shape",
            f"something {c}",
            f"{with_article(c)} shape",
        ]
    )


def unnamed_colour(rng: random.Random, shape: str, margin: float = 120.0) -> tuple[int, int, int]:
    """A random colour at least `margin` (RGB distance) away from the colour this shape is held out in,
    so that no held-out colour x shape pair is ever drawn, named or not."""
    held = [COLOURS[colour] for colour, held_shape in HELD_OUT if held_shape == shape]
    while True:
        rgb = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if all(math.dist(rgb, other) >= margin for other in held):
            return rgb


def _shape_caption(rng: random.Random, t: Thing, position: str) -> str:
    s, z, where = t.shape, t.size, _where(position)
    return rng.choice(
        [
            f"{with_article(s)}",
            f"{with_article(z)} {s}",
            f"a {s} shape",
            f"{with_article(s)} {where}",
            f"a photo of {with_article(s)}",
        ]
    )


class SyntheticCaptions:
    """Procedural (image, caption) pairs; `example(index)` is deterministic.

    `split="train"` never shows a `HELD_OUT` colour x shape pair (and adds `EXTRA_COLOURS` with every
    shape); `split="heldout"` shows one object of a held-out pair per image and `split="seen"` one object
    of a trained pair (both for zero-shot evaluation; their captions are the class names). Scenes in
    training: one object, in a random colour with a shape-only caption or in a named one, several identical
    objects, or two different objects (`SCENE_THRESHOLDS`), with size and position words in many captions,
    and some captions naming colour or shape alone.

    `style` says how pictures are drawn (`STYLES`): "classic" pictures are `image_size` pixels in the classic
    look; "varied" ones are drawn in a `random_style` each (in training, `CLASSIC_SHARE` of them classic);
    "unseen" ones, for evaluation only, in the styles training never draws.
    """

    def __init__(
        self, seed: int = 0, split: str = "train", image_size: int = 64, size: int = 1_000_000, style: str = "classic"
    ):
        if split not in ("train", "heldout", "seen"):
            raise ValueError(f"split must be 'train', 'heldout' or 'seen', got {split!r}")
        if style not in STYLES or (split, style) == ("train", "unseen"):
            raise ValueError(f"style must be one of {STYLES} ('unseen' only for evaluation), got {style!r}")
        self.seed, self.split, self.image_size, self.size, self.style = seed, split, image_size, size, style
        self.trained = [pair for pair in all_compositions() if pair not in HELD_OUT]
        extra = [(colour, shape) for colour in EXTRA_COLOURS for shape in SHAPES]
        self.pairs = {"heldout": sorted(HELD_OUT), "seen": self.trained, "train": self.trained + extra}[split]

    def __len__(self) -> int:
        return self.size

    def example(self, index: int) -> tuple[Image.Image, str]:
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic sample {index} is out of range(0, {self.size})")
        # classic pictures keep the seeds they always had
        key = (
            f"{self.seed}/{self.split}/{index}"
            if self.style == "classic"
            else f"{self.seed}/{self.split}/{self.style}/{index}"
        )
        rng = random.Random(key)
        if self.split != "train":
            colour, shape = self.pairs[index % len(self.pairs)]
            thing = self._thing(rng, colour, shape, rng.choice(list(POSITIONS)))
            return self._draw([thing], rng), composition_name(colour, shape)
        kind = rng.random()
        unnamed, single, identical = SCENE_THRESHOLDS[self.style]  # a training style: classic or varied
        if kind < unnamed:  # a shape in a random, unnamed colour: shape must be recognised in any colour
            position = rng.choice(list(POSITIONS))
            shape = rng.choice(SHAPES)
            thing = self._thing(rng, "", shape, position)
            thing = dataclasses.replace(thing, rgb=unnamed_colour(rng, shape))
            return self._draw([thing], rng), _shape_caption(rng, thing, position)
        if kind < single:
            position = rng.choice(list(POSITIONS))
            thing = self._thing(rng, *rng.choice(self.pairs), position)
            return self._draw([thing], rng), _single_caption(rng, thing, position)
        if kind < identical:
            colour, shape = rng.choice(self.pairs)
            count = rng.choice(list(NUMBERS))
            places = rng.sample(list(POSITIONS), count)
            things = [self._thing(rng, colour, shape, place, sizes=("small", "medium")) for place in places]
            word = NUMBERS[count] if rng.random() < 0.7 else str(count)
            caption = rng.choice([f"{word} {colour} {plural(shape)}", f"a picture of {word} {colour} {plural(shape)}"])
            return self._draw(things, rng), caption
        (c1, s1), (c2, s2) = rng.sample(self.pairs, 2)
        left, right = rng.choice([("left", "right"), ("top left", "bottom right"), ("bottom left", "top right")])
        first = self._thing(rng, c1, s1, left, sizes=("small", "medium"))
        second = self._thing(rng, c2, s2, right, sizes=("small", "medium"))
        caption = rng.choice(
            [
                f"{with_article(c1)} {s1} and {with_article(c2)} {s2}",
                f"{with_article(c1)} {s1} to the left of {with_article(c2)} {s2}",
            ]
        )
        return self._draw([first, second], rng), caption

    def _draw(self, things: list[Thing], rng: random.Random) -> Image.Image:
        if self.style == "classic" or (self.split == "train" and rng.random() < CLASSIC_SHARE):
            return render(things, rng, self.image_size)
        colours = [thing.drawn_rgb for thing in things]
        return render_styled(things, rng, random_style(rng, self.image_size, colours, self.style == "unseen"))

    def _thing(
        self, rng: random.Random, colour: str, shape: str, position: str, sizes: tuple[str, ...] = tuple(SIZES)
    ) -> Thing:
        return Thing(colour, shape, rng.choice(sizes), _jitter(rng, POSITIONS[position]), rng.uniform(-15, 15))
