"""Bad input to training: a crafted checkpoint, unusable data, a reused run folder, a device it cannot have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from apps_fixtures import TINY

from torchclip.distributed import choose_device
from torchclip.train.checkpoint import UnsafeCheckpointError, load_run_state
from torchclip.train.config import TrainConfig
from torchclip.train.trainer import train

SRC = str(Path(__file__).resolve().parent.parent / "src")


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`torchclip ARGV` in a fresh process (what a user runs), with this tree's code."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torchclip.cli", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def tiny_run(tmp_path: Path, name: str = "run", **overrides) -> TrainConfig:
    settings = dict(
        data="synthetic", output_dir=str(tmp_path / name), model_config=TINY, steps=2, batch_size=4,
        warmup_steps=1, workers=0, log_every=1, progress=False,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


class RunsAShellCommand:
    """What an attacker puts into a shared run folder: unpickling this calls os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_resume_from_a_crafted_pickle_checkpoint_runs_nothing_and_says_why(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "code-ran"
    state = {"step": 1, "consumed_batches": 1, "positions": [[1]], "model": RunsAShellCommand(f"touch {marker}")}
    torch.save(state, run / "checkpoint-last.pt")  # what torch.save writes: a pickle inside a zip
    result = cli(
        "train", "--output", str(run), "--data", "synthetic", "--model-config", json.dumps(TINY),
        "--steps", "2", "--batch-size", "4", "--workers", "0", "--no-progress", "--resume",
    )  # fmt: skip
    assert not marker.exists()
    assert result.returncode == 2, result.stderr
    assert "refused to load" in result.stderr and "checkpoint-last.pt" in result.stderr
    assert "posix.system" in result.stderr  # the reason: what the pickle asked to run


def test_a_run_state_file_that_is_not_one_is_named(tmp_path):
    fake = tmp_path / "checkpoint-last.safetensors"
    fake.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(UnsafeCheckpointError, match="checkpoint-last.safetensors: damaged or not a run state"):
        load_run_state(fake)


def test_a_checkpoint_of_an_older_torchclip_resumes_and_is_replaced(tmp_path):
    """Runs written before the safetensors format have a plain `checkpoint-last.pt` (tensors and
    containers only), which `weights_only=True` reads; the next checkpoint supersedes it."""
    config = tiny_run(tmp_path, steps=3)
    train(config, stop_after=1)
    state = load_run_state(tmp_path / "run" / "checkpoint-last.safetensors")
    legacy = {"step": state.step, "consumed_batches": state.consumed_batches, "positions": state.positions,
              "model": state.model, "optimizer": state.optimizer}  # fmt: skip
    (tmp_path / "run" / "checkpoint-last.safetensors").unlink()
    torch.save(legacy, tmp_path / "run" / "checkpoint-last.pt")
    train(config, resume=True)
    assert load_run_state(tmp_path / "run" / "checkpoint-last.safetensors").step == 3
    assert not (tmp_path / "run" / "checkpoint-last.pt").exists()


def test_a_table_whose_images_are_all_missing_stops_with_a_clear_error_in_bounded_time(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption\n" + "".join(f"missing/{i}.jpg,a photo {i}\n" for i in range(5)))
    result = cli(  # bounded in time by cli()'s subprocess timeout: a run that never ends fails the test there
        "train", "--output", str(tmp_path / "run"), "--data", str(table), "--model-config", json.dumps(TINY),
        "--steps", "3", "--batch-size", "2", "--workers", "2", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("torchclip train: error:")]
    assert len(errors) == 1  # one line (the other worker may still log a skipped sample as it is stopped)
    last = errors[0]
    assert last.startswith("torchclip train: error: training data")
    assert "200 samples in a row could not be used" in last and "after trying 200 (0 usable)" in last
    assert "missing/" in last and "unreadable image" in last
    assert result.stderr.count("skipped bad sample") <= 2 * 200  # bounded: at most one limit per stream


def test_a_stream_with_some_bad_samples_keeps_training(tmp_path):
    """Bad samples below the limit are skipped and counted, as before."""
    from PIL import Image

    rows = []
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a red square {i}\n")
    rows += [f"gone{i}.png,nothing\n" for i in range(3)]
    (tmp_path / "pairs.csv").write_text("filepath,caption\n" + "".join(rows))
    train(tiny_run(tmp_path, data=str(tmp_path / "pairs.csv"), steps=3, batch_size=2, max_bad_in_row=4))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["bad_samples"] >= 1
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_a_folder_that_holds_a_run_is_not_overwritten_silently(tmp_path):
    train(tiny_run(tmp_path))
    checkpoint = tmp_path / "run" / "checkpoint-last.safetensors"
    before = checkpoint.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run .checkpoint-last.safetensors.: pass --resume"):
        train(tiny_run(tmp_path, seed=5))
    assert checkpoint.read_bytes() == before
    train(tiny_run(tmp_path, seed=5), overwrite=True)
    assert checkpoint.read_bytes() != before
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # the old run's lines are gone, not followed by the new ones


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    """A kill between a checkpoint and the next leaves metric lines for steps that the resumed run redoes
    (and maybe half a line); after resuming each step appears once."""
    config = tiny_run(tmp_path, steps=4)
    train(config, stop_after=2)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write(json.dumps({"step": 3, "loss": 9.9}) + "\n" + '{"step": 4, "lo')
    train(config, resume=True)
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert lines[2]["loss"] != 9.9


def test_resume_and_overwrite_together_are_refused(tmp_path):
    from torchclip.cli import main

    code = main(["train", "--output", str(tmp_path), "--data", "synthetic", "--model-config", json.dumps(TINY),
                 "--resume", "--overwrite"])  # fmt: skip
    assert code == 2


@pytest.mark.parametrize(
    ("requested", "local_rank", "gpus", "expected"),
    [
        ("cuda", 3, 4, "cuda:3"),  # torchrun's 4th process on a 4-GPU machine: its own GPU
        ("cuda", 0, 1, "cuda:0"),
        ("cuda:1", 0, 2, "cuda:1"),  # an explicit index is kept
        (None, 2, 4, "cuda:2"),
        (None, 0, 0, "cpu"),
        ("cpu", 1, 4, "cpu"),
    ],
)
def test_device_of_each_process(requested, local_rank, gpus, expected):
    assert choose_device(requested, local_rank, gpus) == torch.device(expected)


@pytest.mark.parametrize(
    ("requested", "gpus", "message"),
    [
        ("cuda", 0, "has no CUDA GPU"),
        ("cuda:2", 2, "GPU 2 asked for, but this machine has 2"),
        ("gpu", 1, "not a torch"),
    ],
)
def test_device_that_cannot_be_had_is_a_clear_error(requested, gpus, message):
    with pytest.raises(ValueError, match=message):
        choose_device(requested, 0, gpus)


def test_train_on_cuda_without_a_gpu_says_so_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA GPU"):
        train(tiny_run(tmp_path, device="cuda"))
    assert not (tmp_path / "run").exists()


def test_a_table_with_a_byte_order_mark_or_not_utf8_text(tmp_path):
    from torchclip.train.data import TablePairs

    table = tmp_path / "pairs.csv"
    table.write_bytes("\ufefffilepath,caption\na.png,a cat\n".encode())
    assert TablePairs(table).rows == [("a.png", "a cat")]  # the header is recognised, not taken as a row
    table.write_bytes(b"filepath,caption\na.png,a cat\nb.png,caf\xe9\n")
    with pytest.raises(ValueError, match=r"pairs.csv, line 3: not UTF-8 text"):
        TablePairs(table)


def _two_rank_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    import torch.distributed as dist

    config = tiny_run(Path(folder), steps=2, batch_size=2)
    train(config)
    try:
        train(config)  # the folder holds a run now: every rank must refuse, none may wait for the others
        outcome = "trained again"
    except FileExistsError as exc:
        outcome = str(exc)
    Path(folder, f"rank{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


def test_every_rank_refuses_a_folder_that_holds_a_run(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(_two_rank_worker, args=(port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a rank left waiting for the other would otherwise hang for 30 minutes
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish: one refused the folder while the other waited")
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert all("already holds a run" in outcome for outcome in outcomes), outcomes
    assert load_run_state(tmp_path / "run" / "checkpoint-last.safetensors").positions == [
        [4],
        [4],
    ]  # 2 steps of 2 pairs per rank


def test_a_run_state_with_malformed_fields_is_named(tmp_path):
    from safetensors.torch import save_file

    fake = tmp_path / "checkpoint-last.safetensors"
    state = {
        "step": "3",
        "consumed_batches": 1,
        "positions": [[1]],
        "optimizer_state": {},
        "optimizer_param_groups": [],
    }
    save_file({"model.x": torch.zeros(1)}, str(fake), metadata={"format": "torchclip-run-state", "version": "1",
                                                                 "state": json.dumps(state)})  # fmt: skip
    with pytest.raises(UnsafeCheckpointError, match=r"damaged run state \(missing or malformed: step\)"):
        load_run_state(fake)
