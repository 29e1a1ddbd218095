"""Parity with the reference implementation (HF transformers) on identical random weights.

For each config the reference builds a model with random weights and saves it; torchclip loads that
folder and every output is compared (fp32, 1e-5). Then the reverse: torchclip saves, the reference loads.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import torchclip

ATOL = 1e-5

SMALL_TEXT = dict(
    vocab_size=1000,
    hidden_size=40,
    intermediate_size=75,
    num_hidden_layers=3,
    num_attention_heads=5,
    max_position_embeddings=33,
    bos_token_id=998,
    eos_token_id=999,
    projection_dim=24,
)
SMALL_VISION = dict(
    hidden_size=48,
    intermediate_size=75,
    num_hidden_layers=3,
    num_attention_heads=6,
    image_size=96,
    patch_size=16,
    projection_dim=24,
)
CONFIGS = {
    "default": {},
    "small-odd": dict(text_config=SMALL_TEXT, vision_config=SMALL_VISION, projection_dim=24),
    "gelu": dict(
        text_config={**SMALL_TEXT, "hidden_act": "gelu"},
        vision_config={**SMALL_VISION, "hidden_act": "gelu", "image_size": 64, "patch_size": 32},
        projection_dim=24,
    ),
    "legacy-eos-2": dict(
        text_config={**SMALL_TEXT, "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1},
        vision_config=SMALL_VISION,
        projection_dim=24,
        logit_scale_init_value=3.1,
    ),
}


def reference_model(name: str) -> transformers.CLIPModel:
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(**CONFIGS[name])).eval()
    model.set_attn_implementation("eager")  # so that it can return attention weights
    with torch.no_grad():  # random weights everywhere, so that biases and norms are exercised too
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


def make_inputs(config: transformers.CLIPConfig, texts: int = 4, images: int = 4) -> dict[str, torch.Tensor]:
    """Token ids with start/end tokens, right padding of different lengths, and random pixels."""
    text, vision = config.text_config, config.vision_config
    generator = torch.Generator().manual_seed(1)
    length = min(text.max_position_embeddings, 16)
    end = text.vocab_size - 1  # the largest id, as in OpenAI's vocabulary
    ids = torch.randint(3, end - 1, (texts, length), generator=generator)
    mask = torch.zeros(texts, length, dtype=torch.long)
    for row in range(texts):
        stop = length - 1 - (row * 3) % (length - 2)
        ids[row, 0] = end - 1
        ids[row, stop] = end
        ids[row, stop + 1 :] = text.pad_token_id if text.eos_token_id == 2 else end
        mask[row, : stop + 1] = 1
    size = vision.image_size
    pixels = torch.randn(images, 3, size, size, generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    error = (ours - theirs).abs().max().item()
    assert error <= ATOL, f"{what}: max abs error {error:.3g} > {ATOL}"


def assert_tuple_close(ours: tuple, theirs: tuple, what: str) -> None:
    assert len(ours) == len(theirs), f"{what}: {len(ours)} tensors, reference has {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, f"{what}[{i}]")


def assert_tower_close(ours, theirs, what: str) -> None:
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, f"{what}.last_hidden_state")
    assert_tuple_close(ours.hidden_states, theirs.hidden_states, f"{what}.hidden_states")
    assert_tuple_close(ours.attentions, theirs.attentions, f"{what}.attentions")


@pytest.fixture(scope="module", params=list(CONFIGS))
def reference_folder(request, tmp_path_factory):
    model = reference_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    model = reference_model("small-odd")
    folder = tmp_path_factory.mktemp("small")
    model.save_pretrained(folder)
    return model, folder


def test_clip_model_matches_reference(reference_folder):
    name, reference, folder = reference_folder
    ours = torchclip.CLIPModel.from_pretrained(folder)
    inputs = make_inputs(reference.config)
    flags = dict(return_loss=True, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        theirs_out = reference(**inputs, **flags)
        ours_out = ours(**inputs, **flags)
        # transformers 5 puts the *projected* pooled state into text_model_output.pooler_output; torchclip
        # keeps the documented meaning (the CLIPTextModel output), so compare the tower pooled states.
        theirs_text_pooled = reference.text_model(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        theirs_image_pooled = reference.vision_model(inputs["pixel_values"]).pooler_output
        theirs_text_features = reference.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        theirs_image_features = reference.get_image_features(inputs["pixel_values"])
        ours_text_features = ours.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        ours_image_features = ours.get_image_features(inputs["pixel_values"])
    for key in ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert_close(ours_out[key], theirs_out[key], f"{name}: {key}")
    assert_tower_close(ours_out.text_model_output, theirs_out.text_model_output, f"{name}: text")
    assert_tower_close(ours_out.vision_model_output, theirs_out.vision_model_output, f"{name}: vision")
    assert_close(ours_out.text_model_output.pooler_output, theirs_text_pooled, f"{name}: text pooler_output")
    assert_close(ours_out.vision_model_output.pooler_output, theirs_image_pooled, f"{name}: vision pooler_output")
    # get_*_features return the documented tensors (transformers 5 wraps them in an output object)
    assert isinstance(ours_text_features, torch.Tensor)
    assert_close(ours_text_features, theirs_text_features.pooler_output, f"{name}: get_text_features")
    assert_close(ours_image_features, theirs_image_features.pooler_output, f"{name}: get_image_features")


def test_single_tower_classes_match_reference(reference_folder):
    name, reference, folder = reference_folder
    inputs = make_inputs(reference.config)
    text_args = (inputs["input_ids"], inputs["attention_mask"])
    flags = dict(output_hidden_states=True, output_attentions=True)
    pairs = [
        (torchclip.CLIPTextModel, transformers.CLIPTextModel, text_args, ("pooler_output",)),
        (torchclip.CLIPTextModelWithProjection, transformers.CLIPTextModelWithProjection, text_args, ("text_embeds",)),
        (torchclip.CLIPVisionModel, transformers.CLIPVisionModel, (inputs["pixel_values"],), ("pooler_output",)),
        (
            torchclip.CLIPVisionModelWithProjection,
            transformers.CLIPVisionModelWithProjection,
            (inputs["pixel_values"],),
            ("image_embeds",),
        ),
    ]
    for ours_cls, theirs_cls, args, keys in pairs:
        ours = ours_cls.from_pretrained(folder)
        theirs = theirs_cls.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            ours_out, theirs_out = ours(*args, **flags), theirs(*args, **flags)
        for key in keys:
            assert_close(ours_out[key], theirs_out[key], f"{name}: {ours_cls.__name__}.{key}")
        assert_tower_close(ours_out, theirs_out, f"{name}: {ours_cls.__name__}")


def test_reverse_direction_transformers_loads_torchclip(reference_folder, tmp_path):
    name, reference, folder = reference_folder
    ours = torchclip.CLIPModel.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "ours")
    reloaded = transformers.CLIPModel.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    inputs = make_inputs(reference.config)
    with torch.no_grad():
        theirs_out = reloaded(**inputs, return_loss=True, output_hidden_states=True, output_attentions=True)
        ours_out = ours(**inputs, return_loss=True, output_hidden_states=True, output_attentions=True)
    for key in ("loss", "logits_per_image", "text_embeds", "image_embeds"):
        assert_close(ours_out[key], theirs_out[key], f"{name} reversed: {key}")
    assert_tower_close(ours_out.text_model_output, theirs_out.text_model_output, f"{name} reversed: text")
    assert_tower_close(ours_out.vision_model_output, theirs_out.vision_model_output, f"{name} reversed: vision")
    # every tensor, not just the outputs, came through unchanged
    theirs_state, ours_state = reference.state_dict(), reloaded.state_dict()
    assert theirs_state.keys() == ours_state.keys()
    for key in theirs_state:
        assert torch.equal(theirs_state[key], ours_state[key]), key


def test_standalone_towers_round_trip_both_ways(tmp_path):
    """Towers saved alone (transformers 5 writes them without the `text_model.` prefix) load both ways."""
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**SMALL_TEXT)
    reference = transformers.CLIPTextModel(config).eval()
    reference.save_pretrained(tmp_path / "ref")
    ours = torchclip.CLIPTextModel.from_pretrained(tmp_path / "ref")
    ids = make_inputs(transformers.CLIPConfig(text_config=SMALL_TEXT, vision_config=SMALL_VISION))["input_ids"]
    with torch.no_grad():
        assert_close(ours(ids).pooler_output, reference(ids).pooler_output, "standalone text tower")
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.CLIPTextModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert_close(back(ids).last_hidden_state, reference(ids).last_hidden_state, "text tower saved by torchclip")


def test_image_classification_matches_reference(tmp_path):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=SMALL_TEXT, vision_config=SMALL_VISION, id2label={0: "cat", 1: "dog", 2: "fish"}
    )
    reference = transformers.CLIPForImageClassification(config).eval()
    reference.save_pretrained(tmp_path)
    ours = torchclip.CLIPForImageClassification.from_pretrained(tmp_path)
    pixels = make_inputs(config)["pixel_values"]
    labels = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        theirs_out, ours_out = reference(pixels, labels=labels), ours(pixels, labels=labels)
    assert ours.config.id2label == {0: "cat", 1: "dog", 2: "fish"}
    assert_close(ours_out.logits, theirs_out.logits, "classifier logits")
    assert_close(ours_out.loss, theirs_out.loss, "classifier loss")


def test_classifier_head_is_initialised_when_fine_tuning_from_clip_checkpoint(small_folder):
    with pytest.warns(UserWarning, match="classifier"):
        model = torchclip.CLIPForImageClassification.from_pretrained(small_folder[1])
    assert not any(p.is_meta for p in model.parameters())
    assert torch.isfinite(model.classifier.weight).all() and model.classifier.weight.std() > 0


def test_outputs_by_attribute_key_and_tuple(small_folder):
    reference, folder = small_folder
    model = torchclip.CLIPModel.from_pretrained(folder)
    with torch.no_grad():
        out = model(**make_inputs(reference.config))
        as_tuple = model(**make_inputs(reference.config), return_dict=False)
    assert out["logits_per_image"] is out.logits_per_image is out[0]  # no loss asked: it is skipped
    assert list(out.keys()) == [
        "logits_per_image",
        "logits_per_text",
        "text_embeds",
        "image_embeds",
        "text_model_output",
        "vision_model_output",
    ]
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits_per_image)
    assert isinstance(as_tuple[4], tuple)  # nested outputs become tuples too
    with pytest.raises(KeyError):
        out["loss"]


def test_batch_invariance(small_folder):
    """One item alone and inside a batch of 16 gives the same embedding."""
    model = torchclip.CLIPModel.from_pretrained(small_folder[1])
    inputs = make_inputs(model.config, texts=16, images=16)
    with torch.no_grad():
        text_batch = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        image_batch = model.get_image_features(inputs["pixel_values"])
        for i in (0, 5, 15):
            alone = model.get_text_features(inputs["input_ids"][i : i + 1], inputs["attention_mask"][i : i + 1])
            assert_close(alone[0], text_batch[i], f"text item {i}")
            assert_close(model.get_image_features(inputs["pixel_values"][i : i + 1])[0], image_batch[i], f"image {i}")


def test_interpolate_pos_encoding_matches_reference(small_folder):
    reference, folder = small_folder
    model = torchclip.CLIPVisionModel.from_pretrained(folder)
    pixels = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        ours = model(pixels, interpolate_pos_encoding=True)
        theirs = reference.vision_model(pixels, interpolate_pos_encoding=True)
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "interpolated positions")
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(pixels)


def test_left_padding_matches_reference_and_stays_finite(small_folder):
    """A left-padded position may attend to nothing; it must not turn the whole batch into NaN."""
    reference, folder = small_folder
    ours = torchclip.CLIPModel.from_pretrained(folder)
    inputs = make_inputs(reference.config)
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    ids[1], mask[1] = ids[1].roll(3), mask[1].roll(3)  # its 3 trailing padding positions now lead
    assert mask[1, :3].eq(0).all() and mask[1, 3] == 1
    with torch.no_grad():
        theirs = reference.text_model(ids, mask, output_attentions=True)
        for flags in ({}, {"output_attentions": True}):
            out = ours.text_model(ids, mask, **flags)
            assert_close(out.pooler_output, theirs.pooler_output, f"left padding {flags}")
        assert_close(out.attentions[-1], theirs.attentions[-1], "left padding attentions")
        features = ours.to(torch.bfloat16).get_text_features(ids, mask)
    assert torch.isfinite(features).all()
