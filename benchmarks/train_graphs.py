"""The trainer with and without `cuda_graphs` on one GPU: seconds per step and how far the weights
end apart (same seed, same batches, no dropout), against a second eager run (nondeterminism).

BigBird and Reformer sequence classifiers, 2 layers, hidden 768, 12 heads, FFN 3072, bf16, batch 1,
random token sequences of one length; 30 steps after 5 of warm-up (the capture happens there).

    PYTHONPATH=src python benchmarks/train_graphs.py [--seq 4096] [--steps 30] [--families bigbird]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from longseq.models.bigbird import BigBirdForSequenceClassification
from longseq.models.configs import BigBirdConfig, ReformerConfig
from longseq.models.reformer import ReformerForSequenceClassification
from longseq.training import TrainConfig, Trainer


def model(family: str, n: int) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(hidden_size=768, num_attention_heads=12, num_labels=3, vocab_size=320)
    if family == "bigbird":
        cfg = BigBirdConfig(
            num_hidden_layers=2, intermediate_size=3072, block_size=64, num_random_blocks=3,
            max_position_embeddings=n, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common,
        )  # fmt: skip
        return BigBirdForSequenceClassification(cfg)
    cfg = ReformerConfig(
        attn_layers=["local", "lsh"], attention_head_size=64, feed_forward_size=3072, axial_pos_embds=True,
        axial_pos_shape=(64, n // 64), axial_pos_embds_dim=(256, 512), lsh_attn_chunk_length=64,
        local_attn_chunk_length=64, num_hashes=1, num_buckets=None, hash_seed=0, max_position_embeddings=n,
        is_decoder=False, hidden_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
        local_attention_probs_dropout_prob=0.0, **common,
    )  # fmt: skip
    return ReformerForSequenceClassification(cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--families", nargs="+", default=["bigbird", "reformer"])
    args = ap.parse_args()
    warm = 5
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 319, (64, args.seq), generator=gen)
    data = [{"input_ids": row, "labels": row[0] % 3} for row in ids]
    rows = []
    for family in args.families:
        weights = {}
        for run, graphs in (("eager", False), ("eager again", False), ("cuda_graphs", True)):
            net = model(family, args.seq)
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(
                    lr=1e-4, max_steps=warm + args.steps, batch_size=1, precision="bf16", log_every=0,
                    output_dir=out, progress_bar=False, cuda_graphs=graphs, max_grad_norm=1.0,
                )  # fmt: skip
                trainer = Trainer(net, config, data, device="cuda")
                trainer.train(stop_at=warm)
                torch.cuda.synchronize()
                start = time.perf_counter()
                trainer.train()
                torch.cuda.synchronize()
                ms = (time.perf_counter() - start) / args.steps * 1e3
                graphed = sum(v is not None for v in (trainer._graphs or {}).values())
            weights[run] = {k: v.float().cpu() for k, v in net.state_dict().items()}
            diff, worst = _diff(weights[run], weights["eager"])
            rows.append((family, run, ms, graphed, diff))
            print(family, run, f"{ms:.2f} ms/step, {graphed} graphs, vs eager {diff:.2e} {worst}", flush=True)
    steps = warm + args.steps
    print(f"\n| model | n | trainer | ms / step | graphs | weights after {steps} steps vs eager |")
    print("|---|---|---|---|---|---|")
    for family, run, ms, graphed, diff in rows:
        print(f"| {family} | {args.seq} | {run} | {ms:.2f} | {graphed} | {diff:.2e} |")


def _diff(a: dict, b: dict) -> tuple[float, str]:
    """Largest relative difference over the tensors (relative to b's norm), and which."""
    rel = {k: ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item() for k in b}
    worst = max(rel, key=rel.get)
    return rel[worst], worst


if __name__ == "__main__":
    main()
