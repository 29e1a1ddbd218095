"""Searching a store: the ANN indexes against exact search (and rows added after a build), ties, metadata
filters, float16 vectors, stores of torchclip 0.1 upgraded, bring-your-own vectors, and S3."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from apps_fixtures import synthetic_photos, tiny_model_and_processor
from PIL import Image

from torchclip.cli import main
from torchclip.store import EmbeddingStore, image_items, update_store

MODEL = {"name": None, "fingerprint": None, "dim": 32}


def clustered(rows: int, seed: int = 0, dim: int = 32) -> np.ndarray:
    """Normalised draws from a mixture of 64 Gaussians: vectors with neighbours, as embeddings have."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((64, dim))
    vectors = centres[rng.integers(0, 64, rows)] + 0.3 * rng.standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def filled_store(folder, rows: int = 3000, **options) -> tuple[EmbeddingStore, np.ndarray]:
    store = EmbeddingStore.create(folder, model=MODEL, **options)
    vectors = clustered(rows)
    store.add([f"/photos/{i:05d}.jpg" for i in range(rows)], vectors)
    return store, vectors


@pytest.fixture
def small_partitions(monkeypatch):
    """ivf_flat partitions of 100 rows (4,096 in use), so that a test store of 3,000 rows has 30."""
    from torchclip.store import ivf

    monkeypatch.setattr(ivf, "ROWS_PER_PARTITION", 100)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf_flat", "ivf_pq"])
def test_an_ann_index_finds_what_exact_search_finds_and_new_rows_at_once(tmp_path, index_type, small_partitions):
    store, vectors = filled_store(tmp_path / "store")
    store.add([f"/more/{i}.jpg" for i in range(100)], clustered(100, seed=9))  # a second fragment
    store.remove(["/more/0.jpg"])
    info = store.build_index(index_type, queries=200)
    assert info["type"] == index_type and info["rows_indexed"] == 3099 and info["rows_unindexed"] == 0
    assert info["recall@10"] >= 0.9 and info["recall_queries"] == 200
    assert len(store.dataset.get_fragments()) == 1  # the build compacted the commits' fragments
    queries = clustered(20, seed=1)
    exact = store.search(queries, k=10, exact=True)
    approximate = store.search(queries, k=10)
    overlap = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(approximate, exact)])
    assert overlap >= 0.9
    batch = np.concatenate([queries[:4], queries[1:3]])  # a batch's rows are read together, shared ones once
    assert store.search(batch, k=10) == [store.search(query, k=10)[0] for query in batch]
    assert store.search(batch, k=10)[4] == approximate[1] and len(approximate[1]) == 10
    new = clustered(50, seed=2)
    store.add([f"/new/{i}.jpg" for i in range(50)], new)
    assert store.index_info()["rows_unindexed"] == 50  # not in the index ...
    for i in (0, 17, 49):  # ... and found at once, exactly
        top = store.search(new[i], k=1)[0][0]
        assert top.key == f"/new/{i}.jpg" and top.score == pytest.approx(1.0, abs=1e-5)
    filtered = store.search(vectors[:5], k=10, where="key LIKE '/new/%'")  # through the index, prefiltered
    assert all(len(hits) == 10 and all(h.key.startswith("/new/") for h in hits) for hits in filtered)
    store.remove(["/photos/00007.jpg"])
    assert "/photos/00007.jpg" not in [hit.key for hit in store.search(vectors[7], k=5)[0]]


