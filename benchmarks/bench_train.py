"""Training throughput, torchclip vs transformers, side by side in one run.

Both sides: a ViT-B/32-size CLIP (the default configs), the same batch of random pixels and 77-token
captions, the same precision, and one full step each time: forward, the contrastive loss, backward, AdamW.
torchclip runs its trainer's path (`TowerFeatures` + `ClipLoss`); transformers runs
`CLIPModel(..., return_loss=True)`. Steps alternate between the two so that load on a shared machine
hits both alike. Prints samples/s for each and the ratio (torchclip / transformers; > 1 means faster).

    python benchmarks/bench_train.py --batch-size 16 --steps 3 [--precision bf16] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch


def make_batch(batch_size: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(300, 40000, (batch_size, 77), generator=g)
    lengths = torch.randint(8, 40, (batch_size,), generator=g)
    mask = torch.zeros_like(ids)
    ids[:, 0] = 49406
    for i, length in enumerate(lengths.tolist()):
        ids[i, length:] = 49407  # end token, then padding with it (OpenAI's convention)
        mask[i, : length + 1] = 1
    pixels = torch.randn(batch_size, 3, 224, 224, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "pixel_values": pixels.to(device)}


def torchclip_step(device: str):
    from torchclip.config import CLIPConfig
    from torchclip.modeling import CLIPModel
    from torchclip.train.loss import ClipLoss
    from torchclip.train.model import TowerFeatures

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).to(device).train()
    features, loss_fn = TowerFeatures(model), ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(batch: dict[str, torch.Tensor], autocast) -> float:
        with autocast():
            image, text, scale = features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        loss = loss_fn(image, text, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def transformers_step(device: str):
    import transformers

    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig()).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(batch: dict[str, torch.Tensor], autocast) -> float:
        with autocast():
            loss = model(**batch, return_loss=True).loss
        loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per library (after one warm-up step)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    def autocast():
        if args.precision == "bf16":
            return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    batch = make_batch(args.batch_size, args.device)
    sides = {"torchclip": torchclip_step(args.device), "transformers": transformers_step(args.device)}
    seconds = {name: 0.0 for name in sides}
    for step in sides.values():  # warm-up: allocator, oneDNN/cuBLAS kernels, optimizer state
        step(batch, autocast)
    for _ in range(args.steps):
        for name, step in sides.items():
            sync()
            start = time.perf_counter()
            step(batch, autocast)
            sync()
            seconds[name] += time.perf_counter() - start
    rates = {name: args.batch_size * args.steps / s for name, s in seconds.items()}
    print(f"ViT-B/32 training step, batch {args.batch_size}, {args.precision}, {args.device}, {args.steps} steps each")
    for name, rate in rates.items():
        print(f"  {name:12s} {rate:8.2f} samples/s")
    print(f"  ratio torchclip/transformers: {rates['torchclip'] / rates['transformers']:.2f}x")


if __name__ == "__main__":
    main()
