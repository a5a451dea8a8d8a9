"""What is alive on the GPU at the peak of a longseq training step, by the line that allocated it.

The models of `models.py` (same configs, 2 layers, batch 1, bf16 autocast, train = forward + backward
of sum(last_hidden_state)) are loaded by longseq alone on the GPU. One warm-up step, then one step
under `torch.cuda.memory._record_memory_history`; the allocation trace is replayed to find the
moment of the peak, and the blocks alive then are grouped by the innermost longseq (or torch
autograd) frame that allocated them. Prints, per model: the peak, the weights and gradients, and
the largest groups.

    PYTHONPATH=src python benchmarks/memory_peak.py [--seq 16384] [--families longformer bigbird reformer]
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile

import torch

from models import DEV, hf_models, model_inputs, train_step


def _where(frames: list[dict]) -> str:
    for f in frames:  # innermost first
        name = f.get("filename", "")
        if "longseq" in name or "/benchmarks/" in name:
            return f"{os.path.basename(name)}:{f.get('line')} {f.get('name')}"
    for f in frames:
        name = f.get("filename", "")
        if name.endswith(".py") and "torch/cuda/memory" not in name:
            return f"{os.path.basename(name)}:{f.get('line')} {f.get('name')}"
    return "(no python frame: autograd engine / C++)"


def _inner(frames: list[dict]) -> str:
    """The innermost Python frame (the op that allocated)."""
    for f in frames:
        name = f.get("filename", "")
        if name.endswith(".py") and "torch/cuda/memory" not in name:
            return f"{os.path.basename(name)}:{f.get('line')} {f.get('name')}"
    return "?"


def live_at_peak(trace: list[dict]) -> tuple[int, list[dict], list[dict]]:
    """Replay alloc / free events: (peak bytes, the blocks alive at the peak, the last allocations
    before it, newest last)."""
    live: dict[int, dict] = {}
    cur = peak = 0
    at_peak: list[dict] = []
    recent: list[dict] = []
    last: list[dict] = []
    for ev in trace:
        act = ev["action"]
        if act == "alloc":
            live[ev["addr"]] = ev
            cur += ev["size"]
            recent = [*recent, ev][-6:]
            if cur > peak:
                peak = cur
                at_peak = list(live.values())
                last = recent
        elif act in ("free_requested", "free_completed"):
            blk = live.pop(ev["addr"], None)
            if blk is not None:
                cur -= blk["size"]
    return peak, at_peak, last


def analyse(family: str, n: int, rows: int) -> None:
    import longseq

    make, config = hf_models(n)[family]
    torch.manual_seed(0)
    hf = make(config)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = longseq.AutoModel.from_pretrained(folder, device=DEV)
    del hf
    ids, kw = model_inputs(family, n, config.vocab_size)
    model.train()

    def step(model: torch.nn.Module = model) -> None:
        train_step(model, ids, kw)

    step()  # gradients exist from here on, as in a training loop
    torch.cuda.synchronize()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=500_000, stacks="python")
    step()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak_alloc = torch.cuda.max_memory_allocated()
    trace = snap["device_traces"][torch.cuda.current_device()]
    step_peak, blocks, last = live_at_peak(trace)
    groups: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for blk in blocks:
        key = _where(blk.get("frames", []))
        groups[key] += blk["size"]
        counts[key] += 1
        ops[key][_inner(blk.get("frames", []))] += blk["size"]
    mib = 2**20
    other = (base - 2 * params) / mib
    print(
        f"\n== longseq {family}, {n} tokens: peak {peak_alloc / mib:.0f} MiB = {base / mib:.0f} MiB before"
        f" the step (weights {params / mib:.0f}, gradients {params / mib:.0f}, other {other:.0f})"
        f" + {step_peak / mib:.0f} MiB allocated in the step and alive at its peak",
        flush=True,
    )
    for key, size in groups.most_common(rows):
        inner = ", ".join(f"{op} {b / mib:.0f}" for op, b in ops[key].most_common(3))
        print(f"  {size / mib:9.1f} MiB  {counts[key]:5d} blocks  {key}  [{inner}]")
    print("  the allocations that reached the peak (newest last):")
    for blk in last:
        frames = blk.get("frames", [])
        print(f"    {blk['size'] / mib:9.1f} MiB  {_where(frames)}  [{_inner(frames)}]")
    del model
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=16384)
    parser.add_argument("--families", nargs="+", default=["longformer", "bigbird", "reformer"])
    parser.add_argument("--rows", type=int, default=14)
    args = parser.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for family in args.families:
        analyse(family, args.seq, args.rows)


if __name__ == "__main__":
    main()
