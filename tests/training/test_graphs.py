"""GraphedStep: the step's semantics (gradients overwritten, loss returned, inputs checked). On CPU
it runs eagerly; the capture itself is checked on the GPU by benchmarks/models.py, which compares
the graphed step's gradients with the eager step's before timing it."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from longseq.training.graphs import GraphedStep


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 1))


def test_each_call_gives_that_steps_gradients() -> None:
    model = _model()
    ref = _model()
    loss_fn = lambda x: model(x).square().mean()  # noqa: E731
    step = GraphedStep(loss_fn, model, torch.zeros(4, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for i in range(3):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(i))
        loss = step(x)
        ref_opt.zero_grad(set_to_none=True)
        ref_loss = ref(x).square().mean()
        ref_loss.backward()
        assert torch.allclose(loss, ref_loss.detach(), atol=1e-6) and not loss.requires_grad
        for p, r in zip(model.parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p.grad, r.grad, atol=1e-6)  # this step's, not accumulated
        opt.step()
        ref_opt.step()
        opt.zero_grad(set_to_none=True)  # harmless: the next call sets them again


def test_bad_arguments_get_clear_errors() -> None:
    model = _model()
    loss_fn = lambda x: model(x).sum()  # noqa: E731
    with pytest.raises(ValueError, match="at least one example input"):
        GraphedStep(loss_fn, model)
    with pytest.raises(TypeError, match="example input 0 is a list"):
        GraphedStep(loss_fn, model, [1.0])
    with pytest.raises(ValueError, match="warmup must be at least 1"):
        GraphedStep(loss_fn, model, torch.zeros(2, 6), warmup=0)
    step = GraphedStep(loss_fn, model, torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"input 0 has shape \(3, 6\).*pad to the captured shape"):
        step(torch.zeros(3, 6))
    with pytest.raises(ValueError, match="built with 1 inputs; got 2"):
        step(torch.zeros(2, 6), torch.zeros(2, 6))
    vector = GraphedStep(lambda x: model(x), model, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="scalar loss tensor"):
        vector(torch.zeros(2, 6))


def _bigbird_classifier():
    from longseq.models.bigbird import BigBirdForSequenceClassification
    from longseq.models.configs import BigBirdConfig

    torch.manual_seed(0)
    config = BigBirdConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        block_size=4, num_random_blocks=1, max_position_embeddings=64, num_labels=3,
        hidden_dropout_prob=0.1,  # dropout too: the same draws either way
    )  # fmt: skip
    return BigBirdForSequenceClassification(config)


def _data(n: int = 16, seq: int = 48) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 32, (n, seq), generator=gen)
    return [{"input_ids": row, "labels": row[1] % 3} for row in ids]


def test_trainer_with_cuda_graphs_trains_as_without(tmp_path) -> None:
    """The trainer's graphed path (here on CPU, where GraphedStep runs eagerly): same weights."""
    from longseq.training import TrainConfig, Trainer

    trained = []
    for graphs in (False, True):
        model = _bigbird_classifier()
        config = TrainConfig(
            lr=1e-2, max_steps=4, batch_size=4, log_every=1, output_dir=str(tmp_path / str(graphs)),
            progress_bar=False, cuda_graphs=graphs, precision="bf16",
        )  # fmt: skip
        with pytest.warns(UserWarning, match="no CUDA device") if graphs else contextlib.nullcontext():
            trainer = Trainer(model, config, _data(), device="cpu")
        trainer.train()
        assert (trainer._graphs is not None) == graphs and len(trainer._graphs or {}) == (1 if graphs else 0)
        trained.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k in trained[0]:
        assert torch.equal(trained[0][k], trained[1][k]), k


def test_cuda_graphs_refusals_say_why(tmp_path) -> None:
    from train_helpers import ToyData, tiny_model

    from longseq.training import TrainConfig, Trainer

    with pytest.raises(ValueError, match="set grad_accum 1"):
        TrainConfig(cuda_graphs=True, grad_accum=2)
    with pytest.raises(ValueError, match="fp16's GradScaler"):
        TrainConfig(cuda_graphs=True, precision="fp16")
    config = TrainConfig(
        max_steps=1, batch_size=4, output_dir=str(tmp_path), progress_bar=False, cuda_graphs=True
    )
    with pytest.warns(UserWarning, match="LongformerForSequenceClassification cannot be replayed: its glob"):
        trainer = Trainer(tiny_model(), config, ToyData(), device="cpu")
    assert trainer._graphs is None  # the Longformer trains eagerly
    trainer.train()


def test_grad_mismatch_is_relative_over_all_gradients() -> None:
    from longseq.training.graphs import grad_mismatch

    a, b = torch.ones(3), torch.full((4,), 2.0)
    assert grad_mismatch([a, b, None], [a, b, None]) == 0.0
    assert grad_mismatch([a, b * 1.01], [a, b]) == pytest.approx(0.04 / (3 + 16) ** 0.5)  # 4 x 0.02
    assert grad_mismatch([None, b], [a, b]) == pytest.approx((3 / 19) ** 0.5)  # a missing gradient
    assert grad_mismatch([a], [torch.zeros(3)]) == float("inf")
    assert grad_mismatch([torch.zeros(3)], [torch.zeros(3)]) == 0.0
