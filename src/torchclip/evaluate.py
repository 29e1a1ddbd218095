"""Evaluation as in the CLIP paper: zero-shot classification with prompt ensembling, and image<->text retrieval.

Zero-shot: each class name is put into several prompt templates ("a photo of a {}."), the normalised text
embeddings of one class are averaged and renormalised (prompt ensembling), and an image is assigned the
class whose embedding is most similar. Retrieval: recall@K, the fraction of queries whose true match is
among the K most similar items, both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchclip.datasets.synthetic import SyntheticCaptions, all_compositions, composition_name, with_article
from torchclip.embed import embed_images, embed_texts
from torchclip.templates import DEFAULT_TEMPLATES

# A template is a string with {} where the class name goes, or a function of the class name (the synthetic
# world's prompts, which need "a" or "an").
Template = str | Callable[[str], str]


def _fill(template: Template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


def zero_shot_classifier(
    model: Any,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    truncate: str = "warn",
) -> torch.Tensor:
    """Class embeddings [C, D]: each class's prompts embedded, averaged and renormalised (prompt ensembling).
    The default prompts are `torchclip.templates.DEFAULT_TEMPLATES`, as for `ZeroShotClassifier`.
    `truncate`: what to do with a prompt longer than the context (see `torchclip.embed.check_text_lengths`)."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("zero-shot classification needs at least one prompt template")
    texts = [_fill(template, name) for name in classnames for template in templates]
    features = embed_texts(model, tokenizer, texts, truncate=truncate).view(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(features.mean(dim=1), dim=-1)


def topk_accuracy(
    image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor | Sequence[int], ks=(1, 5)
) -> dict[str, float]:
    """Fraction of images whose true class is among the top K scores, for each K (`top1`, `top5`)."""
    labels = torch.as_tensor(labels)
    if len(labels) != len(image_features):
        raise ValueError(f"{len(image_features)} images but {len(labels)} labels")
    scores = image_features @ classifier.t()
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=1).double().mean()) for k in ks}  # 19/20 is 0.95, not 0.9499...


def zero_shot_accuracy(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Sequence[int],
    classnames: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    ks: Sequence[int] = (1, 5),
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = 128,
) -> dict[str, float]:
    """Zero-shot top-K accuracy of `model` on labelled images (labels index `classnames`)."""
    classifier = zero_shot_classifier(model, processor.tokenizer, classnames, templates)
    features = embed_images(model, processor.image_processor, images, batch_size, on_batch=on_batch)
    return topk_accuracy(features, classifier, labels, ks)


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways. `text_to_image[j]` is the image caption j describes (default: caption j, image j);
    an image query counts as found when any of its captions is in the top K."""
    n_images, n_texts = len(image_features), len(text_features)
    owner = torch.arange(n_texts) if text_to_image is None else torch.as_tensor(text_to_image)
    if len(owner) != n_texts or (n_texts and (owner.min() < 0 or owner.max() >= n_images)):
        raise ValueError(f"text_to_image must give an image index in [0, {n_images}) for each of {n_texts} texts")
    scores = image_features @ text_features.t()  # [images, texts]
    result = {}
    for k in ks:
        top_texts = scores.topk(min(k, n_texts), dim=1).indices  # each image's best captions
        found = (owner[top_texts] == torch.arange(n_images)[:, None]).any(dim=1)
        result[f"image_to_text_R@{k}"] = float(found.double().mean())
        top_images = scores.t().topk(min(k, n_images), dim=1).indices  # each caption's best images
        result[f"text_to_image_R@{k}"] = float((top_images == owner[:, None]).any(dim=1).double().mean())
    return result


def retrieval_metrics(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    truncate: str = "warn",
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = 128,
) -> dict[str, float]:
    """Recall@K of `model` on (image, caption) pairs, caption i describing image i."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    image_features = embed_images(model, processor.image_processor, images, batch_size, on_batch=on_batch)
    text_features = embed_texts(model, processor.tokenizer, captions, truncate=truncate)
    return retrieval_recall(image_features, text_features, ks=ks)


def synthetic_templates() -> list[Template]:
    """Prompts in the synthetic world's own phrasings (with "a"/"an" right), for its colour x shape classes."""
    return [
        "{}",
        with_article,
        lambda name: f"a photo of {with_article(name)}",
        lambda name: f"an image showing {with_article(name)}",
        "one {} on a plain background",
    ]


# The synthetic zero-shot evaluations by name (`torchclip eval --task zeroshot --data NAME`): which
# colour x shape pairs they show and how they are drawn (`SyntheticCaptions`' split and style).
SYNTHETIC_ZERO_SHOT: dict[str, tuple[str, str]] = {
    "synthetic-seen": ("seen", "classic"),
    "synthetic-heldout": ("heldout", "classic"),
    "synthetic-varied-seen": ("seen", "varied"),
    "synthetic-varied-heldout": ("heldout", "varied"),
    "synthetic-unseen-style-seen": ("seen", "unseen"),
    "synthetic-unseen-style-heldout": ("heldout", "unseen"),
}


def synthetic_zero_shot(
    model: Any,
    processor: Any,
    split: str = "heldout",
    per_class: int = 50,
    seed: int = 1234,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = 128,
    style: str = "classic",
) -> dict[str, float]:
    """Zero-shot accuracy on synthetic single-object images over ALL colour x shape classes.

    `split="heldout"`: only compositions never seen in training (the test of compositional generalisation);
    `split="seen"`: compositions seen in training (on new images). `style`: how the pictures are drawn
    ("classic", "varied", or "unseen": in styles that training never draws).
    """
    classes = [composition_name(c, s) for c, s in all_compositions()]
    world = SyntheticCaptions(seed=seed, split=split, style=style)  # the world's own pixel sizes, as in training
    n = per_class * len(world.pairs)
    images, labels = [], []
    for index in range(n):
        image, name = world.example(index)
        images.append(image)
        labels.append(classes.index(name))
    templates = synthetic_templates()
    metrics = zero_shot_accuracy(
        model, processor, images, labels, classes, templates, on_batch=on_batch, batch_size=batch_size
    )
    return {**metrics, "images": n, "classes": len(classes)}
