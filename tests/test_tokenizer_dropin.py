"""The transformers tokenizer API beyond plain encoding, against transformers' own CLIPTokenizer in the same run:
left padding and truncation, text pairs, overflowing windows, special-token masks, `pad`, added tokens."""

from __future__ import annotations

import pytest
import torch

from torchclip import CLIPTokenizer
from torchclip.hub import bundled_model_path

transformers = pytest.importorskip("transformers")

FOLDER = bundled_model_path()
TEXTS = ["a photo of a big red cat on a mat", "hi there", "one two three four five six seven eight nine ten"]
PAIRS = ["the second text", "x y", "a b c d e f g h"]


@pytest.fixture
def reference():
    return transformers.CLIPTokenizer.from_pretrained(FOLDER)


@pytest.fixture
def ours():
    return CLIPTokenizer.from_pretrained(FOLDER, compat="transformers")


def both(ours, reference, *args, **kwargs):
    mine, theirs = ours(*args, **kwargs), reference(*args, **kwargs)
    assert dict(mine) == dict(theirs), (kwargs, dict(mine), dict(theirs))
    return mine


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_and_truncation_sides_as_attributes_and_arguments(ours, reference, side):
    for tok in (ours, reference):
        tok.padding_side = side
        tok.truncation_side = side
    both(ours, reference, TEXTS, padding=True)
    both(ours, reference, TEXTS, padding="max_length", max_length=9, truncation=True)
    both(ours, reference, TEXTS, max_length=5, truncation=True, return_special_tokens_mask=True)
    for tok in (ours, reference):
        tok.padding_side = tok.truncation_side = "right"
    both(ours, reference, TEXTS, padding=True, padding_side=side)
    if side == "left":  # the reference's __call__ has no truncation_side argument; torchclip's does
        cut = ours(TEXTS, max_length=5, truncation=True, truncation_side="left")["input_ids"]
        assert cut[0] == [ours.bos_token_id, *ours(TEXTS[0], add_special_tokens=False)["input_ids"][-3:], 49407]


def test_left_padding_reaches_the_model_as_the_reference_pads(ours, reference):
    ours.padding_side = reference.padding_side = "left"
    mine = ours(TEXTS, padding=True, return_tensors="pt")
    theirs = reference(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    assert torch.equal(mine["attention_mask"], theirs["attention_mask"])
    assert mine["attention_mask"][1, 0] == 0  # the short text's padding is at the start


@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [9, 12])
def test_text_pairs(ours, reference, strategy, max_length):
    both(ours, reference, TEXTS, PAIRS, return_special_tokens_mask=True)
    if strategy == "only_first" or strategy == "only_second":
        texts, pairs = (TEXTS[2:], ["x"]) if strategy == "only_first" else (["x"], TEXTS[2:])
    else:
        texts, pairs = TEXTS, PAIRS
    both(ours, reference, texts, pairs, truncation=strategy, max_length=max_length, padding=True)
    both(ours, reference, texts[0], pairs[0], truncation=strategy, max_length=max_length)


@pytest.mark.parametrize("stride", [0, 1, 2])
def test_overflowing_windows(ours, reference, stride):
    both(ours, reference, TEXTS[0], max_length=6, truncation=True, return_overflowing_tokens=True, stride=stride)
    both(ours, reference, TEXTS, max_length=7, truncation=True, return_overflowing_tokens=True, stride=stride,
         padding=True, return_length=True)  # fmt: skip
    both(ours, reference, TEXTS[2], "x y", max_length=9, truncation="only_first", return_overflowing_tokens=True,
         stride=stride)  # fmt: skip


def test_pad_and_pad_to_multiple_of(ours, reference):
    both(ours, reference, TEXTS, padding=True, pad_to_multiple_of=8)
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    for side in ("right", "left"):
        mine = ours.pad(rows, padding_side=side, return_tensors="pt")
        theirs = reference.pad(rows, padding_side=side, return_tensors="pt")
        assert all(torch.equal(mine[key], theirs[key]) for key in ("input_ids", "attention_mask"))
    encoded = ours(TEXTS)
    assert ours.pad(encoded, padding="max_length", max_length=20)["input_ids"] == reference.pad(
        reference(TEXTS), padding="max_length", max_length=20
    )["input_ids"]


def test_added_and_special_tokens_are_saved_and_reloaded(ours, reference, tmp_path):
    assert ours.add_tokens(["newtok", "Other"]) == reference.add_tokens(["newtok", "Other"]) == 2
    assert ours.add_special_tokens({"pad_token": "[PAD]"}) == reference.add_special_tokens({"pad_token": "[PAD]"})
    text = "hi newtok Other other [PAD]"
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert (ours.pad_token, ours.pad_token_id) == (reference.pad_token, reference.pad_token_id)
    assert len(ours) == len(reference)
    assert ours.all_special_tokens == reference.all_special_tokens
    ours.save_pretrained(tmp_path / "ours")
    for loaded in (CLIPTokenizer.from_pretrained(tmp_path / "ours"),
                   transformers.CLIPTokenizer.from_pretrained(tmp_path / "ours")):  # fmt: skip
        assert loaded(text)["input_ids"] == reference(text)["input_ids"]
        assert loaded.pad_token == "[PAD]"
    plain = "hi newtok [PAD] there"  # (the reference decodes "Other" lower-cased; torchclip as added)
    assert ours.decode(ours(plain)["input_ids"], skip_special_tokens=True) == reference.decode(
        reference(plain)["input_ids"], skip_special_tokens=True
    )


def test_token_id_setters_missing_tokens_and_init_keys(ours, reference, tmp_path):
    ours.pad_token_id = reference.pad_token_id = 5
    assert ours.pad_token == reference.pad_token == "&"
    for name in ("sep_token", "cls_token", "mask_token"):
        assert getattr(ours, name) is getattr(reference, name) is None
        assert getattr(ours, f"{name}_id") is getattr(reference, f"{name}_id") is None
    kept = CLIPTokenizer.from_pretrained(FOLDER, do_lower_case=False, padding_side="left")
    assert kept("Hello WORLD")["input_ids"] == reference("Hello WORLD")["input_ids"]  # CLIP always lower-cases
    kept.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path).padding_side == "left"
    assert transformers.CLIPTokenizer.from_pretrained(tmp_path).padding_side == "left"
    ids = reference("hello , world . it 's")["input_ids"]
    cleaned = reference.decode(ids, clean_up_tokenization_spaces=True)  # transformers 5 ignores it for BPE
    assert ours.decode(ids, clean_up_tokenization_spaces=True) == cleaned