def test_ivf_flat_sorts_the_rows_by_partition_and_keeps_every_row(tmp_path, small_partitions):
    """The build rewrites the table sorted by partition: same ids, keys and vectors, deleted rows gone;
    a query's probed partitions are whole runs of rows; the centroids file is named by the table version."""
    store, vectors = filled_store(tmp_path / "store", vector_dtype="float16")
    store.remove(["/photos/00010.jpg", "/photos/02000.jpg"])
    before = {row["id"]: row["key"] for row in store.rows(range(3000))}
    vectors_before = store.vectors_of(sorted(before))
    info = store.build_index("ivf_flat", queries=300)
    assert info["partitions"] == 29 and info["rows_indexed"] == 2998 and info["recall@10"] >= 0.95
    assert info["search"]["nprobes"] in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
    table = store.dataset.to_table(columns=["id", "key", "vector", "ivf_partition"])
    partitions = table.column("ivf_partition").to_numpy()
    assert (np.diff(partitions) >= 0).all() and partitions.min() >= 0  # sorted, every row assigned
    assert dict(zip(table.column("id").to_pylist(), table.column("key").to_pylist())) == before
    stored = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    ids = table.column("id").to_numpy()
    np.testing.assert_array_equal(stored, vectors_before[np.searchsorted(sorted(before), ids)])
    assert list((tmp_path / "store" / "ivf").iterdir()) and not list((tmp_path / "store").glob(".ivf-build-*"))
    # each row's partition is its nearest centroid
    centroids = np.load(tmp_path / "store" / store.dataset.schema.metadata[b"torchclip.ivf_centroids"].decode())
    assert (np.argmax(stored @ centroids.T, axis=1) == partitions).mean() > 0.99  # float16 rounding aside
    # rebuilt as another type, the table's centroids are forgotten and that index is used
    assert store.build_index("flat")["type"] == "flat"
    assert b"torchclip.ivf_centroids" not in (store.dataset.schema.metadata or {})
    assert store.search(vectors[3], k=1)[0][0].key == "/photos/00003.jpg"


@pytest.mark.parametrize("held", [True, False], ids=["unindexed-rows-held", "unindexed-rows-read-per-query"])
def test_ivf_flat_after_the_build_replaced_removed_and_filtered_rows(tmp_path, small_partitions, monkeypatch, held):
    """Rows replaced (same key), removed or committed as outside fragments after an ivf_flat build are
    searched as they now are, whether the rows committed since the build are held in memory for the
    version or (too many) read per query; a filter that leaves fewer than k rows in the probed partitions
    falls back to exact search, so a match is never hidden."""
    import lance
    import pyarrow as pa

    from torchclip.store import ivf
    from torchclip.store.table import rows_table

    if not held:
        monkeypatch.setattr(ivf, "UNINDEXED_IN_MEMORY_BYTES", 0)

    store, vectors = filled_store(tmp_path / "store")
    store.build_index("ivf_flat", queries=200)
    moved = clustered(1, seed=21)[0]
    store.add(["/photos/00005.jpg"], moved)  # same key, new vector: the old row goes
    assert store.search(moved, k=1)[0][0].key == "/photos/00005.jpg"
    assert "/photos/00005.jpg" not in [h.key for h in store.search(vectors[5], k=3)[0] if h.score > 0.999]
    store.remove(["/photos/00009.jpg"])
    assert store.search(vectors[9], k=1)[0][0].key != "/photos/00009.jpg"
    with store.writing():  # rows written as fragments elsewhere (examples/ray_embed_to_lance.py)
        first = store.reserve_ids(3)
        table = rows_table(32, "float32", ["/far/0.jpg", "/far/1.jpg", "/far/2.jpg"], clustered(3, seed=22))
        table = store.conform(table.add_column(0, "id", pa.array(np.arange(first, first + 3), pa.int64())))
        fragments = lance.fragment.write_fragments(table, store.dataset.uri, schema=store.dataset.schema)
        append = lance.LanceOperation.Append(fragments)
        lance.LanceDataset.commit(store.dataset.uri, append, read_version=store.generation)
    store = EmbeddingStore(tmp_path / "store")
    assert store.index_info()["rows_unindexed"] == 4  # the replaced row and the three far ones
    assert (store._partitions.unindexed is not None) == held
    assert store.search(clustered(3, seed=22)[2], k=1)[0][0].key == "/far/2.jpg"
    rare = "key IN ('/photos/02999.jpg', '/photos/00100.jpg')"  # two rows match, wherever their partitions lie
    for query in clustered(5, seed=23):
        exact = [h.key for h in store.search(query, k=3, exact=True, where=rare)[0]]
        assert [h.key for h in store.search(query, k=3, where=rare)[0]] == exact and len(exact) == 2


