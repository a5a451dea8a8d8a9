"""LSH attention with its projections, 16K tokens: the glue around the flash kernel as kernels
(`kernels.lsh_sorted`, the gpu backend now) against the previous torch glue (reproduced here: torch
gathers, `len_norm`, scatter-unsort, `where` fallback) and Hugging Face's `LSHSelfAttention`, in one run.

Each longseq variant is checked against the other first (bf16: output and input gradient within 2e-2
relative; the buckets are the same). Then each is timed forward and forward + backward, with the
host (do_bench) and GPU-only (CUDA-graph replay), and the sort's key types are timed alone. bf16,
batch 1, 12 heads, head_dim 64, 1 hash, chunk 64, 512 buckets. Table last; JSON in $OUT.
--profile prints the GPU time of each kernel of the new path instead.

    PYTHONPATH=src python benchmarks/lsh_glue.py [--seq 16384] [--hashes 1] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import LSH, attend
from longseq.attention._common import len_norm, pad_seq, real_keys
from longseq.attention.kernels.listed import cyclic_plan, listed_attention
from longseq.attention.lsh import _self_fallback, sorted_positions
from longseq.layers.projection import project

DEV = "cuda"
BF16 = torch.bfloat16
H, D = 12, 64


def merge_lse(outs: torch.Tensor, lses: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine partial softmax results along `dim` by log-sum-exp (parts that saw nothing weigh 0).

    outs (..., P, ..., d), lses of the same shape without d. Returns (out, lse) with `dim` removed.
    The weights are exp(lse - max): the largest is 1, so their sum is 0
    (nothing seen: out 0, lse -inf) or at least 1, and clamping it at 1 only touches unseen rows.
    """
    m = torch.nan_to_num(lses.detach().amax(dim, keepdim=True), neginf=0.0)
    wts = torch.exp(lses - m)
    total = wts.sum(dim, keepdim=True)
    denom = total.clamp_min(1.0)
    out = (outs * (wts / denom).unsqueeze(-1)).sum(dim)
    lse = torch.where(total.detach() > 0, m + torch.log(denom), float("-inf")).squeeze(dim)
    return out, lse


def previous_glue(q, v, pattern: LSH, padding, scale: float) -> torch.Tensor:
    """The gpu backend's LSH before `lsh_sorted` (sessions 2 to 7), for the comparison."""
    b, h, n, d = q.shape
    real = real_keys(padding, b, n, q.device)
    c, rounds = pattern.chunk_length, pattern.num_hashes
    q, v = pad_seq(q, c), pad_seq(v, c)
    real = pad_seq(real, c, dim=1, value=False)
    n_p = q.shape[2]
    slots = sorted_positions(q, pattern, real)
    sq = q.gather(2, slots[..., None].expand(-1, -1, -1, d))
    sv = v.gather(2, slots[..., None].expand(-1, -1, -1, v.shape[-1]))
    sreal = real.gather(1, slots.flatten(1)).view(b, h, rounds * n_p)
    plan = cyclic_plan(
        rounds * n_p, c, pattern.chunks_before, pattern.chunks_after, pattern.causal, True, q.device
    )
    pos = slots.to(torch.int32)
    out, lse = listed_attention(sq, len_norm(sq), sv, plan, sreal.to(torch.int8), scale, pos=pos)
    if rounds == 1:
        unsorted = out.new_empty(out.shape).scatter_(2, slots[..., None].expand_as(out), out)
        seen = lse.new_empty(lse.shape).scatter_(2, slots, lse.detach()).isfinite()
        return _self_fallback(unsorted.to(v.dtype), v, seen[..., None], real)[:, :, :n]
    flat = slots.view(b, h, rounds, n_p)
    inverse = torch.empty_like(flat).scatter_(-1, flat, torch.arange(n_p, device=q.device).expand_as(flat))
    inverse = (inverse + torch.arange(rounds, device=q.device)[:, None] * n_p).flatten(2)
    out = out.gather(2, inverse[..., None].expand(-1, -1, -1, out.shape[-1]))
    lse = lse.gather(2, inverse)
    out, total = merge_lse(out.view(b, h, rounds, n_p, -1).float(), lse.view(b, h, rounds, n_p), dim=2)
    out = _self_fallback(out.to(v.dtype), v, torch.isfinite(total)[..., None], real)
    return out[:, :, :n]


