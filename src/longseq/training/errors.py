"""Errors the trainer raises with a diagnosis."""

from __future__ import annotations

import torch


class TrainingDivergedError(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; nothing was saved after it."""

    def __init__(self, step: int, what: str, value: float, last_checkpoint: str | None) -> None:
        kept = (
            f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved"
        )
        super().__init__(
            f"training diverged at step {step}: {what} is {value}; stopped before the optimizer step, "
            f"{kept}. Try a lower lr, more warmup_steps, max_grad_norm, or fp32 / bf16 instead of fp16."
        )
        self.step = step


class TrainingOutOfMemoryError(RuntimeError):
    """The device ran out of memory; the message says what to shrink."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(
            f"out of memory {where} ({detail}). Try a smaller batch_size with a larger grad_accum "
            "(the same samples per step), gradient_checkpointing=True, precision='bf16', or shorter "
            "sequences (a smaller max length)."
        )


def is_oom(error: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError that says 'out of memory' (any allocator)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )
