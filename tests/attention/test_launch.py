"""The lean launcher reuses a compiled kernel only for calls Triton would compile the same way."""

from __future__ import annotations

from types import SimpleNamespace

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
