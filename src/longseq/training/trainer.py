"""`Trainer`: one training loop for every family and head.

    trainer = Trainer(model, TrainConfig(lr=3e-5, max_steps=1000, batch_size=32, output_dir="runs/x"),
                      train_data, eval_data, collate_fn=collate, metrics=classification_metrics)
    trainer.resume("runs/x")   # optional: continue exactly where the last checkpoint stopped
    trainer.train()

Data: map-style datasets (`len`, `[i]`); `collate_fn` turns a list of samples into a dict of
keyword arguments for `model(**batch)`, which must include the labels so that the output has a
`.loss`. Run it under `torchrun` for DDP / FSDP2; see `distributed.py`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from . import distributed as D
from .checkpoint import latest_checkpoint, read_checkpoint, resolve_checkpoint, write_checkpoint
from .config import TrainConfig
from .data import StepBatchSampler, count_tokens, eval_batches, sample_lengths
from .errors import TrainingDivergedError, TrainingOutOfMemoryError, is_oom
from .graphs import GraphedStep
from .logger import RunLogger
from .optim import build_optimizer, build_scheduler
from .rng import get_rng_state, seed_everything, set_rng_state

Metrics = Callable[[list[Any], list[Any]], dict[str, float]]
STATE_FORMAT = 1


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Set `gradient_checkpointing = True` on every module that has the flag; returns how many."""
    found = 0
    for module in model.modules():
        if isinstance(getattr(module, "gradient_checkpointing", None), bool):
            module.gradient_checkpointing = True
            found += 1
    return found


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _predictions(out: Any) -> Any:
    if getattr(out, "logits", None) is not None:
        return out.logits.detach().float().cpu()
    if getattr(out, "start_logits", None) is not None:  # question answering
        return (out.start_logits.detach().float().cpu(), out.end_logits.detach().float().cpu())
    raise ValueError(f"{type(out).__name__} has no logits (nor start_logits) for metrics")


def _loss_weight(batch: Any, samples: int, shift: int) -> torch.Tensor | int:
    """What a batch's mean loss averages over: its labelled tokens for token-level labels (MLM, causal
    LM after the model's `shift`, tagging), else its samples. Weighting batch means by it makes
    `eval_loss` the corpus mean, whatever the batch size."""
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if isinstance(labels, torch.Tensor) and labels.dim() >= 2 and not labels.is_floating_point():
        return (labels[..., shift:] != -100).sum()
    return samples


def _labels(batch: dict) -> Any:
    if batch.get("labels") is not None:
        return batch["labels"].cpu()
    if batch.get("start_positions") is not None:
        return (batch["start_positions"].cpu(), batch["end_positions"].cpu())
    raise ValueError("the eval batch has no labels (nor start_positions / end_positions) for metrics")


def _loss_of(out: Any) -> torch.Tensor:
    loss = getattr(out, "loss", None)
    if loss is None:
        raise ValueError("the model returned no loss: the batch must include labels")
    return loss


MAX_GRAPHS = 4  # batch shapes captured (each graph keeps a step's memory); later shapes run eagerly


