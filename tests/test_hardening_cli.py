"""Bad input to classify, similarity and eval: each gets a clear answer and loses nothing that was good."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from apps_fixtures import save_tiny_model, tiny_model_and_processor
from PIL import Image

from torchclip.cli import main
from torchclip.embed import check_text_lengths, embed_texts
from torchclip.templates import get_templates

# two labels the same for their first 77 tokens, different after: cut to fit, they would score 50/50
LONG_PREFIX = " ".join(["word"] * 80)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def pictures(tmp_path) -> list[str]:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"pic{i}.png")
        paths.append(str(tmp_path / f"pic{i}.png"))
    return paths


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_skips_missing_folder_and_corrupt_images_among_good_ones(model, pictures, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    argv = [pictures[0], str(tmp_path / "gone.jpg"), str(tmp_path), str(corrupt), pictures[1]]
    code, out, err = run(capsys, "classify", *argv, "--labels", "red", "blue", "--json", "--model", model)
    assert code == 1
    results = json.loads(out)
    assert [r["image"] for r in results if "labels" in r] == [pictures[0], pictures[1]]
    assert {r["image"] for r in results if "error" in r} == {str(tmp_path / "gone.jpg"), str(tmp_path), str(corrupt)}
    assert f"skipped {tmp_path / 'gone.jpg'}: does not exist" in err
    assert f"skipped {tmp_path}: is a folder, not an image file" in err
    assert f"skipped {corrupt}:" in err


def test_classify_with_only_a_folder_says_it_is_a_folder(model, tmp_path, capsys):
    code, _, err = run(capsys, "classify", str(tmp_path), "--labels", "a", "b", "--model", model)
    assert code == 2
    assert "is a folder, not an image file" in err and "does not exist" not in err


def test_labels_file_with_a_byte_order_mark_and_one_that_is_not_utf8(model, pictures, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffred\nblue\n".encode())
    code, out, _ = run(capsys, "classify", pictures[0], "--labels-file", str(labels), "--json", "--model", model)
    assert code == 0
    assert {entry["label"] for entry in json.loads(out)[0]["labels"]} == {"red", "blue"}
    labels.write_bytes(b"red\nbl\xe9u\n")
    code, _, err = run(capsys, "classify", pictures[0], "--labels-file", str(labels), "--model", model)
    assert code == 2
    assert f"labels file {str(labels)!r}, line 2: not UTF-8 text" in err


def test_a_template_with_two_fields_is_a_clear_error(model, pictures, capsys):
    code, _, err = run(
        capsys, "classify", pictures[0], "--labels", "a", "b", "--templates", "{} and {}", "--model", model
    )
    assert code == 2
    assert "prompt template '{} and {}' must have exactly one {} where the class name goes" in err
    assert "IndexError" not in err


def test_texts_longer_than_the_context_warn_once_naming_the_text(model, pictures, capsys, caplog):
    """The warning is a log record of the "torchclip" logger: on a command's stderr as one line (Python's
    last-resort handler), and under pytest in caplog."""
    labels = [LONG_PREFIX + " cat", LONG_PREFIX + " dog", "short"]
    with caplog.at_level(logging.WARNING, logger="torchclip"):
        code, _, err = run(
            capsys, "classify", pictures[0], "--labels", *labels, "--templates", "none", "--model", model
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if "more than the model's context of 77" in r.getMessage()]
    assert len(warnings) == 1  # once per call, however many texts are long
    assert (
        "text #0 'word word" in warnings[0] and "has 83 tokens" in warnings[0] and "(and 1 more of the 3" in warnings[0]
    )
    code, _, err = run(capsys, "classify", pictures[0], "--labels", *labels, "--templates", "none",
                       "--truncate", "error", "--model", model)  # fmt: skip
    assert code == 2 and "has 83 tokens, more than the model's context of 77" in err
    code, _, err = run(capsys, "similarity", *pictures, "--texts", *labels, "--truncate", "silent", "--model", model)
    assert code == 0 and "context" not in err


def test_embed_texts_warns_through_logging_and_cuts_to_fit(caplog):
    model, processor = tiny_model_and_processor()
    model.config.text_config.max_position_embeddings = 77
    with caplog.at_level(logging.WARNING, logger="torchclip"):
        features = embed_texts(model, processor.tokenizer, [LONG_PREFIX + " a", "short"])
    assert features.shape[0] == 2 and [r.getMessage().count("has 83 tokens") for r in caplog.records] == [1]
    assert check_text_lengths(processor.tokenizer, ["short", LONG_PREFIX], truncate="silent") == [1]
    with pytest.raises(ValueError, match="truncate must be one of"):
        check_text_lengths(processor.tokenizer, ["x"], truncate="cut")


def test_nan_weights_are_named_instead_of_nan_percent(tmp_path, pictures, capsys):
    model, processor = tiny_model_and_processor()
    with torch.no_grad():
        model.text_projection.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "broken")
    processor.save_pretrained(tmp_path / "broken")
    code, out, err = run(capsys, "classify", pictures[0], "--labels", "a", "b", "--model", str(tmp_path / "broken"))
    assert code == 2 and "nan" not in out.lower()
    assert "the model's weight 'text_projection.weight' holds NaN or infinite values" in err


def test_the_bundled_model_says_what_it_knows(pictures, capsys):
    code, _, err = run(capsys, "classify", pictures[0], "--labels", "red square", "blue square")
    assert code == 0
    assert err.count("using the bundled model, a small CLIP trained only on coloured shapes") == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_quiet_turns_it_off(model, pictures, monkeypatch, capsys):
    for quiet, expected in (([], True), (["--quiet"], False)):
        terminal = Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        assert main(["classify", *pictures, "--labels", "a", "b", "--model", model, *quiet]) == 0
        assert ("/2 [" in terminal.getvalue()) is expected, terminal.getvalue()


def test_similarity_shows_odd_file_names_on_one_line_and_as_valid_json(model, tmp_path, capsys):
    folder = os.fsencode(tmp_path)
    names = [os.path.join(folder, b"caf\xe9.png"), os.path.join(folder, b"two\nlines.png")]
    for raw in names:
        Image.new("RGB", (30, 30), (0, 200, 0)).save(os.fsdecode(raw))
    paths = [os.fsdecode(raw) for raw in names]
    long_text = "a " + "very " * 120 + "long caption"
    code, out, _ = run(capsys, "similarity", *paths, "--texts", "green", long_text, "--truncate", "silent",
                       "--model", model)  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3  # the header and one row per text: no name or text broke a line
    assert "caf\\xe9.png" in lines[0] and "two\\nlines.png"[:11] in lines[0]
    assert max(len(line) for line in lines) < 120  # the 600-character text is shortened in the table
    code, out, _ = run(capsys, "similarity", *paths, "--texts", "green", "--json", "--model", model)
    document = json.loads(out.encode("utf-8").decode("utf-8"))
    assert document["images"] == [str(tmp_path / "caf\\xe9.png"), str(tmp_path / "two\\nlines.png")]


def class_folder(root: Path, broken: bool = True) -> Path:
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (32, 32), colour).save(root / name / f"{k}.png")
    if broken:
        (root / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return root


def test_eval_skips_counts_and_reports_an_unreadable_image(model, tmp_path, capsys):
    data = class_folder(tmp_path / "classes")
    code, out, err = run(capsys, "eval", "--task", "zeroshot", "--data", str(data), "--templates", "a {} square",
                         "--model", model, "--json", str(tmp_path / "m.json"))  # fmt: skip
    assert code == 1
    metrics = json.loads(out)
    assert metrics["images"] == 4 and metrics["skipped"] == 1
    assert json.loads((tmp_path / "m.json").read_text())["skipped"] == 1
    assert "torchclip eval: skipped" in err and "broken.png" in err
    assert metrics["top1"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # a fraction of 4, exactly
    assert not re.search(r"\d\.\d{7,}", out)  # no 0.949999988079071


def test_eval_prompts_class_names_with_the_template_sets_classify_uses(model, tmp_path, capsys):
    """No --templates is the "default" set, as in `classify`; a set's name and its templates agree."""
    data = class_folder(tmp_path / "classes", broken=False)
    zeroshot = ["eval", "--task", "zeroshot", "--data", str(data), "--model", model]
    results = [run(capsys, *zeroshot, *templates) for templates in (
        [], ["--templates", "default"], ["--templates", *get_templates("default")], ["--templates", "none"],
    )]  # fmt: skip
    assert [code for code, _, _ in results] == [0, 0, 0, 0]
    default, by_name, spelled_out, bare = (json.loads(out) for _, out, _ in results)
    assert default == by_name == spelled_out and default["images"] == 4
    assert bare["images"] == 4 and bare.keys() == default.keys()


