"""A lean launch path for the Triton kernels.

Triton's own `kernel[grid](...)` binds and specialises every argument on every call (about 0.5 us an
argument on the device machine's host, 35 us for a 60-argument kernel), which made the attention calls
host-bound. Here the first launch of a given (kernel, constexprs, argument key) goes through Triton
and keeps the compiled kernel it returns; later launches with the same key call the compiled kernel's
launcher directly (about 5 us). The key holds the constexprs, every tensor's dtype and every integer
and float argument by value, and only calls whose tensors are all 16-byte aligned are keyed: that is
everything Triton specialises on.

Under Triton's CPU interpreter (TRITON_INTERPRET=1) every launch goes through Triton.
"""

from __future__ import annotations

import functools
import operator
import os
import warnings

import torch

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _patch_interpreter() -> None:
    """Triton 3.6's interpreter calls int() on 1-element arrays (loop bounds read at run time), which
    numpy >= 2.4 refuses; read the element instead."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_longseq", False):
        return

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._longseq = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if _INTERPRET:
    _patch_interpreter()
_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


class Consts:
    """A kernel's constexprs and launch options, with their values in signature order (built once)."""

    def __init__(self, fn, kwargs: dict) -> None:
        self.kwargs = kwargs
        self.key = (id(fn), *sorted(kwargs.items()))
        params = getattr(fn, "params", None)
        if params is None:  # the interpreter's wrapper
            self.values = ()
            self.n_args = -1
            return
        names = [p.name for p in params if p.is_constexpr]
        first = next(i for i, p in enumerate(params) if p.is_constexpr)
        assert all(p.is_constexpr for p in params[first:]), "constexprs must close the signature"
        self.values = tuple(kwargs[n] for n in names)
        self.n_args = first


_COMPILED: dict[tuple, object] = {}
_DATA_PTR = torch.Tensor.data_ptr
_DTYPE = operator.attrgetter("dtype")


def launch(fn, grid: tuple[int, ...], ptrs: tuple, scalars: tuple, consts: Consts, descs: tuple = ()) -> None:
    """fn[grid](*ptrs, *descs, *scalars, **consts.kwargs), through the compiled kernel once it is known.

    ptrs: the tensor arguments (they open every signature); descs: the TMA descriptor arguments that
    follow them (`TensorDescriptor`s of tensors among ptrs, or placeholder tensors where the kernel's
    constexprs leave them unused; both are fixed by the constexprs and ptrs' dtypes); scalars: the
    float and int ones. A call with any tensor off 16-byte alignment always goes through Triton (it
    specialises on that)."""
    if _INTERPRET or grid[0] == 0 or grid[1] == 0:
        if grid[0] and grid[1]:
            fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)
        return
    # (map and reduce rather than generators: this runs on every launch, and the calls are host-bound)
    aligned = not functools.reduce(operator.or_, map(_DATA_PTR, ptrs)) & 15
    key = (consts.key, tuple(map(_DTYPE, ptrs)), scalars)
    kernel = _COMPILED.get(key) if aligned else None
    if kernel is None:
        assert len(ptrs) + len(descs) + len(scalars) == consts.n_args, f"{consts.n_args} parameters"
        kernel = fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)
        if aligned:
            if len(_COMPILED) > 4096:
                _COMPILED.clear()
            _COMPILED[key] = kernel
        return
    if not _DIRECT[0]:
        fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)
        return
    stream = torch._C._cuda_getCurrentRawStream(ptrs[0].get_device())
    gz = grid[2] if len(grid) > 2 else 1
    try:
        kernel.run(  # type: ignore[attr-defined]
            grid[0], grid[1], gz, stream, kernel.function, kernel.packed_metadata, None, None, None,  # type: ignore[attr-defined]
            *ptrs, *descs, *scalars, *consts.values,
        )  # fmt: skip
    except (TypeError, AttributeError) as e:  # another Triton's launcher: use Triton's own path from now on
        warnings.warn(
            f"the lean Triton launch does not fit this Triton ({e}); launching through Triton", stacklevel=2
        )
        _DIRECT[0] = False
        fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)


_DIRECT = [True]  # False once the compiled kernel's launcher turned out not to take our arguments


_TYPES = {
    torch.bfloat16: "*bf16",
    torch.float16: "*fp16",
    torch.float32: "*fp32",
    torch.int8: "*i8",
    torch.int16: "*i16",
    torch.int32: "*i32",
    torch.int64: "*i64",
}


def signature(fn, ptrs: tuple, scalars: tuple, descs: tuple = ()) -> dict[str, str]:
    """The Triton signature of a `launch(fn, grid, ptrs, scalars, consts, descs)`: pointer types, TMA
    descriptor types, then fp32 / i32 scalars, then the constexprs (for compiling it ahead of time,
    with no GPU)."""
    args = (*ptrs, *descs)
    sig = {}
    for i, name in enumerate(fn.arg_names):
        if i < len(args):
            x = args[i]
            if isinstance(x, torch.Tensor):
                sig[name] = _TYPES[x.dtype]
            else:  # a TensorDescriptor
                sig[name] = f"tensordesc<{_TYPES[x.base.dtype][1:]}[{', '.join(map(str, x.block_shape))}]>"
        elif i < len(args) + len(scalars):
            sig[name] = "fp32" if isinstance(scalars[i - len(args)], float) else "i32"
        else:
            sig[name] = "constexpr"
    return sig
