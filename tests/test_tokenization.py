"""longseq.tokenization against Hugging Face transformers on the same files.

Small tokenizers are trained here on generated text (no network), saved in each format a model folder can hold
(vocab.json + merges.txt, tokenizer.json, spiece.model), loaded by both libraries and compared on many texts.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

from longseq.tokenization import BatchEncoding, ByteTokenizer, Tokenizer

try:  # transformers reads spiece.model (BigBirdTokenizer, ReformerTokenizer) through protobuf
    import google.protobuf  # noqa: F401
except ImportError as error:
    raise ImportError(
        "tests/test_tokenization.py needs protobuf for transformers: pip install protobuf"
    ) from error

transformers.logging.set_verbosity_error()

WORDS = [
    "hello",
    "world",
    "café",
    "naïve",
    "Ünïcödé",
    "東京",
    "日本語",
    "😀",
    "👍🏽",
    "data",
    "model",
    "long",
    "sequence",
    "attention",
    "don't",
    "x.y",
    "42",
    "Ｆｕｌｌ",
    "ﬁne",
    "a,b",
    "résumé",
    "q?",
]


def make_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    seps = [" ", " ", " ", "  ", "\n", "\t", "     ", " \n "]
    texts = []
    for _ in range(n):
        k = rng.randint(0, 14)
        text = "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(k))
        texts.append(text.strip() if rng.random() < 0.6 else text)
    return texts


FIXED = [
    "",
    " ",
    "      ",
    "hello",
    " hello  world ",
    "\n\nhello\tworld\n",
    "zzqq unknown ÿ ŉ",
    "x" * 60,
    "café <mask> 東京😀",
    "a<mask>b [MASK] x[SEP]y",
    "hello </s> <s> world <pad>",
    "Ｆｕｌｌ ﬁne 😀😀😀",
]
TEXTS = FIXED + make_texts(1, 40)
PAIRS = list(zip([*make_texts(2, 12), "", "who?"], [*make_texts(3, 12), "context here", ""], strict=True))
CORPUS = make_texts(0, 600)


# ---- fixtures: one folder per format, each with the transformers tokenizer that reads it -----------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("tok")
    out: dict[str, tuple[Path, object]] = {}

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS, vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    raw = root / "roberta_raw"
    raw.mkdir()
    bpe.save_model(str(raw))
    out["roberta vocab+merges"] = (raw, transformers.RobertaTokenizer.from_pretrained(raw))
    saved = root / "roberta_json"
    out["roberta vocab+merges"][1].save_pretrained(saved)
    out["roberta tokenizer.json"] = (saved, transformers.AutoTokenizer.from_pretrained(saved))

    lf = root / "longformer_raw"  # LongformerTokenizer options written in tokenizer_config.json
    lf.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (lf / name).write_bytes((raw / name).read_bytes())
    lf_config = {"tokenizer_class": "LongformerTokenizer", "add_prefix_space": True, "trim_offsets": False}
    (lf / "tokenizer_config.json").write_text(json.dumps(lf_config | {"model_max_length": 24}))
    out["longformer prefix-space"] = (lf, transformers.AutoTokenizer.from_pretrained(lf))

    (root / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
    for model_type in ("unigram", "bpe"):
        for with_symbols in (True, False):
            folder = root / f"spm_{model_type}_{with_symbols}"
            folder.mkdir()
            extra = {"user_defined_symbols": ["[CLS]", "[SEP]", "[MASK]"]} if with_symbols else {}
            spm.SentencePieceTrainer.train(
                input=str(root / "corpus.txt"),
                model_prefix=str(folder / "spiece"),
                vocab_size=90,
                model_type=model_type,
                pad_id=0,
                eos_id=1,
                bos_id=2,
                unk_id=3,
                hard_vocab_limit=False,
                minloglevel=2,
                **extra,
            )
            for family, cls in (("bigbird", "BigBirdTokenizer"), ("reformer", "ReformerTokenizer")):
                fam = folder.with_name(f"{folder.name}_{family}")
                fam.mkdir()
                (fam / "spiece.model").write_bytes((folder / "spiece.model").read_bytes())
                if with_symbols:  # family named by tokenizer_config.json
                    (fam / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}))
                else:  # family named by config.json
                    model = {"bigbird": "big_bird", "reformer": "reformer"}[family]
                    (fam / "config.json").write_text(json.dumps({"model_type": model, "vocab_size": 90}))
                hf = getattr(transformers, cls).from_pretrained(fam)
                out[f"{family} spm {model_type} symbols={with_symbols}"] = (fam, hf)
                if model_type == "unigram" and with_symbols:
                    saved = fam.with_name(fam.name + "_saved")
                    hf.save_pretrained(saved)
                    out[f"{family} tokenizer.json"] = (
                        saved,
                        transformers.AutoTokenizer.from_pretrained(saved),
                    )
    return out


CASES = ["roberta vocab+merges", "roberta tokenizer.json", "longformer prefix-space"] + [
    f"{family} {kind}"
    for family in ("bigbird", "reformer")
    for kind in [f"spm {m} symbols={s}" for m in ("unigram", "bpe") for s in (True, False)]
    + ["tokenizer.json"]
]


@pytest.fixture(scope="module", params=CASES)
def pair_of(request, folders) -> tuple[Tokenizer, object]:
    folder, hf = folders[request.param]
    return Tokenizer.from_pretrained(folder), hf


ALIGN = dict(return_offsets_mapping=True, return_token_type_ids=True, return_special_tokens_mask=True)


def assert_same(ours: BatchEncoding, theirs, rows: int | None = None) -> None:
    assert set(ours) == set(theirs)
    for key in theirs:
        if isinstance(theirs[key], torch.Tensor):
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key
    for i in range(rows or 1):
        assert ours.tokens(i) == theirs.tokens(i)
        assert ours.word_ids(i) == theirs.word_ids(i)
        assert ours.sequence_ids(i) == theirs.sequence_ids(i)


# ---- comparisons with transformers -----------------------------------------------------------------------
def test_attributes_match(pair_of):
    ours, hf = pair_of
    for name in (
        "pad_token_id",
        "cls_token_id",
        "sep_token_id",
        "mask_token_id",
        "eos_token_id",
        "bos_token_id",
        "unk_token_id",
        "vocab_size",
        "model_max_length",
        "padding_side",
        "all_special_ids",
    ):
        assert getattr(ours, name) == getattr(hf, name), name
    assert len(ours) == len(hf)
    assert ours.get_vocab() == hf.get_vocab()


def test_single_texts_match(pair_of):
    ours, hf = pair_of
    for text in TEXTS:
        assert_same(ours(text, **ALIGN), hf(text, **ALIGN))
        assert_same(ours(text), hf(text))
        assert (
            ours(text, add_special_tokens=False)["input_ids"]
            == hf(text, add_special_tokens=False)["input_ids"]
        )


def test_pairs_match(pair_of):
    ours, hf = pair_of
    for question, context in PAIRS:
        assert_same(ours(question, context, **ALIGN), hf(question, context, **ALIGN))
    questions, contexts = map(list, zip(*PAIRS, strict=True))
    assert_same(ours(questions, contexts, **ALIGN), hf(questions, contexts, **ALIGN), rows=len(PAIRS))


def test_offsets_point_into_original_text(pair_of):
    ours, _ = pair_of
    for text in TEXTS:
        enc = ours(text, return_offsets_mapping=True)
        for (start, end), seq in zip(enc["offset_mapping"], enc.sequence_ids(), strict=True):
            assert 0 <= start <= end <= len(text)
            assert seq == 0 or (start, end) == (0, 0)


@pytest.mark.parametrize(
    "options",
    [
        dict(padding=True),
        dict(padding=True, truncation=True, max_length=7),
        dict(padding="max_length", truncation=True, max_length=9, return_tensors="pt"),
        dict(padding=True, return_tensors="pt", padding_side="left", pad_to_multiple_of=4),
        dict(truncation=True, max_length=6),
        dict(max_length=5),
        dict(padding="longest", truncation="only_second", max_length=12, pair=True, return_tensors="pt"),
        dict(padding=True, truncation=True, max_length=10, pair=True),
        dict(padding=True, truncation=True, pair=True, return_tensors="np"),
        dict(truncation=True, max_length=8, stride=2, return_overflowing_tokens=True),
    ],
)
def test_batches_match(pair_of, options):
    ours, hf = pair_of
    options = dict(options)
    pair = options.pop("pair", False)
    texts = TEXTS[:20]
    args = (texts, list(reversed(texts))) if pair else (texts,)
    if options.get("padding") and hf.pad_token is None:  # Reformer has no pad token: both refuse
        with pytest.raises(ValueError, match="pad"):
            hf(*args, **options)
        with pytest.raises(ValueError, match="pad token"):
            ours(*args, **options)
        return
    if options.get("truncation") == "only_second" or (pair and options.get("truncation")):
        texts = [t + " hello world data model" for t in texts]  # long enough that truncation can succeed
        args = (["q?"] * len(texts), texts)
    theirs = hf(*args, **options, return_offsets_mapping=True)
    mine = ours(*args, **options, return_offsets_mapping=True)
    if options.get("return_tensors") == "np":
        assert set(mine) == set(theirs) and all((mine[k] == theirs[k]).all() for k in theirs)
        return
    assert_same(mine, theirs, rows=len(theirs["input_ids"]))


def test_decode_matches(pair_of):
    ours, hf = pair_of
    batch = hf(TEXTS)["input_ids"]
    for ids in batch:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
            assert ours.convert_ids_to_tokens(ids, skip) == hf.convert_ids_to_tokens(
                ids, skip_special_tokens=skip
            )
    assert ours.batch_decode(batch, skip_special_tokens=True) == hf.batch_decode(
        batch, skip_special_tokens=True
    )
    assert ours.decode(torch.tensor(batch[5])) == hf.decode(batch[5])
    assert ours.decode(batch[5][1]) == hf.decode(batch[5][1])


def test_byte_level_bpe_round_trips(folders):
    tok = Tokenizer.from_pretrained(folders["roberta vocab+merges"][0])
    for text in TEXTS:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == re.sub(
            "<mask>|</s>|<s>|<pad>", "", text
        )


def test_batch_tensors_and_word_aggregation(folders):
    tok = Tokenizer.from_pretrained(folders["bigbird spm unigram symbols=True"][0])
    enc = tok(["hello world café", "東京"], padding=True, return_tensors="pt")
    assert enc.input_ids.dtype == torch.long and enc.input_ids.shape == enc.attention_mask.shape
    assert enc.attention_mask[1].tolist()[-1] == 0 and enc.input_ids[1, -1].item() == tok.pad_token_id
    words = enc.word_ids(0)
    assert words[0] is None and words[-1] is None and max(w for w in words if w is not None) == 2


# ---- byte-level Reformer (enwik8) ------------------------------------------------------------------------
def test_bytes_tokenizer_follows_enwik8_convention(tmp_path):
    tok = Tokenizer.bytes()
    assert isinstance(tok, ByteTokenizer) and tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok.vocab_size == 258
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert ids == [b + 2 for b in text.encode("utf-8")]
        assert tok.decode(ids) == text
    enc = tok(["é</s>", "abc"], padding=True, return_offsets_mapping=True)
    assert enc["input_ids"] == [[0xC3 + 2, 0xA9 + 2, *(b + 2 for b in b"</s>")], [99, 100, 101, 0, 0, 0]]
    assert enc["offset_mapping"][0][:2] == [(0, 1), (0, 1)]  # both bytes of "é" point at the character
    assert tok.decode([0, 1, 106, 107, 0]) == "hi"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "reformer", "vocab_size": 258}))
    assert isinstance(Tokenizer.from_pretrained(tmp_path), ByteTokenizer)


# ---- bad inputs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [123, None, b"bytes", [1, 2], ["ok", 3], {"text": "x"}])
def test_text_that_is_not_a_string_is_refused(folders, bad):
    tok = Tokenizer.from_pretrained(folders["roberta tokenizer.json"][0])
    with pytest.raises(TypeError, match="text must be a str"):
        tok(bad)
    with pytest.raises(TypeError, match="text_pair must be a str"):
        tok("question", bad if bad is not None else 5)


def test_bad_options_are_refused(folders):
    tok = Tokenizer.from_pretrained(folders["roberta tokenizer.json"][0])
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding must be"):
        tok("a", padding="everything")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("a", return_tensors="tf")
    with pytest.raises(ValueError, match="text_pair has 1"):
        tok(["a", "b"], ["c"])


def test_folder_without_tokenizer_files_lists_what_was_looked_for(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"tokenizer\.json.*vocab\.json \+ merges\.txt.*spiece\.model"
    ):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Tokenizer.from_pretrained(tmp_path / "missing")


def test_spiece_without_family_asks_for_one(folders, tmp_path):
    source = folders["bigbird spm unigram symbols=False"][0] / "spiece.model"
    (tmp_path / "spiece.model").write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match="family='bigbird' or family='reformer'"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="family='gpt2' is unknown"):
        Tokenizer.from_pretrained(tmp_path, family="gpt2")
    tok = Tokenizer.from_pretrained(tmp_path, family="bigbird")
    assert tok("hello")["input_ids"][0] == tok.cls_token_id


def test_spm_reader_matches_protobuf(folders):
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    from longseq.tokenization.spm_model import read_spm_model

    for name in ("bigbird spm unigram symbols=True", "reformer spm bpe symbols=False"):
        path = folders[name][0] / "spiece.model"
        ours, proto = read_spm_model(path), SentencePieceExtractor(str(path)).proto
        assert ours.pieces == [(p.piece, p.score, p.type) for p in proto.pieces]
        assert ours.precompiled_charsmap == proto.normalizer_spec.precompiled_charsmap
        spec = proto.trainer_spec
        got = (ours.model_type, ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id, ours.byte_fallback)
        assert got == (
            spec.model_type,
            spec.unk_id,
            spec.bos_id,
            spec.eos_id,
            spec.pad_id,
            spec.byte_fallback,
        )
