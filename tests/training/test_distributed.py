"""Two CPU processes (torchrun, gloo) train as one process does on the same global batches: DDP and FSDP2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from dist_worker import RUN
from train_helpers import ToyData, tiny_model, weights

from longseq.training import TrainConfig, Trainer
from longseq.training.metrics import classification_metrics

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    strategies = ["ddp", "fsdp"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(HERE / "dist_worker.py"),
        str(tmp_path),
        ",".join(strategies),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    model = tiny_model()
    single = Trainer(
        model,
        TrainConfig(**RUN, output_dir=str(tmp_path / "single")),
        ToyData(32),
        ToyData(5, seed=9),
        metrics=classification_metrics,
    )
    expected_eval = single.train()
    expected = weights(model)
    assert not torch.equal(
        expected["classifier.out_proj.weight"], weights(tiny_model())["classifier.out_proj.weight"]
    )
    for strategy in strategies:
        ranks = [torch.load(tmp_path / f"{strategy}_rank{r}.pt", weights_only=True) for r in range(2)]
        for r in ranks:
            assert r["weights"].keys() == expected.keys()
            for k in expected:
                torch.testing.assert_close(
                    r["weights"][k], expected[k], atol=1e-6, rtol=0, msg=f"{strategy} {k}"
                )
                # resumed after a stop at step 2: the same as the unbroken run of the same strategy
                assert torch.equal(r["resumed"][k], ranks[0]["weights"][k]), f"{strategy} resume {k}"
            assert r["eval"].keys() == expected_eval.keys()
            for k, v in expected_eval.items():
                assert abs(r["eval"][k] - v) < 1e-6, (strategy, k)
        for k in expected:
            assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), (
                f"{strategy} ranks differ: {k}"
            )
        # rank 0 alone wrote the checkpoints, with full (unsharded) weights
        saved = sorted(p.name for p in (tmp_path / strategy).iterdir())
        assert saved == ["checkpoint-2", "checkpoint-4", "log.jsonl"]
        from longseq.training import read_checkpoint

        w, state = read_checkpoint(tmp_path / strategy)
        assert state["world_size"] == 2 and len(state["rng"]) == 2
        for k in expected:
            torch.testing.assert_close(w[k], expected[k], atol=1e-6, rtol=0)
