"""Where the host time of longseq's eager Longformer training step goes (2 layers, hidden 768, 12
heads, FFN 3072, 16K tokens, token 0 global, bf16 autocast): host time to enqueue one step against
its wall time, the torch ops by self host time, and the Python functions by own time (cProfile).
Variants, timed step by step in turn in the same run (the profiles, after all timings, are of
the first), with their kernel launches and aten ops per step counted:
  - all: the library as it is;
  - no_cast: without the one weight cast per forward (`layers/weight_cast.py`): autocast's per-layer casts;
  - no_embed: with torch's embedding backward instead of `layers/embedding.py`'s;
  - neither: both off.
Full tables go to $OUT/step_host.txt; a summary table is printed last.

    PYTHONPATH=src python benchmarks/step_host.py [--seq 16384] [--steps 20]
        [--variants all,neither] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import time

import torch

from longseq.models import encoder
from longseq.models.configs import LongformerConfig
from longseq.models.longformer import LongformerModel

DEV = "cuda"


def build(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    config = LongformerConfig(
        num_hidden_layers=2,
        attention_window=512,
        max_position_embeddings=n + 2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = LongformerModel(config).to(DEV).train()
    ids = torch.randint(5, config.vocab_size - 1, (1, n), device=DEV)
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    return model, ids, glob


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", default="all,no_cast,no_embed,neither")
    ap.add_argument("--profile", action="store_true", help="profile the first variant, after the timings")
    args = ap.parse_args()
    model, ids, glob = build(args.seq)
    cast, embed = getattr(encoder, "cast_linears", None), getattr(encoder, "embed", None)
    variants = args.variants.split(",") if cast is not None else ["all"]  # (an older tree: as it is)
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    counts: dict[str, tuple[int, int]] = {}

    def use(variant: str) -> None:
        if cast is None:
            return
        off_cast, off_embed = variant in ("no_cast", "neither"), variant in ("no_embed", "neither")
        encoder.cast_linears = (lambda groups: contextlib.nullcontext()) if off_cast else cast
        encoder.embed = (lambda ids, table: table(ids)) if off_embed else embed

    steps = {v: make_step(model, ids, glob) for v in variants}
    for variant in variants:  # warm-up, and the ops each variant runs per step (counted, not timed)
        use(variant)
        model.zero_grad(set_to_none=True)
        for _ in range(5):
            steps[variant]()
        torch.cuda.synchronize()
        counts[variant] = count_ops(steps[variant])
    # the variants step by step in turn, so that a host that drifts during the run drifts for all
    for i in range(args.steps * len(variants)):
        variant = variants[i % len(variants)]
        use(variant)
        t = time.perf_counter()
        steps[variant]()
        host = time.perf_counter() - t
        torch.cuda.synchronize()
        times[variant].append((host * 1e3, (time.perf_counter() - t) * 1e3))
    if args.profile:
        use(variants[0])
        profile_step(steps[variants[0]])
    print("variant | host ms / step (enqueue): median, min | wall ms / step: median | launches | aten ops")
    for variant, rows in times.items():
        hosts, walls = sorted(h for h, _ in rows), sorted(w for _, w in rows)
        launches, ops = counts[variant]
        host = f"{hosts[len(hosts) // 2]:.2f}, {hosts[0]:.2f}"
        print(f"{variant} | {host} | {walls[len(walls) // 2]:.2f} | {launches} | {ops}")


def make_step(model, ids, glob, fresh: bool = False):
    """The training step; fresh: from no gradients, as `models.py`'s (zero_grad(set_to_none=True))."""

    def step() -> None:
        if fresh:
            model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids, global_attention_mask=glob).last_hidden_state
        loss = out.float().sum()
        del out
        loss.backward()

    return step


def count_ops(step) -> tuple[int, int]:
    """(kernel launches, aten ops) of one step, from torch.profiler's host events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    launches = sum(n in ("cudaLaunchKernel", "cuLaunchKernelEx", "cuLaunchKernel") for n in names)
    return launches, sum(n.startswith("aten::") for n in names)


def profile_step(step) -> None:
    """3 steps by torch.profiler (ops by self host time) and by cProfile; tables to $OUT."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=45)
    cp = cProfile.Profile()
    cp.enable()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    cp.disable()
    s = io.StringIO()
    pstats.Stats(cp, stream=s).sort_stats("tottime").print_stats(45)
    s2 = io.StringIO()
    pstats.Stats(cp, stream=s2).sort_stats("cumtime").print_stats("longseq", 40)

    text = f"== ops by self host time, 3 steps\n{ops}\n== cProfile by own time, 3 steps\n{s.getvalue()}"
    text += f"\n== cProfile, longseq functions by cumulative time\n{s2.getvalue()}"
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "step_host.txt"), "w") as f:
        f.write(text)
    print(ops[:3000])


if __name__ == "__main__":
    main()
