"""Reproduce a GPU-backend failure in the Reformer model under bf16 autocast; print the traceback."""

import traceback

import torch

from longseq.attention import LSH, LocalChunks, attend

dev = "cuda"
for dtype in (torch.bfloat16, torch.float32):
    for pattern in (LocalChunks(64), LSH(1, 64, 64, seed=0), LSH(1, (16, 32), 64, seed=0)):
        q, k, v = (torch.randn(1, 12, 4096, 64, device=dev, dtype=dtype) for _ in range(3))
        if isinstance(pattern, LSH):
            k = q
        try:
            attend(q, k, v, pattern, backend="gpu")
            print("ok", dtype, pattern)
        except Exception:
            print("FAIL", dtype, pattern)
            traceback.print_exc(limit=3)
# the model path: autocast makes q bf16; what reaches attend?
import longseq.attention as A  # noqa: E402

orig = A.attend


def spy(q, k, v, pattern, **kw):
    print(
        "attend",
        type(pattern).__name__,
        q.dtype,
        k.dtype,
        v.dtype,
        tuple(q.shape),
        kw.get("padding_mask") is not None,
    )
    return orig(q, k, v, pattern, **kw)


import longseq.models.reformer_layers as RL  # noqa: E402

RL.attend = spy
from longseq.models.configs import ReformerConfig  # noqa: E402
from longseq.models.reformer import ReformerModel  # noqa: E402

c = ReformerConfig(
    attn_layers=["local", "lsh"],
    hidden_size=768,
    num_attention_heads=12,
    attention_head_size=64,
    feed_forward_size=3072,
    axial_pos_embds=True,
    axial_pos_shape=(64, 64),
    axial_pos_embds_dim=(256, 512),
    lsh_attn_chunk_length=64,
    local_attn_chunk_length=64,
    num_hashes=1,
    num_buckets=None,
    hash_seed=0,
    max_position_embeddings=4096,
    vocab_size=320,
    hidden_dropout_prob=0.0,
    lsh_attention_probs_dropout_prob=0.0,
    local_attention_probs_dropout_prob=0.0,
)
m = ReformerModel(c).to(dev).eval()
ids = torch.randint(5, 300, (1, 4096), device=dev)
try:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        m(input_ids=ids)
    print("model ok")
except Exception:
    traceback.print_exc()
