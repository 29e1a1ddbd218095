"""Texts per second encoding 2,000 varied captions into padded [N, 77] tensors: torchclip vs the references.

Cold: a freshly built tokenizer (empty caches) sees the captions for the first time. Warm: the same
tokenizer encodes them again. Each measurement is the median of several runs, all in this process.
It measures whichever references are importable here:

    .venv/bin/python benchmarks/bench_tokenizer.py                     # vs transformers.CLIPTokenizer (Rust)
    PYTHONPATH=src /work/refenv/bin/python benchmarks/bench_tokenizer.py   # vs OpenCLIP's SimpleTokenizer
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from torchclip.tokenizer import CLIPTokenizer, read_openai_bpe

ADJECTIVES = "red small old wooden happy bright blurry tall green crowded empty snowy vintage shiny".split()
PLACES = "beach street kitchen park table field forest city river mountain market station garden".split()
NON_ASCII = ["café", "naïve", "jalapeño", "東京", "🐶", "São Paulo", "Zürich", "crème brûlée", "—", "“quoted”"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """Varied captions: templates around words drawn from CLIP's own vocabulary, numbers, some non-ASCII."""
    rng = random.Random(seed)
    vocab, _ = read_openai_bpe()
    words = [t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].isascii() and len(t) > 6]
    templates = [
        "a photo of a {a} {w}.",
        "A {a} {w} next to a {w2} on the {p}",
        "{W} and {w2} in the {p}, {n} of them",
        "close-up of the {w}'s {w2} at {p} #{w}",
        "{W} {w2}{w3} ({n} photos) {x}",
        "a {a} painting of {w} by {W2}, {n}",
    ]
    captions = []
    for _ in range(n):
        w, w2, w3 = rng.sample(words, 3)
        caption = rng.choice(templates).format(
            a=rng.choice(ADJECTIVES),
            w=w,
            w2=w2,
            w3=w3,
            W=w.capitalize(),
            W2=w2.upper(),
            p=rng.choice(PLACES),
            n=rng.randint(1, 5000),
            x=rng.choice(NON_ASCII) if rng.random() < 0.5 else "",
        )
        captions.append(caption)
    return captions


def time_it(run: Callable[[], object], setup: Callable[[], object] | None, repeats: int) -> float:
    """Median seconds of `run`, with `setup` (untimed) before each repeat."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    build: Callable[[], object], encode: Callable[[object, list[str]], object], captions: list[str], repeats: int
) -> tuple[float, float, float]:
    """(seconds to build, cold texts/s, warm texts/s) for one tokenizer."""
    holder: dict[str, object] = {}

    def fresh() -> None:
        holder["tokenizer"] = build()

    build_s = time_it(fresh, None, 1)
    cold = time_it(lambda: encode(holder["tokenizer"], captions), fresh, repeats)
    warm = time_it(lambda: encode(holder["tokenizer"], captions), None, repeats)
    return build_s, len(captions) / cold, len(captions) / warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of captions")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    captions = make_captions(args.n)
    vocab, merges = read_openai_bpe()
    non_ascii = sum(not c.isascii() for c in captions)
    print(f"{len(captions)} captions ({non_ascii} non-ASCII), e.g. {captions[0]!r}, {captions[4]!r}")

    # name -> (build a fresh tokenizer, encode captions into a padded [N, 77] tensor with it)
    candidates: dict[str, tuple[Callable[[], object], Callable[[object, list[str]], object]]] = {
        "torchclip": (
            CLIPTokenizer,
            lambda t, x: t(x, padding="max_length", truncation=True, max_length=77, return_tensors="pt"),
        ),
    }
    try:
        import transformers

        candidates["transformers (Rust)"] = (
            lambda: transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77),
            lambda t, x: t(x, padding="max_length", truncation=True, max_length=77, return_tensors="pt"),
        )
    except ImportError:
        print("transformers not importable here: skipped")
    try:
        from open_clip.tokenizer import SimpleTokenizer

        candidates["OpenCLIP SimpleTokenizer"] = (SimpleTokenizer, lambda t, x: t(x, context_length=77))
    except ImportError:
        print("open_clip not importable here: skipped (run this script with /work/refenv/bin/python)")

    rows = [(name, *measure(build, encode, captions, args.repeats)) for name, (build, encode) in candidates.items()]
    base_cold, base_warm = rows[0][2], rows[0][3]
    print(
        f"\n{'tokenizer':<26} {'build s':>8} {'cold texts/s':>13} {'warm texts/s':>13} {'torchclip x (cold, warm)':>26}"
    )
    for name, build_s, cold, warm in rows:
        ratio = f"{base_cold / cold:.2f}x, {base_warm / warm:.2f}x"
        print(f"{name:<26} {build_s:>8.2f} {cold:>13,.0f} {warm:>13,.0f} {ratio:>26}")


if __name__ == "__main__":
    main()
