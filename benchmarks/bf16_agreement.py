"""How close bf16 inference is to fp32: embedding cosine on real photos and captions, and zero-shot agreement
on the bundled model's evaluation (held-out colour x shape compositions).

    python benchmarks/bf16_agreement.py [--model FOLDER_OR_PT] [--per-class 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from torchclip.bench import realistic_captions
from torchclip.convert import load
from torchclip.embed import embed_images, embed_texts
from torchclip.evaluate import synthetic_templates, zero_shot_classifier
from torchclip.hub import bundled_model_path

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "images"


def cosines(model32, model16, processor) -> dict[str, float]:
    photos = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.png"))]
    captions = realistic_captions(128) + ["a photo of a cat", "an astronaut in a white suit", "a cup of coffee"]
    image = F.cosine_similarity(
        embed_images(model32, processor.image_processor, photos),
        embed_images(model16, processor.image_processor, photos),
    )
    text = F.cosine_similarity(
        embed_texts(model32, processor.tokenizer, captions), embed_texts(model16, processor.tokenizer, captions)
    )
    return {
        "photos": len(photos),
        "captions": len(captions),
        "image cosine mean": image.mean().item(),
        "image cosine min": image.min().item(),
        "text cosine mean": text.mean().item(),
        "text cosine min": text.min().item(),
    }


def zero_shot_agreement(model32, model16, processor, per_class: int) -> dict[str, float]:
    from torchclip.datasets.synthetic import SyntheticCaptions, all_compositions, composition_name

    classes = [composition_name(c, s) for c, s in all_compositions()]
    world = SyntheticCaptions(seed=1234, split="heldout")  # the world's own pixel sizes, as in training
    examples = [world.example(i) for i in range(per_class * len(world.pairs))]
    labels = torch.tensor([classes.index(name) for _, name in examples])
    images = [image for image, _ in examples]
    predictions = {}
    for name, model in (("fp32", model32), ("bf16", model16)):
        classifier = zero_shot_classifier(model, processor.tokenizer, classes, synthetic_templates())
        features = embed_images(model, processor.image_processor, images)
        predictions[name] = (features @ classifier.t()).argmax(dim=1)
    return {
        "held-out images": len(images),
        "top-1 fp32": (predictions["fp32"] == labels).float().mean().item(),
        "top-1 bf16": (predictions["bf16"] == labels).float().mean().item(),
        "prediction agreement": (predictions["fp32"] == predictions["bf16"]).float().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(bundled_model_path()))
    parser.add_argument("--per-class", type=int, default=10, help="held-out images per composition")
    args = parser.parse_args()
    model32, processor = load(args.model, dtype=torch.float32)
    model16, _ = load(args.model, dtype=torch.bfloat16)
    with torch.inference_mode():
        results = cosines(model32, model16, processor)
        if Path(args.model) == bundled_model_path():
            results.update(zero_shot_agreement(model32, model16, processor, args.per_class))
    for key, value in results.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
