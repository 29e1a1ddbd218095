"""Each bad checkpoint gets a clear error naming what was found, and no output folder is left half-written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import torchclip
from torchclip.checkpoint import CheckpointError
from torchclip.convert import convert_checkpoint, load

DATA = Path(__file__).parent / "data" / "convert"
VIT_ARCHIVE = DATA / "vit_jit.pt"

pytestmark = [
    pytest.mark.filterwarnings("ignore:the model's vocabulary has 300 tokens"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def vit_state() -> dict[str, torch.Tensor]:
    state = torch.jit.load(str(VIT_ARCHIVE), map_location="cpu").state_dict()
    return {key: value.float() for key, value in state.items() if key != "attn_mask"}


def saved(tmp_path: Path, content: object, name: str = "model.pt") -> Path:
    torch.save(content, tmp_path / name)
    return tmp_path / name


def converting_leaves_nothing(path: Path, tmp_path: Path, match: str, **kwargs) -> None:
    """convert_checkpoint fails with `match` and writes neither the output folder nor temporary files."""
    out = tmp_path / "out"
    before = set(tmp_path.iterdir())
    with pytest.raises((CheckpointError, ValueError, OSError), match=match):
        convert_checkpoint(path, out, **kwargs)
    assert set(tmp_path.iterdir()) == before


def test_unknown_layout_names_the_keys_found(tmp_path):
    path = saved(tmp_path, {"encoder.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)})
    converting_leaves_nothing(
        path, tmp_path, r"not a CLIP checkpoint in OpenAI's layout.*an unknown layout: decoder.bias, encoder.weight"
    )


@pytest.mark.parametrize(
    "keys, family",
    [
        (["visual.trunk.stem.0.weight", "text_projection", "token_embedding.weight"], "timm image tower"),
        (["text.transformer.resblocks.0.ln_1.weight", "visual.conv1.weight", "logit_scale"], "CustomTextCLIP"),
        (["logit_bias", "logit_scale", "visual.trunk.patch_embed.proj.weight"], "SigLIP-style"),
        (
            ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"],
            "Stable Diffusion",
        ),
        (["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight"], "BERT-style"),
        (
            ["text_model.embeddings.token_embedding.weight", "vision_model.pre_layrnorm.weight"],
            "HF layout: pass its folder",
        ),
    ],
)
def test_other_model_families_are_named(tmp_path, keys, family):
    path = saved(tmp_path, {key: torch.zeros(2) for key in keys})
    converting_leaves_nothing(path, tmp_path, family, activation="gelu")


def test_hf_folder_of_another_family_is_named(tmp_path):
    folder = tmp_path / "siglip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    with pytest.raises(CheckpointError, match="model_type 'siglip', another model family"):
        load(folder)


def test_position_grid_that_is_not_square(tmp_path, vit_state):
    state = {**vit_state, "visual.positional_embedding": torch.zeros(19, 128)}
    converting_leaves_nothing(
        saved(tmp_path, state),
        tmp_path,
        "visual.positional_embedding has 19 positions, not a square grid",
        activation="gelu",
    )


def test_width_that_fits_no_head_count(tmp_path, vit_state):
    state = {**vit_state, "token_embedding.weight": torch.zeros(300, 96), "ln_final.weight": torch.zeros(96)}
    converting_leaves_nothing(
        saved(tmp_path, state),
        tmp_path,
        "text transformer is 96 wide, not a multiple of the 64-channel",
        activation="gelu",
    )


def test_inconsistent_shapes_name_the_key(tmp_path, vit_state):
    state = {**vit_state, "visual.proj": torch.zeros(128, 32)}  # the text side projects to 64
    converting_leaves_nothing(
        saved(tmp_path, state),
        tmp_path,
        r"visual_projection.weight \(visual.proj in OpenAI's layout\)' has shape \[32, 128\]",
        activation="gelu",
    )


def test_missing_weights_are_named(tmp_path, vit_state):
    state = {key: value for key, value in vit_state.items() if not key.startswith("visual.ln_pre.")}  # as CLIPA
    converting_leaves_nothing(
        saved(tmp_path, state),
        tmp_path,
        r"weights missing.*pre_layrnorm.weight \(visual.ln_pre.weight in OpenAI's layout\)",
        activation="gelu",
    )


def test_keys_of_another_architecture_variant_are_refused(tmp_path, vit_state):
    """E.g. OpenCLIP's layer scale (ViT-M-16-alt): dropping those weights would silently change the model."""
    state = {**vit_state, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(128)}
    converting_leaves_nothing(
        saved(tmp_path, state), tmp_path, "does not have.*visual.transformer.resblocks.0.ls_1.gamma", activation="gelu"
    )


