"""Writes that fail part-way leave every file whole (the old one, or the new one), and JSON errors name the file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import torchclip
from torchclip.image_processor import CLIPImageProcessor
from torchclip.io import atomic_folder, atomic_path, default_file_mode, read_json, write_json, write_text_atomic
from torchclip.processor import CLIPProcessor
from torchclip.tokenizer import CLIPTokenizer

TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
PROCESSOR_FILES = [*TOKENIZER_FILES, "preprocessor_config.json"]


def disk_full_on_write(monkeypatch, at: int) -> None:
    """The `at`-th file write (counting from 1) puts half its bytes on disk, then fails as a full disk does."""
    real_write_bytes = Path.write_bytes
    calls = []

    def write_bytes(self, data):
        calls.append(self)
        if len(calls) == at:
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def renames_fail(monkeypatch) -> None:
    """Every rename fails, as on a folder where the process may create files but not replace them."""

    def no_rename(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)


def old_folder(folder: Path, names: list[str]) -> dict[str, bytes]:
    """A folder holding a recognisable old version of each file."""
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(f"old {name}\n".encode())
    return {name: (folder / name).read_bytes() for name in names}


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def changed_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(model_max_length=20, padding_side="left", additional_special_tokens=["<extra>"])


def changed_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size=200, crop_size={"height": 180, "width": 232}, pipeline="transformers")


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4])
def test_tokenizer_save_that_fails_part_way_leaves_each_file_old_or_new(tmp_path, monkeypatch, failing_write):
    tokenizer = changed_tokenizer()
    tokenizer.save_pretrained(tmp_path / "clean")
    new = contents(tmp_path / "clean")
    old = old_folder(tmp_path / "saved", TOKENIZER_FILES)
    disk_full_on_write(monkeypatch, failing_write)
    with pytest.raises(OSError, match="No space left"):
        tokenizer.save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    after = contents(tmp_path / "saved")
    assert sorted(after) == sorted(TOKENIZER_FILES)  # no temporary file left behind
    assert all(after[name] in (old[name], new[name]) for name in TOKENIZER_FILES)  # none half-written
    assert sum(after[name] == new[name] for name in TOKENIZER_FILES) == failing_write - 1


def test_tokenizer_save_whose_renames_fail_keeps_the_old_files(tmp_path, monkeypatch):
    old = old_folder(tmp_path / "saved", TOKENIZER_FILES)
    renames_fail(monkeypatch)
    with pytest.raises(OSError, match="Permission denied"):
        changed_tokenizer().save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    assert contents(tmp_path / "saved") == old


def test_image_processor_save_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    old = old_folder(tmp_path / "saved", ["preprocessor_config.json"])
    disk_full_on_write(monkeypatch, 1)
    with pytest.raises(OSError, match="No space left"):
        changed_image_processor().save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    assert contents(tmp_path / "saved") == old
    changed_image_processor().save_pretrained(tmp_path / "saved")  # and the next save goes through
    assert CLIPImageProcessor.from_pretrained(tmp_path / "saved").crop_size == {"height": 180, "width": 232}


def test_image_processor_save_whose_serialisation_fails_keeps_the_old_file(tmp_path, monkeypatch):
    old = old_folder(tmp_path / "saved", ["preprocessor_config.json"])

    def unserialisable(*args, **kwargs):
        raise TypeError("not serialisable")

    monkeypatch.setattr(json, "dumps", unserialisable)
    with pytest.raises(TypeError, match="not serialisable"):
        changed_image_processor().save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    assert contents(tmp_path / "saved") == old


def test_processor_save_that_fails_part_way_leaves_each_file_old_or_new(tmp_path, monkeypatch):
    processor = CLIPProcessor(changed_image_processor(), changed_tokenizer())
    processor.save_pretrained(tmp_path / "clean")
    new = contents(tmp_path / "clean")
    old = old_folder(tmp_path / "saved", PROCESSOR_FILES)
    disk_full_on_write(monkeypatch, 5)  # the image processor's file, after the tokenizer's four
    with pytest.raises(OSError, match="No space left"):
        processor.save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    after = contents(tmp_path / "saved")
    expected = {name: new[name] for name in TOKENIZER_FILES}  # written before the failure
    expected["preprocessor_config.json"] = old["preprocessor_config.json"]
    assert after == expected


def test_model_save_whose_renames_fail_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    config = torchclip.CLIPConfig(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=298, eos_token_id=299),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=16),
        projection_dim=16,
    )  # fmt: skip
    old = old_folder(tmp_path / "saved", ["config.json", "model.safetensors"])
    renames_fail(monkeypatch)
    with pytest.raises(OSError, match="Permission denied"):
        torchclip.CLIPModel(config).save_pretrained(tmp_path / "saved")
    monkeypatch.undo()
    assert contents(tmp_path / "saved") == old


def test_atomic_path_removes_the_temporary_file_when_the_block_raises(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="stop"), atomic_path(target) as tmp:
        tmp.write_bytes(b"new, but not finished")
        raise RuntimeError("stop")
    assert contents(tmp_path) == {"file.bin": b"old"}


def test_a_new_file_has_the_mode_of_an_ordinary_new_file(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "text")
    torch.save({"x": torch.zeros(1)}, tmp_path / "plain.pt")  # what open() makes, the umask applied
    with atomic_path(tmp_path / "b.pt") as tmp:
        torch.save({"x": torch.zeros(1)}, tmp)
    mode = (tmp_path / "plain.pt").stat().st_mode & 0o777
    assert mode == default_file_mode()
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == mode


def test_write_json_and_read_json_round_trip(tmp_path):
    write_json(tmp_path / "a.json", {"b": [1, 2], "a": "é"}, sort_keys=True, ensure_ascii=False)
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert read_json(tmp_path / "a.json") == {"a": "é", "b": [1, 2]}


def test_read_json_errors_name_the_file(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json' is not valid JSON: Expecting property name"):
        read_json(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list.json' must hold a JSON object, got list"):
        read_json(tmp_path / "list.json")
    assert read_json(tmp_path / "absent.json", missing_ok=True) == {}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_a_broken_tokenizer_file_is_named_in_the_error(tmp_path):
    CLIPTokenizer().save_pretrained(tmp_path)
    (tmp_path / "special_tokens_map.json").write_text('{"bos_token": ')
    with pytest.raises(ValueError, match=r"special_tokens_map.json' is not valid JSON"):
        CLIPTokenizer.from_pretrained(tmp_path)


def test_atomic_folder_replaces_an_existing_folder_only_when_the_block_succeeds(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="stop"), atomic_folder(output) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("stop")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and contents(output) == {"old.txt": b"old"}
    with atomic_folder(output) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and contents(output) == {"new.txt": b"new"}
    assert output.stat().st_mode & 0o777 == default_file_mode(directory=True)
