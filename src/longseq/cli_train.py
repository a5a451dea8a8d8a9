"""`longseq compare | train | evaluate`: flags mirror the config dataclasses' fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .compare import (
    MODELS,
    PRESETS,
    TASKS,
    CompareConfig,
    build_model,
    compare,
    load_task,
    precision_of,
    preset,
)
from .training import TrainConfig, Trainer

_SKIP = {"extra", "models", "task", "output_dir"}


def _add_fields(parser: argparse.ArgumentParser, cls: type, skip: set[str], prefix: str = "") -> None:
    """One flag per dataclass field (`lr` -> `--lr`), defaulting to None: unset flags keep the preset."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        flag = "--" + prefix + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, dest=prefix + f.name
            )
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, nargs="+", type=kind, default=None, dest=prefix + f.name)
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, type=type(default), default=None, dest=prefix + f.name)


def _given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


OBJECTIVES = ("auto", "classify", "qa", "mlm", "clm")
_OBJECTIVE_HELP = (
    "what --data trains: classify, qa (SQuAD JSON), mlm or clm (raw text); auto: .json files are QA, "
    ".txt / .text / .md / .raw files are LM (clm for a causal-LM folder, else mlm), the rest classify"
)
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".raw")


def add_parsers(sub: Any, examples: str) -> None:
    cmp = sub.add_parser(
        "compare", help="train and compare the architectures on a long-range task", epilog=examples
    )
    cmp.add_argument("--preset", choices=sorted(PRESETS), default="default")
    cmp.add_argument("--task", choices=TASKS, default=None)
    cmp.add_argument("--models", nargs="+", choices=MODELS, default=None)
    cmp.add_argument("--output", default=None, help="output folder (default runs/compare-<preset>)")
    _add_fields(cmp, CompareConfig, _SKIP)
    cmp.set_defaults(func=_compare)

    train = sub.add_parser("train", help="train one model on a built-in task", epilog=examples)
    train.add_argument("--family", choices=MODELS, help="a fresh model of this family (built-in tasks)")
    train.add_argument("--model", help="fine-tune this model folder (with --data)")
    train.add_argument(
        "--data",
        help="file to fine-tune on: classification JSONL / CSV / TSV (text, label), SQuAD JSON (QA), "
        "or raw text (masked / causal LM)",
    )
    train.add_argument("--eval-data", help="file to evaluate on, same format")
    train.add_argument("--objective", choices=OBJECTIVES, default="auto", help=_OBJECTIVE_HELP)
    train.add_argument("--stride", type=int, default=128, help="QA: tokens shared by context windows")
    train.add_argument("--block", type=int, default=None, help="LM: tokens per block (default: the model's)")
    train.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    train.add_argument("--text-field", default="text")
    train.add_argument("--label-field", default="label")
    train.add_argument("--task", choices=TASKS, default="listops")
    train.add_argument("--preset", choices=sorted(PRESETS), default="default")
    train.add_argument("--output", default="runs/train", help="output folder (checkpoints, log, final/)")
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --output"
    )
    train.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], default="auto", help="under torchrun")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each batch shape's forward + backward as a CUDA graph (one GPU, BigBird / Reformer)",
    )
    _add_fields(train, CompareConfig, _SKIP | {"sweep_lengths"})
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate", help="accuracy of a saved model on a built-in task's test split", epilog=examples
    )
    ev.add_argument("--model", required=True, help="model folder (from train, or any longseq / HF folder)")
    ev.add_argument("--task", choices=TASKS, default="listops")
    ev.add_argument("--data", help="a user file (as train --data) instead of a built-in task")
    ev.add_argument("--objective", choices=OBJECTIVES, default="auto", help=_OBJECTIVE_HELP)
    ev.add_argument("--stride", type=int, default=128, help="QA: tokens shared by context windows")
    ev.add_argument("--block", type=int, default=None, help="LM: tokens per block (default: the model's)")
    ev.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    ev.add_argument("--text-field", default="text")
    ev.add_argument("--label-field", default="label")
    ev.add_argument("--preset", choices=sorted(PRESETS), default="default")
    _add_fields(ev, CompareConfig, _SKIP | {"sweep_lengths"})
    ev.set_defaults(func=_evaluate)


def _config(args: argparse.Namespace, output: str) -> CompareConfig:
    changes = _given(args, CompareConfig)
    if getattr(args, "task", None):
        changes["task"] = args.task
    if getattr(args, "models", None):
        changes["models"] = tuple(args.models)
    return preset(args.preset, output_dir=output, **changes)


