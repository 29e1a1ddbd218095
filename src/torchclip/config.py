"""CLIP configurations, read from and written to the HF `config.json` format.

Every config file that real checkpoints carry loads: transformers 4.x files (with `text_config_dict` /
`vision_config_dict`, `_name_or_path`, `transformers_version` and many generation keys) and 5.x files.
Keys a config does not know are ignored, so a newer file never crashes an older torchclip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

CONFIG_NAME = "config.json"

C = TypeVar("C", bound="PretrainedConfig")


class PretrainedConfig:
    """JSON in and out for the dataclass configs below."""

    model_type: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[C], config: dict[str, Any], **overrides: Any) -> C:
        """Build from a config dict, keeping only the keys this config knows."""
        merged = {**config, **overrides}
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in merged.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_type": self.model_type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, PretrainedConfig) else value
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike) -> C:
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return cls._from_file_dict(config)

    @classmethod
    def _from_file_dict(cls: type[C], config: dict[str, Any]) -> C:
        return cls.from_dict(config)

    @classmethod
    def from_pretrained(cls: type[C], name_or_path: str | os.PathLike, **overrides: Any) -> C:
        """Read `config.json` from a checkpoint folder (or hub id), or a path to the JSON file itself."""
        path = Path(name_or_path)
        if path.is_file():
            config = cls.from_json_file(path)
        else:
            from torchclip.hub import resolve_folder

            folder = resolve_folder(name_or_path, what="config")
            if not (folder / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"no {CONFIG_NAME} in {str(folder)!r}")
            config = cls.from_json_file(folder / CONFIG_NAME)
        return dataclasses.replace(config, **overrides) if overrides else config  # type: ignore[type-var]

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CONFIG_NAME
        write_text_atomic(path, self.to_json_string())
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def default_file_mode(directory: bool = False) -> int:
    """The permissions an ordinary new file (0o666) or folder (0o777) gets, less the umask: temporary files
    and folders start private, and a result renamed from one should not stay so."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that a crash leaves either the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_heads(config: CLIPTextConfig | CLIPVisionConfig) -> None:
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{type(config).__name__}: hidden_size ({config.hidden_size}) is not a multiple of "
            f"num_attention_heads ({config.num_attention_heads})"
        )


@dataclass(repr=False)
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


@dataclass(repr=False)
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


@dataclass(repr=False)
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


def _vision_config_from_dict(config: dict[str, Any]) -> CLIPVisionConfig | CLIPResNetVisionConfig:
    model_type = config.get("model_type", CLIPVisionConfig.model_type)
    if model_type not in VISION_CONFIGS:
        raise ValueError(f"unknown vision_config.model_type {model_type!r}; known: {sorted(VISION_CONFIGS)}")
    return VISION_CONFIGS[model_type].from_dict(config)  # type: ignore[return-value]


@dataclass(repr=False)
class CLIPConfig(PretrainedConfig):
    """A whole CLIP model: both towers, the joint embedding size and the initial temperature."""

    model_type: ClassVar[str] = "clip"

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
        return 2 if self.id2label is None else len(self.id2label)

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
        text = dict(config.get("text_config") or {})
        vision = dict(config.get("vision_config") or {})
        # transformers 4.x files: the *_config_dict entries are what the model was built with.
        text.update(config.get("text_config_dict") or {})
        vision.update(config.get("vision_config_dict") or {})
        known = {f.name for f in dataclasses.fields(cls)} - {"text_config", "vision_config"}
        kwargs = {key: value for key, value in config.items() if key in known}
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
