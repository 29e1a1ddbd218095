"""Training data: every source format, sharding across streams, and bad samples skipped and counted."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import tarfile

import numpy as np
import pytest
from PIL import Image

from torchclip.datasets import synthetic
from torchclip.datasets.synthetic import COLOURS, HELD_OUT, SHAPES, SyntheticCaptions, unnamed_colour
from torchclip.image_processor import CLIPImageProcessor
from torchclip.processor import CLIPProcessor
from torchclip.train.data import (
    BadSample,
    FolderPairs,
    PairBatches,
    TablePairs,
    TarShards,
    expand_shards,
    open_source,
)


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def processor() -> CLIPProcessor:
    return CLIPProcessor(CLIPImageProcessor(size=16, crop_size=16))


def all_items(source, n_streams: int = 1) -> list[str]:
    return [item.name for stream in range(n_streams) for item in source.items(0, stream, n_streams)]


def test_folder_pairs_with_bad_samples_are_skipped_counted_and_named(tmp_path, processor, caplog):
    for i in range(6):
        (tmp_path / f"good{i}.png").write_bytes(png_bytes((40 * i, 10, 10)))
        (tmp_path / f"good{i}.txt").write_text(f"picture {i}")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "broken.txt").write_text("a caption")
    (tmp_path / "silent.png").write_bytes(png_bytes((1, 2, 3)))
    (tmp_path / "silent.txt").write_text("   \n")
    (tmp_path / "uncaptioned.png").write_bytes(png_bytes((1, 2, 3)))  # no .txt: not a pair at all
    source = FolderPairs(tmp_path)
    assert len(source) == 8
    batches = PairBatches(source, processor, batch_size=3)
    stream = iter(batches)
    first, second = next(stream), next(stream)  # 8 items, 2 bad: exactly two full batches of 3
    bad = first["bad"] + second["bad"]
    assert len(bad) == 2
    assert any("broken.png" in b and "unreadable image" in b for b in bad)
    assert any("silent.png" in b and "empty caption" in b for b in bad)
    assert "skipped bad sample" in caplog.text
    assert first["pixel_values"].shape == (3, 3, 16, 16)
    assert first["input_ids"].shape[0] == 3
    assert second["position"] == 8


def test_table_pairs_csv_and_tsv_with_and_without_header(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes((255, 0, 0)))
    (tmp_path / "table.csv").write_text('filepath,caption\na.png,"a red, square picture"\n')
    (tmp_path / "plain.tsv").write_text("a.png\tred\n")
    csv_source = TablePairs(tmp_path / "table.csv")
    image, caption = csv_source.decode(csv_source.item(0))
    assert caption == "a red, square picture" and image.getpixel((0, 0)) == (255, 0, 0)
    tsv_source = TablePairs(tmp_path / "plain.tsv")
    assert tsv_source.decode(tsv_source.item(0))[1] == "red"
    (tmp_path / "short.csv").write_text("filepath,caption\nonly-a-path\n")
    with pytest.raises(ValueError, match="short.csv, line 2"):
        TablePairs(tmp_path / "short.csv")
    missing = TablePairs.__new__(TablePairs)
    missing.rows, missing.path = [("nope.png", "x")], tmp_path / "t.csv"
    with pytest.raises(BadSample, match="nope.png: unreadable image"):
        missing.decode(missing.item(0))


def write_shard(path, samples: list[tuple[str, bytes | None, str | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, image, caption in samples:
            for ext, data in (("png", image), ("txt", caption.encode() if caption is not None else None)):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_tar_shards_stream_split_across_streams_and_skip_bad_samples(tmp_path, processor):
    for shard in range(4):
        samples = [(f"s{shard}_{i}", png_bytes((shard * 50, i * 20, 0)), f"shard {shard} sample {i}") for i in range(5)]
        if shard == 2:
            samples = [("corrupt", b"\x89PNG garbage", "x"), ("nocaption", png_bytes((0, 0, 0)), None), *samples]
        write_shard(tmp_path / f"data-{shard:03d}.tar", samples)
    spec = str(tmp_path / "data-{000..003}.tar")
    assert len(expand_shards(spec)) == 4
    source = open_source(spec)
    assert isinstance(source, TarShards)
    one_stream = all_items(source)
    assert len(one_stream) == 22
    # whole shards per stream (4 shards, 2 streams), and every sample once (3 streams: k-th samples of each shard)
    for n_streams in (2, 3, 8):
        split = [all_items_of(source, s, n_streams) for s in range(n_streams)]
        flat = [name for part in split for name in part]
        assert sorted(flat) == sorted(one_stream), n_streams
    batches = iter(PairBatches(source, processor, batch_size=20))
    batch = next(batches)
    assert len(batch["bad"]) == 2
    assert any("corrupt" in b and "unreadable image" in b for b in batch["bad"])
    assert any("nocaption" in b and "no .txt caption" in b for b in batch["bad"])


def all_items_of(source, stream: int, n_streams: int) -> list[str]:
    return [item.name for item in source.items(0, stream, n_streams)]


def test_streams_of_a_table_partition_each_epoch_and_reshuffle_between_epochs(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i, i, i)))
        (tmp_path / f"{i}.txt").write_text(str(i))
    source = FolderPairs(tmp_path, seed=5)
    parts = [[item.name for item in source.items(0, s, 3)] for s in range(3)]
    assert sorted(sum(parts, [])) == sorted(f"{i}.png" for i in range(10))
    epoch0 = [item.name for item in source.items(0, 0, 1)]
    epoch1 = [item.name for item in source.items(1, 0, 1)]
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1


def test_resumed_stream_continues_with_the_same_samples(tmp_path, processor):
    for i in range(7):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i * 30, 0, 0)))
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    source = FolderPairs(tmp_path, seed=1)
    stream = iter(PairBatches(source, processor, batch_size=3))
    batches = [next(stream) for _ in range(4)]  # crosses an epoch boundary (7 items)
    resumed = iter(PairBatches(source, processor, batch_size=3, start=[batches[1]["position"]]))
    for expected in batches[2:]:
        got = next(resumed)
        assert got["position"] == expected["position"]
        assert got["input_ids"].tolist() == expected["input_ids"].tolist()


def test_open_source_rejects_unknown_data(tmp_path):
    with pytest.raises(ValueError, match="not 'synthetic'"):
        open_source(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="no images with a same-named .txt"):
        FolderPairs(tmp_path)


@pytest.mark.parametrize("style", ["classic", "varied"])
def test_synthetic_training_split_never_shows_a_held_out_pair(style):
    world = SyntheticCaptions(seed=0, split="train", style=style)
    words = set()
    for index in range(600):
        _, caption = world.example(index)
        for colour, shape in HELD_OUT:
            for form in (f"{colour} {shape}", f"{shape} that is {colour}", f"{shape}, coloured {colour}"):
                assert form not in caption, (index, caption)
        words.update(caption.split())
    assert set(SHAPES) <= words  # all shapes appear (with their trained colours)
    rng = random.Random(0)
    for shape in SHAPES:  # unnamed colours stay clear of the colour each shape is held out in
        held = [COLOURS[c] for c, s in HELD_OUT if s == shape]
        assert all(math.dist(unnamed_colour(rng, shape), rgb) >= 120 for _ in range(200) for rgb in held)
    image, caption = SyntheticCaptions(seed=0, split="heldout").example(3)
    assert tuple(caption.split()) in HELD_OUT and image.size == (64, 64)
    assert SyntheticCaptions(seed=0).example(5)[0].tobytes() == SyntheticCaptions(seed=0).example(5)[0].tobytes()


def test_cli_eval_retrieval_on_a_csv(tmp_path):
    from test_train import tiny_model

    from torchclip.cli import main

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    CLIPProcessor(CLIPImageProcessor(size=32, crop_size=32)).save_pretrained(model_dir)
    rows = ["filepath,caption"]
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((60 * i, 0, 0)))
        rows.append(f"{i}.png,picture number {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    code = main(["eval", "--model", str(model_dir), "--task", "retrieval", "--data", str(tmp_path / "pairs.csv"),
                 "--json", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["pairs"] == 4
    assert metrics["image_to_text_R@10"] == 1.0  # 4 candidates: always within the top 10


def drawn_styles(monkeypatch, world: SyntheticCaptions, count: int) -> list[tuple[synthetic.Style, list]]:
    """The styles (and the object colours they were chosen for) of `count` of the world's pictures."""
    chosen = []

    def recording(rng, image_size, colours, unseen=False):
        style = random_style(rng, image_size, colours, unseen)
        chosen.append((style, colours))
        return style

    random_style = synthetic.random_style
    monkeypatch.setattr(synthetic, "random_style", recording)
    for index in range(count):
        world.example(index)
    return chosen


