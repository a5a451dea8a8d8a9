"""Host time of each phase of longseq's eager Longformer training step (the `step_host.py` model: 2
layers, hidden 768, 12 heads, 16K tokens, token 0 global, bf16 autocast): embeddings, each layer's
forward, the loss, the backward, stamped with `time.perf_counter` from module hooks (no device sync
inside a step; one after it). Variants of the embedding lookup's forward, stepped in turn:
  - embedding: `F.embedding` (the library);
  - index_select: `weight.index_select(0, ids.flatten())`;
  - index: `weight[ids]`.
A table of median ms per phase goes last.

    PYTHONPATH=src python benchmarks/step_phases.py [--seq 16384] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from longseq.layers import embedding
from step_host import build  # (benchmarks/ is the script's directory)

VARIANTS = {
    "embedding": lambda ids, w: F.embedding(ids, w),
    "index_select": lambda ids, w: w.index_select(0, ids.flatten()).view(*ids.shape, w.shape[1]),
    "index": lambda ids, w: w[ids],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    model, ids, glob = build(args.seq)
    stamps: list[tuple[str, float]] = []

    def mark(name: str):
        return lambda *_: stamps.append((name, time.perf_counter()))

    model.embeddings.register_forward_pre_hook(mark("start"))
    model.embeddings.register_forward_hook(mark("embeddings"))
    for i, layer in enumerate(model.encoder.layers):
        layer.register_forward_hook(mark(f"layer {i}"))
    lookup = {"fn": VARIANTS["embedding"]}
    original = embedding._Embed.forward

    def forward(ctx, ids, weight, padding_idx):
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return lookup["fn"](ids, weight)

    embedding._Embed.forward = staticmethod(forward)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids, global_attention_mask=glob).last_hidden_state
        loss = out.float().sum()
        stamps.append(("loss", time.perf_counter()))
        del out
        loss.backward()
        stamps.append(("backward", time.perf_counter()))

    rows: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for i in range((args.steps + 5) * len(VARIANTS)):
        name = list(VARIANTS)[i % len(VARIANTS)]
        lookup["fn"] = VARIANTS[name]
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        stamps.clear()
        step()
        torch.cuda.synchronize()
        end = time.perf_counter()
        if i >= 5 * len(VARIANTS):
            t0 = stamps[0][1]
            phases = {n: (t - prev) * 1e3 for (n, t), (_, prev) in zip(stamps[1:], stamps[:-1], strict=True)}
            phases["host total"] = (stamps[-1][1] - t0) * 1e3
            phases["wall"] = (end - t0) * 1e3
            rows[name].append(phases)
    embedding._Embed.forward = original
    names = list(rows["embedding"][0])
    print("| variant | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for v, rs in rows.items():
        med = [sorted(r[n] for r in rs)[len(rs) // 2] for n in names]
        print(f"| {v} | " + " | ".join(f"{m:.2f}" for m in med) + " |")
    print("(median host ms per phase; wall: to the end of the GPU work)")


if __name__ == "__main__":
    main()
