"""One training step of `longseq compare --preset lra`'s models on the GPU: time, tokens/s, profile.

The models are compare's (6 layers, width 512, 8 heads, MLP 2048, dropout 0.1); a batch is 32
ListOps-like inputs of lengths between 0.9 L and L (as length grouping makes them), bf16 autocast,
forward + backward + AdamW. Variants show what a step's time is made of: a new length every step
(with and without dense attention's padding of lengths), no padding mask, no dropout, and the
attention backend forced to torch's (`auto` takes the kernels on CUDA). Prints a table last; JSON to
$OUT/lra_step.json.

    PYTHONPATH=src python benchmarks/lra_step.py [--models dense reformer] [--length 1024]
        [--variants] [--profile 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from longseq.attention import dense
from longseq.compare import PRESETS, CompareConfig, build_model
from longseq.data import listops

DEV = "cuda"
ROWS: list[dict] = []
MULTIPLE = dense.CUDA_LENGTH_MULTIPLE


def make_batch(n: int, batch: int, vocab: int, padded: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    low = int(0.9 * n) if padded else n
    lengths = torch.randint(low, n + 1, (batch,), generator=gen)
    ids = torch.randint(2, vocab, (batch, n), generator=gen)
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.randint(0, 10, (batch,), generator=gen)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: v.to(DEV) for k, v in out.items()}


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for m in model.modules():
        if hasattr(m, "backend"):
            m.backend = backend


def run(name: str, variant: str, n: int, profile: int) -> None:
    c = CompareConfig(**PRESETS["lra"])
    if "nodrop" in variant:
        c.dropout = 0.0
    torch.manual_seed(0)
    model = build_model(name, c, len(listops.VOCAB), max(c.max_length + 2, n + 2)).to(DEV)
    if "torch" in variant:
        set_backend(model, "torch")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=DEV == "cuda")
    # varlen: every step a new length (n, n - 7, n - 14, ...), as in training on grouped batches;
    # unpadded: without dense attention's padding of lengths to a multiple (one cuDNN plan per shape)
    dense.CUDA_LENGTH_MULTIPLE = 1 if "unpadded" in variant else MULTIPLE
    lengths = [max(n - 7 * i, 8) for i in range(11)] if "varlen" in variant else [n] * 11
    padded = "nomask" not in variant
    batches = [make_batch(m, c.batch_size, len(listops.VOCAB), padded) for m in lengths]
    real = sum(int(b["attention_mask"].sum()) for b in batches[3:]) / 8  # of a timed step, on average
    if not padded:
        for b in batches:
            b.pop("attention_mask")
    batch = batches[-1]
    feed = iter(batches)

    def step() -> None:
        nonlocal batch
        batch = next(feed, batch)
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=DEV == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync()
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(8):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    ms = sorted(times)[len(times) // 2]
    row = {
        "model": name,
        "variant": variant,
        "n": n,
        "ms": round(ms, 2),
        "tokens_per_s": round(real / ms * 1e3),
        "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20) if DEV == "cuda" else None,
    }
    ROWS.append(row)
    print(row, flush=True)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof_ctx

        with prof_ctx(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                step()
            sync()
        table = prof.key_averages()
        print(f"\n== profile {name} {variant} n={n}: 2 steps, top ops by GPU time")
        print(table.table(sort_by="cuda_time_total", row_limit=profile), flush=True)
    if DEV == "cuda":
        torch.cuda.empty_cache()


VARIANTS = {
    "dense": ["base", "varlen", "varlen_unpadded", "nomask", "nodrop"],
    "longformer": ["base"],
    "bigbird": ["base"],
    "reformer": ["base", "torch", "nodrop"],  # base: auto, the kernels on CUDA; torch: torch's backend
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["dense", "reformer"])
    parser.add_argument("--length", type=int, nargs="+", default=[1024])
    parser.add_argument("--variants", action="store_true", help="also the variants of VARIANTS")
    parser.add_argument("--profile", type=int, default=0, help="top N ops of each base step")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of the script")
    args = parser.parse_args()
    global DEV
    DEV = args.device
    print(torch.__version__, torch.cuda.get_device_name() if DEV == "cuda" else DEV, flush=True)
    for n in args.length:
        for name in args.models:
            for variant in VARIANTS[name] if args.variants else ["base"]:
                try:
                    run(name, variant, n, args.profile if variant == "base" else 0)
                except Exception as ex:  # one failing variant must not stop the run
                    print(f"{name} {variant} n={n}: {type(ex).__name__}: {ex}", flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "lra_step.json"), "w") as f:
        json.dump(ROWS, f, indent=1)
    print("\nmodel | variant | n | ms | tokens/s | peak MiB")
    for r in ROWS:
        print(f"{r['model']} | {r['variant']} | {r['n']} | {r['ms']} | {r['tokens_per_s']} | {r['peak_mib']}")


if __name__ == "__main__":
    main()
