"""Pipelines end to end on small random models and a tokenizer trained here."""

from __future__ import annotations

import itertools
import random
import re

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer

from longseq import Tokenizer, pipelines
from longseq.models import bigbird, longformer
from longseq.models.configs import BigBirdConfig, LongformerConfig

TOKENIZER_FOLDER: list = []  # the folder the tokenizer fixture trained into
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "stone",
    "cloud",
    "night",
    "paper",
    "seven",
    "blue",
    "green",
]


def text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("tok")
    bpe = ByteLevelBPETokenizer()
    corpus = [text(30, s) for s in range(200)]
    bpe.train_from_iterator(
        corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    TOKENIZER_FOLDER[:] = [folder]
    return Tokenizer.from_pretrained(folder, family="longformer")


def lf_config(tokenizer: Tokenizer, **changes) -> LongformerConfig:
    base = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        attention_window=8,
        max_position_embeddings=66,  # 64 tokens
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        num_labels=3,
    )
    return LongformerConfig(**(base | changes))


def model(cls, config):
    torch.manual_seed(0)
    return cls(config).eval()


def test_classify_long_documents_split_pool_and_batching_is_invisible(tokenizer) -> None:
    clf = model(longformer.LongformerForSequenceClassification, lf_config(tokenizer))
    docs = [text(10, 1), text(150, 2), text(40, 3), text(300, 4)]
    batched = pipelines.classify(clf, tokenizer, docs, batch_size=4)
    single = [pipelines.classify(clf, tokenizer, d, batch_size=1)[0] for d in docs]
    for a, b in zip(batched, single, strict=True):
        assert a["label"] == b["label"] and a["windows"] == b["windows"]
        assert abs(a["score"] - b["score"]) < 1e-5
    assert batched[0]["windows"] == 1 and batched[3]["windows"] > 4
    assert set(batched[0]["scores"]) == {"LABEL_0", "LABEL_1", "LABEL_2"}
    assert abs(sum(batched[1]["scores"].values()) - 1) < 1e-5
    long = [i for i, d in enumerate(docs) if len(tokenizer(d)["input_ids"]) > 64]
    assert 0 not in long and {1, 3} <= set(long)
    with pytest.warns(UserWarning, match=re.escape(f"documents {long} were cut")):
        cut = pipelines.classify(clf, tokenizer, docs, long_documents="truncate")
    assert [c["windows"] for c in cut] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"documents\[1\] has \d+ tokens"):
        pipelines.classify(clf, tokenizer, docs, long_documents="error")


def test_classify_bad_inputs(tokenizer) -> None:
    clf = model(longformer.LongformerForSequenceClassification, lf_config(tokenizer))
    with pytest.raises(ValueError, match=r"documents\[1\] is empty"):
        pipelines.classify(clf, tokenizer, ["fine text", "  "])
    with pytest.raises(TypeError, match=r"documents\[0\] must be a string"):
        pipelines.classify(clf, tokenizer, [3])
    clf.config.id2label = {0: "a", 1: "b"}  # the head has 3 outputs: id 2 has no name
    with torch.no_grad():
        clf.classifier.out_proj.bias[:] = torch.tensor([0.0, 0.0, 100.0])
    with pytest.raises(ValueError, match="label id 2"):
        pipelines.classify(clf, tokenizer, "some text")


def test_answer_finds_spans_across_windows(tokenizer) -> None:
    qa = model(longformer.LongformerForQuestionAnswering, lf_config(tokenizer, num_labels=2))
    context = text(200, 7)
    question = "where is the river"
    result = pipelines.answer(qa, tokenizer, question, context, stride=16)
    assert 0 <= result["start"] < result["end"] <= len(context)
    assert result["answer"] == context[result["start"] : result["end"]] and result["answer"].strip()
    assert 0 < result["score"] <= 1
    again = pipelines.answer(qa, tokenizer, question, context, stride=16, batch_size=1)
    assert {k: again[k] for k in ("answer", "start", "end")} == {
        k: result[k] for k in ("answer", "start", "end")
    }
    assert abs(again["score"] - result["score"]) < 1e-6
    # the best span of the whole context is the best over the windows that contain it
    with pytest.raises(ValueError, match="question has"):
        pipelines.answer(qa, tokenizer, text(80, 1), context)
    with pytest.raises(ValueError, match="context"):
        pipelines.answer(qa, tokenizer, question, "")


def test_fill_mask_and_tag(tokenizer) -> None:
    mlm = model(longformer.LongformerForMaskedLM, lf_config(tokenizer))
    filled = pipelines.fill_mask(mlm, tokenizer, f"alpha {tokenizer.mask_token} gamma", top_k=3)
    assert len(filled) == 1 and len(filled[0]) == 3
    assert filled[0][0]["score"] >= filled[0][1]["score"] >= filled[0][2]["score"]
    with pytest.raises(ValueError, match="no mask token"):
        pipelines.fill_mask(mlm, tokenizer, "alpha beta")

    tagger = model(longformer.LongformerForTokenClassification, lf_config(tokenizer))
    doc = text(120, 5)
    words = pipelines.tag(tagger, tokenizer, doc)
    assert [w["word"] for w in words] == doc.split()
    assert all(doc[w["start"] : w["end"]] == w["word"] for w in words)
    assert {w["label"] for w in words} <= {"LABEL_0", "LABEL_1", "LABEL_2"}
    for mode in ("average", "max"):
        assert len(pipelines.tag(tagger, tokenizer, doc, aggregation=mode)) == len(words)


