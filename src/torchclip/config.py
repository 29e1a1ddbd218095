"""CLIP configurations, read from and written to the HF `config.json` format.

Every config file that real checkpoints carry loads: transformers 4.x files (with `text_config_dict` /
`vision_config_dict`, `_name_or_path`, `transformers_version` and many generation keys) and 5.x files.
As transformers' `PretrainedConfig`, a config keeps the keys it does not know as attributes and writes them
back out, so a newer file never crashes an older torchclip and nothing in it is lost on a round trip; and
every config has the general switches `output_attentions`, `output_hidden_states` and `return_dict`, which
the models read when the forward arguments leave them unset.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from torchclip.hub import resolve_folder
from torchclip.io import MODEL_CONFIG_FILE, read_json, write_text_atomic

C = TypeVar("C", bound="PretrainedConfig")

# The switches every transformers config has, with its defaults; written out only when changed.
GENERAL_DEFAULTS: dict[str, Any] = {
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "torchscript": False,
}
# Keys of a config file that describe the file, not the model: not kept (saving writes its own).
FILE_KEYS = frozenset(
    {"model_type", "transformers_version", "_name_or_path", "text_config_dict", "vision_config_dict"}
)  # fmt: skip
# What `save_pretrained` of a model records about that model (its class and dtype), not read back as settings.
SAVED_MODEL_KEYS = frozenset({"architectures", "dtype", "torch_dtype"})


def config_class(cls: type[C]) -> type[C]:
    """A dataclass config whose constructor also takes the keys it does not know, as `PretrainedConfig`
    does: they become attributes (written back by `to_dict`); the general switches get their defaults."""
    cls = dataclass(repr=False, eq=False)(cls)
    dataclass_init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @functools.wraps(dataclass_init)
    def __init__(self: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        extra = {key: kwargs.pop(key) for key in list(kwargs) if key not in known}
        for key, value in GENERAL_DEFAULTS.items():
            object.__setattr__(self, key, extra.pop(key, value))
        self._attn_implementation = extra.pop("attn_implementation", None)
        dtype = extra.pop("dtype", extra.pop("torch_dtype", None))
        if dtype is not None:  # the checkpoint's dtype, as transformers keeps it: a torch.dtype
            extra["dtype"] = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype), dtype)
        dataclass_init(self, *args, **kwargs)
        for key, value in extra.items():
            if key not in FILE_KEYS:
                self._set_extra(key, value)

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


class PretrainedConfig:
    """JSON in and out for the dataclass configs below."""

    model_type: ClassVar[str] = ""
    # the nested configs of a composite config, by attribute name (transformers' `sub_configs`)
    sub_configs: ClassVar[dict[str, type[PretrainedConfig]]] = {}
    is_encoder_decoder: ClassVar[bool] = False
    output_attentions: bool
    output_hidden_states: bool
    return_dict: bool
    torchscript: bool
    _attn_implementation: str | None

    def _set_extra(self, key: str, value: Any) -> None:
        """Keep an unknown key as an attribute, unless it names something computed (`num_labels` of a
        tower config, a ResNet's `hidden_size`): that one is derived, not stored."""
        attribute = getattr(type(self), key, None)
        if isinstance(attribute, property) and attribute.fset is None:
            return
        setattr(self, key, value)

    @property
    def use_return_dict(self) -> bool:
        """Whether models return output objects (not tuples) by default, as transformers' config says."""
        return self.return_dict and not self.torchscript

    @classmethod
    def from_dict(cls: type[C], config: dict[str, Any], **overrides: Any) -> C:
        """Build from a config dict; keys this config does not know are kept as attributes."""
        merged = {**config, **overrides}
        return cls(**{key: value for key, value in merged.items() if key not in FILE_KEYS | SAVED_MODEL_KEYS})

    def to_dict(self) -> dict[str, Any]:
        """The fields, the general switches that differ from their defaults, then every other attribute."""
        out: dict[str, Any] = {"model_type": self.model_type}
        fields = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        for name in fields:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        for key, value in vars(self).items():
            if key.startswith("_") or key in out or GENERAL_DEFAULTS.get(key, not value) == value:
                continue
            if isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            out[key] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """The config as JSON (`use_diff` is accepted for transformers' signature: the general switches are
        always written only where they differ from their defaults)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Write `to_json_string()` to a file (atomically)."""
        write_text_atomic(json_file_path, self.to_json_string(use_diff))

    def to_diff_dict(self) -> dict[str, Any]:
        """Only what differs from a config built with the defaults (and the model type), as transformers'."""
        defaults = type(self)().to_dict()
        changed = self.to_dict().items()
        return {key: value for key, value in changed if key == "model_type" or defaults.get(key) != value}

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PretrainedConfig:
        """The config of the text tower: this one, or a composite config's `text_config`."""
        return getattr(self, "text_config", self)

    def __iter__(self) -> Iterator[str]:
        """The attribute names, as iterating a transformers config gives them."""
        return iter(key for key in vars(self) if not key.startswith("_"))

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set attributes from a dict, as transformers' `PretrainedConfig.update`."""
        for key, value in config_dict.items():
            setattr(self, key, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike) -> C:
        return cls._from_file_dict(read_json(path))

    @classmethod
    def _from_file_dict(cls: type[C], config: dict[str, Any]) -> C:
        return cls.from_dict(config)

    @classmethod
    def from_pretrained(
        cls: type[C], name_or_path: str | os.PathLike, subfolder: str = "", **overrides: Any
    ) -> C:
        """Read `config.json` from a checkpoint folder (or hub id; `subfolder` inside it), or a path to the
        JSON file itself. Keyword arguments override the file's keys."""
        path = Path(name_or_path) / subfolder if subfolder else Path(name_or_path)
        if path.is_file():
            config = cls.from_json_file(path)
        else:
            folder = resolve_folder(path if subfolder else name_or_path, what="config")
            if not (folder / MODEL_CONFIG_FILE).is_file():
                raise FileNotFoundError(f"no {MODEL_CONFIG_FILE} in {str(folder)!r}")
            config = cls.from_json_file(folder / MODEL_CONFIG_FILE)
        return config.replaced(**overrides) if overrides else config

    def replaced(self: C, **overrides: Any) -> C:
        """A copy with some keys changed (fields are validated again; other keys become attributes). A dict
        given for a nested config (`text_config={"vocab_size": 20}`) changes only the keys it names."""
        current = self.to_dict()
        for key, value in overrides.items():
            nested = getattr(self, key, None)
            merge = isinstance(nested, PretrainedConfig) and isinstance(value, dict)
            current[key] = {**nested.to_dict(), **value} if merge else value
        return type(self).from_dict(current)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MODEL_CONFIG_FILE
        write_text_atomic(path, self.to_json_string())
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _check_heads(config: CLIPTextConfig | CLIPVisionConfig) -> None:
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{type(config).__name__}: hidden_size ({config.hidden_size}) is not a multiple of "
            f"num_attention_heads ({config.num_attention_heads})"
        )


