"""The `longseq` command line."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from .attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend

EXAMPLES = """examples:
  longseq compare                   dense, Longformer, BigBird, Reformer on a small ListOps (CPU, ~10 min)
  longseq compare --preset lra --output runs/lra          LRA's ListOps setting, for a GPU
  longseq compare --task retrieval --models longformer reformer --steps 300
  longseq train --family bigbird --task listops --steps 2000 --output runs/bigbird
  longseq evaluate --model runs/bigbird/final --task listops
  longseq train --model longformer-4096/ --data train.jsonl --eval-data valid.jsonl --output runs/cls
  longseq train --model longformer-4096/ --data squad-train.json --eval-data squad-dev.json --output runs/qa
  longseq train --model longformer-4096/ --data corpus.txt --objective mlm --output runs/mlm
  longseq train --model reformer-lm/ --data corpus.txt --objective clm --block 4096 --output runs/clm
  longseq evaluate --model runs/qa/final --data squad-dev.json           (exact match, F1 on token spans)
  longseq bench --seq 65536 --heads 4     every attention pattern checked, then timed
  longseq convert roberta-base/ longformer-4096/ --to longformer --max-length 4096 --attention-window 512
  longseq convert bert-base/ bigbird-4096/ --to bigbird --max-length 4096 --block-size 64
  longseq predict classify --model my-longformer/ --input docs.txt      (one document per line)
  longseq predict answer --model qa-model/ --question "Who?" --input contract.txt
  echo "The capital is <mask>." | longseq predict fill-mask --model mlm/
  longseq predict generate --model reformer-lm/ --prompt "Once" --max-new-tokens 50 --seed 0
