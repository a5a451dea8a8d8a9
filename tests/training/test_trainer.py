"""Trainer: exact resume, NaN stop, accumulation equivalence, schedules, atomic checkpoints, errors."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn
from train_helpers import ToyData, tiny_model, weights

import longseq.training.checkpoint as ckpt
from longseq.models.longformer import LongformerForSequenceClassification
from longseq.training import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    TrainingOutOfMemoryError,
    checkpoint_dirs,
    lr_factor,
    param_groups,
    read_checkpoint,
    write_checkpoint,
)
from longseq.training.data import StepBatchSampler, eval_batches
from longseq.training.metrics import classification_metrics


def cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(lr=1e-2, max_steps=4, batch_size=4, log_every=1, output_dir=str(tmp_path), progress_bar=False)
    base.update(kw)
    return TrainConfig(**base)


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def test_resume_is_exact(tmp_path):
    # dropout on: the RNG state must be restored too; 20 samples / 4 = 5 steps per epoch: crosses an epoch
    data = ToyData(20)
    kw = dict(max_steps=8, save_every=4, warmup_steps=2, weight_decay=0.1, schedule="cosine")
    straight = tiny_model(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    Trainer(straight, cfg(tmp_path / "a", **kw), data).train()

    first = tiny_model(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    Trainer(first, cfg(tmp_path / "b", **kw), data).train(stop_at=4)
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["checkpoint-4"]
    other_init = tiny_model(seed=7, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    resumed = Trainer(other_init, cfg(tmp_path / "b", **kw), data)
    assert resumed.resume(tmp_path / "b") == 4
    resumed.train()
    assert_same(weights(straight), weights(other_init))
    assert not torch.equal(
        weights(first)["classifier.out_proj.weight"], weights(other_init)["classifier.out_proj.weight"]
    )
    # the state file is plain data: weights_only loading, no pickled code
    state = torch.load(tmp_path / "b" / "checkpoint-8" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 8 and state["data"]["samples_seen"] == 32


def test_accumulation_equals_bigger_batch(tmp_path):
    data = ToyData(32)
    a, b = tiny_model(), tiny_model()
    kw = dict(max_steps=4, weight_decay=0.01, max_grad_norm=0.5, warmup_steps=1)
    Trainer(a, cfg(tmp_path / "a", batch_size=8, grad_accum=1, **kw), data).train()
    Trainer(b, cfg(tmp_path / "b", batch_size=4, grad_accum=2, **kw), data).train()
    assert_same(weights(a), weights(b), atol=1e-6)
    assert not torch.equal(
        weights(a)["classifier.out_proj.weight"], weights(tiny_model())["classifier.out_proj.weight"]
    )


class NaNAfter(nn.Module):
    """Wraps a model; its loss turns NaN from forward call `after + 1` on."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, **batch):
        out = self.inner(**batch)
        self.calls += 1
        if self.calls > self.after:
            out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = NaNAfter(tiny_model(), after=5)
    with pytest.raises(TrainingDivergedError, match="step 6") as info:
        Trainer(model, cfg(tmp_path, max_steps=10, save_every=2), ToyData(32)).train()
    assert "checkpoint-4" in str(info.value)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4", "log.jsonl"]
    saved, state = read_checkpoint(tmp_path)
    assert state["step"] == 4 and all(torch.isfinite(t).all() for t in saved.values())


def test_schedule_values_and_logged_lr(tmp_path):
    c = TrainConfig(lr=1.0, warmup_steps=2, max_steps=6, schedule="linear")
    assert [lr_factor(c, i) for i in range(6)] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
    c.schedule = "cosine"
    expected = [0.0, 0.5] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [lr_factor(c, i) for i in range(6)] == pytest.approx(expected)
    assert lr_factor(c, 4) == pytest.approx(0.5)
    c.schedule = "constant"
    assert [lr_factor(c, i) for i in range(6)] == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    run = cfg(tmp_path, lr=0.1, warmup_steps=2, max_steps=6, schedule="linear")
    Trainer(tiny_model(), run, ToyData(32)).train()
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in logs] == pytest.approx([0.0, 0.05, 0.1, 0.075, 0.05, 0.025])
    assert all(r["loss"] > 0 and r["grad_norm"] >= 0 and r["tokens_per_s"] > 0 for r in logs)


