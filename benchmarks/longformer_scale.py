"""A 12-layer Longformer-base at scale on one GPU: inference on 1,048,576 tokens, training on 131,072.

Random weights, window 512, token 0 global, bf16 autocast, dropout 0 (the gpu attention backend);
training uses gradient checkpointing. Prints time and peak memory.

    PYTHONPATH=src python benchmarks/longformer_scale.py [--infer 1048576] [--train 131072]
"""

from __future__ import annotations

import argparse
import time

import torch

from longseq.models.configs import LongformerConfig
from longseq.models.longformer import LongformerModel


def build(n: int) -> LongformerModel:
    config = LongformerConfig(
        num_hidden_layers=12,
        attention_window=512,
        max_position_embeddings=n + 2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return LongformerModel(config, add_pooling_layer=False).cuda()


def inputs(n: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 30000, (1, n), device="cuda")
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    return {"input_ids": ids, "global_attention_mask": glob}


def infer(n: int) -> None:
    model = build(n).eval().to(torch.bfloat16)
    batch = inputs(n)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(**batch)  # warm-up (kernel compilation)
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(**batch).last_hidden_state
        torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"inference 12-layer Longformer-base, {n} tokens: {ms:.0f} ms, peak {peak:.1f} GiB, "
        f"finite {bool(out.isfinite().all())}"
    )
    del model, out
    torch.cuda.empty_cache()


def train(n: int) -> None:
    model = build(n).train()
    model.encoder.gradient_checkpointing = True
    batch = inputs(n)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch).last_hidden_state
        out.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
        model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"training step 12-layer Longformer-base, {n} tokens, gradient checkpointing: "
        f"{min(times):.0f} ms, peak {peak:.1f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--infer", type=int, default=1_048_576)
    parser.add_argument("--train", type=int, default=131_072)
    args = parser.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    infer(args.infer)
    train(args.train)


if __name__ == "__main__":
    main()
