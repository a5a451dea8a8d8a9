"""LSH attention on the GPU: the sort's glue as kernels around the listed-blocks flash kernel.

The computation is `attention.lsh.lsh_attention`'s (and Hugging Face's); only the glue changes:
- `_hash_kernel`: the random rotation of each token (rounded to the input's dtype, as torch's matrix
  product rounds it) and the argmax over [rotated, -rotated] of each bucket factor, summed into one
  bucket id per token and round, padding in bucket `total_buckets`, written as the sort's
  small-integer key. The rotated vectors are never written out.
- a stable sort of the keys (torch; 16-bit keys sort in two radix passes).
- `_gather_kernel`: q and v read through the sort's permutation into hashed order, the keys
  normalised (`len_norm`) on the way, the inverse permutation and the keys' validity written out.
- `_unsort_kernel`: each token's rows of every round read back through the inverse permutation and
  combined by log-sum-exp; a token that saw nothing in any round takes its own value, padding 0.
  The output is written sequence-major (batch, seq, heads, head_dim), so merging heads is a view.
Backward runs the same steps in reverse in one autograd node: the unsort's gradient scattered
to hashed order (and the rounds' LSE gradients), the flash kernel's backward, and a gather back to
token order that sums the rounds, applies the key normalisation's Jacobian, and adds the fallback
tokens' value gradient. Nothing is scattered by atomics, and q, v that are the heads of one
`project` output get their gradient in one buffer.

Layouts: q, v (batch, heads, seq, head_dim) with any strides and unit stride on head_dim; hashed
order tensors (batch, heads, rounds * seq_p, head_dim) contiguous, seq_p = seq padded to a chunk.
"""

# ruff: noqa: SIM108  (if / else on constexpr flags reads best in Triton kernels)
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._common import fused_base
from ..lsh import rotations
from ..patterns import LSH
from .dropout import new_seed
from .launch import _INTERPRET, Consts, launch
from .listed import _Call, _ListedAttention, _unit_last, _views, cyclic_plan

EPS = tl.constexpr(1e-6)  # len_norm's


