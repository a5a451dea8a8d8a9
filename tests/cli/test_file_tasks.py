"""Fine-tuning on user files beyond classification: SQuAD JSON (QA) and raw text (masked / causal LM)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

import longseq
from longseq.cli import main
from longseq.data import load_squad
from longseq.tokenization import Tokenizer
from longseq.training.metrics import qa_span_metrics
from longseq.training.tasks import MaskedLM, clm_collate, lm_blocks, qa_features

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "night", "paris", "rome"]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """(vocab.json + merges.txt folder, vocabulary size, tokenizer.json folder) of one small BPE."""
    folder = tmp_path_factory.mktemp("tok")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [*_texts(200), "Where is it? What?"],
        vocab_size=160,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    # a tokenizer.json copy for families whose folders never hold vocab.json + merges.txt (Reformer)
    single = tmp_path_factory.mktemp("tok_json")
    bpe.save(str(single / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (single / "special_tokens_map.json").write_text(json.dumps({**specials, "mask_token": "<mask>"}))
    return folder, bpe.get_vocab_size(), single


def _squad(path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 60))]
        k = rng.randrange(len(words))
        context = " ".join(words)
        start = len(" ".join(words[:k])) + (1 if k else 0)
        qas = [
            {
                "id": f"q{i}",
                "question": f"Where is {words[k]}?",
                "answers": [{"text": words[k], "answer_start": start}],
            }
        ]
        if i % 5 == 0:
            qas.append({"id": f"q{i}x", "question": "What?", "answers": [], "is_impossible": True})
        paragraphs.append({"context": context, "qas": qas})
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))


def test_qa_features_label_the_answer_tokens(tokenizer_folder, tmp_path) -> None:
    tok = Tokenizer.from_pretrained(tokenizer_folder[0])
    _squad(tmp_path / "s.json", 30, 1)
    examples = load_squad(tmp_path / "s.json")
    feats = qa_features(examples, tok, max_length=40, stride=6)  # short windows: many overflow
    assert len(feats) > len(examples)
    enc = tok(
        [e.question for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=40,
        stride=6,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    answered = 0
    for row, f in enumerate(feats):
        ex = examples[enc["overflow_to_sample_mapping"][row]]
        s, e = int(f["start_positions"]), int(f["end_positions"])
        assert len(f["input_ids"]) <= 40
        if s == e == 0:
            continue
        answered += 1
        offsets = enc["offset_mapping"][row]
        assert ex.context[offsets[s][0] : offsets[e][1]].strip() == ex.answers[0].text
    impossible = [i for i, ex in enumerate(examples) if ex.is_impossible]
    rows_of = enc["overflow_to_sample_mapping"]
    assert all(int(feats[r]["start_positions"]) == 0 for r in range(len(feats)) if rows_of[r] in impossible)
    assert answered >= len(examples) - len(impossible)  # every answer lies wholly in some window


def test_lm_blocks_keep_every_token(tokenizer_folder) -> None:
    tok = Tokenizer.from_pretrained(tokenizer_folder[0])
    text = " ".join(_texts(20, 3))
    blocks = lm_blocks(text, tok, block=17)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(len(b["input_ids"]) <= 17 for b in blocks)
    assert all(
        b["input_ids"][0] == tok.cls_token_id and b["input_ids"][-1] == tok.sep_token_id for b in blocks
    )
    assert torch.cat([b["input_ids"][1:-1] for b in blocks]).tolist() == ids  # nothing dropped
    batch = clm_collate(blocks[-2:], tok.pad_token_id)
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == -100).all() and (batch["labels"][~pad] == batch["input_ids"][~pad]).all()


def test_masking_rule(tokenizer_folder) -> None:
    tok = Tokenizer.from_pretrained(tokenizer_folder[0])
    blocks = lm_blocks(" ".join(_texts(200, 4)), tok, block=64)
    rule = MaskedLM(tok, tokenizer_folder[1])
    torch.manual_seed(0)
    batch = rule.collate(blocks)
    picked = batch["labels"] != -100
    real = batch["attention_mask"] == 1
    special = torch.isin(
        torch.stack(
            [
                torch.nn.functional.pad(b["input_ids"], (0, 64 - len(b["input_ids"])), value=tok.pad_token_id)
                for b in blocks
            ]
        ),
        rule.special,
    )
    assert not (picked & special).any() and not (picked & ~real).any()
    frac = picked.sum() / (real & ~special).sum()
    assert 0.12 < frac < 0.18
    masked = (batch["input_ids"] == tok.mask_token_id) & picked
    assert 0.72 < masked.sum() / picked.sum() < 0.88
    fixed = rule.mask_fixed(blocks[:5], seed=3)
    assert all(
        torch.equal(a["labels"], b["labels"])
        for a, b in zip(fixed, rule.mask_fixed(blocks[:5], seed=3), strict=True)
    )
    again = rule.collate(fixed)  # pre-masked samples keep their masks
    assert torch.equal(again["labels"][0, : len(fixed[0]["labels"])], fixed[0]["labels"])


def test_qa_span_metrics() -> None:
    start = torch.full((2, 10), -5.0)
    end = torch.full((2, 10), -5.0)
    start[0, 2], end[0, 4] = 5.0, 5.0  # predicts [2, 4]
    start[1, 6], end[1, 7] = 5.0, 5.0  # predicts [6, 7]
    end[1, 2] = 9.0  # an end before the start never wins
    labels = (torch.tensor([2, 7]), torch.tensor([4, 8]))
    got = qa_span_metrics([(start, end)], [labels])
    # row 0 exact; row 1: predicted 6..7, gold 7..8: overlap 1, p = r = 1/2
    assert got["exact_match"] == pytest.approx(0.5)
    assert got["f1"] == pytest.approx((1.0 + 0.5) / 2)


def _longformer(folder, vocab: int) -> None:
    config = transformers.LongformerConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        attention_window=8,
        max_position_embeddings=66,
    )
    torch.manual_seed(0)
    transformers.LongformerForMaskedLM(config).save_pretrained(folder)


def _copy_tokenizer(src, dst) -> None:
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


def _run(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_and_evaluate_qa_from_squad(tokenizer_folder, tmp_path, capsys) -> None:
    folder = tmp_path / "lf"
    folder.mkdir()
    _copy_tokenizer(tokenizer_folder[0], folder)
    _longformer(folder, tokenizer_folder[1])
    _squad(tmp_path / "train.json", 40, 5)
    _squad(tmp_path / "dev.json", 10, 6)
    out = tmp_path / "qa"
    common = ["--steps", "4", "--warmup", "1", "--batch-size", "8", "--eval-every", "2", "--stride", "16"]
    common += ["--group-by-length"]  # dict samples: measured by their input_ids
    res = _run(
        [
            "train",
            "--model",
            str(folder),
            "--data",
            str(tmp_path / "train.json"),
            "--eval-data",
            str(tmp_path / "dev.json"),
            *common,
            "--output",
            str(out),
        ],
        capsys,
    )
    assert 0 <= res["eval_exact_match"] <= res["eval_f1"] <= 1 and res["eval_loss"] > 0
    model = longseq.AutoModel.from_pretrained(out / "final")
    assert type(model).__name__ == "LongformerForQuestionAnswering"
    ev = _run(
        ["evaluate", "--model", str(out / "final"), "--data", str(tmp_path / "dev.json"), "--stride", "16"],
        capsys,
    )
    assert ev["objective"] == "qa" and ev["eval_f1"] == pytest.approx(res["eval_f1"])


def test_train_masked_lm_then_causal_lm_from_text(tokenizer_folder, tmp_path, capsys) -> None:
    (tmp_path / "train.txt").write_text("\n".join(_texts(60, 7)))
    (tmp_path / "dev.txt").write_text("\n".join(_texts(10, 8)))
    common = ["--steps", "3", "--warmup", "1", "--batch-size", "4", "--eval-every", "3"]
    data = ["--data", str(tmp_path / "train.txt"), "--eval-data", str(tmp_path / "dev.txt")]

    lf = tmp_path / "lf"
    lf.mkdir()
    _copy_tokenizer(tokenizer_folder[0], lf)
    _longformer(lf, tokenizer_folder[1])
    res = _run(["train", "--model", str(lf), *data, *common, "--output", str(tmp_path / "mlm")], capsys)
    assert res["eval_perplexity"] == pytest.approx(math.exp(res["eval_loss"]), rel=1e-12)
    ev = _run(
        [
            "evaluate",
            "--model",
            str(tmp_path / "mlm" / "final"),
            "--data",
            str(tmp_path / "dev.txt"),
            "--batch-size",
            "4",
        ],
        capsys,
    )
    assert ev["objective"] == "mlm"
    assert ev["eval_loss"] == pytest.approx(res["eval_loss"], rel=1e-9)  # the eval masks are fixed

    rf = tmp_path / "rf"
    rf.mkdir()
    _copy_tokenizer(tokenizer_folder[2], rf)
    config = transformers.ReformerConfig(
        vocab_size=tokenizer_folder[1],
        hidden_size=16,
        num_attention_heads=2,
        attention_head_size=8,
        feed_forward_size=20,
        attn_layers=["local", "lsh"],
        axial_pos_embds=False,
        max_position_embeddings=64,
        local_attn_chunk_length=8,
        lsh_attn_chunk_length=8,
        num_buckets=4,
        is_decoder=True,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    transformers.ReformerModelWithLMHead(config).save_pretrained(rf)
    res = _run(
        ["train", "--model", str(rf), *data, "--block", "48", *common, "--output", str(tmp_path / "clm")],
        capsys,
    )
    assert (
        type(longseq.AutoModel.from_pretrained(tmp_path / "clm" / "final")).__name__
        == "ReformerModelWithLMHead"
    )
    assert res["eval_bits_per_token"] > 0


def test_objective_errors(tokenizer_folder, tmp_path, capsys) -> None:
    lf = tmp_path / "lf"
    lf.mkdir()
    _copy_tokenizer(tokenizer_folder[0], lf)
    _longformer(lf, tokenizer_folder[1])
    (tmp_path / "t.txt").write_text("alpha beta")
    argv = ["train", "--model", str(lf), "--data", str(tmp_path / "t.txt"), "--output", str(tmp_path / "o")]
    assert main([*argv, "--objective", "clm"]) != 0
    assert "has no clm head" in capsys.readouterr().err
    assert main([*argv, "--block", "1000"]) != 0
    assert "--block must be in" in capsys.readouterr().err
