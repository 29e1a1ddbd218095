"""What the commands show: heat map thumbnails the right way up, odd file names printed and plotted safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchclip.display import printable

RED, BLUE = (255, 0, 0), (0, 0, 255)


def red_over_blue(path: Path, size: tuple[int, int] = (200, 100)) -> Path:
    """A picture whose top half is pure red and bottom half pure blue (no colour map has either)."""
    image = Image.new("RGB", size, BLUE)
    image.paste(Image.new("RGB", (size[0], size[1] // 2), RED), (0, 0))
    image.save(path)
    return path


def pixels_of(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(y, x) of the pixels within 40 of `colour` in every channel."""
    return np.argwhere((np.abs(picture.astype(int) - colour) < 40).all(axis=-1))


@pytest.mark.parametrize("size", [(200, 100), (90, 180)])
def test_heat_map_thumbnail_is_upright_with_its_aspect_ratio(tmp_path, size):
    pytest.importorskip("matplotlib")
    from torchclip.plots import similarity_heatmap

    image = red_over_blue(tmp_path / "flag.png", size)
    out = similarity_heatmap([image], ["a flag", "a text"], np.array([[0.3], [0.1]]), tmp_path / "map.png")
    picture = np.asarray(Image.open(out).convert("RGB"))
    red, blue = pixels_of(picture, RED), pixels_of(picture, BLUE)
    assert len(red) > 100 and len(blue) > 100
    assert red[:, 0].max() < blue[:, 0].min()  # all red above all blue: the right way up
    drawn = np.concatenate([red, blue])
    height = drawn[:, 0].max() - drawn[:, 0].min() + 1
    width = drawn[:, 1].max() - drawn[:, 1].min() + 1
    assert width / height == pytest.approx(size[0] / size[1], rel=0.08)  # not stretched to a square


def test_a_huge_plot_size_is_refused_before_drawing(tmp_path):
    pytest.importorskip("matplotlib")
    from torchclip.plots import similarity_heatmap

    image = red_over_blue(tmp_path / "flag.png")
    with pytest.raises(ValueError, match="at most 16000x16000 pixels, got 100000x100000"):
        similarity_heatmap([image], ["x"], np.array([[0.1]]), tmp_path / "map.png", size=(100_000, 100_000))
    assert not (tmp_path / "map.png").exists()


def test_printable_escapes_undecodable_bytes_and_line_breaks_only():
    name = os.fsdecode(b"caf\xe9\nphoto\x1b[2J.jpg")
    assert printable(name) == "caf\\xe9\\nphoto\\x1b[2J.jpg"
    assert printable("café 猫 photo.jpg") == "café 猫 photo.jpg"
    assert printable(Path("a\tb")) == "a\\tb"
    assert printable(b"\xff.png") == "\\xff.png"
    json.dumps(printable(name), ensure_ascii=False).encode("utf-8")  # valid UTF-8: no lone surrogate left


def test_search_grid_draws_a_name_that_is_not_utf8(tmp_path):
    pytest.importorskip("matplotlib")
    from torchclip.plots import search_grid

    folder = os.fsencode(tmp_path)
    raw = os.path.join(folder, b"\xff\xfe photo\n2.png")
    red_over_blue(Path(os.fsdecode(raw)))
    name = os.fsdecode(raw)
    out = search_grid([(name, f"0.93 {os.path.basename(name)}")], tmp_path / "grid.png", title=name)
    assert Image.open(out).size == (220, 280)


def test_a_huge_plot_size_is_refused_by_the_command_before_any_work(capsys):
    from torchclip.cli import main

    with pytest.raises(SystemExit):
        main(["similarity", "a.jpg", "--texts", "x", "--plot", "p.png", "--plot-size", "100000x100000"])
    assert "a plot is 50 to 16000 pixels a side, got '100000x100000'" in capsys.readouterr().err
