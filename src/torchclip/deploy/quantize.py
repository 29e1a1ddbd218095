"""int8 inference: the towers' linear layers with int8 weights and activations quantized on the fly.

Chosen by measurement (benchmarks/bench_deploy.py, docs/deployment.md): ONNX Runtime's dynamic quantization
(MatMulInteger on int8 weights) ran a ViT-B/32 MLP projection [1600 x 768] x [768 x 3072] 6x faster than its
fp32 MatMul on the 2-core x86_64 VM of docs/performance.md (AMX/VNNI int8, 2 threads), PyTorch's dynamic
quantization (`torch.ao`, deprecated) 2x faster than its fp32 `linear`. So `quantize()` exports the model to
ONNX and quantizes the graphs.

What stays in float: the final projections into the joint space, the attention score and value products
(activation x activation), softmax, layer norms, embeddings, the patch convolution and the ResNet's
convolutions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from torchclip.datasets.synthetic import SyntheticCaptions, all_compositions, composition_name
from torchclip.deploy.onnx_export import export_onnx
from torchclip.deploy.onnx_runtime import load_onnx
from torchclip.embed import embed_images
from torchclip.evaluate import synthetic_templates, zero_shot_classifier
from torchclip.io import atomic_path

# An int8 export is kept if every verification embedding has at least this cosine with PyTorch fp32's:
# measured 0.9989-0.9999 on random-weight test configs and the bundled model (tests/test_quantize.py).
INT8_MIN_COSINE = 0.98


def quantize_graph(path: str | os.PathLike) -> None:
    """Replace the fp32 ONNX graph at `path` by its dynamic-int8 version (weights int8 per channel)."""
    path = Path(path)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs its pre-processing advice on the root logger
    try:
        with atomic_path(path) as quantized:
            quantize_dynamic(
                path,
                quantized,
                # u8 activations x s8 weights: the fast kernel (QUInt8 weights ran 5x slower)
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                # the quantizer first rewrites a Gemm (the final projection's, of a 2-D input) as NAME_MatMul
                nodes_to_exclude=[
                    name + suffix for name in final_projection_nodes(onnx.load(path)) for suffix in ("", "_MatMul")
                ],
                per_channel=True,
                # 7-bit weights: without VNNI (AVX2-only x86, e.g. AMD Zen 3) ONNX Runtime's u8 x s8 kernel
                # sums pairs of products in int16 (vpmaddubsw), which saturates on 8-bit weights; measured
                # text cosine with fp32 down to 0.92 on a random tiny model and 0.9977 on the bundled one
                # there. A file exported on one machine runs on any other, so every export takes 7 bits.
                reduce_range=True,
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        root.setLevel(level)


def final_projection_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul / Gemm nodes that produce the graph's outputs (through casts and adds): the
    projection into the joint embedding space, kept in float (in a quantized graph: none)."""
    producer = {output: node for node in model.graph.node for output in node.output}
    found, pending = [], [output.name for output in model.graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node.name)
        elif node.op_type in ("Cast", "Identity", "Add", "Reshape", "Squeeze"):
            pending.extend(node.input)
    return found


def quantize(model: Any, dtype: str = "int8", providers: list[str] | None = None, threads: int | None = None) -> Any:
    """`model` (a CLIPModel) with dynamic int8 linear layers: an `ONNXCLIPEncoder` (see
    `torchclip.load_onnx`) with `get_text_features` / `get_image_features`.

    This exports, quantizes and verifies the model first (a ViT-B/32: over a minute on 2 cores); to do it once,
    export with `torchclip export MODEL OUT --format onnx --dtype int8` and load OUT with `load_onnx`.
    """
    if dtype != "int8":
        raise ValueError(f"quantize() makes int8 models, not {dtype!r} (for float16 use model.half())")
    with tempfile.TemporaryDirectory(prefix="torchclip-int8-") as scratch:
        export_onnx(model, Path(scratch) / "int8", dtype="int8")
        return load_onnx(Path(scratch) / "int8", providers, threads)  # the sessions hold the graphs in memory


def agreement_with(
    model: Any, reference: Any, processor: Any, split: str = "heldout", per_class: int = 10, seed: int = 1234
) -> dict[str, float]:
    """What a cheaper `model` (int8, fp16, another backend) costs against `reference` on the synthetic
    zero-shot evaluation (`torchclip.evaluate.synthetic_zero_shot`'s images, classes and prompts): both
    top-1 accuracies, the fraction of images given the same class, and the cosine of the two models'
    image and class embeddings (mean and min)."""
    classes = [composition_name(c, s) for c, s in all_compositions()]
    world = SyntheticCaptions(seed=seed, split=split)
    examples = [world.example(index) for index in range(per_class * len(world.pairs))]
    images, labels = [image for image, _ in examples], [classes.index(name) for _, name in examples]
    results, embeddings = {}, {}
    for name, candidate in (("model", model), ("reference", reference)):
        class_embeds = zero_shot_classifier(candidate, processor.tokenizer, classes, synthetic_templates())
        image_embeds = embed_images(candidate, processor.image_processor, images)
        embeddings[name] = (image_embeds, class_embeds)
        results[name] = (image_embeds @ class_embeds.t()).argmax(dim=-1)
    truth = torch.tensor(labels)
    image_cos = (embeddings["model"][0] * embeddings["reference"][0]).sum(-1)
    class_cos = (embeddings["model"][1] * embeddings["reference"][1]).sum(-1)
    return {
        "images": len(images),
        "top1": float((results["model"] == truth).float().mean()),
        "reference_top1": float((results["reference"] == truth).float().mean()),
        "agreement": float((results["model"] == results["reference"]).float().mean()),
        "image_cosine_mean": float(image_cos.mean()),
        "image_cosine_min": float(image_cos.min()),
        "text_cosine_mean": float(class_cos.mean()),
        "text_cosine_min": float(class_cos.min()),
    }