def _compare(args: argparse.Namespace) -> int:
    config = _config(args, args.output or f"runs/compare-{args.preset}")
    report = compare(config)
    print(f"\nwrote {Path(config.output_dir) / 'report.md'}, results.json and plots")
    return 0 if report["results"] else 1


def _tokenizer(args: argparse.Namespace) -> Any:
    """The tokenizer of --tokenizer or the model folder; batches of user files need its pad token."""
    from .tokenization import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: batches cannot be padded")
    return tokenizer


def _user_data(args: argparse.Namespace, label_names: list[str] | None = None) -> tuple[Any, Any, Any]:
    """(tokenizer, encoded datasets for --data and --eval-data, collate) for classification files."""
    from functools import partial
    from types import SimpleNamespace

    from .data import collate, load_classification
    from .models import AutoModel
    from .pipelines import max_tokens

    tokenizer = _tokenizer(args)
    config = AutoModel.class_for(_read_config(args.model)).config_class.from_pretrained(args.model)
    limit = max_tokens(SimpleNamespace(config=config), tokenizer)
    files = [args.data] + ([args.eval_data] if getattr(args, "eval_data", None) else [])
    encoded = []
    for path in files:
        data = load_classification(path, label_names, args.text_field, args.label_field)
        label_names = data.label_names
        ids = [tokenizer(t, truncation=True, max_length=limit)["input_ids"] for t in data.texts]
        cut = sum(len(tokenizer(t)["input_ids"]) > limit for t in data.texts)
        if cut:
            warnings.warn(f"{path}: {cut} texts were cut to the model's {limit} tokens", stacklevel=2)
        encoded.append([(torch.tensor(i), y) for i, y in zip(ids, data.labels, strict=True)])
    return tokenizer, (encoded, label_names), partial(collate, pad_id=tokenizer.pad_token_id)


def _read_config(folder: str) -> dict:
    from .checkpoints import read_config

    return read_config(folder)


def _with_head(folder: str, objective: str, **overrides: Any) -> torch.nn.Module:
    """The folder's model with the head of `objective` (fresh when the folder has another)."""
    from .models import AutoModel

    config = _read_config(folder)
    base = AutoModel.class_for({**config, "architectures": None})
    module = __import__(base.__module__, fromlist=["_"])
    family = base.__name__.replace("ModelWithLMHead", "Model").removesuffix("Model")
    suffix = {
        "classify": "ForSequenceClassification",
        "qa": "ForQuestionAnswering",
        "mlm": "ForMaskedLM",
        "clm": "ModelWithLMHead" if family == "Reformer" else "ForCausalLM",
    }[objective]
    if not hasattr(module, family + suffix):
        raise ValueError(f"{config.get('model_type')} has no {objective} head ({family + suffix})")
    if objective in ("mlm", "clm") and family in ("Reformer", "BigBird"):
        overrides["is_decoder"] = objective == "clm"  # Reformer's LM heads insist on it
    return getattr(module, family + suffix).from_pretrained(folder, allow_new_head=True, **overrides)


def _classifier(folder: str, label_names: list[str]) -> torch.nn.Module:
    """The folder's model with a sequence-classification head for these labels (fresh if absent)."""
    id2label = dict(enumerate(label_names))
    label2id = {v: k for k, v in id2label.items()}
    return _with_head(folder, "classify", id2label=id2label, label2id=label2id)


def _objective(args: argparse.Namespace) -> str:
    if args.objective != "auto":
        return args.objective
    suffix = Path(args.data).suffix.lower()
    if suffix == ".json":
        return "qa"
    if suffix in _TEXT_SUFFIXES:
        arch = (_read_config(args.model).get("architectures") or [""])[0]
        return "clm" if arch.endswith(("ForCausalLM", "ModelWithLMHead")) else "mlm"
    return "classify"


