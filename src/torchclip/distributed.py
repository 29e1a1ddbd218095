"""Several processes under torchrun: which process this is, its device, and the few collectives the
trainer and `torchclip embed` need.

torchrun describes the job in the environment (WORLD_SIZE, RANK, LOCAL_RANK); `init_distributed` reads it,
picks this process's device and joins the process group (gloo on CPU, nccl on GPU). A single process,
without torchrun, is a world of one: nothing is joined, and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # its number on this machine, which picks its GPU

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0, the process that writes shared files and logs."""
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


def agree(env: Distributed, value: Any) -> Any:
    """Rank 0's `value` on every rank, so all ranks take the same branch (e.g. all raise the same error)."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(env: Distributed, value: Any) -> list[Any]:
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if not env.enabled:
        return [value]
    values: list[Any] = [None] * env.world_size
    dist.all_gather_object(values, value)
    return values


def mean_over_ranks(env: Distributed, tensor: torch.Tensor) -> float:
    """The mean of a scalar tensor over all ranks."""
    if env.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= env.world_size
    return float(tensor)


def barrier(env: Distributed) -> None:
    """Wait until every rank is here."""
    if env.enabled:
        dist.barrier()