def test_lookups_by_id_and_key_go_through_bloom_filters_and_miss_no_row(tmp_path):
    """A build indexes id and key with Lance bloom filters (zones of 8,192 rows), replacing the B-trees an
    older build left; every lookup (id_of, rows, vectors_of, remove, add's replace) still finds exactly its
    rows, in indexed zones and in fragments committed after the build."""
    rows = 20_000  # three zones
    store, vectors = filled_store(tmp_path / "store", rows=rows)
    for column in ("id", "key"):  # what torchclip built before the bloom filters
        store.dataset.create_scalar_index(column, "BTREE")
        store.refresh()
    store.build_index("flat")
    lookups = {tuple(index.field_names): index.index_type for index in store.dataset.describe_indices()}
    assert lookups == {("id",): "BloomFilter", ("key",): "BloomFilter"}
    plan = store.dataset.scanner(columns=["id"], filter="key = '/photos/00001.jpg'").explain_plan()
    assert "BloomFilter" in plan
    store.add([f"/late/{i}.jpg" for i in range(10)], clustered(10, seed=5))  # a fragment the filters miss
    stored = dict(zip(store.dataset.to_table(columns=["key"]).column(0).to_pylist(),
                      store.dataset.to_table(columns=["id"]).column(0).to_pylist()))
    sample = [f"/photos/{i:05d}.jpg" for i in (0, 8191, 8192, 12345, 19999)] + ["/late/3.jpg"]
    for key in sample:
        assert store.id_of(key) == stored[key]
    assert store.id_of("/photos/20000.jpg") is None and store.id_of("/late/x.jpg") is None
    ids = [stored[key] for key in sample]
    assert [row["key"] for row in store.rows(ids[::-1])] == sample[::-1]
    np.testing.assert_allclose(store.vectors_of(ids[:5]), vectors[[0, 8191, 8192, 12345, 19999]], atol=1e-6)
    assert store.remove(["/photos/12345.jpg", "/late/3.jpg", "/photos/absent.jpg"]) == 2
    assert store.id_of("/photos/12345.jpg") is None and len(store) == rows + 8
    store.add(["/photos/08192.jpg", "/late/5.jpg", "/new.jpg"], clustered(3, seed=6))  # two rows replaced
    assert len(store) == rows + 9 and store.id_of("/photos/08192.jpg") > max(stored.values())
    assert store.remove_ids([stored["/photos/00000.jpg"], stored["/late/6.jpg"]]) == 2 and len(store) == rows + 7


def test_ties_between_duplicates_count_as_hits(tmp_path):
    store = EmbeddingStore.create(tmp_path / "store", model=MODEL)
    vectors = np.repeat(clustered(300), 3, axis=0)  # every photo three times, as copies in a collection are
    store.add([f"/photos/{i}.jpg" for i in range(900)], vectors)
    assert store.build_index("flat")["recall@10"] == 1.0


def test_filters_on_size_date_and_folder(tmp_path):
    photos = tmp_path / "photos"
    synthetic_photos(photos / "2023", ["red circle", "blue square"], per_class=1)
    synthetic_photos(photos / "2024", ["green star", "purple cross"], per_class=1)
    for n, path in enumerate(sorted(photos.rglob("*.jpg"))):
        image = Image.open(path).resize((64 + 100 * n, 64))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = f"{path.parent.name}:0{n + 1}:15 12:00:00"  # DateTimeOriginal
        image.save(path, exif=exif)
    model, processor = tiny_model_and_processor()
    update_store(
        tmp_path / "store",
        image_items(photos),
        model,
        processor,
        kind="image",
        model_name="tiny",
        source=str(photos),
        batch_size=2,
        num_workers=0,
        progress=False,
    )
    store = EmbeddingStore(tmp_path / "store")
    query = np.ones(32)

    def keys(where):
        return sorted(hit.key.split("photos/")[1] for hit in store.search(query, k=10, where=where)[0])

    assert keys("taken_at >= '2024-01-01'") == ["2024/green_star_0.jpg", "2024/purple_cross_0.jpg"]
    assert keys("width > 100") == ["2023/red_circle_0.jpg", "2024/green_star_0.jpg", "2024/purple_cross_0.jpg"]
    assert keys("width > 100 AND taken_at < '2024-04-01'") == ["2023/red_circle_0.jpg", "2024/green_star_0.jpg"]
    assert keys(f"key LIKE '{photos}/2023/%'") == ["2023/blue_square_0.jpg", "2023/red_circle_0.jpg"]
    assert keys("taken_at >= '2024-01-01'") == sorted(
        hit.key.split("photos/")[1] for hit in store.search(query, k=10, exact=True, where="taken_at >= '2024'")[0]
    )
    hit = store.search(query, k=1, where="key LIKE '%green_star%'")[0][0]
    assert hit.metadata["taken_at"] == "2024-03-15T12:00:00" and hit.metadata["width"] == 264
    with pytest.raises(ValueError, match=r"bad filter 'widht > 3'.*widht"):
        store.search(query, where="widht > 3")


