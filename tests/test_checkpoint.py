"""Checkpoint folders in every published form, dtypes, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

import torchclip
from torchclip.checkpoint import CheckpointError

TINY = torchclip.CLIPConfig(
    text_config=dict(
        vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=298, eos_token_id=299,
    ),
    vision_config=dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16
    ),
    projection_dim=16,
)  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = torchclip.CLIPModel(TINY).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def inputs():
    ids = torch.tensor([[298, 5, 6, 299, 299], [298, 7, 8, 9, 299]])
    return dict(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))


def same_outputs(a, b, atol=0.0):
    with torch.no_grad():
        x, y = a(**inputs()), b(**inputs())
    return torch.allclose(x.logits_per_image, y.logits_per_image, atol=atol, rtol=0)


def test_config_json_round_trip_and_equality(tmp_path):
    TINY.save_pretrained(tmp_path)
    again = torchclip.CLIPConfig.from_pretrained(tmp_path)
    assert again == TINY
    assert json.loads(again.to_json_string()) == json.loads(TINY.to_json_string())
    assert torchclip.CLIPTextConfig.from_pretrained(tmp_path) == TINY.text_config  # a tower from a whole config


def test_defaults_are_vit_b_32():
    config = torchclip.CLIPConfig()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (512, 12, 8)
    assert (text.max_position_embeddings, text.vocab_size, text.hidden_act) == (77, 49408, "quick_gelu")
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.patch_size, vision.image_size, config.projection_dim) == (32, 224, 512)
    assert config.logit_scale_init_value == 2.6592


def test_transformers_4x_config_file_with_config_dicts(tmp_path):
    """The layout of the original hub files: *_config_dict wins, unknown keys are ignored."""
    legacy = {
        "_name_or_path": "openai/clip-vit-base-patch32",
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 512,
        "text_config": {"hidden_size": 512, "num_beams": 1, "do_sample": False, "eos_token_id": 2},
        "text_config_dict": {"hidden_size": 512, "eos_token_id": 2, "some_future_key": 1},
        "torch_dtype": "float32",
        "transformers_version": None,
        "vision_config": {"hidden_size": 999, "patch_size": 32},
        "vision_config_dict": {"hidden_size": 768, "patch_size": 16},
    }
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    config = torchclip.CLIPConfig.from_pretrained(tmp_path)
    assert config.text_config.eos_token_id == 2
    assert config.vision_config.hidden_size == 768 and config.vision_config.patch_size == 16


def test_from_text_vision_configs():
    config = torchclip.CLIPConfig.from_text_vision_configs(
        torchclip.CLIPTextConfig(hidden_size=64, num_attention_heads=4), torchclip.CLIPVisionConfig(patch_size=16)
    )
    assert config.text_config.hidden_size == 64 and config.vision_config.patch_size == 16


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        torchclip.CLIPTextConfig(hidden_size=30, num_attention_heads=4)


def test_save_load_round_trip_is_exact(saved):
    model, folder = saved
    again = torchclip.CLIPModel.from_pretrained(folder)
    assert same_outputs(model, again)
    keys = set(load_file(folder / "model.safetensors"))
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in keys  # the reference's key layout
    assert not any("in_proj" in key for key in keys)


def test_sharded_save_and_load(saved, tmp_path):
    model, _ = saved
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert sum(name.endswith(".safetensors") for name in files) > 1
    assert same_outputs(model, torchclip.CLIPModel.from_pretrained(tmp_path / "sharded"))
    model.save_pretrained(tmp_path / "sharded")  # re-saving unsharded removes the old shards
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["config.json", "model.safetensors"]


def test_pytorch_model_bin_with_legacy_position_ids(saved, tmp_path):
    model, folder = saved
    state = model.state_dict()
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]  # old files carry these buffers
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    shutil.copy(folder / "config.json", tmp_path / "bin")
    assert same_outputs(model, torchclip.CLIPModel.from_pretrained(tmp_path / "bin"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, "bfloat16"])
def test_torch_dtype(saved, dtype):
    model = torchclip.CLIPModel.from_pretrained(saved[1], torch_dtype=dtype)
    assert model.dtype == (torch.bfloat16 if dtype == "bfloat16" else dtype)
    with torch.no_grad():
        out = model(**inputs())
    assert torch.isfinite(out.logits_per_image).all()


def test_auto_dtype_keeps_the_checkpoint_dtype(saved, tmp_path):
    torchclip.CLIPModel.from_pretrained(saved[1], torch_dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert torchclip.CLIPModel.from_pretrained(tmp_path / "bf16", torch_dtype="auto").dtype == torch.bfloat16
    assert torchclip.CLIPModel.from_pretrained(tmp_path / "bf16").dtype == torch.float32


def test_loaded_model_has_no_random_init_and_is_in_eval_mode(saved):
    model = torchclip.CLIPModel.from_pretrained(saved[1])
    assert not model.training
    assert not any(p.is_meta for p in model.parameters())


def test_random_init_is_finite_and_seeded():
    torch.manual_seed(3)
    a = torchclip.CLIPModel(TINY)
    torch.manual_seed(3)
    b = torchclip.CLIPModel(TINY)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.isfinite(x).all() and torch.equal(x, y), name
    assert a.logit_scale.item() == pytest.approx(2.6592)


# ---------------------------------------------------------------------------------------------------
# Bad input: a clear error, and nothing half-loaded


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        torchclip.CLIPModel.from_pretrained(tmp_path / "nope")


def test_config_without_weights(saved):
    (saved[1] / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in .*model.safetensors"):
        torchclip.CLIPModel.from_pretrained(saved[1])


def test_weights_without_config(saved):
    (saved[1] / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        torchclip.CLIPModel.from_pretrained(saved[1])


def test_shapes_that_do_not_match_the_config_name_the_key(saved):
    config = json.loads((saved[1] / "config.json").read_text())
    config["vision_config"]["intermediate_size"] = 64
    (saved[1] / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'vision_model.encoder.layers.0.mlp.fc1.(weight|bias)' has shape \[48"):
        torchclip.CLIPModel.from_pretrained(saved[1])


def test_missing_keys_are_named(saved):
    state = load_file(saved[1] / "model.safetensors")
    del state["text_projection.weight"]
    from safetensors.torch import save_file

    save_file(state, saved[1] / "model.safetensors")
    with pytest.raises(CheckpointError, match="weights missing for CLIPModel: text_projection.weight"):
        torchclip.CLIPModel.from_pretrained(saved[1])


def test_truncated_safetensors(saved):
    path = saved[1] / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: not a valid safetensors file"):
        torchclip.CLIPModel.from_pretrained(saved[1])


class NotATensor:
    pass


def test_pickle_that_is_not_plain_tensors_is_refused(saved, tmp_path):
    (saved[1] / "model.safetensors").unlink()
    marker = tmp_path / "executed"
    payload = {"weight": NotATensor(), "exploit": marker}
    torch.save(payload, saved[1] / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: refused to load: it holds more than plain tensors"):
        torchclip.CLIPModel.from_pretrained(saved[1])
    assert not marker.exists()


def test_truncated_pytorch_bin(saved):
    state = torchclip.CLIPModel.from_pretrained(saved[1]).state_dict()
    (saved[1] / "model.safetensors").unlink()
    torch.save(state, saved[1] / "pytorch_model.bin")
    path = saved[1] / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        torchclip.CLIPModel.from_pretrained(saved[1])


def test_hub_id_without_huggingface_hub_says_what_was_looked_for(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-base-patch32.*huggingface_hub is not installed"):
        torchclip.CLIPModel.from_pretrained("openai/clip-vit-base-patch32")


def test_hub_id_not_in_cache_and_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="could not be resolved as a model-hub id"):
        torchclip.CLIPModel.from_pretrained("openai/clip-vit-base-patch32")


def test_save_leaves_no_temporary_files(saved):
    assert sorted(p.name for p in saved[1].iterdir()) == ["config.json", "model.safetensors"]


def test_hub_id_resolves_from_the_huggingface_hub_cache(saved, monkeypatch, tmp_path):
    """Offline, a hub id loads from huggingface_hub's cache layout (models--org--name/snapshots/REV)."""
    pytest.importorskip("huggingface_hub")
    model, folder = saved
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--tiny-clip" / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snapshot)
    (cache / "models--someorg--tiny-clip" / "refs").mkdir()
    (cache / "models--someorg--tiny-clip" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert same_outputs(model, torchclip.CLIPModel.from_pretrained("someorg/tiny-clip"))


def test_saved_files_get_ordinary_permissions(saved):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in saved[1].iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
