"""Which samples each rank reads: a deterministic function of (seed, epoch, step, rank).

Epoch `e` visits the samples in the order of a permutation drawn from `numpy.random.default_rng([seed,
e])` (or in order, without shuffling). Optimizer step `s` of the epoch takes the `batch_size *
grad_accum` samples at `[s * S, (s + 1) * S)` of that order (the tail that fills no whole step is
dropped), micro-batch `m` the `batch_size` of them at `m * batch_size`, and rank `r` of `W` the
`r`-th of `W` equal slices of that. So a run resumed at step `s` reads exactly what an unbroken run
reads, and W processes together read what one process reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .config import TrainConfig


def steps_per_epoch(num_samples: int, config: TrainConfig) -> int:
    """Whole optimizer steps in one pass over `num_samples` samples; a clear error when there are none."""
    steps = num_samples // config.samples_per_step
    if steps == 0:
        raise ValueError(
            f"the training set has {num_samples} samples, fewer than one optimizer step needs "
            f"(batch_size {config.batch_size} x grad_accum {config.grad_accum} = {config.samples_per_step})"
        )
    return steps


def sample_lengths(data: Any) -> np.ndarray:
    """Tokens per sample, for `group_by_length`: `data.lengths()` where the dataset has it, else the
    length of each sample's `input_ids` (a dict sample) or first element (a tuple sample)."""
    if hasattr(data, "lengths"):
        return np.asarray(data.lengths())
    out = np.empty(len(data), dtype=np.int64)
    for i in range(len(data)):
        s = data[i]
        ids = s.get("input_ids") if isinstance(s, dict) else (s[0] if isinstance(s, (tuple, list)) else None)
        if ids is None or not hasattr(ids, "__len__"):
            raise ValueError(
                f"group_by_length: training sample {i} has no input_ids to measure; turn group_by_length off"
            )
        out[i] = len(ids)
    return out


GROUP_STEPS = 50  # steps whose samples `group_by_length` sorts together (HF's megabatch is 50 batches)


def epoch_order(
    num_samples: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    lengths: np.ndarray | None = None,
    step_size: int = 1,
) -> np.ndarray:
    """The order in which epoch `epoch` visits the samples (int64 indices).

    With `lengths`, each run of GROUP_STEPS * step_size samples is sorted by length and its steps
    (blocks of `step_size`) are shuffled, so every step holds samples of similar lengths.
    """
    if not shuffle:
        order = np.arange(num_samples, dtype=np.int64)
    else:
        order = np.random.default_rng([seed, epoch]).permutation(num_samples).astype(np.int64)
    if lengths is None:
        return order
    rng = np.random.default_rng([seed, epoch, 1])
    run = GROUP_STEPS * step_size
    for start in range(0, num_samples - num_samples % step_size, run):
        part = order[start : min(start + run, num_samples - num_samples % step_size)]
        part = part[np.argsort(lengths[part], kind="stable")]
        blocks = part.reshape(-1, step_size)
        order[start : start + part.size] = blocks[rng.permutation(len(blocks))].reshape(-1)
    return order


class StepBatchSampler:
    """A DataLoader `batch_sampler`: this rank's micro-batches from optimizer step `start_step` on, forever.

    Yields lists of dataset indices, `grad_accum` of them per optimizer step.
    """

    def __init__(
        self,
        num_samples: int,
        config: TrainConfig,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        lengths: np.ndarray | None = None,
    ) -> None:
        if config.batch_size % world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is the global batch and must divide evenly among "
                f"{world_size} processes"
            )
        if config.group_by_length and (lengths is None or len(lengths) != num_samples):
            raise ValueError(
                "group_by_length needs the training samples' lengths (training.data.sample_lengths), "
                "or turn group_by_length off"
            )
        self.lengths = np.asarray(lengths) if config.group_by_length else None
        self.num_samples, self.config = num_samples, config
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.steps_per_epoch = steps_per_epoch(num_samples, config)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of the optimizer step with 0-based index `step`."""
        return divmod(step, self.steps_per_epoch)

    def __iter__(self) -> Iterator[list[int]]:
        c, step = self.config, self.start_step
        per_rank = c.batch_size // self.world_size
        epoch, order = -1, np.empty(0, dtype=np.int64)
        while True:
            e, s = self.position(step)
            if e != epoch:
                epoch = e
                order = epoch_order(self.num_samples, c.seed, e, c.shuffle, self.lengths, c.samples_per_step)
            base = s * c.samples_per_step
            for m in range(c.grad_accum):
                start = base + m * c.batch_size + self.rank * per_rank
                yield order[start : start + per_rank].tolist()
            step += 1


def eval_batches(
    num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, max_batches: int | None = None
) -> list[tuple[list[int], bool]]:
    """This rank's evaluation batches, in order: (indices, real).

    Global batches of `batch_size` consecutive samples; each rank takes its slice of every one. A
    rank whose slice of the last, short batch is empty gets sample 0 of that batch with `real` False:
    it must still run the forward (FSDP gathers parameters in it), but its result is not counted.
    """
    out: list[tuple[list[int], bool]] = []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        batch = list(range(start, min(start + batch_size, num_samples)))
        per = -(-len(batch) // world_size)
        mine = batch[rank * per : (rank + 1) * per]
        out.append((mine, True) if mine else ([batch[0]], False))
    return out


def count_tokens(batch: Any) -> int:
    """Real tokens in a batch: attention_mask.sum() when there is one, else input_ids.numel()."""
    if isinstance(batch, dict):
        if batch.get("attention_mask") is not None:
            return int(batch["attention_mask"].sum())
        if batch.get("input_ids") is not None:
            return int(batch["input_ids"].numel())
    return 0
