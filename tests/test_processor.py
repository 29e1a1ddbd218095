"""CLIPProcessor: one call for text and images, one folder for both, readable by transformers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_image_processor import TOL, golden, max_diff, source_path

from torchclip import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

TEXTS = ["a photo of a cat", "a photo of an astronaut in a white suit"]
PHOTOS = ["photo_chelsea", "photo_astronaut"]


@pytest.fixture(scope="module")
def processor() -> CLIPProcessor:
    return CLIPProcessor(CLIPImageProcessor(), CLIPTokenizer())


def photos() -> list[Image.Image]:
    return [Image.open(source_path(name)) for name in PHOTOS]


def test_text_and_images_in_one_call(processor):
    out = processor(text=TEXTS, images=photos(), return_tensors="pt", padding=True)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    expected_text = processor.tokenizer(TEXTS, return_tensors="pt", padding=True)
    assert torch.equal(out.input_ids, expected_text.input_ids)
    assert torch.equal(out.attention_mask, expected_text.attention_mask)
    assert out.pixel_values.shape == (2, 3, 224, 224)
    assert max_diff(out.pixel_values, np.stack([golden(name) for name in PHOTOS])) <= TOL
    assert out.input_ids[0, 0] == processor.tokenizer.bos_token_id
    assert out.attention_mask.sum(1).tolist() == [len(processor.tokenizer(t).input_ids) for t in TEXTS]


def test_text_options_go_to_the_tokenizer_and_the_rest_to_the_image_processor(processor):
    out = processor(
        text=["word " * 100], images=photos()[0], return_tensors="np", padding="max_length", truncation=True, size=336
    )
    assert out.input_ids.shape == (1, 77) and out.input_ids[0, -1] == processor.tokenizer.eos_token_id
    # chelsea 451x300 -> 505x336; the 336 crop starts at x = round(84.5) = 84, the 224 crop at round(140.5) = 140
    # and y = 56, so the 224 crop is the 336 golden's [56:280, 56:280]
    assert max_diff(out.pixel_values[0], golden("photo_chelsea", "336")[:, 56:280, 56:280]) <= TOL
    cropped = processor(images=photos()[0], return_tensors="np", size=336, crop_size=336)
    assert max_diff(cropped.pixel_values[0], golden("photo_chelsea", "336")) <= TOL


def test_text_only_and_images_only(processor):
    assert set(processor(text="a dog", return_tensors="pt")) == {"input_ids", "attention_mask"}
    assert set(processor(images=photos(), return_tensors="pt")) == {"pixel_values"}


def test_misuse_is_reported(processor):
    with pytest.raises(ValueError, match="needs text, images, or both"):
        processor(return_tensors="pt")
    with pytest.raises(TypeError, match=r"tokenizer options \['padding'\] were given without text"):
        processor(images=photos(), padding=True)
    with pytest.raises(TypeError, match=r"image options \['size'\] were given without images"):
        processor(text="a dog", size=336)
    with pytest.raises(ValueError, match="image #1: is not an image"):
        processor(text=TEXTS, images=[photos()[0], b"junk"])


def test_decode_delegates_to_the_tokenizer(processor):
    ids = processor(text=TEXTS, padding=True, return_tensors="pt").input_ids
    assert processor.batch_decode(ids, skip_special_tokens=True) == processor.tokenizer.batch_decode(
        ids, skip_special_tokens=True
    )
    assert processor.decode(ids[0], skip_special_tokens=True).strip() == TEXTS[0]


def test_defaults_and_the_old_feature_extractor_name():
    extractor = CLIPImageProcessor(size=336, crop_size=336)
    processor = CLIPProcessor(feature_extractor=extractor)
    assert processor.image_processor is extractor and processor.feature_extractor is extractor
    assert isinstance(processor.tokenizer, CLIPTokenizer)
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values"]
    with pytest.raises(ValueError, match="not both"):
        CLIPProcessor(image_processor=extractor, feature_extractor=extractor)


def test_save_and_load_a_whole_folder(processor, tmp_path):
    custom = CLIPProcessor(CLIPImageProcessor(size=336, crop_size=336), processor.tokenizer)
    written = custom.save_pretrained(tmp_path)
    assert {p.name for p in written} >= {"vocab.json", "merges.txt", "preprocessor_config.json"}
    loaded = CLIPProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.to_dict() == custom.image_processor.to_dict()
    out = loaded(text=TEXTS, images=photos(), return_tensors="pt", padding=True)
    assert torch.equal(out.input_ids, processor(text=TEXTS, return_tensors="pt", padding=True).input_ids)
    assert max_diff(out.pixel_values, np.stack([golden(name, "336") for name in PHOTOS])) <= TOL
    with pytest.raises(FileNotFoundError):
        CLIPProcessor.from_pretrained(tmp_path / "missing")


def test_transformers_reads_our_folder_and_we_read_its_folder(processor, tmp_path):
    transformers = pytest.importorskip("transformers")
    processor.save_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():  # the torchvision fallback notice
        warnings.simplefilter("ignore")
        theirs = transformers.CLIPProcessor.from_pretrained(tmp_path / "ours")
    expected = theirs(text=TEXTS, images=photos(), return_tensors="pt", padding=True)
    ours = processor(text=TEXTS, images=photos(), return_tensors="pt", padding=True)
    assert torch.equal(ours.input_ids, expected.input_ids)
    assert torch.equal(ours.attention_mask, expected.attention_mask)
    # on these photos the crop offsets agree, so the original pipeline equals transformers' output
    assert max_diff(ours.pixel_values, expected.pixel_values) <= TOL

    theirs.save_pretrained(tmp_path / "theirs")
    loaded = CLIPProcessor.from_pretrained(tmp_path / "theirs", pipeline="transformers")
    again = loaded(text=TEXTS, images=photos(), return_tensors="pt", padding=True)
    assert torch.equal(again.input_ids, expected.input_ids)
    assert max_diff(again.pixel_values, expected.pixel_values) <= TOL


# (tokenizer init keys, call keys): a tokenizer built with call options makes them the processor's defaults,
# below anything the call gives, as transformers' ProcessorMixin does
TOKENIZER_DEFAULTS_CASES = [
    ({"padding": "max_length", "max_length": 20}, {}),
    ({"padding": "max_length", "max_length": 20}, {"padding": False}),
    ({"padding": "max_length", "max_length": 20}, {"max_length": 12}),
    ({"padding": "max_length", "max_length": 20}, {"text_kwargs": {"max_length": 14}}),
    ({"padding": "max_length", "max_length": 20}, {"return_tensors": "pt"}),
    ({"padding": "longest", "max_length": 4, "truncation": True}, {}),
    ({"model_max_length": 20}, {"padding": "max_length"}),
    ({"padding": "max_length", "max_length": 13, "padding_side": "left"}, {}),
    ({"return_tensors": "pt", "padding": True}, {}),
    ({}, {"padding": True}),
]


def as_lists(ids: torch.Tensor | list) -> list:
    """Rows of ids as lists (rows may differ in length where nothing pads them)."""
    return ids.tolist() if isinstance(ids, torch.Tensor) else ids


@pytest.mark.parametrize(("init_kwargs", "call_kwargs"), TOKENIZER_DEFAULTS_CASES)
def test_tokenizer_init_options_are_call_defaults_as_in_transformers(tmp_path, init_kwargs, call_kwargs):
    transformers = pytest.importorskip("transformers")
    CLIPTokenizer().save_pretrained(tmp_path)
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    with warnings.catch_warnings():  # the torchvision fallback notice
        warnings.simplefilter("ignore")
        theirs = transformers.CLIPProcessor(
            transformers.CLIPImageProcessor(), transformers.CLIPTokenizer.from_pretrained(tmp_path, **init_kwargs)
        )
        expected = theirs(text=TEXTS, images=[image], **call_kwargs)
    ours = CLIPProcessor(CLIPImageProcessor(), CLIPTokenizer.from_pretrained(tmp_path, **init_kwargs))
    out = ours(text=TEXTS, images=[image], **call_kwargs)
    for name in ("input_ids", "attention_mask"):
        assert type(out[name]) is type(expected[name])
        assert as_lists(out[name]) == as_lists(expected[name])
    assert type(out["pixel_values"]) is type(expected["pixel_values"])
    # the same defaults after a save and load
    ours.save_pretrained(tmp_path / "saved")
    again = CLIPProcessor.from_pretrained(tmp_path / "saved")(text=TEXTS, images=[image], **call_kwargs)
    assert as_lists(again["input_ids"]) == as_lists(expected["input_ids"])


def test_tokenizer_padding_side_attribute_wins_over_its_init_value(tmp_path):
    tokenizer = CLIPTokenizer(padding="max_length", max_length=8, padding_side="left")
    tokenizer.padding_side = "right"
    ids = CLIPProcessor(tokenizer=tokenizer)(text=["a"]).input_ids[0]
    assert ids[:3] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("a</w>"), tokenizer.eos_token_id]
    assert len(ids) == 8
    # images alone: the tokenizer's defaults are not "tokenizer options given without text"
    assert set(CLIPProcessor(tokenizer=tokenizer)(images=Image.new("RGB", (30, 30)))) == {"pixel_values"}
