"""The training loop: contrastive pre-training from scratch or fine-tuning, on one process or under torchrun.

One optimiser step = `accum_steps` micro-batches of `batch_size` pairs on every rank. Under torchrun the
model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU) and `ClipLoss` contrasts the
features of all ranks, so N ranks with batch B train as one process with batch N*B.

Checkpoints (`OUTPUT/checkpoint-last.safetensors`, see `torchclip.train.checkpoint`: nothing in them is
executed when they load) hold the weights, the optimiser, the random generators, the step, and every data
stream's position: `resume=True` continues the same run, bit for bit, after a kill at any moment (the work
since the last checkpoint is redone). A folder that already holds a run is never overwritten silently:
continue it with `resume=True` or start over with `overwrite=True`.

Each concern has its own module, read in the order the loop meets them: `config` (TrainConfig),
`torchclip.distributed` (processes and devices), `run_folder`, `model` (building, locking, DDP, export),
`optim` and `schedule`, `checkpoint` (save and resume), `data` (batches), `precision` (bf16 autocast),
`loss` (ClipLoss) and `metrics`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from torchclip.distributed import barrier, init_distributed, mean_over_ranks
from torchclip.train.checkpoint import CHECKPOINT_NAME, restore_rng, resume_run, save_checkpoint
from torchclip.train.config import TrainConfig
from torchclip.train.data import MODEL_INPUTS, batch_loader
from torchclip.train.loss import ClipLoss
from torchclip.train.metrics import MetricsLog, Throughput
from torchclip.train.model import (
    build_model_and_processor,
    clamp_logit_scale,
    export,
    gradient_sync,
    interpolate_weights,
    prepare_model,
)
from torchclip.train.optim import clip_gradients, make_optimizer
from torchclip.train.precision import autocast
from torchclip.train.run_folder import prepare_run_folder
from torchclip.train.schedule import set_learning_rate

log = logging.getLogger("torchclip.train")


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
    prepare_run_folder(out, config, env, resume=resume, overwrite=overwrite)
    torch.manual_seed(config.seed)
    model, processor = build_model_and_processor(config)
    features = prepare_model(model, config, env, device)  # what a step calls: DDP-wrapped under torchrun
    optimizer = make_optimizer(model, config)
    loss_fn = ClipLoss(local_loss=config.local_loss)
    metrics = MetricsLog(out, env.main)

    step, consumed, positions, state = 0, 0, [0] * config.streams, None
    if resume:
        state = resume_run(out, model, optimizer, env, config.streams)
        step, consumed, positions = state.step, state.consumed_batches, list(state.positions[env.rank])
        metrics.keep_until(step)
    loader = batch_loader(processor, config, env, positions, consumed)
    data = iter(loader)
    if state is not None:  # after the loader has drawn its workers' seeds, as the uninterrupted run's did at step 0
        restore_rng(state.rng, device)

    last_step = min(config.steps, stop_after) if stop_after is not None else config.steps
    progress = tqdm(
        total=config.steps, initial=step, unit="step", dynamic_ncols=True, disable=not (env.main and config.progress)
    )
    throughput, bad_total = Throughput(), 0
    while step < last_step:
        lr = set_learning_rate(optimizer, step, config)
        loss_sum = torch.zeros((), device=device)
        for micro in range(config.accum_steps):
            batch = next(data)
            if "error" in batch:  # a data stream gave up (see PairBatches); stop here, before the model
                raise ValueError(f"training data {config.data!r}: {batch['error']}")
            positions[batch["stream"]] = batch["position"]
            consumed += 1
            bad_total += len(batch["bad"])
            with gradient_sync(features, last_micro_batch=micro == config.accum_steps - 1):
                with autocast(config.precision, device):
                    image, text, scale = features(*(batch[key].to(device) for key in MODEL_INPUTS))
                loss = loss_fn(image, text, scale) / config.accum_steps
                loss.backward()
            loss_sum += loss.detach()
        grad_norm = clip_gradients(model, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale(model)
        step += 1
        throughput.add(config.batch_size * config.accum_steps * env.world_size)

        loss_value = mean_over_ranks(env, loss_sum)
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if step % config.log_every == 0 or step == last_step:
            record = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "logit_scale": float(model.logit_scale.detach().exp()),
                "grad_norm": grad_norm,
                "samples_per_s": throughput.per_second(),
                "bad_samples": bad_total,
                "time": time.time(),
            }
            metrics.write(record)
            progress.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
        if step % config.save_every == 0 or step == last_step:
            save_checkpoint(out / CHECKPOINT_NAME, model, optimizer, step, consumed, positions, env, device)

    progress.close()
    metrics.close()
    if bad_total and env.main:
        log.warning("%d bad sample(s) skipped on rank 0 (see the warnings above for their names)", bad_total)
    if step >= config.steps and env.main:
        if config.wise_ft is not None:
            interpolate_weights(model, build_model_and_processor(config)[0].state_dict(), config.wise_ft)
        export(model, processor, out / "model", config.save_dtype)
    barrier(env)
    del data, loader
    return out