def test_no_weight_decay_on_biases_and_norms():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and "norm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n in names.values() if n.endswith("bias") or "norm" in n
    }


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    state = {"step": 1, "x": torch.ones(2)}
    first = write_checkpoint(tmp_path, 1, {"w": torch.zeros(3)}, state, {"a": 1})

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, 2, {"w": torch.ones(3)}, state, {"a": 1})
    with pytest.raises(OSError, match="disk full"):  # the same step again: the old one must survive
        write_checkpoint(tmp_path, 1, {"w": torch.ones(3)}, state, {"a": 1})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint-1"]
    w, s = read_checkpoint(first)
    assert torch.equal(w["w"], torch.zeros(3)) and s["step"] == 1
    for step in (2, 3, 4):
        write_checkpoint(tmp_path, step, {"w": torch.ones(3)}, state, {}, keep_last=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-3", "checkpoint-4"]


def test_eval_metrics_and_export(tmp_path):
    model = tiny_model()
    run = cfg(tmp_path, max_steps=4, eval_every=2, max_eval_batches=2, batch_size=4)
    trainer = Trainer(model, run, ToyData(32), eval_data=ToyData(10, seed=5), metrics=classification_metrics)
    result = trainer.train()
    assert set(result) == {"eval_loss", "eval_accuracy", "eval_macro_f1"}
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "eval_loss" in r] == [2, 4]
    # eval_loss is the mean over the first 8 eval samples
    model.eval()
    batch = {k: torch.stack([ToyData(10, seed=5)[i][k] for i in range(8)]) for k in ("input_ids", "labels")}
    with torch.no_grad():
        assert result["eval_loss"] == pytest.approx(float(model(**batch).loss), abs=1e-5)
    trainer.save_pretrained(tmp_path / "hf")
    loaded = LongformerForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert_same(weights(model), weights(loaded))


def test_bf16_on_cpu_and_gradient_checkpointing_train(tmp_path):
    model = tiny_model()
    trainer = Trainer(
        model, cfg(tmp_path, max_steps=2, precision="bf16", gradient_checkpointing=True), ToyData(16)
    )
    assert model.longformer.encoder.gradient_checkpointing
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"fp16.*CUDA"):
        Trainer(tiny_model(), cfg(tmp_path, precision="fp16"), ToyData(8))
    with pytest.raises(ValueError, match="schedule"):
        cfg(tmp_path, schedule="exp")
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        Trainer(tiny_model(), cfg(tmp_path, batch_size=4, grad_accum=4), ToyData(8)).train()
    with pytest.raises(ValueError, match="divide evenly among 2"):
        StepBatchSampler(16, cfg(tmp_path, batch_size=3), rank=0, world_size=2)


class OOMModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, **batch):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_explained(tmp_path):
    with pytest.raises(TrainingOutOfMemoryError, match=r"smaller batch_size.*gradient_checkpointing") as info:
        Trainer(OOMModel(), cfg(tmp_path), ToyData(8)).train()
    assert "step 1" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)


def test_data_order_is_a_function_of_seed_epoch_and_step(tmp_path):
    c = cfg(tmp_path, batch_size=4, grad_accum=2, seed=3)
    full = iter(StepBatchSampler(20, c))
    batches = [next(full) for _ in range(10)]  # 2 epochs of 2 steps x 2 micro-batches, +2
    for epoch in (batches[:4], batches[4:8]):  # 16 distinct samples of 20; the 4 left over are dropped
        seen = [i for micro in epoch for i in micro]
        assert len(set(seen)) == 16 and set(seen) <= set(range(20)) and seen != sorted(seen)
    assert batches[:4] != batches[4:8]  # a new permutation each epoch
    later = iter(StepBatchSampler(20, c, start_step=3))
    assert [next(later) for _ in range(4)] == batches[6:10]
    ranks = [iter(StepBatchSampler(20, c, rank=r, world_size=2)) for r in range(2)]
    assert [next(ranks[0]) + next(ranks[1]) for _ in range(4)] == batches[:4]
    assert eval_batches(5, 4, rank=1, world_size=2) == [([2, 3], True), ([4], False)]
    assert eval_batches(5, 4, rank=0, world_size=2) == [([0, 1], True), ([4], True)]


