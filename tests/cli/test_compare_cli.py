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
        assert len(r["accuracy_by_length"]) == 4 and r["precision"] == "fp32"
    text = (out / "report.md").read_text()
    assert "| longformer |" in text and "Accuracy by input length" in text
    for plot in ("accuracy_vs_steps", "accuracy_vs_length", "speed_vs_length", "memory_vs_length"):
        assert (out / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in capsys.readouterr().out


def test_compare_split_over_runs_keeps_earlier_models_of_the_same_config(tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    args = [*TINY, "--sweep-lengths", "32", "--group-by-length", "--output", str(out)]
    assert main(["compare", *args, "--models", "reformer", "dense"]) == 0
    first = json.loads((out / "results.json").read_text())["results"]
    later = [a if a != "3" else "2" for a in args]  # another --eval-every: the same training
    assert main(["compare", *later, "--models", "bigbird"]) == 0
    assert "keeping the earlier results of dense, reformer" in capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in report["results"]] == ["dense", "bigbird", "reformer"]  # MODELS order
    assert report["results"][0] == next(r for r in first if r["model"] == "dense")
    assert "| dense |" in (out / "report.md").read_text()
    other = [a if a != "6" else "4" for a in args]  # another budget: not comparable, replaced
    assert main(["compare", *other, "--models", "bigbird"]) == 0
    assert "holds a run of another config" in capsys.readouterr().out
    assert [r["model"] for r in json.loads((out / "results.json").read_text())["results"]] == ["bigbird"]


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


def test_train_with_cuda_graphs_flag(tmp_path, capsys) -> None:
    """--cuda-graphs reaches the trainer (on this CPU the steps run eagerly, and it says so); with
    --grad-accum it is refused with the reason."""
    out = tmp_path / "graphs"
    with pytest.warns(UserWarning, match="cuda_graphs: no CUDA device"):
        assert main(["train", "--family", "bigbird", *TINY, "--cuda-graphs", "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6
    argv = ["train", "--family", "bigbird", *TINY, "--cuda-graphs", "--grad-accum", "2"]
    assert main([*argv, "--output", str(tmp_path / "accum")]) != 0
    assert "set grad_accum 1" in capsys.readouterr().err


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


def test_fine_tune_a_pretrained_folder_on_a_jsonl_file(tmp_path, capsys) -> None:
    """train --model FOLDER --data train.jsonl: a fresh classification head on a pretrained body."""
    import random

    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    import longseq

    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "night"]
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(64)]
    folder = tmp_path / "pretrained"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    config = transformers.LongformerConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=20, attention_window=8, max_position_embeddings=40,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LongformerForMaskedLM(config).save_pretrained(folder)
    rows = [{"text": t, "label": "river" if "river" in t else "none"} for t in texts]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:48]))
    (tmp_path / "valid.jsonl").write_text("\n".join(json.dumps(r) for r in rows[48:]))
    out = tmp_path / "ft"
    argv = ["train", "--model", str(folder), "--data", str(tmp_path / "train.jsonl")]
    argv += [
        "--eval-data",
        str(tmp_path / "valid.jsonl"),
        "--steps",
        "4",
        "--warmup",
        "1",
        "--batch-size",
        "8",
        "--group-by-length",  # tuple samples: measured by their ids
    ]
    with pytest.warns(UserWarning, match="cut to the model's 38 tokens"):
        assert main([*argv, "--eval-every", "2", "--output", str(out)]) == 0
    model = longseq.AutoModel.from_pretrained(out / "final")
    assert type(model).__name__ == "LongformerForSequenceClassification"
    assert model.config.id2label == {0: "none", 1: "river"}
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "final"), "--data", str(tmp_path / "valid.jsonl")]) == 0
    assert 0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] <= 1
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "alpha", "label": "ocean"}))
    assert main(["evaluate", "--model", str(out / "final"), "--data", str(tmp_path / "bad.jsonl")]) != 0
    assert "bad.jsonl:1" in capsys.readouterr().err
