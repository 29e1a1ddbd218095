"""The applications end to end through the real command line, in subprocesses: classify, embed + search,
resume after a kill, incremental updates, unreadable files, plots, the ANN index, help and errors.

The model is the bundled one (with checks of what it should get right); a tiny random model stands in
only while the package has no bundled model."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from apps_fixtures import has_bundled_model, save_tiny_model, subprocess_env, synthetic_photos

from torchclip.cli import COMMANDS, build_parser, main
from torchclip.hub import bundled_model_path
from torchclip.store import EmbeddingStore
from torchclip.zero_shot import ZeroShotClassifier

TRAINED = has_bundled_model()
DEMO_IMAGES = sorted((bundled_model_path().parent / "demo_images").glob("*.png"))
CLASSES = ["red circle", "blue square", "green star", "yellow square"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(bundled_model_path()) if TRAINED else str(save_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def photos(tmp_path) -> Path:
    synthetic_photos(tmp_path / "photos", CLASSES, per_class=3)
    return tmp_path / "photos"


def torchclip(*args: str, model: str | None = None, check: int | None = 0) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torchclip.cli", *args, *(["--model", model] if model else [])]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env())
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def label_of(path: str | Path) -> str:
    return Path(path).stem.rsplit("_", 1)[0].replace("_", " ") if Path(path).parent.name == "photos" else ""


def test_classify_ranked_output_and_json(model):
    from torchclip.convert import load

    labels = [p.stem.replace("_", " ") for p in DEMO_IMAGES][::-1]  # each demo image is named after what it shows
    images = [str(p) for p in DEMO_IMAGES]
    text = torchclip("classify", *images, "--labels", *labels, "--top-k", "3", model=model).stdout
    data = json.loads(torchclip("classify", *images, "--labels", *labels, "--top-k", "3", "--json", model=model).stdout)

    blocks = textwrap.dedent(text).strip().split("\n" + images[1])
    assert text.splitlines()[0] == images[0] and len(text.splitlines()) == 4 * len(images)
    assert [entry["image"] for entry in data] == images
    classifier = ZeroShotClassifier(*load(model), labels)
    expected = classifier([Path(p) for p in images], top_k=3)
    for entry, ranking in zip(data, expected):
        assert [r["label"] for r in entry["labels"]] == [r["label"] for r in ranking]
        np.testing.assert_allclose([r["score"] for r in entry["labels"]], [r["score"] for r in ranking], atol=1e-4)
    first = blocks[0].splitlines()[1:]
    assert [line.split(". ", 1)[1].rsplit(" ", 1)[0].strip() for line in first] == [
        r["label"] for r in data[0]["labels"]
    ]
    percentages = [float(line.rsplit(" ", 1)[1].rstrip("%")) for line in first]
    assert percentages == sorted(percentages, reverse=True)
    if TRAINED:  # the demo images are named after what they show
        assert [entry["labels"][0]["label"] for entry in data] == [p.stem.replace("_", " ") for p in DEMO_IMAGES]


@pytest.fixture(scope="module")
def embedded(model, tmp_path_factory):
    """A collection with two unreadable files, embedded once through the CLI: (photos, store, result)."""
    photos = tmp_path_factory.mktemp("collection") / "photos"
    synthetic_photos(photos, CLASSES, per_class=3)
    (photos / "sub").mkdir()
    (photos / "sub" / "broken.jpg").write_bytes((photos / "red_circle_0.jpg").read_bytes()[:300])
    (photos / "sub" / "noise.png").write_bytes(b"\x89PNG not really")
    store = photos.parent / "store"
    result = torchclip("embed", str(photos), "--out", str(store), "--batch-size", "4", model=model, check=1)
    return photos, store, result


def test_embed_reports_and_skips_corrupt_images(embedded):
    photos, store, result = embedded
    assert "12 image embeddings (12 new, 0 removed, 0 unchanged)" in result.stdout
    assert "2 file(s) could not be read" in result.stderr and "broken.jpg" in result.stderr
    assert "noise.png: is not an image" in result.stderr
    failures = json.loads((store / "failures.json").read_text())
    assert sorted(Path(f["key"]).name for f in failures) == ["broken.jpg", "noise.png"]
    assert not any("sub" in key for key in EmbeddingStore(store).keys())


SEARCH = ["a red circle", "--image", "{photos}/green_star_1.jpg", "-k", "3", "--json"]


def search_args(photos: Path) -> list[str]:
    return [arg.format(photos=photos) for arg in SEARCH]


def test_search_returns_the_expected_images_and_plots_them(embedded, tmp_path):
    photos, store, _ = embedded
    grid = tmp_path / "top.png"
    result = torchclip("search", str(store), *search_args(photos), "--plot", str(grid), "--plot-size", "800x300")
    found = json.loads(result.stdout)
    query = photos / "green_star_1.jpg"
    assert [q["query"] for q in found] == ["a red circle", f"image {query}"]
    assert found[1]["results"][0]["key"] == str(query.resolve())
    assert found[1]["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    if TRAINED:
        assert {label_of(hit["key"]) for hit in found[0]["results"]} == {"red circle"}
        assert {label_of(hit["key"]) for hit in found[1]["results"]} == {"green star"}
    if importlib.util.find_spec("matplotlib"):
        assert png_size(grid) == (800, 300)


KILLER = """
import os, signal, sys
from torchclip.cli import main
real, calls = os.replace, []
def replace(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as with a power cut
    real(src, dst)
os.replace = replace
sys.exit(main(sys.argv[2:]))
"""


def test_resume_after_kill_loses_and_duplicates_nothing(model, photos, tmp_path):
    args = [str(photos), "--batch-size", "2", "--commit-every", "4", "--workers", "0", "--model", model]
    assert main(["embed", *args, "--out", str(tmp_path / "reference"), "--quiet"]) == 0  # uninterrupted, in-process
    store = tmp_path / "store"
    # renames of store.json: 1 creates the store, then one before each commit (raising the row-id counter)
    for kill_at, committed in ((3, 4), (2, 8)):  # before the second commit; before the resumed run's second
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, str(kill_at), "embed", *args, "--out", str(store)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert len(EmbeddingStore(store)) == committed
    resumed = torchclip("embed", *args, "--out", str(store))
    assert "12 image embeddings (4 new, 0 removed, 8 unchanged)" in resumed.stdout
    done, expected = EmbeddingStore(store), EmbeddingStore(tmp_path / "reference")
    assert done.keys() == sorted(set(done.keys()))  # once each, in order
    assert done.keys() == expected.keys()
    np.testing.assert_allclose(done.vectors_of(range(12)), expected.vectors_of(range(12)), atol=1e-5)


def test_incremental_update_after_adding_and_removing_files(model, photos, tmp_path):
    store = tmp_path / "store"
    torchclip("embed", str(photos), "--out", str(store), "--workers", "0", model=model)
    (photos / "blue_square_0.jpg").unlink()
    (photos / "red_circle_2.jpg").rename(photos / "moved_red_circle.jpg")
    synthetic_photos(photos / "new", ["green star"], per_class=1)
    result = torchclip("embed", str(photos), "--out", str(store), "--workers", "0")  # the store's model
    assert "12 image embeddings (2 new, 2 removed, 10 unchanged)" in result.stdout
    keys = {Path(key).name for key in EmbeddingStore(store).keys()}
    assert "blue_square_0.jpg" not in keys and "red_circle_2.jpg" not in keys
    assert {"moved_red_circle.jpg", "green_star_0.jpg"} <= keys and len(keys) == 11  # two green_star_0.jpg


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_similarity_table_and_heat_map(model, tmp_path):
    pytest.importorskip("matplotlib")
    images = [str(p) for p in DEMO_IMAGES[:3]]
    heat_map = tmp_path / "similarity.png"
    texts = ["a " + Path(p).stem.replace("_", " ") for p in images] + ["an orange cross"]
    result = torchclip(
        "similarity", *images, "--texts", *texts, "--plot", str(heat_map), "--plot-size", "640x480", model=model
    )
    assert png_size(heat_map) == (640, 480)
    rows = result.stdout.splitlines()[1:]
    assert [row[: len(text)] for row, text in zip(rows, texts)] == texts and len(rows) == 4
    values = np.array([[float(v) for v in row[len(text) :].split()] for row, text in zip(rows, texts)])
    assert values.shape == (4, 3) and np.all(np.abs(values) <= 1)
    if TRAINED:  # each demo image is most similar to the text that describes it
        for column, image in enumerate(images):
            assert texts[values[:, column].argmax()] == "a " + Path(image).stem.replace("_", " ")


def test_ann_index_answers_like_exact_search(embedded):
    photos, store, _ = embedded
    built = torchclip("index", str(store), "--type", "hnsw", "-k", "5").stdout
    # the graph holds 8-bit (SQ) vectors: a near tie among 12 photos may swap (one neighbour of 60 with the
    # bundled model of 2026-12-06), so the build reports its measured recall rather than promising 1.0
    recall = re.search(r"hnsw index over 12 vectors; recall@5 against exact search (\d\.\d{4})", built)
    assert recall and float(recall.group(1)) >= 0.95, built
    assert EmbeddingStore(store).index_info()["type"] == "hnsw"
    approximate = json.loads(torchclip("search", str(store), *search_args(photos)).stdout)
    exact = EmbeddingStore(store).search(torch.from_numpy(np.array(query_vectors(store, photos))), k=3, exact=True)
    assert [[h["key"] for h in q["results"]] for q in approximate] == [[h.key for h in hits] for hits in exact]


def query_vectors(store: Path, photos: Path) -> list[np.ndarray]:
    """The two queries of SEARCH embedded in-process with the store's model."""
    from torchclip.convert import load
    from torchclip.embed import embed_images, embed_texts

    model, processor = load(EmbeddingStore(store).model["name"])
    text = embed_texts(model, processor.tokenizer, ["a red circle"])[0].numpy()
    image = embed_images(model, processor.image_processor, [photos / "green_star_1.jpg"])[0].numpy()
    return [text, image]


def test_help_imports_no_torch_store_or_converters():
    """Building the parser imports every subcommand module; they import the heavy parts only when they run
    (why pyproject.toml lets src/torchclip/cli/ import inside functions)."""
    code = (
        "import sys; from torchclip.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lance', 'torchclip.store', 'torchclip.convert') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_has_examples_and_errors_are_one_line(tmp_path, capsys):
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for name in ["classify", "similarity", "embed", "index", "search"]:
        assert name in COMMANDS and "examples:" in subcommands[name].format_help()
    result = torchclip("search", str(tmp_path / "nowhere"), "a dog", check=2)
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "is not an embedding store" in result.stderr
    assert main(["classify", str(tmp_path / "nope.jpg"), "--labels", "a", "b"]) == 2
    assert (
        capsys.readouterr().err.strip() == f"torchclip classify: error: image '{tmp_path / 'nope.jpg'}' does not exist"
    )
    with pytest.raises(SystemExit):
        main(["similarity", "a.jpg", "--texts", "x", "--plot", "p.png", "--plot-size", "big"])
    assert "expected WIDTHxHEIGHT in pixels" in capsys.readouterr().err


def test_plots_without_matplotlib_say_how_to_get_it(monkeypatch, tmp_path):
    from torchclip import plots

    for name in ["matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"plots need matplotlib: pip install 'torchclip\[plot\]'"):
        plots.search_grid([(DEMO_IMAGES[0], "x")], tmp_path / "out.png")


def test_embed_fast_decode_is_close_to_exact_decoding(model, tmp_path):
    """--fast-decode really decodes large JPEGs at reduced size, and the embeddings stay close."""
    from PIL import Image

    photos = tmp_path / "big"
    photos.mkdir()
    for source in sorted((Path(__file__).parent / "data" / "images").glob("*.png"))[:3]:
        Image.open(source).convert("RGB").resize((1200, 900)).save(photos / f"{source.stem}.jpg", quality=92)
    for name, extra in (("exact", []), ("fast", ["--fast-decode"])):
        torchclip("embed", str(photos), "--out", str(tmp_path / name), "--quiet", *extra, model=model)
    exact, fast = EmbeddingStore(tmp_path / "exact"), EmbeddingStore(tmp_path / "fast")
    assert exact.keys() == fast.keys()
    a, b = (np.asarray(store.vectors_of(range(3)), dtype=np.float64) for store in (exact, fast))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert not np.array_equal(a, b)  # the reduced-size decode was used
    assert cosine.min() > 0.95


def test_bench_prints_the_side_by_side_table():
    """`torchclip bench --tiny`: every row of the docs/performance.md table, in both precisions, with a ratio."""
    pytest.importorskip("transformers")
    out = torchclip("bench", "--tiny", "--repeats", "1").stdout
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    rows = {(task, precision): ratio for task, precision, _, _, ratio, _ in cells[1:]}
    tasks = ["images", "texts, 77 tokens", "texts, caption mix vs padding=True", "texts, caption mix vs max_length"]
    for task in tasks:
        for precision in ("float32", "bfloat16"):
            assert rows.get((task, precision), "").endswith("x"), f"no ratio for {task} {precision} in:\n{out}"
    assert "% of matmul" in out
    assert "from_pretrained" not in out  # --tiny measures no loading of a 1.7 GB model
    assert "matmul float32 GFLOP/s" in out and "matmul bfloat16 GFLOP/s" in out
    progress = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(progress) == 6 and all(re.fullmatch(r"  [a-z0-9, ]+: torchclip [0-9.]+, reference .* (img|txt)/s", line)
                                      for line in progress), out  # fmt: skip
