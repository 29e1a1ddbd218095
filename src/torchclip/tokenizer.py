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
import os
import unicodedata
import warnings
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
from torchclip.io import (
    ADDED_TOKENS_FILE,
    FAST_TOKENIZER_FILE,
    MERGES_FILE,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_CONFIG_FILE,
    VOCAB_FILE,
    read_json,
    write_json,
    write_text_atomic,
)

DEFAULT_BPE_PATH = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's vocabulary uses only the first 49152 - 256 - 2 merges of the file (which holds many more).
OPENAI_NUM_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77
WORD_END = "</w>"

Compat = Literal["openai", "transformers"]
Side = Literal["right", "left"]
# The named special tokens of transformers' tokenizers; CLIP uses the first four, the others are None.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
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
    if isinstance(value, dict):
        return value.get("content")
    return getattr(value, "content", value)  # a tokenizers/transformers AddedToken


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
        padding_side: Side = "right",
        truncation_side: Side = "right",
        **init_kwargs: Any,
    ) -> None:
        """Build from a vocabulary and merge list (in memory, or `vocab.json` / `merges.txt` paths).

        With neither given, the standard CLIP vocabulary bundled with torchclip is used. `added_tokens`
        are extra whole tokens (id beyond the BPE vocabulary) matched literally in the raw text;
        those also in `additional_special_tokens` are dropped by `skip_special_tokens`. A special token
        that is in neither is added to the vocabulary, as transformers does. `padding_side` and
        `truncation_side` ("right" or "left") are the defaults of `__call__` and `pad`.
        `cache_size` bounds the per-word cache (it is emptied when full). Other keyword arguments that
        transformers' tokenizer configs carry (`do_lower_case`, `errors`, ...) are kept in `init_kwargs`
        and written back by `save_pretrained`; they change nothing (CLIP always lower-cases).
        """
        if (vocab is None) != (merges is None):
            raise ValueError("pass both vocab and merges, or neither (for the standard CLIP vocabulary)")
        if vocab is None:
            vocab, merges = read_openai_bpe()
        if not isinstance(vocab, dict):
            vocab = read_json(vocab)
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
        if not isinstance(model_max_length, int) or model_max_length < 2:
            raise ValueError(f"model_max_length must be an integer >= 2, got {model_max_length!r}")
        self.model_max_length = model_max_length
        self.padding_side = _check_side(padding_side, "padding_side")
        self.truncation_side = _check_side(truncation_side, "truncation_side")
        self.cache_size = cache_size
        for key in ("name_or_path", "tokenizer_class", "added_tokens_decoder", "vocab_file", "merges_file"):
            init_kwargs.pop(key, None)  # describe the files, not the tokenizer
        for key in init_kwargs:
            if callable(getattr(type(self), key, None)):
                raise AttributeError(f"init key {key!r} conflicts with the method {key} of CLIPTokenizer")
        self._extra_init_kwargs = init_kwargs
        self.init_inputs: tuple = ()  # transformers keeps the positional init arguments here; all are keywords
        # every setting it was built with, as transformers' `init_kwargs` holds them
        self.init_kwargs = {
            "bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token,
            "model_max_length": model_max_length, "added_tokens": added_tokens, "compat": compat,
            "cache_size": cache_size, "padding_side": padding_side, "truncation_side": truncation_side,
            **init_kwargs,
        }  # fmt: skip
        byte_encoder = bytes_to_unicode()
        self._byte_table = str.maketrans({chr(b): c for b, c in byte_encoder.items()})
        self._unbyte_table = str.maketrans({c: chr(b) for b, c in byte_encoder.items()})
        self._special: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        for name in ("sep_token", "cls_token", "mask_token"):  # CLIP has none, but a caller may name them
            if init_kwargs.get(name) is not None:
                named[name] = init_kwargs.pop(name)
        self._special.update({name: _token_content(token) for name, token in named.items()})
        self._additional_special_tokens = [_token_content(token) for token in additional_special_tokens]
        for token in [*self._special.values(), *self._additional_special_tokens]:
            if token is not None:
                self._add_token(_token_content(token))
        self._rebuild_matchers()

    def _rebuild_matchers(self) -> None:
        """The regexes that split special and added tokens out of a text, after any change to them."""
        specials = [token for token in dict.fromkeys([self.bos_token, self.eos_token]) if token is not None]
        special_set = set(self.all_special_tokens)
        added = [t for t in self.added_tokens_encoder if t not in specials]
        if self.compat == "openai":
            # The original finds its special tokens after cleaning, in lower case, anywhere in the text.
            special_alternatives = "".join(regex.escape(t) + "|" for t in specials)
            self._pieces = regex.compile(special_alternatives + _PIECES, regex.IGNORECASE).findall
            literal = added
            self._special_pieces = {t: [self.convert_tokens_to_ids(t)] for t in specials}
        else:
            # transformers splits its added tokens (the special ones included) out of the raw text first.
            self._pieces = regex.compile(_PIECES).findall
            literal = list(dict.fromkeys([*specials, *added]))
            self._special_pieces = {}
        # special tokens match exactly; other added tokens, as transformers' "normalized" ones, in any case
        by_length = sorted(literal, key=len, reverse=True)
        alternatives = [regex.escape(t) if t in special_set else "(?i:" + regex.escape(t) + ")" for t in by_length]
        self._literal_split = regex.compile("(" + "|".join(alternatives) + ")") if by_length else None
        self._added_lower = {t.lower(): t for t in added if t not in special_set}
        self._cache: dict[str, list[int]] = dict(self._special_pieces)

    def _add_token(self, token: str) -> bool:
        """Give a token not yet in the vocabulary the next id; whether it was new."""
        if token in self.encoder or token in self.added_tokens_encoder:
            return False
        new_id = max(self.decoder, default=-1) + 1
        self.added_tokens_encoder[token] = new_id
        self.decoder[new_id] = token
        return True

    def add_tokens(self, new_tokens: str | Any | Sequence[str | Any], special_tokens: bool = False) -> int:
        """Add whole tokens (strings, or transformers/tokenizers `AddedToken`s) with ids after the vocabulary;
        the number actually added. `special_tokens=True` also makes them special (`skip_special_tokens`)."""
        tokens = [new_tokens] if isinstance(new_tokens, str) or hasattr(new_tokens, "content") else list(new_tokens)
        count = 0
        for token in tokens:
            content = _token_content(token)
            if not isinstance(content, str) or not content:
                raise TypeError(f"add_tokens: each token must be a non-empty string or AddedToken, got {token!r}")
            count += self._add_token(content)
            if (special_tokens or getattr(token, "special", False)) and content not in self.all_special_tokens:
                self._additional_special_tokens.append(content)
        self._rebuild_matchers()
        return count

    def add_special_tokens(
        self,
        special_tokens_dict: dict[str, Any],
        replace_additional_special_tokens: bool = True,
        replace_extra_special_tokens: bool | None = None,
    ) -> int:
        """Set named special tokens (`{"pad_token": "[PAD]", "additional_special_tokens": [...]}`), adding
        those not yet in the vocabulary; returns the number added, as transformers does.
        `replace_extra_special_tokens` is transformers 5's name of `replace_additional_special_tokens`."""
        if replace_extra_special_tokens is not None:
            replace_additional_special_tokens = replace_extra_special_tokens
        count = 0
        for name, value in special_tokens_dict.items():
            if name in ("additional_special_tokens", "extra_special_tokens"):
                contents = [_token_content(token) for token in value]
                count += sum(self._add_token(content) for content in contents)
                if replace_additional_special_tokens:
                    self._additional_special_tokens = list(dict.fromkeys(contents))
                else:
                    self._additional_special_tokens = list(dict.fromkeys([*self._additional_special_tokens, *contents]))
            elif name in SPECIAL_TOKEN_NAMES:
                content = _token_content(value)
                count += self._add_token(content) if content is not None else 0
                self._special[name] = content
            else:
                known = [*SPECIAL_TOKEN_NAMES, "additional_special_tokens"]
                raise ValueError(f"add_special_tokens: unknown key {name!r}; known: {known}")
        self._rebuild_matchers()
        return count

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
        fast = read_json(folder / FAST_TOKENIZER_FILE, missing_ok=True)
        if (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
            vocab = read_json(folder / VOCAB_FILE)
            merges = _read_merges_txt(folder / MERGES_FILE)
        elif fast.get("model", {}).get("type") == "BPE":
            vocab = fast["model"]["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in fast["model"]["merges"]]
        else:
            raise FileNotFoundError(
                f"tokenizer folder {str(folder)!r} has neither {VOCAB_FILE} + {MERGES_FILE} nor a BPE "
                f"{FAST_TOKENIZER_FILE}"
            )
        config = read_json(folder / TOKENIZER_CONFIG_FILE, missing_ok=True)
        entries = [
            *fast.get("added_tokens", []),
            *({"id": int(i), **t} for i, t in config.get("added_tokens_decoder", {}).items()),
        ]
        added = {t["content"]: t["id"] for t in entries}
        added.update(read_json(folder / ADDED_TOKENS_FILE, missing_ok=True))
        special_map = read_json(folder / SPECIAL_TOKENS_FILE, missing_ok=True)
        extra_special = [
            _token_content(t)
            for key in ("additional_special_tokens", "extra_special_tokens")
            for t in [*special_map.get(key, []), *config.get(key, [])]
        ]
        extra_special += [t["content"] for t in entries if t.get("special") and t["content"] not in vocab]
        settings: dict[str, Any] = {
            "added_tokens": added,
            "additional_special_tokens": list(dict.fromkeys(extra_special)),
        }
        for name in SPECIAL_TOKEN_NAMES:
            value = _token_content(special_map.get(name, config.get(name)))
            if value is not None:
                settings[name] = value
        if isinstance(config.get("model_max_length"), int):
            settings["model_max_length"] = config["model_max_length"]
        # the other settings of tokenizer_config.json (padding_side, do_lower_case, ...) as init keys
        consumed = {*settings, "additional_special_tokens", "extra_special_tokens", "model_max_length"}
        passed = {key: value for key, value in config.items() if key not in consumed and not key.startswith("_")}
        return cls(vocab, merges, **{**passed, **settings, **kwargs})

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write `vocab.json` and `merges.txt` (HF format, each atomically); returns their paths."""
        folder = Path(save_directory)
        if not folder.is_dir():
            raise NotADirectoryError(f"save_directory {str(folder)!r} is not an existing folder")
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        vocab_path, merges_path = folder / f"{prefix}{VOCAB_FILE}", folder / f"{prefix}{MERGES_FILE}"
        write_json(vocab_path, self.encoder, ensure_ascii=False)
        write_text_atomic(merges_path, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        return str(vocab_path), str(merges_path)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> tuple[str, ...]:
        """Write a folder that both torchclip and `transformers.CLIPTokenizer.from_pretrained` load, each file
        atomically (a failure leaves it as it was). Keyword arguments of transformers' signature
        (`legacy_format`, `save_jinja_files`, ...) change nothing."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        files = self.save_vocabulary(folder)
        specials: dict[str, Any] = {name: token for name, token in self._special.items() if token is not None}
        config = {
            "do_lower_case": True,
            "errors": "replace",
            **self._extra_init_kwargs,
            "tokenizer_class": "CLIPTokenizer",
            **specials,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "added_tokens_decoder": {
                str(self.convert_tokens_to_ids(t)): {"content": t, "special": t in self.all_special_tokens}
                for t in dict.fromkeys([*specials.values(), *self.added_tokens_encoder])
            },
        }
        if self.compat != "openai":
            config["compat"] = self.compat
        if self.additional_special_tokens:
            specials["additional_special_tokens"] = self.additional_special_tokens
        written = []
        for name, content in [(TOKENIZER_CONFIG_FILE, config), (SPECIAL_TOKENS_FILE, specials)]:
            write_json(folder / name, content, ensure_ascii=False)
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

    # the named special tokens (`bos_token`, ..., `mask_token`) and their ids are properties, set below the class

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional_special_tokens)

    @additional_special_tokens.setter
    def additional_special_tokens(self, tokens: Sequence[str]) -> None:
        self.add_special_tokens({"additional_special_tokens": list(tokens)})

    extra_special_tokens = additional_special_tokens  # transformers 5's name

    @property
    def extra_special_tokens_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(token) for token in self._additional_special_tokens]

    @extra_special_tokens_ids.setter
    def extra_special_tokens_ids(self, ids: Sequence[int]) -> None:
        self.additional_special_tokens = [self.convert_ids_to_tokens(int(i)) for i in ids]

    @property
    def pad_token_type_id(self) -> int:
        """CLIP has no token types: padding, as every position, is type 0."""
        return 0

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens `__call__` adds to one text (2) or a pair (4)."""
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """The named special tokens that are set, and the additional ones, as transformers reports them."""
        named: dict[str, Any] = {name: token for name, token in self._special.items() if token is not None}
        if self._additional_special_tokens:
            named["additional_special_tokens"] = list(self._additional_special_tokens)
        return named

    @property
    def all_special_tokens(self) -> list[str]:
        named = [self._special[name] for name in SPECIAL_TOKEN_NAMES]
        return list(dict.fromkeys(t for t in [*named, *self._additional_special_tokens] if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def added_tokens_decoder(self) -> dict[int, str]:
        """Id -> token of the tokens outside the BPE vocabulary."""
        return {i: t for t, i in self.added_tokens_encoder.items()}

    def get_added_vocab(self) -> dict[str, int]:
        return dict(self.added_tokens_encoder)

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
                token = part if part in self.added_tokens_encoder else self._added_lower.get(part.lower(), part)
                ids.append(self.convert_tokens_to_ids(token))
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
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> list[int] | Any:
        """The ids of one text (or text pair): a list, or a [1, L] tensor with `return_tensors`; the other
        options as `__call__`'s."""
        encoding = self(
            _check_text(text),
            text_pair if text_pair is None else _check_text(text_pair),
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
            **kwargs,
        )
        return encoding["input_ids"]

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        text_target: str | Sequence[str] | None = None,
        *,
        max_target_length: int | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: Side | None = None,
        truncation_side: Side | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize a text or a list of texts (and their `text_pair`s) into `input_ids` (+ `attention_mask`).

        padding: False (none), True / "longest" (to the longest text), "max_length" (to `max_length`, or to
            the longest text if that is longer and not truncated); `pad_to_multiple_of` rounds the width up.
        truncation: True / "longest_first" cuts texts (pairs: the longer one first) to `max_length`,
            special tokens included; "only_first" / "only_second" cut one text of a pair. None: truncate
            only when `max_length` is given without padding, as transformers does.
        max_length: defaults to `model_max_length` (77) when padding to it or truncating.
        padding_side / truncation_side: "right" or "left" (default: the tokenizer's attributes).
        return_overflowing_tokens: the cut-off tokens come back as further rows (windows overlapping by
            `stride` tokens), with `overflow_to_sample_mapping` naming each row's text, as transformers'.
        return_special_tokens_mask / return_length / return_token_type_ids: add those entries.
        is_split_into_words: each text is a list of words (joined with spaces, which CLIP splits on).
        text_target: texts whose ids come back as `labels` (cut to `max_target_length`, default max_length),
            with the same options, as transformers' sequence-to-sequence interface.
        return_tensors: "pt" (torch), "np" (numpy) or None (Python lists).
        """
        if text_target is not None:
            options = dict(
                add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, stride=stride,
                is_split_into_words=is_split_into_words, pad_to_multiple_of=pad_to_multiple_of,
                padding_side=padding_side, truncation_side=truncation_side, return_tensors=return_tensors,
            )  # fmt: skip
            target_length = max_length if max_target_length is None else max_target_length
            labels = self(text_target, max_length=target_length, return_attention_mask=False, **options)
            if text is None:
                return labels
            encoding = self(text, text_pair, max_length=max_length, return_attention_mask=return_attention_mask,
                            return_special_tokens_mask=return_special_tokens_mask, return_length=return_length,
                            **options)  # fmt: skip
            encoding["labels"] = labels["input_ids"]
            return encoding
        if text is None:
            raise TypeError("text must be a string or a list of strings, got NoneType (or pass text_target)")
        if kwargs:
            warnings.warn(f"CLIPTokenizer ignores keyword arguments {sorted(kwargs)}", stacklevel=2)
        if return_offsets_mapping:
            raise NotImplementedError("return_offsets_mapping is not available: CLIPTokenizer keeps no offsets")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        is_batch = not isinstance(text, str) and not (is_split_into_words and _is_words(text))
        pairs_batch = isinstance(text, (list, tuple)) and text and all(_is_pair(t, is_split_into_words) for t in text)
        if is_batch and text_pair is None and pairs_batch:
            text, text_pair = [item[0] for item in text], [item[1] for item in text]  # a batch of (text, pair)
        texts = _check_texts(_join_words(text, is_batch) if is_split_into_words else text)
        pairs = None
        if text_pair is not None:
            pairs = _check_texts(_join_words(text_pair, is_batch) if is_split_into_words else text_pair)
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        max_length_given = max_length is not None
        pad_mode, strategy, max_length = self._check_options(padding, truncation, max_length)
        padding_side = _check_side(self.padding_side if padding_side is None else padding_side, "padding_side")
        truncation_side = _check_side(
            self.truncation_side if truncation_side is None else truncation_side, "truncation_side"
        )
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
        if pad_mode and strategy and pad_to_multiple_of and max_length_given and max_length % pad_to_multiple_of:
            raise ValueError(
                f"truncation to max_length {max_length} and padding to a multiple of {pad_to_multiple_of} "
                "contradict each other: max_length must be a multiple of pad_to_multiple_of"
            )

        rows: list[list[int]] = []
        special_masks: list[list[int]] = []
        samples: list[int] = []
        for index, first_text in enumerate(texts):
            first = self._encode_text(first_text)
            second = None if pairs is None else self._encode_text(pairs[index])
            parts = [(first, second)]
            if strategy and max_length is not None:
                parts = self._truncated(
                    first, second, strategy, max_length, stride, add_special_tokens, truncation_side,
                    return_overflowing_tokens,
                )  # fmt: skip
            for part_first, part_second in parts:
                if add_special_tokens:
                    rows.append(self.build_inputs_with_special_tokens(part_first, part_second))
                else:
                    rows.append(part_first + (part_second or []))
                if return_special_tokens_mask:
                    special_masks.append(
                        self.get_special_tokens_mask(part_first, part_second)
                        if add_special_tokens
                        else [0] * len(rows[-1])
                    )
                samples.append(index)

        encoding: dict[str, Any] = {"input_ids": rows}
        if return_token_type_ids:
            encoding["token_type_ids"] = [[0] * len(row) for row in rows]
        if return_attention_mask is not False:
            encoding["attention_mask"] = [[1] * len(row) for row in rows]
        if return_special_tokens_mask:
            encoding["special_tokens_mask"] = special_masks
        if pad_mode is not None:
            width = max(len(row) for row in rows) if rows else 0
            if pad_mode == "max_length":
                width = max(width, max_length or 0)
            encoding = self._padded(encoding, width, pad_to_multiple_of, padding_side)
        elif return_tensors is not None and len({len(row) for row in rows}) > 1:
            lengths = [len(row) for row in rows]
            raise ValueError(
                f"cannot make a {return_tensors!r} tensor from texts of different lengths ({min(lengths)} to "
                f"{max(lengths)} tokens): pass padding=True or padding='max_length'"
            )
        if return_length:
            encoding["length"] = [len(row) for row in encoding["input_ids"]]
        if return_overflowing_tokens:
            encoding["overflow_to_sample_mapping"] = samples
        elif not is_batch and return_tensors is None:
            encoding = {key: value[0] for key, value in encoding.items()}
        return _encoding(encoding, return_tensors)

    def _truncated(
        self,
        first: list[int],
        second: list[int] | None,
        strategy: str,
        max_length: int,
        stride: int,
        add_special_tokens: bool,
        side: Side,
        overflow: bool,
    ) -> list[tuple[list[int], list[int] | None]]:
        """The (first, second) id lists after truncation: one pair, or with `overflow` one per window, as
        transformers' (Rust) tokenizers cut them."""
        budget = max_length - (self.num_special_tokens_to_add(pair=second is not None) if add_special_tokens else 0)
        if second is None or strategy == "only_first":
            size = budget - (len(second) if second is not None else 0)
            if size < 0:
                raise ValueError(f"max_length {max_length} is shorter than the special tokens and the second text")
            return [(window, second) for window in _windows(first, size, stride, side, overflow)]
        if strategy == "only_second":
            size = budget - len(first)
            if size < 0:
                raise ValueError(f"max_length {max_length} is shorter than the special tokens and the first text")
            return [(first, window) for window in _windows(second, size, stride, side, overflow)]
        if overflow and len(first) + len(second) > budget:
            raise ValueError(
                "return_overflowing_tokens with truncation='longest_first' on text pairs is not supported: "
                "use truncation='only_first' or 'only_second'"
            )
        first_size, second_size = _longest_first_sizes(len(first), len(second), budget)
        return [(_windows(first, first_size, 0, side, False)[0], _windows(second, second_size, 0, side, False)[0])]

    def _padded(
        self, encoding: dict[str, Any], width: int, pad_to_multiple_of: int | None, side: Side
    ) -> dict[str, Any]:
        """Every entry padded to `width` (rounded up to `pad_to_multiple_of`), on `side`: ids with the pad
        token, masks with 0 (special-tokens masks with 1, as transformers marks padding special)."""
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        values = {"input_ids": self.pad_token_id, "special_tokens_mask": 1}
        rows = encoding["input_ids"]
        lengths = [len(row) for row in rows]
        return {
            key: _pad_rows(value, lengths, width, values.get(key, 0), left=side == "left")
            for key, value in encoding.items()
        }

    def pad(
        self,
        encoded_inputs: dict[str, Any] | Sequence[dict[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: Side | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad already tokenized inputs (a dict of lists of ids, or a list of such dicts), as transformers'
        `tokenizer.pad`, e.g. in a data collator."""
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs:
                return BatchEncoding()
            encoded_inputs = {key: [item[key] for item in encoded_inputs] for key in encoded_inputs[0]}
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad needs 'input_ids', got keys {sorted(encoded_inputs)}")
        encoding = {key: _as_lists(value) for key, value in encoded_inputs.items()}
        single = bool(encoding["input_ids"]) and not isinstance(encoding["input_ids"][0], list)
        if single:
            encoding = {key: [value] for key, value in encoding.items()}
        if return_attention_mask is not False and "attention_mask" not in encoding:
            encoding["attention_mask"] = [[1] * len(row) for row in encoding["input_ids"]]
        pad_mode, _, max_length = self._check_options(padding, False, max_length)
        side = _check_side(self.padding_side if padding_side is None else padding_side, "padding_side")
        if pad_mode is not None:
            width = max((len(row) for row in encoding["input_ids"]), default=0)
            if pad_mode == "max_length":
                width = max(width, max_length or 0)
            encoding = self._padded(encoding, width, pad_to_multiple_of, side)
        if single and return_tensors is None:
            encoding = {key: value[0] for key, value in encoding.items()}
        return _encoding(encoding, return_tensors)

    def _check_options(
        self, padding: bool | str, truncation: bool | str | None, max_length: int | None
    ) -> tuple[str | None, str | None, int | None]:
        """Validate `__call__`'s options: (padding mode or None, truncation strategy or None, max_length)."""
        pad_modes = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
        truncation_modes = {
            False: None,
            "do_not_truncate": None,
            True: "longest_first",
            "longest_first": "longest_first",
            "only_first": "only_first",
            "only_second": "only_second",
        }
        if not isinstance(padding, (bool, str)) or padding not in pad_modes:
            raise ValueError(f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation is not None and (not isinstance(truncation, (bool, str)) or truncation not in truncation_modes):
            raise ValueError(
                "truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
                f"'do_not_truncate', got {truncation!r}"
            )
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2
        ):
            raise ValueError(
                f"max_length must be an integer >= 2 (room for the start and end tokens), got {max_length!r}"
            )
        pad_mode = pad_modes[padding]
        if truncation is None:  # transformers: a max_length without padding means truncation
            strategy = "longest_first" if max_length is not None and pad_mode is None else None
        else:
            strategy = truncation_modes[truncation]
        if max_length is None and (pad_mode == "max_length" or strategy):
            max_length = self.model_max_length
        return pad_mode, strategy, max_length

    def _truncate(self, ids: list[int], max_length: int, has_special_tokens: bool) -> list[int]:
        """Cut to `max_length`; with special tokens the end token stays last, as in OpenAI's `tokenize`."""
        if len(ids) <= max_length:
            return ids
        return ids[: max_length - 1] + [ids[-1]] if has_special_tokens else ids[:max_length]

    # ------------------------------------------------------------------ ids -> text

    def decode(
        self,
        token_ids: int | Iterable[int] | torch.Tensor | np.ndarray,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """Text of a sequence of ids, decoded as the reference named by `compat` decodes it.

        "openai": OpenAI's `decode` (each `</w>` becomes a space, so the text ends with one);
        "transformers": HF's (the same, then stripped). `clean_up_tokenization_spaces` is accepted and, as
        transformers 5 does for byte-level BPE tokenizers, not applied: it would delete real spaces.
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
        self,
        sequences: Iterable[Iterable[int]] | torch.Tensor | np.ndarray,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """`decode` for each sequence (rows of a 2-D tensor or array)."""
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """The text of BPE tokens (`</w>` becomes a space)."""
        return self.decode(self.convert_tokens_to_ids(list(tokens)))

    def __repr__(self) -> str:
        return (
            f"CLIPTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"pad_token={self.pad_token!r}, compat={self.compat!r})"
        )


def _pad_rows(rows: list[list[int]], lengths: list[int], width: int, value: int, left: bool) -> np.ndarray:
    """Rows padded to `width` with `value`, on the left or the right, in one numpy step."""
    columns = np.arange(width)
    lengths_array = np.asarray(lengths, dtype=np.int64)[:, None]
    real = columns >= width - lengths_array if left else columns < lengths_array
    out = np.full((len(rows), width), value, dtype=np.int64)
    out[real] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths_array.sum()))
    return out


def _encoding(entries: dict[str, Any], return_tensors: str | None) -> BatchEncoding:
    """The BatchEncoding of rows (lists or padded arrays): lists for `return_tensors=None`."""
    if return_tensors is None:
        return BatchEncoding({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in entries.items()})
    return BatchEncoding({key: convert_to_tensors(value, return_tensors) for key, value in entries.items()})


def _windows(ids: list[int], size: int, stride: int, side: Side, overflow: bool) -> list[list[int]]:
    """`ids` cut to `size` from `side`; with `overflow`, every window of `size` overlapping by `stride`,
    the kept one first, as the Rust tokenizers behind transformers cut them."""
    size = max(size, 0)
    if len(ids) <= size:
        return [ids]
    if not overflow:
        return [ids[:size] if side == "right" else ids[len(ids) - size :]]
    step = size - stride
    if step <= 0:
        raise ValueError(f"stride ({stride}) must be smaller than the tokens left per window ({size})")
    windows = []
    if side == "right":
        for start in range(0, len(ids), step):
            windows.append(ids[start : start + size])
            if start + size >= len(ids):
                break
    else:
        for stop in range(len(ids), 0, -step):
            windows.append(ids[max(stop - size, 0) : stop])
            if stop - size <= 0:
                break
    return windows


def _longest_first_sizes(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text a pair keeps under "longest_first": the shorter keeps up to half the
    budget, the longer the rest (transformers' Rust rule; on a tie the second keeps the larger half)."""
    if first + second <= budget:
        return first, second
    if budget < 0:
        raise ValueError("max_length leaves no room for the texts after the special tokens")
    shorter = min(first, second, budget // 2)
    return (shorter, budget - shorter) if first <= second else (budget - shorter, shorter)


def _check_side(side: Any, name: str) -> Side:
    if side not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
    return side


def _is_pair(item: Any, is_split_into_words: bool) -> bool:
    """A (text, text_pair) item of a batch: two strings, or with `is_split_into_words` two word lists."""
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        return False
    return all(_is_words(part) if is_split_into_words else isinstance(part, str) for part in item)


def _is_words(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(word, str) for word in value)


def _join_words(text: Any, is_batch: bool) -> str | list[str]:
    """Pre-split input (`is_split_into_words`): each text's words joined by spaces, where CLIP splits."""
    if not is_batch:
        return " ".join(text)
    return [" ".join(words) if _is_words(words) else words for words in text]


def _as_lists(value: Any) -> Any:
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else list(value)


def _special_token_property(name: str) -> property:
    def get(self: CLIPTokenizer) -> str | None:
        return self._special[name]

    def set(self: CLIPTokenizer, token: Any) -> None:
        self._special[name] = _token_content(token)
        self._rebuild_matchers()

    return property(get, set, doc=f"The {name.replace('_', ' ')} (None: this tokenizer has none).")


def _special_token_id_property(name: str) -> property:
    def get(self: CLIPTokenizer) -> int | None:
        token = self._special[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set(self: CLIPTokenizer, token_id: int | None) -> None:
        setattr(self, name, None if token_id is None else self.convert_ids_to_tokens(int(token_id)))

    return property(get, set, doc=f"The id of the {name.replace('_', ' ')} (None: no such token).")


for _name in SPECIAL_TOKEN_NAMES:
    setattr(CLIPTokenizer, _name, _special_token_property(_name))
    setattr(CLIPTokenizer, f"{_name}_id", _special_token_id_property(_name))


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
