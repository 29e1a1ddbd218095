"""The seed document's example, with only its import changed to torchclip.

    python examples/seed_example.py [CHECKPOINT_FOLDER]

With no argument it runs on the model bundled inside the package (trained from scratch by this project on
procedurally generated shapes; see its model card), first on the document's own cat photo and labels,
then on bundled pictures of the domain that model knows. Pretrained OpenAI weights cannot be downloaded
on the machines this project is built on; any HF CLIP folder works here, e.g. a converted OpenAI one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from torchclip import (
    CLIPConfig,
    CLIPFeatureExtractor,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)
from torchclip.datasets.synthetic import HELD_OUT, all_compositions, with_article

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DATA = REPO / "src" / "torchclip" / "data"
BUNDLED_MODEL = PACKAGE_DATA / "default_model"
CAT_PHOTO = REPO / "tests" / "data" / "images" / "chelsea.png"


def tiny_random_checkpoint() -> Path:
    """A randomly initialised CLIP folder, for when no trained model is available."""
    folder = Path(tempfile.mkdtemp(prefix="torchclip-random-"))
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config=small, vision_config={**small, "patch_size": 32}, projection_dim=64)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(CLIPImageProcessor(), CLIPTokenizer()).save_pretrained(folder)
    return folder


def label_probabilities(model, tokenizer, feature_extractor, image: Image.Image, labels: list[str]):
    """The seed document's example, line for line; returns (label, probability) pairs, best first."""
    image_inputs = feature_extractor(image, return_tensors="pt")
    text_inputs = tokenizer(labels, padding=True, return_tensors="pt")

    with torch.no_grad():
        outputs = model(**text_inputs, **image_inputs)
    logits_per_image = outputs.logits_per_image  # this is the image-text similarity score
    probs = logits_per_image.softmax(dim=1)  # we can take the softmax to get the label probs
    return sorted(zip(labels, probs[0].tolist()), key=lambda pair: -pair[1])


def show(title: str, ranked: list[tuple[str, float]]) -> None:
    print(f"\n{title}")
    for label, prob in ranked:
        print(f"  {prob:7.2%}  {label}")


def main() -> int:
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        print(f"checkpoint: {folder}")
    elif (BUNDLED_MODEL / "config.json").is_file():
        folder = BUNDLED_MODEL
        print(f"checkpoint: the bundled model ({folder}); model card: {folder / 'README.md'}")
    else:
        folder = tiny_random_checkpoint()
        print(
            "checkpoint: NO TRAINED MODEL IS BUNDLED YET, so this runs on a tiny RANDOMLY INITIALISED model:\n"
            "the probabilities below are meaningless; they only show the API working end to end."
        )

    model = CLIPModel.from_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    feature_extractor = CLIPFeatureExtractor.from_pretrained(folder)
    loaded = (model, tokenizer, feature_extractor)

    show(
        f"{CAT_PHOTO.name} (the seed document's labels):",
        label_probabilities(*loaded, Image.open(CAT_PHOTO), ["a photo of a cat", "a photo of a dog"]),
    )
    if folder == BUNDLED_MODEL:
        print(
            "\nThe bundled model was trained on pictures of coloured shapes, not photos: the cat photo above is"
            "\noutside what it knows. Its own domain, over all 48 colour-shape labels (top 5 shown; * = a pair"
            "\nheld out of training, so recognising it is zero-shot):"
        )
        labels = [f"a photo of {with_article(colour)} {shape}" for colour, shape in all_compositions()]
        for path in sorted((PACKAGE_DATA / "demo_images").glob("*.png")):
            colour, shape = path.stem.split("_")
            held_out = "*" if (colour, shape) in HELD_OUT else ""
            show(f"{path.name}{held_out}:", label_probabilities(*loaded, Image.open(path), labels)[:5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
