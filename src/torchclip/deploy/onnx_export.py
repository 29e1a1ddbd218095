"""Export a CLIPModel's two towers as separate ONNX graphs, verified in ONNX Runtime before they are kept.

`OUT/text_model.onnx` maps `input_ids`, `attention_mask` [batch, sequence] (int64) to `text_embeds`
[batch, projection_dim] and `OUT/vision_model.onnx` maps `pixel_values` [batch, 3, size, size] to
`image_embeds`: projected, not normalised, as `get_text_features` / `get_image_features` return them. Inputs
and outputs are float32 whatever the graph's dtype. Batch and sequence axes are dynamic. Beside them: the
tokenizer and preprocessor files, the model's config.json and `onnx_manifest.json` (dims, opset, dtype,
pooling rule, the verification's measured differences).

What is traced is the plain computation, not the PyTorch speed paths (`modeling/fast.py`, `modeling/packing.py`):
the text tower applies its causal + padding mask on every call (PyTorch skips it when nothing is padded, a
branch on the data that a graph cannot hold) and pools by gathering the end token's state from the full
sequence (PyTorch packs sequences instead); the image tower runs its last layer at every position (PyTorch
only at the class token). The fused fp32 linear kernel is only taken inside `fused_fp32_linears()`, which
these forwards never enter, and bf16 is not an export dtype, so every projection is a plain `F.linear`, i.e.
ONNX's MatMul + Add (or Gemm).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchclip import __version__
from torchclip.config import CLIPResNetVisionConfig
from torchclip.convert.loading import default_processor
from torchclip.io import atomic_folder, default_file_mode, write_json
from torchclip.modeling.clip import CLIPModel
from torchclip.modeling.layers import causal_padding_mask

TEXT_GRAPH = "text_model.onnx"
VISION_GRAPH = "vision_model.onnx"
MANIFEST = "onnx_manifest.json"
FORMAT_VERSION = 1
EXPORT_DTYPES = ("float32", "float16", "int8")
# the dynamo exporter's own; others are converted from it (17 and 20 also passed the export's verification when
# this was written)
DEFAULT_OPSET = 18

# Largest allowed |ONNX Runtime - PyTorch fp32| on the verification inputs. fp16: the embeddings' size
# times fp16's rounding over a whole tower, so relative to max |embedding|: measured 3e-4 of it on the
# bundled model (1.1e-3 absolute), within 1e-2 on the random-weight configs of tests/test_onnx.py.
FP32_TOLERANCE = 1e-4
FP16_RELATIVE_TOLERANCE = 1e-2


def require_onnx() -> None:
    """Fail with the way out when the `onnx` extra is not installed."""
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export and runtime need {', '.join(missing)}: pip install 'torchclip[onnx]'")


class ExportVerificationError(RuntimeError):
    """The exported graphs do not compute what the PyTorch model does (nothing was kept)."""


class TextFeatures(nn.Module):
    """`get_text_features(input_ids, attention_mask)` as one traceable forward (see the module docstring)."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tower = self.text_model
        x = tower.embeddings(input_ids)
        mask = causal_padding_mask(attention_mask, input_ids.shape[-1], x.dtype)
        x, _, _ = tower.encoder(x, mask)
        x = tower.final_layer_norm(x)
        # transformers' pooling rule (`pooled_positions`); it casts to int32 before argmax, which ONNX Runtime needs
        # at some opsets
        ends = tower.pooled_positions(input_ids)
        pooled = x[torch.arange(x.shape[0], device=x.device), ends]
        return self.text_projection(pooled).float()