def test_float16_vectors_halve_the_disk_and_search_alike(tmp_path):
    full, vectors = filled_store(tmp_path / "full", rows=2000)
    half, _ = filled_store(tmp_path / "half", rows=2000, vector_dtype="float16")
    assert str(half.dataset.schema.field("vector").type.value_type) == "halffloat"
    sizes = [sum(p.stat().st_size for p in (tmp_path / name).rglob("*.lance")) for name in ("full", "half")]
    float32_vector_bytes = vectors.nbytes
    assert sizes[0] - sizes[1] >= 0.45 * float32_vector_bytes  # half of the vectors' bytes saved, all else equal
    queries = clustered(10, seed=5)
    for a, b in zip(full.search(queries, k=5, exact=True), half.search(queries, k=5, exact=True)):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
    np.testing.assert_allclose(half.vectors_of([3]), vectors[3:4], atol=1e-3)


def write_npz_store(folder, keys, vectors, chunk_rows=3):
    """A store as torchclip 0.1 wrote it (store.json format 1 naming .npz chunks in chunks/)."""
    (folder / "chunks").mkdir(parents=True)
    names = []
    for start in range(0, len(keys), chunk_rows):
        name = f"chunk-{start}.npz"
        part = slice(start, start + chunk_rows)
        np.savez(
            folder / "chunks" / name,
            keys=np.array(keys[part], dtype=str),
            sizes=np.arange(len(keys))[part],
            mtimes_ns=np.arange(len(keys))[part] * 10**9 + 7,
            texts=np.array([""] * len(keys[part]), dtype=str),
            vectors=vectors[part],
        )
        names.append(name)
    (folder / "faiss.index").write_bytes(b"old")
    manifest = {
        "format": 1,
        "kind": "image",
        "model": {"name": "tiny", "fingerprint": "abc", "dim": 32},
        "source": "/photos",
        "generation": len(names),
        "chunks": names,
    }
    (folder / "store.json").write_text(json.dumps(manifest))