class Trainer:
    """AdamW + warm-up/decay, accumulation, clipping, AMP, eval, atomic checkpoints, exact resume."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
        metrics: Metrics | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        config.validate()
        if not (hasattr(train_data, "__len__") and hasattr(train_data, "__getitem__")):
            raise TypeError(
                "train_data must be a map-style dataset (len() and [i]) so that resume can skip batches"
            )
        self.config, self.train_data, self.eval_data = config, train_data, eval_data
        self.collate_fn, self.metrics = collate_fn, metrics
        self.dist = D.setup(device)
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is global and must divide evenly among "
                f"{self.dist.world_size} processes"
            )
        dev = self.dist.device
        if config.precision == "fp16" and dev.type != "cuda":
            raise ValueError(
                "precision 'fp16' needs a CUDA device (it trains with a GradScaler); on CPU use "
                "'bf16' or 'fp32'"
            )
        if config.precision == "fp16" and config.strategy == "fsdp" and self.dist.distributed:
            raise ValueError("precision 'fp16' with strategy 'fsdp' is not supported; use 'bf16'")
        if config.precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU has no bf16; use precision 'fp16' or 'fp32'")
        seed_everything(config.seed + self.dist.rank)  # dropout differs per rank, as it would per sample
        reversible = any(getattr(m, "reversible", False) for m in model.modules())  # Reformer
        if config.gradient_checkpointing and not enable_gradient_checkpointing(model) and not reversible:
            warnings.warn("gradient_checkpointing: the model has no module with that flag", stacklevel=2)
        self.model = model.to(dev)  # the user's module (for FSDP2 the same object, sharded in place)
        self.module = D.wrap(self.model, config.strategy, self.dist)  # what forward runs on
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        self.step = 0
        self.last_checkpoint: Path | None = latest_checkpoint(config.output_dir)
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        self._graphs: dict[tuple, GraphedStep | None] | None = None  # batch signature -> its step
        if config.cuda_graphs:
            self._graphs = self._graphs_allowed()

    # ----------------------------------------------------------------------------------- helpers

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    def _autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """The precision's autocast; cache=False: without its weight cache (which a graph cannot keep)."""
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self._amp_dtype, cache_enabled=cache)

    def _graphs_allowed(self) -> dict | None:
        """{} when training steps go through `GraphedStep` (cuda_graphs), else None after saying why."""
        why = None
        if self.dist.distributed:
            why = "it runs in one process only (no gradient all-reduce inside a graph)"
        elif getattr(self.model, "cuda_graph_unsafe", None):
            why = f"{type(self.model).__name__} cannot be replayed: {self.model.cuda_graph_unsafe}"
        if why is not None:
            warnings.warn(f"cuda_graphs: training eagerly, since {why}", stacklevel=3)
            return None
        if self.dist.device.type != "cuda":
            warnings.warn("cuda_graphs: no CUDA device: the steps run eagerly (same results)", stacklevel=3)
        return {}

    def _graphed_loss(self, batch: Any) -> torch.Tensor | None:
        """The micro-step through its batch shape's CUDA graph (captured on first sight): the loss,
        gradients in .grad. None: this batch runs eagerly (not a dict of tensors, too many shapes,
        or its capture failed)."""
        assert self._graphs is not None
        if not isinstance(batch, dict) or not all(isinstance(t, torch.Tensor) for t in batch.values()):
            return None
        names = tuple(sorted(batch))
        tensors = [batch[k] for k in names]
        key = (names, *((tuple(t.shape), t.dtype) for t in tensors))
        if key not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:
                return None

            def loss_fn(*inputs: torch.Tensor) -> torch.Tensor:
                with self._autocast(cache=False):
                    out = self.module(**dict(zip(names, inputs, strict=True)))
                return _loss_of(out).float()

            try:
                self._graphs[key] = GraphedStep(loss_fn, self.model, *tensors)
            except Exception as e:  # a host read while capturing; a replay unlike the eager step
                if isinstance(e, ValueError) or is_oom(e):  # the batch's own error, or memory
                    raise
                warnings.warn(f"cuda_graphs: batch {key[1:]} runs eagerly, capture failed: {e}", stacklevel=2)
                self._graphs[key] = None
        step = self._graphs[key]
        return None if step is None else step(*tensors)

    def _oom(self, error: BaseException, where: str) -> TrainingOutOfMemoryError:
        per_rank = self.config.batch_size // self.dist.world_size
        return TrainingOutOfMemoryError(
            where,
            f"batch_size {self.config.batch_size} = {per_rank} per process, "
            f"grad_accum {self.config.grad_accum}, precision {self.config.precision}, "
            f"gradient_checkpointing {self.config.gradient_checkpointing}; {error}",
        )

    def _loader(self) -> DataLoader:
        lengths = sample_lengths(self.train_data) if self.config.group_by_length else None
        sampler = StepBatchSampler(
            len(self.train_data), self.config, self.dist.rank, self.dist.world_size, self.step, lengths
        )
        return DataLoader(
            self.train_data,  # type: ignore[arg-type]
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=self.dist.device.type == "cuda",
            generator=torch.Generator(),  # the loader's seed draw must not touch the global RNG
        )

    # ------------------------------------------------------------------------------------- train

    def train(self, stop_at: int | None = None) -> dict[str, float]:
        """Train from `self.step` to `config.max_steps`; returns the last eval metrics (or {}).

        `stop_at`: stop after that step instead (the schedule still runs to `max_steps`; a later
        `train()` continues), as if the run were interrupted there.
        """
        c = self.config
        end = c.max_steps if stop_at is None else min(stop_at, c.max_steps)
        logger = RunLogger(c.output_dir, enabled=self.dist.is_main)
        show = c.progress_bar and self.dist.is_main and sys.stderr.isatty()
        from tqdm.auto import tqdm

        bar = tqdm(total=c.max_steps, initial=self.step, disable=not show, desc="train", dynamic_ncols=True)
        batches = iter(self._loader())
        self.module.train()
        window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.perf_counter()}
        last_eval: dict[str, float] = {}
        try:
            while self.step < end:
                loss, tokens, grad_norm, lr = self._train_step(batches)
                self.step += 1
                bar.update(1)
                window["loss"] += loss
                window["steps"] += 1
                window["tokens"] += tokens
                if c.log_every and self.step % c.log_every == 0:
                    elapsed = time.perf_counter() - window["start"]
                    record = {
                        "step": self.step,
                        "loss": window["loss"] / window["steps"],
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens_per_s": window["tokens"] / max(elapsed, 1e-9),
                        "epoch": self.step / (len(self.train_data) // c.samples_per_step),
                    }
                    logger.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                    window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.perf_counter()}
                done = self.step == c.max_steps
                if self.eval_data is not None and ((c.eval_every and self.step % c.eval_every == 0) or done):
                    last_eval = self.evaluate()
                    logger.log({"step": self.step, **last_eval})
                if c.save_every and (self.step % c.save_every == 0 or done):
                    self.save_checkpoint()
        finally:
            bar.close()
            logger.close()
        return last_eval

    def _train_step(self, batches: Any) -> tuple[float, int, float, float]:
        """One optimizer step over `grad_accum` micro-batches: (loss, tokens, grad norm, lr), all ranks."""
        c, dev = self.config, self.dist.device
        step = self.step + 1
        loss_sum = torch.zeros((), device=dev)
        tokens = 0
        try:
            for m in range(c.grad_accum):
                batch = next(batches)
                tokens += count_tokens(batch)
                batch = _to_device(batch, dev)
                loss = self._graphed_loss(batch) if self._graphs is not None else None
                if loss is None:
                    with D.gradient_sync(self.module, m == c.grad_accum - 1):
                        with self._autocast():
                            out = self.module(**batch)
                        loss = _loss_of(out)
                        self.scaler.scale(loss.float() / c.grad_accum).backward()
                loss_sum += loss.detach().float()
        except Exception as e:
            if is_oom(e):
                raise self._oom(e, f"in training step {step}") from e
            raise
        stats = D.all_reduce_sum(
            torch.stack([loss_sum / c.grad_accum, torch.tensor(float(tokens), device=dev)])
        )
        mean_loss = float(stats[0]) / self.dist.world_size
        last = str(self.last_checkpoint) if self.last_checkpoint else None
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDivergedError(step, "the loss", mean_loss, last)
        self.scaler.unscale_(self.optimizer)
        max_norm = c.max_grad_norm if c.max_grad_norm else math.inf
        grad_norm = float(D.to_local(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():  # fp16: the scaler skips the step
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDivergedError(step, "the gradient norm", grad_norm, last)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, int(stats[1]), grad_norm, lr

    # -------------------------------------------------------------------------------------- eval

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss (`eval_loss`) and `metrics(...)` over the eval set, the same on every rank."""
        if self.eval_data is None:
            raise ValueError("no eval_data was given")
        c, dev = self.config, self.dist.device
        # DDP: the inner module (no collectives needed); FSDP2: the sharded module on every rank
        module = self.module if D.is_fsdp(self.module) else self.model
        was_training = module.training
        module.eval()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        count = torch.zeros((), device=dev, dtype=torch.float64)
        shift = int(getattr(self.model, "lm_loss_shift", 0))
        preds: list[Any] = []
        labels: list[Any] = []
        plan = eval_batches(
            len(self.eval_data), c.batch_size, self.dist.rank, self.dist.world_size, c.max_eval_batches
        )
        # evaluation leaves the random state as it found it (LSH without a seed draws rotations), so
        # how often a run evaluates never changes what it trains
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            try:
                for indices, real in plan:
                    batch = self.collate_fn([self.eval_data[i] for i in indices])
                    batch = _to_device(batch, dev)
                    with self._autocast():
                        out = module(**batch)
                    if not real:
                        continue
                    if getattr(out, "loss", None) is not None:
                        weight = _loss_weight(batch, len(indices), shift)
                        if (
                            not isinstance(weight, int) or weight
                        ):  # (0 labelled tokens: a NaN mean, no weight)
                            loss_sum += torch.nan_to_num(out.loss.double()) * weight
                            count += weight
                    if self.metrics is not None:
                        preds.append(_predictions(out))
                        labels.append(_labels(batch))
            except Exception as e:
                if is_oom(e):
                    raise self._oom(e, "in evaluation") from e
                raise
            finally:
                module.train(was_training)
        stats = D.all_reduce_sum(torch.stack([loss_sum, count]))
        result: dict[str, float] = {}
        if float(stats[1]) > 0:
            result["eval_loss"] = float(stats[0] / stats[1])
        if self.metrics is not None:
            gathered = D.all_gather_objects((preds, labels))
            # batch b of rank r holds the r-th slice of global batch b: interleave to the dataset order
            all_preds = [g[0][b] for b in range(len(preds)) for g in gathered if b < len(g[0])]
            all_labels = [g[1][b] for b in range(len(preds)) for g in gathered if b < len(g[1])]
            result.update({f"eval_{k}": float(v) for k, v in self.metrics(all_preds, all_labels).items()})
        return result

    # ------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write `output_dir/checkpoint-<step>` (rank 0; every rank must call it). Returns its path."""
        model_state = D.full_model_state(self.module)
        optim_state = D.full_optimizer_state(self.module, self.optimizer)
        rng = D.all_gather_objects(get_rng_state(self.dist.device))
        path = None
        if self.dist.is_main:
            c = self.config
            state = {
                "format": STATE_FORMAT,
                "step": self.step,
                "optimizer": optim_state,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "world_size": self.dist.world_size,
                "data": {
                    "seed": c.seed,
                    "shuffle": c.shuffle,
                    "samples_per_step": c.samples_per_step,
                    "samples_seen": self.step * c.samples_per_step,
                    "dataset_size": len(self.train_data),
                },
                "config": c.to_dict(),
            }
            path = write_checkpoint(c.output_dir, self.step, model_state, state, c.to_dict(), c.keep_last)
        self.last_checkpoint = Path(self.config.output_dir) / f"checkpoint-{self.step}"
        D.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Load a checkpoint (a checkpoint folder, or the newest in an output dir; default output_dir).

        Restores weights, optimizer, scheduler, scaler, RNG states and the data position; training
        then continues exactly as the unbroken run would have. Returns the step resumed at.
        """
        folder = resolve_checkpoint(path if path is not None else self.config.output_dir)
        weights, state = read_checkpoint(folder)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{folder}: trainer_state format {state.get('format')} is not {STATE_FORMAT}")
        data, c = state["data"], self.config
        now = {
            "seed": c.seed,
            "shuffle": c.shuffle,
            "samples_per_step": c.samples_per_step,
            "dataset_size": len(self.train_data),
        }
        changed = {k: (data[k], v) for k, v in now.items() if data.get(k) != v}
        if changed:
            warnings.warn(
                f"resuming with a different data setup {changed}: the data order will differ", stacklevel=2
            )
        D.load_full_state(self.module, self.optimizer, weights, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            warnings.warn(
                f"checkpoint from {len(rng)} processes resumed on {self.dist.world_size}: dropout RNG "
                "streams are not the same as an unbroken run",
                stacklevel=2,
            )
        set_rng_state(rng[self.dist.rank % len(rng)], self.dist.device)
        self.step = int(state["step"])
        self.last_checkpoint = folder
        return self.step

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the trained model as a Hugging Face folder (longseq models; every rank must call it)."""
        full = D.full_model_state(self.module)
        if self.dist.is_main:
            if not hasattr(self.model, "save_pretrained") or not hasattr(self.model, "config"):
                raise TypeError(f"{type(self.model).__name__} has no save_pretrained")
            if D.is_fsdp(self.module):  # sharded in place: rebuild an unsharded copy on CPU
                copy = type(self.model)(self.model.config)
                copy.load_state_dict(full)
                copy.save_pretrained(folder)
            else:
                self.model.save_pretrained(folder)
        D.barrier()
