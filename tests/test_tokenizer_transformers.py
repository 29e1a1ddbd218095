"""CLIPTokenizer against transformers.CLIPTokenizer, computed in this run, on the golden fixture's strings.

Default (OpenAI) behaviour agrees wherever the two originals agree; `compat="transformers"` agrees on all.
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import regex
import torch

from torchclip.batch import BatchFeature
from torchclip.tokenizer import DEFAULT_BPE_PATH, BatchEncoding, CLIPTokenizer

transformers = pytest.importorskip("transformers")

FIXTURE = Path(__file__).parent / "data" / "tokenizer" / "openai_golden.json.gz"
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def golden() -> dict:
    """OpenAI's ids for 5,000+ strings (see test_tokenizer.py and scripts/make_tokenizer_fixtures.py)."""
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()


def reference_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The standard vocabulary as OpenAI's SimpleTokenizer builds it from the .gz (written from its source)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    merges = [
        tuple(m.split()) for m in gzip.open(DEFAULT_BPE_PATH).read().decode().split("\n")[1 : 49152 - 256 - 2 + 1]
    ]
    vocab = (
        symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    )
    return dict(zip(vocab, range(len(vocab)))), merges


@pytest.fixture(scope="module")
def hf():
    vocab, merges = reference_vocab_and_merges()
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


@pytest.fixture(scope="module")
def hf_ids(hf, golden) -> dict[int, list[int]]:
    """transformers' ids for every fixture text it accepts (it refuses lone surrogates)."""
    accepted = [i for i, t in enumerate(golden["texts"]) if not regex.search(r"[\ud800-\udfff]", t)]
    ids = hf([golden["texts"][i] for i in accepted], add_special_tokens=False)["input_ids"]
    return dict(zip(accepted, ids))


def newer_than_python_unicode(text: str) -> bool:
    """Holds a code point that Python's unicodedata (Unicode 14 in 3.11) does not know but newer Unicode does.

    Letter/number classes and case mappings of those come from different Unicode versions in each library
    (regex, Python, Oniguruma, Rust), so no Python port can match the Rust tokenizer on them.
    """
    return any(unicodedata.category(c) == "Cn" and regex.match(r"\P{Cn}", c) for c in text)


def test_vocabulary_matches_transformers(tok, hf):
    assert tok.get_vocab() == hf.get_vocab()
    assert (tok.vocab_size, len(tok)) == (hf.vocab_size, len(hf)) == (49408, 49408)
    for name in ["bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id", "pad_token_id"]:
        assert getattr(tok, name) == getattr(hf, name), name
    assert tok.unk_token_id == hf.convert_tokens_to_ids(hf.unk_token)
    assert tok.all_special_ids == hf.all_special_ids and tok.model_max_length == 77


def test_agrees_with_transformers_where_the_originals_agree(tok, golden, hf_ids):
    agree = [i for i, ids in hf_ids.items() if ids == golden["ids"][i]]
    differ = [i for i in hf_ids if i not in set(agree)]
    assert len(agree) > 4000
    assert any("&amp;" in golden["texts"][i] for i in differ)  # transformers does not unescape HTML
    ours = tok([golden["texts"][i] for i in agree], add_special_tokens=False)["input_ids"]
    assert ours == [hf_ids[i] for i in agree]


def test_transformers_option_matches_transformers_on_all_strings(golden, hf, hf_ids):
    tok = CLIPTokenizer(compat="transformers")
    compared = [i for i in hf_ids if not newer_than_python_unicode(golden["texts"][i])]
    assert len(compared) > 0.95 * len(golden["texts"])
    ours = tok([golden["texts"][i] for i in compared], add_special_tokens=False)["input_ids"]
    mismatches = [golden["texts"][i][:60] for i, ids in zip(compared, ours) if ids != hf_ids[i]]
    assert not mismatches, mismatches[:10]
    texts = [golden["texts"][i] for i in compared[::5]]
    for kwargs in [dict(padding="max_length", truncation=True), dict(padding=True, truncation=True, max_length=20)]:
        ours, theirs = tok(texts, return_tensors="pt", **kwargs), hf(texts, return_tensors="pt", **kwargs)
        assert torch.equal(ours["input_ids"], theirs["input_ids"]), kwargs
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"]), kwargs


def test_transformers_option_decodes_as_transformers(golden, hf, hf_ids):
    tok = CLIPTokenizer(compat="transformers")
    sequences = [[BOS, *ids, EOS] for ids in list(hf_ids.values())[::3]] + golden["random_ids"]
    for skip in (False, True):
        assert tok.batch_decode(sequences, skip_special_tokens=skip) == hf.batch_decode(
            sequences, skip_special_tokens=skip
        )


def test_both_refuse_lone_surrogates_in_transformers_option(tok, hf):
    with pytest.raises(TypeError):
        hf("lone \ud800 surrogate")
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at index 5"):
        CLIPTokenizer(compat="transformers")("lone \ud800 surrogate")
    assert tok("lone \ud800 surrogate")["input_ids"][-2:] == [tok.encode("x\ufffd surrogate")[-2], EOS]


