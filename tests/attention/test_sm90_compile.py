"""Every Triton kernel the gpu backend launches compiles for the H100 (sm_90), on a machine with no GPU.

The interpreter tests (`test_gpu_kernels.py`) run the kernels' arithmetic on CPU, but Triton's
interpreter accepts code its compiler refuses (a plain Python global read inside a kernel, say).
Here the backend's calls run on CPU tensors with the launches caught: each distinct kernel
specialisation they would launch, forward and backward, goes through Triton's compiler for `cuda` /
sm_90 up to its GPU-specific IR (TTGIR: the front end and the layout passes), and nothing runs. (The
last stages, LLVM and ptxas, would take five minutes here for these kernels.)
"""

from __future__ import annotations

import os

import pytest
import torch

import longseq.attention as A
from longseq.attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend

triton = pytest.importorskip("triton")
tl = triton.language

_EPS = 1e-6  # a plain global: the interpreter reads it, the compiler refuses it


@triton.jit
def _reads_a_global(X):
    tl.store(X, tl.load(X) + _EPS)


# (pattern, seq, dtype, head_dim, global tokens, padded, dropout, queries (Dense: a few rows))
CALLS = {
    "window_one_global_bf16": (SlidingWindow(128), 1024, torch.bfloat16, 64, 1, False, 0.0, None),
    "window_many_global_fp16_d32": (SlidingWindow(128), 1000, torch.float16, 32, 40, True, 0.0, None),
    "window_dilated_causal_fp32": (
        SlidingWindow(64, dilation=2, causal=True), 900, torch.float32, 64, 2, True, 0.0, None
    ),
    "window_keys_only_dropout": (
        SlidingWindow(128, global_rows=False), 1000, torch.bfloat16, 64, 3, False, 0.1, None
    ),
    "window_d128_bf16_tma": (SlidingWindow(256), 700, torch.bfloat16, 128, 2, True, 0.0, None),
    "window_rows_apart_past_16k": (SlidingWindow(256), 17000, torch.bfloat16, 64, 1, False, 0.0, None),
    "block_sparse_d128_dropout": (BlockSparse(64, 3, seed=0), 2048, torch.bfloat16, 128, 0, True, 0.1, None),
    "local_chunks_dropout": (LocalChunks(64), 1000, torch.bfloat16, 64, 0, True, 0.1, None),
    "lsh_two_rounds_padded": (LSH(2, 16, 64, seed=0), 1000, torch.bfloat16, 64, 0, True, 0.1, None),
    "lsh_factorised_fp32": (LSH(1, (4, 8), 32, seed=1), 300, torch.float32, 64, 0, False, 0.0, None),
    "lsh_fp16_d128_many_buckets": (LSH(1, 1024, 64, seed=2), 1000, torch.float16, 128, 0, True, 0.0, None),
    "few_rows_dense": (Dense(), 2000, torch.bfloat16, 64, 0, True, 0.0, 3),
}  # fmt: skip


@pytest.fixture(scope="module")
def caught() -> dict[str, list[tuple]]:
    """The launches each call makes, forward and backward, by call name (nothing runs)."""
    from longseq.attention.kernels import listed, lsh_sorted

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the compile test needs Triton's compiler, not its interpreter")
    got: dict[str, list[tuple]] = {}
    current: list[tuple] = []

    def catch(fn, grid, ptrs, scalars, consts, descs=()) -> None:
        current.append((fn, tuple(ptrs), tuple(scalars), dict(consts.kwargs), tuple(descs)))

    saved = listed.launch, lsh_sorted.launch, A._gpu_available, listed._pdl
    listed.launch = lsh_sorted.launch = catch
    A._gpu_available = lambda q: True
    listed._pdl = lambda x: True  # (sm_90: the band merge is a programmatic dependent launch)
    try:
        for name, (pattern, n, dtype, d, glob, padded, dropout, rows) in CALLS.items():
            current = got[name] = []
            gen = torch.Generator().manual_seed(0)
            q = torch.randn(1, 2, rows or n, d, generator=gen).to(dtype).requires_grad_(True)
            k, v = (torch.randn(1, 2, n, d, generator=gen).to(dtype).requires_grad_(True) for _ in range(2))
            k = q if isinstance(pattern, LSH) else k
            padding = (torch.arange(n) < n - 5)[None] if padded else None
            gm = None
            if glob:
                gm = torch.zeros(1, n, dtype=torch.bool)
                gm[:, torch.arange(0, n, 7)[:glob]] = True
            kw = dict(padding_mask=padding, global_mask=gm, dropout=dropout)
            out = attend(q, k, v, pattern, backend="gpu", **kw)
            ins = [q, v] if k is q else [q, k, v]
            torch.autograd.grad(out, ins, torch.ones_like(out))
    finally:
        listed.launch, lsh_sorted.launch, A._gpu_available, listed._pdl = saved
    return got


