"""The base class of every torchclip model: `from_pretrained`, `save_pretrained`, `from_state_dict`, and the
rest of transformers' `PreTrainedModel` API that CLIP models use.

The files themselves (safetensors, sharded safetensors, `pytorch_model.bin`) are read and written by
`torchclip.checkpoint`. Loading builds the model on the meta device and assigns the checkpoint's tensors to
it, so no random weights are allocated first, converting (dtype, fused QKV) one tensor at a time.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from torchclip.checkpoint import CheckpointError, parse_dtype, read_state_dict, save_state_dict, weight_files
from torchclip.config import PretrainedConfig
from torchclip.hub import resolve_folder
from torchclip.io import MODEL_CONFIG_FILE, write_json
from torchclip.modeling.qkv import fuse_qkv_keys

# Keys of a whole CLIP checkpoint that a single-tower model may leave unused.
CLIP_TOP_LEVEL = ("text_model.", "vision_model.", "text_projection.", "visual_projection.", "logit_scale")
# transformers' attention backends that compute what torchclip's attention computes (it picks its own kernel).
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

M = TypeVar("M", bound="PreTrainedModel")


class PreTrainedModel(nn.Module):
    """`from_pretrained` / `save_pretrained` for every torchclip model.

    Subclasses set `config_class`, build their modules in `__init__(config)` and define `init_weights()`.
    `checkpoint_prefix` is where a single tower's keys live inside a whole CLIP checkpoint;
    `optional_keys` are key prefixes that may be absent from a checkpoint (new heads), initialised afresh.
    """

    config_class: ClassVar[type[PretrainedConfig]]
    config: Any
    checkpoint_prefix: ClassVar[str] = ""
    optional_keys: ClassVar[tuple[str, ...]] = ()
    main_input_name: ClassVar[str] = "input_ids"
    loading_info: dict[str, Any]  # set by from_state_dict: what from_pretrained(output_loading_info=True) returns
    # What transformers' models declare about themselves: attention runs PyTorch's scaled_dot_product_attention
    # (eager math when attention weights are asked for), and every encoder can checkpoint its layers.
    _supports_sdpa: ClassVar[bool] = True
    supports_gradient_checkpointing: ClassVar[bool] = True

    @classmethod
    def can_generate(cls) -> bool:
        """CLIP generates no text."""
        return False

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Record "sdpa" or "eager" in the config (and the sub-configs); both compute the same attention."""
        if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {attn_implementation!r}"
            )
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.config._attn_implementation = attn_implementation

    def post_init(self) -> None:
        """Called at the end of every `__init__`: random initial weights, except on the meta device,
        where `from_pretrained` assigns the checkpoint's tensors instead."""
        if not self._on_meta():
            self.init_weights()
        if getattr(self.config, "gradient_checkpointing", False):  # an old config switch transformers honours
            self._set_checkpointing(True)

    def init_weights(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define init_weights()")

    def init_head(self) -> None:
        """Initialise the modules that `optional_keys` names (a head the checkpoint may lack)."""
        raise NotImplementedError(f"{type(self).__name__} has no optional head")

    def _on_meta(self) -> bool:
        return any(p.is_meta for p in self.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def output_flags(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """The forward arguments, where left as None taken from the config, as transformers does."""
        config = self.config
        return (
            bool(config.output_attentions if output_attentions is None else output_attentions),
            bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
            bool(config.use_return_dict if return_dict is None else return_dict),
        )

    def text_embedding_owner(self) -> nn.Module | None:
        """The text tower whose token embedding `get_input_embeddings` returns (None: an image-only model)."""
        for candidate in (self, getattr(self, "text_model", None)):
            if hasattr(getattr(candidate, "embeddings", None), "token_embedding"):
                return candidate
        return None

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding (text models) or the patch embedding convolution (image models), as the
        transformers returns them."""
        owner = self.text_embedding_owner()
        if owner is not None:
            return owner.embeddings.token_embedding
        vision = getattr(self, "vision_model", self)
        if not hasattr(vision, "embeddings"):
            raise NotImplementedError(f"{type(self).__name__} (a ResNet image tower) has no input embedding")
        return vision.embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        owner = self.text_embedding_owner()
        if owner is not None:
            owner.embeddings.token_embedding = value
        else:
            getattr(self, "vision_model", self).embeddings.patch_embedding = value

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding (what `resize_token_embeddings` changes)."""
        owner = self.text_embedding_owner()
        if owner is None:
            raise AttributeError(f"{type(self).__name__} has no token vocabulary")
        return owner.embeddings.token_embedding.num_embeddings

    def get_output_embeddings(self) -> None:
        """CLIP has no language-model head: None, as in transformers."""
        return None

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Grow or shrink the token embedding to `new_num_tokens` rows (e.g. after `tokenizer.add_tokens`).

        Existing rows are kept; new rows are the mean of the old ones (`mean_resizing`, which keeps the new
        tokens' embeddings in the distribution of the trained ones) or drawn as at initialisation.
        `config.vocab_size` follows. Returns the new embedding.
        """
        owner = self.text_embedding_owner()
        if owner is None:
            raise NotImplementedError(f"{type(self).__name__} has no token embedding to resize")
        old = owner.embeddings.token_embedding
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        count = old.num_embeddings if new_num_tokens is None else int(new_num_tokens)
        if pad_to_multiple_of is not None:
            if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int):
                raise ValueError(f"pad_to_multiple_of must be an integer, got {pad_to_multiple_of!r}")
            count = -(-count // pad_to_multiple_of) * pad_to_multiple_of
        if count < 1:
            raise ValueError(f"new_num_tokens must be at least 1, got {count}")
        new = nn.Embedding(count, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        kept = min(count, old.num_embeddings)
        with torch.no_grad():
            new.weight[:kept] = old.weight[:kept]
            if count > kept:
                if mean_resizing:
                    new.weight[kept:] = old.weight.float().mean(dim=0).to(old.weight.dtype)
                else:
                    nn.init.normal_(new.weight[kept:], std=0.02 * owner.config.initializer_factor)
        new.weight.requires_grad_(old.weight.requires_grad)
        owner.embeddings.token_embedding = new
        owner.config.vocab_size = count
        return new

    def activation_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each encoder layer in the backward pass (non-reentrant checkpointing) to save memory."""
        self._set_checkpointing(True)

    def activation_checkpointing_disable(self) -> None:
        self._set_checkpointing(False)

    def _set_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(module, "gradient_checkpointing", False) for module in self.modules())

    # the names before transformers 5.24
    gradient_checkpointing_enable = activation_checkpointing_enable
    gradient_checkpointing_disable = activation_checkpointing_disable
    is_gradient_checkpointing = is_activation_checkpointing

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' output require gradients (for adapters on a frozen model, with
        checkpointing), as transformers' method of that name."""

        def require_grads(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self._input_grads_hook = self.get_input_embeddings().register_forward_hook(require_grads)

    def disable_input_require_grads(self) -> None:
        hook = getattr(self, "_input_grads_hook", None)
        if hook is not None:
            hook.remove()
            self._input_grads_hook = None

    @classmethod
    def from_config(cls: type[M], config: PretrainedConfig, **kwargs: Any) -> M:
        """A randomly initialised model (same as calling the class); `attn_implementation=` and
        `torch_dtype=` / `dtype=` as in `from_pretrained`."""
        attention = kwargs.pop("attn_implementation", None)
        dtype = parse_dtype(kwargs.pop("dtype", kwargs.pop("torch_dtype", None)))
        if kwargs:
            raise TypeError(f"from_config got unknown arguments {sorted(kwargs)}")
        model = cls(copy.deepcopy(config))
        if attention is not None:
            model.set_attn_implementation(attention)
        return model.to(dtype) if isinstance(dtype, torch.dtype) else model

    _from_config = from_config  # transformers' internal name, which its tests call

    @classmethod
    def from_pretrained(
        cls: type[M],
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: PretrainedConfig | None = None,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        attn_implementation: str | None = None,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> M | tuple[M, dict[str, Any]]:
        """Load a checkpoint folder as published on the model hub (or a hub id, via huggingface_hub).

        `torch_dtype` (or its newer name `dtype`): float32 (default), float16, bfloat16, or "auto" to
        keep the checkpoint's own dtype. `attn_implementation` "sdpa" or "eager" (same results: torchclip
        chooses its attention kernel itself). Other keyword arguments set config attributes (e.g.
        `output_hidden_states=True`), as in transformers. `output_loading_info=True` returns
        `(model, {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"})`.
        """
        if attn_implementation not in (None, *ATTENTION_IMPLEMENTATIONS):
            raise ValueError(
                f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS} (or None), got "
                f"{attn_implementation!r}: torchclip runs PyTorch's scaled_dot_product_attention"
            )
        folder = resolve_folder(pretrained_model_name_or_path, what=cls.__name__)
        if config is None:
            if not (folder / MODEL_CONFIG_FILE).is_file():
                raise FileNotFoundError(f"no {MODEL_CONFIG_FILE} in {str(folder)!r}: cannot tell which model to build")
            config = cls.config_class.from_pretrained(folder)
        else:
            config = copy.deepcopy(config)
        for key, value in config_overrides.items():
            setattr(config, key, value)
        model_attention = attn_implementation or "sdpa"
        model = cls.from_state_dict(
            read_state_dict(weight_files(folder)),
            config,
            torch_dtype=dtype if dtype is not None else torch_dtype,
            device=device,
            source=str(folder),
        )
        model.set_attn_implementation(model_attention)
        return (model, model.loading_info) if output_loading_info else model

    @classmethod
    def from_state_dict(
        cls: type[M],
        state: dict[str, torch.Tensor],
        config: PretrainedConfig,
        *,
        torch_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        source: str = "state dict",
    ) -> M:
        """Build the model from a state dict in transformers' key layout, without random init first."""
        with torch.device("meta"):
            model = cls(config)
        expected = {key: (tuple(t.shape), t.dtype) for key, t in model.state_dict().items()}
        state, unexpected = _match_keys(state, expected, cls, source)
        target = parse_dtype(torch_dtype)
        loaded = {}
        for key in list(state):
            tensor = state.pop(key)  # drop each source tensor as soon as it is converted
            shape, _ = expected[key]
            if tuple(tensor.shape) != shape:
                raise CheckpointError(
                    f"{source}: {key!r} has shape {list(tensor.shape)} in the checkpoint but the config "
                    f"expects {list(shape)}: config and weights do not belong together"
                )
            dtype = tensor.dtype if target == "auto" else (target or torch.float32)
            loaded[key] = tensor.to(device=device or "cpu", dtype=dtype if tensor.is_floating_point() else None)
        for key in [key for key in loaded if key.endswith("q_proj.weight")]:
            fuse_qkv_keys(loaded, key.removesuffix("q_proj.weight"))  # one layer's copy at a time
        model.load_state_dict(loaded, strict=False, assign=True)
        fresh = [name for name, p in model.named_parameters() if p.is_meta]
        if fresh:
            model._initialise_fresh(fresh, device, target)
        # as transformers 5 reports it: sets of key names (mismatched: never, a wrong shape is an error here)
        model.loading_info = {"missing_keys": set(fresh), "unexpected_keys": set(unexpected), "mismatched_keys": set(),
                              "error_msgs": []}  # fmt: skip
        return model.eval()

    def _initialise_fresh(self, names: list[str], device: Any, dtype: Any) -> None:
        warnings.warn(
            f"{type(self).__name__}: newly initialised (not in the checkpoint): {', '.join(names)}",
            stacklevel=3,
        )
        loaded = next(p for p in self.parameters() if not p.is_meta)
        for prefix in self.optional_keys:
            module = self.get_submodule(prefix.rstrip("."))
            module.to_empty(device=device or "cpu")
            module.to(loaded.dtype)
        self.init_head()

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str = "5GB") -> Path:
        """Write config.json and safetensors weights that both torchclip and transformers load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_state_dict(self.state_dict(), folder, max_shard_size)
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        config["dtype"] = str(self.dtype).removeprefix("torch.")
        write_json(folder / MODEL_CONFIG_FILE, config, sort_keys=True)
        return folder


def _match_keys(
    state: dict[str, torch.Tensor], expected: dict[str, Any], cls: type, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map checkpoint keys to the model's, whichever of transformers' layouts the file uses.

    A tower saved alone by transformers 5 has no `text_model.` prefix, one saved by 4.x (or taken from a
    whole CLIP checkpoint) has it: try each and keep the mapping that explains the most keys.
    """
    state = {key: value for key, value in state.items() if not key.endswith("position_ids")}
    prefixes = ("text_model.", "vision_model.")
    candidates = [state]
    for prefix in prefixes:
        candidates.append({key.removeprefix(prefix): v for key, v in state.items()})
        candidates.append(
            {(prefix + key if not key.startswith(CLIP_TOP_LEVEL) else key): v for key, v in state.items()}
        )
    best = max(candidates, key=lambda mapped: len(expected.keys() & mapped.keys()))
    missing = [key for key in expected if key not in best and not key.startswith(cls.optional_keys)]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{source}: weights missing for {cls.__name__}: {shown}")
    unexpected = [key for key in best if key not in expected]
    surprising = [key for key in unexpected if not key.startswith(CLIP_TOP_LEVEL)]
    if surprising:
        warnings.warn(f"{source}: unused checkpoint keys: {', '.join(surprising[:8])}", stacklevel=4)
    return {key: value for key, value in best.items() if key in expected}, unexpected
