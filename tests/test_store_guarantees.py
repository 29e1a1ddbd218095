"""What the store promises when things go wrong: one writer at a time, kill -9 at any moment, damaged
files, bad options, a source with nothing usable, and readers during commits."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from apps_fixtures import run_update, save_tiny_model, subprocess_env

from torchclip.cli import main
from torchclip.store import EmbeddingStore, StoreBusyError, StoreDamagedError


def contents(folder) -> dict[str, np.ndarray]:
    store = EmbeddingStore(folder)
    table = store.dataset.to_table(columns=["id", "key", "vector"])
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids), "a row id is used twice"
    keys = table.column("key").to_pylist()
    assert len(set(keys)) == len(keys), "a key is stored twice"
    return {key: np.array(vector, np.float32) for key, vector in zip(keys, table.column("vector").to_pylist())}


def assert_same(folder, reference) -> None:
    got, expected = contents(folder), contents(reference)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


HOLD_LOCK = """
import sys, time
from torchclip.store.table import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_stops_with_a_clear_error(store_photos, tmp_path, store_model):
    run_update(tmp_path / "store", store_photos, store_model)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (store_photos / "red_circle_0.jpg").unlink()
        with pytest.raises(StoreBusyError, match=rf"is being written by process {holder.pid} \(since .*\); wait"):
            run_update(tmp_path / "store", store_photos, store_model)
        with pytest.raises(StoreBusyError):
            EmbeddingStore(tmp_path / "store").remove(["anything"])
        assert len(EmbeddingStore(tmp_path / "store")) == 10  # nothing was changed; reading is never blocked
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock
    assert run_update(tmp_path / "store", store_photos, store_model).removed == 1


def test_two_embed_runs_at_once_leave_a_healthy_store(store_photos, tmp_path, store_model):
    """Both start together on one new store: each finishes or stops with the busy message, and the
    store afterwards holds every photo once (a plain re-run completes whatever the stopped one left)."""
    model_dir = save_tiny_model(tmp_path / "model")
    run_update(tmp_path / "reference", store_photos, store_model)
    args = [
        sys.executable,
        "-m",
        "torchclip.cli",
        "embed",
        str(store_photos),
        "--out",
        str(tmp_path / "store"),
        "--model",
        str(model_dir),
        "--batch-size",
        "2",
        "--commit-every",
        "2",
        "--workers",
        "0",
        "--quiet",
    ]
    runs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for _ in range(2)
    ]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    for code, stderr in results:
        # "by process N (since ...)", or "by another process" when it reads the lock file before N is written
        assert code == 0 or (code == 2 and "is being written by " in stderr), stderr[-2000:]
    assert any(code == 0 for code, _ in results)
    if any(code != 0 for code, _ in results):  # the stopped run changed nothing; a plain re-run has nothing to add
        rerun = subprocess.run(args, capture_output=True, text=True, env=subprocess_env())
        assert rerun.returncode == 0 and "(0 new, 0 removed, 10 unchanged)" in rerun.stdout
    assert_same(tmp_path / "store", tmp_path / "reference")


KILL_AFTER = """
import os, signal, sys, threading, time
from torchclip.cli import main
delay = float(sys.argv[1])
threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()  # a power cut, any moment
sys.exit(main(sys.argv[2:]))
"""


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(store_photos, tmp_path, store_model):
    model_dir = save_tiny_model(tmp_path / "model")
    run_update(tmp_path / "reference", store_photos, store_model)
    args = [
        "embed",
        str(store_photos),
        "--out",
        str(tmp_path / "store"),
        "--model",
        str(model_dir),
        "--batch-size",
        "1",
        "--commit-every",
        "1",
        "--workers",
        "0",
        "--quiet",
    ]
    delays = random.Random(0).sample([x / 10 for x in range(20, 60)], 3)  # past start-up, inside the embedding
    for delay in sorted(delays):
        killed = subprocess.run(
            [sys.executable, "-c", KILL_AFTER, str(delay), *args], capture_output=True, text=True, env=subprocess_env()
        )
        assert killed.returncode in (-signal.SIGKILL, 0), killed.stderr[-2000:]
        if (tmp_path / "store" / "store.json").is_file():
            assert set(contents(tmp_path / "store")) <= set(contents(tmp_path / "reference"))  # a committed state
    assert main([*args]) == 0
    assert_same(tmp_path / "store", tmp_path / "reference")


def test_a_damaged_file_is_named_and_a_plain_rerun_repairs_the_store(store_photos, tmp_path, store_model, capsys):
    run_update(tmp_path / "reference", store_photos, store_model)
    run_update(tmp_path / "store", store_photos, store_model)
    data = sorted((tmp_path / "store" / "rows.lance" / "data").iterdir())
    data[0].write_bytes(data[0].read_bytes()[:100])  # a truncated data file
    with pytest.raises(StoreDamagedError, match=rf"{data[0].name}.*run `torchclip embed` on its source again"):
        EmbeddingStore(tmp_path / "store").search(np.ones(32), k=3)
    report = run_update(tmp_path / "store", store_photos, store_model)
    assert report.repaired and data[0].name in report.repaired and "rebuilding" in capsys.readouterr().err
    assert_same(tmp_path / "store", tmp_path / "reference")
    assert min(contents(tmp_path / "store")) and EmbeddingStore(tmp_path / "store").rows([0]) == []  # ids not reused


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--workers", "-1"], ["--commit-every", "0"]])
def test_bad_options_are_refused_before_anything_is_created(store_photos, tmp_path, capsys, option):
    assert main(["embed", str(store_photos), "--out", str(tmp_path / "new.emb"), *option]) == 2
    assert option[0] in capsys.readouterr().err and not (tmp_path / "new.emb").exists()


