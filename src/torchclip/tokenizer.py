"""CLIP's byte-level BPE tokenizer: OpenAI's exact text cleaning and merges, behind the HF tokenizer API.

Every CLIP checkpoint was trained with OpenAI's `SimpleTokenizer` (`clip/simple_tokenizer.py`); a single
different id shifts the text embedding, so the default here reproduces it exactly:

1. clean: `ftfy.fix_text`, `html.unescape` twice, collapse whitespace, lower-case;
2. split with OpenAI's regex (special tokens, contractions, runs of letters, single digits, other symbols);
3. map each piece's UTF-8 bytes to printable characters and apply the BPE merges, marking word ends `</w>`.

`compat="transformers"` reproduces `transformers.CLIPTokenizer` instead (NFC instead of ftfy, no HTML
unescaping, special tokens recognised only in the raw text), for ids identical to a HF pipeline.

Speed: each distinct piece is BPE-merged once and cached; plain ASCII text that ftfy provably leaves
alone skips ftfy; padding is one vectorised numpy step.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Literal

import ftfy
import numpy as np
import regex
import torch

from torchclip.batch import BatchFeature, convert_to_tensors
from torchclip.hub import resolve_folder

DEFAULT_BPE_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's vocabulary uses only the first 49152 - 256 - 2 merges of the file (which holds many more).
OPENAI_NUM_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77
WORD_END = "</w>"

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
FAST_TOKENIZER_FILE = "tokenizer.json"

Compat = Literal["openai", "transformers"]
# Pieces after the special tokens: OpenAI's split (the original also compiles it case-insensitively,
# which matters for characters such as "ſ" that match "s" without being equal to it).
_PIECES = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# transformers' ByteLevel pre-tokenizer splits each piece again with GPT-2's regex.
_GPT2_PIECES = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
# transformers' whitespace is Unicode White_Space, as regex's \s (str.split() also splits on U+001C..U+001F).
_HF_WHITESPACE = regex.compile(r"\s+")
_SURROGATE = regex.compile(r"[\ud800-\udfff]")
# Characters that ftfy.fix_text may change in ASCII text: entities start with "&" and it deletes these
# control characters. ASCII text without them comes back from ftfy and html.unescape unchanged, except
# that "\r" may become "\n", which whitespace collapsing makes irrelevant (see _clean_openai).
_FTFY_MAY_CHANGE_ASCII = regex.compile(r"[&\x00-\x08\x0b\x0e-\x1f\x7f]")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to a printable character, so BPE never sees whitespace or controls."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


def read_openai_bpe(bpe_path: str | os.PathLike = DEFAULT_BPE_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, built as the original builds them."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : OPENAI_NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + WORD_END for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return dict(zip(tokens, range(len(tokens)))), merges


def _token_content(value: Any) -> str | None:
    """A special token as the config files write it: a string, or a dict with its "content"."""
    return value.get("content") if isinstance(value, dict) else value


class BatchEncoding(BatchFeature):
    """What `CLIPTokenizer.__call__` returns: `input_ids` and `attention_mask`, splattable into a model."""


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer with the HF `CLIPTokenizer` API; ids identical to OpenAI's original.

    `CLIPTokenizer()` is the standard CLIP tokenizer (the vocabulary ships with torchclip, no download).
    `compat="openai"` (default) reproduces OpenAI's `SimpleTokenizer`, the tokenizer every CLIP checkpoint
    was trained with; `compat="transformers"` reproduces `transformers.CLIPTokenizer`, which skips ftfy
    and HTML unescaping and so gives different ids for some texts (e.g. "&amp;"). The transformers option
    matches it on all text except code points newer than Python's own Unicode database (unassigned in
    `unicodedata`), whose letter and case properties differ between the libraries' Unicode versions.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab: dict[str, int] | str | os.PathLike | None = None,
        merges: Sequence[tuple[str, str]] | str | os.PathLike | None = None,
        *,
        bos_token: str = "<|startoftext|>",
        eos_token: str = "<|endoftext|>",
        pad_token: str = "<|endoftext|>",
        unk_token: str = "<|endoftext|>",
        model_max_length: int = CONTEXT_LENGTH,
        added_tokens: dict[str, int] | None = None,
        additional_special_tokens: Sequence[str] = (),
        compat: Compat = "openai",
        cache_size: int = 2**18,
    ) -> None:
        """Build from a vocabulary and merge list (in memory, or `vocab.json` / `merges.txt` paths).

        With neither given, the standard CLIP vocabulary bundled with torchclip is used. `added_tokens`
        are extra whole tokens (id beyond the BPE vocabulary) matched literally in the raw text;
        those also in `additional_special_tokens` are dropped by `skip_special_tokens`.
        `cache_size` bounds the per-word cache (it is emptied when full).
        """
        if (vocab is None) != (merges is None):
            raise ValueError("pass both vocab and merges, or neither (for the standard CLIP vocabulary)")
        if vocab is None:
            vocab, merges = read_openai_bpe()
        if not isinstance(vocab, dict):
            vocab = json.loads(Path(vocab).read_text(encoding="utf-8"))
        if isinstance(merges, (str, os.PathLike)):
            merges = _read_merges_txt(Path(merges))
        if compat not in ("openai", "transformers"):
            raise ValueError(f"compat must be 'openai' or 'transformers', got {compat!r}")
        self.compat: Compat = compat
        self.encoder: dict[str, int] = dict(vocab)
        self.merges: list[tuple[str, str]] = [tuple(m) for m in merges]
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.added_tokens_encoder = {t: i for t, i in (added_tokens or {}).items() if t not in self.encoder}
        self.decoder: dict[int, str] = {i: t for t, i in chain(self.encoder.items(), self.added_tokens_encoder.items())}
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.additional_special_tokens = list(additional_special_tokens)
        named = [("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token), ("unk_token", unk_token)]
        for name, token in named + [("additional_special_tokens", t) for t in self.additional_special_tokens]:
            if token not in self.encoder and token not in self.added_tokens_encoder:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")
        if not isinstance(model_max_length, int) or model_max_length < 2:
            raise ValueError(f"model_max_length must be an integer >= 2, got {model_max_length!r}")
        self.model_max_length = model_max_length
        self.cache_size = cache_size

        byte_encoder = bytes_to_unicode()
        self._byte_table = str.maketrans({chr(b): c for b, c in byte_encoder.items()})
        self._unbyte_table = str.maketrans({c: chr(b) for b, c in byte_encoder.items()})
        specials = list(dict.fromkeys([bos_token, eos_token]))
        if compat == "openai":
            # The original finds its special tokens after cleaning, in lower case, anywhere in the text.
            special_alternatives = "".join(regex.escape(t) + "|" for t in specials)
            self._pieces = regex.compile(special_alternatives + _PIECES, regex.IGNORECASE).findall
            self._literal_tokens = list(self.added_tokens_encoder)
            self._special_pieces = {t: [self.convert_tokens_to_ids(t)] for t in specials}
        else:
            # transformers splits its added tokens (the special ones included) out of the raw text first.
            self._pieces = regex.compile(_PIECES).findall
            self._literal_tokens = list(dict.fromkeys([*specials, *self.added_tokens_encoder]))
            self._special_pieces = {}
        by_length = sorted(self._literal_tokens, key=len, reverse=True)
        self._literal_split = regex.compile("(" + "|".join(map(regex.escape, by_length)) + ")") if by_length else None
        self._cache: dict[str, list[int]] = dict(self._special_pieces)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_bpe_file(cls, bpe_path: str | os.PathLike = DEFAULT_BPE_PATH, **kwargs: Any) -> CLIPTokenizer:
        """Build from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (the file OpenAI's `clip` package ships)."""
        vocab, merges = read_openai_bpe(bpe_path)
        return cls(vocab, merges, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> CLIPTokenizer:
        """Load a HF checkpoint folder (or hub id): `vocab.json` + `merges.txt`, or `tokenizer.json`.

        Special tokens, `model_max_length` and added tokens come from `tokenizer_config.json`,
        `special_tokens_map.json`, `added_tokens.json` and `tokenizer.json` where present; keyword
        arguments override them (e.g. `compat="transformers"`).
        """
        folder = resolve_folder(pretrained_model_name_or_path, what="tokenizer")
        fast = _read_json(folder / FAST_TOKENIZER_FILE)
        if (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
            vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
            merges = _read_merges_txt(folder / MERGES_FILE)
        elif fast.get("model", {}).get("type") == "BPE":
            vocab = fast["model"]["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in fast["model"]["merges"]]
        else:
            raise FileNotFoundError(
                f"tokenizer folder {str(folder)!r} has neither {VOCAB_FILE} + {MERGES_FILE} nor a BPE "
                f"{FAST_TOKENIZER_FILE}"
            )
        config = _read_json(folder / CONFIG_FILE)
        entries = [
            *fast.get("added_tokens", []),
            *({"id": int(i), **t} for i, t in config.get("added_tokens_decoder", {}).items()),
        ]
        added = {t["content"]: t["id"] for t in entries}
        added.update(_read_json(folder / ADDED_TOKENS_FILE))
        special_map = _read_json(folder / SPECIAL_TOKENS_FILE)
        extra_special = [_token_content(t) for t in special_map.get("additional_special_tokens", [])]
        extra_special += [t["content"] for t in entries if t.get("special") and t["content"] not in vocab]
        settings: dict[str, Any] = {
            "added_tokens": added,
            "additional_special_tokens": list(dict.fromkeys(extra_special)),
        }
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = _token_content(special_map.get(name, config.get(name)))
            if value is not None:
                settings[name] = value
        if isinstance(config.get("model_max_length"), int):
            settings["model_max_length"] = config["model_max_length"]
        return cls(vocab, merges, **{**settings, **kwargs})

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write `vocab.json` and `merges.txt` (HF format); returns their paths."""
        folder = Path(save_directory)
        if not folder.is_dir():
            raise NotADirectoryError(f"save_directory {str(folder)!r} is not an existing folder")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        vocab_path, merges_path = folder / f"{prefix}{VOCAB_FILE}", folder / f"{prefix}{MERGES_FILE}"
        vocab_path.write_text(json.dumps(self.encoder, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        return str(vocab_path), str(merges_path)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write a folder that both torchclip and `transformers.CLIPTokenizer.from_pretrained` load."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        files = self.save_vocabulary(folder)
        specials: dict[str, Any] = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
        }
        config = {
            "tokenizer_class": "CLIPTokenizer",
            **specials,
            "model_max_length": self.model_max_length,
            "do_lower_case": True,
            "errors": "replace",
            "added_tokens_decoder": {
                str(self.convert_tokens_to_ids(t)): {"content": t, "special": t in self.all_special_tokens}
                for t in dict.fromkeys([*specials.values(), *self.added_tokens_encoder])
            },
        }
        if self.additional_special_tokens:
            specials["additional_special_tokens"] = self.additional_special_tokens
        written = []
        for name, content in [(CONFIG_FILE, config), (SPECIAL_TOKENS_FILE, specials)]:
            (folder / name).write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written.append(str(folder / name))
        return (*written, *files)

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (without added tokens), as in HF."""
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder) + len(self.added_tokens_encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens_encoder}

    @property
    def bos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.eos_token)

    @property
    def pad_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.pad_token)

    @property
    def unk_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.unk_token)

    @property
    def all_special_tokens(self) -> list[str]:
        named = [self.bos_token, self.eos_token, self.unk_token, self.pad_token]
        return list(dict.fromkeys(named + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Token string(s) to id(s); unknown tokens become `unk_token_id`."""
        if isinstance(tokens, str):
            found = self.encoder.get(tokens, self.added_tokens_encoder.get(tokens))
            return (
                found
                if found is not None
                else self.encoder.get(self.unk_token, self.added_tokens_encoder.get(self.unk_token))
            )
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) to token string(s) (byte-level symbols, `</w>` marking word ends)."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in skip]

    def _id_to_token(self, token_id: int) -> str:
        try:
            return self.decoder[token_id]
        except KeyError:
            raise IndexError(f"token id {token_id} is out of the vocabulary (0..{len(self) - 1})") from None

    # ------------------------------------------------------------------ text -> ids

    def _clean_openai(self, text: str) -> str:
        """OpenAI's `whitespace_clean(basic_clean(text)).lower()`, skipping ftfy where it cannot change anything."""
        if not (text.isascii() and _FTFY_MAY_CHANGE_ASCII.search(text) is None):
            text = html.unescape(html.unescape(ftfy.fix_text(text)))
        return " ".join(text.split()).lower()

    @staticmethod
    def _clean_transformers(text: str) -> str:
        """transformers' normalizer: NFC, whitespace runs to one space, per-character lower case."""
        surrogate = None if text.isascii() else _SURROGATE.search(text)
        if surrogate is not None:  # transformers cannot pass these to its Rust tokenizer either
            raise ValueError(
                f"text holds a lone surrogate U+{ord(surrogate.group()):04X} at index {surrogate.start()}, which "
                "compat='transformers' cannot encode (compat='openai' replaces it, as the original does)"
            )
        text = _HF_WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
        return text.lower() if text.isascii() else "".join(c.lower() for c in text)

    def _word_ids(self, word: str) -> list[int]:
        """Ids of one pre-tokenized piece: its UTF-8 bytes as symbols, merged by BPE, cached.

        As the original: repeatedly take the lowest-ranked adjacent pair and merge all its occurrences,
        left to right. `pair_ranks[i]` is the rank of (symbols[i], symbols[i + 1]), updated in place
        around each merge rather than recomputed.
        """
        symbols = list(word.encode("utf-8").decode("latin-1").translate(self._byte_table))
        symbols[-1] += WORD_END
        ranks, never = self.bpe_ranks, len(self.bpe_ranks)
        pair_ranks = list(map(ranks.get, zip(symbols, symbols[1:]), repeat(never)))
        while pair_ranks:
            best = min(pair_ranks)
            if best == never:
                break
            merged = "".join(self.merges[best])
            j = pair_ranks.index(best)
            while True:
                symbols[j : j + 2] = [merged]
                del pair_ranks[j]
                if j > 0:
                    pair_ranks[j - 1] = ranks.get((symbols[j - 1], merged), never)
                if j < len(pair_ranks):
                    pair_ranks[j] = ranks.get((merged, symbols[j + 1]), never)
                try:  # the next occurrence starts right of the merged symbol (never overlapping it)
                    j = pair_ranks.index(best, j + 1)
                except ValueError:
                    break
        unk = self.unk_token_id
        ids = [self.encoder.get(s, unk) for s in symbols]
        if len(self._cache) >= self.cache_size:
            self._cache = dict(self._special_pieces)
        self._cache[word] = ids
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        """Ids of text that holds no added token (without bos/eos)."""
        if self.compat == "openai":
            words = self._pieces(self._clean_openai(text))
        else:
            words = [w for p in self._pieces(self._clean_transformers(text)) for w in _GPT2_PIECES.findall(p)]
        cache = self._cache
        ids: list[int] = []
        for word in words:
            word_ids = cache.get(word)
            ids += word_ids if word_ids is not None else self._word_ids(word)
        return ids

    def _encode_text(self, text: str) -> list[int]:
        """Ids of one text (without bos/eos), added tokens split out of the raw text first."""
        if self._literal_split is None:
            return self._encode_plain(text)
        ids: list[int] = []
        for i, part in enumerate(self._literal_split.split(text)):
            if i % 2:
                ids.append(self.convert_tokens_to_ids(part))
            elif part:
                ids += self._encode_plain(part)
        return ids

    def tokenize(self, text: str) -> list[str]:
        """The BPE tokens of `text` (without bos/eos), e.g. ["a</w>", "photo</w>"]."""
        return self.convert_ids_to_tokens(self._encode_text(_check_text(text)))

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """`bos A eos` (or `bos A eos eos B eos` for a pair), as HF's CLIPTokenizer."""
        bos, eos = [self.bos_token_id], [self.eos_token_id]
        if token_ids_1 is None:
            return bos + list(token_ids_0) + eos
        return bos + list(token_ids_0) + eos + eos + list(token_ids_1) + eos

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where `build_inputs_with_special_tokens` puts a special token, 0 elsewhere."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when the ids already hold their special tokens")
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1, 1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """All zeros (CLIP has no token types), as long as `build_inputs_with_special_tokens`' output."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
    ) -> list[int]:
        """The ids of one text (a list), with the same options as `__call__`."""
        return self(
            _check_text(text),
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
        )["input_ids"]

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        add_special_tokens: bool = True,
    ) -> BatchEncoding:
        """Tokenize a text or a list of texts into `input_ids` (+ `attention_mask`).

        padding: False (none), True / "longest" (to the longest text), "max_length" (to `max_length`, or to
            the longest text if that is longer and not truncated).
        truncation: True cuts texts longer than `max_length`, keeping the end token last.
        max_length: defaults to `model_max_length` (77) when padding to it or truncating.
        return_tensors: "pt" (torch), "np" (numpy) or None (Python lists).
        """
        is_batch = not isinstance(text, str)
        texts = _check_texts(text)
        pad_mode, truncate, max_length = self._check_options(padding, truncation, max_length)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if add_special_tokens:
            bos, eos = [self.bos_token_id], [self.eos_token_id]
            sequences = [bos + self._encode_text(t) + eos for t in texts]
        else:
            sequences = [self._encode_text(t) for t in texts]
        if truncate and max_length is not None:
            sequences = [self._truncate(ids, max_length, add_special_tokens) for ids in sequences]

        lengths = [len(ids) for ids in sequences]
        width = max_length if pad_mode == "max_length" else max(lengths, default=0)
        if pad_mode is None:
            if return_tensors is not None and len(set(lengths)) > 1:
                raise ValueError(
                    f"cannot make a {return_tensors!r} tensor from texts of different lengths ({min(lengths)} to "
                    f"{max(lengths)} tokens): pass padding=True or padding='max_length'"
                )
            input_ids: Any = sequences
            attention_mask: Any = [[1] * n for n in lengths]
        else:
            input_ids, mask = _pad(sequences, lengths, max(width, max(lengths, default=0)), self.pad_token_id)
            attention_mask = mask.astype(np.int64)
            if return_tensors is None:
                input_ids, attention_mask = input_ids.tolist(), attention_mask.tolist()
        if not is_batch and return_tensors is None:
            input_ids, attention_mask = input_ids[0], attention_mask[0]
        encoding = {"input_ids": convert_to_tensors(input_ids, return_tensors)}
        if return_attention_mask:
            encoding["attention_mask"] = convert_to_tensors(attention_mask, return_tensors)
        return BatchEncoding(encoding)

    def _check_options(
        self, padding: bool | str, truncation: bool | str, max_length: int | None
    ) -> tuple[str | None, bool, int | None]:
        """Validate `__call__`'s options: (padding mode or None, truncate?, effective max_length)."""
        pad_modes = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
        truncation_modes = {
            False: False,
            "do_not_truncate": False,
            True: True,
            "longest_first": True,
            "only_first": True,
        }
        if not isinstance(padding, (bool, str)) or padding not in pad_modes:
            raise ValueError(f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if not isinstance(truncation, (bool, str)) or truncation not in truncation_modes:
            raise ValueError(
                "truncation must be True, False, 'longest_first', 'only_first' or 'do_not_truncate', "
                f"got {truncation!r}"
            )
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2
        ):
            raise ValueError(
                f"max_length must be an integer >= 2 (room for the start and end tokens), got {max_length!r}"
            )
        pad_mode, truncate = pad_modes[padding], truncation_modes[truncation]
        if max_length is None and (pad_mode == "max_length" or truncate):
            max_length = self.model_max_length
        return pad_mode, truncate, max_length

    def _truncate(self, ids: list[int], max_length: int, has_special_tokens: bool) -> list[int]:
        """Cut to `max_length`; with special tokens the end token stays last, as in OpenAI's `tokenize`."""
        if len(ids) <= max_length:
            return ids
        return ids[: max_length - 1] + [ids[-1]] if has_special_tokens else ids[:max_length]

    # ------------------------------------------------------------------ ids -> text

    def decode(
        self, token_ids: int | Iterable[int] | torch.Tensor | np.ndarray, skip_special_tokens: bool = False
    ) -> str:
        """Text of a sequence of ids, decoded as the reference named by `compat` decodes it.

        "openai": OpenAI's `decode` (each `</w>` becomes a space, so the text ends with one);
        "transformers": HF's (the same, then stripped).
        """
        if isinstance(token_ids, (torch.Tensor, np.ndarray)):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        # Added tokens are whole strings, not byte-level symbols: decode the runs between them.
        parts, run = [], []
        for token in tokens:
            if token in self.added_tokens_encoder:
                parts += [self._decode_bytes(run), token]
                run = []
            else:
                run.append(token)
        text = "".join(parts) + self._decode_bytes(run)
        return text.strip() if self.compat == "transformers" else text

    def _decode_bytes(self, tokens: list[str]) -> str:
        data = "".join(tokens).translate(self._unbyte_table).encode("latin-1", errors="replace")
        return data.decode("utf-8", errors="replace").replace(WORD_END, " ")

    def batch_decode(
        self, sequences: Iterable[Iterable[int]] | torch.Tensor | np.ndarray, skip_special_tokens: bool = False
    ) -> list[str]:
        """`decode` for each sequence (rows of a 2-D tensor or array)."""
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def __repr__(self) -> str:
        return (
            f"CLIPTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"pad_token={self.pad_token!r}, compat={self.compat!r})"
        )


