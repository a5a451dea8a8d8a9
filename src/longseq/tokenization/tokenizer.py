"""`Tokenizer`: Hugging Face-style calls (`tok(text)`, pairs, batches, padding, truncation, offsets) over a
`tokenizers` backend, giving the same ids as transformers' tokenizer classes on the same files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Encoding
from tokenizers import Tokenizer as Backend

from .builders import SPECIAL_NAMES
from .encoding import BatchEncoding

VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length
LARGE_INTEGER = int(1e20)
_PADDING = {"longest", "max_length", "do_not_pad"}
_TRUNCATION = {"longest_first", "only_first", "only_second", "do_not_truncate"}


class Tokenizer:
    """Tokenizer of Longformer / BigBird / Reformer checkpoints; build it with `Tokenizer.from_pretrained`."""

    def __init__(
        self,
        backend: Backend,
        *,
        special_tokens: dict[str, AddedToken | None],
        extra_special_tokens: Sequence[AddedToken] = (),
        post_processor: Callable[[Backend], Any] | None = None,
        family: str = "tokenizer.json",
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
        model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
        clean_up_tokenization_spaces: bool = False,
    ):
        for name, value in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if value not in ("left", "right"):
                raise ValueError(f"{name} must be 'left' or 'right', got {value!r}")
        self.backend = backend
        self.family = family
        self.model_max_length = int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_input_names = list(model_input_names)
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._specials = {name: special_tokens.get(name) for name in SPECIAL_NAMES}
        self._extras = list(extra_special_tokens)
        # As transformers' TokenizersBackend.__init__: named special tokens, then extra ones, are registered
        # as added tokens unless the backend already has them as added tokens.
        present = set(
            backend.get_added_tokens_decoder()[i].content for i in backend.get_added_tokens_decoder()
        )
        to_add = []
        for token in [*self._specials.values(), *self._extras]:
            if token is not None and token.content not in present:
                to_add.append(token)
                present.add(token.content)
        if to_add:
            backend.add_tokens(to_add)
        if post_processor is not None:
            backend.post_processor = post_processor(backend)
        backend.no_truncation()
        backend.no_padding()

    # ---- construction
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, family: str | None = None, **overrides: Any) -> Tokenizer:
        """Load the tokenizer of a Hugging Face model folder.

        Looks for, in order: tokenizer.json, vocab.json + merges.txt (byte-level BPE, Longformer/RoBERTa),
        spiece.model (BigBird or Reformer sentencepiece), else a byte-level Reformer when config.json says
        model_type "reformer" with vocab_size 258. ``family`` ("longformer", "roberta", "bigbird", "reformer",
        "bytes") forces the family when the folder's configs do not name it. ``overrides`` replace
        tokenizer_config.json entries (e.g. ``model_max_length=4096``, ``add_prefix_space=True``).
        """
        from .loading import load_folder

        return load_folder(cls, folder, family=family, overrides=overrides)

    @classmethod
    def bytes(cls) -> Tokenizer:
        """The byte-level tokenizer of character-level Reformer models (enwik8): id = UTF-8 byte + 2."""
        from .byte_level import ByteTokenizer

        return ByteTokenizer()

    # ---- special tokens and vocabulary
    def _token(self, name: str) -> str | None:
        token = self._specials[name]
        return None if token is None else token.content

    def _id(self, name: str) -> int | None:
        token = self._token(name)
        if token is None:
            return None
        index = self.backend.token_to_id(token)
        return index if index is not None else self.unk_token_id if name != "unk" else None

    bos_token = property(lambda self: self._token("bos"))
    eos_token = property(lambda self: self._token("eos"))
    unk_token = property(lambda self: self._token("unk"))
    sep_token = property(lambda self: self._token("sep"))
    pad_token = property(lambda self: self._token("pad"))
    cls_token = property(lambda self: self._token("cls"))
    mask_token = property(lambda self: self._token("mask"))
    bos_token_id = property(lambda self: self._id("bos"))
    eos_token_id = property(lambda self: self._id("eos"))
    unk_token_id = property(lambda self: self._id("unk"))
    sep_token_id = property(lambda self: self._id("sep"))
    pad_token_id = property(lambda self: self._id("pad"))
    cls_token_id = property(lambda self: self._id("cls"))
    mask_token_id = property(lambda self: self._id("mask"))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of the named special tokens and the extra special tokens, without repeats."""
        ids = [self._id(name) for name in SPECIAL_NAMES]
        ids += [self.backend.token_to_id(t.content) for t in self._extras]
        return list(dict.fromkeys(i for i in ids if i is not None))

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (as transformers' ``vocab_size``)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> Any:
        """Token string(s) of id(s); a single int gives a single string."""
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in _as_list(ids, "ids") if int(i) not in skip]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        if isinstance(tokens, str):
            index = self.backend.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self(text, pair, add_special_tokens=add_special_tokens).tokens()

    # ---- encoding
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Tokenize one text, a (question, context) pair, or a batch of either, like a transformers tokenizer.

        Offsets index into the original (un-normalized) text. A batch is a list of strings (with
        ``is_split_into_words=True``: a list of word lists); ``text_pair`` then is a list of the same length.
        """
        batched = _check_text(text, "text", is_split_into_words)
        if text_pair is not None:
            pair_batched = _check_text(text_pair, "text_pair", is_split_into_words)
            if pair_batched != batched:
                raise TypeError("text and text_pair must both be single examples or both be batches (lists)")
            if batched and len(text) != len(text_pair):
                raise ValueError(
                    f"text has {len(text)} examples but text_pair has {len(text_pair)}; pass equal lists"
                )
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        pad_strategy, trunc_strategy, max_length = self._strategies(padding, truncation, max_length)
        self._configure(pad_strategy, trunc_strategy, max_length, stride, pad_to_multiple_of, padding_side)

        if batched:
            inputs = list(zip(text, text_pair, strict=True)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]  # an empty pair counts as none, as in HF
        encodings = self.backend.encode_batch(
            inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words
        )

        with_types = (
            "token_type_ids" in self.model_input_names
            if return_token_type_ids is None
            else return_token_type_ids
        )
        with_mask = (
            "attention_mask" in self.model_input_names
            if return_attention_mask is None
            else return_attention_mask
        )
        rows: list[Encoding] = []
        sample_of_row: list[int] = []
        for i, enc in enumerate(encodings):
            for e in [enc, *(enc.overflowing if return_overflowing_tokens else [])]:
                rows.append(e)
                sample_of_row.append(i)
        fields: dict[str, Callable[[Encoding], Any]] = {"input_ids": lambda e: e.ids}
        if with_types:
            fields["token_type_ids"] = lambda e: e.type_ids
        if with_mask:
            fields["attention_mask"] = lambda e: e.attention_mask
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = lambda e: e.special_tokens_mask
        if return_offsets_mapping:
            fields["offset_mapping"] = lambda e: e.offsets
        if return_length:
            fields["length"] = lambda e: len(e.ids)
        data: dict[str, Any] = {key: [get(e) for e in rows] for key, get in fields.items()}
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row
        if return_tensors is not None:
            data = {key: _to_tensor(key, value, return_tensors) for key, value in data.items()}
        elif not batched and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, rows)

    def encode(self, text: str, text_pair: str | None = None, **kwargs: Any) -> list[int]:
        """The ``input_ids`` of ``tok(text, text_pair, **kwargs)``."""
        return self(text, text_pair, **kwargs)["input_ids"]

    def _strategies(self, padding: bool | str, truncation: bool | str | None, max_length: int | None):
        """transformers' `_get_padding_truncation_strategies`, with the same defaults."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding is True:
            pad = "longest"
        elif padding is False or padding is None:
            pad = "do_not_pad"
        elif padding in _PADDING:
            pad = padding
        else:
            raise ValueError(f"padding must be True, False or one of {sorted(_PADDING)}, got {padding!r}")
        if truncation is True:
            trunc = "longest_first"
        elif truncation is False or truncation is None:
            trunc = "do_not_truncate"
        elif truncation in _TRUNCATION:
            trunc = truncation
        else:
            raise ValueError(
                f"truncation must be True, False or one of {sorted(_TRUNCATION)}, got {truncation!r}"
            )
        if max_length is None:
            unlimited = self.model_max_length > LARGE_INTEGER
            if pad == "max_length":
                pad = "do_not_pad" if unlimited else pad
                max_length = None if unlimited else self.model_max_length
            if trunc != "do_not_truncate":
                trunc = "do_not_truncate" if unlimited else trunc
                max_length = None if unlimited else self.model_max_length
        elif not isinstance(max_length, int) or max_length <= 0:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if pad != "do_not_pad" and self.pad_token_id is None:
            raise ValueError(
                f"padding={padding!r} needs a pad token but this {self.family} tokenizer has none; "
                "pass padding=False or load a folder whose tokenizer_config.json sets pad_token"
            )
        return pad, trunc, max_length

    def _configure(self, pad, trunc, max_length, stride, pad_to_multiple_of, padding_side) -> None:
        if trunc == "do_not_truncate":
            self.backend.no_truncation()
        else:
            self.backend.enable_truncation(
                max_length, stride=stride, strategy=trunc, direction=self.truncation_side
            )
        if pad == "do_not_pad":
            self.backend.no_padding()
        else:
            side = padding_side or self.padding_side
            if side not in ("left", "right"):
                raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
            self.backend.enable_padding(
                direction=side,
                pad_id=self.pad_token_id,
                pad_type_id=0,
                pad_token=self.pad_token,
                length=max_length if pad == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )

    # ---- decoding
    def decode(
        self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of a sequence of ids (a list, 1-D tensor or array; a single int is one token)."""
        ids = [ids] if isinstance(ids, int) else _as_list(ids, "ids")
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        clean = (
            self.clean_up_tokenization_spaces
            if clean_up_tokenization_spaces is None
            else clean_up_tokenization_spaces
        )
        if clean and type(self.backend.model).__name__ != "BPE":  # transformers never cleans up BPE output
            text = _clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """`decode` for each row of a list of id lists or a 2-D tensor."""
        return [self.decode(seq, skip_special_tokens, **kwargs) for seq in _as_list(sequences, "sequences")]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(family={self.family!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r})"
        )


def _check_text(text: Any, name: str, split_into_words: bool) -> bool:
    """Validate a text argument; return whether it is a batch."""
    hint = (
        f"{name} must be a str or a list of str (a batch)"
        if not split_into_words
        else f"with is_split_into_words=True, {name} must be a list of str (words) or a list of such lists"
    )
    if isinstance(text, str):
        if split_into_words:
            raise TypeError(f"{hint}; got a str")
        return False
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"{hint}; got {type(text).__name__}")
    if not split_into_words:
        bad = next((t for t in text if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{hint}; got a list holding {type(bad).__name__}")
        return True
    if all(isinstance(t, str) for t in text):
        return False
    if all(isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t) for t in text):
        return True
    raise TypeError(f"{hint}; got {text!r:.80}")


def _as_list(values: Any, name: str) -> list:
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints or a tensor, got {type(values).__name__}")
    return list(values)


def _to_tensor(key: str, rows: list, kind: str) -> Any:
    if rows and isinstance(rows[0], (list, tuple)) and len({len(r) for r in rows}) > 1:
        raise ValueError(
            f"cannot make a {kind!r} tensor of {key!r}: the rows have different lengths; pass padding=True "
            "(and truncation=True for long texts)"
        )
    if kind == "np":
        import numpy as np

        return np.array(rows, dtype=np.int64)
    import torch

    return torch.tensor(rows, dtype=torch.long)


def _clean_up_tokenization(text: str) -> str:
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")):
        text = text.replace(before, after)
    for before, after in ((" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
