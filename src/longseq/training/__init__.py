"""Training for every longseq family and head: `Trainer` + `TrainConfig`, single process or torchrun."""

from .checkpoint import checkpoint_dirs, latest_checkpoint, read_checkpoint, write_checkpoint
from .config import TrainConfig
from .errors import TrainingDivergedError, TrainingOutOfMemoryError
from .optim import build_optimizer, build_scheduler, lr_factor, param_groups
from .trainer import Trainer, enable_gradient_checkpointing

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "TrainingOutOfMemoryError",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_dirs",
    "enable_gradient_checkpointing",
    "latest_checkpoint",
    "lr_factor",
    "param_groups",
    "read_checkpoint",
    "write_checkpoint",
]
