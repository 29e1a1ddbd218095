"""The drop-in API around the models: configs as transformers keeps them, the model's embedding and loading
switches, OpenAI's `clip` API, OpenCLIP's model names, and CLIPProcessor's call forms."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import torchclip
from torchclip.convert.openclip import available_models, resolve_activation

DATA = Path(__file__).parent / "data" / "convert"
TEXT = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16, bos_token_id=298, eos_token_id=299)  # fmt: skip
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=16)  # fmt: skip


def tiny(**kwargs) -> torchclip.CLIPConfig:
    return torchclip.CLIPConfig(text_config=dict(TEXT), vision_config=dict(VISION), projection_dim=16, **kwargs)


def inputs() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[298, 5, 6, 299, 299], [298, 7, 8, 9, 299]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels)


# ----------------------------------------------------------------------------------------------------
# Configs


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    config = torchclip.CLIPTextConfig(dropout=0.1, hidden_size=64, num_attention_heads=4, my_setting=[1, 2])
    assert (config.dropout, config.my_setting) == (0.1, [1, 2])
    config.to_json_file(tmp_path / "text.json")
    written = json.loads((tmp_path / "text.json").read_text())
    assert (written["dropout"], written["my_setting"], written["hidden_size"]) == (0.1, [1, 2], 64)
    again = torchclip.CLIPTextConfig.from_json_file(tmp_path / "text.json")
    assert again.to_dict() == config.to_dict() and again.dropout == 0.1
    whole = torchclip.CLIPConfig(text_config=config.to_dict(), vision_config={"dropout": 0.2}, extra=3)
    whole.save_pretrained(tmp_path / "clip")
    loaded = torchclip.CLIPConfig.from_pretrained(tmp_path / "clip", text_config={"vocab_size": 20})
    assert (loaded.text_config.dropout, loaded.vision_config.dropout, loaded.extra) == (0.1, 0.2, 3)
    assert (loaded.text_config.vocab_size, loaded.text_config.hidden_size) == (20, 64)  # only vocab_size changed
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):  # known keys still checked
        torchclip.CLIPTextConfig(hidden_size=30, num_attention_heads=4, dropout=0.1)


def test_transformers_reads_the_unknown_keys_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    torchclip.CLIPVisionConfig(dropout=0.25, image_size=64).save_pretrained(tmp_path)
    theirs = transformers.CLIPVisionConfig.from_pretrained(tmp_path)
    assert (theirs.dropout, theirs.image_size) == (0.25, 64)


def test_config_switches_apply_when_the_forward_arguments_are_left_out():
    torch.manual_seed(0)
    model = torchclip.CLIPModel(tiny(output_hidden_states=True)).eval()
    with torch.no_grad():
        out = model(**inputs())
        assert len(out.text_model_output.hidden_states) == 3 and out.vision_model_output.attentions is None
        assert model(**inputs(), output_hidden_states=False).text_model_output.hidden_states is None
        model.config.output_attentions = True
        assert len(model(**inputs()).vision_model_output.attentions) == 2
        model.config.return_dict = False
        assert isinstance(model(**inputs()), tuple) and not model.config.use_return_dict
        tower = torchclip.CLIPTextModel(torchclip.CLIPTextConfig(**TEXT, return_dict=False))
        assert isinstance(tower(inputs()["input_ids"]), tuple)


def test_num_labels_and_the_problem_types_of_the_classification_loss():
    config = tiny(num_labels=5)
    assert (len(config.id2label), len(config.label2id), config.num_labels) == (5, 5, 5)
    config.num_labels = 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and config.label2id["LABEL_2"] == 2
    torch.manual_seed(0)
    model = torchclip.CLIPForImageClassification(config).eval()
    pixels = inputs()["pixel_values"]
    with torch.no_grad():
        logits = model(pixels).logits
        single = model(pixels, labels=torch.tensor([0, 2])).loss
        multi = model(pixels, labels=torch.tensor([[1.0, 0, 1], [0, 1, 0]])).loss
        model.config.problem_type = "regression"
        regression = model(pixels, labels=torch.ones(2, 3)).loss
    assert torch.allclose(single, F.cross_entropy(logits, torch.tensor([0, 2])))
    assert torch.allclose(multi, F.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0, 1], [0, 1, 0]])))
    assert torch.allclose(regression, F.mse_loss(logits, torch.ones(2, 3)))


# ----------------------------------------------------------------------------------------------------
# Models


def test_input_embeddings_and_resizing():
    torch.manual_seed(0)
    model = torchclip.CLIPModel(tiny()).eval()
    embedding = model.get_input_embeddings()
    assert embedding is model.text_model.embeddings.token_embedding and model.get_output_embeddings() is None
    old = embedding.weight.detach().clone()
    resized = model.resize_token_embeddings(310)
    assert resized.weight.shape == (310, 32) and model.config.text_config.vocab_size == 310
    assert torch.equal(resized.weight[:300], old)
    assert torch.allclose(resized.weight[300:], old.mean(dim=0).expand(10, -1))
    assert model.resize_token_embeddings(311, pad_to_multiple_of=8).num_embeddings == 312
    with torch.no_grad():
        model(**inputs())  # still runs
    replacement = torch.nn.Embedding(300, 32)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    vision = torchclip.CLIPVisionModel(torchclip.CLIPVisionConfig(**VISION))
    assert isinstance(vision.get_input_embeddings(), torch.nn.Conv2d)


def test_from_pretrained_attn_implementation_and_loading_info(tmp_path):
    torch.manual_seed(0)
    torchclip.CLIPModel(tiny()).save_pretrained(tmp_path)
    eager = torchclip.CLIPModel.from_pretrained(tmp_path, attn_implementation="eager")
    sdpa, info = torchclip.CLIPModel.from_pretrained(tmp_path, attn_implementation="sdpa", output_loading_info=True)
    assert eager.config._attn_implementation == "eager" and sdpa.text_model.config._attn_implementation == "sdpa"
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    with torch.no_grad():
        assert torch.equal(eager(**inputs()).logits_per_image, sdpa(**inputs()).logits_per_image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head, info = torchclip.CLIPForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    assert "logit_scale" in info["unexpected_keys"]
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        torchclip.CLIPModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    overridden = torchclip.CLIPModel.from_pretrained(tmp_path, output_hidden_states=True)
    assert overridden.config.output_hidden_states


# ----------------------------------------------------------------------------------------------------
# OpenAI's clip API and OpenCLIP's names


def test_openai_load_preprocess_and_forward():
    with pytest.raises(ValueError, match="jit=True"):
        torchclip.load(DATA / "vit_jit.pt", jit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model's vocabulary is not CLIP's
        model, preprocess = torchclip.load(DATA / "vit_jit.pt", device="cpu", jit=False)
    image = Image.open(Path(torchclip.__file__).parent / "data" / "demo_images" / "red_triangle.png")
    pixels = preprocess(image)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert torch.equal(pixels, preprocess(images=image, return_tensors="pt")["pixel_values"][0])
    text = torch.load(DATA / "reference.pt", weights_only=True)["input_ids"]  # zero-padded, no mask
    with torch.no_grad():
        logits_per_image, logits_per_text = model(pixels.unsqueeze(0), text)
        hf = model(input_ids=text, pixel_values=pixels.unsqueeze(0))  # the keyword API is unchanged
        assert torch.allclose(logits_per_image, hf.logits_per_image, atol=1e-5)
        assert torch.equal(logits_per_text, logits_per_image.t())
        assert torch.equal(model.encode_image(pixels[None]), model.get_image_features(pixels[None]))
        assert torch.equal(model.encode_text(text), model.get_text_features(text))


def test_available_models_once_and_rn50_is_ambiguous_for_openclip_files():
    names = available_models()
    assert len(names) == len(set(names)) and "RN50" in names and "RN50-quickgelu" in names
    assert torchclip.available_models() == names
    with pytest.raises(ValueError, match="ambiguous.*RN50-quickgelu"):
        resolve_activation(None, "RN50", openai_original=False, source="open_clip_rn50.pt")
    assert resolve_activation(None, "RN50", openai_original=True, source="RN50.pt")[0] == "quick_gelu"
    assert resolve_activation(None, "RN50-quickgelu", openai_original=False, source="x")[0] == "quick_gelu"
    assert resolve_activation("gelu", "RN50", openai_original=False, source="x")[0] == "gelu"
    assert resolve_activation(None, "ViT-B/32", openai_original=False, source="x")[0] == "quick_gelu"
    with pytest.raises(ValueError, match="ambiguous"):
        torchclip.load(DATA / "rn.pt", model_name="RN50")


# ----------------------------------------------------------------------------------------------------
# CLIPProcessor


def test_processor_call_forms_structured_kwargs_and_dict(tmp_path):
    processor = torchclip.CLIPProcessor()
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    plain = processor(text=["a cat", "a dog"], images=image, return_tensors="pt", padding=True)
    for call in (
        lambda: processor(["a cat", "a dog"], image, return_tensors="pt", padding=True),  # transformers 4's order
        lambda: processor(image, ["a cat", "a dog"], return_tensors="pt", padding=True),  # transformers 5's order
        lambda: processor(text=["a cat", "a dog"], images=image, text_kwargs={"padding": True},
                          common_kwargs={"return_tensors": "pt"}),  # fmt: skip
        lambda: processor(text=["a cat", "a dog"], images=[[image]], padding=True, return_tensors="pt"),
    ):
        result = call()
        assert all(torch.equal(result[key], plain[key]) for key in plain)
    with pytest.raises(ValueError, match="'padding' given twice"):
        processor(text="a", padding=True, text_kwargs={"padding": "max_length"})
    assert json.loads(processor.to_json_string()) == processor.to_dict()
    assert processor.to_dict()["image_processor"]["crop_size"] == {"height": 224, "width": 224}
    processor.save_pretrained(tmp_path)
    loaded = torchclip.CLIPProcessor.from_pretrained(tmp_path, padding_side="left", crop_size=32)
    assert loaded.tokenizer.padding_side == "left" and loaded.image_processor.crop_size["height"] == 32


def test_image_processor_input_data_format_nested_lists_and_json_file(tmp_path):
    processor = torchclip.CLIPImageProcessor(size=8, crop_size=8)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)  # 3 rows: the shape alone cannot tell
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    expected = processor(Image.fromarray(hwc), return_tensors="pt")["pixel_values"]
    for array, layout in [(hwc, "channels_last"), (chw, "channels_first"), (torch.from_numpy(chw), "channels_first")]:
        got = processor(array, input_data_format=layout, return_tensors="pt")["pixel_values"]
        assert torch.equal(got, expected), layout
    rgba = rng.integers(0, 256, size=(6, 7, 4), dtype=np.uint8)
    four = processor([[rgba], [Image.fromarray(rgba)]], input_data_format="channels_last", return_tensors="pt")
    assert four["pixel_values"].shape == (2, 3, 8, 8) and torch.equal(*four["pixel_values"])
    with pytest.raises(ValueError, match="input_data_format must be"):
        processor(hwc, input_data_format="sideways")
    processor.to_json_file(tmp_path / "preprocessor_config.json")
    assert torchclip.CLIPImageProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()
