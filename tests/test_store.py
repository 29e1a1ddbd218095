"""The embedding store on Lance: commits that survive failures at any point, incremental updates,
captions, exact and ANN search, filters, stable row ids, and a collection sharded over processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from apps_fixtures import run_update, save_tiny_model, subprocess_env, tiny_model_and_processor
from PIL import Image

import torchclip.store.table as table_module
from torchclip.embed import embed_texts
from torchclip.image_files import find_images
from torchclip.store import EmbeddingStore, choose_index_type, text_items


def plain_embeddings(store_model, paths):
    model, processor = store_model
    with torch.no_grad():
        features = model.get_image_features(processor.image_processor(paths, return_tensors="pt")["pixel_values"])
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def snapshot(store_folder) -> dict[str, np.ndarray]:
    """{key: vector} of every row, in id order."""
    rows = sorted(
        EmbeddingStore(store_folder).dataset.to_table(columns=["id", "key", "vector"]).to_pylist(),
        key=lambda row: row["id"],
    )
    return {row["key"]: np.array(row["vector"], np.float32) for row in rows}


def test_store_holds_every_image_with_path_size_mtime_and_size(store_photos, tmp_path, store_model):
    report = run_update(tmp_path / "store", store_photos, store_model)
    store = EmbeddingStore(tmp_path / "store")
    paths = find_images(store_photos)
    assert report.added == len(paths) == len(store) == 10
    assert store.generation == 1 + 3  # the empty table, then 10 rows committed 4 at a time
    rows = store.rows(range(10))
    assert [row["key"] for row in rows] == [str(p.resolve()) for p in paths] == store.keys()
    for row, path in zip(rows, paths):
        assert (row["size"], row["mtime"]) == (path.stat().st_size, path.stat().st_mtime_ns / 1e9)
        assert (row["width"], row["height"]) == Image.open(path).size and row["taken_at"] is None
    np.testing.assert_allclose(store.vectors_of(range(10)), plain_embeddings(store_model, paths), atol=1e-5)
    assert store.id_of(str(paths[3].resolve())) == 3 and store.id_of("nowhere") is None
    assert sum(batch.num_rows for batch in store.iter_batches(batch_size=3)) == 10


def test_a_failure_at_any_write_leaves_a_complete_state_and_the_rerun_finishes(
    store_photos, tmp_path, store_model, monkeypatch
):
    """Fail the n-th write (a Lance commit or a store.json rename, before it happens) for every n: the store
    always opens as some committed state, and a re-run ends with exactly the uninterrupted result."""
    run_update(tmp_path / "reference", store_photos, store_model)
    expected = snapshot(tmp_path / "reference")
    real_write_dataset, real_write_json = table_module.lance.write_dataset, table_module._Folder.write_json
    for n in range(1, 10):
        store = tmp_path / f"store{n}"
        calls = []

        def failing(real, n=n, calls=calls):
            def write(*args, **kwargs):
                calls.append(1)
                if len(calls) == n:
                    raise KeyboardInterrupt("simulated kill")
                return real(*args, **kwargs)

            return write

        monkeypatch.setattr(table_module.lance, "write_dataset", failing(real_write_dataset))
        monkeypatch.setattr(table_module._Folder, "write_json", failing(real_write_json))
        with pytest.raises(KeyboardInterrupt):
            run_update(store, store_photos, store_model)
        monkeypatch.setattr(table_module.lance, "write_dataset", real_write_dataset)
        monkeypatch.setattr(table_module._Folder, "write_json", real_write_json)
        if (store / "store.json").is_file():
            partial = snapshot(store)
            assert set(partial) <= set(expected) and len(partial) in (0, 4, 8, 10)  # commits of 4 rows
        run_update(store, store_photos, store_model)
        final = snapshot(store)
        assert sorted(final) == sorted(expected) and len(EmbeddingStore(store)) == len(expected)
        for key, vector in expected.items():
            np.testing.assert_allclose(final[key], vector, atol=1e-5)
        ids = EmbeddingStore(store).dataset.to_table(columns=["id"]).column("id").to_pylist()
        assert len(set(ids)) == len(ids)
        assert not [name for name in os.listdir(store) if ".tmp-" in name]


def test_incremental_update_embeds_only_the_difference_and_ids_are_never_reused(store_photos, tmp_path, store_model):
    run_update(tmp_path / "store", store_photos, store_model)
    paths = find_images(store_photos)
    before = {row["key"]: row["id"] for row in EmbeddingStore(tmp_path / "store").rows(range(10))}
    paths[0].unlink()
    shutil.copy(paths[5], store_photos / "copy_of_5.jpg")
    paths[1].write_bytes(paths[7].read_bytes())  # changed content, same name
    report = run_update(tmp_path / "store", store_photos, store_model)
    assert (report.added, report.removed, report.unchanged) == (2, 2, 8)
    store = EmbeddingStore(tmp_path / "store")
    current = find_images(store_photos)
    assert sorted(store.keys()) == [str(p.resolve()) for p in current]
    by_key = snapshot(tmp_path / "store")
    np.testing.assert_allclose(by_key[str(paths[1].resolve())], plain_embeddings(store_model, [paths[7]])[0], atol=1e-5)
    after = {row["key"]: row["id"] for row in store.rows(range(20))}
    unchanged = set(before) & set(after) - {str(paths[1].resolve())}
    assert all(before[key] == after[key] for key in unchanged) and len(unchanged) == 8
    assert sorted(set(after.values()) - set(before.values())) == [10, 11]  # new ids, the old ones not reused
    assert run_update(tmp_path / "store", store_photos, store_model).added == 0


def test_captions_from_text_and_csv(tmp_path, store_model):
    model, processor = store_model
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

    run_update(tmp_path / "texts", txt, store_model, kind="text", items=items)
    txt.write_text("a red circle\n\na yellow square\n  a green star  \n")
    report = run_update(tmp_path / "texts", txt, store_model, kind="text", items=text_items(txt))
    assert (report.added, report.removed) == (1, 1)
    store = EmbeddingStore(tmp_path / "texts")
    rows = sorted(store.rows(range(10)), key=lambda row: row["text"])
    assert [row["text"] for row in rows] == ["a green star", "a red circle", "a yellow square"]
    expected = embed_texts(model, processor.tokenizer, [row["text"] for row in rows]).numpy()
    np.testing.assert_allclose(store.vectors_of([row["id"] for row in rows]), expected, atol=1e-5)
    hits = store.search(torch.from_numpy(expected[2:3]), k=2)[0]
    assert hits[0].text == "a yellow square" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_exact_search_and_refusals(store_photos, tmp_path, store_model):
    run_update(tmp_path / "store", store_photos, store_model)
    store = EmbeddingStore(tmp_path / "store")
    vectors = store.vectors_of(range(10))
    queries = torch.randn(3, store.model["dim"], generator=torch.Generator().manual_seed(0))
    scores = torch.nn.functional.normalize(queries, dim=-1).numpy() @ vectors.T
    hits = store.search(queries, k=4)
    for row, row_hits in zip(scores, hits):
        assert [h.id for h in row_hits] == list(np.argsort(-row)[:4])
        np.testing.assert_allclose([h.score for h in row_hits], np.sort(row)[::-1][:4], atol=1e-5)
    assert [h.id for h in store.search(queries[0].numpy(), k=4)[0]] == [h.id for h in hits[0]]  # [D] works too
    other = tiny_model_and_processor(seed=1)
    with pytest.raises(ValueError, match="embedded with another model"):
        run_update(tmp_path / "store", store_photos, other)
    with pytest.raises(ValueError, match="holds image embeddings, not text"):
        run_update(tmp_path / "store", store_photos, store_model, kind="text", items=[])
    with pytest.raises(FileExistsError, match="is not an embedding store"):
        run_update(store_photos, store_photos, store_model)
    with pytest.raises(FileNotFoundError, match="no store.json"):
        EmbeddingStore(tmp_path)
    with pytest.raises(FileExistsError, match="is already an embedding store"):
        EmbeddingStore.create(tmp_path / "store", model={"dim": 32})
    with pytest.raises(ValueError, match=r"queries must be \[N, 32\]"):
        store.search(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="k must be at least 1"):
        store.search(queries, k=0)
    assert run_update(tmp_path / "store", store_photos, other, rebuild=True).added == len(store)
    assert min(EmbeddingStore(tmp_path / "store").dataset.to_table(columns=["id"]).column("id").to_pylist()) == 10


def test_torchrun_shards_a_collection_and_merges_the_parts(store_photos, tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    common = ["--model", str(model_dir), "--batch-size", "2", "--commit-every", "2", "--quiet", "--workers", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    sharded = subprocess.run(
        [*torchrun, "-m", "torchclip.cli", "embed", str(store_photos), "--out", str(tmp_path / "sharded"), *common],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert f"{len(find_images(store_photos))} new, 0 removed, 0 unchanged) in 2 processes" in sharded.stdout
    single = subprocess.run(
        [sys.executable, "-m", "torchclip.cli", "embed", str(store_photos), "--out", str(tmp_path / "single"), *common],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = snapshot(tmp_path / "sharded"), snapshot(tmp_path / "single")
    assert sorted(a) == sorted(b) and len(EmbeddingStore(tmp_path / "sharded")) == len(find_images(store_photos))
    for key in b:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert not (tmp_path / "sharded" / "parts").exists()
    assert json.loads((tmp_path / "sharded" / "failures.json").read_text()) == []


def test_index_choice_by_size():
    assert choose_index_type(10_000) == "flat" and choose_index_type(10_001) == "hnsw"
    assert choose_index_type(500_000) == "hnsw" and choose_index_type(500_001) == "ivf_flat"