@triton.jit
def _hash_kernel(
    Q, ROT, KEY, REAL,
    N, NP, START, HALF, PRODUCT, PAD, R, H, sqb, sqh, sqn, s_oh, s_od, s_or, s_ok, s_real,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, ITERS: tl.constexpr,
    BLOCK_H: tl.constexpr, CHUNKS: tl.constexpr, FIRST: tl.constexpr, LAST: tl.constexpr,
    HAS_REAL: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """KEY[z, t] (+)= PRODUCT * argmax over [x, -x], x = q[t] @ ROT[h, :, r, START:START + HALF]
    rounded to q's dtype (as torch's matrix product rounds it), for z = (b * H + h) * R + r and
    ITERS tiles of BLOCK_T tokens t < NP (rows past N are padding); the columns in CHUNKS chunks of
    BLOCK_H. LAST: padding -> PAD."""
    pid = tl.program_id(0)
    z = tl.program_id(1)
    b = z // (R * H)
    h = z // R % H
    r = z % R
    c = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    dm = offs_d < D
    at_rot = ROT + h * s_oh + r * s_or + offs_d[:, None] * s_od + (START + c[None, :]) * s_ok
    if CHUNKS == 1:  # (BLOCK_D, BLOCK_H), loaded once for ITERS tiles
        rot = tl.load(at_rot, dm[:, None] & (c < HALF)[None, :], 0.0)
    for i in range(ITERS):
        t = (pid * ITERS + i) * BLOCK_T + tl.arange(0, BLOCK_T)
        tm = t < N
        at = Q + b * sqb + h * sqh + t[:, None] * sqn + offs_d[None, :]
        q = tl.load(at, tm[:, None] & dm[None, :], 0.0)
        best = tl.full([BLOCK_T], -1.0, tl.float32)
        idx = tl.zeros([BLOCK_T], tl.int32)
        for j in range(CHUNKS):
            cols = j * BLOCK_H + c
            cm = cols < HALF
            if CHUNKS > 1:
                rot = tl.load(at_rot + j * BLOCK_H * s_ok, dm[:, None] & cm[None, :], 0.0)
            if UPCAST:  # the CPU interpreter's bf16: its dot is wrong and its cast truncates (round to even)
                x = tl.dot(q.to(tl.float32), rot.to(tl.float32), input_precision="ieee")
                bits = x.to(tl.uint32, bitcast=True)
                bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
                x = bits.to(tl.float32, bitcast=True)
            else:
                x = tl.dot(q, rot, input_precision=PREC).to(Q.dtype.element_ty).to(tl.float32)
            # argmax over [x, -x], the first index on ties: the largest |x|, and among those the lowest
            # rank, rank = column for x >= 0 (the first half), HALF + column for x < 0
            mag = tl.where(cm[None, :], tl.abs(x), -1.0)
            top = tl.max(mag, axis=1)
            rank = tl.where(x < 0, HALF + cols[None, :], cols[None, :])
            got = tl.min(tl.where(mag == top[:, None], rank, 2 * HALF), axis=1)
            idx = tl.where(top > best, got, tl.where(top == best, tl.minimum(idx, got), idx))
            best = tl.maximum(best, top)
        out = t < NP
        if FIRST:
            key = PRODUCT * idx
        else:
            key = tl.load(KEY + z * NP + t, out, 0).to(tl.int32) + PRODUCT * idx
        if LAST:
            real = tm
            if HAS_REAL:
                real = real & (tl.load(REAL + b * s_real + t, tm, 0) != 0)
            key = tl.where(real, key, PAD)
        tl.store(KEY + z * NP + t, key.to(KEY.dtype.element_ty), out)


@triton.jit
def _gather_kernel(
    Q, V, SLOTS, REAL, SQ, SK, SV, INV, SREAL,
    SIGN, N, NP, NS, H, sqb, sqh, sqn, svb, svh, svn, s_real,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, HAS_REAL: tl.constexpr,
):  # fmt: skip
    """Hashed-order rows s of (b, h): SQ = q[p], SK = len_norm(q[p]), SV = v[p], SREAL = p is a
    real token, INV[r * NP + p] = s, for p = SLOTS[s] and r = s // NP (zeros for p >= N)."""
    pid = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    s = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    sm = s < NS
    p = tl.load(SLOTS + z * NS + s, sm, 0)
    tl.store(INV + z * NS + (s // NP) * NP + p, s, sm)
    pm = sm & (p < N)
    offs_d = tl.arange(0, BLOCK_D)
    mask = pm[:, None] & (offs_d < D)[None, :]
    x = tl.load(Q + b * sqb + h * sqh + p[:, None] * sqn + offs_d[None, :], mask, 0.0).to(tl.float32)
    y = tl.load(V + b * svb + h * svh + p[:, None] * svn + offs_d[None, :], mask, 0.0)
    rs = tl.rsqrt(tl.sum(x * x, axis=1) / D + EPS) * SIGN
    out = s[:, None] * D + offs_d[None, :] + z * NS * D
    dm = sm[:, None] & (offs_d < D)[None, :]
    tl.store(SQ + out, x.to(SQ.dtype.element_ty), dm)
    tl.store(SK + out, (x * rs[:, None]).to(SK.dtype.element_ty), dm)
    tl.store(SV + out, y, dm)
    real = pm
    if HAS_REAL:
        real = real & (tl.load(REAL + b * s_real + p, pm, 0) != 0)
    tl.store(SREAL + z * NS + s, real.to(tl.int8), sm)


@triton.jit
def _token_rows(H, N, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """This program's (batch * heads) index z, b, h, token rows p < N and the (row, head_dim) mask."""
    z = tl.program_id(1)
    p = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    pm = p < N
    offs_d = tl.arange(0, BLOCK_D)
    return z, z // H, z % H, p, pm, offs_d, pm[:, None] & (offs_d < D)[None, :]


@triton.jit
def _gather_bwd_kernel(
    Q, INV, DSQ, DSK, DSV, DO, TOTAL, REAL, DQ, DV,
    SIGN, N, NP, NS, H, R, sqb, sqh, sqn, sdob, sdoh, sdon, sdqb, sdqh, sdqn, sdvb, sdvh, sdvn, s_real,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, HAS_REAL: tl.constexpr,
):  # fmt: skip
    """Token rows p < N of (b, h): DQ = sum over rounds of DSQ[s] + len_norm's Jacobian applied to
    DSK[s], DV = sum of DSV[s], plus DO[p] for a real token that saw nothing (its output is v)."""
    z, b, h, p, pm, offs_d, mask = _token_rows(H, N, D, BLOCK_D, BLOCK_M)
    x = tl.load(Q + b * sqb + h * sqh + p[:, None] * sqn + offs_d[None, :], mask, 0.0).to(tl.float32)
    rs = tl.rsqrt(tl.sum(x * x, axis=1) / D + EPS)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for r in range(R):
        s = tl.load(INV + z * NS + r * NP + p, pm, 0)
        at = z * NS * D + s[:, None] * D + offs_d[None, :]
        dq += tl.load(DSQ + at, mask, 0.0).to(tl.float32)
        dk += tl.load(DSK + at, mask, 0.0).to(tl.float32)
        dv += tl.load(DSV + at, mask, 0.0).to(tl.float32)
    # y = x * rs, rs = (mean(x^2) + eps)^-1/2: dx = rs * dy - rs^3 * x * (x . dy) / D
    dk = dk * SIGN
    dq += rs[:, None] * dk - x * (rs * rs * rs * tl.sum(x * dk, axis=1) / D)[:, None]
    alone = pm & (tl.load(TOTAL + z * N + p, pm, 0.0) == float("-inf"))
    if HAS_REAL:
        alone = alone & (tl.load(REAL + b * s_real + p, pm, 0) != 0)
    do = tl.load(DO + b * sdob + h * sdoh + p[:, None] * sdon + offs_d[None, :], mask & alone[:, None], 0.0)
    dv += do.to(tl.float32)
    tl.store(DQ + b * sdqb + h * sdqh + p[:, None] * sdqn + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask)
    tl.store(DV + b * sdvb + h * sdvh + p[:, None] * sdvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask)


@triton.jit
def _unsort_kernel(
    SO, SL, INV, V, REAL, O, TOTAL,
    N, NP, NS, H, R, svb, svh, svn, sob, soh, son, s_real,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, HAS_REAL: tl.constexpr,
):  # fmt: skip
    """Token rows p < N of (b, h): O = the rounds' rows SO[INV[r * NP + p]] merged by their LSE
    (TOTAL = the merged LSE), v[p] where no round saw anything, 0 for padding."""
    z, b, h, p, pm, offs_d, mask = _token_rows(H, N, D, BLOCK_D, BLOCK_M)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    tot = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for r in range(R):  # one pass with a running maximum
        s = tl.load(INV + z * NS + r * NP + p, pm, 0)
        lse = tl.load(SL + z * NS + s, pm, float("-inf"))
        new = tl.maximum(m, lse)
        safe = tl.where(new == float("-inf"), 0.0, new)
        alpha = tl.exp(m - safe)
        w = tl.exp(lse - safe)
        o = tl.load(SO + z * NS * D + s[:, None] * D + offs_d[None, :], mask, 0.0).to(tl.float32)
        acc = acc * alpha[:, None] + o * w[:, None]
        tot = tot * alpha + w
        m = new
    seen = tot > 0
    out = acc / tl.where(seen, tot, 1.0)[:, None]
    tl.store(TOTAL + z * N + p, tl.where(seen, m + tl.log(tl.where(seen, tot, 1.0)), float("-inf")), pm)
    vv = tl.load(V + b * svb + h * svh + p[:, None] * svn + offs_d[None, :], mask & ~seen[:, None], 0.0)
    out = tl.where(seen[:, None], out, vv.to(tl.float32))
    if HAS_REAL:
        real = tl.load(REAL + b * s_real + p, pm, 0) != 0
        out = tl.where(real[:, None], out, 0.0)
    tl.store(O + b * sob + h * soh + p[:, None] * son + offs_d[None, :], out.to(O.dtype.element_ty), mask)


@triton.jit
def _unsort_bwd_kernel(
    SO, SL, INV, DO, TOTAL, REAL, DSO, DSL,
    N, NP, NS, H, R, sdob, sdoh, sdon, s_real,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, HAS_REAL: tl.constexpr,
    HAS_DL: tl.constexpr,
):  # fmt: skip
    """The unsort's gradient in hashed order: DSO[s] = a_r * DO[p] with a_r = exp(lse_r - TOTAL), and
    (HAS_DL, several rounds) DSL[s] = a_r * DO[p] . (SO[s] - O[p]), O the merged row (before the
    fallback); zero for tokens that saw nothing and for padding."""
    z, b, h, p, pm, offs_d, mask = _token_rows(H, N, D, BLOCK_D, BLOCK_M)
    total = tl.load(TOTAL + z * N + p, pm, float("-inf"))
    keep = total > float("-inf")
    if HAS_REAL:
        keep = keep & (tl.load(REAL + b * s_real + p, pm, 0) != 0)
    safe = tl.where(keep, total, 0.0)
    do = tl.load(DO + b * sdob + h * sdoh + p[:, None] * sdon + offs_d[None, :], mask, 0.0).to(tl.float32)
    do = tl.where(keep[:, None], do, 0.0)
    if HAS_DL:
        merged = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for r in range(R):
            s = tl.load(INV + z * NS + r * NP + p, pm, 0)
            a = tl.where(keep, tl.exp(tl.load(SL + z * NS + s, pm, float("-inf")) - safe), 0.0)
            o = tl.load(SO + z * NS * D + s[:, None] * D + offs_d[None, :], mask, 0.0).to(tl.float32)
            merged += o * a[:, None]
        dom = tl.sum(do * merged, axis=1)
    for r in range(R):
        s = tl.load(INV + z * NS + r * NP + p, pm, 0)
        a = tl.where(keep, tl.exp(tl.load(SL + z * NS + s, pm, float("-inf")) - safe), 0.0)
        at = z * NS * D + s[:, None] * D + offs_d[None, :]
        tl.store(DSO + at, (do * a[:, None]).to(DSO.dtype.element_ty), mask)
        if HAS_DL:
            o = tl.load(SO + at, mask, 0.0).to(tl.float32)
            tl.store(DSL + z * NS + s, a * (tl.sum(do * o, axis=1) - dom), pm)


# ---------------------------------------------------------------------------------------------------

_CONSTS: dict[tuple, Consts] = {}


def _consts(fn, **kw) -> Consts:
    key = (fn, *sorted(kw.items()))
    c = _CONSTS.get(key)
    if c is None:
        if not _INTERPRET:
            kw.update(num_warps=4)
        c = _CONSTS[key] = Consts(fn, kw)
    return c


def _rows(d: int) -> dict:
    return dict(D=d, BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_M=64 if d <= 64 else 32)


def _s3(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride()[:3]


HASH_TILES = [(64, 1)]  # (tokens, tiles) of a hash-kernel program (a knob: benchmarks/lsh_glue.py)


def sort_keys(q: torch.Tensor, pattern: LSH, real: torch.Tensor | None, n_p: int) -> torch.Tensor:
    """Bucket of every token and round, padding (and rows n..n_p) in bucket `total_buckets`:
    (batch, heads, rounds, n_p), int16 where the buckets fit, as `hash_buckets` computes them."""
    b, h, n, d = q.shape
    rounds = pattern.num_hashes
    rot = rotations(pattern, h, d, q.dtype, q.device)  # (h, d, R, rot/2)
    dtype = torch.int16 if pattern.total_buckets < 2**15 else torch.int32
    key = torch.empty(b, h, rounds, n_p, device=q.device, dtype=dtype)
    start, product = 0, 1
    factors = pattern.bucket_factors
    dummy = key if real is None else real
    rows, iters = HASH_TILES[0]
    block_d = max(16, triton.next_power_of_2(d))
    cap = max(16, 32768 // (block_d * q.element_size()))  # a chunk of the rotations: 32 KB at most
    for i, factor in enumerate(factors):
        half = factor // 2
        block_h = min(cap, max(16, triton.next_power_of_2(half)))
        c = _consts(
            _hash_kernel,
            D=d,
            BLOCK_D=block_d,
            BLOCK_T=rows,
            ITERS=iters,
            BLOCK_H=block_h,
            CHUNKS=-(-half // block_h),
            FIRST=i == 0,
            LAST=i == len(factors) - 1,
            HAS_REAL=real is not None,
            PREC="ieee" if q.dtype == torch.float32 else "tf32",
            UPCAST=_INTERPRET and q.dtype == torch.bfloat16,
        )
        launch(
            _hash_kernel, (triton.cdiv(n_p, rows * iters), b * h * rounds), (q, rot, key, dummy),
            (n, n_p, start, half, product, pattern.total_buckets, rounds, h, *q.stride()[:3], *rot.stride(),
             0 if real is None else real.stride(0)),
            c,
        )  # fmt: skip
        start += half
        product *= factor
    return key


class _Saved:
    """The flash node's context, held inside this node (its tensors saved by this node's context)."""

    def __init__(self) -> None:
        self.saved: tuple = ()
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None:
        self.saved = tensors

    def set_materialize_grads(self, value: bool) -> None:
        pass


class _State:
    """What the node needs besides the tensors that get gradients."""

    __slots__ = ("call", "fused", "n_inner", "n_p", "real", "rounds", "sign")

    def __init__(
        self, call: _Call, real: torch.Tensor | None, n_p: int, rounds: int, fused, sign: float
    ) -> None:
        self.call, self.real, self.n_p, self.rounds, self.fused = call, real, n_p, rounds, fused
        self.sign = sign  # of the keys (a negative scale's)
        self.n_inner = 0


def _forward(q: torch.Tensor, v: torch.Tensor, st: _State, inner) -> tuple:
    b, h, n, d = q.shape
    call, real, n_p, rounds = st.call, st.real, st.n_p, st.rounds
    ns = rounds * n_p
    slots = call.pos  # (b, h, ns) int32
    sq = torch.empty(b, h, ns, d, device=q.device, dtype=q.dtype)
    sk, sv = torch.empty_like(sq), torch.empty_like(sq)
    inv = torch.empty(b, h, ns, device=q.device, dtype=torch.int32)
    sreal = torch.empty(b, h, ns, device=q.device, dtype=torch.int8)
    dummy = inv if real is None else real
    rows = _rows(d)
    c = _consts(_gather_kernel, **rows, HAS_REAL=real is not None)
    launch(
        _gather_kernel, (triton.cdiv(ns, rows["BLOCK_M"]), b * h),
        (q, v, slots, dummy, sq, sk, sv, inv, sreal),
        (st.sign, n, n_p, ns, h, *_s3(q), *_s3(v), 0 if real is None else real.stride(0)),
        c,
    )  # fmt: skip
    call.kval = sreal
    so, sl = _ListedAttention.forward(inner, sq, sk, sv, None, None, None, call)  # (b, h, ns, d), (b, h, ns)
    out = torch.empty(b, n, h, d, device=q.device, dtype=v.dtype).transpose(1, 2)  # sequence-major
    total = torch.empty(b, h, n, device=q.device, dtype=torch.float32)
    c = _consts(_unsort_kernel, **rows, HAS_REAL=real is not None)
    launch(
        _unsort_kernel, (triton.cdiv(n, rows["BLOCK_M"]), b * h),
        (so, sl, inv, v, dummy, out, total),
        (n, n_p, ns, h, rounds, *_s3(v), *_s3(out), 0 if real is None else real.stride(0)),
        c,
    )  # fmt: skip
    return out, so, sl, inv, total


class _LshAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, v, st: _State):
        saved = (q, v)
        if st.fused is not None:  # q, v as views of the projection's output in the first slot
            q, v = _views(q, st.fused, [q, v])
        inner = _Saved()
        out, so, sl, inv, total = _forward(q, v, st, inner)
        st.n_inner = len(inner.saved)
        ctx.st = st
        ctx.save_for_backward(*inner.saved, *saved, so, sl, inv, total)
        return out

    @staticmethod
    def backward(ctx, dout):
        st = ctx.st
        every = ctx.saved_tensors
        inner = _Saved()
        inner.saved_tensors = every[: st.n_inner]
        inner.call = st.call
        q, v, so, sl, inv, total = every[st.n_inner :]
        dbase = None
        if st.fused is not None:
            dbase = torch.empty_like(q)
            q, v = _views(q, st.fused, [q, v])
            dq, dv = _views(dbase, st.fused, [None, None])
        else:
            dq = torch.empty_like(q)
            dv = torch.empty_like(v)
        b, h, n, d = q.shape
        n_p, rounds, real = st.n_p, st.rounds, st.real
        ns = rounds * n_p
        dout = _unit_last(dout)
        dso = (torch.zeros if n_p > n else torch.empty)(b, h, ns, d, device=q.device, dtype=so.dtype)
        has_dl = rounds > 1  # one round: its weight is 1 and its LSE gets no gradient
        dsl = torch.zeros(b, h, ns, device=q.device, dtype=torch.float32) if has_dl else total
        dummy = inv if real is None else real
        s_real = 0 if real is None else real.stride(0)
        rows = _rows(d)
        grid = (triton.cdiv(n, rows["BLOCK_M"]), b * h)
        c = _consts(_unsort_bwd_kernel, **rows, HAS_REAL=real is not None, HAS_DL=has_dl)
        launch(
            _unsort_bwd_kernel, grid, (so, sl, inv, dout, total, dummy, dso, dsl),
            (n, n_p, ns, h, rounds, *_s3(dout), s_real),
            c,
        )  # fmt: skip
        dsq, dsk, dsv, *_ = _ListedAttention.backward(inner, dso, dsl if has_dl else None)
        c = _consts(_gather_bwd_kernel, **rows, HAS_REAL=real is not None)
        launch(
            _gather_bwd_kernel, grid,
            (q, inv, dsq, dsk, dsv, dout, total, dummy, dq, dv),
            (st.sign, n, n_p, ns, h, rounds, *_s3(q), *_s3(dout), *_s3(dq), *_s3(dv), s_real),
            c,
        )  # fmt: skip
        if dbase is not None:
            return dbase, None, None
        return dq, dv, None


def lsh_sorted(
    q: torch.Tensor,
    v: torch.Tensor,
    pattern: LSH,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (shared with k), v: (batch, heads, seq, head_dim), seq longer than one chunk ->
    (batch, heads, seq, head_dim), laid out (batch, seq, heads, head_dim) in memory."""
    b, h, n, d = q.shape
    c, rounds = pattern.chunk_length, pattern.num_hashes
    n_p = -(-n // c) * c
    q, v = _unit_last(q), _unit_last(v.to(q.dtype))
    real = None if padding is None else _unit_last(padding.to(torch.int8))
    key = sort_keys(q, pattern, real, n_p)  # (b, h, R, n_p)
    slots = torch.sort(key, dim=-1, stable=True).indices.to(torch.int32).view(b, h, rounds * n_p)
    plan = cyclic_plan(
        rounds * n_p, c, pattern.chunks_before, pattern.chunks_after, pattern.causal, True, q.device
    )
    sign = 1.0
    if scale < 0:  # the flash kernels scale inside their max (scale > 0): the sign goes to the keys
        scale, sign = -scale, -1.0
    seed = new_seed(q.device) if dropout > 0 else None
    # the flash kernel's call: positions = slots; its kval (the keys' validity in hashed order) is set
    # in `_forward`, where the gather kernel writes it
    call = _Call(plan, slots, None, slots, None, None, scale, dropout, seed, None, False)
    if torch.is_grad_enabled() and (q.requires_grad or v.requires_grad):
        found = fused_base((q, v))
        fused = None
        args = [q, v]
        if found is not None and found[1] == (0, 1):  # q, v: the heads of one projection
            base, slots_, offs = found
            fused = (slots_, offs, tuple(q.shape), q.stride())
            args = [base, None]
        return _LshAttention.apply(*args, _State(call, real, n_p, rounds, fused, sign))
    out, *_ = _forward(q, v, _State(call, real, n_p, rounds, None, sign), _Saved())
    return out