class ImageFeatures(nn.Module):
    """`get_image_features(pixel_values)` through the tower's plain forward."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values, return_dict=True).pooler_output
        return self.visual_projection(pooled).float()


def pooling_rule(model: CLIPModel) -> str:
    eos = model.config.text_config.eos_token_id
    if eos == 2:
        return "argmax: the largest token id (legacy config with eos_token_id 2)"
    return f"first eos_token_id ({eos})"


def sample_text(model: CLIPModel, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ending in the pooled token at different lengths, with right- and left-padded rows."""
    text = model.config.text_config
    generator = torch.Generator().manual_seed(seed)
    legacy = text.eos_token_id == 2
    end_token = text.vocab_size - 1 if legacy else text.eos_token_id
    ids = torch.randint(0, text.vocab_size - 1, (batch, length), generator=generator)
    if not legacy:
        ids[ids == end_token] = 0
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        used = max(2, length * (batch - row) // batch)  # tokens in this row, bos to end: the first row full
        left = row % 3 == 1  # every third row padded on the left, the others on the right
        start = length - used if left else 0
        if text.bos_token_id is not None and 0 <= text.bos_token_id < text.vocab_size:
            ids[row, start] = text.bos_token_id
        ids[row, start + used - 1] = end_token
        pad = text.pad_token_id if text.pad_token_id is not None and 0 <= text.pad_token_id < end_token else 0
        if left:
            ids[row, :start] = pad
            mask[row, :start] = 0
        else:
            ids[row, used:] = pad
            mask[row, used:] = 0
    return ids, mask


def sample_images(model: CLIPModel, batch: int, seed: int) -> torch.Tensor:
    size = model.config.vision_config.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def export_onnx(
    model: CLIPModel,
    output: str | os.PathLike,
    processor: Any = None,
    dtype: str = "float32",
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write `model`'s towers to the folder `output` as ONNX graphs and return the manifest; `processor`
    (default: the standard CLIP one, sized for the model) is saved beside them.

        The graphs are verified in ONNX Runtime against `model` in fp32 on fresh inputs (other batch sizes and
        lengths than traced, left and right padding): more than `FP32_TOLERANCE` apart (fp16:
        `FP16_RELATIVE_TOLERANCE` of the largest embedding value) raises `ExportVerificationError`. The folder
        is built under a temporary name and renamed when verified, so a failed export leaves nothing behind;
        an existing `output` is refused rather than overwritten.
    """
    require_onnx()
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"ONNX export dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} already exists; choose a new folder for the ONNX export")
    reference = copy.deepcopy(model).float().cpu().eval()
    traced = copy.deepcopy(reference).half() if dtype == "float16" else reference
    with atomic_folder(output) as staging:
        text_config = reference.config.text_config
        _export_graph(
            TextFeatures(traced),
            sample_text(reference, 2, min(7, text_config.max_position_embeddings), seed=0),
            staging / TEXT_GRAPH,
            input_names=["input_ids", "attention_mask"],
            output_name="text_embeds",
            dynamic={"input_ids": ("batch", "sequence"), "attention_mask": ("batch", "sequence")},
            max_sequence=text_config.max_position_embeddings,
            opset=opset,
        )
        _export_graph(
            ImageFeatures(traced),
            (sample_images(reference, 2, seed=0),),
            staging / VISION_GRAPH,
            input_names=["pixel_values"],
            output_name="image_embeds",
            dynamic={"pixel_values": ("batch",)},
            max_sequence=None,
            opset=opset,
        )
        if dtype == "int8":
            from torchclip.deploy.quantize import quantize_graph  # noqa: PLC0415 - cycle: quantize imports onnx_export

            quantize_graph(staging / TEXT_GRAPH)
            quantize_graph(staging / VISION_GRAPH)
        differences = verify_export(reference, staging, dtype)
        manifest = _manifest(reference, dtype, opset, differences)
        reference.config.save_pretrained(staging)
        if processor is None:
            processor = default_processor(reference.config)
        processor.save_pretrained(staging)
        write_json(staging / MANIFEST, manifest)
        for file in staging.iterdir():
            os.chmod(file, default_file_mode())
    return manifest


def _export_graph(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_name: str,
    dynamic: dict[str, tuple[str, ...]],
    max_sequence: int | None,
    opset: int,
) -> None:
    """torch.onnx's dynamo exporter (TorchScript's tracer cannot take the towers' sliced parameters)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    axes = {"batch": batch}
    if max_sequence is not None:
        axes["sequence"] = torch.export.Dim("sequence", min=1, max=max_sequence)
    shapes = {name: {i: axes[axis] for i, axis in enumerate(names)} for name, names in dynamic.items()}
    with _quiet_exporter(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notices
        program = _dynamo_export(module, inputs, input_names, output_name, shapes, opset)
    program.save(str(path), external_data=_needs_external_data(program))


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's notices (e.g. about torchvision's operators) raised to errors, and torch's structured
    trace log detached unless TORCH_TRACE asks for it: that log serializes every traced graph whenever its
    logger has a handler, and test runners attach theirs (pytest's log capture made the bundled model's
    export 8x slower)."""
    exporter_log, trace_log = logging.getLogger("torch.onnx"), logging.getLogger("torch.__trace")
    level, trace_handlers = exporter_log.level, trace_log.handlers
    exporter_log.setLevel(logging.ERROR)
    if not os.environ.get("TORCH_TRACE"):
        trace_log.handlers = []
    try:
        yield
    finally:
        exporter_log.setLevel(level)
        trace_log.handlers = trace_handlers


def _dynamo_export(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_name: str,
    shapes: dict[str, Any],
    opset: int,
) -> Any:
    return torch.onnx.export(
        module.eval(),
        inputs,
        input_names=input_names,
        output_names=[output_name],
        dynamic_shapes=shapes,
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _needs_external_data(program: Any) -> bool:
    """Protobuf caps one file at 2 GB: larger towers (ViT-bigG's) keep their weights beside the graph."""
    total = sum(value.const_value.nbytes for value in program.model.graph.initializers.values() if value.const_value)
    return total > 1_800_000_000


def session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An ONNX Runtime session: CUDA first when this onnxruntime has it, then the CPU; `threads` for the CPU
    (default: ONNX Runtime's own choice, one per physical core)."""
    require_onnx()
    import onnxruntime  # noqa: PLC0415 - optional dependency (onnx)

    available = onnxruntime.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: not the optimizer's notices
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def verify_export(reference: CLIPModel, folder: Path, dtype: str) -> dict[str, float]:
    """Run both graphs in ONNX Runtime and compare with `reference` (fp32): per tower the largest difference
    (int8: the smallest cosine), raising `ExportVerificationError` past the bound for `dtype`."""
    text = reference.config.text_config
    checks = {"text": [], "vision": []}
    text_session, vision_session = session(folder / TEXT_GRAPH), session(folder / VISION_GRAPH)
    longest = text.max_position_embeddings
    with torch.no_grad():
        for batch, length, seed in ((1, longest, 1), (5, min(12, longest), 2), (4, longest, 3)):
            ids, mask = sample_text(reference, batch, length, seed)
            expected = reference.get_text_features(ids, mask)
            (got,) = text_session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
            checks["text"].append((expected.numpy(), got))
        for batch, seed in ((1, 1), (3, 2)):
            pixels = sample_images(reference, batch, seed)
            expected = reference.get_image_features(pixels)
            (got,) = vision_session.run(None, {"pixel_values": pixels.numpy()})
            checks["vision"].append((expected.numpy(), got))
    differences, problems = {}, []
    for tower, pairs in checks.items():
        if dtype == "int8":  # quantization moves every value a little: judged by direction, not by value
            from torchclip.deploy.quantize import INT8_MIN_COSINE  # noqa: PLC0415 - cycle: quantize imports onnx_export

            worst = min(float(_cosines(expected, got).min()) for expected, got in pairs)
            differences[f"{tower}_min_cosine"] = worst
            if not worst >= INT8_MIN_COSINE:  # NaN fails too
                problems.append(f"{tower} tower: min cosine with torch = {worst:.4f} < {INT8_MIN_COSINE}")
            continue
        worst = max(float(np.abs(expected - got).max()) for expected, got in pairs)
        scale = max(float(np.abs(expected).max()) for expected, _ in pairs)
        bound = FP32_TOLERANCE if dtype == "float32" else FP16_RELATIVE_TOLERANCE * scale
        differences[tower] = worst
        if not worst <= bound:  # NaN fails too
            problems.append(f"{tower} tower: max |onnx - torch| = {worst:.3g} > {bound:.3g}")
    if problems:
        raise ExportVerificationError(
            f"the {dtype} ONNX export does not match PyTorch ({'; '.join(problems)}); nothing was written"
        )
    return differences


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _manifest(model: CLIPModel, dtype: str, opset: int, differences: dict[str, float]) -> dict[str, Any]:
    # not at the top: the store imports lance, which warns at every fork once imported, and ONNX-backend
    # commands (`classify --backend onnx`) fork DataLoader workers to decode images
    from torchclip.store import model_fingerprint  # noqa: PLC0415 - keeps lance out of --backend onnx

    config = model.config
    vision = config.vision_config
    return {
        "format": "torchclip-onnx",
        "format_version": FORMAT_VERSION,
        "torchclip_version": __version__,
        "text_model": TEXT_GRAPH,
        "vision_model": VISION_GRAPH,
        "dtype": dtype,
        "opset": opset,
        "projection_dim": config.projection_dim,
        "text_max_length": config.text_config.max_position_embeddings,
        "image_size": vision.image_size,
        "vision_tower": "resnet" if isinstance(vision, CLIPResNetVisionConfig) else "vit",
        "pooling": pooling_rule(model),
        "logit_scale": float(model.logit_scale.detach().float()),
        "fingerprint": model_fingerprint(model),
        "verification": differences,
    }