def test_eval_retrieval_on_a_table_of_missing_images_stops_with_an_error(model, tmp_path, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption\n" + "".join(f"gone/{i}.jpg,photo {i}\n" for i in range(250)))
    code, _, err = run(capsys, "eval", "--task", "retrieval", "--data", str(table), "--model", model)
    assert code == 2
    assert "200 samples in a row could not be used (0 usable before them)" in err and "gone/" in err


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", bytes(range(256)) * 8])
def test_convert_on_a_file_that_is_not_a_checkpoint_says_so(tmp_path, capsys, content):
    (tmp_path / "notes.pt").write_bytes(content)
    code, _, err = run(capsys, "convert", "openai", str(tmp_path / "notes.pt"), str(tmp_path / "out"))
    assert code == 2
    assert "notes.pt: not a" in err and "PyTorch checkpoint" in err
    assert "refused" not in err and "more than tensors" not in err
    assert not (tmp_path / "out").exists()


def test_pillows_decompression_bomb_warning_is_one_line(model, tmp_path):
    """Between Pillow's MAX_IMAGE_PIXELS and twice it, Pillow warns (above, it refuses): a command shows
    that as one line, not Python's two-line source excerpt. (The limit is lowered so a small image trips it.)"""
    import subprocess
    import sys

    from apps_fixtures import subprocess_env

    picture = tmp_path / "wide.png"
    Image.new("RGB", (40, 36), (9, 9, 9)).save(picture)  # 1440 pixels; resized for the model to 35x32
    code = (
        "import sys, PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1400; from torchclip.cli import main; "
        f"sys.exit(main(['classify', {str(picture)!r}, '--labels', 'a', 'b', '--model', {model!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "DecompressionBombWarning" in line]
    assert lines == [lines[0]] and lines[0].startswith("torchclip: warning: Image size (1440 pixels) exceeds limit")
    assert "warnings.warn" not in result.stderr and "Image.py" not in result.stderr


def test_embed_texts_and_search_queries_longer_than_the_context(model, tmp_path, capsys, caplog):
    captions = tmp_path / "captions.txt"
    captions.write_text(f"a red square\n{LONG_PREFIX} tail\n")
    store = tmp_path / "captions.emb"
    code, _, err = run(capsys, "embed", str(captions), "--texts", "--out", str(store), "--truncate", "error",
                       "--quiet", "--model", model)  # fmt: skip
    assert code == 2 and "text #1 'word word" in err and "has 83 tokens" in err
    assert not store.exists()  # refused before anything was written
    with caplog.at_level(logging.WARNING, logger="torchclip"):
        assert main(["embed", str(captions), "--texts", "--out", str(store), "--quiet", "--model", model]) == 0
        assert main(["search", str(store), LONG_PREFIX + " query", "-k", "1", "--model", model]) == 0
    warnings = [r.getMessage() for r in caplog.records if "more than the model's context of 77" in r.getMessage()]
    assert len(warnings) == 2 and "has 83 tokens" in warnings[0] and "has 83 tokens" in warnings[1]
