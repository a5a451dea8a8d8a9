"""`BatchEncoding`: the dict a `Tokenizer` call returns, plus token <-> word / sequence / char alignment."""

from __future__ import annotations

from typing import Any

from tokenizers import Encoding


class BatchEncoding(dict):
    """A dict of model inputs (``input_ids``, ``attention_mask``, ...), readable as attributes too.

    ``encodings`` holds one `tokenizers.Encoding` per row (after overflow), which gives the alignment helpers.
    """

    def __init__(self, data: dict[str, Any], encodings: list[Encoding] | None = None):
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r}; keys: {sorted(self)}") from None

    def _encoding(self, batch_index: int) -> Encoding:
        if not self.encodings:
            raise ValueError(
                "this BatchEncoding carries no token alignment (it was not made by a Tokenizer call)"
            )
        if not -len(self.encodings) <= batch_index < len(self.encodings):
            raise IndexError(
                f"batch_index={batch_index} is out of range for a batch of {len(self.encodings)}"
            )
        return self.encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of row ``batch_index``."""
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it comes from (None for special and pad tokens)."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 for the first text (question), 1 for the second (context), None for specials."""
        return self._encoding(batch_index).sequence_ids

    def token_to_word(self, batch_index: int, token_index: int) -> int | None:
        return self._encoding(batch_index).token_to_word(token_index)

    def char_to_token(self, batch_index: int, char_index: int, sequence_index: int = 0) -> int | None:
        """The token covering character ``char_index`` of text ``sequence_index`` in row ``batch_index``."""
        return self._encoding(batch_index).char_to_token(char_index, sequence_index)

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor value to ``device`` (in place; returns self)."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self
