"""Whole models on the GPU: longseq against Hugging Face, in one run, same random weights.

2 layers, hidden 768, 12 heads, FFN 3072, batch 1 (the ANCHORS configs). For each family the HF
model is built with transformers, saved, and loaded by longseq, so both hold the same weights;
outputs are compared before anything is timed. Times: median of 10 after warm-up, bf16 autocast;
train = forward + backward of sum(last_hidden_state). Peak memory: each model alone on the GPU (the
others moved to the CPU), with its weights and, from the step before, its gradients. Prints a table
last; JSON to $OUT/models.json.

    PYTHONPATH=src python benchmarks/models.py [--seq 4096 16384] [--families longformer bigbird]
        [--dropout 0.1] [--profile 25] [--no-graphs]   # --profile: longseq's top ops by GPU and host time

Besides the eager step, each model's training step is captured as one CUDA graph and replayed
(`longseq.training.graphs.GraphedStep`; mode train_graphed), after its gradients are checked against
the eager step's. HF's models are tried the same way; where they cannot be captured the ratio is
against HF's eager step, and says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import traceback

import torch

DEV = "cuda"
ROWS: list[dict] = []
DROPOUT = 0.0  # hidden and attention dropout of every model (--dropout)
PROFILE = 0  # rows of the profile tables (--profile N; 0: no profile)
GRAPHS = True  # also time the training step captured as a CUDA graph (--no-graphs: not)


def timeit(fn, reps: int = 10, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def record(name: str, n: int, mode: str, fn) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    row = {"name": name, "n": n, "mode": mode}
    try:
        row["ms"] = round(timeit(fn), 3)
        row["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except torch.cuda.OutOfMemoryError:
        row |= {"ms": None, "peak_mib": "OOM"}
    except Exception as ex:  # a peer failing must not stop the run
        row |= {"ms": None, "peak_mib": f"ERR {type(ex).__name__}: {str(ex)[:100]}"}
    ROWS.append(row)
    print(row, flush=True)
    return row


def hf_models(n: int) -> dict:
    import transformers as T

    common = dict(num_hidden_layers=2, hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT)
    return {
        "longformer": (
            T.LongformerModel,
            T.LongformerConfig(attention_window=512, max_position_embeddings=n + 2, **common),
        ),
        "bigbird": (
            T.BigBirdModel,
            T.BigBirdConfig(
                attention_type="block_sparse",
                block_size=64,
                num_random_blocks=3,
                max_position_embeddings=n,
                **common,
            ),
        ),
        "reformer": (
            T.ReformerModel,
            T.ReformerConfig(
                attn_layers=["local", "lsh"],
                hidden_size=768,
                num_attention_heads=12,
                attention_head_size=64,
                feed_forward_size=3072,
                axial_pos_embds=True,
                axial_pos_shape=(64, n // 64),
                axial_pos_embds_dim=(256, 512),
                lsh_attn_chunk_length=64,
                local_attn_chunk_length=64,
                num_hashes=1,
                num_buckets=None,
                hash_seed=0,
                max_position_embeddings=n,
                is_decoder=False,
                vocab_size=320,
                hidden_dropout_prob=DROPOUT,
                lsh_attention_probs_dropout_prob=DROPOUT,
                local_attention_probs_dropout_prob=DROPOUT,
            ),
        ),
        "roberta_sdpa": (
            T.RobertaModel,
            T.RobertaConfig(max_position_embeddings=n + 2, attn_implementation="sdpa", **common),
        ),
    }


def model_inputs(family: str, n: int, vocab_size: int) -> tuple[torch.Tensor, dict]:
    """Random token ids (1, n) and the family's extra inputs (the Longformer: token 0 global)."""
    ids = torch.randint(5, vocab_size - 1, (1, n), device=DEV)
    kw = {}
    if family == "longformer":
        glob = torch.zeros_like(ids)
        glob[:, 0] = 1
        kw["global_attention_mask"] = glob
    return ids, kw


