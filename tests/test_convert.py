"""Checkpoints in OpenAI's and OpenCLIP's formats against golden outputs of the reference implementation.

The fixtures in tests/data/convert/ come from scripts/make_convert_fixtures.py, which builds tiny CLIP models
with OpenCLIP's model code (OpenAI's architecture, ViT and modified ResNet) and records their outputs. Every
format a user meets is made here from those weights: OpenAI's TorchScript archive, plain state dicts, OpenCLIP
training checkpoints (`{"state_dict": ...}`, DDP's `module.` prefix), `.bin` and `.safetensors`.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

import torchclip
from torchclip.cli import main
from torchclip.config import CLIPResNetVisionConfig
from torchclip.convert import convert_checkpoint, export_openai, load
from torchclip.convert.openclip import ARCHITECTURES, OPENAI_MODELS, architecture, available_models

DATA = Path(__file__).parent / "data" / "convert"
VIT_ARCHIVE = DATA / "vit_jit.pt"
RN_FILE = DATA / "rn.pt"
ATOL = 1e-5

pytestmark = [
    pytest.mark.filterwarnings("ignore:the model's vocabulary has 300 tokens"),  # tiny vocabularies
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def vit_state() -> dict[str, torch.Tensor]:
    """The archive's weights as OpenAI's plain state-dict files hold them (mixed float16 / float32)."""
    return dict(torch.jit.load(str(VIT_ARCHIVE), map_location="cpu").state_dict())


def check_against(model, reference: dict[str, torch.Tensor], name: str) -> None:
    """Image features, text features and logits all within ATOL of the reference's."""
    pixels = reference[f"{name.split('_')[0]}.pixel_values"]
    ids = reference["input_ids"]
    with torch.no_grad():
        image, text = model.get_image_features(pixels), model.get_text_features(ids)
        logits = model(input_ids=ids, pixel_values=pixels).logits_per_image
    for label, ours in [("image_features", image), ("text_features", text), ("logits_per_image", logits)]:
        ours = getattr(ours, "pooler_output", ours)  # transformers 5 wraps the features
        theirs = reference[f"{name}.{label}"]
        assert ours.shape == theirs.shape, f"{name}.{label}"
        difference = (ours - theirs).abs().max().item()
        assert difference <= ATOL, f"{name}.{label}: max difference {difference:.2e}"


# ----------------------------------------------------------------------------------------------------
# OpenAI's formats


def test_torchscript_archive_matches_the_reference_and_its_architecture(reference):
    model, processor = load(VIT_ARCHIVE)  # an archive is OpenAI's own: QuickGELU without being told
    check_against(model, reference, "vit")
    arch = json.loads((DATA / "architectures.json").read_text())
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.vocab_size, text.max_position_embeddings) == (
        arch["text"]["vocab_size"],
        arch["text"]["context_length"],
    )
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (
        arch["text"]["width"],
        arch["text"]["layers"],
        arch["text"]["heads"],
    )
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (
        arch["vit"]["width"],
        arch["vit"]["layers"],
        arch["vit"]["patch_size"],
        arch["vit"]["image_size"],
    )
    assert vision.num_attention_heads == arch["vit"]["width"] // arch["vit"]["head_width"]
    assert model.config.projection_dim == arch["embed_dim"]
    assert text.hidden_act == vision.hidden_act == "quick_gelu"
    assert processor.image_processor.crop_size == {"height": 32, "width": 32}
    assert processor.tokenizer.model_max_length == 16
    assert not model.training and model.dtype == torch.float32


