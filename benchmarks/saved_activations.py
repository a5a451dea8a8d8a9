"""What a 2-layer Longformer (longseq, gpu kernels) and HF RoBERTa-SDPA keep for backward, on CPU.

Bytes counted with `torch.autograd.graph.saved_tensors_hooks` (each storage once) in one bf16
autocast training forward at two lengths; the difference is the per-token part (activation memory),
the rest is fixed (autocast's weight copies). The gpu kernels run in Triton's interpreter, so no GPU
is needed and the count does not depend on one. Prints the largest saved tensors by source line.

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/saved_activations.py [--seq 1024 2048] [--bigbird]
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import traceback

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 (the kernels run on CPU)"


def saved_bytes(model: torch.nn.Module, inputs: dict) -> tuple[int, collections.Counter]:
    seen: dict[tuple[int, int], int] = {}
    where: collections.Counter = collections.Counter()

    def pack(x: torch.Tensor) -> torch.Tensor:
        storage = x.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen[key] = storage.nbytes()
            stack = traceback.extract_stack()[:-1]
            frame = next(
                (f for f in reversed(stack) if "longseq" in f.filename or "transformers" in f.filename),
                stack[-1],
            )
            where[f"{os.path.basename(frame.filename)}:{frame.lineno} {tuple(x.shape)} {x.dtype}"] += seen[
                key
            ]
        return x

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), torch.autocast("cpu", torch.bfloat16):
        model(**inputs)
    return sum(seen.values()), where


def main() -> None:
    import transformers as T

    import longseq
    import longseq.attention as A
    from longseq.attention.kernels import available

    assert available(), "triton is needed (its interpreter runs the kernels)"
    A._gpu_available = lambda q: True  # the gpu backend, interpreted
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--bigbird", action="store_true", help="also longseq's BigBird(64, 3)")
    args = parser.parse_args()
    common = dict(num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    totals: dict[str, list[int]] = {"longseq Longformer": [], "HF RoBERTa-SDPA": []}
    if args.bigbird:
        totals["longseq BigBird"] = []
    for n in args.seq:
        ids = torch.randint(5, 1000, (1, n), generator=torch.Generator().manual_seed(0))
        glob = torch.zeros_like(ids)
        glob[:, 0] = 1
        torch.manual_seed(0)
        hf = T.LongformerModel(
            T.LongformerConfig(attention_window=512, max_position_embeddings=n + 2, **common)
        )
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = longseq.AutoModel.from_pretrained(folder)
        total, where = saved_bytes(ours, dict(input_ids=ids, global_attention_mask=glob))
        totals["longseq Longformer"].append(total)
        print(f"longseq Longformer, {n} tokens: {total / 2**20:.1f} MiB saved; largest:")
        for line, size in where.most_common(8):
            print(f"  {size / 2**20:7.2f} MiB  {line}")
        if args.bigbird:
            torch.manual_seed(0)
            config = T.BigBirdConfig(
                attention_type="block_sparse",
                block_size=64,
                num_random_blocks=3,
                max_position_embeddings=n,
                **common,
            )
            with tempfile.TemporaryDirectory() as folder:
                T.BigBirdModel(config).save_pretrained(folder)
                bigbird = longseq.AutoModel.from_pretrained(folder)
            total, where = saved_bytes(bigbird, dict(input_ids=ids))
            totals["longseq BigBird"].append(total)
            print(f"longseq BigBird, {n} tokens: {total / 2**20:.1f} MiB saved; largest:")
            for line, size in where.most_common(8):
                print(f"  {size / 2**20:7.2f} MiB  {line}")
        roberta = T.RobertaModel(
            T.RobertaConfig(max_position_embeddings=n + 2, attn_implementation="sdpa", **common)
        )
        totals["HF RoBERTa-SDPA"].append(saved_bytes(roberta, dict(input_ids=ids))[0])
    a, b = args.seq
    print(f"\n| model | saved MiB at {a} | at {b} | MiB per 1024 tokens |\n|---|---|---|---|")
    for name, (x, y) in totals.items():
        print(f"| {name} | {x / 2**20:.1f} | {y / 2**20:.1f} | {(y - x) / 2**20 * 1024 / (b - a):.1f} |")


if __name__ == "__main__":
    main()
