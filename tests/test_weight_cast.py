"""cast_linears(): one cast of a stack's weights under autocast gives autocast's own outputs and
gradients, and leaves unused layers without gradients."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from longseq.layers import weight_cast
from longseq.layers.weight_cast import cast_linears, cast_of, linear
from longseq.models import encoder
from longseq.models.bigbird import BigBirdModel
from longseq.models.configs import BigBirdConfig, LongformerConfig
from longseq.models.longformer import LongformerModel

SMALL = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _longformer() -> nn.Module:
    torch.manual_seed(0)
    c = LongformerConfig(attention_window=[4, 6], max_position_embeddings=64, **SMALL)
    return LongformerModel(c).train()


def _bigbird() -> nn.Module:
    torch.manual_seed(0)
    c = BigBirdConfig(block_size=4, num_random_blocks=1, max_position_embeddings=128, **SMALL)
    return BigBirdModel(c).train()


def _step(model: nn.Module, kw: dict, cast: bool, monkeypatch) -> tuple[torch.Tensor, dict]:
    monkeypatch.setattr(
        encoder, "cast_linears", cast_linears if cast else lambda groups: contextlib.nullcontext()
    )
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**kw).last_hidden_state
    out.float().pow(2).mean().backward()
    return out.detach(), {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["longformer", "longformer_no_global", "bigbird", "longformer_cat"])
def test_same_outputs_and_gradients_as_autocast(family: str, monkeypatch) -> None:
    if family == "longformer_cat":  # without torch's flatten: the plain `cat` of the tensors
        monkeypatch.setattr(weight_cast, "_FLATTEN", None)
        family = "longformer"
    model = _bigbird() if family == "bigbird" else _longformer()
    n = 45 if family == "bigbird" else 29  # no multiple of the windows or blocks
    ids = torch.randint(3, 50, (2, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, n - 6 :] = 0
    kw = {"input_ids": ids, "attention_mask": mask}
    if family == "longformer":
        glob = torch.zeros_like(ids)
        glob[:, [0, 3]] = 1
        kw["global_attention_mask"] = glob
    out, grads = _step(model, kw, True, monkeypatch)
    want_out, want = _step(model, kw, False, monkeypatch)
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    assert set(k for k, g in grads.items() if g is not None) == set(
        k for k, g in want.items() if g is not None
    )
    if family == "longformer_no_global":  # the global projections are unused: no gradient, as before
        assert grads["encoder.layers.0.attention.key_global.weight"] is None
    for k, g in want.items():
        if g is None:
            continue
        assert grads[k].dtype == torch.float32
        if k.endswith("ffn_out.bias"):  # rounded to bf16 here, as autocast rounds every other bias's
            torch.testing.assert_close(grads[k], g, rtol=8e-3, atol=1e-6)
        else:
            torch.testing.assert_close(grads[k], g, rtol=0, atol=0, msg=k)


def test_the_cast_is_taken_once() -> None:
    """Under autocast, the step's graph holds one cast node per encoder layer, and no encoder weight
    reaches its gradient through a cast or a concatenation of its own."""
    model = _longformer()
    ids = torch.randint(3, 50, (1, 21))
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, global_attention_mask=glob).last_hidden_state
    casts, own, seen, todo = 0, set(), set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        casts += type(fn).__name__ == "_CastBackward"
        if type(fn).__name__ in ("ToCopyBackward0", "CatBackward0"):
            own |= {id(f.variable) for f, _ in fn.next_functions if hasattr(f, "variable")}
        todo += [f for f, _ in fn.next_functions]
    weights = {id(p) for p in model.encoder.parameters() if p.dim() == 2}
    assert casts == 2 and len(weights) == 18  # two layers
    assert not own & weights


def test_gradient_checkpointing_recomputes_the_same(monkeypatch) -> None:
    """A checkpointed layer casts again when it is recomputed: the gradients are those without."""
    model = _longformer()
    ids = torch.randint(3, 50, (2, 29), generator=torch.Generator().manual_seed(2))
    kw = {"input_ids": ids}
    _, want = _step(model, kw, True, monkeypatch)
    model.encoder.gradient_checkpointing = True
    _, grads = _step(model, kw, True, monkeypatch)
    for k, g in want.items():
        if g is not None:
            torch.testing.assert_close(grads[k], g, rtol=0, atol=0, msg=k)


def test_nothing_to_do_outside_autocast_or_16_bits() -> None:
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with cast_linears([(layer,)]):
        assert cast_of((layer,)) is None
        torch.testing.assert_close(linear(x, layer), layer(x))
    with torch.autocast("cpu", dtype=torch.bfloat16), cast_linears([(layer,)]):
        w, b = cast_of((layer,))
        assert w.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(w.float(), layer.weight.to(torch.bfloat16).float(), rtol=0, atol=0)
        with torch.no_grad(), cast_linears([(layer,)]):  # nested: the outer cast stands
            assert cast_of((layer,))[0] is w
    assert cast_of((layer,)) is None  # closed
    assert weight_cast._STATE.table is None


def test_mixed_biases_refused() -> None:
    with (
        pytest.raises(ValueError, match="bias or none"),
        torch.autocast("cpu", dtype=torch.bfloat16),
        cast_linears([(nn.Linear(2, 2), nn.Linear(2, 2, bias=False))]),
    ):
        pass
