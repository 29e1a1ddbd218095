"""CLIPProcessor: the tokenizer and the image processor behind one call, saved and loaded as one folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchclip.batch import BatchFeature
from torchclip.hub import resolve_folder
from torchclip.image_processor import CLIPImageProcessor, ImageInput
from torchclip.tokenizer import CLIPTokenizer

__all__ = ["CLIPProcessor"]

# Keyword arguments of `__call__` that belong to the tokenizer; every other one goes to the image processor.
_TEXT_KWARGS = ("padding", "truncation", "max_length", "return_attention_mask", "add_special_tokens")


class CLIPProcessor:
    """Wraps a `CLIPImageProcessor` and a `CLIPTokenizer`, like transformers' `CLIPProcessor`.

    `processor(text=..., images=..., return_tensors="pt", padding=True)` returns one BatchFeature with
    `input_ids`, `attention_mask` and `pixel_values`, ready for `CLIPModel(**inputs)`.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(
        self,
        image_processor: CLIPImageProcessor | None = None,
        tokenizer: CLIPTokenizer | None = None,
        *,
        feature_extractor: CLIPImageProcessor | None = None,
    ) -> None:
        """Both default to the standard CLIP settings (224 px, the bundled CLIP vocabulary).
        `feature_extractor` is the transformers 4.x name of `image_processor`."""
        if image_processor is not None and feature_extractor is not None:
            raise ValueError("pass image_processor or feature_extractor (its old name), not both")
        self.image_processor = image_processor or feature_extractor or CLIPImageProcessor()
        self.tokenizer = tokenizer if tokenizer is not None else CLIPTokenizer()

    @property
    def feature_extractor(self) -> CLIPImageProcessor:
        """The transformers 4.x name of `image_processor`."""
        return self.image_processor

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, *self.image_processor.model_input_names]

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: ImageInput | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`; at least one is needed.

        Tokenizer options (`padding`, `truncation`, `max_length`, `return_attention_mask`,
        `add_special_tokens`) go to the tokenizer, all other keyword arguments to the image processor.
        """
        if text is None and images is None:
            raise ValueError("CLIPProcessor needs text, images, or both")
        text_kwargs = {name: kwargs.pop(name) for name in _TEXT_KWARGS if name in kwargs}
        result = BatchFeature()
        if text is not None:
            result.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        elif text_kwargs:
            raise TypeError(f"tokenizer options {sorted(text_kwargs)} were given without text")
        if images is not None:
            result.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        elif kwargs:
            raise TypeError(f"image options {sorted(kwargs)} were given without images")
        return result

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> CLIPProcessor:
        """Load the tokenizer files and the preprocessing config from one checkpoint folder (or hub id).
        Keyword arguments go to the image processor (e.g. `pipeline="transformers"`)."""
        folder = resolve_folder(name_or_path, what="processor")
        return cls(CLIPImageProcessor.from_pretrained(folder, **kwargs), CLIPTokenizer.from_pretrained(folder))

    def save_pretrained(self, folder: str | os.PathLike) -> list[Path]:
        """Write the tokenizer files and `preprocessor_config.json` into `folder` (transformers reads both)."""
        folder = Path(folder)
        written = [Path(p) for p in self.tokenizer.save_pretrained(folder)]
        return written + self.image_processor.save_pretrained(folder)

    def __repr__(self) -> str:
        return f"CLIPProcessor(\n  image_processor={self.image_processor!r},\n  tokenizer={self.tokenizer!r}\n)"
