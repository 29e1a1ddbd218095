"""The folder-embedding data path: every file's embedding, in order, equal to the plain computation;
unreadable files reported and skipped; images found by content."""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import time

import pytest
import torch
from apps_fixtures import synthetic_photos, tiny_model_and_processor

from torchclip import image_processor as image_processor_module
from torchclip.embed import embed_image_files, join_batches
from torchclip.image_files import find_images, pixel_batches

CLASSES = ["red circle", "blue square", "green star", "yellow star"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    photos = synthetic_photos(root / "a", CLASSES[:2], per_class=3)
    photos |= synthetic_photos(root / "b" / "c", CLASSES[2:], per_class=2, fmt="PNG")
    shutil.copy(next(iter(photos)), root / "b" / "no_extension")  # an image by content only
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    shutil.copy(next(iter(photos)), root / ".hidden" / "skipped.jpg")
    return root


def reference_embeddings(model, processor, paths):
    """One image at a time through the image processor and the model: the plain computation."""
    with torch.no_grad():
        rows = [
            model.get_image_features(processor.image_processor(p, return_tensors="pt")["pixel_values"]) for p in paths
        ]
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1)


def test_find_images_by_content_recursively(collection):
    names = [p.relative_to(collection).as_posix() for p in find_images(collection)]
    assert "b/no_extension" in names
    assert "notes.txt" not in names and not any(n.startswith(".hidden") for n in names)
    assert len(names) == 3 * 2 + 2 * 2 + 1 and names == sorted(names)
    assert find_images(collection, exclude=[collection / "b"]) == sorted((collection / "a").iterdir())


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_pipeline_returns_every_embedding_in_order(collection, workers):
    model, processor = tiny_model_and_processor()
    files = find_images(collection)
    batches = embed_image_files(model, processor.image_processor, files, batch_size=3, num_workers=workers)
    result = join_batches(batches, model.config.projection_dim)
    paths = [files[i] for i in result.indices]
    assert paths == find_images(collection) and result.failures == []
    torch.testing.assert_close(result.features, reference_embeddings(model, processor, paths), atol=1e-5, rtol=0)


def test_corrupt_files_are_reported_and_skipped(collection, tmp_path):
    model, processor = tiny_model_and_processor()
    good = find_images(collection)[:5]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:200])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not a png")
    paths = [good[0], truncated, *good[1:3], garbage, tmp_path / "missing.jpg", *good[3:]]
    batches = list(embed_image_files(model, processor.image_processor, paths, batch_size=2, num_workers=2))
    indices = [i for batch in batches for i in batch.indices]
    failures = dict(f for batch in batches for f in batch.failures)
    assert indices == [0, 2, 3, 6, 7]
    assert sorted(failures) == [1, 4, 5]
    assert "not an image" in failures[4] and "no such file" in failures[5] and failures[1]
    features = torch.cat([batch.features for batch in batches])
    torch.testing.assert_close(features, reference_embeddings(model, processor, good), atol=1e-5, rtol=0)


class RecordingProcessor:
    """An image processor that notes, in the decoding worker, when it starts each photo (each takes 50 ms)
    and whether the resize kernels' check had already run then."""

    def __init__(self, image_processor, notes):
        self.image_processor, self.notes = image_processor, notes
        self.fast_jpeg_decode = False

    def uint8_pixels(self, image, num_workers=None):
        checked = image_processor_module._vectorised_matches_pillow.cache_info().currsize == 1
        with open(self.notes / f"{os.getpid()}.txt", "a") as notes:
            notes.write(f"{time.monotonic()} {checked}\n")
        time.sleep(0.05)  # a photo that takes a while
        return self.image_processor.uint8_pixels(image, num_workers=num_workers)


@pytest.mark.parametrize("model_threads", ["every core", "one core left"])
def test_workers_pause_while_the_model_works_only_when_it_takes_every_core(collection, tmp_path, model_threads):
    """With the model's threads on every core, no photo starts decoding while the caller holds a batch
    (DecodingTurns); with a core to spare, the workers decode ahead meanwhile."""
    if model_threads == "one core left" and (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    _, processor = tiny_model_and_processor()
    threads, workers = ((os.cpu_count() or 1), 2) if model_threads == "every core" else ((os.cpu_count() or 1) - 1, 1)
    files = find_images(collection)
    recording = RecordingProcessor(processor.image_processor, tmp_path)
    image_processor_module._vectorised_matches_pillow.cache_clear()  # only pixel_batches' warm-up fills it now
    holds, count = [], 0
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in pixel_batches(files, recording, torch.device("cpu"), batch_size=2, num_workers=workers):
            count += len(batch.indices)
            start = time.monotonic()
            time.sleep(0.4)  # the model at work on this batch
            holds.append((start, time.monotonic()))
    finally:
        torch.set_num_threads(before)
    assert count == len(files)
    notes = [line.split() for path in tmp_path.glob("*.txt") for line in path.read_text().splitlines()]
    assert len(notes) == len(files) and len(list(tmp_path.glob("*.txt"))) == workers
    # A worker that saw the turn just before the batch arrived may note its photo a moment after: 0.15 s slack.
    started_during_a_hold = [float(t) for t, _ in notes if any(a + 0.15 < float(t) < b for a, b in holds)]
    if model_threads == "every core":
        assert started_during_a_hold == []
    else:
        assert started_during_a_hold
    if multiprocessing.get_start_method() == "fork":  # forked workers inherit the loaded kernels and checks
        assert {checked for _, checked in notes} == {"True"}


def test_a_caller_that_stops_early_leaves_no_worker_waiting(collection, tmp_path):
    """Breaking out of pixel_batches while the workers wait for their turn must neither hang nor leave the
    workers to the DataLoader's 5-second kill."""
    _, processor = tiny_model_and_processor()
    recording = RecordingProcessor(processor.image_processor, tmp_path)  # 50 ms a photo: work is pending
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        start = time.monotonic()
        batches = pixel_batches(find_images(collection) * 20, recording, torch.device("cpu"), 2, 2)
        next(batches)
        time.sleep(0.3)  # the workers reach the gate
        batches.close()
        gc.collect()  # the loader's iterator shuts its workers down when it is collected
        assert time.monotonic() - start < 4
    finally:
        torch.set_num_threads(before)
