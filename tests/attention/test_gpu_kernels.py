"""The `gpu` backend's Triton kernels equal the dense float32 reference, forward and in gradients.

CI has no GPU, so the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, which must be set
before triton is imported): the checks run in two subprocesses (this file as a script, half of the
cases each) and the tests read their results. Small sizes: seq <= 150, head_dim 16 / 24 / 32, 1-2
heads; padding, rows with no real token, lengths no multiple of the window / block / chunk, every
pattern, and fp16 / bf16 against twice the error of the torch backend in the same precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from longseq.attention import LSH, BlockSparse, LocalChunks, SlidingWindow, attend

# name -> (pattern, options); options: n, d, h, b, pad ("some" | "none" | "empty_row"), glob, dtype
CASES: dict[str, tuple] = {
    "window": (SlidingWindow(8), {"n": 100}),
    "window_global": (SlidingWindow(8), {"n": 100, "glob": True}),
    "window_wide_global_d32": (SlidingWindow(100), {"n": 150, "d": 32, "h": 1, "glob": True}),
    "window_causal_dilated_global": (SlidingWindow(10, dilation=2, causal=True), {"n": 97, "glob": True}),
    "window_per_head_dilation_global": (SlidingWindow(6, dilation=(1, 3)), {"n": 91, "glob": True}),
    "window_causal_global": (SlidingWindow(10, causal=True), {"n": 97, "glob": True}),
    "window_many_global": (SlidingWindow(8), {"n": 150, "h": 1, "glob": 70}),
    "window_global_keys_only": (SlidingWindow(8, global_rows=False), {"n": 100, "glob": True}),
    "window_global_keys_only_dilated": (
        SlidingWindow(8, dilation=(1, 2), global_rows=False),
        {"n": 90, "glob": 9},
    ),
    "window_many_global_dilated": (SlidingWindow(8, dilation=2), {"n": 150, "h": 1, "glob": 70}),
    "window_bf16": (SlidingWindow(16), {"n": 120, "dtype": "bfloat16", "glob": True}),
    "window_fp16_d24": (SlidingWindow(12, causal=True), {"n": 75, "d": 24, "dtype": "float16"}),
    # windows wider than the kernels' 64-row tiles: whole tiles in the band's middle go unmasked
    "window_band_global": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True}),
    "window_band_causal": (SlidingWindow(300, causal=True), {"n": 290, "h": 1, "pad": "some"}),
    "window_band_dilated_global": (SlidingWindow(200, dilation=2), {"n": 333, "h": 1, "glob": True}),
    "window_band_bf16_d32": (SlidingWindow(256), {"n": 300, "d": 32, "h": 1, "dtype": "bfloat16"}),
    # no padding mask at all: the band's whole tiles run with no mask (global keys counted once)
    "window_band_global_nopad": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True, "pad": "absent"}),
    "window_band_causal_nopad": (SlidingWindow(300, causal=True), {"n": 290, "h": 1, "pad": "absent"}),
    "window_band_keys_only_nopad": (
        SlidingWindow(200, global_rows=False),
        {"n": 300, "h": 1, "glob": 9, "pad": "absent"},
    ),
    "block_sparse": (BlockSparse(16, 1, seed=3), {"n": 123}),
    "block_sparse_plan_repeats": (
        BlockSparse(16, 2, seed=torch.tensor([[[1, 1], [4, 0], [5, 2], [6, 6], [1, 3], [2, 2], [3, 1]]] * 2)),
        {"n": 141, "h": 2},
    ),
    "block_sparse_bf16_d32": (BlockSparse(16, 1, seed=7), {"n": 120, "d": 32, "h": 1, "dtype": "bfloat16"}),
    "block_sparse_dense_short": (BlockSparse(16, 1), {"n": 70}),
    "local": (LocalChunks(20, 1, 1), {"n": 100}),
    "local_causal": (LocalChunks(16, 1, 0, causal=True), {"n": 70}),
    "local_two_chunks_repeat": (LocalChunks(40, 1, 1), {"n": 75, "h": 1}),
    "local_subtiles": (LocalChunks(140, 1, 0), {"n": 150, "h": 1, "b": 1}),
    # heads of a projection, (b, n, h, d) in memory: outputs and gradients come back laid out the same
    "window_global_seq_major": (SlidingWindow(8), {"n": 100, "glob": True, "layout": "seq"}),
    "block_sparse_seq_major": (BlockSparse(16, 1, seed=3), {"n": 123, "layout": "seq"}),
    "local_seq_major": (LocalChunks(20, 1, 1), {"n": 100, "layout": "seq"}),
    # q, k, v: the heads of one fused projection (views of one tensor, `project`)
    "window_global_fused": (SlidingWindow(8), {"n": 100, "glob": True, "layout": "fused"}),
    "local_fused_padded": (LocalChunks(20, 1, 1), {"n": 90, "layout": "fused", "pad": "some"}),
    "lsh": (LSH(2, 4, 16, seed=1), {"n": 75}),
    "lsh_causal": (LSH(1, 4, 16, causal=True, seed=2), {"n": 70}),
    "lsh_factorised_after": (LSH(2, (2, 4), 8, chunks_after=1, seed=5), {"n": 37, "h": 1}),
    "lsh_bf16": (LSH(1, 4, 16, seed=3), {"n": 64, "dtype": "bfloat16"}),
    "lsh_short_dense": (LSH(1, 4, 32, seed=4), {"n": 30}),
    # a negative scale (its sign goes to the keys), heads of a projection laid out (b, n, h, d)
    "lsh_negative_scale_seq_major": (LSH(2, 4, 16, seed=8), {"n": 50, "scale": -0.3, "layout": "seq"}),
    "lsh_fp16_d32_causal": (LSH(2, 8, 16, causal=True, seed=9), {"n": 70, "d": 32, "dtype": "float16"}),
}


def _inputs(
    pattern, n=100, d=16, h=2, b=2, pad="empty_row", glob=False, dtype="float32", seed=0, layout="heads"
):
    gen = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    if layout == "seq":  # (b, h, n, d) views of (b, n, h, d) tensors
        q, k, v = (torch.randn(b, n, h, d, generator=gen).to(dt).transpose(1, 2) for _ in range(3))
    elif layout == "fused":  # (b, h, n, d) views of one (b, n, 3 * h * d) tensor, as `project` gives
        fused = torch.randn(b, n, 3 * h * d, generator=gen).to(dt).requires_grad_(True)
        q, k, v = (x.view(b, n, h, d).transpose(1, 2) for x in fused.split(h * d, -1))
    else:
        q, k, v = (torch.randn(b, h, n, d, generator=gen).to(dt) for _ in range(3))
    if isinstance(pattern, LSH):
        k = q
    if pad == "absent":  # no padding mask given
        padding = None
    else:
        lengths = {"some": [n - 7, n - 1], "none": [n, n], "empty_row": [n - 7, 0]}[pad][:b]
        padding = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    global_mask = None
    if glob:  # True: two global tokens; an int: that many, spread (more than a tile of them)
        global_mask = torch.zeros(b, n, dtype=torch.bool)
        spots = [0, n // 3] if glob is True else torch.arange(0, n, 2)[:glob].tolist()
        global_mask[:, spots] = True
        global_mask[0, 1] = True  # rows with different numbers of global tokens
        global_mask[-1, n - 1] = True  # a padded token marked global is not global (if padded)
    return q, k, v, padding, global_mask


def _grads(out: torch.Tensor, ins: list[torch.Tensor], go: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, ins, go))


def _check(name: str) -> dict:
    """Run one case in the interpreter: the kernel's errors and the torch backend's, per output."""
    from longseq.attention._common import check_inputs, default_scale
    from longseq.attention.kernels import gpu_attention

    pattern, opts = CASES[name]
    opts = dict(opts)
    given_scale = opts.pop("scale", None)
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    shared = k is q
    ins = [q, v] if shared else [q, k, v]
    for t in ins:
        if t.is_leaf:
            t.requires_grad_(True)
    pad, glob = check_inputs(q, k, v, pattern, padding, global_mask)
    scale = default_scale(q.shape[-1], given_scale)
    out = gpu_attention(q, k, v, pattern, pad, glob, scale)
    kw = dict(padding_mask=padding, global_mask=global_mask, scale=given_scale)
    fast = attend(q, k, v, pattern, backend="torch", **kw)
    # fp32 reference on the same (rounded) inputs; LSH hashes in the input's dtype, so it keeps it
    keep = isinstance(pattern, LSH)
    ins32 = [(t.detach() if keep else t.detach().float()).requires_grad_(True) for t in ins]
    q32, v32 = ins32[0], ins32[-1]
    k32 = q32 if shared else ins32[1]
    ref = attend(q32, k32, v32, pattern, backend="reference", **kw)
    go = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # inference takes another path (no autograd node): the same bits
        again = gpu_attention(q, k, v, pattern, pad, glob, scale)
    res = {"nan": bool(out.isnan().any()), "dtype_ok": out.dtype == q.dtype, "shape_ok": out.shape == q.shape}
    res["no_grad_equal"] = bool(torch.equal(again, out.detach()))
    pairs = [("out", out, fast, ref)]
    grads = _grads(out, ins, go.to(out.dtype))
    if opts.get("layout") == "seq":  # merging the heads of the output (and of the gradients) is a view
        res["seq_major"] = all(t.transpose(1, 2).is_contiguous() for t in [out, *grads])
    for i, (g, gf, gr) in enumerate(
        zip(
            grads,
            _grads(fast, ins, go.to(fast.dtype)),
            _grads(ref, ins32, go.to(ref.dtype)),
            strict=True,
        )
    ):
        pairs.append((f"grad{i}", g, gf, gr))
        res["nan"] |= bool(g.isnan().any())
    for key, got, torch_fast, want in pairs:
        want = want.float()
        scale = want.norm().clamp_min(1e-12)
        res[key] = [
            ((got.float() - want).norm() / scale).item(),
            ((torch_fast.float() - want).norm() / scale).item(),
        ]
    if padding is not None:
        res["padded_rows_zero"] = bool((out.detach()[~padding[:, None, :].expand_as(out[..., 0])] == 0).all())
    return res


# attention dropout inside the kernels. EXACT: positions are the kernels' rows, so the dense reference
# takes the kernels' keep mask (kernels.dropout.keep_mask) and must match in fp32, forward and
# gradients. PERMUTED (LSH's sorted rows, dilation's residue classes): no dense mask to hand over, so
# the checks are: the same seed gives the same bits, dV is exact (the output is linear in v),
# dQ / dK against central differences, and the mean over many masks is the undropped output.
DROP_EXACT: dict[str, tuple] = {
    "drop_window_global": (SlidingWindow(8), {"n": 100, "glob": True}),
    "drop_window_keys_only": (SlidingWindow(8, global_rows=False), {"n": 90, "glob": True}),
    "drop_window_causal": (SlidingWindow(10, causal=True), {"n": 97, "pad": "some"}),
    "drop_window_band_global": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True}),
    "drop_window_band_nopad": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True, "pad": "absent"}),
    "drop_block_sparse_repeats": (  # long enough not to fall back to dense attention
        BlockSparse(
            16,
            2,
            seed=torch.tensor(
                [[[1, 1], [4, 0], [5, 2], [6, 6], [1, 3], [2, 2], [3, 1], [7, 7], [9, 0], [0, 0], [5, 5]]] * 2
            ),
        ),
        {"n": 200, "h": 2},
    ),
    "drop_local_repeat": (LocalChunks(40, 1, 1), {"n": 75, "h": 1}),
}
DROP_PERMUTED: dict[str, tuple] = {
    "drop_lsh": (LSH(2, 4, 16, seed=1), {"n": 75}),
    "drop_window_dilated_global": (SlidingWindow(6, dilation=(1, 3)), {"n": 91, "glob": True}),
}
P_DROP = 0.3


def _gpu(pattern, q, k, v, padding, global_mask, p: float, seed: int) -> torch.Tensor:
    from longseq.attention._common import check_inputs, default_scale
    from longseq.attention.kernels import gpu_attention

    pad, glob = check_inputs(q, k, v, pattern, padding, global_mask)
    torch.manual_seed(seed)  # the kernels draw their seed words from torch's generator
    return gpu_attention(q, k, v, pattern, pad, glob, default_scale(q.shape[-1], None), dropout=p)


def _check_drop_exact(name: str) -> dict:
    from longseq.attention.kernels.dropout import keep_mask, new_seed

    pattern, opts = DROP_EXACT[name]
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    ins = [t.requires_grad_(True) for t in (q, k, v)]
    out = _gpu(pattern, q, k, v, padding, global_mask, P_DROP, seed=5)
    torch.manual_seed(5)
    seed = new_seed(torch.device("cpu"))
    b, h, n, _ = q.shape
    z = (torch.arange(b)[:, None] * h + torch.arange(h))[:, :, None, None]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    keep = keep_mask(seed, z, i, j, P_DROP)
    ref = attend_reference(pattern, ins, padding, global_mask, keep)
    go = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    res = {"dropped": 1 - keep.float().mean().item(), "nan": bool(out.isnan().any())}
    res["out"] = _rel(out, ref)
    for g_idx, (g, gr) in enumerate(zip(_grads(out, ins, go), _grads(ref, ins, go), strict=True)):
        res[f"grad{g_idx}"] = _rel(g, gr)
    res["plain_differs"] = _rel(out, _gpu(pattern, q, k, v, padding, global_mask, 0.0, seed=5)) > 0.05
    return res


def attend_reference(pattern, ins, padding, global_mask, keep) -> torch.Tensor:
    from longseq.attention.reference import reference

    q, k, v = ins
    return reference(
        q, k, v, pattern, padding_mask=padding, global_mask=global_mask, dropout=P_DROP, keep=keep
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def _check_drop_permuted(name: str) -> dict:
    from longseq.attention._common import real_keys
    from longseq.attention.lsh import sorted_positions

    pattern, opts = DROP_PERMUTED[name]
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    shared = k is q

    def f(qq, vv, kk=None, seed=5, p=P_DROP):
        return _gpu(pattern, qq, qq if shared else kk, vv, padding, global_mask, p, seed)

    qg, vg, kg = (t.detach().clone().requires_grad_(True) for t in (q, v, k))
    out = f(qg, vg, kg)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = dict(zip("qvk", _grads(out, [qg, vg] if shared else [qg, vg, kg], go), strict=False))
    res = {"same_bits": bool(torch.equal(out.detach(), f(q, v, k))), "nan": bool(out.isnan().any())}
    res["other_seed_differs"] = _rel(f(q, v, k, seed=6), out.detach()) > 0.01
    gen = torch.Generator().manual_seed(2)
    dv = torch.randn(v.shape, generator=gen)
    lin = ((f(q, v + dv, k) - f(q, v, k)) * go).sum().item()  # exact: linear in v
    res["dv"] = abs(lin - (grads["v"] * dv).sum().item()) / abs(lin)
    real = real_keys(padding, q.shape[0], q.shape[2], q.device)
    for arg in ("q", "k") if not shared else ("q",):
        d, eps = torch.randn(q.shape, generator=gen), 1e-3
        plus = {"q": q, "k": k} | {arg: {"q": q, "k": k}[arg] + eps * d}
        minus = {"q": q, "k": k} | {arg: {"q": q, "k": k}[arg] - eps * d}
        if shared:  # the hashing must not move under the step, or the function jumps
            base = sorted_positions(q, pattern, real)
            res["hash_stable"] = all(
                torch.equal(sorted_positions(x["q"], pattern, real), base) for x in (plus, minus)
            )
        fd = (((f(plus["q"], v, plus["k"]) - f(minus["q"], v, minus["k"])) * go).sum() / (2 * eps)).item()
        res[f"d{arg}"] = abs(fd - (grads[arg] * d).sum().item()) / abs(fd)
    # unbiased: many copies of one input, each its own mask (its own batch row), against p = 0
    copies = 24
    qs, ks, vs = (t[:1].expand(copies, *t.shape[1:]).contiguous() for t in (q, k, v))
    pad = padding[:1].expand(copies, -1)
    gm = None if global_mask is None else global_mask[:1].expand(copies, -1)
    many = _gpu(pattern, qs, qs if shared else ks, vs, pad, gm, P_DROP, seed=7)
    q1 = q[:1]
    plain = _gpu(
        pattern,
        q1,
        q1 if shared else k[:1],
        v[:1],
        padding[:1],
        None if gm is None else gm[:1],
        0.0,
        seed=7,
    )
    sq_err = (many.mean(0) - plain[0]).pow(2).sum().item()
    res["mean_vs_noise"] = sq_err / (
        many.var(0).sum().item() / copies
    )  # about 1 if unbiased; 4 or more without the 1 / (1 - p)
    return res


# global_rows_out: rows computed by the caller (Longformer's global projections) placed into the
# kernels' output buffer, against the torch backend's out-of-place placing; gradients include theirs
PLACED: dict[str, tuple] = {
    "placed_rows": (SlidingWindow(8, global_rows=False), {"n": 100, "glob": True, "layout": "seq"}),
    "placed_rows_dilated": (SlidingWindow(6, dilation=(1, 2), global_rows=False), {"n": 90, "glob": 5}),
    "placed_rows_unpadded": (SlidingWindow(10, global_rows=False), {"n": 77, "glob": 3, "pad": "absent"}),
    # as many global tokens in every row, sequence-major heads: rows moved by one indexed copy
    "placed_rows_full_seq": (
        SlidingWindow(10, global_rows=False),
        {"n": 77, "layout": "seq", "pad": "some", "full": 3},
    ),
}


def _check_placed(name: str) -> dict:
    import importlib

    import longseq.attention as A
    from longseq.attention.global_tokens import global_tokens

    G = importlib.import_module("longseq.attention.global_tokens")  # (the package's name is the function)
    pattern, opts = PLACED[name]
    opts = dict(opts)
    full = opts.pop("full", 0)
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    if full:  # the same global tokens in every row, all real
        global_mask = torch.zeros(q.shape[0], q.shape[2], dtype=torch.bool)
        global_mask[:, torch.arange(0, 6 * full, 6)] = True
    tokens = global_tokens(global_mask, padding)
    g = tokens.g
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(q.shape[0], q.shape[1], g, q.shape[-1], generator=gen)
    ins = [t.requires_grad_(True) for t in (q, k, v, rows)]
    go = torch.randn(q.shape, generator=gen)
    if opts.get("layout") == "seq":  # the output's gradient sequence-major too, as merge_heads gives it
        go = go.transpose(1, 2).contiguous().transpose(1, 2)
    res = {"full": tokens.full}
    outs = {}
    flat_rows, seen = G._flat_rows, []
    G._flat_rows = lambda x, flat: seen.append(flat_rows(x, flat) is not None) or flat_rows(x, flat)
    for backend in ("gpu", "torch"):
        kw = dict(padding_mask=padding, global_mask=global_mask, global_rows_out=rows)
        if backend == "gpu":
            saved, A._gpu_available = A._gpu_available, lambda q: True
            try:
                out = attend(q, k, v, pattern, backend="gpu", **kw)
            finally:
                A._gpu_available = saved
        else:
            out = attend(q, k, v, pattern, backend="torch", **kw)
        outs[backend] = [out, *_grads(out, ins, go)]
    G._flat_rows = flat_rows
    res["flat"] = seen  # gpu forward, gpu backward, torch forward: whether one indexed copy moved the rows
    for i, (a, b) in enumerate(zip(outs["gpu"], outs["torch"], strict=True)):
        res[f"t{i}"] = _rel(a, b)
    res["placed"] = bool(torch.equal(outs["gpu"][0][0, :, 0].detach(), rows[0, :, 0].detach()))
    return res


# q, k, v from `project` (views of one marked tensor): the kernels take the projection's output as
# one input and write its gradient in one buffer. Gradients of x and of the layers against the fp32
# reference through the same layers. "kv": k and v projected together, q apart (Longformer's global
# rows); "fp16": the kernels in half precision, against twice the error of the torch backend's
PROJECTED: dict[str, tuple] = {
    "projected_window_global": (SlidingWindow(8), {"n": 100, "glob": True}),
    "projected_window_band_nopad": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True, "pad": "absent"}),
    "projected_local_padded": (LocalChunks(20, 1, 1), {"n": 90, "pad": "some"}),
    "projected_block_sparse_fp16": (BlockSparse(16, 1, seed=3), {"n": 123, "dtype": "float16"}),
    "projected_kv_few_rows": (None, {"n": 1100, "rows": 3}),
    "projected_lsh_two_rounds_padded": (LSH(2, 4, 16, seed=6), {"n": 70, "pad": "some"}),
}


def _check_projected(name: str) -> dict:
    from torch import nn

    from longseq.attention import Dense
    from longseq.layers.projection import project

    pattern, opts = PROJECTED[name]
    n, h, d, b = opts["n"], opts.get("h", 2), 16, 2
    dt = getattr(torch, opts.get("dtype", "float32"))
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    layers = [nn.Linear(h * d, h * d) for _ in range(4)]
    x = torch.randn(b, n, h * d, generator=gen)
    lengths = {"some": [n - 7, n - 1], "absent": None}[opts.get("pad", "some")]
    padding = None if lengths is None else torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    glob = None
    if opts.get("glob"):
        glob = torch.zeros(b, n, dtype=torch.bool)
        glob[:, [0, n // 3]] = True
    rows = opts.get("rows")

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, -1, h, d).transpose(1, 2)

    def run(backend: str, dtype: torch.dtype):
        xs = x.to(dtype).requires_grad_(True)
        mods = [nn.Linear(h * d, h * d).to(dtype) for _ in layers]
        for m, ref in zip(mods, layers, strict=True):
            m.load_state_dict({k: t.to(dtype) for k, t in ref.state_dict().items()})
        if rows:  # a few query rows of their own over keys and values projected together
            q = heads(mods[0](xs[:, :rows]))
            k, v = (heads(t) for t in project(xs, mods[1], mods[2]))
            out = attend(q, k, v, Dense(), padding_mask=padding, backend=backend)
        elif isinstance(pattern, LSH):  # shared query-key heads and values, projected together
            q, v = (heads(t) for t in project(xs, mods[0], mods[2]))
            k = q
            out = attend(q, q, v, pattern, padding_mask=padding, backend=backend)
        else:
            q, k, v = (heads(t) for t in project(xs, *mods[:3]))
            out = attend(q, k, v, pattern, padding_mask=padding, global_mask=glob, backend=backend)
        # the kernels' node takes the projection's output itself (its first input edge)
        edges = out.grad_fn.next_functions if out.grad_fn is not None else ()
        slot = 1 if rows else 0
        taken = len(edges) > slot and edges[slot][0] is k._base.grad_fn
        # (the key bias has no gradient in exact arithmetic: softmax ignores a constant per row)
        used = [mods[0], mods[2]] if isinstance(pattern, LSH) else mods[:3]
        params = [t for m in used for t in m.parameters() if t is not mods[1].bias]
        return out, [xs, *params], taken

    import longseq.attention as A

    saved, A._gpu_available = A._gpu_available, lambda q: True
    try:
        out, ins, taken = run("gpu", dt)
    finally:
        A._gpu_available = saved
    go = torch.randn(out.shape, generator=gen)
    got = [out, *_grads(out, ins, go.to(out.dtype))]
    fast_out, fast_ins, _ = run("torch", dt)
    fast = [fast_out, *_grads(fast_out, fast_ins, go.to(dt))]
    ref_out, ref_ins, _ = run("reference", torch.float32)
    want = [ref_out, *_grads(ref_out, ref_ins, go)]
    res = {"taken": taken, "nan": any(bool(t.isnan().any()) for t in got)}
    for i, (a, f, w) in enumerate(zip(got, fast, want, strict=True)):
        res[f"t{i}"] = [_rel(a, w), _rel(f, w)]
    return res


# few query rows over many keys: (batch, heads, rows, keys, head_dim, real keys per batch row).
# "few_rows_segments": 24 key tiles of 64 keys, over two key segments merged by LSE (head_dim 64)
FEW_ROWS: dict[str, tuple] = {
    "few_rows": (2, 2, 5, 150, 16, [141, 0]),
    "few_rows_segments": (2, 2, 3, 1500, 64, [1401, 0]),
}


def _check_few_rows(name: str) -> dict:
    """Dense attention of a few rows over many keys through the kernels (Longformer's global rows),
    against the fp32 reference and the torch backend; one batch row has no real key."""
    from longseq.attention import Dense
    from longseq.attention.kernels.patterns_gpu import few_rows_gpu

    b, h, g, nk, d, lengths = FEW_ROWS[name]
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(b, h, g, d, generator=gen).requires_grad_(True)
    k, v = (torch.randn(b, h, nk, d, generator=gen).requires_grad_(True) for _ in range(2))
    padding = torch.arange(nk)[None] < torch.tensor(lengths)[:, None]
    go = torch.randn(b, h, g, d, generator=gen)
    res = {}
    ref = attend(q, k, v, Dense(), padding_mask=padding, backend="reference")
    ref_grads = _grads(ref, [q, k, v], go)
    for label, out in (
        ("kernels", few_rows_gpu(q, k, v, padding, d**-0.5)),
        ("torch", attend(q, k, v, Dense(), padding_mask=padding, backend="torch")),
    ):
        res[label] = [_rel(out, ref)] + [
            _rel(a, b) for a, b in zip(_grads(out, [q, k, v], go), ref_grads, strict=True)
        ]
        res[f"{label}_empty_row_zero"] = bool((out[1] == 0).all())
    # again, with the rows of the first call taken from the cache (`_FEW`, by the key mask), and
    # every buffer the kernels get unzeroed filled with NaN first: the rows are all the queries, so
    # each output row is written
    from longseq.attention.kernels import listed
    from longseq.attention.kernels import patterns_gpu as pg

    like, listed_attention, seen = listed._like, pg.listed_attention, []

    def poisoned(x: torch.Tensor, zero: bool = False) -> torch.Tensor:
        return like(x, zero) if zero else like(x).fill_(float("nan"))

    def spy(*args, **kwargs):
        seen.append(kwargs["rows"])
        return listed_attention(*args, **kwargs)

    listed._like, pg.listed_attention = poisoned, spy
    try:
        few_rows_gpu(q, k, v, padding, d**-0.5)  # the rows as the first call's
        out = few_rows_gpu(q, k, v, padding, d**-0.5)
        res["poisoned"] = [_rel(out, ref)] + [
            _rel(a, b) for a, b in zip(_grads(out, [q, k, v], go), ref_grads, strict=True)
        ]
        few_rows_gpu(q, k, v, padding.clone(), d**-0.5)  # another mask tensor: other rows
    finally:
        listed._like, pg.listed_attention = like, listed_attention
    res["rows_cached"] = seen[0] is seen[1] and seen[0].every and seen[2] is not seen[0]
    return res


# the band walk (BAND: tiles computed in the kernels, whole tiles unmasked) against the listed walk
# of the same window plan (the benchmarks' baseline), with per-kernel tiles unlike the plan's
BAND_VS_LIST: dict[str, tuple] = {
    "band_vs_list_global": (SlidingWindow(300), {"n": 333, "h": 1, "glob": True, "pad": "absent"}),
    "band_vs_list_causal_padded": (SlidingWindow(200, causal=True), {"n": 250, "h": 1, "pad": "some"}),
}


def _check_band_vs_list(name: str) -> dict:
    from longseq.attention.kernels import listed

    pattern, opts = BAND_VS_LIST[name]
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    ins = [t.requires_grad_(True) for t in (q, k, v)]
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    runs = {}
    tiles = dict(listed.BAND_TILES)
    try:
        for label, band, tiling in (
            ("list", False, None),
            ("band", True, None),
            (
                "band_tiles",
                True,
                {"_fwd_kernel": (32, 64), "_bwd_dq_kernel": (64, 32), "_bwd_dkdv_kernel": (32, 128)},
            ),
        ):
            listed.tune_band(tiling, band=band)
            out = _gpu(pattern, q, k, v, padding, global_mask, 0.0, seed=0)
            runs[label] = [out, *_grads(out, ins, go)]
    finally:
        listed.tune_band(tiles, band=True)
    res = {}
    for label in ("band", "band_tiles"):
        res[label] = max(_rel(a, b) for a, b in zip(runs[label], runs["list"], strict=True))
    return res


# `Rows` (global queries, BigBird's global blocks) in the main launches (listed.ALONG: their programs
# first in the grid, the main plan's skipping rows it lists too) against launches of their own, with
# dropout in the kernels (without, the cases above compare the main launches with the reference):
# the same results, and the main launches took them
ALONG_VS_APART: dict[str, tuple] = {
    "along_window_global_padded": (SlidingWindow(8), {"n": 100, "glob": True}),
    "along_window_band_global": (SlidingWindow(300), {"n": 333, "h": 1, "glob": 9, "pad": "absent"}),
    "along_block_sparse": (BlockSparse(16, 1, seed=3), {"n": 123, "h": 1, "pad": "some"}),
}


def _check_along_vs_apart(name: str) -> dict:
    from longseq.attention.kernels import listed

    pattern, opts = ALONG_VS_APART[name]
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    ins = [t.requires_grad_(True) for t in (q, k, v)]
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    taken: list[bool] = []
    original = listed._Along.of

    def spy(*args, **kwargs):
        got = original(*args, **kwargs)
        taken.append(got.on)
        return got

    runs = {}
    listed._Along.of = spy
    band_rows = listed.BAND_ROWS[0]
    listed.BAND_ROWS[0] = 0  # (a window's rows: here from a split plan, as more than BAND_ROWS_MAX are)
    try:
        for label, along in (("apart", False), ("along", True)):
            listed.ALONG[0] = along
            out = _gpu(pattern, q, k, v, padding, global_mask, 0.2, seed=5)
            runs[label] = [out, *_grads(out, ins, go)]
    finally:
        listed.ALONG[0] = True
        listed.BAND_ROWS[0] = band_rows
        listed._Along.of = staticmethod(original)
    return {
        "taken": taken,
        "diff": max(_rel(a, b) for a, b in zip(runs["along"], runs["apart"], strict=True)),
    }


# A window's global rows taken by the band's forward programs (`listed.BAND_ROWS`: each over its own
# tile of keys, read again after the band loop, the partials merged in a launch of their own) against
# a split plan's programs, with dropout: the same results, and the band took them. Padding with a
# batch row of no real token, 16 rows (the kernels' most), a causal window over a fused projection's views,
# and query tiles of 32 rows over key tiles of 64 (each key tile owned by one of two programs); and
# one global row per batch row, which the band takes with the default BAND_ROWS_MAX; and a merge that
# takes the partials 2 at a time (`listed.BAND_MERGE_CHUNK`) over 3 programs of head_dim 40's columns.
BAND_ROWS_VS_SPLIT: dict[str, tuple] = {
    "band_rows_padded": (SlidingWindow(8), {"n": 100, "glob": True}),
    "band_rows_one_by_default": (SlidingWindow(300), {"n": 333, "h": 1, "glob": "one", "pad": "some"}),
    "band_rows_most_nopad": (SlidingWindow(300), {"n": 333, "h": 1, "glob": 15, "pad": "absent"}),
    "band_rows_causal_fused": (SlidingWindow(40, causal=True), {"n": 150, "glob": 3, "layout": "fused"}),
    "band_rows_tiles_32x64": (SlidingWindow(100), {"n": 170, "h": 1, "glob": True, "tiles": (32, 64)}),
    "band_rows_merge_chunks_d40": (SlidingWindow(60), {"n": 400, "h": 1, "d": 40, "glob": 2, "chunk": 2}),
}  # fmt: skip


def _check_band_rows_vs_split(name: str) -> dict:
    from longseq.attention.kernels import listed

    pattern, opts = BAND_ROWS_VS_SPLIT[name]
    opts = dict(opts)
    tiles = opts.pop("tiles", None)
    chunk = opts.pop("chunk", listed.BAND_MERGE_CHUNK)
    one = opts.get("glob") == "one"
    q, k, v, padding, global_mask = _inputs(pattern, **(opts | {"glob": not one and opts.get("glob")}))
    if one:  # one global token in each batch row, at different positions
        global_mask = torch.zeros(q.shape[0], q.shape[2], dtype=torch.bool)
        global_mask[0, 0] = global_mask[1, q.shape[2] // 2] = True
    fused = opts.get("layout") == "fused"
    ins = [q._base] if fused else [t.requires_grad_(True) for t in (q, k, v)]
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    taken: list[bool] = []
    original = listed._takes_band_rows

    def spy(*args):
        taken.append(original(*args))
        return taken[-1]

    runs = {}
    saved = listed.BAND_ROWS[0], dict(listed.BAND_TILES), listed.BAND_ROWS_MAX, listed.BAND_MERGE_CHUNK
    listed._takes_band_rows = spy
    listed.BAND_MERGE_CHUNK = chunk
    if not one:
        listed.BAND_ROWS_MAX = listed.BAND_ROWS_MOST  # (by default the band takes one row)
    try:
        if tiles is not None:
            listed.tune_band({"_fwd_kernel": tiles})
        for label, on in (("split", False), ("band", True)):
            listed.BAND_ROWS[0] = on
            out = _gpu(pattern, q, k, v, padding, global_mask, 0.2, seed=5)
            runs[label] = [out, *_grads(out, ins, go)]
    finally:
        listed.BAND_ROWS[0], listed.BAND_ROWS_MAX, listed.BAND_MERGE_CHUNK = saved[0], saved[2], saved[3]
        listed.tune_band(saved[1])
        listed._takes_band_rows = original
    res = {"taken": taken, "nan": any(bool(t.isnan().any()) for r in runs.values() for t in r)}
    res["diff"] = max(_rel(a, b) for a, b in zip(runs["band"], runs["split"], strict=True))
    return res


# The band kernels' TMA loads (`listed.TMA`: 16-bit inputs, contiguous tiles through descriptors,
# rows past the sequence read as 0) against their pointer loads: the same numbers, with padding, global
# tokens, causal and dilated windows, projection views and dropout, in bf16 and fp16; and the three
# kernels took the descriptors. ("fp16" cases with d = 24 would not: head_dim must be a power of two.)
TMA_VS_POINTER: dict[str, tuple] = {
    "tma_window_band_global_bf16": (
        SlidingWindow(300), {"n": 333, "h": 1, "glob": True, "pad": "some", "dtype": "bfloat16"},
    ),
    "tma_window_causal_fp16_d32_nopad": (
        SlidingWindow(200, causal=True), {"n": 250, "d": 32, "pad": "absent", "dtype": "float16"},
    ),
    "tma_window_fused_global_bf16": (
        SlidingWindow(100), {"n": 150, "glob": 3, "layout": "fused", "dtype": "bfloat16"},
    ),
    "tma_window_dilated_seq_dropout_fp16": (
        SlidingWindow(40, dilation=2), {"n": 130, "layout": "seq", "dtype": "float16", "drop": 0.2},
    ),
}  # fmt: skip


def _check_tma_vs_pointer(name: str) -> dict:
    from longseq.attention.kernels import listed

    pattern, opts = TMA_VS_POINTER[name]
    opts = dict(opts)
    p = opts.pop("drop", 0.0)
    q, k, v, padding, global_mask = _inputs(pattern, **opts)
    fused = opts.get("layout") == "fused"  # views of one leaf: its gradient
    ins = [q._base] if fused else [t.requires_grad_(True) for t in (q, k, v)]
    go = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.dtype)
    taken: list[tuple[str, bool]] = []
    original = listed._tma

    def spy(plan, kernel, d, *xs):
        got = original(plan, kernel, d, *xs)
        taken.append((kernel.__name__, got))
        return got

    runs = {}
    listed._tma = spy
    saved = dict(listed.TMA)
    try:
        for label, on in (("pointer", False), ("tma", True)):
            listed.TMA.update(dict.fromkeys(saved, on))
            out = _gpu(pattern, q, k, v, padding, global_mask, p, seed=5)
            runs[label] = [out, *_grads(out, ins, go)]
    finally:
        listed.TMA.update(saved)
        listed._tma = original
    return {
        "tma_kernels": sorted({k for k, on in taken if on}),
        "nan": any(bool(t.isnan().any()) for t in runs["tma"]),
        "diff": max(_rel(a, b) for a, b in zip(runs["tma"], runs["pointer"], strict=True)),
    }


# LSH's hash kernel (`lsh_sorted.sort_keys`: rotation and argmax in one) against torch's einsum and
# argmax (`hash_buckets`): equal, padding in the extra bucket, ties (zero rows) to the first index;
# (pattern, batch, heads, seq, dtype)
BUCKETS: dict[str, tuple] = {
    "buckets_factorised_padded": (LSH(3, (4, 6), 8, seed=2), 2, 2, 45, "float32"),
    "buckets_bf16": (LSH(2, 16, 16, seed=1), 1, 3, 64, "bfloat16"),
    "buckets_int32_keys": (LSH(1, 2**15, 8, seed=3), 1, 1, 20, "float32"),
}


def _check_buckets(name: str) -> dict:
    from longseq.attention._common import pad_seq
    from longseq.attention.kernels import lsh_sorted
    from longseq.attention.lsh import hash_buckets

    pattern, b, h, n, dtype = BUCKETS[name]
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(b, h, n, 8, generator=gen).to(getattr(torch, dtype))
    q[:, :, 3] = 0  # every rotation 0: a tie over all buckets
    real = torch.arange(n)[None] < torch.tensor([n - 5, n - 1, n][:b])[:, None]
    n_p = -(-n // pattern.chunk_length) * pattern.chunk_length
    want = hash_buckets(pad_seq(q, pattern.chunk_length), pattern, pad_seq(real, n_p, 1, value=False))
    res = {}
    for tiles in ((64, 1), (16, 3)):  # (tokens, tiles) of a program: one tile, or a loop of three
        lsh_sorted.HASH_TILES[0] = tiles
        try:
            got = lsh_sorted.sort_keys(q, pattern, real.to(torch.int8), n_p)
        finally:
            lsh_sorted.HASH_TILES[0] = (64, 1)
        res[f"equal_{tiles[0]}x{tiles[1]}"] = bool(torch.equal(got.long(), want))
    return res | {"dtype": str(got.dtype)}


def _run_half(part: int) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(part)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode:
        raise RuntimeError(f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results() -> dict:
    with ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(_run_half, (0, 1)))
    return {**halves[0], **halves[1]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_reference(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert not res["nan"]
    assert res["dtype_ok"] and res["shape_ok"]
    assert res.get("padded_rows_zero", True)
    assert res["no_grad_equal"]
    assert res.get("seq_major", True)
    dtype = CASES[name][1].get("dtype", "float32")
    for key in [k for k in res if k == "out" or k.startswith("grad")]:  # relative Frobenius errors
        err, torch_err = res[key]
        if dtype == "float32":
            assert err <= 1e-5, (key, err)
        else:  # the flash-attention rule: at most twice the error of the same precision in PyTorch
            assert err <= 2 * torch_err + 1e-4, (key, err, torch_err)


@pytest.mark.parametrize("name", sorted(DROP_EXACT))
def test_dropout_matches_reference_with_the_kernels_mask(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert not res["nan"] and res["plain_differs"]
    assert abs(res["dropped"] - P_DROP) < 0.05
    for key in [k for k in res if k == "out" or k.startswith("grad")]:
        assert res[key] <= 1e-5, (key, res[key])


@pytest.mark.parametrize("name", sorted(DROP_PERMUTED))
def test_dropout_on_permuted_rows(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert not res["nan"] and res["same_bits"] and res["other_seed_differs"]
    assert res.get("hash_stable", True)
    assert res["dv"] < 1e-4, res["dv"]
    for key in ("dq", "dk"):
        if key in res:
            assert res[key] < 1e-2, (key, res[key])
    assert res["mean_vs_noise"] < 1.6, res["mean_vs_noise"]


@pytest.mark.parametrize("name", sorted(PLACED))
def test_placed_rows_match_the_torch_backend(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert res["placed"]  # token 0 is global in row 0: its output is the given row
    # the kernels' buffer is sequence-major with layout "seq": there, with every slot used, the rows
    # go in (forward) and come out (backward) by one indexed copy; never on the torch backend's copy
    if "full" in PLACED[name][1]:
        assert res["full"] and res["flat"] == [True, True, False], res
    else:
        assert not (res["full"] and PLACED[name][1].get("layout") == "seq") and not any(res["flat"]), res
    for key in [k for k in res if k.startswith("t")]:  # output, dq, dk, dv, d(rows)
        assert res[key] <= 1e-5, (key, res[key])


@pytest.mark.parametrize("name", sorted(PROJECTED))
def test_projected_heads_take_the_gradient_in_one_buffer(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert res["taken"] and not res["nan"]
    fp32 = PROJECTED[name][1].get("dtype", "float32") == "float32"
    for key in [k for k in res if k.startswith("t") and k != "taken"]:  # output, d(x), d(layers)
        err, torch_err = res[key]
        assert err <= (1e-5 if fp32 else 2 * torch_err + 1e-4), (key, err, torch_err)


@pytest.mark.parametrize("name", sorted(FEW_ROWS))
def test_few_rows_over_many_keys(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    for label in ("kernels", "torch"):
        assert res[f"{label}_empty_row_zero"], label
        assert max(res[label]) <= 1e-5, (label, res[label])
    assert res["rows_cached"] and max(res["poisoned"]) <= 1e-5, res  # (NaN fails the comparison)


@pytest.mark.parametrize("name", sorted(BAND_VS_LIST))
def test_band_walk_equals_the_listed_walk(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert res["band"] <= 1e-6 and res["band_tiles"] <= 1e-6, res


@pytest.mark.parametrize("name", sorted(TMA_VS_POINTER))
def test_band_kernels_tma_loads_equal_pointer_loads(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert res["tma_kernels"] == ["_bwd_dkdv_kernel", "_bwd_dq_kernel", "_fwd_kernel"], res
    assert not res["nan"] and res["diff"] == 0.0, res


@pytest.mark.parametrize("name", sorted(ALONG_VS_APART))
def test_rows_in_the_main_launches_equal_their_own_launches(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    # apart: both passes (forward, dQ) off; along: both on, but the window's dQ, with its global keys'
    # atomics, keeps them apart
    atomics = isinstance(ALONG_VS_APART[name][0], SlidingWindow)
    assert res["taken"] == [False, False, True, not atomics], res["taken"]
    assert res["diff"] <= 1e-6, res


@pytest.mark.parametrize("name", sorted(BAND_ROWS_VS_SPLIT))
def test_band_rows_equal_a_split_plan(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    # split, then the band's (forward only: the backward keeps the split plan)
    assert res["taken"] == [False, True], res["taken"]
    assert not res["nan"]
    assert res["diff"] <= 1e-6, res


@pytest.mark.parametrize("name", sorted(BUCKETS))
def test_bucket_kernel_equals_hash_buckets(results: dict, name: str) -> None:
    res = results[name]
    assert "error" not in res, res.get("error")
    assert res["equal_64x1"] and res["equal_16x3"]
    assert res["dtype"] == ("torch.int32" if BUCKETS[name][0].total_buckets >= 2**15 else "torch.int16")


def test_global_rows_out_is_checked() -> None:
    q = torch.randn(1, 2, 20, 8)
    glob = torch.zeros(1, 20, dtype=torch.bool)
    glob[0, 3] = True
    with pytest.raises(ValueError, match="global_rows=False"):
        attend(q, q, q, SlidingWindow(4), global_mask=glob, global_rows_out=torch.zeros(1, 2, 1, 8))
    with pytest.raises(ValueError, match=r"expected \(batch, heads, global tokens, head_dim\)"):
        pattern = SlidingWindow(4, global_rows=False)
        attend(q, q, q, pattern, global_mask=glob, global_rows_out=torch.zeros(1, 2, 2, 8))


def test_flash_rows_apply_only_where_flash_takes_the_rows(monkeypatch) -> None:
    """`few_rows_gpu` hands the rows to torch's flash kernel only with no padding and no dropout,
    16-bit inputs of one dtype, head_dim a multiple of 8 up to 256 with unit stride, at most
    FLASH_ROWS_MAX_KEYS keys, on CUDA from sm80 with flash SDPA enabled, outside CUDA-graph capture
    and deterministic mode. (CUDA tensors stood in for by objects with their attributes; the GPU
    check is attention.py's.)"""
    from types import SimpleNamespace

    from longseq.attention.kernels import patterns_gpu as pg

    def t(n=1000, d=64, dtype=torch.bfloat16, stride=1, cuda=True):
        device = SimpleNamespace(index=0)
        return SimpleNamespace(
            shape=(1, 12, n, d), dtype=dtype, is_cuda=cuda, stride=lambda dim: stride, device=device
        )

    capturing, capable, enabled = [False], [True], [True]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    monkeypatch.setattr(pg, "_flash_capable", lambda index: capable[0])
    monkeypatch.setattr(torch.backends.cuda, "flash_sdp_enabled", lambda: enabled[0])
    q, kv = t(2), t()
    assert pg.flash_rows_apply(q, kv, kv, None, 0.0)
    assert pg.flash_rows_apply(
        t(2, dtype=torch.float16), t(dtype=torch.float16), t(dtype=torch.float16), None, 0.0
    )
    refused = [
        (q, kv, kv, torch.ones(1, 1000, dtype=torch.bool), 0.0),  # padding: our kernels' mask
        (q, kv, kv, None, 0.1),  # dropout: our kernels' stream
        (t(2, dtype=torch.float32), t(dtype=torch.float32), t(dtype=torch.float32), None, 0.0),
        (q, t(dtype=torch.float16), kv, None, 0.0),  # mixed dtypes
        (t(2, d=60), t(d=60), t(d=60), None, 0.0),
        (t(2, d=512), t(d=512), t(d=512), None, 0.0),
        (q, t(pg.FLASH_ROWS_MAX_KEYS + 1), t(pg.FLASH_ROWS_MAX_KEYS + 1), None, 0.0),
        (q, t(stride=2), kv, None, 0.0),
        (t(2, cuda=False), t(cuda=False), t(cuda=False), None, 0.0),
    ]
    for args in refused:
        assert not pg.flash_rows_apply(*args)
    assert pg.flash_rows_apply(q, t(pg.FLASH_ROWS_MAX_KEYS), t(pg.FLASH_ROWS_MAX_KEYS), None, 0.0)
    for flag in (capturing, capable, enabled):  # in a capture; before sm80; flash SDPA switched off
        flag[0] = not flag[0]
        assert not pg.flash_rows_apply(q, kv, kv, None, 0.0)
        flag[0] = not flag[0]
    assert pg.flash_rows_apply(q, kv, kv, None, 0.0)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert not pg.flash_rows_apply(q, kv, kv, None, 0.0)


def test_gpu_backend_on_cpu_raises() -> None:
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match="gpu"):
        attend(q, q, q, SlidingWindow(2), backend="gpu")


def test_tma_descriptors_are_triton_s_own() -> None:
    """The band kernels' descriptors skip TensorDescriptor's checks (`listed._descriptor`): for every
    input `_tma` lets through, Triton's own constructor accepts it and makes the same fields; the
    inputs it refuses are the ones TMA cannot read."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from longseq.attention.kernels import _flash, listed

    plan = listed.window_plan(300, 64, False, torch.device("cpu"), 64, 64)
    base = torch.randn(2, 300, 3 * 4 * 64).to(torch.bfloat16)
    fused = base.view(2, 300, 3, 4, 64)[:, :, 1].transpose(1, 2)  # heads of a projection
    ok = {
        "contiguous": torch.randn(2, 4, 300, 64).to(torch.float16),
        "fused": fused,
        "seq_major": torch.randn(2, 300, 4, 32).to(torch.bfloat16).transpose(1, 2),
    }
    for name, x in ok.items():
        assert listed._tma(plan, _flash._fwd_kernel, x.shape[-1], x), name
        got, want = (
            listed._descriptor(x, [1, 1, 64, x.shape[-1]]),
            TensorDescriptor.from_tensor(x, [1, 1, 64, x.shape[-1]]),
        )
        assert got.base is want.base and got.shape == list(want.shape) and got.strides == list(want.strides)
        assert got.block_shape == want.block_shape and got.padding == want.padding, name
    refused = {
        "fp32": torch.randn(2, 4, 300, 64),
        "row stride off 16 bytes": torch.randn(2, 4, 300, 68).to(torch.bfloat16)[..., :64],
        "misaligned base": torch.randn(2 * 4 * 300 * 64 + 1).to(torch.bfloat16)[1:].view(2, 4, 300, 64),
        "head_dim 24": torch.randn(2, 4, 300, 24).to(torch.bfloat16),
        "broadcast": torch.randn(1, 4, 300, 64).to(torch.bfloat16).expand(2, 4, 300, 64),
    }
    for name, x in refused.items():
        assert not listed._tma(plan, _flash._fwd_kernel, x.shape[-1], x), name
    listed_plan = listed.split_plan(300, 300, torch.device("cpu"), 64)  # not a band: pointer loads
    assert not listed._tma(listed_plan, _flash._fwd_kernel, 64, ok["contiguous"])


def test_views_past_int32_offsets_are_copied() -> None:
    """The kernels' offsets are int32: the heads of a fused projection over 2^20 tokens (row stride
    5 x 768) span past 2^31 elements and are made contiguous; a tensor of more elements is refused."""
    from longseq.attention.kernels.listed import _unit_last

    n = 1 << 20
    fused = torch.empty(1, n, 5 * 768, device="meta", dtype=torch.bfloat16)
    q = fused[..., :768].view(1, n, 12, 64).transpose(1, 2)  # (1, 12, n, 64), row stride 3840
    assert _unit_last(q).is_contiguous()
    small = torch.empty(1, 8, 3 * 64, device="meta")[..., :64].unflatten(-1, (1, 64)).transpose(1, 2)
    assert _unit_last(small) is small  # within int32 and unit last stride: as it is
    with pytest.raises(ValueError, match="split the batch"):
        _unit_last(torch.empty(3, 12, n, 64, device="meta"))


def test_transposed_list_counts_repeats() -> None:
    from longseq.attention.kernels.listed import Plan, Tiling

    t = Tiling.of(16)
    klist = torch.tensor([[[0, 1, 1], [2, 3, 0], [3, 3, 3]]], dtype=torch.int32)  # 3 = null (3 key tiles)
    plan = Plan(torch.arange(3, dtype=torch.int32)[None], klist, t, t, n_ktiles=3)
    start, count, items = plan.transposed()
    assert count.tolist() == [[2, 2, 1]]
    lists = [items[0, s : s + c].tolist() for s, c in zip(start[0].tolist(), count[0].tolist(), strict=True)]
    assert lists == [[0, 1], [0, 0], [1]]


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run through pytest (it sets TRITON_INTERPRET=1)"
    torch.set_num_threads(1)
    part = int(sys.argv[1])
    out = {}
    checks = {name: _check for name in CASES}
    checks |= {name: _check_drop_exact for name in DROP_EXACT}
    checks |= {name: _check_drop_permuted for name in DROP_PERMUTED}
    checks |= {name: _check_placed for name in PLACED}
    checks |= {name: _check_band_vs_list for name in BAND_VS_LIST}
    checks |= {name: _check_few_rows for name in FEW_ROWS}
    checks |= {name: _check_projected for name in PROJECTED}
    checks |= {name: _check_along_vs_apart for name in ALONG_VS_APART}
    checks |= {name: _check_buckets for name in BUCKETS}
    checks |= {name: _check_tma_vs_pointer for name in TMA_VS_POINTER}
    checks |= {name: _check_band_rows_vs_split for name in BAND_ROWS_VS_SPLIT}
    for i, case in enumerate(sorted(checks)):
        if i % 2 == part:
            try:
                t0 = time.perf_counter()
                out[case] = checks[case](case)
                out[case]["seconds"] = round(time.perf_counter() - t0, 2)
            except Exception as ex:  # reported by the test of that case
                out[case] = {"error": f"{type(ex).__name__}: {ex}"}
    print(json.dumps(out))