def test_generate_greedy_sampling_stop_and_no_repeat(tokenizer) -> None:
    config = BigBirdConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=64,
        is_decoder=True,
        attention_type="original_full",
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = model(bigbird.BigBirdForCausalLM, config)
    greedy = pipelines.generate(lm, tokenizer, "alpha beta", max_new_tokens=12)
    assert len(greedy["token_ids"]) == 12
    assert greedy == pipelines.generate(lm, tokenizer, "alpha beta", max_new_tokens=12)
    sampled = [
        pipelines.generate(lm, tokenizer, "alpha beta", max_new_tokens=12, do_sample=True, top_p=0.9, seed=s)
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    no_repeat = pipelines.generate(lm, tokenizer, "alpha beta", max_new_tokens=30, no_repeat_ngram_size=2)
    ids = tokenizer("alpha beta", add_special_tokens=False)["input_ids"] + no_repeat["token_ids"]
    pairs = list(itertools.pairwise(ids))
    assert len(pairs) == len(set(pairs))
    stop = greedy["token_ids"][3]
    stopped = pipelines.generate(lm, tokenizer, "alpha beta", max_new_tokens=12, stop_token=stop)
    assert stopped["token_ids"][-1] == stop and len(stopped["token_ids"]) <= 4
    with pytest.raises(ValueError, match="causal LM"):
        pipelines.generate(model(longformer.LongformerForMaskedLM, lf_config(tokenizer)), tokenizer, "alpha")


def test_reformer_generation_with_bucket_cache_equals_without(tokenizer) -> None:
    from longseq.models.configs import ReformerConfig
    from longseq.models.reformer import ReformerModelWithLMHead

    config = ReformerConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_attention_heads=2,
        attention_head_size=16,
        feed_forward_size=40,
        attn_layers=["local", "local"],
        local_attn_chunk_length=8,
        local_num_chunks_before=1,
        local_num_chunks_after=0,
        axial_pos_embds=False,
        max_position_embeddings=64,
        is_decoder=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    lm = model(ReformerModelWithLMHead, config)
    with torch.no_grad():  # sharpen the random model so that greedy choices are not near-ties
        lm.lm_head.decoder.weight.mul_(20)
    seen: list[int] = []
    hook = lm.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    cached = pipelines.generate(lm, tokenizer, "alpha beta gamma", max_new_tokens=20, use_cache=True)
    assert seen[1:] == [1] * 19  # one new token per step: the bucket cache is in use
    hook.remove()
    full = pipelines.generate(lm, tokenizer, "alpha beta gamma", max_new_tokens=20, use_cache=False)
    assert cached == full and len(cached["token_ids"]) == 20


def test_cli_predict_reads_files_and_stdin(tokenizer, tmp_path, capsys, monkeypatch) -> None:
    import io
    import json

    from longseq.cli import main

    folder = tmp_path / "clf"
    model(longformer.LongformerForSequenceClassification, lf_config(tokenizer)).save_pretrained(folder)
    docs = tmp_path / "docs.txt"
    docs.write_text(f"{text(10, 1)}\n\n{text(200, 2)}\n")
    assert main(["predict", "classify", "--model", str(folder), "--input", str(docs)]) != 0  # no tokenizer
    assert "tokenizer" in capsys.readouterr().err.lower()
    tokenizer_dir = tmp_path / "clf"
    for name in ("vocab.json", "merges.txt"):
        (tokenizer_dir / name).write_bytes((TOKENIZER_FOLDER[0] / name).read_bytes())
    assert main(["predict", "classify", "--model", str(folder), "--input", str(docs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[1]["windows"] > 1
    monkeypatch.setattr("sys.stdin", io.StringIO(text(5, 3)))
    assert main(["predict", "answer", "--model", str(folder), "--input", "-"]) != 0
    assert "--question" in capsys.readouterr().err


def test_block_sparse_models_batch_only_equal_lengths(tokenizer) -> None:
    """BigBird's blocks depend on the padded length: batching must still not change a result."""
    config = BigBirdConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=64,
        block_size=4,
        num_random_blocks=1,
        num_labels=3,
        pad_token_id=tokenizer.pad_token_id,
    )
    clf = model(bigbird.BigBirdForSequenceClassification, config)
    docs = [text(n, n) for n in (12, 20, 33, 12, 50)]
    batched = pipelines.classify(clf, tokenizer, docs, batch_size=5)
    single = [pipelines.classify(clf, tokenizer, d, batch_size=1)[0] for d in docs]
    for a, b in zip(batched, single, strict=True):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-6
