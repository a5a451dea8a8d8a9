"""Build `tokenizers.Tokenizer` backends the way Hugging Face transformers (v5) builds them.

One function per file format / family. Each returns the backend plus the special tokens it expects, so that
`Tokenizer` can add them exactly as transformers' `TokenizersBackend.__init__` does.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, Unigram

from .spm_model import CONTROL, USER_DEFINED, SpmModel

SPIECE_UNDERLINE = "▁"
SPECIAL_NAMES = (
    "bos",
    "eos",
    "unk",
    "sep",
    "pad",
    "cls",
    "mask",
)  # transformers' SPECIAL_TOKENS_ATTRIBUTES order

# Per-family defaults of transformers' tokenizer classes: (special tokens, mask lstrip)
ROBERTA_SPECIALS = {
    "bos": "<s>",
    "eos": "</s>",
    "unk": "<unk>",
    "sep": "</s>",
    "pad": "<pad>",
    "cls": "<s>",
    "mask": "<mask>",
}
BIGBIRD_SPECIALS = {
    "bos": "<s>",
    "eos": "</s>",
    "unk": "<unk>",
    "sep": "[SEP]",
    "pad": "<pad>",
    "cls": "[CLS]",
    "mask": "[MASK]",
}
REFORMER_SPECIALS = {
    "bos": None,
    "eos": "</s>",
    "unk": "<unk>",
    "sep": None,
    "pad": None,
    "cls": None,
    "mask": None,
}


def special_token(
    content: str, *, lstrip: bool = False, rstrip: bool = False, special: bool = True
) -> AddedToken:
    return AddedToken(content, lstrip=lstrip, rstrip=rstrip, normalized=False, special=special)


def roberta_bpe(vocab_file: Path, merges_file: Path, add_prefix_space: bool) -> Backend:
    """Byte-level BPE of RobertaTokenizer / LongformerTokenizer (post-processor set later, it needs ids)."""
    vocab, merges = BPE.read_file(str(vocab_file), str(merges_file))
    backend = Backend(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    return backend


def roberta_post_processor(backend: Backend, cls: str, sep: str, trim_offsets: bool, add_prefix_space: bool):
    return processors.RobertaProcessing(
        (sep, backend.token_to_id(sep)), (cls, backend.token_to_id(cls)), trim_offsets, add_prefix_space
    )


def spm_extra_tokens(spm: SpmModel) -> list[AddedToken]:
    """Control and user-defined pieces; transformers registers them as extra special tokens."""
    return [special_token(p) for p, _, kind in spm.pieces if kind in (CONTROL, USER_DEFINED)]


def bigbird_unigram(spm: SpmModel, unk: str, add_prefix_space: bool) -> Backend:
    """BigBirdTokenizer: a Unigram over the spm pieces, *without* the spm charsmap normalizer (as in HF)."""
    vocab = [(piece, score) for piece, score, _ in spm.pieces]
    unk_id = vocab.index((unk, 0.0)) if (unk, 0.0) in vocab else 100  # transformers' rule, verbatim
    backend = Backend(Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Strip(left=False, right=False), normalizers.Replace(Regex(r" {2,}"), SPIECE_UNDERLINE)]
    )
    scheme = "always" if add_prefix_space else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPIECE_UNDERLINE, prepend_scheme=scheme, split=True
    )
    backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme=scheme, split=True)
    return backend


def bigbird_post_processor(backend: Backend, cls: str, sep: str):
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )


def generate_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges recovered from an ordered vocab (transformers' `generate_merges` without scores)."""
    merges = []
    for merge, rank in vocab.items():
        local = [
            (merge[:i], merge[i:], rank)
            for i in range(1, len(merge))
            if merge[:i] in vocab and merge[i:] in vocab
        ]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))
    return [(left, right) for left, right, _ in merges]


def reformer_bpe(spm: SpmModel, unk: str) -> Backend:
    """ReformerTokenizer: BPE with merges generated from the spm vocab order, spm charsmap normalizer."""
    vocab = {piece: i for i, (piece, _, _) in enumerate(spm.pieces)}
    backend = Backend(
        BPE(
            vocab=vocab,
            merges=generate_merges(vocab),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=False,
            dropout=None,
        )
    )
    if spm.precompiled_charsmap:
        backend.normalizer = normalizers.Sequence(
            [normalizers.Precompiled(spm.precompiled_charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
        )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always")
    return backend


def bos_eos_post_processor(backend: Backend, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool):
    """transformers' `update_post_processor`: optional bos/eos around each sequence (off for Reformer)."""
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
    pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
    special = [(t, backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def byte_level(pad: str, eos: str) -> Backend:
    """One token per UTF-8 byte, id = byte + 2 (enwik8 Reformer); ids 0 and 1 are pad and eos."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {pad: 0, eos: 1} | {byte_to_char[b]: b + 2 for b in range(256)}
    assert set(byte_to_char.values()) == set(alphabet)
    backend = Backend(BPE(vocab=vocab, merges=[], dropout=None, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what the ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}