def test_plain_openai_state_dict_needs_the_activation_named(reference, vit_state, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    torch.save(vit_state, path)
    with pytest.raises(ValueError, match="does not say which activation.*activation='quick_gelu' or 'gelu'"):
        load(path)
    model, _ = load(path, activation="quick_gelu")
    check_against(model, reference, "vit")


def test_openai_metadata_keys_mark_openai_weights(reference, vit_state, tmp_path):
    """OpenAI's archives carry input_resolution / context_length / vocab_size; a state dict saved from one does."""
    metadata = {
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(16),
        "vocab_size": torch.tensor(300),
    }
    path = tmp_path / "from_archive.pt"
    torch.save({**vit_state, **metadata}, path)
    model, _ = load(path)
    check_against(model, reference, "vit")


def test_resnet_state_dict_matches_the_reference(reference):
    model, processor = load(RN_FILE, activation="quick_gelu")
    check_against(model, reference, "rn")
    arch = json.loads((DATA / "architectures.json").read_text())["rn"]
    vision = model.config.vision_config
    assert isinstance(vision, CLIPResNetVisionConfig)
    assert (list(vision.layers), vision.width, vision.heads, vision.image_size) == (
        arch["layers"],
        arch["width"],
        arch["heads"],
        arch["image_size"],
    )
    assert processor.image_processor.crop_size == {"height": 64, "width": 64}


def test_resnet_state_dict_without_batch_counts_loads(reference, tmp_path):
    state = torch.load(RN_FILE, weights_only=True)
    path = tmp_path / "rn_no_counts.pt"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    model, _ = load(path, activation="quick_gelu")
    check_against(model, reference, "rn")


def saved_on_gpu(path: Path, out: Path) -> Path:
    """A copy of a torch zip file (TorchScript or torch.save) whose pickles place every tensor on cuda:0.

    Storage locations are pickled as the string 'cpu' (memoised, so written once per pickle); this rewrites
    it as an archive saved from a GPU has it.
    """
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # pickle protocol 2 strings
    replaced = 0
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith(".pkl"):
                replaced += data.count(cpu)
                data = data.replace(cpu, cuda)
            target.writestr(name, data)
    assert replaced, f"{path}: no storage location found to rewrite"
    return out


def test_files_saved_on_a_gpu_load_on_the_cpu(reference, vit_state, tmp_path):
    archive = saved_on_gpu(VIT_ARCHIVE, tmp_path / "ViT-cuda.pt")
    torch.save(vit_state, tmp_path / "plain.pt")
    plain = saved_on_gpu(tmp_path / "plain.pt", tmp_path / "plain-cuda.pt")
    if not torch.cuda.is_available():  # the files really name CUDA: loading them as they are fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(plain, weights_only=True)
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.jit.load(str(archive))
    check_against(load(archive)[0], reference, "vit")
    check_against(load(plain, activation="quick_gelu")[0], reference, "vit")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_load_in_half_precision(dtype):
    model, _ = load(VIT_ARCHIVE, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}


@pytest.mark.parametrize("has_kernels", [False, True])
def test_load_warns_of_bf16_on_a_cpu_without_bf16_kernels(monkeypatch, has_kernels):
    """Without oneDNN's bf16 kernels (AVX2-only CPUs) bf16 runs several times slower than fp32: say so."""
    monkeypatch.setattr("torchclip.convert.loading.cpu_has_bf16_kernels", lambda: has_kernels)

    def slow_warnings(dtype: torch.dtype) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load(VIT_ARCHIVE, dtype=dtype)
        return sum("bfloat16 on this CPU runs several times slower" in str(w.message) for w in caught)

    assert slow_warnings(torch.float32) == slow_warnings(torch.float16) == 0  # only bf16 is slow there
    assert slow_warnings(torch.bfloat16) == (0 if has_kernels else 1)


# ----------------------------------------------------------------------------------------------------
# OpenCLIP's formats


def openclip_files(state: dict[str, torch.Tensor], folder: Path) -> dict[str, Path]:
    """The same fp32 weights in each form OpenCLIP checkpoints are published or saved in."""
    state = {key: value.float() for key, value in state.items() if key != "attn_mask"}
    files = {
        "plain.pt": state,
        "open_clip_pytorch_model.bin": state,
        # what OpenCLIP's training script saves under DDP
        "epoch_3.pt": {
            "epoch": 3,
            "name": "tiny",
            "state_dict": {f"module.{key}": value for key, value in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        },
        "wrapped_no_ddp.pt": {"state_dict": state},
    }
    paths = {}
    for name, content in files.items():
        torch.save(content, folder / name)
        paths[name] = folder / name
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "open_clip_model.safetensors")
    paths["open_clip_model.safetensors"] = folder / "open_clip_model.safetensors"
    return paths


def test_openclip_files_in_every_form_load_with_gelu(reference, vit_state, tmp_path):
    for name, path in openclip_files(vit_state, tmp_path).items():
        with pytest.raises(ValueError, match="does not say which activation"):
            load(path)
        model, _ = load(path, activation="gelu")
        assert model.config.text_config.hidden_act == model.config.vision_config.hidden_act == "gelu", name
        check_against(model, reference, "vit_gelu")


def test_model_names_imply_the_activation_openclip_configs_give():
    """OpenCLIP's configs say `quick_gelu: true` exactly for its -quickgelu names; OpenAI's names mean QuickGELU.

    RN50, RN101, ... are both: as OpenAI's names they mean QuickGELU (all published ResNet CLIP weights use it).
    """
    configs = json.loads((DATA / "openclip_configs.json").read_text())
    for name, config in configs.items():
        if name.removesuffix("-quickgelu") in ARCHITECTURES and name not in OPENAI_MODELS:
            expected = "quick_gelu" if config.get("quick_gelu") else "gelu"
            assert architecture(name)[1] == expected, name
    for name in OPENAI_MODELS:
        assert architecture(name)[1] == "quick_gelu", name


def test_architecture_table_matches_openclip_configs():
    configs = json.loads((DATA / "openclip_configs.json").read_text())
    for name, arch in ARCHITECTURES.items():
        config = configs[name]
        vision, text = config["vision_cfg"], config["text_cfg"]
        layers = vision["layers"]
        assert arch.vision_layers == (tuple(layers) if isinstance(layers, list) else layers), name
        assert (arch.embed_dim, arch.image_size, arch.vision_width) == (
            config["embed_dim"],
            vision["image_size"],
            vision["width"],
        ), name
        assert arch.patch_size == vision.get("patch_size"), name
        assert arch.head_width == vision.get("head_width", 64), name
        assert (arch.text_width, arch.text_layers) == (text["width"], text["layers"]), name
        assert text["heads"] * 64 == text["width"], f"{name}: text heads follow OpenAI's 64-channel rule"
        assert (arch.context_length, arch.vocab_size) == (text["context_length"], text["vocab_size"]), name


def test_openclip_models_left_out_have_features_torchclip_does_not_implement():
    configs = json.loads((DATA / "openclip_configs.json").read_text())
    vision_features = ("ls_init_value", "no_ln_pre", "attentional_pool", "final_ln_after_pool")
    for name, config in configs.items():
        if name.removesuffix("-quickgelu") in ARCHITECTURES:
            continue
        vision, text = config["vision_cfg"], config["text_cfg"]
        unsupported = [key for key in vision_features if vision.get(key)] + [
            key for key in ("hf_tokenizer_name", "no_causal_mask", "proj_bias", "ls_init_value") if text.get(key)
        ]
        unsupported += ["text pool_type"] if text.get("pool_type", "argmax") != "argmax" else []
        assert unsupported, f"{name} is plain CLIP but missing from torchclip's architecture table"


def test_available_models_lists_openai_and_openclip_names():
    names = available_models()
    assert names[:9] == [
        "RN50",
        "RN101",
        "RN50x4",
        "RN50x16",
        "RN50x64",
        "ViT-B/32",
        "ViT-B/16",
        "ViT-L/14",
        "ViT-L/14@336px",
    ]
    assert {"ViT-B-32", "ViT-B-32-quickgelu", "ViT-H-14", "ViT-bigG-14", "ViT-L-14-336"} <= set(names)
    assert torchclip.available_models() == names


# ----------------------------------------------------------------------------------------------------
# Conversion to the HF folder layout and back


def test_openai_archive_to_hf_folder_loads_in_torchclip_and_transformers(reference, tmp_path):
    folder = convert_checkpoint(VIT_ARCHIVE, tmp_path / "out", activation="quick_gelu")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "merges.txt",
        "model.safetensors",
        "preprocessor_config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    theirs = transformers.CLIPModel.from_pretrained(folder).eval()
    check_against(theirs, reference, "vit")
    ours, processor = load(folder)
    check_against(ours, reference, "vit")
    image_processor = transformers.CLIPImageProcessor.from_pretrained(folder)
    assert (image_processor.crop_size["height"], image_processor.size["shortest_edge"]) == (32, 32)
    assert transformers.CLIPTokenizer.from_pretrained(folder).model_max_length == 16


def test_openclip_gelu_to_hf_folder_loads_in_transformers(reference, vit_state, tmp_path):
    path = openclip_files(vit_state, tmp_path)["epoch_3.pt"]
    folder = convert_checkpoint(path, tmp_path / "out", activation="gelu")
    assert json.loads((folder / "config.json").read_text())["text_config"]["hidden_act"] == "gelu"
    check_against(transformers.CLIPModel.from_pretrained(folder).eval(), reference, "vit_gelu")


def test_resnet_to_hf_folder_and_back(reference, tmp_path):
    folder = convert_checkpoint(RN_FILE, tmp_path / "out", activation="quick_gelu")
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "clip_resnet"
    model, _ = load(folder)
    check_against(model, reference, "rn")


@pytest.mark.parametrize("source", ["vit", "rn"])
def test_export_gives_back_the_original_tensors(source, vit_state, tmp_path):
    original = vit_state if source == "vit" else torch.load(RN_FILE, weights_only=True)
    original = {key: value for key, value in original.items() if key != "attn_mask"}
    path = tmp_path / "original.pt"
    torch.save(original, path)
    folder = convert_checkpoint(path, tmp_path / "hf", activation="quick_gelu")
    exported_path = export_openai(folder, tmp_path / "exported.pt")
    exported = torch.load(exported_path, weights_only=True)
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].shape == value.shape, key
        assert torch.equal(exported[key].to(value.dtype), value), key