def _file_task(args: argparse.Namespace, objective: str, train: bool) -> dict[str, Any]:
    """QA / LM files: {model, tokenizer, data (train [, eval]), collate, metrics}."""
    from types import SimpleNamespace

    from .data import load_squad, load_text
    from .models import AutoModel
    from .pipelines import max_tokens
    from .training import metrics as M
    from .training import tasks

    tokenizer = _tokenizer(args)
    model = _with_head(args.model, objective) if train else AutoModel.from_pretrained(args.model)
    limit = max_tokens(SimpleNamespace(config=model.config), tokenizer)
    files = [args.data] + ([args.eval_data] if train and getattr(args, "eval_data", None) else [])
    if objective == "qa":
        data = [tasks.qa_features(load_squad(f), tokenizer, limit, args.stride) for f in files]
        collate, metrics = partial(tasks.pad_collate, pad_id=tokenizer.pad_token_id), M.qa_span_metrics
    else:
        block = args.block or limit
        if not 1 < block <= limit:
            raise ValueError(f"--block must be in 2..{limit} (the model's length), got {block}")
        data = [tasks.lm_blocks(load_text(f), tokenizer, block) for f in files]
        metrics = None
        if objective == "mlm":
            rule = tasks.MaskedLM(tokenizer, model.config.vocab_size)
            collate = rule.collate
            data = [data[0] if train else rule.mask_fixed(data[0]), *(rule.mask_fixed(d) for d in data[1:])]
        else:
            collate = partial(tasks.clm_collate, pad_id=tokenizer.pad_token_id)
    return {"model": model, "tokenizer": tokenizer, "data": data, "collate": collate, "metrics": metrics}


def _lm_figures(result: dict[str, float]) -> dict[str, float]:
    """Perplexity and bits per token from a mean cross entropy (eval_loss), for LM objectives."""
    from .training.metrics import bits_per_token, perplexity

    if "eval_loss" not in result:
        return result
    loss = result["eval_loss"]
    return {**result, "eval_perplexity": perplexity(loss), "eval_bits_per_token": bits_per_token(loss)}


def _train(args: argparse.Namespace) -> int:
    from .data import collate
    from .training.metrics import classification_metrics

    c = _config(args, args.output)
    if (args.family is None) == (args.model is None):
        raise ValueError("give --family (a fresh model on a built-in task) or --model with --data")
    metrics, objective = classification_metrics, "classify"
    if args.model is not None:
        if not args.data:
            raise ValueError("--model needs --data (a file to fine-tune on)")
        objective = _objective(args)
        if objective == "classify":
            tokenizer, (encoded, names), collate = _user_data(args)
            model = _classifier(args.model, names)
        else:
            task = _file_task(args, objective, train=True)
            model, encoded, collate, metrics = task["model"], task["data"], task["collate"], task["metrics"]
        splits = {"train": encoded[0], "valid": encoded[1] if len(encoded) > 1 else None}
    else:
        splits, vocab = load_task(c)
        torch.manual_seed(c.seed)
        model = build_model(args.family, c, vocab, c.max_length + 2)
    precision = precision_of(c, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    config = TrainConfig(
        lr=c.lr,
        weight_decay=c.weight_decay,
        warmup_steps=c.warmup,
        max_steps=c.steps,
        batch_size=c.batch_size,
        precision=precision,
        eval_every=c.eval_every,
        save_every=c.eval_every,
        group_by_length=c.group_by_length,
        seed=c.seed,
        output_dir=args.output,
        strategy=args.strategy,
        grad_accum=args.grad_accum,
        gradient_checkpointing=args.gradient_checkpointing,
        cuda_graphs=args.cuda_graphs,
    )
    trainer = Trainer(model, config, splits["train"], splits["valid"], collate_fn=collate, metrics=metrics)
    if args.resume:
        trainer.resume()
    result = trainer.train()
    trainer.save_pretrained(Path(args.output) / "final")
    if args.model is not None:
        from .convert import copy_tokenizer

        copy_tokenizer(Path(args.tokenizer or args.model), Path(args.output) / "final")
    if objective in ("mlm", "clm"):
        result = _lm_figures(result)
    print(json.dumps({"step": trainer.step, **result, "saved": str(Path(args.output) / "final")}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .compare import _evaluate as evaluate_split
    from .models import AutoModel

    c = _config(args, "runs/evaluate")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(args.model, device=device)
    if args.data and _objective(args) != "classify":
        objective = _objective(args)
        task = _file_task(args, objective, train=False)
        config = TrainConfig(batch_size=c.batch_size, output_dir=str(Path(c.output_dir)), max_steps=1)
        trainer = Trainer(
            task["model"], config, task["data"][0], task["data"][0], collate_fn=task["collate"],
            metrics=task["metrics"],
        )  # fmt: skip
        result = trainer.evaluate()
        if objective in ("mlm", "clm"):
            result = _lm_figures(result)
        print(json.dumps({"model": args.model, "data": args.data, "objective": objective, **result}))
        return 0
    if args.data:
        names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        _, (encoded, _), collate_fn = _user_data(args, names)
        result = evaluate_split(model, encoded[0], c, device, collate_fn)
        print(json.dumps({"model": args.model, "data": args.data, **result}))
        return 0
    splits, _ = load_task(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = evaluate_split(model, splits["test"], c, device)
    print(json.dumps({"model": args.model, "task": c.task, **result}))
    return 0