@config_class
class CLIPTextConfig(PretrainedConfig):
    """The text transformer. Defaults are OpenAI's ViT-B/32 text tower."""

    model_type: ClassVar[str] = "clip_text_model"

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        _check_heads(self)

    @classmethod
    def _from_file_dict(cls, config: dict[str, Any]) -> CLIPTextConfig:
        if config.get("model_type") == "clip":  # a whole CLIP checkpoint: take its text tower
            return CLIPConfig._from_file_dict(config).text_config
        return cls.from_dict(config)


@config_class
class CLIPVisionConfig(PretrainedConfig):
    """The vision transformer (ViT). Defaults are OpenAI's ViT-B/32 image tower."""

    model_type: ClassVar[str] = "clip_vision_model"

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def __post_init__(self) -> None:
        _check_heads(self)

    @classmethod
    def _from_file_dict(cls, config: dict[str, Any]) -> CLIPVisionConfig:
        if config.get("model_type") == "clip":
            vision = CLIPConfig._from_file_dict(config).vision_config
            if not isinstance(vision, CLIPVisionConfig):
                raise ValueError(f"this checkpoint's image tower is {vision.model_type!r}, not a ViT")
            return vision
        return cls.from_dict(config)


@config_class
class CLIPResNetVisionConfig(PretrainedConfig):
    """OpenAI's modified ResNet image tower (RN50, RN101, RN50x4, ...).

    The reference HF library has no such tower; torchclip stores it under its own `model_type`.
    `output_dim` is the attention-pooling head's output, which is already the joint embedding space.
    """

    model_type: ClassVar[str] = "clip_resnet"

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32
    output_dim: int = 1024
    image_size: int = 224
    num_channels: int = 3
    initializer_factor: float = 1.0

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)  # type: ignore[assignment]
        if len(self.layers) != 4:
            raise ValueError(f"CLIPResNetVisionConfig.layers must have 4 stage depths, got {self.layers}")

    @classmethod
    def _from_file_dict(cls, config: dict[str, Any]) -> CLIPResNetVisionConfig:
        if config.get("model_type") == "clip":
            vision = CLIPConfig._from_file_dict(config).vision_config
            if not isinstance(vision, CLIPResNetVisionConfig):
                raise ValueError(f"this checkpoint's image tower is {vision.model_type!r}, not a ResNet")
            return vision
        return cls.from_dict(config)

    @property
    def hidden_size(self) -> int:
        """Width of the final feature map, the attention pool's input."""
        return self.width * 32

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["layers"] = list(self.layers)
        return out


