"""Evaluation as in the CLIP paper: zero-shot classification with prompt ensembling, and image<->text retrieval.

Zero-shot: each class name is put into several prompt templates ("a photo of a {}."), the normalised text
embeddings of one class are averaged and renormalised (prompt ensembling), and an image is assigned the
class whose embedding is most similar. Retrieval: recall@K, the fraction of queries whose true match is
among the K most similar items, both ways.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchclip.datasets.synthetic import SyntheticCaptions, all_compositions, composition_name, with_article
from torchclip.display import printable

log = logging.getLogger("torchclip")

Template = str | Callable[[str], str]

# What to do with a text longer than the model's context (77 tokens for CLIP): it is always cut to fit
# (the model has no positions beyond), and "warn" says so once per call, "error" refuses instead.
TRUNCATE_MODES = ("warn", "error", "silent")

# A few of the paper's ImageNet prompts: a sensible default for photos.
DEFAULT_TEMPLATES: list[Template] = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a rendering of a {}.",
    "itap of a {}.",
    "art of the {}.",
]


def _fill(template: Template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


def check_finite(model: Any, values: torch.Tensor, what: str) -> torch.Tensor:
    """`values` when all finite; otherwise an error naming the model's first weight that is NaN or
    infinite (the usual cause), instead of "nan%" results."""
    if torch.isfinite(values).all():
        return values
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"the model's weight {name!r} holds NaN or infinite values, so the {what} are NaN")
    raise ValueError(f"the {what} came out NaN or infinite (the model's weights are all finite)")


def check_text_lengths(tokenizer: Any, texts: Sequence[str], truncate: str = "warn") -> list[int]:
    """Indices of the texts longer than the tokenizer's context (`model_max_length`), which encoding cuts.

    `truncate="warn"` logs one warning for the call naming the first such text and its length (and how
    many more there are); "error" raises ValueError naming it instead; "silent" says nothing.
    """
    if truncate not in TRUNCATE_MODES:
        raise ValueError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
    limit = tokenizer.model_max_length
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    long = [i for i, length in enumerate(lengths) if length > limit]
    if long and truncate != "silent":
        first = long[0]
        named = f"text #{first} {printable(texts[first])!r:.160} has {lengths[first]} tokens"
        if truncate == "error":
            raise ValueError(
                f"{named}, more than the model's context of {limit}; shorten it, or allow cutting it to fit "
                "(--truncate warn, or truncate='warn')"
            )
        more = f" (and {len(long) - 1} more of the {len(texts)} texts)" if len(long) > 1 else ""
        log.warning("%s%s, more than the model's context of %d: only the first %d are used", named, more, limit, limit)
    return long


@torch.no_grad()
def encode_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 256, truncate: str = "warn"
) -> torch.Tensor:
    """L2-normalised text embeddings [len(texts), D] in float32. Texts longer than the context are cut to
    fit it; `truncate` ("warn", "error", "silent") says what else happens (see `check_text_lengths`)."""
    check_text_lengths(tokenizer, texts, truncate)
    device = model.device
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        features = model.get_text_features(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        out.append(torch.nn.functional.normalize(features.float(), dim=-1))
    return torch.cat(out) if out else torch.empty(0, model.config.projection_dim)


@torch.no_grad()
def encode_images(
    model: Any,
    image_processor: Any,
    images: Sequence[Any],
    batch_size: int = 128,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """L2-normalised image embeddings [len(images), D] in float32; images as PIL images, paths or arrays.
    `on_batch(n)` is called after each batch of n images (for progress bars)."""
    device, dtype = model.device, model.dtype
    out = []
    for start in range(0, len(images), batch_size):
        batch = list(images[start : start + batch_size])
        pixels = image_processor(batch, return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixels.to(device, dtype))
        out.append(torch.nn.functional.normalize(features.float(), dim=-1))
        if on_batch is not None:
            on_batch(len(batch))
    return torch.cat(out) if out else torch.empty(0, model.config.projection_dim)


def zero_shot_classifier(
    model: Any,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    truncate: str = "warn",
) -> torch.Tensor:
    """Class embeddings [C, D]: each class's prompts embedded, averaged and renormalised (prompt ensembling).
    `truncate`: what to do with a prompt longer than the context (see `check_text_lengths`)."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("zero-shot classification needs at least one prompt template")
    texts = [_fill(template, name) for name in classnames for template in templates]
    features = encode_texts(model, tokenizer, texts, truncate=truncate).view(len(classnames), len(templates), -1)
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
    features = encode_images(model, processor.image_processor, images, batch_size, on_batch=on_batch)
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
    image_features = encode_images(model, processor.image_processor, images, batch_size, on_batch=on_batch)
    text_features = encode_texts(model, processor.tokenizer, captions, truncate=truncate)
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


def synthetic_zero_shot(
    model: Any,
    processor: Any,
    split: str = "heldout",
    per_class: int = 50,
    seed: int = 1234,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = 128,
) -> dict[str, float]:
    """Zero-shot accuracy on synthetic single-object images over ALL colour x shape classes.

    `split="heldout"`: only compositions never seen in training (the test of compositional generalisation);
    `split="seen"`: compositions seen in training (on new images).
    """
    classes = [composition_name(c, s) for c, s in all_compositions()]
    world = SyntheticCaptions(seed=seed, split=split, image_size=model.config.vision_config.image_size)
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
