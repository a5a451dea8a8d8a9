"""torch.compile on the GPU: each family's model compiled (default mode), compared with eager.

PYTHONPATH=src python benchmarks/compile_models.py
"""

from __future__ import annotations

import time
import traceback

import torch

from longseq.models.bigbird import BigBirdModel
from longseq.models.configs import BigBirdConfig, LongformerConfig, ReformerConfig
from longseq.models.longformer import LongformerModel
from longseq.models.reformer import ReformerModel

DEV = "cuda"
N = 4096


def models() -> dict:
    common = dict(num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return {
        "longformer": LongformerModel(
            LongformerConfig(attention_window=512, max_position_embeddings=N + 2, **common)
        ),
        "bigbird": BigBirdModel(
            BigBirdConfig(
                attention_type="block_sparse", block_size=64, num_random_blocks=3,
                max_position_embeddings=N, **common,
            )
        ),
        "reformer": ReformerModel(
            ReformerConfig(
                attn_layers=["local", "lsh"], hidden_size=768, num_attention_heads=12, attention_head_size=64,
                feed_forward_size=3072, axial_pos_embds=True, axial_pos_shape=(64, N // 64),
                axial_pos_embds_dim=(256, 512), lsh_attn_chunk_length=64, local_attn_chunk_length=64,
                num_hashes=1, num_buckets=None, hash_seed=0, max_position_embeddings=N, vocab_size=320,
                hidden_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
                local_attention_probs_dropout_prob=0.0,
            )
        ),
    }  # fmt: skip


def main() -> None:
    rows = []
    for name, model in models().items():
        model = model.to(DEV).train()
        ids = torch.randint(5, 300, (1, N), device=DEV)
        kw = {}
        if name == "longformer":
            glob = torch.zeros_like(ids)
            glob[:, 0] = 1
            kw["global_attention_mask"] = glob
        for mode in ("eager", "compiled"):
            fn = model if mode == "eager" else torch.compile(model)
            try:
                torch.manual_seed(0)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = fn(input_ids=ids, **kw).last_hidden_state
                out.float().sum().backward()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5):
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        out = fn(input_ids=ids, **kw).last_hidden_state
                    out.float().sum().backward()
                torch.cuda.synchronize()
                ms = (time.perf_counter() - start) / 5 * 1e3
                if mode == "eager":
                    ref = out.detach().float()
                    err = 0.0
                else:
                    err = (out.detach().float() - ref).abs().max().item()
                rows.append((name, mode, f"{ms:.2f}", f"{err:.3g}"))
            except Exception as ex:
                traceback.print_exc(limit=2)
                rows.append((name, mode, "ERR", f"{type(ex).__name__}: {str(ex)[:80]}"))
            print(rows[-1], flush=True)
    print("\nmodel | mode | train step ms (bf16, 4K) | max |compiled - eager|")
    for r in rows:
        print(" | ".join(r))


if __name__ == "__main__":
    main()
