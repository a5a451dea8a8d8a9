"""Attention alone on one GPU: longseq's `gpu` backend vs FlexAttention vs dense SDPA vs HF Reformer.

Checks before it times: at awkward lengths with padding, the gpu backend's error against the fp32
reference (forward and gradients, relative Frobenius norm) must be at most twice the error of
PyTorch's own bf16 math under the same mask (longseq's torch backend in bf16). Then bf16, batch 1,
12 heads, head_dim 64: forward and forward+backward, median ms (triton.testing.do_bench, host
included) and peak MiB, and the GPU-only time of the same call captured in a CUDA graph and
replayed (triton.testing.do_bench_cudagraph; "not capturable" where a peer reads device values on
the host). Prints a table last; writes JSON to $OUT/attention.json.

    PYTHONPATH=src python benchmarks/attention.py [--quick] [--check-only | --timing-only | --profile]
        [--only window,bigbird,reformer,million]   (with --check-only: the checks whose names start so)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from longseq.attention import LSH, BlockSparse, LocalChunks, SlidingWindow, attend
from longseq.layers.projection import project

DEV = "cuda"
H, D = 12, 64
BF16 = torch.bfloat16
ROWS: list[dict] = []
CHECKS: list[dict] = []


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


# ---------------------------------------------------------------------------------------------------
# correctness


CHECK_ONLY: set[str] | None = None  # --check-only --only lsh,bigbird: the checks whose names start so


def skipped(name: str) -> bool:
    return CHECK_ONLY is not None and not any(name.startswith(p) for p in CHECK_ONLY)


def check(name, pattern, n, b=2, h=H, d=D, dtype=BF16, glob=False, pad=(37, 300)):
    if skipped(name):
        return
    gen = torch.Generator(device=DEV).manual_seed(n)
    q, k, v = (torch.randn(b, h, n, d, device=DEV, generator=gen, dtype=dtype) for _ in range(3))
    shared = isinstance(pattern, LSH)
    if shared:
        k = q
    padding = torch.arange(n, device=DEV)[None] < (n - torch.tensor(pad[:b], device=DEV))[:, None]
    gm = None
    if glob:
        gm = torch.zeros(b, n, dtype=torch.bool, device=DEV)
        gm[:, [0, n // 2] if glob is True else torch.arange(0, n, 7)[:glob].tolist()] = True
        gm[0, 1] = True  # rows with different numbers of global tokens
    ins = [q, v] if shared else [q, k, v]
    go = torch.randn(b, h, n, d, device=DEV, generator=gen, dtype=dtype)

    def run(backend, tensors):
        ts = [t.detach().clone().requires_grad_(True) for t in tensors]
        qq, vv = ts[0], ts[-1]
        kk = qq if shared else ts[1]
        out = attend(qq, kk, vv, pattern, padding_mask=padding, global_mask=gm, backend=backend)
        grads = torch.autograd.grad(out, ts, go.to(out.dtype))
        return [out, *grads]

    keep = shared or dtype == torch.float32  # LSH hashes in the input dtype: the reference keeps it
    ref = run("reference", ins if keep else [t.float() for t in ins])
    got = run("gpu", ins)
    # the second call goes through the lean launcher: the same output bits, and the same gradients
    # up to the order of the fp32 atomics that sum the global keys' dK / dV
    again = run("gpu", ins)
    lean_ok = torch.equal(again[0], got[0]) and all(
        rel(a, g) < 1e-3 for a, g in zip(again[1:], got[1:], strict=True)
    )
    with torch.no_grad():  # inference skips the autograd node: the same output bits
        kk = ins[0] if shared else ins[1]
        plain = attend(ins[0], kk, ins[-1], pattern, padding_mask=padding, global_mask=gm, backend="gpu")
    lean_ok = lean_ok and torch.equal(plain, got[0])
    base = run("torch", ins)
    errs = [rel(g, r) for g, r in zip(got, ref, strict=True)]
    base_errs = [rel(t, r) for t, r in zip(base, ref, strict=True)]
    nan = any(bool(t.isnan().any()) for t in got)
    limit = [2 * e + (1e-5 if dtype == torch.float32 else 1e-4) for e in base_errs]
    ok = lean_ok and not nan and all(e <= lim for e, lim in zip(errs, limit, strict=True))
    row = dict(name=name, n=n, dtype=str(dtype).split(".")[-1], d=d, ok=ok, nan=nan, lean_ok=lean_ok,
               gpu_err=[round(e, 6) for e in errs], torch_err=[round(e, 6) for e in base_errs])  # fmt: skip
    CHECKS.append(row)
    print("check", row, flush=True)


def check_dropout(name, pattern, n, b=2, h=H, d=D, glob=False, p=0.1, pad=(37, 300)):
    """Attention dropout in the kernels against the dense reference given the kernels' own keep mask
    (positions are the kernels' rows for these patterns): fp32 to 1e-4, and bf16 within twice the
    error of dense bf16 math under the same mask and keep mask."""
    if skipped(name):
        return
    from longseq.attention.kernels.dropout import keep_mask, new_seed
    from longseq.attention.reference import reference

    gen = torch.Generator(device=DEV).manual_seed(n)
    base = [torch.randn(b, h, n, d, device=DEV, generator=gen) for _ in range(3)]
    padding = torch.arange(n, device=DEV)[None] < (n - torch.tensor(pad[:b], device=DEV))[:, None]
    gm = None
    if glob:
        gm = torch.zeros(b, n, dtype=torch.bool, device=DEV)
        gm[:, [0, n // 2]] = True
    go = torch.randn(b, h, n, d, device=DEV, generator=gen)
    torch.manual_seed(11)
    seed = new_seed(torch.device(DEV))
    z = (torch.arange(b, device=DEV)[:, None] * h + torch.arange(h, device=DEV))[:, :, None, None]
    idx = torch.arange(n, device=DEV)
    keep = keep_mask(seed, z, idx[:, None], idx[None, :], p)

    def run(fn, dtype):
        ts = [t.to(dtype).requires_grad_(True) for t in base]
        out = fn(*ts)
        return [out, *torch.autograd.grad(out, ts, go.to(out.dtype))]

    def gpu(q, k, v):
        torch.manual_seed(11)  # the same seed words as `keep`
        return attend(q, k, v, pattern, padding_mask=padding, global_mask=gm, backend="gpu", dropout=p)

    def ref(q, k, v):
        return reference(q, k, v, pattern, padding_mask=padding, global_mask=gm, dropout=p, keep=keep)

    def dense_bf16(q, k, v):  # PyTorch's bf16 math under the same mask: scores, softmax, dropout in bf16
        from longseq.attention._common import masked_softmax

        counts = pattern.counts(n).to(DEV).expand(b, h, n, n)
        if gm is not None:
            counts = torch.where(gm[:, None, None, :] | gm[:, None, :, None], 1, counts)
        counts = counts * padding[:, None, None, :]
        scores = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5
        probs, _ = masked_softmax(scores, counts > 0)
        out = torch.matmul((probs * keep / (1 - p)).to(v.dtype), v)
        return out * padding[:, None, :, None]

    want = run(ref, torch.float32)
    rows = {}
    for dtype in (torch.float32, BF16):
        got = run(gpu, dtype)
        errs = [rel(g, w) for g, w in zip(got, want, strict=True)]
        if dtype == torch.float32:
            ok = all(e <= 1e-4 for e in errs)
            base_errs = None
        else:
            base_errs = [rel(g, w) for g, w in zip(run(dense_bf16, BF16), want, strict=True)]
            ok = all(e <= 2 * be + 1e-4 for e, be in zip(errs, base_errs, strict=True))
        ok = ok and not any(bool(t.isnan().any()) for t in got)
        rows[str(dtype)] = ok
        row = dict(name=f"{name} dropout {p}", n=n, dtype=str(dtype).split(".")[-1], d=d, ok=ok, nan=False,
                   lean_ok=True, gpu_err=[round(e, 6) for e in errs],
                   torch_err=None if base_errs is None else [round(e, 6) for e in base_errs])  # fmt: skip
        CHECKS.append(row)
        print("check", row, flush=True)


def check_few_rows(name, n, rows=2, b=2, h=H, d=D, dtype=BF16, pad=None):
    """A few query rows over n keys (the Longformer's global rows, `attend(..., Dense())`): through
    torch's flash kernel where `flash_rows_apply` holds (no padding, 16-bit, n <= its bound), else
    the few-rows kernels; against the fp32 reference, within twice the torch backend's error."""
    if skipped(name):
        return
    from longseq.attention import Dense
    from longseq.attention.kernels.patterns_gpu import flash_rows_apply

    gen = torch.Generator(device=DEV).manual_seed(n)
    q = torch.randn(b, h, rows, d, device=DEV, generator=gen, dtype=dtype)
    k, v = (torch.randn(b, h, n, d, device=DEV, generator=gen, dtype=dtype) for _ in range(2))
    padding = None
    if pad is not None:
        padding = torch.arange(n, device=DEV)[None] < (n - torch.tensor(pad[:b], device=DEV))[:, None]
    go = torch.randn(b, h, rows, d, device=DEV, generator=gen, dtype=dtype)

    def run(backend, tensors):
        ts = [t.detach().clone().requires_grad_(True) for t in tensors]
        out = attend(*ts, Dense(), padding_mask=padding, backend=backend)
        return [out, *torch.autograd.grad(out, ts, go.to(out.dtype))]

    ref = run("reference", [t.float() for t in (q, k, v)])
    got, base = run("gpu", [q, k, v]), run("torch", [q, k, v])
    errs = [rel(g, r) for g, r in zip(got, ref, strict=True)]
    base_errs = [rel(t, r) for t, r in zip(base, ref, strict=True)]
    nan = any(bool(t.isnan().any()) for t in got)
    ok = not nan and all(e <= 2 * be + 1e-4 for e, be in zip(errs, base_errs, strict=True))
    row = dict(name=name, n=n, dtype=str(dtype).split(".")[-1], d=d, ok=ok, nan=nan, lean_ok=True,
               flash=flash_rows_apply(q, k, v, padding, 0.0),
               gpu_err=[round(e, 6) for e in errs], torch_err=[round(e, 6) for e in base_errs])  # fmt: skip
    CHECKS.append(row)
    print("check", row, flush=True)


def correctness() -> None:
    check_few_rows("few rows 2 over 3001 keys (flash)", 3001)
    check_few_rows("few rows 2 over 16384 keys (flash)", 16384, b=1)
    check_few_rows("few rows 2 over 16385 keys (kernels)", 16385, b=1)
    check_few_rows("few rows 2 over 3001 padded keys (kernels)", 3001, pad=(37, 300))
    check_few_rows(
        "few rows 3 over 2000 keys d128 fp16 (flash)", 2000, rows=3, h=4, d=128, dtype=torch.float16
    )
    check_dropout("window512+2 global", SlidingWindow(512), 1337, glob=True)
    check_dropout("local64", LocalChunks(64), 1000)
    check_dropout("bigbird64 r3", BlockSparse(64, 3, seed=0), 1100)
    check("window512+2 global", SlidingWindow(512), 1337, glob=True)
    check("window64 dilated causal +global", SlidingWindow(64, dilation=2, causal=True), 1001, glob=True)
    check("window256+100 global", SlidingWindow(256), 2000, glob=100)
    check("window512 causal +2 global", SlidingWindow(512, causal=True), 1500, glob=True)
    check("window256 keys-only global", SlidingWindow(256, global_rows=False), 1337, glob=True)
    check("bigbird64 r3 fp32", BlockSparse(64, 3, seed=0), 1100, h=4, dtype=torch.float32)  # then bf16
    check("bigbird64 r3", BlockSparse(64, 3, seed=0), 1100)
    check("local64", LocalChunks(64), 1000)
    check("lsh 1 hash c64", LSH(1, 16, 64, seed=0), 1000)
    check("lsh 2 hash c64", LSH(2, 16, 64, seed=1), 777)
    check("window128 d32 fp16", SlidingWindow(128), 700, d=32, h=4, dtype=torch.float16, glob=True)
    check("bigbird64 d128 fp32", BlockSparse(64, 2, seed=3), 1000, d=128, h=2, dtype=torch.float32)
    check("local64 d128 bf16", LocalChunks(64, 1, 1), 900, d=128, h=4)
    check("window256 d128 bf16 +global", SlidingWindow(256), 1000, d=128, h=4, glob=True)


# ---------------------------------------------------------------------------------------------------
# timing


def bench(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=20, rep=60, return_mode="median")


def record(name: str, pattern: str, n: int, mode: str, fn) -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        ms = bench(fn)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        row = dict(impl=name, pattern=pattern, n=n, mode=mode, ms=round(ms, 4), peak_mib=round(peak, 1))
    except Exception as ex:  # an OOM or a failed compile is a result too
        row = dict(impl=name, pattern=pattern, n=n, mode=mode, ms=None, peak_mib=None,
                   error=f"{type(ex).__name__}: {str(ex)[:160]}")  # fmt: skip
    row["gpu_ms"] = None
    if row["ms"] is not None and n <= 65536:  # GPU-only: the call captured in a CUDA graph, replayed
        try:
            from triton.testing import do_bench_cudagraph

            row["gpu_ms"] = round(do_bench_cudagraph(fn, rep=40), 4)
        except Exception as ex:  # a call that cannot be captured (host reads) has no GPU-only time
            row["graph_error"] = f"{type(ex).__name__}: {str(ex)[:120]}"
            torch.cuda.synchronize()
    ROWS.append(row)
    print(row, flush=True)


def qkv(n: int, grad: bool = True) -> list[torch.Tensor]:
    gen = torch.Generator(device=DEV).manual_seed(0)
    return [
        torch.randn(1, H, n, D, device=DEV, dtype=BF16, generator=gen).requires_grad_(grad) for _ in range(3)
    ]


def time_pair(impl: str, pattern: str, n: int, fwd, fwd_only: bool = False) -> None:
    """fwd() -> (out, inputs). Times the forward, then forward + backward."""
    record(impl, pattern, n, "fwd", lambda: fwd()[0])
    if fwd_only:
        return
    out, ins = fwd()
    go = torch.randn_like(out)
    del out
    record(impl, pattern, n, "fwd+bwd", lambda: torch.autograd.grad(fwd()[0], ins, go))


def flex_masks(n: int, kind: str, pattern: BlockSparse | None = None):
    from torch.nn.attention.flex_attention import create_block_mask

    if kind == "window":

        def mask(b, h, q, kv):
            return ((q - kv).abs() <= 256) | (q == 0) | (kv == 0)

    else:
        nb = -(-n // 64)
        rnd = pattern.random_blocks(nb, device=DEV)  # (nb, 3), -1 on the global rows

        def mask(b, h, q, kv):
            qb, kb = q // 64, kv // 64
            win = (qb - kb).abs() <= 1
            glob = (qb == 0) | (kb == 0) | (qb == nb - 1) | (kb == nb - 1)
            r = (rnd[qb, 0] == kb) | (rnd[qb, 1] == kb) | (rnd[qb, 2] == kb)
            return win | glob | r

    return create_block_mask(mask, None, None, n, n, device=DEV)


_FLEX = None


def flex():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def time_window(n: int) -> None:
    window = SlidingWindow(512)
    q, k, v = qkv(n)
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    label = "window512+1 global"
    time_pair(
        "longseq gpu", label, n, lambda: (attend(q, k, v, window, global_mask=gm, backend="gpu"), [q, k, v])
    )
    bm = flex_masks(n, "window")
    time_pair("flex", label, n, lambda: (flex()(q, k, v, block_mask=bm), [q, k, v]))
    time_pair("sdpa dense", label, n, lambda: (F.scaled_dot_product_attention(q, k, v), [q, k, v]))
    # training with attention dropout 0.1 (HF's default): in the kernels (Flex has no dropout)
    label = "window512+1 global, dropout 0.1"
    time_pair(
        "longseq gpu",
        label,
        n,
        lambda: (attend(q, k, v, window, global_mask=gm, backend="gpu", dropout=0.1), [q, k, v]),
    )
    dense = lambda: (F.scaled_dot_product_attention(q, k, v, dropout_p=0.1), [q, k, v])  # noqa: E731
    time_pair("sdpa dense", label, n, dense)


def time_bigbird(n: int) -> None:
    bigbird = BlockSparse(64, 3, seed=0)
    q, k, v = qkv(n)
    label = "bigbird64 r3"
    time_pair("longseq gpu", label, n, lambda: (attend(q, k, v, bigbird, backend="gpu"), [q, k, v]))
    bm = flex_masks(n, "bigbird", bigbird)
    time_pair("flex", label, n, lambda: (flex()(q, k, v, block_mask=bm), [q, k, v]))
    time_pair("sdpa dense", label, n, lambda: (F.scaled_dot_product_attention(q, k, v), [q, k, v]))


def time_million() -> None:
    n = 1 << 20
    q, k, v = qkv(n, grad=False)
    window = SlidingWindow(512)
    with torch.no_grad():
        time_pair("longseq gpu", "window512", n, lambda: (attend(q, k, v, window, backend="gpu"), []), True)


def timing(quick: bool, only: set[str] | None = None) -> None:
    """only: a subset of {window, bigbird, reformer, million} (--only a,b); all by default."""
    if only is None or "window" in only:
        for n in (16384,) if quick else (16384, 65536):
            time_window(n)
    if only is None or "bigbird" in only:
        for n in (4096, 16384) if quick else (4096, 16384, 65536):
            time_bigbird(n)
    if only is None or "reformer" in only:
        reformer(16384)
    if only is None or "million" in only:
        time_million()


def reformer_cases(n: int) -> list[tuple[str, str, object]]:
    """(impl, label, fwd) for the local and LSH layers, projections included on both sides: longseq's,
    then HF's modules (when transformers imports). fwd() -> (out, inputs)."""
    hidden = torch.randn(1, n, H * D, device=DEV, dtype=BF16, requires_grad=True)
    # the projections as longseq's Reformer layers run them: one matrix product (`project`)
    proj, projk, projv = (torch.nn.Linear(H * D, H * D, bias=False, device=DEV, dtype=BF16) for _ in range(3))

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(1, n, H, D).transpose(1, 2)

    local = LocalChunks(64)
    lsh = LSH(1, 512, 64, seed=0)

    def ours_local():
        q, k, v = (heads(t) for t in project(hidden, proj, projk, projv))
        out = attend(q, k, v, local, backend="gpu")
        return out.transpose(1, 2).reshape(1, n, H * D), [hidden]

    def ours_lsh():
        qk, v = (heads(t) for t in project(hidden, proj, projv))
        out = attend(qk, qk, v, lsh, backend="gpu", scale=1.0)
        return out.transpose(1, 2).reshape(1, n, H * D), [hidden]

    cases = [
        ("longseq gpu (+proj)", "reformer local64", ours_local),
        ("longseq gpu (+proj)", "reformer lsh c64 1 hash", ours_lsh),
    ]
    try:
        from transformers import ReformerConfig
        from transformers.models.reformer.modeling_reformer import LocalSelfAttention, LSHSelfAttention
    except Exception:
        print("transformers does not import: HF peers skipped", flush=True)
        return cases
    cfg = ReformerConfig(
        hidden_size=H * D, num_attention_heads=H, attention_head_size=D, local_attn_chunk_length=64,
        lsh_attn_chunk_length=64, num_hashes=1, num_buckets=512, is_decoder=False,
        local_attention_probs_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    for label, cls in (
        ("reformer local64", LocalSelfAttention),
        ("reformer lsh c64 1 hash", LSHSelfAttention),
    ):
        mod = cls(cfg).to(DEV, BF16).train()
        cases.append(("hf module", label, lambda mod=mod: (mod(hidden)[0], [hidden])))
    return cases


def reformer(n: int) -> None:
    """Local and LSH attention layers (projections included on both sides) vs HF's modules."""
    for impl, label, fwd in reformer_cases(n):
        try:
            time_pair(impl, label, n, fwd)
        except Exception:
            traceback.print_exc()


# ---------------------------------------------------------------------------------------------------


def table() -> str:
    lines = [
        "| pattern | n | mode | impl | ms | peak MiB | impl / longseq | GPU-only ms | GPU-only ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ours = {
        (r["pattern"].replace("reformer ", ""), r["n"], r["mode"]): r for r in ROWS if "longseq" in r["impl"]
    }

    def ratio(r: dict, mine: dict | None, field: str) -> str:
        if mine is None or "longseq" in r["impl"] or not (r.get(field) and mine.get(field)):
            return ""
        return f"{r[field] / mine[field]:.2f}x"

    for r in ROWS:
        mine = ours.get((r["pattern"].replace("reformer ", ""), r["n"], r["mode"]))
        ms = r["ms"] if r["ms"] is not None else r.get("error", "")[:60]
        gpu = r["gpu_ms"] if r.get("gpu_ms") is not None else ("not capturable" if "graph_error" in r else "")
        lines.append(
            f"| {r['pattern']} | {r['n']} | {r['mode']} | {r['impl']} | {ms} | {r['peak_mib']} | "
            f"{ratio(r, mine, 'ms')} | {gpu} | {ratio(r, mine, 'gpu_ms')} |"
        )
    return "\n".join(lines)


def profile() -> None:
    """Where the time goes: host time per call, top CPU and CUDA ops."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    def cases():
        out = []
        for n in (16384,):
            q, k, v = qkv(n)
            gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
            gm[:, 0] = True
            w = SlidingWindow(512)
            out.append(
                (
                    f"window {n} +g fwd",
                    lambda q=q, k=k, v=v, gm=gm, w=w: attend(q, k, v, w, global_mask=gm, backend="gpu"),
                )
            )
            out.append((f"window {n} fwd", lambda q=q, k=k, v=v, w=w: attend(q, k, v, w, backend="gpu")))
            go = torch.randn_like(q)
            out.append(
                (
                    f"window {n} +g fwd+bwd",
                    lambda q=q, k=k, v=v, gm=gm, w=w, go=go: torch.autograd.grad(
                        attend(q, k, v, w, global_mask=gm, backend="gpu"), [q, k, v], go
                    ),
                )
            )
        q, k, v = qkv(4096)
        bb = BlockSparse(64, 3, seed=0)
        out.append(("bigbird 4096 fwd", lambda: attend(q, k, v, bb, backend="gpu")))
        for impl, label, fwd in reformer_cases(16384):
            out.append((f"{impl} {label} 16384 fwd+bwd", lambda fwd=fwd: fwd_bwd(fwd)))
        return out

    def fwd_bwd(fwd) -> None:
        out, ins = fwd()
        torch.autograd.grad(out, ins, torch.ones_like(out))

    for name, fn in cases():
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            fn()
        host = (time.perf_counter() - t) / 20 * 1e3
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / 20 * 1e3
        print(f"PROFILE {name}: host {host:.3f} ms/call, wall {wall:.3f} ms/call", flush=True)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10), flush=True)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8), flush=True)
    # tile variants of the window kernels: benchmarks/window_kernel.py


def main() -> None:
    if "--profile" in sys.argv:
        profile()
        return
    quick = "--quick" in sys.argv
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    t0 = time.time()
    only = None
    if "--only" in sys.argv:
        only = set(sys.argv[sys.argv.index("--only") + 1].split(","))
    if "--timing-only" not in sys.argv:  # the checks take about 4 minutes on an H200
        global CHECK_ONLY
        CHECK_ONLY = only if "--check-only" in sys.argv else None
        correctness()
        print(f"correctness done in {time.time() - t0:.0f} s", flush=True)
    if "--check-only" not in sys.argv:
        timing(quick, only)
    out = os.environ.get("OUT", "/tmp")
    with open(os.path.join(out, "attention.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "checks": CHECKS, "rows": ROWS}, f, indent=1)
    print("\nchecks:")
    for c in CHECKS:
        print(f"  {'PASS' if c['ok'] else 'FAIL'} {c['name']} n={c['n']} {c['dtype']} d={c['d']}"
              f"{' (flash taken)' if c.get('flash') else ''}: "
              f"gpu {c['gpu_err']} vs torch {c['torch_err']}")  # fmt: skip
    print(f"\ntotal {time.time() - t0:.0f} s\n" + table())
    assert math.isfinite(t0)


if __name__ == "__main__":
    main()