def test_export_in_float16_as_safetensors_reloads(reference, tmp_path):
    model, _ = load(VIT_ARCHIVE)
    path = export_openai(model, tmp_path / "model.safetensors", dtype=torch.float16)
    reloaded, _ = load(path, activation="quick_gelu")
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    assert torch.equal(reloaded.logit_scale, model.logit_scale.half().float())


def test_export_refuses_what_the_openai_layout_cannot_express(tmp_path):
    config = torchclip.CLIPConfig(
        text_config=dict(hidden_size=128, num_attention_heads=4, vocab_size=300, max_position_embeddings=16),
        vision_config=dict(hidden_size=128, num_attention_heads=2, image_size=32, patch_size=16),
    )
    with pytest.raises(ValueError, match="text tower has 4 heads.*eos_token_id 49407"):
        export_openai(torchclip.CLIPModel(config), tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        convert_checkpoint(VIT_ARCHIVE, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    convert_checkpoint(VIT_ARCHIVE, out, overwrite=True)
    assert (out / "model.safetensors").is_file() and not (out / "mine.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ----------------------------------------------------------------------------------------------------
# Command line


def test_cli_convert_and_export(reference, vit_state, tmp_path, capsys):
    assert main(["convert", "openai", str(VIT_ARCHIVE), str(tmp_path / "hf")]) == 0
    assert "ViT/8, 32 px images, 16-token texts, quick_gelu" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "hf"), str(tmp_path / "openai.pt")]) == 0
    assert "load it with activation='quick_gelu'" in capsys.readouterr().out
    model, _ = load(tmp_path / "openai.pt", activation="quick_gelu")
    check_against(model, reference, "vit")

    openclip_file = openclip_files(vit_state, tmp_path)["epoch_3.pt"]
    assert main(["convert", "openclip", str(openclip_file), str(tmp_path / "oc")]) == 2
    assert "--activation" in capsys.readouterr().err
    assert not (tmp_path / "oc").exists()
    assert main(["convert", "openclip", str(openclip_file), str(tmp_path / "oc"), "--activation", "gelu"]) == 0
    check_against(load(tmp_path / "oc")[0], reference, "vit_gelu")


