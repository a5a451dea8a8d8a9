"""Byte-level tokenizer of character-level Reformer models (google/reformer-enwik8).

The model card's convention: ``input_ids = [b + 2 for b in text.encode("utf-8")]``; ids 0 and 1 are reserved
(0 pads) and decode to nothing.
"""

from __future__ import annotations

from .builders import byte_level, special_token
from .tokenizer import Tokenizer

PAD, EOS = "<pad>", "</s>"


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte, id = byte + 2; ``pad_token_id`` 0, ``eos_token_id`` 1; adds no specials.

    Decoding drops ids 0 and 1 and reads the bytes back as UTF-8 (invalid sequences become U+FFFD).
    """

    def __init__(self, model_max_length: int | None = None, padding_side: str = "right"):
        kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
        super().__init__(
            byte_level(PAD, EOS),
            special_tokens={"pad": special_token(PAD), "eos": special_token(EOS)},
            family="bytes",
            padding_side=padding_side,
            **kwargs,
        )
        self.backend.encode_special_tokens = True  # "</s>" in text is 4 bytes, not the eos id

    def decode(
        self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Ids 0 and 1 carry no byte and are always dropped (as in the enwik8 model card's decode)."""
        return super().decode([i for i in _ints(ids) if i > 1], skip_special_tokens=True)


def _ints(ids) -> list[int]:
    if isinstance(ids, int):
        return [ids]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]