def _pad(sequences: list[list[int]], lengths: list[int], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, width] int64 ids padded with `pad_id`, and the boolean mask of real tokens, in one numpy step."""
    lengths_array = np.asarray(lengths, dtype=np.int64)
    mask = np.arange(width) < lengths_array[:, None]
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(chain.from_iterable(sequences), dtype=np.int64, count=int(lengths_array.sum()))
    return ids, mask


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return text


def _check_texts(text: Any) -> list[str]:
    """A string or a list/tuple of strings as a list, or an error saying which item is wrong."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
    for i, item in enumerate(text):
        if not isinstance(item, str):
            raise TypeError(f"text[{i}] must be a string, got {type(item).__name__}: {item!r:.50}")
    return list(text)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_merges_txt(path: Path) -> list[tuple[str, str]]:
    """HF's merges.txt: an optional "#version" header, then one "left right" pair per line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [tuple(line.split(" ")) for line in lines if line]


_DEFAULT_TOKENIZER: CLIPTokenizer | None = None


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: a LongTensor [N, context_length] of ids, zero-padded.

    A text longer than `context_length` tokens raises, unless `truncate=True` (then the end token is kept).
    """
    global _DEFAULT_TOKENIZER
    if _DEFAULT_TOKENIZER is None:
        _DEFAULT_TOKENIZER = CLIPTokenizer()
    tokenizer = _DEFAULT_TOKENIZER
    texts = _check_texts(texts)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an integer >= 2, got {context_length!r}")
    bos, eos = [tokenizer.bos_token_id], [tokenizer.eos_token_id]
    sequences = [bos + tokenizer._encode_text(t) + eos for t in texts]
    for i, ids in enumerate(sequences):
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(
                    f"Input text[{i}] {texts[i]!r:.200} is too long for context length {context_length} "
                    f"({len(ids)} tokens); pass truncate=True to cut it"
                )
            sequences[i] = tokenizer._truncate(ids, context_length, has_special_tokens=True)
    ids, _ = _pad(sequences, [len(s) for s in sequences], context_length, pad_id=0)
    return torch.from_numpy(ids)