def test_rows_are_committed_by_time_as_well_as_by_count(store_photos, tmp_path, store_model):
    run_update(tmp_path / "by_count", store_photos, store_model, commit_every=1024)
    assert EmbeddingStore(tmp_path / "by_count").generation == 2  # the empty table, one commit of 10 rows
    run_update(tmp_path / "by_time", store_photos, store_model, commit_every=1024, commit_seconds=1e-9)
    assert EmbeddingStore(tmp_path / "by_time").generation == 1 + 5  # every batch of 2: its time was up


def test_a_source_of_unreadable_files_stops_after_a_bounded_number_in_a_row(store_photos, tmp_path, store_model):
    broken = tmp_path / "broken"
    broken.mkdir()
    for n in range(6):
        (broken / f"bad_{n}.jpg").write_bytes(b"not a jpeg")
    # the count is checked after each batch (of 2 here): the bound of 3 is passed at the 4th file
    with pytest.raises(RuntimeError, match=r"stopped after 4 unreadable files in a row \(4 tried, 0 embedded"):
        run_update(tmp_path / "store", broken, store_model, max_consecutive_failures=3)
    assert len(EmbeddingStore(tmp_path / "store").failures()) == 4
    for photo in sorted(store_photos.iterdir())[::2]:  # good and bad files alternate: never 3 bad in a row
        (store_photos / f"{photo.stem}z.jpg").write_bytes(b"not a jpeg")
    report = run_update(tmp_path / "mixed", store_photos, store_model, max_consecutive_failures=3)
    assert report.added == 10 and len(report.failures) == 5


WRITER = """
import sys
import numpy as np
from torchclip.store import EmbeddingStore
store = EmbeddingStore(sys.argv[1])
for n in range(15):
    vectors = np.random.default_rng(n).standard_normal((7, 8))
    store.add([f"batch{n}/{i}" for i in range(7)], vectors)
"""


def test_a_search_during_commits_sees_one_complete_generation(tmp_path):
    EmbeddingStore.create(tmp_path / "store", model={"name": None, "fingerprint": None, "dim": 8})
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "store")], env=subprocess_env())
    seen = set()
    query = np.ones(8, np.float32)
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        store = EmbeddingStore(tmp_path / "store")
        rows = len(store)
        hits = store.search(query, k=200)[0] if rows else []
        assert rows % 7 == 0 and len(hits) == rows and len({hit.id for hit in hits}) == rows
        seen.add(rows)
    assert writer.wait() == 0
    assert len(EmbeddingStore(tmp_path / "store")) == 105 and len(seen) > 1


DIE_WHILE_REWRITING = """
import os, signal, sys
import lance, pyarrow as pa
from torchclip.store import EmbeddingStore, ivf
ivf.ROWS_PER_PARTITION, ivf.BUCKET_ROWS = 100, 300
real_write = lance.write_dataset

def write_then_die(data, *args, **options):
    if options.get("mode") != "overwrite":
        return real_write(data, *args, **options)
    def batches():
        for n, batch in enumerate(data):
            if n == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # a power cut in the middle of the sorted rewrite
            yield batch
    reader = pa.RecordBatchReader.from_batches(data.schema, batches())
    return real_write(reader, *args, max_rows_per_file=500, **options)

lance.write_dataset = write_then_die
EmbeddingStore(sys.argv[1]).build_index("ivf_flat", queries=50)
"""


@pytest.mark.parametrize("batches_written", [0, 4])
def test_an_index_build_killed_while_rewriting_the_table_leaves_the_store_as_it_was(
    tmp_path, monkeypatch, batches_written
):
    """ivf_flat rewrites the whole table: killed in the middle (spilled rows, some new data files written,
    nothing committed), the store keeps every row and its old index, and the next build cleans up."""
    from torchclip.store import ivf

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    store = EmbeddingStore.create(tmp_path / "store", model={"name": None, "fingerprint": None, "dim": 16})
    store.add([f"/photos/{i}.jpg" for i in range(2000)], vectors)
    store.build_index("flat")
    before = contents(tmp_path / "store")
    killed = subprocess.run(
        [sys.executable, "-c", DIE_WHILE_REWRITING, str(tmp_path / "store"), str(batches_written)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list((tmp_path / "store").glob(".ivf-build-*"))  # the spilled rows of the killed build are there
    after = EmbeddingStore(tmp_path / "store")
    assert after.index_info()["type"] == "flat" and len(after) == 2000
    got = contents(tmp_path / "store")
    assert sorted(got) == sorted(before) and all(np.array_equal(got[key], before[key]) for key in before)
    assert after.search(vectors[11], k=1)[0][0].key == "/photos/11.jpg"
    monkeypatch.setattr(ivf, "ROWS_PER_PARTITION", 100)
    assert after.build_index("ivf_flat", queries=50)["type"] == "ivf_flat"  # a plain re-run completes
    assert not list((tmp_path / "store").glob(".ivf-build-*"))
    assert sorted(contents(tmp_path / "store")) == sorted(before)
    assert len(list((tmp_path / "store" / "ivf").iterdir())) == 1  # the killed build's centroids are gone
    assert EmbeddingStore(tmp_path / "store").search(vectors[11], k=1)[0][0].key == "/photos/11.jpg"
