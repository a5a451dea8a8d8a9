"""`TrainConfig`: every knob of the trainer, one flat dataclass (the CLI's flags mirror its fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class TrainConfig:
    """What to train and how.

    Batches: `batch_size` is the global size of one forward / backward (summed over all processes);
    one optimizer step sees `batch_size * grad_accum` samples. Under torchrun each rank reads
    `batch_size // world_size` of every global batch, so the result equals one process training on
    the same global batches. Steps count optimizer updates.
    """

    # optimizer: AdamW, no weight decay on biases and norm weights
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # schedule: linear warm-up to `lr` over `warmup_steps`, then "linear" / "cosine" decay to 0 at
    # `max_steps`, or "constant" (transformers' get_*_schedule_with_warmup, the same values)
    warmup_steps: int = 0
    max_steps: int = 1000
    schedule: str = "linear"
    # batches
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # None or 0: no clipping (the norm is still logged)
    shuffle: bool = True  # order of each epoch: a permutation drawn from (seed, epoch) only
    # batches of similar lengths: each run of GROUP_STEPS steps' samples sorted by length, the steps
    # then shuffled (about half the padding of random batches on ListOps; needs dataset.lengths())
    group_by_length: bool = False
    num_workers: int = 0  # DataLoader workers for the training data
    # numerics and memory
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (fp16: CUDA only, with a GradScaler)
    gradient_checkpointing: bool = False  # recompute encoder layers in backward (Reformer: reversible)
    # capture each batch shape's forward + backward as a CUDA graph and replay it (`graphs.py`): no
    # host time per step. One process, grad_accum 1, not fp16; models that read device values on the
    # host (the Longformer's global tokens) and shapes past the first few train eagerly
    cuda_graphs: bool = False
    # when to evaluate, save, log, in optimizer steps. eval_every 0: only after the last step;
    # save_every 0: never save; otherwise also after the last step
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 10
    keep_last: int = 3  # checkpoints kept in output_dir (older ones are removed); 0 = keep all
    max_eval_batches: int | None = None  # None: the whole eval set
    # run
    seed: int = 0
    output_dir: str = "runs/longseq"
    progress_bar: bool = True  # tqdm; shown only on rank 0 and only when stderr is a terminal
    strategy: str = "auto"  # "auto" (DDP when more than one process) | "ddp" | "fsdp" (FSDP2)

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when a value cannot work."""
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("strategy", self.strategy, STRATEGIES)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}"
            )
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "log_every", "keep_last", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.cuda_graphs and self.grad_accum != 1:
            raise ValueError(
                f"cuda_graphs replays whole steps and does not accumulate gradients: set grad_accum 1 "
                f"(got {self.grad_accum}) and a larger batch_size, or turn cuda_graphs off"
            )
        if self.cuda_graphs and self.precision == "fp16":
            raise ValueError("cuda_graphs does not run fp16's GradScaler: use precision 'bf16' or 'fp32'")
        if self.max_eval_batches is not None and self.max_eval_batches < 1:
            raise ValueError(f"max_eval_batches must be >= 1 or None, got {self.max_eval_batches}")

    @property
    def samples_per_step(self) -> int:
        """Samples one optimizer step consumes (all processes together)."""
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (betas as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no fields {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
