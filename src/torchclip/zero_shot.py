"""Zero-shot image classification: name the classes in words, no training.

Each label is put into prompt templates ("a photo of a {}."), the normalised text embeddings of one
label's prompts are averaged and renormalised (prompt ensembling, as in the CLIP paper), and an image's
scores are the softmax over labels of `logit_scale * cosine(image, label)`, exactly as `CLIPModel`'s
`logits_per_image` would give for the same embeddings. The label embeddings are built once and reused for
any number of images.

    classifier = ZeroShotClassifier(model, processor, ["cat", "dog"], templates="imagenet")
    classifier("photo.jpg")            # [{"label": "cat", "score": 0.93}, {"label": "dog", "score": 0.07}]

    classify = pipeline("zero-shot-image-classification", model="path/to/checkpoint")
    classify("photo.jpg", candidate_labels=["cat", "dog"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch

from torchclip.convert import load
from torchclip.embed import check_finite, embed_images
from torchclip.evaluate import zero_shot_classifier
from torchclip.hub import bundled_model_path
from torchclip.templates import get_templates

__all__ = ["ZeroShotClassifier", "ZeroShotImageClassificationPipeline", "pipeline"]

Ranking = list[dict[str, Any]]


class ZeroShotClassifier:
    """Classifies images into `labels` with a CLIP model.

    `templates`: a template set's name ("default", "imagenet" for the paper's 80, "imagenet-7", "photo",
    "none"; see `torchclip.templates`) or a list of strings with `{}` where the label goes.
    `truncate`: what to do with a prompt longer than the model's context ("warn", "error", "silent"; it
    is cut to fit in any case, see `torchclip.embed.check_text_lengths`).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        labels: Sequence[str],
        templates: str | Sequence[str] = "default",
        batch_size: int = 32,
        truncate: str = "warn",
    ) -> None:
        labels = list(labels)
        if not labels:
            raise ValueError("zero-shot classification needs at least one label")
        bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
        if bad:
            raise ValueError(f"labels must be non-empty strings, got {bad!r}")
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"labels must be distinct; repeated: {repeated}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.processor = model, processor
        self.labels = labels
        self.templates = get_templates(templates)
        self.batch_size = batch_size
        self.truncate = truncate

    @cached_property
    def class_embeddings(self) -> torch.Tensor:
        """[labels, D] float32, L2-normalised: each label's prompt embeddings averaged (built on first use)."""
        embeddings = zero_shot_classifier(
            self.model, self.processor.tokenizer, self.labels, self.templates, truncate=self.truncate
        )
        return check_finite(self.model, embeddings, "label embeddings")

    def probabilities(self, image_features: torch.Tensor) -> torch.Tensor:
        """[N, labels] softmax scores for L2-normalised image embeddings [N, D]."""
        classes = self.class_embeddings
        logits = self.model.logit_scale.exp().float() * image_features.to(classes.device).float() @ classes.t()
        return check_finite(self.model, logits.softmax(dim=-1).cpu(), "scores")

    def rank(self, image_features: torch.Tensor, top_k: int | None = None) -> list[Ranking]:
        """For each image embedding, its labels best first as `{"label", "score"}` (the top `top_k`)."""
        k = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        if k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        scores, order = self.probabilities(image_features).topk(k, dim=-1)
        return [
            [{"label": self.labels[i], "score": s} for s, i in zip(row_scores.tolist(), row_order.tolist())]
            for row_scores, row_order in zip(scores, order)
        ]

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        """L2-normalised embeddings [N, D] of images (PIL images, paths, bytes or arrays), in batches."""
        return embed_images(self.model, self.processor.image_processor, list(images), self.batch_size)

    def __call__(self, images: Any, top_k: int | None = None) -> Ranking | list[Ranking]:
        """Rank the labels for one image (returns one ranking) or a list of images (a list of rankings)."""
        single = not isinstance(images, (list, tuple))
        rankings = self.rank(self.embed_images([images] if single else images), top_k)
        return rankings[0] if single else rankings


class ZeroShotImageClassificationPipeline:
    """transformers' `pipeline("zero-shot-image-classification")` call shape on a torchclip model:
    `pipe(images, candidate_labels=[...], hypothesis_template=..., top_k=None)`. The classifier of the
    last label set used is kept, so repeated calls with the same labels embed them once."""

    def __init__(self, model: Any, processor: Any, batch_size: int = 32) -> None:
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self._classifier: ZeroShotClassifier | None = None

    def __call__(
        self,
        images: Any,
        candidate_labels: Sequence[str],
        hypothesis_template: str | Sequence[str] = "This is a photo of {}.",
        top_k: int | None = None,
    ) -> Ranking | list[Ranking]:
        """`hypothesis_template` is transformers' single template by default; a template set's name
        (e.g. "imagenet") or a list of templates ensembles prompts."""
        templates = get_templates(hypothesis_template)
        cached = self._classifier
        if cached is None or cached.labels != list(candidate_labels) or cached.templates != templates:
            cached = ZeroShotClassifier(self.model, self.processor, candidate_labels, templates, self.batch_size)
            self._classifier = cached
        return cached(images, top_k=top_k)


def pipeline(
    task: str,
    model: Any = None,
    processor: Any = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    batch_size: int = 32,
) -> ZeroShotImageClassificationPipeline:
    """A ready-to-call pipeline, like transformers' `pipeline(...)`; only "zero-shot-image-classification".

    `model`: a `CLIPModel` (then `processor` is required), or a checkpoint (folder, hub id or OpenAI .pt,
    anything `torchclip.load` reads); default: the bundled model.
    """
    if task != "zero-shot-image-classification":
        raise ValueError(f"unsupported task {task!r}; torchclip.pipeline supports 'zero-shot-image-classification'")
    if model is None or isinstance(model, (str, os.PathLike)):
        model, loaded_processor = load(model or bundled_model_path(), device=device, dtype=dtype)
        processor = processor or loaded_processor
    elif processor is None:
        raise ValueError("pipeline(..., model=<CLIPModel>) also needs processor=<CLIPProcessor>")
    return ZeroShotImageClassificationPipeline(model.eval(), processor, batch_size)
