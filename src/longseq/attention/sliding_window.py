"""Longformer attention: a (dilated, optionally causal) sliding window plus global tokens.

Linear in memory: queries are cut into blocks of `c` tokens and each block meets only the key
blocks its window can reach, so scores are (seq x width) with width about window + c. Dilation d
is handled by splitting the sequence into d interleaved subsequences (tokens whose positions agree
modulo d), each of which then has a plain window. Global keys are extra columns of every query's
softmax (and masked out of the window so each key counts once, as in Hugging Face); global queries
are computed apart, against every key.
"""

from __future__ import annotations

import torch

from ._common import masked_softmax, pad_seq, real_keys
from .global_tokens import global_index
from .patterns import SlidingWindow


def neighbour_blocks(
    x: torch.Tensor, before: int, after: int, axis: int, value: float | bool
) -> torch.Tensor:
    """x (..., nb, c, ...) blocked at `axis` -> (..., nb, (before + 1 + after) * c, ...).

    Block a gets blocks a - before .. a + after side by side; blocks past either end are `value`.
    """
    axis = axis % x.dim()
    nb = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = before
    front = x.new_full(shape, value)
    shape[axis] = after
    x = torch.cat([front, x, x.new_full(shape, value)], dim=axis)
    return torch.cat([x.narrow(axis, i, nb) for i in range(before + 1 + after)], dim=axis + 1)


def _window_part(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_ok: torch.Tensor,
    half: int,
    causal: bool,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Plain (undilated) window over the last-but-one dim, plus optional extra key columns.

    q, k, v: (..., m, d); key_ok: (..., m) bool, broadcastable to q's leading dims.
    extra: (k_extra (..., G, d), v_extra (..., G, d), ok (..., G)) columns every query sees.
    """
    m = q.shape[-2]
    c = min(max(half, 16), 64)
    reach = -(-half // c)  # key blocks on each side
    q, k, v = pad_seq(q, c, -2), pad_seq(k, c, -2), pad_seq(v, c, -2)
    key_ok = pad_seq(key_ok, c, -1, value=False)
    nb = q.shape[-2] // c
    lead = q.shape[:-2]
    qb = q.unflatten(-2, (nb, c))  # (..., nb, c, d)

    after = 0 if causal else reach
    kw = neighbour_blocks(k.unflatten(-2, (nb, c)), reach, after, -3, 0.0)  # (..., nb, width, d)
    vw = neighbour_blocks(v.unflatten(-2, (nb, c)), reach, after, -3, 0.0)
    okw = neighbour_blocks(key_ok.unflatten(-1, (nb, c)), reach, after, -2, False)  # (..., nb, width)
    width = kw.shape[-2]
    t = torch.arange(c, device=q.device)[:, None]
    u = torch.arange(width, device=q.device)[None, :]
    diff = reach * c + t - u  # query position minus key position, the same in every block
    rel = (diff >= 0) & (diff <= half) if causal else diff.abs() <= half  # (c, width)
    valid = rel & okw[..., None, :]  # (..., nb, c, width)
    scores = torch.matmul(qb, kw.transpose(-1, -2)).float()
    if extra is None:
        probs, _ = masked_softmax(scores, valid, dropout)
        out = torch.matmul(probs.to(vw.dtype), vw)
    else:
        kx, vx, okx = extra  # (..., G, d), (..., G, d), (..., G)
        sx = torch.matmul(qb.flatten(-3, -2), kx.transpose(-1, -2)).float().unflatten(-2, (nb, c))
        validx = okx[..., None, None, :].expand(*lead, nb, c, okx.shape[-1])
        probs, _ = masked_softmax(
            torch.cat([scores, sx], -1), torch.cat([valid.expand_as(scores), validx], -1), dropout
        )
        pw, px = probs.split([width, sx.shape[-1]], dim=-1)
        out = torch.matmul(pw.to(vw.dtype), vw) + torch.matmul(px.flatten(-3, -2).to(vx.dtype), vx).unflatten(
            -2, (nb, c)
        )
    return out.flatten(-3, -2)[..., :m, :]


def _dilated(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_ok: torch.Tensor,
    half: int,
    dilation: int,
    causal: bool,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v (b, h, n, d); key_ok (b, n). Window over each residue class modulo `dilation`."""
    n = q.shape[2]
    if dilation == 1:
        ex = None if extra is None else (extra[0], extra[1], extra[2][:, None, :])
        return _window_part(q, k, v, key_ok[:, None, :], half, causal, ex, dropout)

    def split(x: torch.Tensor) -> torch.Tensor:  # (b, h, n, d) -> (b, h, dilation, n / dilation, d)
        return pad_seq(x, dilation).unflatten(2, (-1, dilation)).transpose(2, 3)

    ok = pad_seq(key_ok, dilation, 1, value=False).unflatten(1, (-1, dilation)).transpose(1, 2)
    ex = None
    if extra is not None:
        ex = (extra[0][:, :, None], extra[1][:, :, None], extra[2][:, None, None, :])
    out = _window_part(split(q), split(k), split(v), ok[:, None], half, causal, ex, dropout)
    return out.transpose(2, 3).flatten(2, 3)[:, :, :n]


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: SlidingWindow,
    padding: torch.Tensor | None,
    glob: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, _ = q.shape
    real = real_keys(padding, b, n, q.device)
    q = q * scale
    dilations = pattern.dilations(h)
    extra = None
    key_ok = real
    if glob is not None:
        gidx, gused = global_index(glob)  # (b, G)
        take = gidx[:, None, :, None]
        kx = k.gather(2, take.expand(-1, h, -1, k.shape[-1]))  # (b, h, G, d)
        vx = v.gather(2, take.expand(-1, h, -1, v.shape[-1]))
        extra = (kx, vx, gused)
        key_ok = real & ~glob  # global keys come in as extra columns, once

    groups: dict[int, list[int]] = {}
    for head, d in enumerate(dilations):
        groups.setdefault(d, []).append(head)
    if len(groups) == 1:
        out = _dilated(q, k, v, key_ok, pattern.half, dilations[0], pattern.causal, extra, dropout)
    else:
        outs, order = [], []
        for d, heads in groups.items():
            idx = torch.tensor(heads, device=q.device)
            ex = None if extra is None else (extra[0][:, idx], extra[1][:, idx], extra[2])
            outs.append(
                _dilated(
                    q[:, idx], k[:, idx], v[:, idx], key_ok, pattern.half, d, pattern.causal, ex, dropout
                )
            )
            order.extend(heads)
        inverse = torch.argsort(torch.tensor(order, device=q.device))
        out = torch.cat(outs, dim=1)[:, inverse]

    if glob is not None and pattern.global_rows:
        # global queries see every real key
        qg = q.gather(2, gidx[:, None, :, None].expand(-1, h, -1, q.shape[-1]))  # (b, h, G, d)
        sg = torch.matmul(qg, k.transpose(-1, -2)).float()  # (b, h, G, n)
        probs, _ = masked_softmax(sg, real[:, None, None, :], dropout)
        og = torch.matmul(probs.to(v.dtype), v)
        slot = gidx.masked_fill(~gused, n)  # unused slots write to a scratch row
        full = torch.cat([out, out.new_zeros(b, h, 1, out.shape[-1])], dim=2)
        full = full.scatter(2, slot[:, None, :, None].expand(-1, h, -1, out.shape[-1]), og.to(out.dtype))
        out = full[:, :, :n]
    if padding is not None:
        out = out * padding[:, None, :, None].to(out.dtype)
    return out