def test_a_store_of_torchclip_0_1_is_upgraded_in_place(tmp_path, monkeypatch, capsys):
    keys, vectors = [f"/photos/{i}.jpg" for i in range(8)], clustered(8)
    write_npz_store(tmp_path / "old", keys, vectors)
    shutil.copytree(tmp_path / "old", tmp_path / "copy")

    import torchclip.store.table as table_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the commit")

    monkeypatch.setattr(table_module._Folder, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingStore(tmp_path / "old")
    assert json.loads((tmp_path / "old" / "store.json").read_text())["format"] == 1  # the old store is intact
    assert len(list((tmp_path / "old" / "chunks").iterdir())) == 3
    monkeypatch.undo()

    store = EmbeddingStore(tmp_path / "old")  # the first open upgrades
    assert store.keys() == keys and store.model["fingerprint"] == "abc" and store.source == "/photos"
    np.testing.assert_allclose(store.vectors_of(range(8)), vectors, atol=1e-6)
    assert store.rows([2])[0]["mtime"] == (2 * 10**9 + 7) / 1e9
    assert not (tmp_path / "old" / "chunks").exists() and not (tmp_path / "old" / "faiss.index").exists()
    store.add(["/photos/new.jpg"], clustered(1, seed=3))
    assert store.id_of("/photos/new.jpg") == 8  # ids continue after the upgraded rows

    assert main(["store", "upgrade", str(tmp_path / "copy")]) == 0
    assert "upgraded to a Lance store, 8 rows" in capsys.readouterr().out
    assert main(["store", "upgrade", str(tmp_path / "copy")]) == 0
    assert "already a Lance store" in capsys.readouterr().out


def test_bring_your_own_vectors(tmp_path, capsys):
    vectors = clustered(20)
    np.save(tmp_path / "vectors.npy", vectors)
    (tmp_path / "keys.txt").write_text("".join(f"doc-{i}\n" for i in range(20)))
    out = str(tmp_path / "mine.emb")
    assert (
        main(["embed", "--vectors", str(tmp_path / "vectors.npy"), "--keys", str(tmp_path / "keys.txt"), "--out", out])
        == 0
    )
    assert "20 image embeddings (20 added" in capsys.readouterr().out
    store = EmbeddingStore(out)
    assert store.search(vectors[4], k=1)[0][0].key == "doc-4" and store.model["dim"] == 32
    hit = store.search(vectors[4], k=1)[0][0]  # no file behind it: no size, date or pixels (not zeros)
    assert hit.metadata == {} and store.rows([hit.id])[0]["width"] is None
    (tmp_path / "keys.txt").write_text("only-one\n")
    assert (
        main(["embed", "--vectors", str(tmp_path / "vectors.npy"), "--keys", str(tmp_path / "keys.txt"), "--out", out])
        == 2
    )
    assert "holds 1 keys but" in capsys.readouterr().err


def test_a_store_on_s3_compatible_object_storage(tmp_path, monkeypatch):
    from torchclip.store import ivf

    moto_server = pytest.importorskip("moto.server", reason="moto[server] provides the local S3 endpoint")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"the local S3 endpoint could not start: {exc}")
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_address[1]}"
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials).create_bucket(Bucket="photos")
        options = {**credentials, "aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true"}
        store = EmbeddingStore.create("s3://photos/store.emb", model=MODEL, storage_options=options)
        vectors = clustered(40)
        store.add([f"/photos/{i}.jpg" for i in range(40)], vectors)
        assert store.remove(["/photos/3.jpg"]) == 1
        again = EmbeddingStore("s3://photos/store.emb", storage_options=options)
        assert len(again) == 39 and again.generation == store.generation
        assert again.search(vectors[5], k=1)[0][0].key == "/photos/5.jpg"
        assert again.rows([5])[0]["key"] == "/photos/5.jpg"
        monkeypatch.setattr(ivf, "ROWS_PER_PARTITION", 10)  # an ivf_flat index: centroids as an object
        assert again.build_index("ivf_flat", queries=20)["partitions"] == 3
        assert EmbeddingStore("s3://photos/store.emb", storage_options=options).search(vectors[6], k=1)[0][0].key == (
            "/photos/6.jpg"
        )
    finally:
        server.stop()