def test_group_by_length_gives_steps_of_similar_lengths(tmp_path):
    import numpy as np

    from longseq.training.data import GROUP_STEPS

    lengths = np.random.default_rng(0).integers(500, 2000, 1000)
    c = cfg(tmp_path, batch_size=8, grad_accum=2, seed=1, group_by_length=True)
    sampler = iter(StepBatchSampler(1000, c, lengths=lengths))
    steps = [next(sampler) + next(sampler) for _ in range(2 * (1000 // 16))]  # two epochs
    epoch = [i for step in steps[: 1000 // 16] for i in step]
    assert sorted(epoch) == sorted(set(epoch)) and len(epoch) == 992  # each sample once, 8 left over
    spread = np.mean([np.ptp(lengths[s]) for s in steps])
    random_spread = np.mean([np.ptp(lengths[np.random.default_rng(i).choice(1000, 16)]) for i in range(100)])
    assert spread < random_spread / 10  # ListOps-like lengths: far less padding than random batches
    assert steps[: 1000 // 16] != steps[1000 // 16 :]  # a new order each epoch
    first = np.mean([lengths[s].mean() for s in steps[:GROUP_STEPS]])  # steps shuffled within a run:
    assert abs(first - lengths.mean()) < 250  # not shortest first
    later = iter(StepBatchSampler(1000, c, start_step=5, lengths=lengths))  # resume: the same steps
    assert [next(later) + next(later) for _ in range(3)] == steps[5:8]
    with pytest.raises(ValueError, match="group_by_length needs"):
        StepBatchSampler(1000, c)


def test_evaluating_leaves_the_training_as_it_is(tmp_path):
    """Reformer's LSH without a seed draws rotations in eval too: evaluation must not move the RNG."""
    cls, config = _families()[1]
    ids = torch.randint(3, 32, (12, 32), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    trained = []
    for every in (0, 1):
        torch.manual_seed(0)
        model = cls(config)
        Trainer(model, cfg(tmp_path / str(every), eval_every=every), data, data[:4]).train()
        trained.append(weights(model))
    assert_same(*trained)


def _families():
    from longseq.models import BigBirdForMaskedLM, ReformerModelWithLMHead
    from longseq.models.configs import BigBirdConfig, ReformerConfig

    bigbird = BigBirdConfig(  # BigBird MLM keeps an unused pooler: parameters with no optimizer state
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        block_size=4,
        num_random_blocks=1,
        max_position_embeddings=64,
    )
    reformer = ReformerConfig(  # LSH draws random rotations: the RNG must be restored
        vocab_size=32,
        hidden_size=16,
        attention_head_size=8,
        num_attention_heads=2,
        attn_layers=("local", "lsh"),
        axial_pos_shape=(4, 8),
        axial_pos_embds_dim=(8, 8),
        feed_forward_size=32,
        local_attn_chunk_length=8,
        lsh_attn_chunk_length=8,
        num_buckets=4,
        is_decoder=True,
        max_position_embeddings=32,
    )
    return [(BigBirdForMaskedLM, bigbird), (ReformerModelWithLMHead, reformer)]


@pytest.mark.parametrize("family", [0, 1], ids=["bigbird_mlm", "reformer_lm"])
def test_eval_loss_is_the_token_mean_whatever_the_batch_size(tmp_path, family):
    """LM losses are means over labelled tokens: eval batches weigh by them, not by samples."""
    from functools import partial

    from longseq.training.tasks import pad_collate

    make, config = _families()[family]
    torch.manual_seed(0)
    model = make(config)
    gen = torch.Generator().manual_seed(1)
    data = []
    for i, n in enumerate([9, 20, 14, 31, 6, 25, 12]):
        ids = torch.randint(3, 32, (n,), generator=gen)
        labels = ids.clone()
        labels[torch.rand(n, generator=gen) < (0.2 + 0.1 * i)] = -100  # unequal labelled counts
        data.append({"input_ids": ids, "labels": labels})
    losses = []
    for bs in (1, 3, 7):
        c = cfg(tmp_path, batch_size=bs)
        losses.append(
            Trainer(model, c, data, data, collate_fn=partial(pad_collate, pad_id=0)).evaluate()["eval_loss"]
        )
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and losses[2] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize("family", [0, 1], ids=["bigbird_mlm", "reformer_lm"])
def test_other_families_resume_exactly(tmp_path, family):
    cls, config = _families()[family]
    ids = torch.randint(3, 32, (12, 32), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    run = dict(max_steps=4, save_every=2, batch_size=4, lr=1e-2)

    def model(seed):
        torch.manual_seed(seed)
        return cls(config)

    straight = model(0)
    Trainer(straight, cfg(tmp_path / "a", **run), data).train()
    Trainer(model(0), cfg(tmp_path / "b", **run), data).train(stop_at=2)
    resumed = model(1)
    trainer = Trainer(resumed, cfg(tmp_path / "b", **run), data)
    trainer.resume()
    trainer.train()
    assert_same(weights(straight), weights(resumed))
