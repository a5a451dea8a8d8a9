"""Long-document pipelines: classify, answer, fill_mask, tag, generate.

Each takes a loaded model and a `longseq.Tokenizer` (or any tokenizer with Hugging Face's call
convention). Documents longer than the model reads are never cut silently:
- `classify(..., long_documents="split")` (default) cuts them into overlapping windows and averages
  the windows' probabilities; "truncate" keeps the start and warns; "error" refuses;
- `answer` slides overlapping windows (`stride` tokens shared) over the context and returns the best
  span of all windows, as character offsets into the original context;
- `tag` labels every window and keeps, for each token, the window where it sits farthest from an edge.
Batching pads inputs; for models whose outputs depend on the padded length (BigBird's blocks and
Reformer's hashing cut the padded sequence into positional blocks / chunks), only inputs of one
length share a batch, so a document's result never depends on its neighbours.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["answer", "classify", "fill_mask", "generate", "max_tokens", "tag"]


def max_tokens(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """How many tokens (special tokens included) the model reads at most."""
    config = model.config
    kind = getattr(config, "model_type", "")
    if kind == "longformer":
        limit = config.max_position_embeddings - config.pad_token_id - 1
    elif kind == "reformer" and getattr(config, "axial_pos_embds", False):
        limit = 1
        for side in config.axial_pos_shape:
            limit *= side
    else:
        limit = config.max_position_embeddings
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    return int(limit)


def _check_texts(name: str, texts: Any) -> list[str]:
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, Sequence) or isinstance(items, bytes):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{name}[{i}] is empty: give text to read")
    return list(items)


def _padding_invariant(model: torch.nn.Module) -> bool:
    return getattr(model.config, "model_type", "") == "longformer"


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token windows [start, end) of `size` covering n tokens, consecutive ones sharing `stride`."""
    if n <= size:
        return [(0, n)]
    step = max(size - stride, 1)
    starts = [*range(0, n - size, step), n - size]
    return [(s, s + size) for s in starts]


def _special_count(tokenizer: Any, pair: bool) -> int:
    one = tokenizer("a", "b") if pair else tokenizer("a")
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    bare_b = tokenizer("b", add_special_tokens=False)["input_ids"] if pair else []
    return len(one["input_ids"]) - len(bare) - len(bare_b)


def _token_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(span) for span in enc["offset_mapping"]]


def _fit_windows(
    tokenizer: Any,
    text: str,
    spans: list[tuple[int, int]],
    room: int,
    stride: int,
    limit: int,
    prefix: str | None = None,
) -> list[tuple[int, int]]:
    """Character windows of `text` whose tokenization (with `prefix` as the first of a pair) fits `limit`.

    Windows are cut at token boundaries; a window's text can tokenize to a few more tokens than its
    span (a word that lost its leading space), so windows that overflow are cut again, smaller.
    """
    if room < 1:
        raise ValueError(f"the model reads {limit} tokens: no room left for the text")
    out: list[tuple[int, int]] = []
    for s, e in _windows(len(spans), room, min(stride, room - 1)):
        a, b = spans[s][0], spans[e - 1][1]
        args = (prefix, text[a:b]) if prefix is not None else (text[a:b],)
        n = len(tokenizer(*args)["input_ids"])
        if n <= limit:
            out.append((a, b))
        else:
            out += _fit_windows(tokenizer, text, spans[s:e], room - (n - limit), stride, limit, prefix)
    return out


