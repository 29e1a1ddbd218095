"""Which tower misses the held-out colour x shape pairs (docs/training.md, "Which tower misses the held-out pairs").

    .venv/bin/python scripts/heldout_misses.py [MODEL]          # default: the bundled model

For each drawing style, zero-shot top-1 on held-out pairs (over all 48 classes) with two classifiers: the text
tower's embedding of each class name, and, for the held-out pairs, an embedding composed from trained pairs
only (the mean over colours c' and shapes s' of t(c s') + t(c' s) - t(c' s'), all three trained). If the
composed one scored higher, the text tower would be failing to compose the unseen name; it also prints how
many misses keep the right colour. Evaluation seed 1234, 40 pictures per held-out pair.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from torchclip.convert import load
from torchclip.datasets.synthetic import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    SyntheticCaptions,
    all_compositions,
    composition_name,
)
from torchclip.embed import embed_images
from torchclip.evaluate import synthetic_templates, zero_shot_classifier
from torchclip.hub import bundled_model_path


def composed_classifier(text: torch.Tensor, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """`text` with each held-out pair's row replaced by its composition from trained pairs."""
    row = {pair: n for n, pair in enumerate(pairs)}
    trained = set(pairs) - HELD_OUT
    composed = text.clone()
    for colour, shape in HELD_OUT:
        parts = [
            text[row[(colour, other_shape)]] + text[row[(other_colour, shape)]] - text[row[(other_colour, other_shape)]]
            for other_colour, other_shape in itertools.product(COLOURS, SHAPES)
            if {(colour, other_shape), (other_colour, shape), (other_colour, other_shape)} <= trained
        ]
        mean = torch.stack(parts).mean(0)
        composed[row[(colour, shape)]] = mean / mean.norm()
    return composed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(bundled_model_path()))
    args = parser.parse_args()
    model, processor = load(args.model)
    model.eval()
    pairs = all_compositions()
    classes = [composition_name(colour, shape) for colour, shape in pairs]
    with torch.inference_mode():
        text = zero_shot_classifier(model, processor.tokenizer, classes, synthetic_templates())
    classifiers = {"text tower": text, "composed": composed_classifier(text, pairs)}
    for style in ("classic", "varied", "unseen"):
        world = SyntheticCaptions(seed=1234, split="heldout", style=style)
        examples = [world.example(n) for n in range(40 * len(world.pairs))]
        labels = torch.tensor([classes.index(name) for _, name in examples])
        with torch.inference_mode():
            features = embed_images(model, processor.image_processor, [image for image, _ in examples])
        for name, classifier in classifiers.items():
            predicted = (features @ classifier.T).argmax(1)
            missed = (predicted != labels).nonzero().flatten().tolist()
            same_colour = sum(pairs[predicted[n]][0] == pairs[labels[n]][0] for n in missed)
            accuracy = 1 - len(missed) / len(labels)
            kept = f"misses keeping the colour {same_colour}/{len(missed)}"
            print(f"{style:8} {name:10} held-out top-1 {accuracy:.2%}; {kept}")


if __name__ == "__main__":
    main()