def test_varied_training_pictures_vary_every_drawing_setting_but_the_unseen_ones(monkeypatch):
    world = SyntheticCaptions(seed=0, split="train", style="varied")
    chosen = drawn_styles(monkeypatch, world, 600)
    styles = [style for style, _ in chosen]
    assert 0.6 < len(styles) / 600 < 0.8  # the rest in the classic style (CLASSIC_SHARE = 0.3)
    assert {style.background for style in styles} == set(synthetic.BACKGROUNDS)
    assert {style.outline for style in styles} == set(synthetic.OUTLINES)
    assert (
        synthetic.UNSEEN_BACKGROUND not in synthetic.BACKGROUNDS and synthetic.UNSEEN_OUTLINE not in synthetic.OUTLINES
    )
    assert {style.smooth for style in styles} == {True, False}
    assert 0.15 < sum(style.blur > 0 for style in styles) / len(styles) < 0.45
    assert 0.15 < sum(style.jpeg_quality is not None for style in styles) / len(styles) < 0.45
    sides = [style.side for style in styles]
    assert min(sides) < 56 and max(sides) > 230  # 0.75x to 4x the model's 64 px input
    greys = [sum(style.base) / 3 for style in styles]
    assert min(greys) < 40 and max(greys) > 215  # dark to white backgrounds
    for style, colours in chosen:  # and every object stands out from its background
        assert all(math.dist(style.base, colour) >= synthetic.MIN_CONTRAST for colour in colours), (style, colours)
    sizes = {world.example(index)[0].size for index in range(40)}
    assert len(sizes) > 10 and all(width == height for width, height in sizes)