VISION_CONFIGS: dict[str, type[PretrainedConfig]] = {
    CLIPVisionConfig.model_type: CLIPVisionConfig,
    CLIPResNetVisionConfig.model_type: CLIPResNetVisionConfig,
}


def _as_dict(config: PretrainedConfig | dict[str, Any] | None) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, PretrainedConfig) else dict(config or {})


def _vision_config_from_dict(config: dict[str, Any]) -> CLIPVisionConfig | CLIPResNetVisionConfig:
    model_type = config.get("model_type", CLIPVisionConfig.model_type)
    if model_type not in VISION_CONFIGS:
        raise ValueError(f"unknown vision_config.model_type {model_type!r}; known: {sorted(VISION_CONFIGS)}")
    return VISION_CONFIGS[model_type].from_dict(config)  # type: ignore[return-value]


@config_class
class CLIPConfig(PretrainedConfig):
    """A whole CLIP model: both towers, the joint embedding size and the initial temperature."""

    model_type: ClassVar[str] = "clip"
    sub_configs: ClassVar[dict[str, type[PretrainedConfig]]] = {}  # set below the class

    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig | CLIPResNetVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    # Only CLIPForImageClassification reads these.
    id2label: dict[int, str] | None = None
    problem_type: str | None = None

    def __post_init__(self) -> None:
        if self.text_config is None:
            self.text_config = CLIPTextConfig()
        elif isinstance(self.text_config, dict):
            self.text_config = CLIPTextConfig.from_dict(self.text_config)
        if self.vision_config is None:
            self.vision_config = CLIPVisionConfig()
        elif isinstance(self.vision_config, dict):
            self.vision_config = _vision_config_from_dict(self.vision_config)
        if self.id2label is not None:
            self.id2label = {int(key): value for key, value in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        """Number of classes of `CLIPForImageClassification` (2 unless `id2label` says otherwise)."""
        return 2 if self.id2label is None else len(self.id2label)

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        if self.id2label is None or len(self.id2label) != count:
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in (self.id2label or {i: f"LABEL_{i}" for i in range(2)}).items()}

    @label2id.setter
    def label2id(self, mapping: dict[str, int]) -> None:
        self.id2label = {int(i): label for label, i in mapping.items()}

    @classmethod
    def from_text_vision_configs(
        cls,
        text_config: CLIPTextConfig,
        vision_config: CLIPVisionConfig | CLIPResNetVisionConfig,
        **kwargs: Any,
    ) -> CLIPConfig:
        """Combine a text and a vision config (the documented constructor)."""
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> CLIPConfig:
        config = {**config, **overrides}
        text, vision = (_as_dict(config.get(key)) for key in ("text_config", "vision_config"))
        # transformers 4.x files: the *_config_dict entries are what the model was built with.
        text.update(config.get("text_config_dict") or {})
        vision.update(config.get("vision_config_dict") or {})
        skipped = FILE_KEYS | SAVED_MODEL_KEYS | {"text_config", "vision_config"}
        kwargs = {key: value for key, value in config.items() if key not in skipped}
        if "id2label" in kwargs and "label2id" in kwargs:
            del kwargs["label2id"]  # the inverse of id2label, which is kept
        return cls(
            text_config=CLIPTextConfig.from_dict(text),
            vision_config=_vision_config_from_dict(vision),
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if out["id2label"] is None:
            del out["id2label"]
        else:
            out["id2label"] = {str(key): value for key, value in out["id2label"].items()}
            out["label2id"] = {value: key for key, value in self.id2label.items()}  # type: ignore[union-attr]
        if out["problem_type"] is None:
            del out["problem_type"]
        return out


CLIPConfig.sub_configs = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}
