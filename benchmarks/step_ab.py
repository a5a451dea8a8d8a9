"""Two trees of longseq side by side in one process: the eager Longformer training step of
`models.py` (from no gradients; 2 layers, hidden 768, 12 heads, 16K tokens, token 0 global, bf16
autocast) built from each with the same weights, stepped in turn, so that a host whose speed
drifts during the run (by a third within one call on the device machine) drifts for both. Prints
host ms per step (enqueue: until the backward returns) and wall ms (to the end of the GPU work),
medians and minima, and their ratio; and the kernel launches and aten ops of one step of each.

The other tree is a copy of the package under another name, e.g. for the last commit:

    mkdir -p /tmp/ab && git archive HEAD src/longseq | tar -x -C /tmp/ab \\
        && mv /tmp/ab/src/longseq /tmp/ab/longseq_old
    PYTHONPATH=src:benchmarks:/tmp/ab python benchmarks/step_ab.py [--other longseq_old] [--steps 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time

import torch

from step_host import build, count_ops, make_step  # (benchmarks/ is the script's directory)


def other_model(name: str, model: torch.nn.Module) -> torch.nn.Module:
    configs = importlib.import_module(f"{name}.models.configs")
    longformer = importlib.import_module(f"{name}.models.longformer")
    fields = [f.name for f in dataclasses.fields(model.config) if f.init]
    config = configs.LongformerConfig(**{k: getattr(model.config, k) for k in fields})
    other = longformer.LongformerModel(config).to(next(model.parameters()).device).train()
    other.load_state_dict(model.state_dict())
    return other


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", default="longseq_old")
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    model, ids, glob = build(args.seq)
    models = {"this tree": model, args.other: other_model(args.other, model)}
    steps = {name: make_step(m, ids, glob, fresh=True) for name, m in models.items()}

    grads = {}
    for name, step in steps.items():  # warm-up; the gradients of the first step are compared
        step()
        grads[name] = [p.grad.float() for p in models[name].parameters() if p.grad is not None]
        for _ in range(4):
            step()
    a, b = grads.values()
    err = max(((x - y).norm() / y.norm().clamp_min(1e-30)).item() for x, y in zip(a, b, strict=True))
    print(f"gradients of the two trees: largest relative difference {err:.2e}", flush=True)
    counts = {name: count_ops(step) for name, step in steps.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(2 * args.steps):
        name = names[i % 2]
        torch.cuda.synchronize()
        t = time.perf_counter()
        steps[name]()
        host = time.perf_counter() - t
        torch.cuda.synchronize()
        times[name].append((host * 1e3, (time.perf_counter() - t) * 1e3))
    print("tree | host ms / step: median, min | wall ms / step: median, min | launches | aten ops")
    med = {}
    for name, rows in times.items():
        hosts, walls = sorted(h for h, _ in rows), sorted(w for _, w in rows)
        med[name] = (hosts[len(hosts) // 2], walls[len(walls) // 2])
        launches, ops = counts[name]
        host, wall = f"{med[name][0]:.2f}, {hosts[0]:.2f}", f"{med[name][1]:.2f}, {walls[0]:.2f}"
        print(f"{name} | {host} | {wall} | {launches} | {ops}")
    (h0, w0), (h1, w1) = med.values()
    print(f"this tree / {args.other}: host {h0 / h1:.3f}, wall {w0 / w1:.3f} (medians)")


if __name__ == "__main__":
    main()
