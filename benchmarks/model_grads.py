"""Training-mode gradients of longseq's models on the GPU kernels against Hugging Face's, same
weights, float32: a Longformer and a BigBird masked LM at 2K tokens (windows and blocks over many
tiles), with padding and global tokens, and without an attention mask. Prints, per case, the loss
difference and the largest relative gradient error over the parameters (norm of the difference over
the norm of HF's gradient, with a floor of 1e-6 for gradients that are zero in exact arithmetic).

    PYTHONPATH=src python benchmarks/model_grads.py
"""

from __future__ import annotations

import os
import tempfile

import torch
import transformers as T

import longseq
from longseq.checkpoints import to_hf_keys

DEV = os.environ.get("DEVICE", "cuda")
N = int(os.environ.get("N", 2048))


def configs() -> dict:
    common = dict(
        vocab_size=300,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return {
        "longformer": (
            T.LongformerForMaskedLM,
            T.LongformerConfig(attention_window=[256, 128], max_position_embeddings=N + 2, **common),
        ),
        "bigbird": (
            T.BigBirdForMaskedLM,
            T.BigBirdConfig(
                attention_type="block_sparse",
                block_size=64,
                num_random_blocks=3,
                max_position_embeddings=N,
                **common,
            ),
        ),
    }


def case(family: str, masked: bool) -> tuple[float, float, str]:
    make, config = configs()[family]
    torch.manual_seed(0)
    hf = make(config).to(DEV).train()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = longseq.AutoModel.from_pretrained(folder, device=DEV).train()
    g = torch.Generator(device=DEV).manual_seed(1)
    ids = torch.randint(5, 299, (2, N - 37), device=DEV, generator=g)  # no multiple of a window or block
    kw: dict = {"labels": torch.randint(5, 299, ids.shape, device=DEV, generator=g)}
    if masked:
        mask = torch.ones_like(ids)
        mask[1, -N // 7 :] = 0
        ids[1, -N // 7 :] = config.pad_token_id
        kw["attention_mask"] = mask
        kw["labels"] = kw["labels"].masked_fill(mask == 0, -100)
    if family == "longformer":
        glob = torch.zeros_like(ids)
        glob[:, 0] = 1
        glob[0, N // 3] = 1
        kw["global_attention_mask"] = glob
    loss_hf = hf(input_ids=ids, **kw).loss
    loss_ours = ours(input_ids=ids, **kw).loss
    loss_hf.backward()
    loss_ours.backward()
    hf_grads = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    mine = {k: p.grad for k, p in ours.named_parameters() if k not in ours.tied_keys}
    ours_grads = {k: v for k, v in to_hf_keys(mine, ours.key_table).items() if v is not None}
    worst, where = 0.0, ""
    for key, want in hf_grads.items():
        got = ours_grads.get(key)
        err = float("inf") if got is None else float((got - want).norm() / (want.norm() + 1e-6))
        if err > worst:
            worst, where = err, key
    missing = set(ours_grads) ^ set(hf_grads)
    if missing:
        where += f" (gradients on one side only: {sorted(missing)[:3]})"
        worst = float("inf")
    return abs(float(loss_ours) - float(loss_hf)), worst, where


def main() -> None:
    rows = []
    for family in ("longformer", "bigbird"):
        for masked in (True, False):
            rows.append((family, masked, *case(family, masked)))
            print(rows[-1], flush=True)
    print("\nfamily | attention_mask | |loss - HF| | max relative gradient error | where")
    for family, masked, dl, err, where in rows:
        print(f"{family} | {'padded' if masked else 'none'} | {dl:.2e} | {err:.2e} | {where}")


if __name__ == "__main__":
    main()