def test_single_text_shapes_match_transformers(tok, hf):
    for kwargs in [{}, dict(return_tensors="pt"), dict(return_tensors="np"), dict(padding="max_length")]:
        ours, theirs = tok("a photo of a cat", **kwargs), hf("a photo of a cat", **kwargs)
        assert isinstance(ours, BatchEncoding) and isinstance(ours, BatchFeature)
        assert set(ours) == {"input_ids", "attention_mask"}
        assert np.array_equal(np.asarray(ours.input_ids), np.asarray(theirs["input_ids"])), kwargs
        assert np.array_equal(np.asarray(ours.attention_mask), np.asarray(theirs["attention_mask"])), kwargs
    assert tok("a cat", return_attention_mask=False).keys() == {"input_ids"}
    assert tok.encode("a cat") == hf.encode("a cat")
    assert tok(["a cat", "two dogs"], padding=True, return_tensors="pt").to("cpu")["input_ids"].shape == (2, 4)


def test_special_token_helpers_match_transformers(tok, hf):
    a, b = tok.encode("a cat", add_special_tokens=False), tok.encode("two dogs", add_special_tokens=False)
    pair = hf("a cat", "two dogs", return_special_tokens_mask=True, return_token_type_ids=True)
    single = hf("a cat", return_special_tokens_mask=True, return_token_type_ids=True)
    assert tok.build_inputs_with_special_tokens(a) == single["input_ids"]
    assert tok.build_inputs_with_special_tokens(a, b) == pair["input_ids"]
    assert tok.get_special_tokens_mask(a) == single["special_tokens_mask"]
    assert tok.get_special_tokens_mask(a, b) == pair["special_tokens_mask"]
    assert tok.create_token_type_ids_from_sequences(a) == single["token_type_ids"]
    assert tok.create_token_type_ids_from_sequences(a, b) == pair["token_type_ids"]
    ids = pair["input_ids"] + [0, 5]
    assert tok.get_special_tokens_mask(ids, already_has_special_tokens=True) == hf.get_special_tokens_mask(
        ids, already_has_special_tokens=True
    )


def test_token_conversions_match_transformers(tok, hf, golden):
    hf_option = CLIPTokenizer(compat="transformers")
    for text in golden["texts"][:3000:10]:
        if not regex.search(r"[\ud800-\udfff]", text) and not newer_than_python_unicode(text):
            assert hf_option.tokenize(text) == hf.tokenize(text), text
    tokens = ["a</w>", "photo</w>", "no-such-token", "<|endoftext|>"]
    assert tok.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("photo</w>") == hf.convert_tokens_to_ids("photo</w>")
    ids = [BOS, 320, 1125, 49407, 0, 511]
    assert tok.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert tok.convert_ids_to_tokens(1125) == hf.convert_ids_to_tokens(1125)


def test_save_pretrained_loads_in_torchclip_and_transformers(tok, hf, golden, tmp_path):
    tok.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    theirs = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    texts = [t for t in golden["texts"][:2000] if not regex.search(r"[\ud800-\udfff]", t)]
    assert (
        theirs(texts, padding="max_length", truncation=True)["input_ids"]
        == hf(texts, padding="max_length", truncation=True)["input_ids"]
    )
    ours = CLIPTokenizer.from_pretrained(tmp_path)
    assert ours(golden["texts"], add_special_tokens=False)["input_ids"] == golden["ids"]
    assert (ours.model_max_length, ours.pad_token_id) == (theirs.model_max_length, theirs.pad_token_id)


def test_from_pretrained_reads_a_transformers_folder(hf, golden, tmp_path):
    hf.save_pretrained(tmp_path)  # transformers 5 writes tokenizer.json + tokenizer_config.json only
    ours = CLIPTokenizer.from_pretrained(tmp_path)
    assert ours(golden["texts"][:1500], add_special_tokens=False)["input_ids"] == golden["ids"][:1500]
    assert (ours.pad_token_id, ours.model_max_length) == (EOS, 77)


def test_pad_token_comes_from_the_files(tok, hf, tmp_path):
    """Some checkpoints (OpenCLIP's LAION ones) name "!" (id 0) as their pad token."""
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    special = json.loads((tmp_path / "special_tokens_map.json").read_text())
    config["pad_token"] = special["pad_token"] = "!"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special))
    ours, theirs = CLIPTokenizer.from_pretrained(tmp_path), transformers.CLIPTokenizer.from_pretrained(tmp_path)
    assert ours.pad_token_id == theirs.pad_token_id == 0
    texts = ["a cat", "a photo of two dogs"]
    assert ours(texts, padding="max_length")["input_ids"] == theirs(texts, padding="max_length")["input_ids"]


def test_added_special_tokens_from_the_files(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["49408"] = {"content": "<|mask|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    theirs = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    text, ids = "a <|mask|> photo<|mask|>x", [BOS, 320, 49408, 1125, 49408, 343, EOS]
    for compat in ("openai", "transformers"):
        ours = CLIPTokenizer.from_pretrained(tmp_path, compat=compat)
        assert len(ours) == len(theirs) == 49409
        assert ours(text)["input_ids"] == theirs(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True).strip() == theirs.decode(ids, skip_special_tokens=True)
    reloaded = tmp_path / "again"
    CLIPTokenizer.from_pretrained(tmp_path).save_pretrained(reloaded)
    assert transformers.CLIPTokenizer.from_pretrained(reloaded)(text)["input_ids"] == theirs(text)["input_ids"]