def variants(n: int, hashes: int) -> dict:
    hidden = torch.randn(1, n, H * D, device=DEV, dtype=BF16, requires_grad=True)
    wqk, wv = (torch.nn.Linear(H * D, H * D, bias=False, device=DEV, dtype=BF16) for _ in range(2))
    pattern = LSH(hashes, 512, 64, seed=0)

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(1, n, H, D).transpose(1, 2)

    def merged(out: torch.Tensor) -> torch.Tensor:
        return out.transpose(1, 2).reshape(1, n, H * D)

    def kernels():
        qk, v = (heads(t) for t in project(hidden, wqk, wv))
        return merged(attend(qk, qk, v, pattern, backend="gpu", scale=1.0))

    def previous():
        qk, v = (heads(t) for t in project(hidden, wqk, wv))
        return merged(previous_glue(qk, v, pattern, None, 1.0))

    out = {"kernels (lsh_sorted)": kernels, "torch glue (previous)": previous}
    try:
        from transformers import ReformerConfig
        from transformers.models.reformer.modeling_reformer import LSHSelfAttention
    except Exception:
        print("transformers does not import: HF skipped", flush=True)
        return {"hidden": hidden, "fns": out}
    cfg = ReformerConfig(
        hidden_size=H * D, num_attention_heads=H, attention_head_size=D, lsh_attn_chunk_length=64,
        num_hashes=hashes, num_buckets=512, is_decoder=False, lsh_attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    mod = LSHSelfAttention(cfg).to(DEV, BF16).train()
    out["hf LSHSelfAttention"] = lambda: mod(hidden)[0]
    return {"hidden": hidden, "fns": out}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def check(n: int, hashes: int) -> dict:
    v = variants(n, hashes)
    hidden, fns = v["hidden"], v["fns"]
    go = torch.randn(1, n, H * D, device=DEV, dtype=BF16)
    res = {}
    for name in ("kernels (lsh_sorted)", "torch glue (previous)"):
        out = fns[name]()
        (g,) = torch.autograd.grad(out, [hidden], go)
        res[name] = (out.detach(), g)
    a, b = res["kernels (lsh_sorted)"], res["torch glue (previous)"]
    return {"n": n, "out": rel(a[0], b[0]), "grad": rel(a[1], b[1])}


def time_all(n: int, hashes: int) -> list[dict]:
    v = variants(n, hashes)
    hidden, fns = v["hidden"], v["fns"]
    go = torch.randn(1, n, H * D, device=DEV, dtype=BF16)
    rows = []
    for name, fn in fns.items():
        for mode in ("fwd", "fwd+bwd"):

            def call(fn=fn, mode=mode):
                out = fn()
                if mode == "fwd+bwd":
                    torch.autograd.grad(out, [hidden], go)

            row = {"impl": name, "n": n, "hashes": hashes, "mode": mode}
            try:
                row["ms"] = round(do_bench(call, warmup=20, rep=80, return_mode="median"), 4)
                row["gpu_ms"] = round(do_bench_cudagraph(call, rep=40), 4)
            except Exception as ex:  # a failed capture is a result too
                row["error"] = f"{type(ex).__name__}: {str(ex)[:160]}"
                torch.cuda.synchronize()
            rows.append(row)
            print(row, flush=True)
    return rows


def time_sorts(n: int) -> list[dict]:
    """The sort alone: 16-bit bucket keys (stable) against the previous int64 bucket * n + position."""
    g = torch.Generator(device=DEV).manual_seed(0)
    buckets = torch.randint(0, 513, (1, H, 1, n), device=DEV, generator=g)
    pos = torch.arange(n, device=DEV)
    small = buckets.to(torch.int16)
    fns = {
        "argsort int64 bucket * n + pos": lambda: torch.argsort(buckets * n + pos, dim=-1),
        "sort int16 stable": lambda: torch.sort(small, dim=-1, stable=True).indices,
        "sort int32 stable": lambda: torch.sort(small.int(), dim=-1, stable=True).indices,
    }
    a = fns["argsort int64 bucket * n + pos"]()
    rows = []
    for name, fn in fns.items():
        same = bool(torch.equal(fn(), a))
        row = {"impl": name, "n": n, "same": same, "gpu_ms": round(do_bench_cudagraph(fn), 4)}
        rows.append(row)
        print(row, flush=True)
    return rows


def time_buckets(n: int) -> list[dict]:
    """The hash kernel alone, per program size, against torch's einsum alone: tokens whose bucket
    differs from `hash_buckets` (torch's einsum, then argmax)."""
    from longseq.attention.kernels import lsh_sorted
    from longseq.attention.lsh import hash_buckets, rotate

    g = torch.Generator(device=DEV).manual_seed(0)
    q = torch.randn(1, H, n, D, device=DEV, dtype=BF16, generator=g)
    pattern = LSH(1, 512, 64, seed=0)
    want = hash_buckets(q, pattern, torch.ones(1, n, dtype=torch.bool, device=DEV))
    rows = []
    for tiles in ((64, 1), (64, 4), (64, 8), (128, 2), (32, 8)):
        lsh_sorted.HASH_TILES[0] = tiles
        key = lsh_sorted.sort_keys(q, pattern, None, n)
        ms = do_bench_cudagraph(lambda: lsh_sorted.sort_keys(q, pattern, None, n))
        row = {"impl": f"hash kernel, {tiles[1]} tiles of {tiles[0]} tokens a program", "gpu_ms": ms}
        row["same"] = int((key.long() != want).sum())
        rows.append(row)
        print(row, flush=True)
    lsh_sorted.HASH_TILES[0] = (64, 1)
    ms = do_bench_cudagraph(lambda: rotate(q, pattern))
    row = {"impl": "rotate (einsum) alone", "same": 0, "gpu_ms": ms}
    rows.append(row)
    print(row, flush=True)
    return rows


def profile(n: int, hashes: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    v = variants(n, hashes)
    hidden, fn = v["hidden"], v["fns"]["kernels (lsh_sorted)"]
    go = torch.randn(1, n, H * D, device=DEV, dtype=BF16)

    def step():
        torch.autograd.grad(fn(), [hidden], go)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--hashes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.profile:
        profile(args.seq, args.hashes[0])
        return
    checks = [dict(check(3001, r), hashes=r) for r in args.hashes]
    print("checks", checks, flush=True)
    rows = [r for hashes in args.hashes for r in time_all(args.seq, hashes)]
    sorts = time_sorts(args.seq) + time_buckets(args.seq)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "lsh_glue.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "checks": checks, "rows": rows, "sorts": sorts}, f)
    print("\n| impl | hashes | mode | ms | GPU-only ms | HF / impl (GPU-only) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        key = (r["mode"], r["hashes"])
        peers = [x for x in rows if "hf" in x["impl"] and (x["mode"], x["hashes"]) == key]
        hf = peers[0] if peers else None
        ratio = f"{hf['gpu_ms'] / r['gpu_ms']:.2f}x" if hf and hf.get("gpu_ms") and r.get("gpu_ms") else ""
        print(f"| {r['impl']} | {r['hashes']} | {r['mode']} | {r.get('ms')} | {r.get('gpu_ms')} | {ratio} |")
    print("\n| sort / buckets | differing (sorts: same order) | GPU-only ms |\n|---|---|---|")
    for r in sorts:
        print(f"| {r['impl']} | {r['same']} | {r['gpu_ms']:.4f} |")


if __name__ == "__main__":
    main()