def test_truncated_torchscript_archive(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(VIT_ARCHIVE.read_bytes()[:300_000])
    converting_leaves_nothing(path, tmp_path, "ViT-B-32.pt: not a readable PyTorch checkpoint \\(truncated")


def test_truncated_safetensors(tmp_path, vit_state):
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in vit_state.items()}, path)
    path.write_bytes(path.read_bytes()[:100_000])
    converting_leaves_nothing(path, tmp_path, "model.safetensors: not a valid safetensors file", activation="gelu")


class Payload:
    """Stands for an arbitrary object in a pickle; unpickling it would run code of the pickle's choosing."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_arbitrary_objects_is_refused(tmp_path, vit_state):
    path = saved(tmp_path, {"state_dict": vit_state, "payload": Payload()})
    converting_leaves_nothing(path, tmp_path, "refused to load.*never unpickles arbitrary objects", activation="gelu")


def test_a_dict_that_is_not_weights(tmp_path):
    path = saved(tmp_path, {"state_dict": {"step": 3, "lr": 0.1}})
    converting_leaves_nothing(path, tmp_path, "entries that are not tensors: step, lr", activation="gelu")


def test_model_name_that_does_not_fit_the_weights(tmp_path, vit_state):
    converting_leaves_nothing(
        saved(tmp_path, vit_state),
        tmp_path,
        r"the weights are not a ViT-B-32: embed_dim 64 \(expected 512\), image_size 32 \(expected 224\)",
        model_name="ViT-B-32",
    )


def test_unknown_model_name(tmp_path, vit_state):
    converting_leaves_nothing(
        saved(tmp_path, vit_state), tmp_path, "unknown model name 'ViT-Z-99'", model_name="ViT-Z-99"
    )


def test_activation_contradicting_the_model_name(tmp_path, vit_state):
    converting_leaves_nothing(
        saved(tmp_path, vit_state),
        tmp_path,
        "activation='gelu' contradicts model name 'ViT-B-32-quickgelu'",
        activation="gelu",
        model_name="ViT-B-32-quickgelu",
    )


def test_unknown_activation(tmp_path, vit_state):
    converting_leaves_nothing(saved(tmp_path, vit_state), tmp_path, "activation must be one of", activation="relu")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file .*ViT-B-32.pt' does not exist"):
        load(tmp_path / "ViT-B-32.pt")


def test_failure_while_writing_leaves_no_folder(tmp_path, monkeypatch):
    def broken_save(self, folder):
        (Path(folder) / "vocab.json").write_text("{")  # part of the folder is already written
        raise OSError("disk full")

    monkeypatch.setattr(torchclip.CLIPProcessor, "save_pretrained", broken_save)
    converting_leaves_nothing(VIT_ARCHIVE, tmp_path, "disk full")


def test_activation_for_an_hf_folder_is_refused(tmp_path):
    folder = convert_checkpoint(VIT_ARCHIVE, tmp_path / "hf")
    with pytest.raises(ValueError, match="already says which activation"):
        load(folder, activation="gelu")


def test_openai_resnet_names_have_no_hub_copy():
    with pytest.raises(FileNotFoundError, match="OpenAI's RN50 has no copy on the model hub.*RN50.pt"):
        load("RN50")


def test_openai_vit_names_resolve_to_openais_hub_repositories(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-large-patch14-336"):
        load("ViT-L/14@336px")


def test_hf_folder_of_a_single_tower_is_named(tmp_path):
    folder = tmp_path / "vision"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(CheckpointError, match="model_type 'clip_vision_model', a single CLIP tower"):
        load(folder)
