"""A fixed token vocabulary for the built-in synthetic tasks.

Id 0 is always ``[PAD]`` and id 1 is always ``[CLS]``: the data sets put ``[CLS]`` at position 0 of every
sequence, which is the position the classification heads read (``hidden_states[:, 0]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD = "[PAD]"
CLS = "[CLS]"
PAD_ID = 0
CLS_ID = 1


class Vocab:
    """Maps task tokens to ids and back; ``[PAD]`` = 0 and ``[CLS]`` = 1 come first."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        if PAD in tokens or CLS in tokens:
            raise ValueError(f"{PAD} and {CLS} are added by Vocab; do not list them")
        self.tokens: list[str] = [PAD, CLS, *tokens]
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id = PAD_ID
        self.cls_id = CLS_ID

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str] | str, add_cls: bool = False) -> list[int]:
        """Token strings (a list, or one space-separated string) -> ids; ``add_cls`` prepends ``[CLS]``."""
        if isinstance(tokens, str):
            tokens = tokens.split()
        ids = [self.cls_id] if add_cls else []
        for t in tokens:
            try:
                ids.append(self.index[t])
            except KeyError:
                raise ValueError(f"unknown token {t!r}; the vocabulary is {self.tokens[2:]}") from None
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> list[str]:
        """Ids -> token strings; ``[PAD]`` and ``[CLS]`` are dropped unless ``skip_special`` is False."""
        out = []
        for i in np.asarray(list(ids)).tolist():
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"id {i} is outside the vocabulary of size {len(self.tokens)}")
            if skip_special and i in (self.pad_id, self.cls_id):
                continue
            out.append(self.tokens[i])
        return out