def test_cli_convert_openai_takes_no_activation(tmp_path, capsys):
    assert main(["convert", "openai", str(VIT_ARCHIVE), str(tmp_path / "hf"), "--activation", "gelu"]) == 2
    assert "for `convert openclip`" in capsys.readouterr().err


def test_image_size_from_the_position_grid_reaches_the_preprocessor(tmp_path):
    """ViT-L/14@336px's shape: a 24x24 grid of 14-pixel patches means 336-pixel images, in config and processor."""
    config = torchclip.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                         vocab_size=300, max_position_embeddings=16, eos_token_id=299, bos_token_id=298),
        vision_config=dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                           image_size=336, patch_size=14),
    )  # fmt: skip
    path = export_openai(torchclip.CLIPModel(config), tmp_path / "ViT-L-14-336px-shaped.pt")
    assert torch.load(path, weights_only=True)["visual.positional_embedding"].shape == (24 * 24 + 1, 64)
    folder = convert_checkpoint(path, tmp_path / "out", activation="quick_gelu")
    assert json.loads((folder / "config.json").read_text())["vision_config"]["image_size"] == 336
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"shortest_edge": 336}
    assert preprocessor["crop_size"] == {"height": 336, "width": 336}


def test_folder_without_processor_files_gets_the_standard_processor_sized_for_the_model(tmp_path):
    model, _ = load(RN_FILE, activation="quick_gelu")
    model.save_pretrained(tmp_path / "weights_only")  # config.json + model.safetensors, nothing else
    loaded, processor = load(tmp_path / "weights_only")
    assert isinstance(loaded.config.vision_config, CLIPResNetVisionConfig)
    assert processor.image_processor.crop_size == {"height": 64, "width": 64}
    assert processor.image_processor.size == {"shortest_edge": 64}
    assert processor.tokenizer.model_max_length == 16
