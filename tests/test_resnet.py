"""The modified-ResNet image tower: save/load round trips, outputs, initialisation and input checks.

Parity with OpenAI's implementation (OpenCLIP's `ModifiedResNet`) is tested in test_convert.py against the
golden fixture; these tests cover what a ResNet CLIPModel must do like the ViT ones.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import torchclip
from torchclip.config import CLIPResNetVisionConfig
from torchclip.modeling.resnet import CLIPResNetVisionModel

RESNET = CLIPResNetVisionConfig(layers=(1, 2, 1, 1), width=8, heads=4, output_dim=32, image_size=64)
CONFIG = torchclip.CLIPConfig(
    text_config=dict(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=16, bos_token_id=298, eos_token_id=299, projection_dim=32,
    ),
    vision_config=RESNET,
    projection_dim=32,
)  # fmt: skip


def inputs(size: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[298, 5, 6, 299, 0], [298, 7, 8, 9, 299]])
    return dict(input_ids=ids, pixel_values=torch.randn(2, 3, size, size, generator=generator))


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight and BatchNorm statistic, so that a load that missed any would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = randomised(torchclip.CLIPModel(CONFIG))
    model.save_pretrained(tmp_path / "rn")
    return model, tmp_path / "rn"


def test_save_pretrained_from_pretrained_round_trip_is_exact(saved):
    model, folder = saved
    loaded = torchclip.CLIPModel.from_pretrained(folder)
    assert isinstance(loaded.vision_model, CLIPResNetVisionModel)
    assert loaded.config.to_dict() == model.config.to_dict()
    theirs = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key
    with torch.no_grad():
        assert torch.equal(model(**inputs()).logits_per_image, loaded(**inputs()).logits_per_image)


def test_checkpoint_keys_and_config_are_the_documented_ones(saved):
    _, folder = saved
    keys = set(load_file(folder / "model.safetensors"))
    for key in [
        "vision_model.stem.conv1.weight",
        "vision_model.stem.bn3.running_var",
        "vision_model.stages.0.0.downsample.conv.weight",  # widens 8 -> 32 channels without striding
        "vision_model.stages.1.0.downsample.bn.weight",
        "vision_model.stages.1.1.conv3.weight",
        "vision_model.stages.3.0.bn2.num_batches_tracked",
        "vision_model.attention_pool.position_embedding.weight",
        "vision_model.attention_pool.q_proj.weight",
        "vision_model.attention_pool.v_proj.bias",
        "vision_model.attention_pool.out_proj.weight",
    ]:
        assert key in keys, key
    assert "vision_model.stages.1.1.downsample.conv.weight" not in keys  # same size and width: no shortcut
    assert not any("in_proj" in key or key.startswith("visual_projection") for key in keys)
    vision = json.loads((folder / "config.json").read_text())["vision_config"]
    assert vision["model_type"] == "clip_resnet"
    assert (vision["layers"], vision["width"], vision["heads"], vision["output_dim"]) == ([1, 2, 1, 1], 8, 4, 32)


def test_tower_alone_round_trip_and_from_a_clip_folder(saved, tmp_path):
    model, folder = saved
    tower = CLIPResNetVisionModel.from_pretrained(folder, config=RESNET)
    pixels = inputs()["pixel_values"]
    with torch.no_grad():
        assert torch.equal(tower(pixels).pooler_output, model.get_image_features(pixels))
    tower.save_pretrained(tmp_path / "tower")
    again = CLIPResNetVisionModel.from_pretrained(tmp_path / "tower")
    with torch.no_grad():
        assert torch.equal(again(pixels).pooler_output, tower(pixels).pooler_output)


def test_outputs_shapes_and_attention_weights(saved):
    model, _ = saved
    tower = model.vision_model
    with torch.no_grad():
        out = tower(inputs()["pixel_values"], output_attentions=True, output_hidden_states=True)
        fast = tower.pooled_embedding(inputs()["pixel_values"])
    assert out.last_hidden_state.shape == (2, 2 * 2, 8 * 32)  # 64 px / 32 = a 2x2 map of width*32 channels
    assert [tuple(h.shape) for h in out.hidden_states] == [
        (2, 16 * 16, 8),  # stem: 1/4 of the size
        (2, 16 * 16, 32),
        (2, 8 * 8, 64),
        (2, 4 * 4, 128),
        (2, 2 * 2, 256),
    ]
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    (weights,) = out.attentions
    assert weights.shape == (2, 4, 1, 1 + 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 1))
    torch.testing.assert_close(out.pooler_output, fast, atol=1e-6, rtol=0)  # eager and fused attention agree
    assert len(tower(inputs()["pixel_values"], return_dict=False)) == 2


def test_interpolated_positions_for_other_sizes(saved):
    model, _ = saved
    pixels = inputs()["pixel_values"]
    with torch.no_grad():
        same = model.get_image_features(pixels, interpolate_pos_encoding=True)
        assert torch.equal(same, model.get_image_features(pixels))
        larger = model.get_image_features(inputs(96)["pixel_values"], interpolate_pos_encoding=True)
    assert larger.shape == (2, 32) and torch.isfinite(larger).all()
    with pytest.raises(ValueError, match="pixel_values are 96x96 but the model takes 64x64"):
        model.get_image_features(inputs(96)["pixel_values"])
    with pytest.raises(ValueError, match="pixel_values are 80x80; the ResNet tower needs multiples of 32"):
        model.get_image_features(inputs(80)["pixel_values"], interpolate_pos_encoding=True)


def test_openai_initialisation():
    torch.manual_seed(0)
    first = torchclip.CLIPModel(CONFIG)
    torch.manual_seed(0)
    second = torchclip.CLIPModel(CONFIG)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), f"{name}: initialisation is not seeded"
    tower = first.vision_model
    for stage in tower.stages:
        for block in stage:
            assert torch.equal(block.bn3.weight, torch.zeros_like(block.bn3.weight))  # each block starts as identity
    channels = RESNET.width * 32
    pool = tower.attention_pool.state_dict()
    for name in ["q_proj.weight", "k_proj.weight", "out_proj.weight", "position_embedding.weight"]:
        assert abs(pool[name].std().item() - channels**-0.5) < 0.1 * channels**-0.5, name


def test_bfloat16_inference_runs(saved):
    _, folder = saved
    model = torchclip.CLIPModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    with torch.no_grad():
        logits = model(**inputs()).logits_per_image
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_bad_configs():
    with pytest.raises(ValueError, match="image_size must be a multiple of 32, got 100"):
        CLIPResNetVisionModel(CLIPResNetVisionConfig(image_size=100))
    with pytest.raises(ValueError, match="256 channels do not split into 3 heads"):
        CLIPResNetVisionModel(CLIPResNetVisionConfig(width=8, heads=3, image_size=64))
    with pytest.raises(ValueError, match="needs pixel_values"):
        CLIPResNetVisionModel(RESNET)()


def test_fine_tuning_at_another_image_size_refuses_a_resnet_tower():
    """`image_size` resizes a ViT's patch-grid position embeddings; a ResNet tower has none to resize, so the
    trainer refuses it by name rather than training at a size the model was not set up for."""
    from torchclip.train.model import resize_image_input

    model = torchclip.CLIPModel(CONFIG)
    processor = torchclip.CLIPProcessor(torchclip.CLIPImageProcessor(size=64, crop_size=64))
    with pytest.raises(ValueError, match="image_size resizes a ViT image tower's input, not a clip_resnet one"):
        resize_image_input(model, processor, 96)
    assert processor.image_processor.size == {"shortest_edge": 64}  # nothing changed
