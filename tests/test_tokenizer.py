"""CLIPTokenizer against OpenAI's original: the committed golden ids, in every padding/truncation mode.

The golden fixture tests/data/tokenizer/openai_golden.json.gz was made by scripts/make_tokenizer_fixtures.py
with OpenAI's SimpleTokenizer: 5,000+ varied strings, their ids (without start/end tokens) and decodes.
"""

from __future__ import annotations

import gzip
import html
import json
import shutil
from pathlib import Path

import ftfy
import numpy as np
import pytest
import torch

import torchclip
from torchclip.tokenizer import DEFAULT_BPE_PATH, CLIPTokenizer, tokenize

FIXTURE = Path(__file__).parent / "data" / "tokenizer" / "openai_golden.json.gz"
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()


def openai_tokenize_row(ids: list[int], context_length: int, pad: int) -> list[int]:
    """One row of OpenAI's `clip.tokenize(..., truncate=True)`, written from its source, any pad id."""
    tokens = [BOS, *ids, EOS]
    if len(tokens) > context_length:
        tokens = tokens[:context_length]
        tokens[-1] = EOS
    return tokens + [pad] * (context_length - len(tokens))


# ---------------------------------------------------------------------------------------- golden ids


def test_fixture_is_large_and_varied(golden):
    texts = golden["texts"]
    assert len(texts) >= 5000
    assert max(map(len, texts)) >= 10_000 and "" in texts
    assert sum("&" in t for t in texts) > 300 and sum(not t.isascii() for t in texts) > 2000


def test_golden_ids_exact(tok, golden):
    got = tok(golden["texts"], add_special_tokens=False)["input_ids"]
    mismatches = [i for i, (a, b) in enumerate(zip(got, golden["ids"])) if a != b]
    assert not mismatches, [golden["texts"][i][:80] for i in mismatches[:10]]


def test_golden_ids_one_text_at_a_time(golden):
    tok = CLIPTokenizer()  # fresh cache: single-text calls must not depend on batch state
    for text, ids in zip(golden["texts"][::7], golden["ids"][::7]):
        assert tok.encode(text) == [BOS, *ids, EOS], text
        assert tok.convert_tokens_to_ids(tok.tokenize(text)) == ids, text


@pytest.mark.parametrize("max_length", [77, 16, 2])
@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
def test_golden_pad_to_max_length_with_truncation(tok, golden, max_length, return_tensors):
    out = tok(
        golden["texts"], padding="max_length", truncation=True, max_length=max_length, return_tensors=return_tensors
    )
    expected = [openai_tokenize_row(ids, max_length, pad=EOS) for ids in golden["ids"]]
    lengths = [min(len(ids) + 2, max_length) for ids in golden["ids"]]
    ids, mask = out["input_ids"], out["attention_mask"]
    if return_tensors == "pt":
        assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    if return_tensors == "np":
        assert ids.dtype == np.int64 and mask.dtype == np.int64
    ids, mask = np.asarray(ids), np.asarray(mask)
    np.testing.assert_array_equal(ids, np.array(expected))
    np.testing.assert_array_equal(mask, np.arange(max_length)[None, :] < np.array(lengths)[:, None])


def test_golden_pad_longest_and_no_padding(tok, golden):
    fits = [i for i, ids in enumerate(golden["ids"]) if len(ids) + 2 <= 77]
    texts, ids = [golden["texts"][i] for i in fits], [golden["ids"][i] for i in fits]
    longest = max(len(x) for x in ids) + 2
    out = tok(texts, padding=True, return_tensors="pt")
    assert out["input_ids"].tolist() == [openai_tokenize_row(x, longest, pad=EOS) for x in ids]
    assert out["attention_mask"].sum(1).tolist() == [len(x) + 2 for x in ids]
    assert tok(texts, padding="longest")["input_ids"] == out["input_ids"].tolist()
    unpadded = tok(golden["texts"], truncation=True)  # no padding: each row as long as its text (<= 77)
    assert unpadded["input_ids"] == [openai_tokenize_row(x, min(len(x) + 2, 77), pad=EOS) for x in golden["ids"]]
    assert unpadded["attention_mask"] == [[1] * len(row) for row in unpadded["input_ids"]]
    untruncated = tok(golden["texts"][-3:])["input_ids"]  # the longest texts, kept whole
    assert untruncated == [[BOS, *x, EOS] for x in golden["ids"][-3:]]


def test_tokenize_function_is_openai_clip_tokenize(golden):
    out = tokenize(golden["texts"], truncate=True)
    assert out.dtype == torch.long and out.shape == (len(golden["texts"]), 77)
    assert out.tolist() == [openai_tokenize_row(ids, 77, pad=0) for ids in golden["ids"]]
    long_text = max(range(len(golden["texts"])), key=lambda i: len(golden["ids"][i]))
    out = torchclip.tokenize(golden["texts"][long_text], context_length=10, truncate=True)
    assert out.tolist() == [openai_tokenize_row(golden["ids"][long_text], 10, pad=0)]


def test_tokenize_too_long_names_the_text():
    with pytest.raises(RuntimeError, match=r"text\[1\] 'word word.*too long for context length 77"):
        tokenize(["short", "word " * 100])


def test_decode_golden(tok, golden):
    assert tok.batch_decode(golden["ids"]) == golden["decoded"]
    assert [tok.decode(ids) for ids in golden["random_ids"]] == golden["random_ids_decoded"]
    plain = [i for i, ids in enumerate(golden["ids"]) if BOS not in ids and EOS not in ids]
    with_specials = [[BOS, *golden["ids"][i], EOS, EOS] for i in plain]
    assert tok.batch_decode(with_specials, skip_special_tokens=True) == [golden["decoded"][i] for i in plain]
    assert tok.batch_decode(torch.tensor([[BOS, 320, 1125, EOS]])) == ["<|startoftext|>a photo <|endoftext|>"]


