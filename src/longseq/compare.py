"""`longseq compare`: dense attention, Longformer, BigBird and Reformer of one size, trained alike on a
long-range task, reported side by side (accuracy, throughput, latency, memory, parameters, accuracy
by length, and speed / memory against length).

Presets: "default" is a small ListOps that runs on 2 CPU cores in about 10 minutes; "lra" is LRA's
ListOps setting (6 layers, width 512, 8 heads, MLP 2048, batch 32, 5,000 steps, 1,000 warm-up,
lengths up to 2,000) for a GPU. Writes results.json, report.md and PNG plots into the output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import collate, listops, retrieval
from .models.bigbird import BigBirdForSequenceClassification
from .models.configs import BigBirdConfig, LongformerConfig, ReformerConfig
from .models.longformer import LongformerForSequenceClassification
from .models.reformer import ReformerForSequenceClassification
from .training import TrainConfig, Trainer
from .training.metrics import classification_metrics

MODELS = ("dense", "longformer", "bigbird", "reformer")
TASKS = ("listops", "retrieval")


@dataclass
class CompareConfig:
    """One comparison: the task, the shared model size, the training budget, the patterns' sizes."""

    task: str = "listops"
    models: tuple[str, ...] = MODELS
    # data
    train_size: int = 6000
    eval_size: int = 400
    test_size: int = 600
    min_length: int = 60
    max_length: int = 300
    max_depth: int = 6
    # the shared model size
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    ffn: int = 128
    dropout: float = 0.1
    # training budget, the same for every model
    steps: int = 400
    warmup: int = 50
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    eval_every: int = 100
    group_by_length: bool = False  # batches of similar lengths (TrainConfig.group_by_length)
    precision: str = "auto"  # bf16 on CUDA, fp32 on CPU
    seed: int = 0
    # pattern sizes
    window: int = 32
    block_size: int = 16
    random_blocks: int = 2
    chunk: int = 32
    hashes: int = 1
    # speed and memory against length (batch 1, forward + backward)
    sweep_lengths: tuple[int, ...] = (256, 512, 1024, 2048)
    output_dir: str = "runs/compare"
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "lra": dict(
        train_size=96000,
        eval_size=2000,
        test_size=2000,
        min_length=500,
        max_length=2000,
        max_depth=10,
        layers=6,
        hidden=512,
        heads=8,
        ffn=2048,
        steps=5000,
        warmup=1000,
        batch_size=32,
        lr=1e-4,
        eval_every=500,
        group_by_length=True,  # LRA padded every input to 2,000; this trains on ~1.8x fewer tokens
        window=256,
        block_size=64,
        random_blocks=3,
        chunk=64,
        sweep_lengths=(1024, 2048, 4096, 8192, 16384),
    ),
}


def preset(name: str, **changes: Any) -> CompareConfig:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return CompareConfig(**(PRESETS[name] | {k: v for k, v in changes.items() if v is not None}))


def load_task(c: CompareConfig) -> tuple[dict[str, Any], int]:
    """The task's splits and its vocabulary size."""
    if c.task == "listops":
        splits = listops.load_splits(
            train=c.train_size,
            valid=c.eval_size,
            test=c.test_size,
            seed=c.seed,
            min_length=c.min_length,
            max_length=c.max_length,
            max_depth=c.max_depth,
        )
        return splits, len(listops.VOCAB)
    if c.task == "retrieval":
        splits = retrieval.load_splits(
            train=c.train_size,
            valid=c.eval_size,
            test=c.test_size,
            seed=c.seed,
            min_length=c.min_length,
            max_length=c.max_length,
            min_distance=c.min_length // 2,
        )
        return splits, len(retrieval.make_vocab(64))
    raise ValueError(f"task must be one of {TASKS}, got {c.task!r}")