def test_no_training_outline_is_as_light_as_the_unseen_one():
    rng = random.Random(0)
    fills = [tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(300)]

    def darkest_channels(outline: str) -> list[int]:
        style = synthetic.random_style(rng, 64, [(128, 128, 128)])
        style = dataclasses.replace(style, outline=outline)
        return [min(synthetic._outline_colour(style, rng, fill)) for fill in fills]

    trained = [value for outline in synthetic.OUTLINES if outline != "none" for value in darkest_channels(outline)]
    assert max(trained) < min(darkest_channels(synthetic.UNSEEN_OUTLINE))


@pytest.mark.parametrize(("style", "share"), [("classic", 0.15), ("varied", 0.3)])
def test_training_scenes_show_shapes_in_unnamed_colours_at_their_share(monkeypatch, style, share):
    drawn = []

    def counting(rng, shape, margin=120.0):
        drawn.append(shape)
        return unnamed_colour(rng, shape, margin)

    monkeypatch.setattr(synthetic, "unnamed_colour", counting)
    world = SyntheticCaptions(seed=0, split="train", style=style)
    for index in range(1000):
        world.example(index)
    assert abs(len(drawn) / 1000 - share) < 0.04, len(drawn)  # 1000 draws: one standard error is 0.011-0.015


def test_unseen_style_split_draws_only_what_training_never_does(monkeypatch):
    world = SyntheticCaptions(seed=0, split="heldout", style="unseen")
    styles = [style for style, _ in drawn_styles(monkeypatch, world, 50)]
    assert len(styles) == 50
    assert {(style.background, style.outline) for style in styles} == {("checks", "light")}
    image, caption = world.example(0)
    assert tuple(caption.split()) in HELD_OUT
    classic = SyntheticCaptions(seed=0, split="heldout").example(0)
    assert classic[1] == caption and classic[0].tobytes() != image.convert("RGB").resize((64, 64)).tobytes()
    with pytest.raises(ValueError, match="only for evaluation"):
        SyntheticCaptions(split="train", style="unseen")
    with pytest.raises(ValueError, match="style must be one of"):
        SyntheticCaptions(split="seen", style="sketchy")


def test_an_object_keeps_its_colour_in_every_style():
    """Single-object pictures in varied styles: pixels of the object's own colour are still there (not lost
    to the outline, blur or JPEG)."""
    world = SyntheticCaptions(seed=1, split="seen", style="varied")
    for index in range(60):
        image, name = world.example(index)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
        nearest = np.linalg.norm(pixels - np.array(COLOURS[name.split()[0]]), axis=1).min()
        assert nearest < 45, (index, name, nearest)
