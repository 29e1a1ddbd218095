"""ONNX export and the ONNX Runtime backend: parity with PyTorch (itself at parity with transformers, see
test_modeling_parity.py and test_resnet.py) on four configs, the exporter's refusal, and the command line.

Exporting is slow (the dynamo exporter traces each tower: seconds even for tiny ones), so each config is
exported once per module and shared by its tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import torchclip
from torchclip.cli import main
from torchclip.config import CLIPResNetVisionConfig
from torchclip.deploy import onnx_export
from torchclip.deploy.onnx_export import ExportVerificationError, export_onnx
from torchclip.hub import bundled_model_path

TOLERANCE = 1e-4  # the fp32 bound of docs/deployment.md

SMALL_VISION = dict(hidden_size=48, intermediate_size=75, num_hidden_layers=2, num_attention_heads=6, image_size=64)
CONFIGS = {
    # the default ViT-B/32 config's shape (QuickGELU, OpenAI's vocabulary and 77 positions, eos-id pooling), small
    "default-shaped": dict(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=32),
        projection_dim=16,
    ),
    "odd-gelu": dict(
        text_config=dict(vocab_size=1000, hidden_size=40, intermediate_size=75, num_hidden_layers=2,
                         num_attention_heads=5, max_position_embeddings=33, bos_token_id=998, eos_token_id=999,
                         hidden_act="gelu"),
        vision_config={**SMALL_VISION, "patch_size": 16, "hidden_act": "gelu"},
        projection_dim=24,
    ),
    "legacy-eos-2": dict(  # pools at the largest token id
        text_config=dict(vocab_size=1000, hidden_size=40, intermediate_size=75, num_hidden_layers=2,
                         num_attention_heads=5, eos_token_id=2, bos_token_id=0, pad_token_id=1),
        vision_config={**SMALL_VISION, "patch_size": 32},
        projection_dim=24,
    ),
    "resnet": dict(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=298, eos_token_id=299),
        vision_config=CLIPResNetVisionConfig(layers=(1, 1, 1, 1), width=8, heads=4, output_dim=24, image_size=64),
        projection_dim=24,
    ),
}  # fmt: skip


def random_model(name: str, seed: int = 0) -> torchclip.CLIPModel:
    torch.manual_seed(seed)
    model = torchclip.CLIPModel(torchclip.CLIPConfig(**CONFIGS[name])).eval()
    with torch.no_grad():  # random biases, norms and BatchNorm statistics too, so that each is exercised
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.02)
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    model = random_model(request.param)
    folder = tmp_path_factory.mktemp(request.param) / "onnx"
    manifest = export_onnx(model, folder)
    return model, folder, manifest, torchclip.load_onnx(folder)


def text_batch(config, batch: int, to_max_length: bool, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` sequences of different lengths, start and end token included, padded on the left or the
    right to the longest or to the model's maximum length."""
    text = config.text_config
    end = text.vocab_size - 1 if text.eos_token_id == 2 else text.eos_token_id
    generator = torch.Generator().manual_seed(batch)
    longest = text.max_position_embeddings - 3 if batch == 1 else min(text.max_position_embeddings, 12)
    lengths = [longest - (row * 4) % (longest - 2) for row in range(batch)]
    width = text.max_position_embeddings if to_max_length else max(lengths)
    ids = torch.full((batch, width), text.pad_token_id if text.eos_token_id == 2 else end)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for row, used in enumerate(lengths):
        tokens = torch.randint(3, min(end, text.vocab_size - 2), (used,), generator=generator)
        tokens[0], tokens[-1] = text.bos_token_id, end
        where = slice(width - used, width) if left else slice(0, used)
        ids[row, where], mask[row, where] = tokens, 1
    return ids, mask


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("padded_to", ["longest", "max_length"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_text_tower_matches_pytorch(exported, batch, padded_to, side):
    model, _, _, encoder = exported
    ids, mask = text_batch(model.config, batch, padded_to == "max_length", side == "left")
    assert mask.min() == 0 or batch == 1 and padded_to == "longest"  # padding is really exercised
    with torch.no_grad():
        expected = model.get_text_features(ids, mask)
    got = encoder.get_text_features(ids, mask)
    assert got.shape == expected.shape and got.dtype == torch.float32
    error = (got - expected).abs().max().item()
    assert error <= TOLERANCE, f"max |onnx - torch| = {error:.3g}"


@pytest.mark.parametrize("batch", [1, 7])
def test_image_tower_matches_pytorch(exported, batch):
    model, _, _, encoder = exported
    size = model.config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model.get_image_features(pixels)
    got = encoder.get_image_features(pixels)
    error = (got - expected).abs().max().item()
    assert got.shape == expected.shape and error <= TOLERANCE, f"max |onnx - torch| = {error:.3g}"


def test_graphs_manifest_and_files(exported):
    model, folder, manifest, encoder = exported
    config = model.config
    on_disk = json.loads((folder / onnx_export.MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["projection_dim"] == config.projection_dim and manifest["opset"] == onnx_export.DEFAULT_OPSET
    assert manifest["dtype"] == "float32" and manifest["image_size"] == config.vision_config.image_size
    legacy = config.text_config.eos_token_id == 2
    assert manifest["pooling"].startswith("argmax") == legacy
    assert manifest["vision_tower"] == ("resnet" if isinstance(config.vision_config, CLIPResNetVisionConfig) else "vit")
    assert set(manifest["verification"]) == {"text", "vision"}
    assert torchclip.CLIPConfig.from_pretrained(folder).to_dict() == config.to_dict()
    assert float(encoder.logit_scale) == pytest.approx(model.logit_scale.item())
    text, vision = onnx.load(folder / "text_model.onnx").graph, onnx.load(folder / "vision_model.onnx").graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in text.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.output] == ["text_embeds"] and [o.name for o in vision.output] == ["image_embeds"]
    assert all(isinstance(d, str) for i in text.input for d in dims(i))  # batch and sequence are dynamic
    assert isinstance(dims(vision.input[0])[0], str) and dims(vision.input[0])[1:] == [3, 64, 64]
    assert dims(text.output[0])[1:] == dims(vision.output[0])[1:] == [config.projection_dim]


def test_exporter_refuses_graphs_that_differ_and_keeps_nothing(exported, tmp_path, monkeypatch):
    """The verification is what stands between a wrong graph and the user: here the "exported" graphs are a
    slightly different model's (one weight moved by 1e-3), and the export must fail and leave nothing."""
    model, folder, _, _ = exported
    perturbed = random_model(next(name for name, c in CONFIGS.items() if torchclip.CLIPConfig(**c).to_dict()
                                  == model.config.to_dict()))  # fmt: skip
    with torch.no_grad():
        perturbed.text_projection.weight[0, 0] += 1e-3
        next(perturbed.vision_model.parameters()).view(-1)[0] += 1e-3

    def copy_graph(module, inputs, path, *args, **kwargs):
        shutil.copy(folder / path.name, path)

    monkeypatch.setattr(onnx_export, "_export_graph", copy_graph)
    target = tmp_path / "out"
    with pytest.raises(ExportVerificationError, match="text tower: max"):
        export_onnx(perturbed, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    export_onnx(model, target)  # the same graphs, verified against their own model, are kept
    assert (target / "text_model.onnx").is_file()


def test_float16_export_is_within_its_documented_bound(tmp_path):
    model = random_model("odd-gelu")
    manifest = export_onnx(model, tmp_path / "fp16", dtype="float16")
    encoder = torchclip.load_onnx(tmp_path / "fp16")
    ids, mask = text_batch(model.config, 7, True, True)
    # padded with a token that is not the end token: where the end token pads on the left, the reference pools
    # a padding position that sees nothing, whose fp16 state is not the fp32 one (see docs/deployment.md)
    ids[mask == 0] = 0
    pixels = torch.randn(7, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pairs = [
            (encoder.get_text_features(ids, mask), model.get_text_features(ids, mask)),
            (encoder.get_image_features(pixels), model.get_image_features(pixels)),
        ]
    for got, expected in pairs:
        error, scale = (got - expected).abs().max().item(), expected.abs().max().item()
        assert 1e-5 < error <= onnx_export.FP16_RELATIVE_TOLERANCE * scale  # fp16 really, and within the bound
    assert manifest["dtype"] == "float16" and 0 < manifest["verification"]["text"] < 1e-2
    graph = onnx.load(tmp_path / "fp16" / "vision_model.onnx").graph
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)


def test_export_refuses_an_existing_folder_and_unknown_dtypes(exported, tmp_path):
    model, folder, _, _ = exported
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(model, folder)
    with pytest.raises(ValueError, match="bfloat16"):
        export_onnx(model, tmp_path / "x", dtype="bfloat16")
    with pytest.raises(FileNotFoundError, match="not an ONNX export"):
        torchclip.load_onnx(tmp_path)


# ---------------------------------------------------------------------- the command line, bundled model

DEMO_IMAGES = sorted(str(p) for p in (bundled_model_path().parent / "demo_images").glob("*.png"))
LABELS = ["red circle", "blue square", "green star", "yellow triangle"]


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled") / "onnx"
    assert main(["export", str(bundled_model_path()), str(out)]) == 0  # a folder name: --format onnx by default
    return out


def cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_export_writes_graphs_processor_and_manifest(bundled_onnx):
    names = {p.name for p in bundled_onnx.iterdir()}
    assert {"text_model.onnx", "vision_model.onnx", "onnx_manifest.json", "config.json"} <= names
    assert {"preprocessor_config.json", "tokenizer_config.json", "vocab.json", "merges.txt"} <= names
    assert not [p for p in bundled_onnx.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_cli_onnx_backend_equals_torch_backend(bundled_onnx, capsys, tmp_path):
    onnx_model = ["--backend", "onnx", "--model", str(bundled_onnx)]
    classify = ["classify", *DEMO_IMAGES, "--labels", *LABELS, "--json"]
    torch_ranks, onnx_ranks = cli_json(capsys, *classify), cli_json(capsys, *classify, *onnx_model)
    assert [r["image"] for r in onnx_ranks] == [r["image"] for r in torch_ranks]
    for ours, theirs in zip(onnx_ranks, torch_ranks):
        assert [e["label"] for e in ours["labels"]] == [e["label"] for e in theirs["labels"]]
        assert np.allclose([e["score"] for e in ours["labels"]], [e["score"] for e in theirs["labels"]], atol=1e-4)
    similarity = ["similarity", *DEMO_IMAGES[:3], "--texts", *LABELS, "--json"]
    torch_sim = cli_json(capsys, *similarity)["similarity"]
    onnx_sim = cli_json(capsys, *similarity, *onnx_model)["similarity"]
    assert np.abs(np.array(onnx_sim) - np.array(torch_sim)).max() <= 1e-5
    # a store embedded by one backend is searched by the other (the export records its model's fingerprint)
    store = tmp_path / "store"
    folder = Path(DEMO_IMAGES[0]).parent
    assert main(["embed", str(folder), "--out", str(store), "--quiet", *onnx_model]) == 0
    search = ["search", str(store), "a red circle", "--image", DEMO_IMAGES[1], "-k", "3", "--json"]
    torch_hits = cli_json(capsys, *search, "--model", str(bundled_model_path()))
    onnx_hits = cli_json(capsys, *search, *onnx_model)
    for ours, theirs in zip(onnx_hits, torch_hits):
        assert [h["key"] for h in ours["results"]] == [h["key"] for h in theirs["results"]]
        assert np.allclose([h["score"] for h in ours["results"]], [h["score"] for h in theirs["results"]], atol=1e-5)


def test_cli_onnx_backend_errors_are_clear(bundled_onnx, capsys):
    assert main(["classify", DEMO_IMAGES[0], "--labels", "a", "b", "--backend", "onnx"]) == 2
    assert "--backend onnx needs --model" in capsys.readouterr().err
    args = ["classify", DEMO_IMAGES[0], "--labels", "a", "b", "--backend", "onnx", "--model", str(bundled_onnx)]
    assert main([*args, "--dtype", "bfloat16"]) == 2
    assert "export with --dtype bfloat16" in capsys.readouterr().err
    assert main(["export", str(bundled_model_path()), str(bundled_onnx.parent / "x.pt"), "--dtype", "int8"]) == 2
    assert "--dtype int8 applies to --format onnx" in capsys.readouterr().err


def test_onnx_backend_does_not_import_the_store():
    """Lance, once imported, warns at every fork, and `--backend onnx` commands fork image-decoding workers:
    the export's manifest imports the store only when it writes one."""
    code = "import sys, torchclip.deploy.onnx_runtime; print('lance' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_serve_onnx_backend_answers_as_the_torch_backend(bundled_onnx, tmp_path):
    """`torchclip serve --backend onnx`: the service embeds queries with the export and ranks as with PyTorch."""
    from starlette.testclient import TestClient

    from torchclip.serve.app import ServeSettings, create_app

    store = tmp_path / "store"
    assert main(["embed", str(Path(DEMO_IMAGES[0]).parent), "--out", str(store), "--quiet"]) == 0
    answers = {}
    for backend, model in (("torch", None), ("onnx", str(bundled_onnx))):
        settings = ServeSettings(store=str(store), model=model, backend=backend, thumbnail_cache=str(tmp_path / "t"))
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            response = client.post("/api/search", json={"text": "a red circle", "k": 4})
            assert response.status_code == 200, response.text
            answers[backend] = response.json()["results"]
    assert [r["key"] for r in answers["onnx"]] == [r["key"] for r in answers["torch"]]
    assert np.allclose([r["score"] for r in answers["onnx"]], [r["score"] for r in answers["torch"]], atol=1e-5)