def build_model(
    name: str, c: CompareConfig, vocab: int, max_positions: int, classes: int = 10
) -> torch.nn.Module:
    """A sequence classifier of the shared size; `name` picks the attention."""
    common = dict(
        vocab_size=vocab,
        hidden_size=c.hidden,
        num_attention_heads=c.heads,
        intermediate_size=c.ffn,
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.dropout,
        pad_token_id=0,
        num_labels=classes,
    )
    if name in ("dense", "bigbird"):
        config = BigBirdConfig(
            num_hidden_layers=c.layers,
            max_position_embeddings=max_positions,
            attention_type="original_full" if name == "dense" else "block_sparse",
            block_size=c.block_size,
            num_random_blocks=c.random_blocks,
            hidden_act="gelu",
            **common,
        )
        return BigBirdForSequenceClassification(config)
    if name == "longformer":
        config = LongformerConfig(
            num_hidden_layers=c.layers,
            max_position_embeddings=max_positions + 1,
            attention_window=c.window,
            **common,
        )
        return LongformerForSequenceClassification(config)  # global attention on [CLS], as HF
    if name == "reformer":
        kinds = ["local", "lsh"] * math.ceil(c.layers / 2)
        config = ReformerConfig(
            attn_layers=kinds[: c.layers],
            vocab_size=vocab,
            hidden_size=c.hidden,
            num_attention_heads=c.heads,
            attention_head_size=c.hidden // c.heads,
            feed_forward_size=c.ffn,
            hidden_dropout_prob=c.dropout,
            local_attention_probs_dropout_prob=c.dropout,
            lsh_attention_probs_dropout_prob=c.dropout,
            local_attn_chunk_length=c.chunk,
            lsh_attn_chunk_length=c.chunk,
            num_hashes=c.hashes,
            num_buckets=None,
            axial_pos_embds=False,
            max_position_embeddings=max_positions,
            is_decoder=False,
            pad_token_id=0,
            num_labels=classes,
            hash_seed=None,
        )
        return ReformerForSequenceClassification(config)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def precision_of(c: CompareConfig, device: torch.device) -> str:
    """The run's precision: the config's, or for "auto" bf16 on CUDA and fp32 on CPU."""
    return c.precision if c.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The training precision, for inference and the sweep too (fp32: nothing)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def activation_mib(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """MiB of tensors saved for backward by one training forward: the activation memory."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    out.loss.backward()
    return total / 2**20


def _step_cost(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, precision: str = "fp32"
) -> tuple[float, float]:
    """(ms, MiB) of one forward + backward in `precision`: peak allocated on CUDA, activations on the CPU."""
    model.train()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()

    def step() -> None:
        with _autocast(device, precision):
            loss = model(**batch).loss
        loss.backward()

    for _ in range(2):  # warm-up
        step()
    _sync(device)
    start = time.perf_counter()
    reps = 3
    for _ in range(reps):
        step()
    _sync(device)
    ms = (time.perf_counter() - start) / reps * 1e3
    if device.type == "cuda":
        mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        mib = activation_mib(model, batch)
    model.zero_grad(set_to_none=True)
    return ms, mib


def _evaluate(
    model: torch.nn.Module, data: Any, c: CompareConfig, device: torch.device, collate_fn: Any = collate
) -> dict[str, Any]:
    """Accuracy on `data`, overall and by length (4 equal-count buckets), and inference latency, in
    the training precision."""
    model.eval()
    right, lengths, latency = [], [], []
    with torch.no_grad(), _autocast(device, precision_of(c, device)):
        for start in range(0, len(data), c.batch_size):
            batch = collate_fn([data[i] for i in range(start, min(start + c.batch_size, len(data)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            _sync(device)
            t0 = time.perf_counter()
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            _sync(device)
            latency.append((time.perf_counter() - t0) * 1e3)
            right += (logits.argmax(-1) == batch["labels"]).tolist()
            lengths += batch["attention_mask"].sum(1).tolist()
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets = []
    for q in range(4):
        part = order[q * len(order) // 4 : (q + 1) * len(order) // 4]
        if part:
            buckets.append(
                {
                    "length": [int(lengths[part[0]]), int(lengths[part[-1]])],
                    "accuracy": sum(right[i] for i in part) / len(part),
                }
            )
    return {
        "accuracy": sum(right) / max(len(right), 1),
        "by_length": buckets,
        "latency_ms_per_batch": sorted(latency)[len(latency) // 2],
    }


def run_model(name: str, c: CompareConfig, splits: dict[str, Any], vocab: int, out: Path) -> dict[str, Any]:
    device = _device()
    torch.manual_seed(c.seed)
    max_positions = max(c.max_length + 2, *c.sweep_lengths)
    model = build_model(name, c, vocab, max_positions)
    precision = precision_of(c, device)
    config = TrainConfig(
        lr=c.lr,
        weight_decay=c.weight_decay,
        warmup_steps=c.warmup,
        max_steps=c.steps,
        schedule="linear",
        batch_size=c.batch_size,
        precision=precision,
        eval_every=c.eval_every,
        group_by_length=c.group_by_length,
        log_every=max(c.steps // 20, 1),
        seed=c.seed,
        output_dir=str(out / name),
        progress_bar=False,
    )
    trainer = Trainer(
        model, config, splits["train"], splits["valid"], collate_fn=collate, metrics=classification_metrics
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    trained_tokens = _trained_tokens(splits["train"], config)
    history = _eval_history(out / name / "log.jsonl")
    test = _evaluate(model, splits["test"], c, device)
    sweep = []
    for n in c.sweep_lengths:
        ids = torch.randint(2, vocab, (1, n), device=device)
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.zeros(1, dtype=torch.long, device=device),
        }
        ms, mib = _step_cost(model, batch, device, precision)
        sweep.append({"length": n, "train_step_ms": ms, "memory_mib": mib})
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy": test["accuracy"],
        "accuracy_by_length": test["by_length"],
        "eval_history": history,
        "train_seconds": seconds,
        "train_tokens_per_s": trained_tokens / seconds,
        "inference_latency_ms": test["latency_ms_per_batch"],
        "peak_train_memory_mib": peak,
        "sweep": sweep,
        "device": str(device),
        "precision": precision,  # of training, inference and the sweep
    }


def _trained_tokens(data: Any, config: TrainConfig) -> int:
    """Real tokens seen in training: average sample length x samples per step x steps."""
    n = min(len(data), 2000)
    mean = sum(len(data[i][0]) for i in range(n)) / n
    return int(mean * config.batch_size * config.grad_accum * config.max_steps)


def _eval_history(log: Path) -> list[dict[str, float]]:
    rows = []
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "eval_accuracy" in record:
                rows.append({"step": record["step"], "accuracy": record["eval_accuracy"]})
    return rows


# fields that change what is measured beside training, not the training itself (the trainer's
# evaluation leaves the random state as it was, so eval_every does not change the trained weights)
_BESIDE_TRAINING = ("models", "output_dir", "eval_every", "sweep_lengths")


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two configs that differ at most in _BESIDE_TRAINING: their results can sit side by side."""
    same = {k: v for k, v in a.items() if k not in _BESIDE_TRAINING}
    return same == {k: v for k, v in b.items() if k not in _BESIDE_TRAINING}


def _earlier_results(path: Path, config: dict[str, Any], log: Any) -> dict[str, dict[str, Any]]:
    """Results of an earlier run of the same config in this folder, by model (a run split over calls)."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
        same = _same_run(json.loads(json.dumps(old["config"])), json.loads(json.dumps(config)))
        rows = {r["model"]: r for r in old["results"]}
    except (ValueError, KeyError, TypeError):
        log(f"{path} is not a compare result: it will be replaced")
        return {}
    if not same:
        log(f"{path} holds a run of another config: it will be replaced")
        return {}
    return rows


def compare(c: CompareConfig, log: Any = print) -> dict[str, Any]:
    """Train and measure every model of `c`; write results.json, report.md and plots to c.output_dir.

    results.json is rewritten after each model, so an interrupted run keeps the models it finished.
    Results of an earlier run of the same config in the same folder are kept for models not run now:
    `--models dense longformer`, then `--models bigbird reformer`, gives one four-model report.
    """
    for name in c.models:
        if name not in MODELS:
            raise ValueError(f"models must be among {MODELS}, got {name!r}")
    out = Path(c.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(c)
    done = {k: v for k, v in _earlier_results(out / "results.json", config, log).items() if k not in c.models}
    if done:
        log(f"keeping the earlier results of {', '.join(done)} from {out / 'results.json'}")
    log(f"longseq compare: {c.task}, models {', '.join(c.models)}, {c.steps} steps each, output {out}")
    splits, vocab = load_task(c)
    sizes = " / ".join(f"{len(splits[k])} {k}" for k in ("train", "valid", "test"))
    log(f"data: {sizes} samples")
    report: dict[str, Any] = {"config": config, "results": []}
    for name in c.models:
        t0 = time.perf_counter()
        result = run_model(name, c, splits, vocab, out)
        done[name] = result
        report["results"] = [done[m] for m in MODELS if m in done]
        _write_atomic(out / "results.json", json.dumps(report, indent=1))
        log(
            f"{name:<10} test accuracy {result['test_accuracy']:.3f}  "
            f"{result['train_tokens_per_s']:,.0f} tokens/s  ({time.perf_counter() - t0:.0f} s)"
        )
    from .report import plots, write_report

    plots(report, out)
    text = write_report(report, out)
    log("\n" + text)
    return report


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
