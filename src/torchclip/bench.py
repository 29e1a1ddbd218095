"""Side-by-side inference benchmark: torchclip and the reference (HF transformers) in one process, on the
same random ViT-B/32-size weights and the same inputs, as ratios. Absolute times on shared machines
prove little; a ratio measured in one run, with the two interleaved, does.

Used by `torchclip bench` and `benchmarks/bench_inference.py`.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchclip.config import CLIPConfig
from torchclip.modeling import CLIPModel
from torchclip.tokenizer import CLIPTokenizer

WORDS = (
    "a photo of the small large red blue green dog cat bird car tree house person man woman child on in at with "
    "beach street park table kitchen field mountain river sunset night snow running sitting standing old new "
    "bright dark two three group of people near next to under above wooden metal"
).split()


@dataclass
class Row:
    task: str
    precision: str
    ours: float
    reference: float | None
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.reference else self.ours / self.reference


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            "| task | precision | torchclip | reference | ratio | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in self.rows:
            ref = f"{r.reference:.1f}" if r.reference else "-"
            ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
            lines.append(f"| {r.task} | {r.precision} | {r.ours:.1f} {r.unit} | {ref} | {ratio} | {r.note} |")
        facts = ", ".join(f"{k}: {v}" for k, v in self.facts.items())
        return "\n".join(lines) + (f"\n\n{facts}" if facts else "")


def best_rate(fn: Callable[[], Any], items: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` timed calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def interleaved(fns: dict[str, Callable[[], Any]], items: int, repeats: int) -> dict[str, float]:
    """Best rate of each function, alternating between them so that machine noise hits all alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: items / seconds for name, seconds in best.items()}


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's matrix-multiply rate, into a reused output (a fresh one would add page faults)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    return best_rate(lambda: torch.matmul(a, b, out=out), 1, repeats) * 2 * size**3 / 1e9


def vision_gflop_per_image(config: CLIPConfig) -> float:
    """Multiply-adds x 2 that `get_image_features` executes: every layer at every token, except that the
    last layer computes queries, output projection and MLP at the class token only."""
    v = config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    width, mlp = v.hidden_size, v.intermediate_size
    per_token = 2 * (4 * width**2 + 2 * width * mlp) + 2 * 2 * tokens * width
    last_layer = 2 * tokens * 2 * width**2 + (per_token - 2 * 2 * width**2)
    patch = 2 * (tokens - 1) * 3 * v.patch_size**2 * width
    return (tokens * per_token * (v.num_hidden_layers - 1) + last_layer + patch) / 1e9


def realistic_captions(count: int, seed: int = 0, words: tuple[int, int] = (6, 16)) -> list[str]:
    """Captions of 6-16 words (by default), the length mix of real alt-text and prompts."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(count)]


def peak_memory_of_loading(folder: Path, which: str) -> tuple[float, float]:
    """(peak RSS growth in MiB, load seconds) of loading `folder` in a fresh process.

    Peak RSS is the kernel's high-water mark (VmHWM) of the child's own address space: ru_maxrss would
    carry over the parent's peak across exec.
    """
    code = f"""
import json, re, time, torch

def high_water_mib():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

before = high_water_mib()
start = time.perf_counter()
if {which!r} == "torchclip":
    import torchclip
    model = torchclip.CLIPModel.from_pretrained({str(folder)!r})
else:
    import transformers
    model = transformers.CLIPModel.from_pretrained({str(folder)!r})
