"""Training samples from user files: extractive QA (SQuAD JSON) and masked / causal LM (raw text).

The tokenizer is any `longseq.Tokenizer` (or a transformers tokenizer with the same call). Samples
are dicts of 1-D tensors; the collate functions pad them into `model(**batch)` keyword arguments
with the labels each head's loss reads (`start_positions` / `end_positions`, or `labels`).

- `qa_features`: HF's recipe: question + context windows of `max_length` tokens overlapping by
  `stride`, the answer's token span in each window, or the first token (the no-answer position)
  where the answer is not wholly inside the window or the question has none (SQuAD 2.0).
- `lm_blocks`: the text's tokens cut into blocks of `block` tokens (each wrapped in the tokenizer's
  cls / sep or bos / eos tokens when it has them); the last, shorter block is kept.
- `mlm_collate` masks 15% of the real tokens (80% mask token, 10% random, 10% kept), BERT's rule;
  `mask_fixed` draws the masks of an eval set once, so every evaluation scores the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.files import QAExample

Sample = dict[str, torch.Tensor]


def qa_features(
    examples: Sequence[QAExample], tokenizer: Any, max_length: int, stride: int = 128
) -> list[Sample]:
    """One sample per (question, context window): input_ids, start_positions, end_positions (0-d)."""
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
    if not 0 <= stride < max_length // 2:
        raise ValueError(f"stride must be in [0, max_length / 2) = [0, {max_length // 2}), got {stride}")
    specials = len(tokenizer("a", "b")["input_ids"]) - sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("a", "b")
    )
    for e in examples:
        room = max_length - specials - len(tokenizer(e.question, add_special_tokens=False)["input_ids"])
        if room <= stride:
            raise ValueError(
                f"question {e.id!r} leaves {room} context tokens of the model's {max_length}, not more "
                f"than stride={stride}: shorten the question or pass a smaller --stride"
            )
    enc = tokenizer(
        [e.question for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    out: list[Sample] = []
    for row, ex_index in enumerate(enc["overflow_to_sample_mapping"]):
        ex = examples[ex_index]
        seq = enc.sequence_ids(row)
        offsets = enc["offset_mapping"][row]
        start = end = 0  # the no-answer position (the first token, cls / <s>)
        context = [i for i, s in enumerate(seq) if s == 1]
        if ex.answers and not ex.is_impossible and context:
            a = ex.answers[0]
            lo, hi = a.start, a.start + len(a.text)  # character span in the context
            first, last = context[0], context[-1]
            if offsets[first][0] <= lo and offsets[last][1] >= hi:  # wholly inside this window
                start = next(i for i in context if offsets[i][1] > lo)
                end = next(i for i in reversed(context) if offsets[i][0] < hi)
        sample = {
            "input_ids": torch.tensor(enc["input_ids"][row]),
            "start_positions": torch.tensor(start),
            "end_positions": torch.tensor(end),
        }
        if "token_type_ids" in enc:
            sample["token_type_ids"] = torch.tensor(enc["token_type_ids"][row])
        out.append(sample)
    return out


def lm_blocks(text: str, tokenizer: Any, block: int) -> list[Sample]:
    """The text's tokens in blocks of at most `block` tokens (special tokens included): input_ids."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    wrap = [t for t in (first, last) if t is not None]
    room = block - len(wrap)
    if room < 1:
        raise ValueError(f"block must leave room for tokens beside {len(wrap)} special ones, got {block}")
    head = [first] if first is not None else []
    tail = [last] if last is not None else []
    return [{"input_ids": torch.tensor(head + ids[i : i + room] + tail)} for i in range(0, len(ids), room)]


def pad_collate(samples: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack samples: 1-D fields padded to the longest (input_ids with pad_id, labels with -100, the
    rest with 0), attention_mask 1 on real tokens; 0-d fields stacked."""
    if not samples:
        raise ValueError("collate got an empty batch")
    t = max(len(s["input_ids"]) for s in samples)
    out: dict[str, torch.Tensor] = {}
    for key in samples[0]:
        if samples[0][key].dim() == 0:
            out[key] = torch.stack([s[key] for s in samples])
            continue
        fill = pad_id if key == "input_ids" else -100 if key == "labels" else 0
        out[key] = torch.full((len(samples), t), fill, dtype=torch.long)  # (B, T)
        for b, s in enumerate(samples):
            out[key][b, : len(s[key])] = s[key]
    mask = torch.zeros(len(samples), t, dtype=torch.long)  # (B, T)
    for b, s in enumerate(samples):
        mask[b, : len(s["input_ids"])] = 1
    out["attention_mask"] = mask
    return out


def clm_collate(samples: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Causal LM: labels are the input ids (the model shifts them); padding is -100."""
    return pad_collate([{**s, "labels": s["input_ids"]} for s in samples], pad_id)


def _mask(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special: torch.Tensor,
    prob: float,
    generator: torch.Generator | None,
) -> Sample:
    ids = ids.clone()
    pick = (torch.rand(ids.shape, generator=generator) < prob) & ~torch.isin(ids, special)
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    ids[pick & (roll < 0.8)] = mask_id
    rnd = pick & (roll >= 0.8) & (roll < 0.9)
    ids[rnd] = torch.randint(vocab_size, (int(rnd.sum()),), generator=generator)
    return {"input_ids": ids, "labels": labels}


class MaskedLM:
    """The masking rule of one tokenizer and vocabulary: `collate` for training (fresh masks from
    torch's global RNG, which the trainer seeds and checkpoints), `mask_fixed` for an eval set."""

    def __init__(self, tokenizer: Any, vocab_size: int, prob: float = 0.15) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: masked LM needs one (use --objective clm)")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: batches cannot be padded")
        if not 0 < prob < 1:
            raise ValueError(f"mask probability must be in (0, 1), got {prob}")
        self.mask_id, self.pad_id, self.vocab_size, self.prob = (
            tokenizer.mask_token_id,
            tokenizer.pad_token_id,
            vocab_size,
            prob,
        )
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    def _masked(self, ids: torch.Tensor, generator: torch.Generator | None) -> Sample:
        return _mask(ids, self.mask_id, self.vocab_size, self.special, self.prob, generator)

    def collate(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Pad; samples without labels get fresh masks (samples of `mask_fixed` keep theirs)."""
        masked = [s if "labels" in s else self._masked(s["input_ids"], None) for s in samples]
        return pad_collate(masked, self.pad_id)

    def mask_fixed(self, samples: Sequence[Sample], seed: int = 0) -> list[Sample]:
        g = torch.Generator().manual_seed(seed)
        return [self._masked(s["input_ids"], g) for s in samples]
