"""The training loop: contrastive pre-training from scratch or fine-tuning, on one process or under torchrun.

One optimiser step = `accum_steps` micro-batches of `batch_size` pairs on every rank. Under torchrun the
model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU) and `ClipLoss` contrasts the
features of all ranks, so N ranks with batch B train as one process with batch N*B.

Checkpoints (`OUTPUT/checkpoint-last.safetensors`, see `torchclip.train.checkpoint`: nothing in them is
executed when they load) hold the weights, the optimiser, the random generators, the step, and every data
stream's position: `resume=True` continues the same run, bit for bit, after a kill at any moment (the work
since the last checkpoint is redone). A folder that already holds a run is never overwritten silently:
continue it with `resume=True` or start over with `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from torchclip.train.checkpoint import (
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    RunState,
    find_checkpoint,
    load_run_state,
    restore_rng,
    rng_state,
    save_run_state,
)
from torchclip.train.data import MAX_BAD_IN_ROW, PairBatches, open_source
from torchclip.train.loss import ClipLoss

log = logging.getLogger("torchclip.train")

METRICS_NAME = "metrics.jsonl"
MAX_LOGIT_SCALE = math.log(100)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as `train_config.json` beside the checkpoints."""

    data: str
    output_dir: str
    model: str | None = None  # a checkpoint to fine-tune (any that torchclip loads); None: random init
    model_config: dict[str, Any] | None = None  # CLIPConfig dict for random init
    steps: int = 1000  # optimiser steps
    batch_size: int = 64  # pairs per micro-batch on each rank
    accum_steps: int = 1
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    precision: str = "fp32"  # or "bf16" (autocast)
    grad_checkpointing: bool = False
    lock_image: bool = False  # LiT: keep the image tower (and its projection) fixed
    lock_text: bool = False
    local_loss: bool = False
    workers: int = 2
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    save_dtype: str = "float32"  # dtype of the final exported model
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu; "cuda" means cuda:LOCAL_RANK
    progress: bool = True
    max_bad_in_row: int = MAX_BAD_IN_ROW  # consecutive unusable samples in one data stream before giving up

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lock_image and self.lock_text:
            raise ValueError("lock_image and lock_text together leave nothing to train")
        if self.model is None and self.model_config is None:
            raise ValueError("give a checkpoint to start from (model) or a model_config to initialise randomly")
        for name in ("steps", "batch_size", "accum_steps", "max_bad_in_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, then a half cosine down to `min_lr` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, the temperature and embedding tables are not weight-decayed (as OpenCLIP does)."""
    return param.ndim < 2 or "embedding" in name or "logit_scale" in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class TowerFeatures(nn.Module):
    """What DDP wraps: both towers to normalised features, plus the exponentiated temperature."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = self.model.get_image_features(pixel_values).float()
        text = self.model.get_text_features(input_ids, attention_mask).float()
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return image, text, self.model.logit_scale.exp()


def lock_tower(model: nn.Module, tower: str) -> None:
    modules = ("vision_model", "visual_projection") if tower == "image" else ("text_model", "text_projection")
    for name in modules:
        module = getattr(model, name)
        module.requires_grad_(False)
        module.eval()


def build_model_and_processor(config: TrainConfig) -> tuple[nn.Module, Any]:
    """A fresh model from `model_config`, or the checkpoint in `model` with its processor when it has one."""
    from torchclip.config import CLIPConfig
    from torchclip.image_processor import CLIPImageProcessor
    from torchclip.modeling import CLIPModel
    from torchclip.processor import CLIPProcessor

    if config.model is not None:
        model, processor = load_checkpoint(config.model)
    else:
        model = CLIPModel(CLIPConfig.from_dict(config.model_config or {}))
        processor = None
    if processor is None:
        side = model.config.vision_config.image_size
        processor = CLIPProcessor(CLIPImageProcessor(size=side, crop_size=side))
    return model, processor


def load_checkpoint(name_or_path: str) -> tuple[nn.Module, Any]:
    """Any checkpoint torchclip loads (HF folder, hub id, OpenAI/OpenCLIP file), in float32 for training."""
    try:
        from torchclip.convert import load
    except ImportError:  # the converter is optional; HF folders load without it
        from torchclip.modeling import CLIPModel
        from torchclip.processor import CLIPProcessor

        model = CLIPModel.from_pretrained(name_or_path)
        try:
            processor = CLIPProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError):
            processor = None
        return model, processor
    return load(name_or_path, device="cpu", dtype=torch.float32)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def choose_device(requested: str | None, local_rank: int, cuda_devices: int) -> torch.device:
    """The device of this process: `requested` as given, except that a bare "cuda" (or no request on a
    machine with GPUs) means this process's own GPU, cuda:LOCAL_RANK, as torchrun numbers them."""
    if requested is None:
        return torch.device("cuda", local_rank) if cuda_devices else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type != "cuda":
        return device
    if not cuda_devices:
        raise ValueError(f"--device {requested}: this machine has no CUDA GPU that torch {torch.__version__} can use")
    if device.index is None:
        device = torch.device("cuda", local_rank)
    if device.index >= cuda_devices:
        raise ValueError(f"--device {requested}: GPU {device.index} asked for, but this machine has {cuda_devices}")
    return device


def init_distributed(device: str | None) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    env = Distributed(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    target = choose_device(device, env.local_rank, cuda_devices)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if env.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return env, target


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass (the loss and the optimiser stay in fp32), or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_folder_problem(out: Path, resume: bool, overwrite: bool) -> str | None:
    """Why training cannot go into `out` as asked (None when it can): resuming needs a checkpoint,
    and a folder that already holds a run is only reused with resume or overwrite."""
    checkpoint = find_checkpoint(out)
    if resume:
        return None if checkpoint else f"--resume: no {CHECKPOINT_NAME} in {str(out)!r}"
    if (checkpoint or (out / METRICS_NAME).exists()) and not overwrite:
        held = checkpoint.name if checkpoint else METRICS_NAME
        return (
            f"{str(out)!r} already holds a run ({held}): pass --resume to continue it, "
            "or --overwrite to start it again from step 0"
        )
    return None


def clear_run(out: Path) -> None:
    """Remove what an earlier run wrote into `out` (for overwrite); other files are left alone."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, METRICS_NAME):
        (out / name).unlink(missing_ok=True)
    for name in ("model", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)


def agree(env: Distributed, value: Any) -> Any:
    """Rank 0's `value` on every rank, so all ranks take the same branch (e.g. all raise the same error)."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class MetricsLog:
    """One JSON line per logged step, plus TensorBoard scalars when `tensorboard` is installed."""

    def __init__(self, folder: Path, enabled: bool):
        self.enabled = enabled
        self.path = folder / METRICS_NAME
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:
                pass

    def keep_until(self, step: int) -> None:
        """Drop the lines after `step` (written after the checkpoint a resumed run restarts from, and
        redone by it), and a line cut short by a kill; rewritten atomically."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line + "\n")
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None, overwrite: bool = False) -> Path:
    """Run (or continue) training; returns the output folder.

    `resume`: continue the run in `output_dir` from its checkpoint. `overwrite`: start again in a folder
    that holds a run (its checkpoint, metrics and model are removed); without either, such a folder is
    refused. `stop_after`: end this process after that many optimiser steps in total (a checkpoint is
    written first), as if killed there. The exported model (`OUTPUT/model`, an HF folder with the
    processor files) is written when the last step is done.
    """
    env, device = init_distributed(config.device)
    out = Path(config.output_dir)
    problem = agree(env, run_folder_problem(out, resume, overwrite) if env.main else None)
    if problem:
        raise FileExistsError(problem) if not resume else FileNotFoundError(problem)
    if env.main:
        if overwrite and not resume:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    torch.manual_seed(config.seed)
    model, processor = build_model_and_processor(config)
    model.to(device).train()
    if config.grad_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lock_image:
        lock_tower(model, "image")
    if config.lock_text:
        lock_tower(model, "text")
    features: nn.Module = TowerFeatures(model)
    if env.enabled:
        ids = [device.index] if device.type == "cuda" else None
        features = nn.parallel.DistributedDataParallel(features, device_ids=ids)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps
    )
    loss_fn = ClipLoss(local_loss=config.local_loss)

    step, consumed, start = 0, 0, None
    checkpoint_path = out / CHECKPOINT_NAME
    metrics = MetricsLog(out, env.main)
    if resume:
        resumed_from = find_checkpoint(out) or checkpoint_path
        state = load_run_state(resumed_from)  # on the CPU: loading copies weights and moments to the device,
        # and the optimiser keeps its step counters on the CPU, as in an uninterrupted run
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        step, consumed = state.step, state.consumed_batches
        saved_world, saved_workers = len(state.positions), len(state.positions[0])
        if (saved_world, saved_workers) != (env.world_size, max(1, config.workers)):
            raise ValueError(
                f"the checkpoint was written by {saved_world} process(es) with {saved_workers} data worker stream(s) "
                f"each; resume with the same (now {env.world_size} and {max(1, config.workers)})"
            )
        start = state.positions[env.rank]
        metrics.keep_until(step)
        if env.main:
            log.info("resumed from %s at step %d", resumed_from, step)
    positions = list(start) if start else [0] * max(1, config.workers)

    source = open_source(config.data, config.seed, model.config.vision_config.image_size)
    batches = PairBatches(
        source,
        processor,
        config.batch_size,
        rank=env.rank,
        world_size=env.world_size,
        num_workers=config.workers,
        start=positions,
        rotation=consumed % max(1, config.workers),
        max_bad_in_row=config.max_bad_in_row,
    )
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=config.workers, persistent_workers=config.workers > 0
    )
    data = iter(loader)
    if resume:  # after the loader has drawn its workers' seeds, as the uninterrupted run's did at step 0
        restore_rng(state.rng, device)
    global_batch = config.batch_size * config.accum_steps * env.world_size
    progress = None
    if env.main and config.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=config.steps, initial=step, unit="step", dynamic_ncols=True)
    bad_total = 0
    tick, samples_since = time.perf_counter(), 0
    last_step = min(config.steps, stop_after) if stop_after is not None else config.steps

    while step < last_step:
        lr = cosine_lr(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(config.accum_steps):
            batch = next(data)
            if "error" in batch:  # a data stream gave up (see PairBatches); stop here, before the model
                raise ValueError(f"training data {config.data!r}: {batch['error']}")
            positions[batch["stream"]] = batch["position"]
            consumed += 1
            bad_total += len(batch["bad"])
            # DDP averages gradients only on the last micro-batch of the step
            sync = micro == config.accum_steps - 1 or not env.enabled
            with contextlib.nullcontext() if sync else features.no_sync():  # type: ignore[operator]
                with autocast(config.precision, device):
                    image, text, scale = features(
                        batch["pixel_values"].to(device),
                        batch["input_ids"].to(device),
                        batch["attention_mask"].to(device),
                    )
                loss = loss_fn(image, text, scale) / config.accum_steps
                loss.backward()
            loss_sum += loss.detach()
        if config.grad_clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        else:
            grad_norm = float("nan")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        samples_since += global_batch

        if env.enabled:
            dist.all_reduce(loss_sum)
            loss_sum /= env.world_size
        loss_value = float(loss_sum)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if step % config.log_every == 0 or step == last_step:
            elapsed = time.perf_counter() - tick
            record = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "logit_scale": float(model.logit_scale.detach().exp()),
                "grad_norm": grad_norm,
                "samples_per_s": samples_since / elapsed,
                "bad_samples": bad_total,
                "time": time.time(),
            }
            metrics.write(record)
            if progress is not None:
                progress.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
            tick, samples_since = time.perf_counter(), 0
        if step % config.save_every == 0 or step == last_step:
            save_checkpoint(checkpoint_path, model, optimizer, step, consumed, positions, env, device)

    if progress is not None:
        progress.close()
    metrics.close()
    if bad_total and env.main:
        log.warning("%d bad sample(s) skipped on rank 0 (see the warnings above for their names)", bad_total)
    if step >= config.steps and env.main:
        export(model, processor, out / "model", config.save_dtype)
    if env.enabled:
        dist.barrier()
    del data, loader
    return out


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    consumed: int,
    positions: list[int],
    env: Distributed,
    device: torch.device,
) -> None:
    """Rank 0 writes the run's state with every rank's data positions (they differ per rank)."""
    all_positions = [positions]
    if env.enabled:
        all_positions = [None] * env.world_size  # type: ignore[list-item]
        dist.all_gather_object(all_positions, list(positions))
    if env.main:
        state = RunState(step, consumed, all_positions, model.state_dict(), optimizer.state_dict(), rng_state(device))
        save_run_state(path, state)
    if env.enabled:
        dist.barrier()


def export(model: nn.Module, processor: Any, folder: Path, dtype: str = "float32") -> Path:
    """The trained model as an HF folder (config, safetensors, tokenizer and preprocessor files)."""
    import copy

    saved = copy.deepcopy(model).to("cpu", getattr(torch, dtype)).eval()
    saved.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
