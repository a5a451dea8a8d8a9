"""The lean launcher reuses a compiled kernel only for calls Triton would compile the same way."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from longseq.attention.kernels import launch as L


class _Compiled:
    function = packed_metadata = None

    def __init__(self, log: list, tag: int) -> None:
        self.log, self.tag = log, tag

    def run(self, *args) -> None:
        self.log.append(("direct", self.tag, args[9:]))


class _FakeKernel:
    """Stands for a JITFunction: (X, Y, a, b, BLOCK: constexpr)."""

    def __init__(self) -> None:
        names = [("X", False), ("Y", False), ("a", False), ("b", False), ("BLOCK", True)]
        self.params = [SimpleNamespace(name=n, is_constexpr=c) for n, c in names]
        self.log: list = []
        self.compiled = 0

    def __getitem__(self, grid):
        def call(*args, **kw):
            self.compiled += 1
            self.log.append(("triton", self.compiled, args, kw["BLOCK"]))
            return _Compiled(self.log, self.compiled)

        return call


@pytest.fixture
def lean(monkeypatch):
    monkeypatch.setattr(L, "_INTERPRET", False)
    monkeypatch.setattr(L, "_COMPILED", {})
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 0, raising=False)


def test_second_call_is_direct_and_passes_constexprs_in_order(lean) -> None:
    fn = _FakeKernel()
    c = L.Consts(fn, {"BLOCK": 64, "num_warps": 4})
    x, y = torch.zeros(8), torch.zeros(8)
    L.launch(fn, (2, 3), (x, y), (5, 7), c)
    L.launch(fn, (2, 3), (x, y), (5, 7), c)
    assert [e[0] for e in fn.log] == ["triton", "direct"]
    assert fn.log[1][2] == (x, y, 5, 7, 64)  # pointers, scalars, then the constexpr values


def test_new_dtype_value_or_misalignment_goes_through_triton(lean) -> None:
    fn = _FakeKernel()
    c = L.Consts(fn, {"BLOCK": 64})
    x32, y = torch.zeros(64), torch.zeros(64)
    L.launch(fn, (1, 1), (x32, y), (5, 7), c)
    L.launch(fn, (1, 1), (x32.to(torch.bfloat16), y), (5, 7), c)  # another dtype: a new kernel
    L.launch(fn, (1, 1), (x32, y), (5, 8), c)  # another scalar value (Triton specialises on some)
    L.launch(fn, (1, 1), (x32[1:], y), (5, 7), c)  # off 16-byte alignment: never keyed
    L.launch(fn, (1, 1), (x32[1:], y), (5, 7), c)
    assert [e[0] for e in fn.log] == ["triton"] * 5
    L.launch(fn, (1, 1), (x32.to(torch.bfloat16), y), (5, 7), c)
    assert fn.log[-1][:2] == ("direct", 2)  # the bf16 kernel, not the fp32 one


def test_empty_grid_launches_nothing(lean) -> None:
    fn = _FakeKernel()
    L.launch(fn, (0, 4), (torch.zeros(4),), (1,), L.Consts(fn, {"BLOCK": 16}))
    assert fn.log == []


def test_a_launcher_of_another_shape_falls_back_to_triton(lean, monkeypatch) -> None:
    fn = _FakeKernel()
    c = L.Consts(fn, {"BLOCK": 16})
    x = torch.zeros(16)
    monkeypatch.setattr(L, "_DIRECT", [True])
    L.launch(fn, (1, 1), (x, x), (3, 4), c)

    def refuse(*args) -> None:
        raise TypeError("run() takes 9 positional arguments")

    monkeypatch.setattr(_Compiled, "run", refuse)
    with pytest.warns(UserWarning, match="lean Triton launch does not fit"):
        L.launch(fn, (1, 1), (x, x), (3, 4), c)
    L.launch(fn, (1, 1), (x, x), (3, 4), c)
    assert [e[0] for e in fn.log] == ["triton"] * 3  # the same launch, through Triton each time


class _TritonLauncher:
    """Stands for Triton 3.6's CudaLauncher: its C launcher (here a recorder) wrapped by Triton's own
    `wrap_handle_tensordesc`, which expands the descriptor arguments."""

    def __init__(self, log: list, signature: dict, metas: list | None) -> None:
        from triton.backends.nvidia.driver import wrap_handle_tensordesc

        def c_launch(*args) -> None:
            log.append(args)

        self.launch = wrap_handle_tensordesc(c_launch, signature, metas)
        self.global_scratch_size = self.profile_scratch_size = 0
        self.launch_cooperative_grid = self.launch_pdl = False

    def __call__(self, gx, gy, gz, stream, function, *args) -> None:  # as CudaLauncher.__call__
        self.launch(gx, gy, gz, stream, function, False, False, None, None, *args)


class _DescKernel(_FakeKernel):
    """(X, D: a TMA descriptor, a, BLOCK: constexpr), compiled to a kernel with _TritonLauncher."""

    signature: ClassVar[dict] = {
        "X": "*fp32",
        "D": "tensordesc<fp32[1, 1, 4, 8]>",
        "a": "i32",
        "BLOCK": "constexpr",
    }

    def __init__(self, metas: list | None) -> None:
        names = [("X", False), ("D", False), ("a", False), ("BLOCK", True)]
        self.params = [SimpleNamespace(name=n, is_constexpr=c) for n, c in names]
        self.log, self.compiled, self.metas = [], 0, metas

    def __getitem__(self, grid):
        def call(*args, **kw):
            self.compiled += 1
            self.log.append("triton")
            kernel = SimpleNamespace(function=7, packed_metadata=(1, 2))
            kernel.run = _TritonLauncher(self.log, self.signature, self.metas)
            return kernel

        return call


def _desc(x: torch.Tensor):
    from longseq.attention.kernels.listed import _descriptor

    return _descriptor(x, [1, 1, 4, 8])


def test_raw_launch_passes_what_triton_s_wrapper_passes(lean) -> None:
    """With TMA descriptors, the lean launch calls Triton's C launcher itself with the descriptors
    expanded (skipping the wrapper's walk over every argument): the same arguments, in order."""
    fn = _DescKernel(None)  # no descriptor metadata: Triton's pure-Python expansion
    c = L.Consts(fn, {"BLOCK": 16})
    x, t = torch.zeros(16), torch.zeros(1, 2, 12, 8)
    L.launch(fn, (2, 3), (x,), (5,), c, (_desc(t),))
    L.launch(fn, (2, 3), (x,), (5,), c, (_desc(t),))
    assert fn.log[0] == "triton" and len(fn.log) == 2
    ours = fn.log[1]
    kernel = fn[(2, 3)]()
    kernel.run(2, 3, 1, 0, 7, (1, 2), None, None, None, x, _desc(t), 5, 16)  # Triton's own path
    theirs = fn.log[-1]
    assert len(ours) == len(theirs) and all(a is b or a == b for a, b in zip(ours, theirs, strict=True))
    assert ours[13] is x and ours[14] is t  # pointers, then the descriptor's base, shape, strides...


def test_raw_launch_keeps_each_descriptor_s_encoding(lean, monkeypatch) -> None:
    """Encoded descriptors are kept per address, shape, strides and argument: a second launch over
    the same tensor encodes nothing; another tensor, or another shape, is encoded anew."""
    encoded: list = []

    def make(desc, meta):
        encoded.append((desc.base.data_ptr(), tuple(desc.shape)))
        return [f"map{len(encoded)}", *desc.shape, *desc.strides]

    monkeypatch.setattr(L, "_make_tma", make)
    monkeypatch.setattr(L, "_TMA_ARGS", {})
    fn = _DescKernel([{"swizzle": 128}])
    c = L.Consts(fn, {"BLOCK": 16})
    x, t, u = torch.zeros(16), torch.zeros(1, 2, 12, 8), torch.zeros(1, 2, 12, 8)
    for desc in (_desc(t), _desc(t), _desc(u), _desc(t[:, :, :8]), _desc(t)):
        L.launch(fn, (1, 1), (x,), (5,), c, (desc,))
    # the first launch went through Triton; the next four encoded t, u and t's first 8 rows, then t
    # again from the kept encoding
    assert fn.log[0] == "triton" and len(fn.log) == 5 and len(encoded) == 3
    assert [row[14] for row in fn.log[1:]] == ["map1", "map2", "map3", "map1"]


def test_band_merge_is_a_dependent_launch_only_on_a_gpu_that_has_it(monkeypatch) -> None:
    from longseq.attention.kernels import listed

    x = torch.zeros(1)
    assert not listed._pdl(x)  # a CPU tensor: no launch at all, so no PDL
    monkeypatch.setattr(listed, "_sm90", lambda index: True)
    monkeypatch.setattr(listed, "_INTERPRET", False)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert listed._pdl(x)
    monkeypatch.setattr(listed, "PDL_MERGE", [False])
    assert not listed._pdl(x)
    monkeypatch.setattr(listed, "PDL_MERGE", [True])
    monkeypatch.setattr(listed, "_sm90", lambda index: False)  # (an sm80 GPU)
    assert not listed._pdl(x)
