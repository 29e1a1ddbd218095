"""The embedding store: commits that survive failures at any point, incremental updates, captions,
exact and faiss search, and a collection sharded over processes with torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from apps_fixtures import save_tiny_model, subprocess_env, synthetic_photos, tiny_model_and_processor

from torchclip.evaluate import encode_texts
from torchclip.image_files import find_images
from torchclip.index import EmbeddingStore, build_faiss_index, choose_faiss_type, image_items, text_items, update_store

CLASSES = ["red circle", "blue square", "green star", "purple cross", "white circle"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor()


@pytest.fixture
def photos(tmp_path):
    synthetic_photos(tmp_path / "photos", CLASSES, per_class=2)
    return tmp_path / "photos"


def run_update(store, source, tiny, kind="image", items=None, **kwargs):
    model, processor = tiny
    items = items if items is not None else image_items(source)
    options = dict(batch_size=2, num_workers=0, commit_every=4, progress=False) | kwargs
    return update_store(store, items, model, processor, kind=kind, model_name="tiny", source=str(source), **options)


def plain_embeddings(tiny, paths):
    model, processor = tiny
    with torch.no_grad():
        features = model.get_image_features(processor.image_processor(paths, return_tensors="pt")["pixel_values"])
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def snapshot(store_folder):
    store = EmbeddingStore(store_folder)
    return {item.key: vector for item, vector in zip(store.items, store.vectors)}


def test_store_holds_every_image_with_path_size_mtime(photos, tmp_path, tiny):
    report = run_update(tmp_path / "store", photos, tiny)
    store = EmbeddingStore(tmp_path / "store")
    paths = find_images(photos)
    assert report.added == len(paths) == len(store) and len(store.manifest["chunks"]) == 3  # 10 rows, 4 per commit
    assert [item.key for item in store.items] == [str(p.resolve()) for p in paths]
    for item, path in zip(store.items, paths):
        assert (item.size, item.mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)
    np.testing.assert_allclose(store.vectors, plain_embeddings(tiny, paths), atol=1e-5)


def test_a_failure_at_any_write_leaves_a_complete_state_and_the_rerun_finishes(photos, tmp_path, tiny, monkeypatch):
    """Fail the n-th atomic rename (before it happens) for every n: the store always opens as some
    committed state, and a re-run ends with exactly the uninterrupted result."""
    run_update(tmp_path / "reference", photos, tiny)
    expected = snapshot(tmp_path / "reference")
    real_replace = os.replace
    for n in range(1, 8):
        store = tmp_path / f"store{n}"
        calls = []

        def failing_replace(src, dst, n=n, calls=calls):
            calls.append(dst)
            if len(calls) == n:
                raise KeyboardInterrupt("simulated kill")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(KeyboardInterrupt):
            run_update(store, photos, tiny)
        monkeypatch.setattr(os, "replace", real_replace)
        if n > 1:  # the first rename creates the store
            partial = snapshot(store)
            assert set(partial) <= set(expected) and len(partial) % 4 == 0
        run_update(store, photos, tiny)
        final = snapshot(store)
        assert list(final) == list(expected) and len(EmbeddingStore(store).items) == len(expected)
        for key, vector in expected.items():
            np.testing.assert_allclose(final[key], vector, atol=1e-5)
        chunk_files = sorted(os.listdir(store / "chunks"))
        assert chunk_files == sorted(EmbeddingStore(store).manifest["chunks"])
        assert not [name for name in os.listdir(store) if ".tmp-" in name]


def test_incremental_update_embeds_only_the_difference(photos, tmp_path, tiny):
    run_update(tmp_path / "store", photos, tiny)
    paths = find_images(photos)
    paths[0].unlink()
    shutil.copy(paths[5], photos / "copy_of_5.jpg")
    paths[1].write_bytes(paths[7].read_bytes())  # changed content, same name
    report = run_update(tmp_path / "store", photos, tiny)
    assert (report.added, report.removed, report.unchanged) == (2, 2, 8)
    store = EmbeddingStore(tmp_path / "store")
    current = find_images(photos)
    assert sorted(item.key for item in store.items) == [str(p.resolve()) for p in current]
    by_key = snapshot(tmp_path / "store")
    np.testing.assert_allclose(by_key[str(paths[1].resolve())], plain_embeddings(tiny, [paths[7]])[0], atol=1e-5)
    assert run_update(tmp_path / "store", photos, tiny).added == 0


def test_captions_from_text_and_csv(tmp_path, tiny):
    model, processor = tiny
    txt = tmp_path / "captions.txt"
    txt.write_text("a red circle\n\na blue square\n  a green star  \n")
    items = text_items(txt)
    assert [(item.key.rsplit("#", 1)[1], item.text) for item in items] == [
        ("1", "a red circle"),
        ("3", "a blue square"),
        ("4", "a green star"),
    ]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('file,caption\nx.jpg,"a cat, sleeping"\ny.jpg,a dog\n')
    assert [item.text for item in text_items(csv_file)] == ["a cat, sleeping", "a dog"]
    with pytest.raises(ValueError, match="no column named 'title'"):
        text_items(csv_file, column="title")

    run_update(tmp_path / "texts", txt, tiny, kind="text", items=items)
    txt.write_text("a red circle\n\na yellow square\n  a green star  \n")
    report = run_update(tmp_path / "texts", txt, tiny, kind="text", items=text_items(txt))
    assert (report.added, report.removed) == (1, 1)
    store = EmbeddingStore(tmp_path / "texts")
    assert sorted(item.text for item in store.items) == ["a green star", "a red circle", "a yellow square"]
    expected = encode_texts(model, processor.tokenizer, [item.text for item in store.items]).numpy()
    np.testing.assert_allclose(store.vectors, expected, atol=1e-5)
    hits = store.search(torch.from_numpy(expected[2:3]), k=2)[0]
    assert hits[0].text == store.items[2].text and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_exact_search_and_refusals(photos, tmp_path, tiny):
    run_update(tmp_path / "store", photos, tiny)
    store = EmbeddingStore(tmp_path / "store")
    queries = torch.randn(3, store.model["dim"], generator=torch.Generator().manual_seed(0))
    scores = torch.nn.functional.normalize(queries, dim=-1).numpy() @ store.vectors.T
    hits = store.search(queries, k=4)
    for row, row_hits in zip(scores, hits):
        assert [h.key for h in row_hits] == [store.items[i].key for i in np.argsort(-row)[:4]]
        np.testing.assert_allclose([h.score for h in row_hits], np.sort(row)[::-1][:4], atol=1e-5)
    other = tiny_model_and_processor(seed=1)
    with pytest.raises(ValueError, match="embedded with another model"):
        run_update(tmp_path / "store", photos, other)
    with pytest.raises(ValueError, match="holds image embeddings, not text"):
        run_update(tmp_path / "store", photos, tiny, kind="text", items=[])
    with pytest.raises(FileExistsError, match="is not an embedding store"):
        run_update(photos, photos, tiny)
    with pytest.raises(FileNotFoundError, match="no store.json"):
        EmbeddingStore(tmp_path)
    assert run_update(tmp_path / "store", photos, other, rebuild=True).added == len(store)


def test_faiss_index_matches_exact_search(photos, tmp_path, tiny):
    pytest.importorskip("faiss")
    run_update(tmp_path / "store", photos, tiny)
    store = EmbeddingStore(tmp_path / "store")
    queries = torch.randn(5, store.model["dim"], generator=torch.Generator().manual_seed(0))
    exact = store.search(queries, k=5, exact=True)
    assert choose_faiss_type(10_000) == "flat" and choose_faiss_type(10_001) == "hnsw"
    assert choose_faiss_type(1_000_001) == "ivf"
    for index_type in ("flat", "hnsw", "ivf"):
        info = build_faiss_index(store, index_type, k=5)
        assert info["type"] == index_type and info["recall_at_k"] == 1.0 and info["n"] == len(store)
        assert store.faiss_index() is not None
        approximate = store.search(queries, k=5)
        for a, e in zip(approximate, exact):
            assert [h.key for h in a] == [h.key for h in e]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in e], atol=1e-5)
    (photos / "red_circle_0.jpg").unlink()
    run_update(tmp_path / "store", photos, tiny)
    assert EmbeddingStore(tmp_path / "store").stale_faiss_index()
    assert EmbeddingStore(tmp_path / "store").faiss_index() is None


def test_torchrun_shards_a_collection_and_merges_the_parts(photos, tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    common = ["--model", str(model_dir), "--batch-size", "2", "--commit-every", "2", "--quiet", "--workers", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    sharded = subprocess.run(
        [*torchrun, "-m", "torchclip.embed", str(photos), "--out", str(tmp_path / "sharded"), *common],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert f"{len(find_images(photos))} new, 0 removed, 0 unchanged) in 2 processes" in sharded.stdout
    single = subprocess.run(
        [sys.executable, "-m", "torchclip.cli", "embed", str(photos), "--out", str(tmp_path / "single"), *common],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = snapshot(tmp_path / "sharded"), snapshot(tmp_path / "single")
    assert sorted(a) == sorted(b) and len(EmbeddingStore(tmp_path / "sharded")) == len(find_images(photos))
    for key in b:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert not list((tmp_path / "sharded" / "parts").glob("*.json"))
    assert json.loads((tmp_path / "sharded" / "failures.json").read_text()) == []