seconds = time.perf_counter() - start
touched = sum(float(p.float().sum()) for p in model.parameters())  # every weight really resident
print(json.dumps(dict(peak=high_water_mib() - before, seconds=seconds)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["peak"], result["seconds"]


def run(
    batch_size: int = 32,
    repeats: int = 3,
    config: CLIPConfig | None = None,
    reference: bool = True,
    memory_config: CLIPConfig | None = None,
    precisions: tuple[str, ...] = ("float32", "bfloat16"),
    log: Callable[[str], None] = print,
    matmul_size: int = 2048,
) -> Report:
    """Measure the rows of docs/performance.md's `torchclip bench` table; `reference=False` measures torchclip
    alone.

    `memory_config`: the model whose loading (peak RSS, seconds) is measured in fresh processes
    (e.g. `VIT_L_14`); None skips it. `matmul_size`: the square matrices of the machine's matmul rate
    (smaller for a quick smoke run).
    """
    config = config or CLIPConfig()
    report = Report()
    report.facts["threads"] = torch.get_num_threads()
    report.facts["torch"] = torch.__version__
    torch.manual_seed(0)
    ours32 = CLIPModel(config).eval()
    folder = Path(tempfile.mkdtemp(prefix="torchclip-bench-"))
    ours32.save_pretrained(folder)
    del ours32
    if reference:
        try:
            import transformers  # noqa: PLC0415 - optional dependency (the comparison; extra: test)
        except ImportError:
            log("transformers is not installed: measuring torchclip alone")
            reference = False
        else:  # its loading bars and notices would land between our lines
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
    tokenizer = CLIPTokenizer()
    pixels = torch.randn(batch_size, 3, config.vision_config.image_size, config.vision_config.image_size)
    captions = realistic_captions(256)

    for precision in precisions:
        dtype = getattr(torch, precision)
        before = matmul_gflops(dtype, matmul_size)
        ours = CLIPModel.from_pretrained(folder, torch_dtype=dtype)
        theirs = None
        if reference:
            theirs = transformers.CLIPModel.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").eval()
        with torch.inference_mode():
            report.rows += _measure(ours, theirs, dtype, pixels, captions, tokenizer, batch_size, repeats, log)
        # the machine's matmul rate, before and after the models ran: a dip in one of them says little
        gflops = max(before, matmul_gflops(dtype, matmul_size))
        report.facts[f"matmul {precision} GFLOP/s"] = round(gflops, 1)
        images = next(r for r in report.rows if r.task == "images" and r.precision == precision)
        achieved = images.ours * vision_gflop_per_image(config)
        images.note = f"{achieved:.0f} GFLOP/s = {100 * achieved / gflops:.0f}% of matmul"
        del ours, theirs
        gc.collect()
    images = {r.precision: r for r in report.rows if r.task == "images"}
    if reference and {"float32", "bfloat16"} <= images.keys():
        report.rows.append(
            Row("images, ours bf16 vs reference fp32", "mixed", images["bfloat16"].ours, images["float32"].reference,
                "img/s")
        )  # fmt: skip
    for path in folder.iterdir():
        path.unlink()
    os.rmdir(folder)
    if memory_config is not None:
        report.rows += memory_rows(memory_config, reference, log)
    report.facts["max RSS of this process MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return report


def memory_rows(config: CLIPConfig, reference: bool, log: Callable[[str], None]) -> list[Row]:
    """Peak RSS and time of `from_pretrained` in fresh processes, torchclip and transformers."""
    with tempfile.TemporaryDirectory(prefix="torchclip-bench-memory-") as tmp:
        with torch.device("meta"):
            model = CLIPModel(config)
        # random weights without the cost of initialising them properly: loading does not care
        state = {key: torch.randn(t.shape) * 0.02 for key, t in model.state_dict().items()}
        size_mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
        CLIPModel.from_state_dict(state, config).save_pretrained(tmp)
        del state, model
        gc.collect()
        peak, seconds = peak_memory_of_loading(Path(tmp), "torchclip")
        log(f"loading torchclip: {peak:.0f} MB peak, {seconds:.1f} s (weights {size_mb:.0f} MB)")
        mem = Row("from_pretrained peak RSS", "float32", peak, None, "MB",
                  f"weights {size_mb:.0f} MB: {peak / size_mb:.2f}x")  # fmt: skip
        time_row = Row("from_pretrained time", "float32", seconds, None, "s")
        if reference:
            mem.reference, time_row.reference = peak_memory_of_loading(Path(tmp), "transformers")
            mem.note += f", reference {mem.reference / size_mb:.2f}x (lower is better)"
    return [mem, time_row]


VIT_L_14 = CLIPConfig(
    text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     projection_dim=768),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                       patch_size=14, projection_dim=768),
    projection_dim=768,
)  # fmt: skip


def _measure(ours, theirs, dtype, pixels, captions, tokenizer, batch_size, repeats, log) -> list[Row]:
    """Images, 77-token texts and the caption mix, ours and transformers' interleaved."""
    precision = str(dtype).removeprefix("torch.")
    pixels = pixels.to(dtype)
    rows = []
    fns = {"ours": lambda: ours.get_image_features(pixels)}
    if theirs is not None:
        fns["theirs"] = lambda: theirs.get_image_features(pixel_values=pixels)
    rates = interleaved(fns, batch_size, repeats)
    log(f"images {precision}: {_rates(rates, 'img/s')}")
    rows.append(Row("images", precision, rates["ours"], rates.get("theirs"), "img/s"))

    # texts that really fill all 77 positions: long captions, truncated
    full = tokenizer(realistic_captions(batch_size, words=(90, 100)), truncation=True, return_tensors="pt")
    fns = {"ours": lambda: ours.get_text_features(**full)}
    if theirs is not None:
        fns["theirs"] = lambda: theirs.get_text_features(**full)
    rates = interleaved(fns, batch_size, repeats)
    log(f"texts, 77 tokens {precision}: {_rates(rates, 'txt/s')}")
    rows.append(Row("texts, 77 tokens", precision, rates["ours"], rates.get("theirs"), "txt/s"))

    batches = [captions[i : i + 64] for i in range(0, len(captions), 64)]
    max_length = [tokenizer(b, padding="max_length", return_tensors="pt") for b in batches]
    longest = [tokenizer(b, padding=True, return_tensors="pt") for b in batches]
    fns = {"ours": lambda: [ours.get_text_features(**b) for b in max_length]}
    if theirs is not None:
        fns["longest"] = lambda: [theirs.get_text_features(**b) for b in longest]
        fns["max_length"] = lambda: [theirs.get_text_features(**b) for b in max_length]
    rates = interleaved(fns, len(captions), repeats)
    log(f"caption mix {precision}: {_rates(rates, 'txt/s')}")
    rows.append(Row("texts, caption mix vs padding=True", precision, rates["ours"], rates.get("longest"), "txt/s"))
    rows.append(Row("texts, caption mix vs max_length", precision, rates["ours"], rates.get("max_length"), "txt/s"))
    return rows


def _rates(rates: dict[str, float], unit: str) -> str:
    """One progress line: "torchclip 23.4, reference 19.5 img/s"."""
    names = {"ours": "torchclip", "theirs": "reference", "longest": "reference padding=True",
             "max_length": "reference max_length"}  # fmt: skip
    return ", ".join(f"{names.get(key, key)} {rate:.1f}" for key, rate in rates.items()) + f" {unit}"
