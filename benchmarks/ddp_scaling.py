"""Training throughput of longseq's Trainer on 1 vs N GPUs (DDP or FSDP2), Longformer-base MLM at 4K tokens.

Longformer-base shape (12 layers, hidden 768, 12 heads, window 512), random weights, synthetic
tokens with 15% MLM labels. Each GPU count runs in its own `torchrun`; every run first checks its
loss is finite, and the first-step loss must agree across GPU counts (the global batch is the
same, so the math is the same) before any time is reported. Throughput: tokens of `--steps`
optimizer steps after `--warmup` steps, over their wall time. Prints a table; JSON to
$OUT/ddp_scaling.json (or ./ddp_scaling.json).

    python benchmarks/ddp_scaling.py --gpus 1 2 --seq 4096 --batch-per-gpu 1 --precision bf16
    python benchmarks/ddp_scaling.py --tiny --device cpu --gpus 1 2       # a smoke run without GPUs

Weak scaling: the global batch is `batch-per-gpu x GPUs`, so each GPU does the same work; the
first-step loss check therefore uses `--check-batch` samples on every GPU count instead.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch-per-gpu", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--check-batch", type=int, default=2, help="global batch of the loss check")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 2-layer hidden-64 model (smoke test)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # result file: run as one torchrun rank
    return p.parse_args()


def build_model(args: argparse.Namespace, dropout: float = 0.1):
    import torch

    from longseq.models.configs import LongformerConfig
    from longseq.models.longformer import LongformerForMaskedLM

    size = (
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            attention_window=64,
        )
        if args.tiny
        else dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            attention_window=512,
        )
    )
    config = LongformerConfig(
        vocab_size=50265,
        max_position_embeddings=args.seq + 2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **size,
    )
    torch.manual_seed(0)
    return LongformerForMaskedLM(config)


def dataset(n: int, seq: int, vocab: int = 50265) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (n, seq), generator=g)
    ids[:, 0] = 0
    # the same number of masked tokens in every row: then the mean of per-GPU mean losses is the global
    # mean, and 1 and N GPUs compute the same loss (with a varying count they would not: see the trainer)
    masked = torch.zeros(n, seq, dtype=torch.bool)
    for row in masked:
        row[torch.randperm(seq - 1, generator=g)[: max(1, int(0.15 * seq))] + 1] = True
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return [{"input_ids": ids[i].masked_fill(masked[i], 50264), "labels": labels[i]} for i in range(n)]


def worker(args: argparse.Namespace) -> None:
    import torch

    from longseq.training import TrainConfig, Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    out: dict = {"gpus": world}
    with tempfile.TemporaryDirectory() as tmp:
        # 1. correctness: the same global batch on every GPU count gives the same first-step loss
        # (dropout off: each rank draws its own dropout masks)
        check = TrainConfig(
            lr=1e-4,
            max_steps=1,
            batch_size=args.check_batch,
            precision=args.precision,
            strategy=args.strategy,
            output_dir=f"{tmp}/check",
            log_every=1,
            progress_bar=False,
        )
        Trainer(
            build_model(args, dropout=0.0), check, dataset(args.check_batch, args.seq), device=args.device
        ).train()
        if int(os.environ.get("RANK", "0")) == 0:
            out["check_loss"] = json.loads(Path(f"{tmp}/check/log.jsonl").read_text().splitlines()[0])["loss"]
        # 2. throughput
        batch = args.batch_per_gpu * world
        total = args.warmup + args.steps
        config = TrainConfig(
            lr=1e-4,
            max_steps=total,
            batch_size=batch,
            grad_accum=args.grad_accum,
            precision=args.precision,
            strategy=args.strategy,
            log_every=0,
            progress_bar=False,
            gradient_checkpointing=args.gradient_checkpointing,
            output_dir=f"{tmp}/run",
        )
        data = dataset(batch * args.grad_accum * 2, args.seq)
        trainer = Trainer(build_model(args), config, data, device=args.device)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train(stop_at=args.warmup)
        sync()
        start = time.perf_counter()
        trainer.train()
        sync()
        seconds = time.perf_counter() - start
    tokens = args.steps * batch * args.grad_accum * args.seq
    out.update(
        tokens_per_s=tokens / seconds, step_s=seconds / args.steps, global_batch=batch * args.grad_accum
    )
    if args.device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.worker).write_text(json.dumps(out))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    rows = []
    for n in args.gpus:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result_file = f.name
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(n),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            __file__,
            *sys.argv[1:],
            "--worker",
            result_file,
        ]
        print(f"== {n} process(es): {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            rows.append({"gpus": n, "error": f"exit {proc.returncode}"})
            continue
        rows.append(json.loads(Path(result_file).read_text()))
        os.unlink(result_file)
    ok = [r for r in rows if "error" not in r]
    base = ok[0] if ok else None
    for r in ok:
        r["loss_matches"] = abs(r["check_loss"] - base["check_loss"]) <= (
            1e-4 if args.precision == "fp32" else 2e-2
        )
        r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["efficiency"] = r["speedup"] * base["gpus"] / r["gpus"]
    report = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": rows}
    out = Path(os.environ.get("OUT", ".")) / "ddp_scaling.json"
    out.write_text(json.dumps(report, indent=2))
    print(
        f"\nLongformer-{'tiny' if args.tiny else 'base'} MLM, seq {args.seq}, {args.strategy}, "
        f"{args.precision}, "
        f"batch/GPU {args.batch_per_gpu} x accum {args.grad_accum}"
    )
    print("| GPUs | tokens/s | step s | speedup | efficiency | peak GiB | check loss | loss ok |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['gpus']} | {r['error']} | | | | | | |")
            continue
        print(
            f"| {r['gpus']} | {r['tokens_per_s']:,.0f} | {r['step_s']:.3f} | {r['speedup']:.2f} | "
            f"{r['efficiency']:.0%} | {r.get('peak_mem_gib', 0):.1f} | {r['check_loss']:.4f} | "
            f"{'yes' if r['loss_matches'] else 'NO'} |"
        )
    print(f"JSON: {out}")
    if not all(r.get("loss_matches") for r in ok) or len(ok) != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
