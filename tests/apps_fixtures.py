"""Shared by the application tests (zero-shot, pipeline, index, CLI): a tiny random CLIP, the bundled
model when it is there, and folders of small synthetic photos whose contents are known."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from torchclip.config import CLIPConfig
from torchclip.hub import bundled_model_path
from torchclip.image_processor import CLIPImageProcessor
from torchclip.modeling import CLIPModel
from torchclip.processor import CLIPProcessor
from torchclip.store import image_items, update_store
from torchclip.tokenizer import CLIPTokenizer

TINY = {
    "projection_dim": 32,
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "vision_config": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}


def tiny_model_and_processor(seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig.from_dict(TINY)).eval()
    return model, CLIPProcessor(CLIPImageProcessor(size=32, crop_size=32), CLIPTokenizer())


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    model, processor = tiny_model_and_processor(seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def has_bundled_model() -> bool:
    return (bundled_model_path() / "config.json").is_file()


def synthetic_photos(folder: Path, classes: list[str], per_class: int = 2, fmt: str = "JPEG") -> dict[Path, str]:
    """Single-object pictures of the given "colour shape" classes from the synthetic world (the bundled
    model's domain), saved under `folder`; returns {path: class}."""
    from torchclip.datasets.synthetic import SyntheticCaptions, all_compositions, composition_name

    world = SyntheticCaptions(seed=99, split="seen", image_size=64)
    pairs = [composition_name(c, s) for c, s in world.pairs]
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in classes:
        if name not in pairs:
            known = [composition_name(c, s) for c, s in all_compositions()]
            raise ValueError(f"{name!r} is not a trained composition; one of {known}")
        for k in range(per_class):
            image, label = world.example(pairs.index(name) + k * len(pairs))
            assert label == name
            path = folder / f"{name.replace(' ', '_')}_{k}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
            image.save(path, fmt)
            made[path] = name
    return made


def subprocess_env() -> dict[str, str]:
    """The environment for CLI subprocesses: few threads, so parallel test runs share the CPUs."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_update(store, source, model_and_processor, kind="image", items=None, **options):
    """`update_store` of `source` into `store` with small batches and commits, in this process, quietly;
    `items` default to the images under `source`."""
    model, processor = model_and_processor
    items = items if items is not None else image_items(source)
    options = dict(batch_size=2, num_workers=0, commit_every=4, progress=False) | options
    return update_store(store, items, model, processor, kind=kind, model_name="tiny", source=str(source), **options)