def _batches(items: list[Any], lengths: list[int], batch_size: int, by_length: bool) -> Iterator[list[int]]:
    """Indices of items in batches; with `by_length` only items of one length share a batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n if by_length else 0, []).append(i)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


def _run(model: torch.nn.Module, tokenizer: Any, texts: list[Any], pairs: list[str] | None = None) -> Any:
    """Tokenize with padding and run the model without gradients."""
    args = (texts, pairs) if pairs is not None else (texts,)
    enc = tokenizer(*args, padding=True, return_tensors="pt", return_offsets_mapping=True)
    device = _device(model)
    inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask") if k in enc}
    with torch.no_grad():
        return model(**inputs), enc


def _label(model: torch.nn.Module, index: int) -> str:
    id2label = getattr(model.config, "id2label", None) or {}
    if index not in id2label:
        raise ValueError(f"the model predicted label id {index}, which config.id2label {id2label} lacks")
    return id2label[index]


def classify(
    model: torch.nn.Module,
    tokenizer: Any,
    documents: str | Sequence[str],
    *,
    batch_size: int = 8,
    long_documents: str = "split",
    stride: int = 64,
) -> list[dict[str, Any]]:
    """Label each document: [{"label", "score", "scores": {label: p}, "windows"}], one per document."""
    docs = _check_texts("documents", documents)
    if long_documents not in ("split", "truncate", "error"):
        raise ValueError(f"long_documents must be 'split', 'truncate' or 'error', got {long_documents!r}")
    limit = max_tokens(model, tokenizer)
    room = limit - _special_count(tokenizer, pair=False)
    pieces: list[tuple[int, str]] = []  # (document index, window text)
    truncated = []
    for d, text in enumerate(docs):
        spans = _token_spans(tokenizer, text)
        if len(spans) <= room:
            pieces.append((d, text))
            continue
        if long_documents == "error":
            raise ValueError(f"documents[{d}] has {len(spans)} tokens; the model reads {room} at most")
        if long_documents == "truncate":
            truncated.append(d)
            spans = spans[:room]
        windows = _fit_windows(tokenizer, text, spans, room, stride, limit)
        pieces += [(d, text[a:b]) for a, b in windows[: 1 if long_documents == "truncate" else None]]
    if truncated:
        warnings.warn(f"documents {truncated} were cut to their first {room} tokens", stacklevel=2)
    lengths = [len(tokenizer(text)["input_ids"]) for _, text in pieces]
    probs: list[torch.Tensor | None] = [None] * len(pieces)
    for batch in _batches(pieces, lengths, batch_size, not _padding_invariant(model)):
        out, _ = _run(model, tokenizer, [pieces[i][1] for i in batch])
        for i, p in zip(batch, out.logits.float().softmax(-1), strict=True):
            probs[i] = p.cpu()
    results = []
    for d in range(len(docs)):
        mine = torch.stack(
            [p for (doc, _), p in zip(pieces, probs, strict=True) if doc == d and p is not None]
        )
        mean = mine.mean(0)
        best = int(mean.argmax())
        scores = {_label(model, i): float(p) for i, p in enumerate(mean)}
        results.append(
            {"label": _label(model, best), "score": float(mean[best]), "scores": scores, "windows": len(mine)}
        )
    return results


def answer(
    model: torch.nn.Module,
    tokenizer: Any,
    question: str,
    context: str,
    *,
    stride: int = 128,
    max_answer_length: int = 64,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Best answer span over overlapping windows: {"answer", "start", "end", "score"} (character offsets)."""
    (question,) = _check_texts("question", question)
    (context,) = _check_texts("context", context)
    limit = max_tokens(model, tokenizer)
    q_tokens = len(_token_spans(tokenizer, question))
    room = limit - q_tokens - _special_count(tokenizer, pair=True)
    if room < 1:
        raise ValueError(
            f"question has {q_tokens} tokens and leaves no room for context in the model's {limit}: "
            "shorten it"
        )
    spans = _token_spans(tokenizer, context)
    windows = _fit_windows(tokenizer, context, spans, room, stride, limit, prefix=question)
    texts = [context[a:b] for a, b in windows]
    lengths = [len(tokenizer(question, t)["input_ids"]) for t in texts]
    best = {"answer": "", "start": 0, "end": 0, "score": -1.0}
    for batch in _batches(texts, lengths, batch_size, not _padding_invariant(model)):
        out, enc = _run(model, tokenizer, [question] * len(batch), [texts[i] for i in batch])
        for row, i in enumerate(batch):
            seq = enc.sequence_ids(row)
            ctx = torch.tensor([s == 1 for s in seq], device=out.start_logits.device)
            start = out.start_logits[row].float().masked_fill(~ctx, float("-inf")).softmax(-1)
            end = out.end_logits[row].float().masked_fill(~ctx, float("-inf")).softmax(-1)
            score = start[:, None] * end[None, :]  # (seq, seq): span from token s to token e
            score = torch.triu(score) - torch.triu(score, diagonal=max_answer_length)
            flat = int(score.argmax())
            s, e = divmod(flat, score.shape[1])
            if float(score[s, e]) > best["score"]:
                offsets = enc["offset_mapping"][row]
                a, b = int(offsets[s][0]) + windows[i][0], int(offsets[e][1]) + windows[i][0]
                best = {"answer": context[a:b], "start": a, "end": b, "score": float(score[s, e])}
    return best


def fill_mask(
    model: torch.nn.Module, tokenizer: Any, text: str, *, top_k: int = 5
) -> list[list[dict[str, Any]]]:
    """For every mask token in `text`: the top_k fillings [{"token", "token_id", "score"}]."""
    (text,) = _check_texts("text", text)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token")
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"]
    if ids.shape[1] > max_tokens(model, tokenizer):
        raise ValueError(
            f"text has {ids.shape[1]} tokens; the model reads {max_tokens(model, tokenizer)} at most"
        )
    where = (ids[0] == mask_id).nonzero().flatten().tolist()
    if not where:
        raise ValueError(f"text has no mask token ({tokenizer.convert_ids_to_tokens([mask_id])[0]!r})")
    with torch.no_grad():
        logits = model(input_ids=ids.to(_device(model))).logits[0].float()
    results = []
    for pos in where:
        probs = logits[pos].softmax(-1)
        top = probs.topk(top_k)
        results.append(
            [
                {"token": tokenizer.decode([int(i)]).strip(), "token_id": int(i), "score": float(p)}
                for p, i in zip(top.values, top.indices, strict=True)
            ]
        )
    return results


