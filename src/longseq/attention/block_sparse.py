"""BigBird ITC block-sparse attention, as Hugging Face's `BigBirdBlockSparseAttention` computes it.

The first and last query blocks attend densely; every middle query block gathers its key blocks
(first, left, own, right, last, then the random ones) and attends to them in one softmax. The window
and global blocks are a set (block 0 is not counted twice for query block 1); random blocks count as
often as the plan lists them. Linear in memory: ((5 + r) * block) keys per query.
"""

from __future__ import annotations

import torch

from ._common import masked_softmax, pad_seq, real_keys
from .dense import dense_attention
from .patterns import BlockSparse


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: BlockSparse,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    if pattern.is_dense(n):
        return dense_attention(q, k, v, False, padding, scale, dropout)
    bs = pattern.block_size
    real = pad_seq(real_keys(padding, b, n, q.device), bs, dim=1, value=False)
    q, k, v = pad_seq(q, bs), pad_seq(k, bs), pad_seq(v, bs)
    nb = q.shape[2] // bs
    plan = pattern.random_blocks(nb, device=q.device)[..., 1:-1, :]  # (heads?, nb - 2, r)
    if plan.dim() == 3 and plan.shape[0] != h:
        raise ValueError(f"seed (an explicit plan) has {plan.shape[0]} heads but the input has {h}")

    # global query blocks: dense over every real key
    qg = torch.cat([q[:, :, :bs], q[:, :, -bs:]], dim=2)  # (b, h, 2 * bs, d)
    sg = torch.matmul(qg, k.transpose(-1, -2)).float() * scale
    pg, _ = masked_softmax(sg, real[:, None, None, :], dropout)
    og = torch.matmul(pg.to(v.dtype), v)

    # middle query blocks 1 .. nb - 2: key blocks [0, i - 1, i, i + 1, nb - 1, random...]
    mid = torch.arange(1, nb - 1, device=q.device)
    fixed = torch.stack([torch.zeros_like(mid), mid - 1, mid, mid + 1, torch.full_like(mid, nb - 1)], -1)
    fixed_ok = torch.ones_like(fixed, dtype=torch.bool)
    fixed_ok[:, 0] = mid - 1 != 0  # block 0 already is the left window block of query block 1
    fixed_ok[:, 4] = mid + 1 != nb - 1  # likewise the last block for query block nb - 2
    if plan.dim() == 3:
        idx = torch.cat([fixed.expand(h, -1, -1), plan], dim=-1)  # (h, nb - 2, 5 + r)
        ok = torch.cat([fixed_ok.expand(h, -1, -1), torch.ones_like(plan, dtype=torch.bool)], -1)
        heads = torch.arange(h, device=q.device)[:, None, None]
        kb = k.unflatten(2, (nb, bs))[:, heads, idx]  # (b, h, nb - 2, 5 + r, bs, d)
        vb = v.unflatten(2, (nb, bs))[:, heads, idx]
    else:
        idx = torch.cat([fixed, plan], dim=-1)  # (nb - 2, 5 + r)
        ok = torch.cat([fixed_ok, torch.ones_like(plan, dtype=torch.bool)], -1)
        kb = k.unflatten(2, (nb, bs))[:, :, idx]
        vb = v.unflatten(2, (nb, bs))[:, :, idx]
    key_real = real.unflatten(1, (nb, bs))[:, idx]  # (b, [h,] nb - 2, 5 + r, bs)
    valid = key_real & ok[..., None]
    if valid.dim() == 4:
        valid = valid[:, None]
    valid = valid.flatten(-2)[..., None, :]  # (b, 1|h, nb - 2, 1, (5 + r) * bs)
    qm = q[:, :, bs:-bs].unflatten(2, (nb - 2, bs))  # (b, h, nb - 2, bs, d)
    sm = torch.matmul(qm, kb.flatten(3, 4).transpose(-1, -2)).float() * scale
    pm, _ = masked_softmax(sm, valid, dropout)
    om = torch.matmul(pm.to(v.dtype), vb.flatten(3, 4)).flatten(2, 3)  # (b, h, (nb - 2) * bs, d)

    out = torch.cat([og[:, :, :bs], om, og[:, :, bs:]], dim=2)[:, :, :n]
    if padding is not None:
        out = out * padding[:, None, :, None].to(out.dtype)
    return out
