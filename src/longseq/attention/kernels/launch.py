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
    got = _COMPILED.get(key) if aligned else None
    if got is None:
        assert len(ptrs) + len(descs) + len(scalars) == consts.n_args, f"{consts.n_args} parameters"
        kernel = fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)
        if aligned:
            if len(_COMPILED) > 4096:
                _COMPILED.clear()
                _TMA_ARGS.clear()  # (keyed by the ids of the cleared kernels' metadata)
            _COMPILED[key] = (kernel, _raw_launcher(kernel) if _DIRECT[0] else None)
        return
    if not _DIRECT[0]:
        fn[grid](*ptrs, *descs, *scalars, **consts.kwargs)
        return
    kernel, raw = got
    stream = torch._C._cuda_getCurrentRawStream(ptrs[0].get_device())
    gz = grid[2] if len(grid) > 2 else 1
    try:
        if raw is not None:  # the C launcher itself, the descriptors expanded here (see _raw_launcher)
            run, metas, coop, pdl = raw
            if metas is not None:
                descs = tuple(x for d, m in zip(descs, metas, strict=True) for x in _tma_arg(d, m))
            run(
                grid[0], grid[1], gz, stream, kernel.function, coop, pdl, None, None, kernel.packed_metadata,  # type: ignore[attr-defined]
                None, None, None, *ptrs, *descs, *scalars, *consts.values,
            )  # fmt: skip
            return
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


def _raw_launcher(kernel) -> tuple | None:
    """(C launcher, descriptor metadata or None, cooperative, pdl) of a compiled kernel, or None.

    Triton 3.6's `CudaLauncher.__call__` allocates no scratch for these kernels, then, where the
    signature has TMA descriptors, its wrapper (`wrap_handle_tensordesc.inner`) walks every argument
    in Python to expand them (about 80 a band launch) and encodes each descriptor again. Calling the
    C launcher with the descriptors expanded here (`_tma_arg`, with their encodings kept) skips
    both. None where the launcher is not the one this was written for: then `kernel.run`."""
    try:
        run = kernel.run
        if run.global_scratch_size or run.profile_scratch_size:
            return None
        fn = run.launch
        cells = getattr(fn, "__closure__", None)
        if not cells:  # no descriptors: the launcher is the C one
            return (fn, None, run.launch_cooperative_grid, run.launch_pdl)
        free = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in cells), strict=True))
        if set(free) != {"launcher", "tensordesc_indices", "tensordesc_meta"} or not _MAKE_TMA_ARG:
            return None
        metas = list(free["tensordesc_meta"])
        if len(metas) != len(free["tensordesc_indices"]):
            return None
        return (free["launcher"], metas, run.launch_cooperative_grid, run.launch_pdl)
    except (AttributeError, TypeError, ValueError):
        return None


try:  # Triton's own expansion of a host-side descriptor into launcher arguments
    from triton.backends.nvidia.driver import make_tensordesc_arg as _make_tma  # type: ignore

    _MAKE_TMA_ARG = True
except ImportError:  # pragma: no cover (another Triton: no raw launch with descriptors)
    _MAKE_TMA_ARG = False

_TMA_ARGS: dict[tuple, list] = {}  # (address, shape, strides, metadata id) -> a descriptor's arguments


def _tma_arg(desc, meta) -> list:
    """A TensorDescriptor's launcher arguments (Triton's `make_tensordesc_arg`), kept per address,
    shape, strides and kernel argument: the encoded descriptor depends on nothing else (its block,
    swizzle and element type are the argument's metadata), and encoding it is a driver call."""
    if meta is None:  # (its arguments hold the tensor itself: not kept)
        return _make_tma(desc, meta)
    key = (desc.base.data_ptr(), *desc.shape, *desc.strides, desc.padding, id(meta))
    got = _TMA_ARGS.get(key)
    if got is None:
        if len(_TMA_ARGS) > 1024:
            _TMA_ARGS.clear()
        got = _TMA_ARGS[key] = _make_tma(desc, meta)
    return got


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


def split_options(kwargs: dict) -> tuple[dict, dict]:
    """A caught launch's kwargs -> (its constexprs, its launch options), for compiling it ahead of time."""
    keys = (*_OPTIONS, "launch_pdl")
    return {k: v for k, v in kwargs.items() if k not in keys}, {k: v for k, v in kwargs.items() if k in keys}


def compile_sm90(fn, ptrs: tuple, scalars: tuple, kwargs: dict, descs: tuple = ()) -> dict:
    """Compile a caught `launch(fn, grid, ptrs, scalars, consts, descs)` (kwargs: its constexprs and
    launch options) in full for the H100 (sm_90) on a machine with no GPU, specialising the arguments
    as Triton's launch does (16-byte-aligned pointers and integers divisible by 16 marked, integers
    equal to 1 made constants), and read the cubin with Triton's bundled cuobjdump. Returns regs,
    stack (spilled bytes and call frames), smem (dynamic shared memory, bytes), the launch options,
    and the ptx and sass texts."""
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kwargs, opts = split_options(kwargs)
    sig = signature(fn, ptrs, scalars, descs)
    attrs = {}
    for i, x in enumerate((*ptrs, *descs, *scalars)):
        name = fn.arg_names[i]
        if isinstance(x, torch.Tensor) and x.data_ptr() % 16 == 0:
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(x, int) and x == 1:
            sig[name], kwargs[name] = "constexpr", 1
        elif isinstance(x, int) and x % 16 == 0:
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=kwargs, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+).*?STACK:(\d+)", usage, re.S)
    return {
        "regs": int(found.group(1)) if found else None,
        "stack": int(found.group(2)) if found else None,
        "smem": kernel.metadata.shared,
        "ptx": kernel.asm["ptx"],
        "sass": sass,
        **opts,
    }