"""


def _demo(args: argparse.Namespace) -> int:
    """Check every pattern against the dense reference, then time it against dense attention."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    patterns = {
        "Longformer SlidingWindow(512) + global": (SlidingWindow(512), True),
        "BigBird BlockSparse(64, 3)": (BlockSparse(64, 3), False),
        "Reformer LocalChunks(64)": (LocalChunks(64), False),
        "Reformer LSH(1 hash, 64 buckets... chunk 64)": (LSH(1, 64, 64, seed=0), False),
        "Dense": (Dense(), False),
    }
    print(f"longseq attention core on {device}: batch 1, {args.heads} heads, head_dim 64\n")
    print(f"{'pattern':<46} {'max |torch - reference| at 1000':>32} {f'ms at {args.seq}':>12}")
    for name, (pattern, with_global) in patterns.items():
        q, k, v = (torch.randn(1, args.heads, 1000, 64, generator=gen) for _ in range(3))
        k = q if isinstance(pattern, LSH) else k
        glob = torch.zeros(1, 1000, dtype=torch.bool)
        glob[0, 0] = True
        masks = {"global_mask": glob} if with_global else {}
        err = attend(q, k, v, pattern, backend="torch", **masks) - attend(
            q, k, v, pattern, backend="reference", **masks
        )
        q, k, v = (torch.randn(1, args.heads, args.seq, 64, generator=gen).to(device) for _ in range(3))
        k = q if isinstance(pattern, LSH) else k
        if with_global:
            glob = torch.zeros(1, args.seq, dtype=torch.bool, device=device)
            glob[0, 0] = True
            masks = {"global_mask": glob}
        if isinstance(pattern, Dense) and args.seq * args.seq * args.heads * 4 > 8 * 2**30:
            ms = "too big"
        else:
            start = time.perf_counter()
            with torch.no_grad():
                attend(q, k, v, pattern, **masks)
            if device == "cuda":
                torch.cuda.synchronize()
            ms = f"{(time.perf_counter() - start) * 1e3:.0f}"
        print(f"{name:<46} {err.abs().max().item():>32.1e} {ms:>12}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longseq",
        description="Longformer, BigBird and Reformer for long documents.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("bench", "demo"):
        demo = sub.add_parser(name, help="check and time every attention pattern", epilog=EXAMPLES)
        demo.add_argument("--seq", type=int, default=16384, help="sequence length to time (default 16384)")
        demo.add_argument("--heads", type=int, default=2, help="attention heads (default 2)")
        demo.set_defaults(func=_demo)
    from .cli_train import add_parsers

    add_parsers(sub, EXAMPLES)
    convert = sub.add_parser(
        "convert",
        help="make a long model (Longformer / BigBird) from a BERT or RoBERTa folder",
        epilog=EXAMPLES,
    )
    convert.add_argument("src", help="folder of the short model (config.json + weights)")
    convert.add_argument("dst", help="folder to write the long model into")
    convert.add_argument("--to", dest="family", choices=["longformer", "bigbird"], default="longformer")
    convert.add_argument(
        "--max-length", type=int, default=4096, help="positions of the long model (default 4096)"
    )
    convert.add_argument("--attention-window", type=int, default=512, help="Longformer window (default 512)")
    convert.add_argument("--block-size", type=int, default=64, help="BigBird block size (default 64)")
    convert.add_argument("--num-random-blocks", type=int, default=3, help="BigBird random blocks (default 3)")
    convert.set_defaults(func=_convert)
    predict = sub.add_parser("predict", help="run a pipeline on files or stdin", epilog=EXAMPLES)
    predict.add_argument("task", choices=["classify", "answer", "fill-mask", "tag", "generate"])
    predict.add_argument("--model", required=True, help="model folder (Hugging Face format)")
    predict.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    predict.add_argument(
        "--input", default="-", help="text file (default: stdin); classify/fill-mask/tag: a line each"
    )
    predict.add_argument("--question", help="answer: the question")
    predict.add_argument("--prompt", help="generate: the prompt (default: the input)")
    predict.add_argument("--top-k", type=int, default=5, help="fill-mask: candidates (default 5)")
    predict.add_argument("--max-new-tokens", type=int, default=50)
    predict.add_argument("--sample", action="store_true", help="generate: sample instead of greedy")
    predict.add_argument("--temperature", type=float, default=1.0)
    predict.add_argument("--top-p", type=float, default=1.0)
    predict.add_argument("--seed", type=int, default=0)
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--long-documents", choices=["split", "truncate", "error"], default="split")
    predict.set_defaults(func=_predict)
    return parser


def _predict(args: argparse.Namespace) -> int:
    import json

    from . import pipelines
    from .models import AutoModel
    from .tokenization import Tokenizer

    model = AutoModel.from_pretrained(args.model)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
    if args.input == "-":
        text = sys.stdin.read()
    else:
        with open(args.input, encoding="utf-8") as f:
            text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if args.task == "classify":
        results = pipelines.classify(
            model, tokenizer, lines, batch_size=args.batch_size, long_documents=args.long_documents
        )
    elif args.task == "answer":
        if not args.question:
            raise ValueError("answer needs --question")
        results = [pipelines.answer(model, tokenizer, args.question, text)]
    elif args.task == "fill-mask":
        results = [pipelines.fill_mask(model, tokenizer, line, top_k=args.top_k) for line in lines]
    elif args.task == "tag":
        results = [pipelines.tag(model, tokenizer, line) for line in lines]
    else:
        results = [
            pipelines.generate(
                model,
                tokenizer,
                args.prompt or text,
                max_new_tokens=args.max_new_tokens,
                do_sample=args.sample,
                temperature=args.temperature,
                top_p=args.top_p,
                seed=args.seed,
            )
        ]
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import to_long

    dst = to_long(
        args.src,
        args.dst,
        family=args.family,
        max_length=args.max_length,
        attention_window=args.attention_window,
        block_size=args.block_size,
        num_random_blocks=args.num_random_blocks,
    )
    print(f"wrote {args.family} model with {args.max_length} positions to {dst}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("bench", "demo") and (args.seq < 1 or args.heads < 1):
        print("longseq: --seq and --heads must be positive", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:  # bad input: one line
        print(f"longseq {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
