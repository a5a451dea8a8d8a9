"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: trains the tiny model with each strategy.

Writes `<out>/<strategy>_rank<r>.pt`: final weights, eval results, and the weights of a run that
was stopped half-way and resumed by a new Trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from train_helpers import ToyData, tiny_model, weights

from longseq.training import TrainConfig, Trainer
from longseq.training.metrics import classification_metrics


def config(out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**RUN, "output_dir": str(out), **kw})


RUN = dict(
    lr=1e-2,
    max_steps=4,
    batch_size=8,
    grad_accum=1,
    weight_decay=0.01,
    warmup_steps=1,
    max_grad_norm=0.5,
    log_every=1,
    save_every=2,
    progress_bar=False,
)


def main(out: Path, strategies: list[str]) -> None:
    data, eval_data = ToyData(32), ToyData(5, seed=9)
    for strategy in strategies:
        model = tiny_model()
        trainer = Trainer(
            model, config(out / strategy, strategy=strategy), data, eval_data, metrics=classification_metrics
        )
        kind = type(trainer.module).__name__
        assert kind == (
            "DistributedDataParallel" if strategy == "ddp" else "FSDPLongformerForSequenceClassification"
        ), kind
        result = trainer.train()
        final = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in weights(model).items()}
        half = tiny_model()
        Trainer(half, config(out / f"{strategy}-resume", strategy=strategy), data).train(stop_at=2)
        again = tiny_model(seed=5)
        resumed = Trainer(again, config(out / f"{strategy}-resume", strategy=strategy), data)
        resumed.resume()
        resumed.train()
        res = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in weights(again).items()}
        rank = dist.get_rank()
        torch.save({"weights": final, "eval": result, "resumed": res}, out / f"{strategy}_rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2].split(","))