def test_ascii_shortcut_is_identical_to_ftfy(tok):
    """ASCII text skips ftfy only where ftfy (+ html.unescape) provably cannot change the tokens."""

    def original_clean(text: str) -> str:  # OpenAI's basic_clean + whitespace_clean + lower
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).strip().lower()

    contexts = ["{0}", "a{0}b", "x {0} y\n{0}", "&amp;{0}", "<b>{0}&lt;", "{0}\r\n{0}\r", "\x1b[{0}31m", "{0}{0}{0}"]
    for code in range(128):
        for context in contexts:
            text = context.format(chr(code))
            assert tok._clean_openai(text) == original_clean(text), repr(text)


# ---------------------------------------------------------------------------------------- files


def test_save_vocabulary_round_trip(tok, golden, tmp_path):
    vocab_file, merges_file = tok.save_vocabulary(tmp_path, filename_prefix="clip")
    assert Path(vocab_file).name == "clip-vocab.json" and Path(merges_file).name == "clip-merges.txt"
    shutil.copy(vocab_file, tmp_path / "vocab.json")
    shutil.copy(merges_file, tmp_path / "merges.txt")
    for loaded in (CLIPTokenizer.from_pretrained(tmp_path), CLIPTokenizer(vocab_file, merges_file)):
        got = loaded(golden["texts"], add_special_tokens=False)["input_ids"]
        assert got == golden["ids"]


def test_from_pretrained_reads_hub_style_special_tokens(tok, tmp_path):
    """Hub folders write special tokens as dicts with a "content" key; the pad token may be "!" (id 0)."""
    tok.save_vocabulary(tmp_path)
    token = {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": token}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32, "pad_token": "<|endoftext|>"}))
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert (loaded.pad_token, loaded.pad_token_id, loaded.model_max_length) == ("!", 0, 32)
    assert loaded("a cat", padding="max_length")["input_ids"] == tok.encode("a cat") + [0] * 28
    assert CLIPTokenizer.from_pretrained(tmp_path, pad_token="<|endoftext|>").pad_token_id == EOS


def test_from_bpe_file(golden, tmp_path):
    copy = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy(DEFAULT_BPE_PATH, copy)
    tok = CLIPTokenizer.from_bpe_file(copy, pad_token="!")
    assert tok(golden["texts"][:500], add_special_tokens=False)["input_ids"] == golden["ids"][:500]
    assert tok(["a", "a b c"], padding=True)["input_ids"][0][-1] == 0


def test_small_cache_gives_the_same_ids(golden):
    tok = CLIPTokenizer(cache_size=8)
    assert tok(golden["texts"][:1500], add_special_tokens=False)["input_ids"] == golden["ids"][:1500]


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (None, TypeError, "text must be a string or a list of strings, got NoneType"),
        (123, TypeError, "got int"),
        (b"bytes", TypeError, "got bytes"),
        (["ok", 3.5], TypeError, r"text\[1\] must be a string, got float"),
        (["ok", None, "x"], TypeError, r"text\[1\] must be a string, got NoneType"),
    ],
)
def test_bad_text(tok, text, error, message):
    with pytest.raises(error, match=message):
        tok(text)
    with pytest.raises(error, match=message):
        tokenize(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(padding="maybe"), "padding must be"),
        (dict(padding=1.0), "padding must be"),
        (dict(truncation="sometimes"), "truncation must be"),
        (dict(max_length=0), "max_length must be an integer >= 2"),
        (dict(max_length=1, truncation=True), "max_length must be an integer >= 2"),
        (dict(max_length="77"), "max_length must be an integer"),
        (dict(max_length=True), "max_length must be an integer"),
        (dict(return_tensors="tf"), "return_tensors must be 'pt', 'np' or None"),
    ],
)
def test_bad_options(tok, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tok(["a photo"], **kwargs)


def test_ragged_tensors_need_padding(tok):
    with pytest.raises(ValueError, match="different lengths .* pass padding=True"):
        tok(["a", "a b c"], return_tensors="pt")
    assert tok(["a b", "c d"], return_tensors="pt")["input_ids"].shape == (2, 4)


def test_other_bad_input(tok, tmp_path):
    with pytest.raises(TypeError, match="text must be a string, got list"):
        tok.encode(["a list"])
    with pytest.raises(IndexError, match="token id 49408 is out of the vocabulary"):
        tok.decode([320, 49408])
    with pytest.raises(FileNotFoundError, match="neither vocab.json"):
        CLIPTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPTokenizer.from_pretrained(tmp_path / "missing")
    added = CLIPTokenizer(pad_token="<pad>")  # as transformers: a new special token joins the vocabulary
    assert (added.pad_token_id, len(added)) == (49408, 49409)
    with pytest.raises(ValueError, match="compat must be 'openai' or 'transformers'"):
        CLIPTokenizer(compat="hf")
    with pytest.raises(ValueError, match="context_length must be an integer >= 2"):
        tokenize("a", context_length=0)


def test_edge_cases(tok):
    assert tok("")["input_ids"] == [BOS, EOS] == tok(" \t\n\u3000")["input_ids"]
    assert tok([])["input_ids"] == []
    assert tok([], padding="max_length", return_tensors="pt")["input_ids"].shape == (0, 77)
    long = tok("word " * 2000, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    assert long.shape == (1, 77) and long[0, -1] == EOS and long[0, 0] == BOS
    assert tok(("a", "b c"), padding=True)["input_ids"] == tok(["a", "b c"], padding=True)["input_ids"]
