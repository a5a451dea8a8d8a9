"""Global tokens of a Longformer call, found once per mask.

The number of global tokens sizes tensors, so finding them reads one number back from the device.
`global_tokens` keeps the answer for the last few (global_mask, padding_mask) tensors it saw, by
identity and version counter, so a model whose layers share one mask reads it once per forward and
a call repeated on the same mask never waits for the device.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from ._cache import tensor_key


def global_index(glob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of global tokens per row, (batch, G), and which of the G slots are used.

    G, the largest number of global tokens in a row, sizes tensors, so it is read on the host (the
    torch backend calls this once per call; `global_tokens` once per mask tensor).
    """
    idx, used, _ = _index(glob)
    return idx, used


def _index(glob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """`global_index`, and whether every row has G global tokens (one host read for both)."""
    counts = glob.sum(1)
    g, full = 0, True
    if glob.numel():
        g, least = (int(c) for c in torch.stack([counts.max(), counts.min()]).tolist())
        full = least == g
    order = torch.sort((~glob).to(torch.uint8), dim=1, stable=True).indices[:, :g]  # globals first
    used = torch.arange(g, device=glob.device)[None, :] < counts[:, None]
    return order, used, full


@dataclass(eq=False)
class GlobalTokens:
    """mask (b, n) bool: global and real. idx (b, G): positions, globals first in order; used (b, G):
    which of the G slots hold a global token (rows have different counts); g = G; full: every slot
    is used (known on the host)."""

    mask: torch.Tensor
    idx: torch.Tensor
    used: torch.Tensor
    g: int
    full: bool = False
    _gpu: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def of(glob: torch.Tensor) -> GlobalTokens:
        idx, used, full = _index(glob)
        return GlobalTokens(glob, idx, used, idx.shape[1], full)

    def rows_place(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(idx, used, flat) for `write_rows_` and `read_rows`: flat, the slots' positions in the
        flattened batch, only when every slot is used (then one indexed copy moves the rows)."""
        return self.idx, self.used, self.flat_index() if self.full else None

    def kernel_vectors(self) -> dict[str, torch.Tensor]:
        """What the gpu kernels read (built once): idx (b, G) and cnt (b,) int32; slot (b, n) int32,
        the slot of each global position (-1 elsewhere). The kernels' glue keeps what it builds from
        these in the same dict (its `Extra`), so that too is built once per mask."""
        if "idx" not in self._gpu:
            b, n = self.mask.shape
            idx = self.idx.to(torch.int32).contiguous()
            cnt = self.used.sum(1).to(torch.int32)
            slots = torch.arange(self.g, device=idx.device, dtype=torch.int32).expand(b, -1)
            slot = torch.full((b, n + 1), -1, dtype=torch.int32, device=idx.device)
            slot.scatter_(1, torch.where(self.used, self.idx, n), torch.where(self.used, slots, -1))
            self._gpu.update(idx=idx, cnt=cnt, slot=slot[:, :n].contiguous())
        return self._gpu

    def other_queries(self, padding: torch.Tensor | None) -> torch.Tensor:
        """(b, 1, n) int8: the real query rows that are not global, as the kernels' qval (built once;
        padding: the mask these tokens were found under)."""
        if "other" not in self._gpu:
            keep = ~self.mask if padding is None else padding & ~self.mask
            self._gpu["other"] = keep.to(torch.int8)[:, None]
        return self._gpu["other"]

    def flat_index(self) -> torch.Tensor:
        """(b * G,) the slots' positions in the (b * n) rows of the flattened batch (built once)."""
        got = self._gpu.get("flat")
        if got is None:
            b, n = self.mask.shape
            got = (self.idx + n * batch_index(b, self.idx.device)).flatten()
            if not torch.compiler.is_compiling():
                self._gpu["flat"] = got
        return got


_BATCH: dict[tuple, torch.Tensor] = {}


def batch_index(b: int, device: torch.device) -> torch.Tensor:
    """(b, 1): 0 .. b - 1, kept per (b, device) outside torch.compile (a constant the host need not
    build on every call)."""
    if torch.compiler.is_compiling():
        return torch.arange(b, device=device)[:, None]
    key = (b, device)
    got = _BATCH.get(key)
    if got is None:
        if len(_BATCH) > 32:
            _BATCH.clear()
        got = _BATCH[key] = torch.arange(b, device=device)[:, None]
    return got


_RECENT: list[tuple] = []  # (ref(global_mask), ref(padding_mask) | None, tensor keys, GlobalTokens)


@torch.compiler.disable  # a host read and a cache: always eager
def global_tokens(
    global_mask: torch.Tensor, padding_mask: torch.Tensor | None, glob: torch.Tensor | None = None
) -> GlobalTokens:
    """The global tokens of (global_mask & padding_mask): cached by the two tensors' identity.

    glob, if given, is that mask already combined (bool). Inference tensors are never cached."""
    keys = (tensor_key(global_mask), tensor_key(padding_mask))
    cacheable = keys[0] is not None and (padding_mask is None or keys[1] is not None)
    for gref, pref, cached_keys, tokens in _RECENT:
        if gref() is global_mask and (pref() if pref else None) is padding_mask and cached_keys == keys:
            return tokens
    if glob is None:
        glob = global_mask if global_mask.dtype == torch.bool else global_mask != 0
        if padding_mask is not None:
            glob = glob & (padding_mask if padding_mask.dtype == torch.bool else padding_mask != 0)
    tokens = GlobalTokens.of(glob)
    if cacheable:
        pref = weakref.ref(padding_mask) if padding_mask is not None else None
        _RECENT.insert(0, (weakref.ref(global_mask), pref, keys, tokens))
        del _RECENT[8:]
    return tokens


def _masks(
    attention_mask: torch.Tensor | None,
    global_attention_mask: torch.Tensor | None,
    shape: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    padding = None if attention_mask is None else attention_mask.bool()
    if global_attention_mask is None:
        return padding, None
    glob = global_attention_mask.bool()
    return padding, glob if padding is None else glob & padding


_MASKS: list[tuple] = []  # (refs of the inputs, their tensor keys, shape, device, (padding, glob))


def model_masks(
    attention_mask: torch.Tensor | None,
    global_attention_mask: torch.Tensor | None,
    shape: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A model's (padding, glob) bool masks (b, n) from its HF-style inputs (attention_mask: 1 = real
    token, None = all real, given as padding None so that the kernels mask nothing;
    global_attention_mask: 1 = global), as the same tensor objects for the
    same inputs (identity and version). So `global_tokens`, keyed by those objects, reads the
    device once per input mask, not once per forward: a repeated or graph-captured step never waits."""
    if torch.compiler.is_compiling():  # traced: plain tensor code (the compiled graph keeps no cache)
        return _masks(attention_mask, global_attention_mask, shape, device)
    inputs = (attention_mask, global_attention_mask)
    keys = tuple(tensor_key(t) for t in inputs)
    cacheable = all(t is None or key is not None for t, key in zip(inputs, keys, strict=True))
    for refs, cached_keys, cached_shape, cached_device, masks in _MASKS:
        same = all((r() if r else None) is t for r, t in zip(refs, inputs, strict=True))
        if same and cached_keys == keys and cached_shape == tuple(shape) and cached_device == device:
            return masks
    padding, glob = _masks(attention_mask, global_attention_mask, shape, device)
    if cacheable and not torch.is_inference_mode_enabled():
        refs = tuple(None if t is None else weakref.ref(t) for t in inputs)
        _MASKS.insert(0, (refs, keys, tuple(shape), device, (padding, glob)))
        del _MASKS[8:]
    return padding, glob


def _flat_rows(x: torch.Tensor, flat: torch.Tensor | None) -> torch.Tensor | None:
    """x (b, h, n, d) as its (b * n, h, d) rows, a view, when x is sequence-major and flat is given."""
    if flat is None:
        return None
    seq = x.transpose(1, 2)  # (b, n, h, d)
    if not seq.is_contiguous():
        return None
    b, n, h, d = seq.shape
    return seq.view(b * n, h, d)


def write_rows_(
    out: torch.Tensor,
    idx: torch.Tensor,
    used: torch.Tensor,
    values: torch.Tensor,
    flat: torch.Tensor | None = None,
) -> torch.Tensor:
    """out (b, h, n, d) with rows idx[b, g] (b, G) set to values[b, :, g] (values (b, h, G, d)) where
    used[b, g], in place. Unused slots hold distinct non-global positions (`global_index`): they get
    their own rows back, so every write lands on its own row. flat (`GlobalTokens.rows_place`):
    every slot is used, so a sequence-major out takes the rows in one indexed copy."""
    rows = _flat_rows(out, flat)
    if rows is not None:
        h, d = rows.shape[1:]
        rows.index_copy_(0, flat, values.transpose(1, 2).reshape(-1, h, d).to(out.dtype))
        return out
    bi = batch_index(out.shape[0], out.device).expand_as(idx)  # (b, G)
    seq = out.transpose(1, 2)  # (b, n, h, d), a view
    seq[bi, idx] = torch.where(used[..., None, None], values.transpose(1, 2).to(out.dtype), seq[bi, idx])
    return out


def read_rows(
    x: torch.Tensor, idx: torch.Tensor, used: torch.Tensor, flat: torch.Tensor | None = None
) -> torch.Tensor:
    """x (b, h, n, d) -> its rows idx[b, g] as (b, h, G, d), zero where a slot is unused (the
    gradient of `write_rows_`'s values). flat: as for `write_rows_`."""
    b, g = idx.shape
    rows = _flat_rows(x, flat)
    if rows is not None:
        return rows.index_select(0, flat).view(b, g, *rows.shape[1:]).transpose(1, 2)
    bi = batch_index(b, x.device).expand_as(idx)
    got = x.transpose(1, 2)[bi, idx]  # (b, G, h, d)
    return torch.where(used[..., None, None], got, 0).transpose(1, 2)


def place_rows(out: torch.Tensor, tokens: GlobalTokens, values: torch.Tensor) -> torch.Tensor:
    """out (b, h, n, d) with the rows of the global tokens replaced by values (b, h, G, d), slot by
    slot in `tokens.idx` order (unused slots keep their rows). Out of place: one copy of out."""
    return write_rows_(out.clone(), tokens.idx, tokens.used, values)
