"""The main job and the training commands, end to end at a tiny size."""

from __future__ import annotations

import json

import pytest

from longseq.cli import main

TINY = [
    "--train-size", "96", "--eval-size", "32", "--test-size", "32",
    "--min-length", "20", "--max-length", "60",
    "--max-depth", "4", "--layers", "1", "--hidden", "16", "--heads", "2", "--ffn", "32", "--steps", "6",
    "--warmup", "1", "--batch-size", "8", "--eval-every", "3", "--window", "8", "--block-size", "4",
    "--random-blocks", "1", "--chunk", "8",
]  # fmt: skip


def test_compare_writes_report_json_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--sweep-lengths", "32", "64", "--output", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    names = [r["model"] for r in report["results"]]
    assert names == ["dense", "longformer", "bigbird", "reformer"]
    for r in report["results"]:
        assert 0 <= r["test_accuracy"] <= 1 and r["parameters"] > 0 and r["train_tokens_per_s"] > 0
        assert [s["length"] for s in r["sweep"]] == [32, 64] and all(s["memory_mib"] > 0 for s in r["sweep"])
        assert [h["step"] for h in r["eval_history"]] == [3, 6]
        assert len(r["accuracy_by_length"]) == 4
    text = (out / "report.md").read_text()
    assert "| longformer |" in text and "Accuracy by input length" in text
    for plot in ("accuracy_vs_steps", "accuracy_vs_length", "speed_vs_length", "memory_vs_length"):
        assert (out / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in capsys.readouterr().out


def test_train_then_evaluate_and_resume(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--family", "longformer", *TINY, "--output", str(out)]) == 0
    assert (out / "final" / "config.json").exists()
    capsys.readouterr()
    model_args = ["--model", str(out / "final"), *TINY[:14]]
    assert main(["evaluate", *model_args]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["accuracy"] <= 1
    more = [a if a != "6" else "9" for a in TINY]  # 9 steps: resume from step 6
    assert main(["train", "--family", "longformer", *more, "--output", str(out), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 9


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["compare", "--steps", "0"], "max_steps"),
        (["evaluate", "--model", "/nonexistent/folder"], "config"),
        (["compare", "--min-length", "50", "--max-length", "40"], "length"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(argv, needle, capsys, tmp_path) -> None:
    assert main([*argv, *([] if argv[0] == "evaluate" else ["--output", str(tmp_path / "x")])]) != 0
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