def train_step(model: torch.nn.Module, ids: torch.Tensor, kw: dict) -> None:
    """Forward + backward of sum(last_hidden_state) under bf16 autocast, from no gradients (as a
    training loop's step begins, `zero_grad(set_to_none=True)`: the timed steps do not accumulate
    into the last step's gradients, which cost an `add_` per parameter)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(input_ids=ids, **kw).last_hidden_state
    loss = out.float().sum()
    del out  # as a loss from a head: the last hidden state is not held through backward
    loss.backward()


def bench(family: str, n: int) -> None:
    import longseq

    make, config = hf_models(n)[family]
    torch.manual_seed(0)
    hf = make(config).to(DEV)
    ids, kw = model_inputs(family, n, config.vocab_size)
    models = {f"hf_{family}": hf}
    if family != "roberta_sdpa":
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            models[f"longseq_{family}"] = longseq.AutoModel.from_pretrained(folder, device=DEV)
        with torch.no_grad():
            hf.eval()
            models[f"longseq_{family}"].eval()
            a = hf(input_ids=ids, **kw).last_hidden_state.float()
            b = models[f"longseq_{family}"](input_ids=ids, **kw).last_hidden_state.float()
            err = (a - b).abs().max().item()
            del a, b  # not held through the timings (their peaks)
            print(f"{family} n={n}: max |longseq - HF| fp32 = {err:.2e}", flush=True)
            ROWS.append({"name": f"check_{family}", "n": n, "mode": "max_abs_diff_fp32", "ms": err})
    for m in models.values():  # each model is measured alone on the GPU (peaks hold no other model)
        m.to("cpu")
    torch.cuda.empty_cache()
    for name, model in models.items():
        model.to(DEV)
        model.eval()

        def infer(model=model) -> None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(input_ids=ids, **kw)

        record(name, n, "infer_bf16", infer)
        model.train()

        def step(model=model) -> None:
            train_step(model, ids, kw)

        record(name, n, "train_bf16", step)
        if PROFILE and name.startswith("longseq_"):
            profile_step(name, n, step)
        model.zero_grad(set_to_none=True)
        model.to("cpu")
        del model
    # the captures last: a failed one (HF's models) may leave memory behind, which would count in the
    # peaks of the models measured after it
    for name, model in models.items() if GRAPHS else ():
        model.to(DEV)
        model.train()
        graphed(name, model, n, ids, kw)
        model.zero_grad(set_to_none=True)
        model.to("cpu")
        gc.collect()
        torch.cuda.empty_cache()
    del models, hf
    torch.cuda.empty_cache()


def graphed(name: str, model: torch.nn.Module, n: int, ids: torch.Tensor, kw: dict) -> None:
    """The training step captured as one CUDA graph (`longseq.training.graphs.GraphedStep`): its
    gradients are checked against the eager step's, then it is timed. A model whose step cannot be
    captured (host reads of device values) gets an error row."""
    from longseq.training.graphs import GraphedStep, grad_mismatch

    def loss_fn(ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            out = model(input_ids=ids, **kw).last_hidden_state
        return out.float().sum()

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(ids).backward()
        ref = [None if p.grad is None else p.grad.float().cpu() for p in params]  # off the GPU's peak
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step = GraphedStep(loss_fn, model, ids)
        step(ids)
        # the graph's pool holds the step's activations from the capture on: its peak is the capture's
        capture_peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        # over all gradients together: a gradient that is zero in exact arithmetic (the key bias of
        # softmax attention) is rounding noise, different in every run, and would dominate a maximum
        err = grad_mismatch([None if p.grad is None else p.grad.cpu() for p in params], ref)
        del ref
    except Exception as ex:  # not capturable: a result too
        model.zero_grad(set_to_none=True)
        row = {"name": name, "n": n, "mode": "train_graphed", "ms": None}
        row["peak_mib"] = f"ERR {type(ex).__name__}: {str(ex)[:100]}"
        ROWS.append(row)
        print(row, flush=True)
        return
    print(f"{name} n={n}: graphed step's gradients vs eager, relative error {err:.2e}", flush=True)
    ROWS.append({"name": f"check_graphed_{name}", "n": n, "mode": "grad_rel_err", "ms": err})
    row = record(name, n, "train_graphed", lambda: step(ids))
    if row.get("ms") is not None:
        row["peak_mib"] = max(row["peak_mib"], capture_peak)


def profile_step(name: str, n: int, step) -> None:
    """The training step's top ops by GPU time and by host time (torch.profiler, after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages()
    print(f"\n== profile {name} n={n}: 3 training steps, top ops by GPU time")
    print(table.table(sort_by="cuda_time_total", row_limit=PROFILE))
    print(f"== profile {name} n={n}: top ops by host time")
    print(table.table(sort_by="cpu_time_total", row_limit=PROFILE), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument(
        "--families", nargs="+", default=["longformer", "bigbird", "reformer", "roberta_sdpa"]
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="hidden and attention dropout (HF: 0.1)")
    parser.add_argument(
        "--profile", type=int, default=0, help="print the top N ops of longseq's training step"
    )
    parser.add_argument(
        "--no-graphs", action="store_true", help="do not time the step captured as a CUDA graph"
    )
    args = parser.parse_args()
    global DROPOUT, PROFILE, GRAPHS
    DROPOUT, PROFILE, GRAPHS = args.dropout, args.profile, not args.no_graphs
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for n in args.seq:
        for family in args.families:
            try:
                bench(family, n)
            except Exception:
                traceback.print_exc()
    out = os.environ.get("OUT", "/tmp")
    name = "models.json" if not DROPOUT else f"models_dropout{DROPOUT}.json"
    with open(os.path.join(out, name), "w") as f:
        json.dump(ROWS, f, indent=1)
    print("\nname | n | mode | ms | peak MiB | HF ms / longseq ms")
    by_key = {(r["name"], r["n"], r["mode"]): r for r in ROWS}
    for r in ROWS:
        ratio = ""
        if r["name"].startswith("longseq_") and r.get("ms"):
            hf = "hf_" + r["name"].removeprefix("longseq_")
            peer = by_key.get((hf, r["n"], r["mode"]))
            if r["mode"] == "train_graphed" and not (peer and peer.get("ms")):  # HF's step did not capture
                peer = by_key.get((hf, r["n"], "train_bf16"))
                ratio = " (vs HF eager)"
            if peer and peer.get("ms"):
                ratio = f"{peer['ms'] / r['ms']:.2f}x" + ratio
        print(f"{r['name']} | {r['n']} | {r['mode']} | {r.get('ms')} | {r.get('peak_mib', '')} | {ratio}")


if __name__ == "__main__":
    main()
