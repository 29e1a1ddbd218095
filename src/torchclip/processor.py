"""CLIPProcessor: the tokenizer and the image processor behind one call, saved and loaded as one folder."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch

from torchclip.batch import BatchFeature
from torchclip.hub import resolve_folder
from torchclip.image_processor import CLIPImageProcessor, ImageInput
from torchclip.tokenizer import CLIPTokenizer

__all__ = ["CLIPProcessor", "CLIPPreprocess"]

# Keyword arguments of `__call__` that belong to the tokenizer; every other one goes to the image processor.
TEXT_KWARGS = frozenset(
    {"padding", "truncation", "max_length", "return_attention_mask", "add_special_tokens", "padding_side",
     "truncation_side", "stride", "return_overflowing_tokens", "return_special_tokens_mask", "return_length",
     "pad_to_multiple_of", "return_token_type_ids", "text_pair", "is_split_into_words", "verbose"}
)  # fmt: skip
# The structured forms transformers 5 accepts: {"text_kwargs": {...}, "images_kwargs": {...}, ...}.
STRUCTURED_KWARGS = ("text_kwargs", "images_kwargs", "common_kwargs")


def _is_text(value: Any) -> bool:
    """A text input: a string, or a (nested) list/tuple of strings."""
    if isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_text(item) for item in value)


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

    @classmethod
    def get_attributes(cls) -> list[str]:
        """The components, as transformers' ProcessorMixin names them."""
        return list(cls.attributes)

    @property
    def feature_extractor(self) -> CLIPImageProcessor:
        """The transformers 4.x name of `image_processor`."""
        return self.image_processor

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, *self.image_processor.model_input_names]

    def __call__(
        self,
        *inputs: Any,
        text: str | list[str] | None = None,
        images: ImageInput | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images`; at least one is needed.

        Positional inputs are told apart by type (strings are text, anything else images), so both
        transformers 4's order `(text, images)` and 5's `(images, text)` work. Tokenizer options
        (`padding`, `truncation`, `max_length`, ...) go to the tokenizer, all other keyword arguments to
        the image processor; transformers 5's structured `text_kwargs=`, `images_kwargs=` and
        `common_kwargs=` (e.g. `{"return_tensors": "pt"}`) are accepted too, and may be mixed with flat ones.
        Options the tokenizer was built with (`padding=`, `max_length=`, ...) are the defaults, as in
        transformers.
        """
        if len(inputs) > 2:
            raise TypeError(f"CLIPProcessor takes at most 2 positional inputs (text, images), got {len(inputs)}")
        for value in inputs:
            if _is_text(value):
                if text is not None:
                    raise TypeError("CLIPProcessor got text twice (positionally and/or as text=)")
                text = value
            else:
                if images is not None:
                    raise TypeError("CLIPProcessor got images twice (positionally and/or as images=)")
                images = value
        if text is None and images is None:
            raise ValueError("CLIPProcessor needs text, images, or both")
        text_kwargs, image_kwargs, return_tensors = self._split_kwargs(kwargs, return_tensors)
        text_defaults = self._tokenizer_call_defaults()
        default_tensors = text_defaults.pop("return_tensors", None)
        return_tensors = default_tensors if return_tensors is None else return_tensors
        result = BatchFeature()
        if text is not None:
            result.update(self.tokenizer(text, return_tensors=return_tensors, **{**text_defaults, **text_kwargs}))
        elif text_kwargs:
            raise TypeError(f"tokenizer options {sorted(text_kwargs)} were given without text")
        if images is not None:
            result.update(self.image_processor(images, return_tensors=return_tensors, **image_kwargs))
        elif image_kwargs:
            raise TypeError(f"image options {sorted(image_kwargs)} were given without images")
        return result

    def _tokenizer_call_defaults(self) -> dict[str, Any]:
        """The call options the tokenizer was built with, e.g. `CLIPTokenizer.from_pretrained(folder,
        padding="max_length", max_length=64)` or those keys in its tokenizer_config.json.

        transformers' processors use them as defaults of every call (the tokenizer alone does not), below
        any option the call gives, flat, structured or in `common_kwargs`; an attribute of the same name
        (`tokenizer.padding_side`) wins over its init value, and `return_tensors` applies to the images too.
        """
        init_kwargs = self.tokenizer.init_kwargs
        return {
            name: getattr(self.tokenizer, name, init_kwargs[name])
            for name in (*TEXT_KWARGS, "return_tensors")
            if name in init_kwargs
        }

    @staticmethod
    def _split_kwargs(
        kwargs: dict[str, Any], return_tensors: str | None
    ) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        """(tokenizer options, image options, return_tensors) from flat and structured keyword arguments;
        a flat option given with another value in a structured dict is an error, not a silent choice."""
        structured = {name: dict(kwargs.pop(name) or {}) for name in STRUCTURED_KWARGS if name in kwargs}
        common = structured.get("common_kwargs", {})
        text_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in TEXT_KWARGS}
        image_kwargs = kwargs
        for flat, nested, where in [
            (text_kwargs, structured.get("text_kwargs", {}), "text_kwargs"),
            (image_kwargs, structured.get("images_kwargs", {}), "images_kwargs"),
        ]:
            for name, value in nested.items():
                if name in flat:
                    raise ValueError(f"{name!r} given twice: as a keyword argument and in {where}")
                flat[name] = value
        tensors = {
            value
            for value in (
                return_tensors,
                common.get("return_tensors"),
                text_kwargs.pop("return_tensors", None),
                image_kwargs.pop("return_tensors", None),
            )
            if value is not None
        }
        if len(tensors) > 1:
            raise ValueError(f"return_tensors given with different values: {sorted(tensors)}")
        for name, value in common.items():
            if name != "return_tensors":
                (text_kwargs if name in TEXT_KWARGS else image_kwargs).setdefault(name, value)
        return text_kwargs, image_kwargs, next(iter(tensors), None)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> CLIPProcessor:
        """Load the tokenizer files and the preprocessing config from one checkpoint folder (or hub id).

        Keyword arguments that the image processor takes (e.g. `pipeline="transformers"`, `crop_size=`) go
        to it, all others to the tokenizer (e.g. `padding_side="left"`, `model_max_length=`)."""
        folder = resolve_folder(name_or_path, what="processor")
        image_keys = set(inspect.signature(CLIPImageProcessor.__init__).parameters) - {"self", "kwargs"}
        image_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in image_keys}
        return cls(
            CLIPImageProcessor.from_pretrained(folder, **image_kwargs),
            CLIPTokenizer.from_pretrained(folder, **kwargs),
        )

    def save_pretrained(self, folder: str | os.PathLike) -> list[Path]:
        """Write the tokenizer files and `preprocessor_config.json` into `folder` (transformers reads both);
        each file is written atomically: a failure leaves it as it was."""
        folder = Path(folder)
        written = [Path(p) for p in self.tokenizer.save_pretrained(folder)]
        return written + self.image_processor.save_pretrained(folder)

    def to_dict(self) -> dict[str, Any]:
        """The processor as transformers 5's `processor_config.json` describes one: its image processor's
        settings and its class (the tokenizer lives in its own files)."""
        return {"image_processor": self.image_processor.to_dict(), "processor_class": type(self).__name__}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:
        return f"CLIPProcessor(\n  image_processor={self.image_processor!r},\n  tokenizer={self.tokenizer!r}\n)"


class CLIPPreprocess(CLIPProcessor):
    """What `torchclip.load` returns beside the model: OpenAI's `preprocess`, which is also a full processor.

    `preprocess(image)` with one image alone returns its [3, H, W] float tensor, as OpenAI's transform does
    (`preprocess(image).unsqueeze(0)` is a batch); any other call is `CLIPProcessor`'s.
    """

    def __call__(self, *inputs: Any, **kwargs: Any) -> BatchFeature | torch.Tensor:  # type: ignore[override]
        if len(inputs) == 1 and not kwargs and not _is_text(inputs[0]) and not isinstance(inputs[0], (list, tuple)):
            return self.image_processor(inputs[0], return_tensors="pt")["pixel_values"][0]
        return super().__call__(*inputs, **kwargs)
