"""Training: distributed equivalence, bit-exact resume, learning on synthetic data."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from apps_fixtures import TINY, save_tiny_model

from torchclip.config import CLIPConfig
from torchclip.image_processor import CLIPImageProcessor
from torchclip.modeling import CLIPModel
from torchclip.processor import CLIPProcessor
from torchclip.train.checkpoint import load_run_state
from torchclip.train.config import TrainConfig
from torchclip.train.loss import ClipLoss
from torchclip.train.model import TowerFeatures
from torchclip.train.optim import no_decay, param_groups
from torchclip.train.schedule import cosine_lr
from torchclip.train.trainer import train


def tiny_model(seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig.from_dict(TINY))


def fixed_batch(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random pixels and token ids ending in the end token at varied lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(300, 40000, (n, 12), generator=g)
    ids[:, 0] = 49406
    lengths = torch.randint(3, 12, (n,), generator=g)
    mask = torch.zeros(n, 12, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        ids[i, length] = 49407
        ids[i, length + 1 :] = 49407
        mask[i, : length + 1] = 1
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def loss_and_grads(features: torch.nn.Module, model: CLIPModel, batch: dict, local_loss: bool):
    image, text, scale = features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    loss = ClipLoss(local_loss=local_loss)(image, text, scale)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    full = fixed_batch(8)
    half = {key: value[rank * 4 : (rank + 1) * 4] for key, value in full.items()}
    results = {}
    for local_loss in (False, True):
        model = tiny_model()
        ddp = torch.nn.parallel.DistributedDataParallel(TowerFeatures(model))
        loss, grads = loss_and_grads(ddp, model, half, local_loss)
        dist.all_reduce(loss)  # the local loss differs per rank; its mean is the global loss
        results[local_loss] = {"loss": loss / world, "grads": grads}
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_with_batch_b_match_one_with_batch_2b(tmp_path):
    """DDP (gloo) over 2 processes x 4 pairs: the loss and every parameter's gradient equal 1 process x 8 pairs,
    with the whole logit matrix on each rank and with `local_loss` (each rank's rows only)."""
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model = tiny_model()
    loss, grads = loss_and_grads(TowerFeatures(model), model, fixed_batch(8), local_loss=False)
    for rank in range(2):
        for local_loss, result in torch.load(tmp_path / f"rank{rank}.pt").items():
            torch.testing.assert_close(result["loss"], loss, atol=1e-5, rtol=0)
            assert result["grads"].keys() == grads.keys()
            for name, grad in grads.items():
                torch.testing.assert_close(result["grads"][name], grad, atol=1e-5, rtol=0, msg=f"{name} {local_loss}")


def test_single_process_loss_is_the_models_own():
    model = tiny_model()
    batch = fixed_batch(6)
    with torch.no_grad():
        expected = model(**batch, return_loss=True).loss
        image, text, scale = TowerFeatures(model)(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(ClipLoss()(image, text, scale), expected, atol=1e-5, rtol=0)


def test_no_weight_decay_on_gains_biases_embeddings_and_temperature():
    model = tiny_model()
    decayed, plain = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert {"logit_scale", "text_model.embeddings.token_embedding.weight"} <= plain_names
    assert "vision_model.embeddings.class_embedding" in plain_names
    assert not any(name.endswith(".bias") or "layer_norm" in name for name in decayed_names)
    assert "text_model.encoder.layers.0.mlp.fc1.weight" in decayed_names
    assert not no_decay("visual_projection.weight", model.visual_projection.weight)


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    config = TrainConfig(data="synthetic", output_dir="x", model_config=TINY, steps=110, lr=1.0, min_lr=0.1)
    config.warmup_steps = 10
    assert cosine_lr(0, config) == pytest.approx(0.1)
    assert cosine_lr(9, config) == pytest.approx(1.0)
    assert cosine_lr(60, config) == pytest.approx(0.55)
    assert cosine_lr(110, config) == pytest.approx(0.1)


def run_config(tmp_path, name: str, **overrides) -> TrainConfig:
    settings = dict(
        data="synthetic",
        output_dir=str(tmp_path / name),
        model_config=TINY,
        steps=6,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        workers=2,
        save_every=100,
        log_every=1,
        progress=False,
        seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_resume_after_a_stop_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    whole = run_config(tmp_path, "whole")
    train(whole)
    parts = run_config(tmp_path, "parts")
    train(parts, stop_after=3)  # odd: the other worker's stream must be asked first after resuming
    assert not (tmp_path / "parts" / "model").exists()  # stopped, not finished
    train(parts, resume=True)
    a = load_run_state(tmp_path / "whole" / "checkpoint-last.safetensors")
    b = load_run_state(tmp_path / "parts" / "checkpoint-last.safetensors")
    assert a.step == b.step == 6
    assert a.positions == b.positions
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    for param_id, entries in a.optimizer["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, b.optimizer["state"][param_id][key]), (param_id, key)
    assert torch.equal(a.rng["cpu"], b.rng["cpu"])
    exported = CLIPModel.from_pretrained(tmp_path / "parts" / "model")
    torch.testing.assert_close(exported.logit_scale, b.model["logit_scale"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_other_worker_count_is_refused(tmp_path):
    train(run_config(tmp_path, "run", steps=2, workers=0))
    with pytest.raises(FileExistsError, match="--resume to continue it, or --overwrite"):
        train(run_config(tmp_path, "run", steps=4, workers=2))
    with pytest.raises(ValueError, match="data worker stream"):
        train(run_config(tmp_path, "run", steps=4, workers=2), resume=True)


def test_short_run_lowers_the_loss_on_synthetic_data(tmp_path):
    from torchclip.train.data import PairBatches, SyntheticSource
    from torchclip.train.model import build_model_and_processor

    config = run_config(tmp_path, "learn", steps=40, batch_size=32, lr=2e-3, warmup_steps=5, workers=1)
    model, processor = build_model_and_processor(config)
    held = next(iter(PairBatches(SyntheticSource(seed=99), processor, 64)))

    def loss_of(m: CLIPModel) -> float:
        with torch.no_grad():
            return float(m(held["input_ids"], held["pixel_values"], held["attention_mask"], return_loss=True).loss)

    before = loss_of(tiny_model(config.seed))
    train(config)
    after = loss_of(CLIPModel.from_pretrained(tmp_path / "learn" / "model"))
    assert after < before - 0.3, (before, after)
    lines = [json.loads(line) for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 41))
    documented = {"step", "loss", "lr", "logit_scale", "grad_norm", "bad_samples"}
    assert all(documented <= line.keys() for line in lines)


def test_locked_image_tower_does_not_change(tmp_path):
    config = run_config(tmp_path, "lit", steps=2, workers=0, lock_image=True)
    train(config)
    trained = CLIPModel.from_pretrained(tmp_path / "lit" / "model")
    start = tiny_model(config.seed)
    for name, value in start.state_dict().items():
        same = torch.equal(value, trained.state_dict()[name])
        if name.startswith(("vision_model.", "visual_projection.")):
            assert same, name
    assert not torch.equal(start.text_projection.weight, trained.text_projection.weight)


def test_bf16_accumulation_and_checkpointing_run(tmp_path):
    config = run_config(tmp_path, "opts", steps=2, workers=0, precision="bf16", accum_steps=2, grad_checkpointing=True)
    train(config)
    state = load_run_state(tmp_path / "opts" / "checkpoint-last.safetensors")
    assert state.consumed_batches == 4
    assert all(torch.isfinite(v).all() for v in state.model.values() if v.is_floating_point())


def test_cli_train_with_recipe_and_overrides(tmp_path):
    from torchclip.cli import main

    out = tmp_path / "cli"
    code = main(
        ["train", "--recipe", "synthetic-small", "--output", str(out), "--model-config", json.dumps(TINY),
         "--steps", "1", "--batch-size", "4", "--workers", "0", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["batch_size"] == 4 and saved["data"] == "synthetic" and saved["save_dtype"] == "float16"
    assert json.loads((out / "model" / "config.json").read_text())["dtype"] == "float16"


def test_wise_ft_exports_the_mix_of_start_and_fine_tuned_weights(tmp_path):
    """Fine-tuning a saved model with wise_ft=0.25: the exported weights are 0.75 x the starting checkpoint's
    + 0.25 x the trained ones (the run's last checkpoint), with the text tower locked as in the recipe."""
    start = tiny_model(3)
    start.save_pretrained(tmp_path / "start")
    CLIPProcessor(CLIPImageProcessor(size=32, crop_size=32)).save_pretrained(tmp_path / "start")
    config = run_config(
        tmp_path, "wise", steps=3, workers=0, lr=0.05, model=str(tmp_path / "start"), model_config=None,
        lock_text=True, wise_ft=0.25,
    )  # fmt: skip
    train(config)
    trained = load_run_state(tmp_path / "wise" / "checkpoint-last.safetensors").model
    exported = CLIPModel.from_pretrained(tmp_path / "wise" / "model").state_dict()
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    assert not torch.allclose(trained[name], start.state_dict()[name], atol=1e-3)  # it did train
    for key, value in start.state_dict().items():
        torch.testing.assert_close(exported[key], 0.75 * value + 0.25 * trained[key], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="wise_ft"):
        TrainConfig(data="synthetic", output_dir="x", model_config=TINY, wise_ft=0.5)  # nothing to start from
    with pytest.raises(ValueError, match="wise_ft"):
        TrainConfig(data="synthetic", output_dir="x", model="m", wise_ft=1.5)


def test_fine_tuning_at_another_image_size_resizes_the_position_embeddings(tmp_path):
    """`image_size=48` on a 32 px checkpoint: the run trains and exports a 48 px model whose processor resizes
    to 48. With lr 0 nothing trains, so the exported model must embed 48 px pictures exactly as the starting
    one does with `interpolate_pos_encoding=True` (the model's own bicubic resizing, parity-tested against
    transformers)."""
    start = save_tiny_model(tmp_path / "start", seed=5)
    config = run_config(
        tmp_path, "wider", steps=2, workers=0, lr=0.0, model=str(start), model_config=None, image_size=48
    )
    train(config)
    exported = CLIPModel.from_pretrained(tmp_path / "wider" / "model").eval()
    assert exported.config.vision_config.image_size == 48
    assert exported.vision_model.embeddings.position_embedding.weight.shape == ((48 // 8) ** 2 + 1, 32)
    processor = json.loads((tmp_path / "wider" / "model" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 48} and processor["crop_size"] == {"height": 48, "width": 48}
    pixels = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_model(5).eval().get_image_features(pixels, interpolate_pos_encoding=True)
        torch.testing.assert_close(exported.get_image_features(pixels), expected, atol=1e-5, rtol=1e-5)


def test_image_size_that_the_patches_do_not_tile_is_refused(tmp_path):
    from torchclip.train.model import build_model_and_processor

    start = save_tiny_model(tmp_path / "start", seed=5)
    config = run_config(tmp_path, "odd", model=str(start), model_config=None, image_size=50)
    with pytest.raises(ValueError, match="image_size 50 is not a multiple of the model's patch size 8"):
        build_model_and_processor(config)
    with pytest.raises(ValueError, match="image_size"):
        TrainConfig(data="synthetic", output_dir="x", model_config=TINY, image_size=64)  # nothing to resize