def tag(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    aggregation: str = "first",
    stride: int = 64,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Label every word: [{"word", "start", "end", "label", "score"}] (aggregation: first, average, max).

    Long texts are cut into overlapping windows; each token takes its labels from the window that
    owns it (the middle part of the overlaps decides), so no token is labelled twice.
    """
    (text,) = _check_texts("text", text)
    if aggregation not in ("first", "average", "max"):
        raise ValueError(f"aggregation must be 'first', 'average' or 'max', got {aggregation!r}")
    spans = _token_spans(tokenizer, text)
    limit = max_tokens(model, tokenizer)
    windows = _fit_windows(
        tokenizer, text, spans, limit - _special_count(tokenizer, pair=False), stride, limit
    )
    texts = [text[a:b] for a, b in windows]
    # each window owns the characters up to the middle of its overlaps with its neighbours
    cuts = [(windows[i][1] + windows[i + 1][0]) // 2 for i in range(len(windows) - 1)]
    owned = list(zip([0, *cuts], [*cuts, len(text) + 1], strict=True))
    tokens: dict[tuple[int, int], torch.Tensor] = {}  # token span in text -> label probabilities
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    for batch in _batches(texts, lengths, batch_size, not _padding_invariant(model)):
        out, enc = _run(model, tokenizer, [texts[i] for i in batch])
        probs = out.logits.float().softmax(-1).cpu()
        for row, i in enumerate(batch):
            base, (lo, hi) = windows[i][0], owned[i]
            for t, seq in enumerate(enc.sequence_ids(row)):
                a, b = (int(x) + base for x in enc["offset_mapping"][row][t])
                if seq == 0 and lo <= a < hi and b > a:
                    tokens[(a, b)] = probs[row, t]
    return _aggregate(model, text, tokens, aggregation)


def _aggregate(model: torch.nn.Module, text: str, tokens: dict, aggregation: str) -> list[dict[str, Any]]:
    """Group tokens into words (runs of tokens with no gap between them) and label each word."""
    words: list[list[tuple[tuple[int, int], torch.Tensor]]] = []
    for span in sorted(tokens):
        if words and words[-1][-1][0][1] == span[0]:
            words[-1].append((span, tokens[span]))
        else:
            words.append([(span, tokens[span])])
    results = []
    for word in words:
        stack = torch.stack([p for _, p in word])
        if aggregation == "first":
            p = stack[0]
        elif aggregation == "average":
            p = stack.mean(0)
        else:
            p = stack[int(stack.max(-1).values.argmax())]
        best = int(p.argmax())
        start, end = word[0][0][0], word[-1][0][1]
        results.append(
            {
                "word": text[start:end],
                "start": start,
                "end": end,
                "label": _label(model, best),
                "score": float(p[best]),
            }
        )
    return results


def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int = 0,
    stop_token: str | int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Continue `prompt` with a causal LM: {"text", "token_ids"} (the new part only).

    Greedy unless `do_sample`; sampling uses `temperature`, `top_k`, `top_p` and a generator seeded by
    `seed`. Reformer LMs reuse their bucket cache (`use_cache`); the tokens are the same either way.
    """
    (prompt,) = _check_texts("prompt", prompt)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature > 0, 0 < top_p <= 1 and top_k >= 0")
    if not getattr(model.config, "is_decoder", False):
        raise ValueError("generate needs a causal LM (config.is_decoder=True)")
    stop = tokenizer.convert_tokens_to_ids(stop_token) if isinstance(stop_token, str) else stop_token
    device = _device(model)
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
    limit = max_tokens(model, tokenizer)
    gen = torch.Generator(device="cpu").manual_seed(seed if seed is not None else 0)
    cached = use_cache and "past_buckets_states" in model.forward.__code__.co_varnames
    past, new = None, []
    for _ in range(max_new_tokens):
        if ids.shape[1] >= limit:
            warnings.warn(f"generation stopped at the model's {limit} tokens", stacklevel=2)
            break
        with torch.no_grad():
            if cached:
                out = model(
                    input_ids=ids if past is None else ids[:, -1:], past_buckets_states=past, use_cache=True
                )
                past = out.past_buckets_states
            else:
                out = model(input_ids=ids)
        logits = out.logits[0, -1].float()
        logits = _ban_repeats(logits, ids[0].tolist(), no_repeat_ngram_size)
        token = _pick(logits, do_sample, temperature, top_k, top_p, gen)
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
        if stop is not None and token == stop:
            break
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "token_ids": new}


def _ban_repeats(logits: torch.Tensor, ids: list[int], n: int) -> torch.Tensor:
    """Forbid tokens that would repeat an n-gram already in `ids`."""
    if n <= 0 or len(ids) < n:
        return logits
    prefix = tuple(ids[len(ids) - n + 1 :])
    banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix]
    if banned:
        logits = logits.clone()
        logits[banned] = float("-inf")
    return logits


def _pick(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float, gen: torch.Generator
) -> int:
    if not do_sample:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        order = logits.argsort(descending=True)
        cum = F.softmax(logits[order], -1).cumsum(-1)
        drop = cum - F.softmax(logits[order], -1) > top_p  # keep the smallest set reaching top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    probs = F.softmax(logits, -1).cpu()
    return int(torch.multinomial(probs, 1, generator=gen))