def _to_ttgir(src, opts: dict) -> str:
    """src through Triton's compiler for sm_90 up to TTGIR (as `triton.compile` runs its stages)."""
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    options = backend.parse_options(dict(opts, **src.parse_options()))
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    module = src.make_ir(target, options, codegen, backend.get_module_map(), context)
    stages: dict = {}
    backend.add_stages(stages, options, src.language)
    metadata = {"hash": "test", "target": target, **options.__dict__}
    for ext in ("ttir", "ttgir"):
        module = stages[ext](module, metadata)
    return str(module)


def test_the_compile_check_catches_what_the_interpreter_accepts() -> None:
    from triton.compiler import ASTSource

    with pytest.raises(Exception, match="global variable"):
        _to_ttgir(ASTSource(fn=_reads_a_global, signature={"X": "*fp32"}, constexprs={}), {})


@pytest.mark.parametrize("name", sorted(CALLS))
def test_kernels_compile_for_sm90(caught: dict, name: str) -> None:
    from triton.compiler import ASTSource

    from longseq.attention.kernels.launch import signature, split_options

    launches = caught[name]
    assert launches, "the call launched no kernel"
    names = set()
    for fn, ptrs, scalars, kwargs, descs in launches:
        kwargs, opts = split_options(kwargs)  # (copies: the fixture's dicts are shared by the tests)
        src = ASTSource(fn=fn, signature=signature(fn, ptrs, scalars, descs), constexprs=kwargs)
        assert "ttg." in _to_ttgir(src, opts), fn.__name__  # GPU layouts assigned
        names.add(fn.__name__)
    assert {"_fwd_kernel", "_bwd_dq_kernel", "_bwd_dkdv_kernel"} <= names, names  # forward and backward
    if isinstance(CALLS[name][0], LSH):
        assert {"_hash_kernel", "_gather_kernel", "_unsort_kernel", "_unsort_bwd_kernel"} <= names, names


@pytest.mark.parametrize(
    ("name", "five"), [("window_one_global_bf16", True), ("window_many_global_fp16_d32", False)]
)
def test_window_forward_resources_sm90(caught: dict, name: str, five: bool) -> None:
    """The window forward compiled in full (ptxas): at head_dim 64 with every key valid the launch caps
    it at 96 registers (`listed.TMA_LAUNCH_KALL_D64`) and it must fit there with no spill and with
    shared memory for five programs an SM (228 KB, 1 KB of it reserved a program); with padding
    (the d = 32 call) there is no cap and no spill either."""
    from longseq.attention.kernels.launch import compile_sm90

    (fwd,) = [x for x in caught[name] if x[0].__name__ == "_fwd_kernel"]
    fn, ptrs, scalars, kwargs, descs = fwd
    assert kwargs["TMA"] and kwargs["KALL"] == five
    r = compile_sm90(fn, ptrs, scalars, kwargs, descs)
    assert r["stack"] == 0, r["stack"]
    if five:
        assert r.get("maxnreg") == 96 and r["regs"] <= 96, r["regs"]
        assert 5 * (r["smem"] + 1024) <= 228 * 1024, r["smem"]
    else:
        assert "maxnreg" not in r