def test_search_and_index_commands_with_a_filter(tmp_path, capsys):
    from apps_fixtures import save_tiny_model

    photos = tmp_path / "photos"
    synthetic_photos(photos, ["red circle", "blue square", "green star"], per_class=2)
    model = str(save_tiny_model(tmp_path / "model"))
    store = str(tmp_path / "store")
    assert main(["embed", str(photos), "--out", store, "--model", model, "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", store, "a red circle", "-k", "5", "--where", "key LIKE '%red_circle%'", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)[0]["results"]
    assert len(results) == 2 and all("red_circle" in hit["key"] for hit in results)
    assert {"id", "key", "score", "width", "height", "size", "mtime"} <= set(results[0])
    assert main(["search", store, "a red circle", "--where", "nosuch = 1"]) == 2
    assert "bad filter 'nosuch = 1'" in capsys.readouterr().err
    assert main(["index", store]) == 0
    assert "flat index over 6 vectors; recall@10 against exact search 1.0000" in capsys.readouterr().out
    assert main(["store", "info", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 6 and info["index"]["type"] == "flat" and info["model"]["name"] == model


def test_fragments_written_outside_the_store_join_it_in_one_commit(tmp_path):
    """The store side of examples/ray_embed_to_lance.py (Ray itself is not installed here): rows written
    as Lance fragments elsewhere, with ids reserved from the store, appear together in one commit."""
    import lance
    import pyarrow as pa

    from torchclip.store.table import rows_table

    store, _ = filled_store(tmp_path / "store", rows=100)
    new = clustered(20, seed=4)
    with store.writing():
        first = store.reserve_ids(20)
        table = rows_table(32, "float32", [f"/far/{i}.jpg" for i in range(20)], new)
        table = table.add_column(0, "id", pa.array(np.arange(first, first + 20), pa.int64()))
        schema = store.dataset.schema
        fragments = lance.fragment.write_fragments(store.conform(table), store.dataset.uri, schema=schema)
        assert len(EmbeddingStore(tmp_path / "store")) == 100  # written, not yet committed
        operation = lance.LanceOperation.Append(fragments)
        lance.LanceDataset.commit(store.dataset.uri, operation, read_version=store.generation)
    store = EmbeddingStore(tmp_path / "store")
    assert len(store) == 120 and store.search(new[7], k=1)[0][0].key == "/far/7.jpg"
    store.add(["/after.jpg"], new[0])
    assert store.id_of("/after.jpg") == 120 and store.id_of("/far/0.jpg") == 100


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("blocks", [1, 7, 40])
@pytest.mark.parametrize("query_count", [6, 30], ids=["few-queries-screened", "many-queries-copied"])
def test_exact_search_equals_a_float64_scan_even_among_near_ties(dtype, blocks, query_count):
    """Exact search screens float16 blocks with a float16 product for a few queries (a float32 copy for
    many); rows closer to the k-th best than the screening error (here 300 near-copies of one vector,
    spread 1e-4 apart) must still be ranked exactly, also when later blocks are screened against the k-th
    best of the earlier ones (`floor`)."""
    from torchclip.store.exact import TopK, block_candidates

    rng = np.random.default_rng(3)
    base = clustered(4000, seed=6, dim=64)
    centre = base[0]
    near = centre + 1e-4 * rng.standard_normal((300, 64)).astype(np.float32)
    vectors = np.concatenate([base, near / np.linalg.norm(near, axis=1, keepdims=True)]).astype(dtype)
    rng.shuffle(vectors)
    queries = np.concatenate([centre[None], clustered(query_count - 1, seed=8, dim=64)])
    k = 20
    best = TopK(len(queries), k)
    for positions in np.array_split(np.arange(len(vectors)), blocks):
        block_positions, scores = block_candidates(vectors[positions], queries, k, floor=best.floor())
        best.add(positions[block_positions], scores)
    ids, scores = best.result()
    reference = vectors.astype(np.float64) @ queries.astype(np.float64).T  # [N, Q]
    for q in range(len(queries)):
        expected = np.sort(reference[:, q])[::-1][:k]
        np.testing.assert_allclose(scores[q], expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(reference[ids[q], q], expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("setting", [None, "default"])
def test_opening_a_store_sets_malloc_for_streamed_blocks_unless_told_not_to(tmp_path, setting):
    """The settings are per process and must precede Lance's first allocation, so each case runs in its own
    interpreter; exact search there still equals the float64 scan."""
    script = f"""
import numpy as np
from torchclip.store import EmbeddingStore
from torchclip.store.malloc import keep_freed_blocks
store = EmbeddingStore.create({str(tmp_path / "s.emb")!r}, kind="image", model={{"name": "t", "dim": 8}})
vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
store.add([f"/{{i}}.jpg" for i in range(50)], vectors)
found = [hit.key for hit in store.search(vectors[7], k=3, exact=True)[0]]
expected = [f"/{{i}}.jpg" for i in np.argsort(-(vectors @ vectors[7]))[:3]]
print(keep_freed_blocks(), found[0], found == expected)
"""
    env = (
        {**os.environ, "TORCHCLIP_MALLOC": setting}
        if setting
        else {k: v for k, v in os.environ.items() if k != "TORCHCLIP_MALLOC"}
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(setting is None), "/7.jpg", "True"]
