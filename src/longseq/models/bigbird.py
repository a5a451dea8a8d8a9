"""BigBird: BERT layers whose attention is block-sparse (ITC: global, window and random blocks).

Hugging Face behaviours kept, as defaults for loaded HF checkpoints:
- eval mode uses no random blocks: every middle query block lists block 0 as its r "random" blocks
  (block 0's keys count 1 + r times in its softmax); `paper_random_plan=True` (longseq only: a
  constructor argument of BigBirdModel, `set_paper_random_plan`, or the config.json key) uses
  BlockSparse's own seeded plan in eval instead;
- train mode draws a per-layer, per-head plan from numpy seeded with the layer index, re-drawn
  identically at every call (`hf_random_plan`, a pure function: numpy's global RNG is never touched);
- lengths up to (5 + 2r) * block_size use full attention, decided per call (HF switches the whole
  model to "original_full" for good, HF issue 20031; longseq changes nothing);
- no attention-probability dropout in block-sparse attention (HF has none there).

Beyond / apart from Hugging Face: a decoder (`is_decoder`) always uses causal full attention; HF's
block-sparse attention ignores `is_decoder` and lets tokens see the future on long inputs.
Not done: cross-attention (`add_cross_attention`) and the generation cache (`past_key_values`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..attention import BlockSparse, Dense, Pattern, attend
from ..layers.act_linear import act_linear
from ..layers.activations import activation
from ..layers.projection import project
from .base import LongseqPreTrainedModel, finish_output, input_shape
from .configs import BigBirdConfig
from .encoder import (
    Embeddings,
    Encoder,
    EncoderLayer,
    Pooler,
    bert_rows,
    check_unsupported,
    merge_heads,
    prefixed,
    split_heads,
    weight_and_bias,
)
from .heads import (
    ClassificationHead,
    MaskedLMHead,
    SpanHead,
    TokenClassificationHead,
    causal_lm_loss,
    masked_lm_loss,
    sequence_classification_loss,
    span_loss,
)
from .outputs import (
    BaseModelOutput,
    CausalLMOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    PreTrainingOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

Tensor = torch.Tensor
_ATTENTION = {"query": "query", "key": "key", "value": "value"}
_PAPER_LENGTHS = (1024, 3072, 4096)  # HF draws these lengths' plans with the paper's old rule
ATTENTION_TYPES = ("block_sparse", "original_full")


# ------------------------------------------------------------------------------------------------
# Hugging Face's train-mode random plan, as a pure function


def _row_blocks(rng: np.random.RandomState, block: int, start: int, end: int, r: int) -> np.ndarray:
    """r random key blocks in [start, end) for query block `block`: HF's _get_single_block_row_attention."""
    perm = rng.permutation(np.arange(start, end, dtype=np.int32))
    illegal = {block - 1, block, block + 1, 0, end - 1}
    if block == 1:
        illegal.add(end - 2)
    if block == end - 2:
        illegal.add(1)
    return np.array([b for b in perm if b not in illegal][:r], dtype=np.int32)


def _plan_lengths(n: int, bs: int, r: int) -> tuple[list[int], list[int]]:
    """HF's _get_rand_attn_plan: (segment end lengths, random blocks drawn from each segment)."""
    nb = n // bs
    if 2 * r + 5 < nb:
        return [(2 * r + 5) * bs, n], [r, 0]
    if r + 5 < nb:
        return [(r + 5) * bs, n], [r // 2, r - r // 2]
    return [n], [r]


def _plan_with_heads(rng: np.random.RandomState, n: int, bs: int, r: int, heads: int) -> np.ndarray:
    """HF's _bigbird_block_rand_mask_with_head in train mode: (heads, n // bs - 2, r)."""
    lengths, counts = _plan_lengths(n, bs, r)
    ends = [length // bs for length in lengths]
    nb, last = n // bs, lengths.index(n)
    plan = np.zeros((heads, nb, sum(counts[: last + 1])), dtype=np.int32)

    def fill(rows: range, lo: int, hi: int, start: int, end: int, count: int) -> None:
        for row in rows:
            for h in range(heads):
                plan[h, row, lo:hi] = _row_blocks(rng, row, start, end, count)

    for p in range(last + 1):
        done = sum(counts[:p])
        if p > 0:
            if counts[p] > 0:  # earlier rows also draw from this segment
                fill(range(1, ends[p - 1]), done, done + counts[p], ends[p - 1], ends[p], counts[p])
            for q in range(p):  # this segment's rows draw from every earlier segment
                if counts[q]:
                    lo, start = sum(counts[:q]), (ends[q - 1] if q > 0 else 0)
                    fill(range(ends[p - 1], ends[p]), lo, lo + counts[q], start, ends[q], counts[q])
        if counts[p] == 0:
            continue
        first = ends[p - 1] if p > 0 else 1
        fill(range(first, ends[p]), done, done + counts[p], ends[p - 1] if p > 0 else 0, ends[p], counts[p])
    return plan[:, 1 : nb - 1]


def _plan_paper(rng: np.random.RandomState, n: int, bs: int, r: int, heads: int, max_len: int) -> np.ndarray:
    """HF's _bigbird_block_rand_mask(max_len, ..., last_idx=1024) per head, cut to n // bs - 2 rows."""
    nbm = max_len // bs
    middle = np.arange(1, nbm - 1, dtype=np.int32)
    last = 1024 // bs - 1 if 2 * bs < 1024 else nbm - 1
    out = []
    for _ in range(heads):
        plan = np.zeros((nbm - 2, r), dtype=np.int32)
        for i in range(1, nbm - 1):
            start, end = i - 2, i
            if i == 1:
                choices = middle[2:last]
            elif i == 2:
                choices = middle[3:last]
            elif i in (nbm - 3, nbm - 2) or start > last:
                choices = middle[:last]
            elif end + 1 == last:
                choices = middle[:start]
            else:
                choices = np.concatenate((middle[:start], middle[end + 1 : last]))
            plan[i - 1, :] = rng.permutation(choices)[:r]  # numpy's broadcasting rules, as HF
        out.append(plan[: n // bs - 2])
    return np.stack(out)


@lru_cache(maxsize=256)
def hf_random_plan(
    seq_len: int, block_size: int, r: int, heads: int, max_positions: int, seed: int
) -> np.ndarray:
    """The random key blocks (heads, seq_len // block_size - 2, r) HF's BigBird draws in train mode
    for a (block-padded) length, with numpy seeded by the layer index. Read-only (cached)."""
    rng = np.random.RandomState(seed)  # the draws of np.random.seed(seed) + np.random.permutation
    if seq_len in _PAPER_LENGTHS:
        plan = _plan_paper(rng, seq_len, block_size, r, heads, max_positions)
    else:
        plan = _plan_with_heads(rng, seq_len, block_size, r, heads)
    plan.setflags(write=False)
    return plan


# ------------------------------------------------------------------------------------------------
# attention and the base model


class BigBirdSelfAttention(nn.Module):
    """q, k, v projections and block-sparse (or full) attention; the pattern is chosen per call."""

    def __init__(self, config: BigBirdConfig, seed: int) -> None:
        super().__init__()
        hidden, self.heads = config.hidden_size, config.num_attention_heads
        if hidden % self.heads:
            raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {self.heads}")
        for name in _ATTENTION:
            setattr(self, name, nn.Linear(hidden, hidden, bias=config.use_bias))
        self.seed = seed  # HF's layer seed: the layer index
        self.block_size, self.r = config.block_size, config.num_random_blocks
        self.max_positions = config.max_position_embeddings
        self.paper_random_plan = bool(config.extra.get("paper_random_plan", False))  # longseq only
        self.causal = config.is_decoder
        self.attention_type = _check_type(config.attention_type)
        self.dropout = config.attention_probs_dropout_prob
        self._patterns: dict[tuple, Pattern] = {}

    def pattern(self, n: int, device: torch.device) -> Pattern:
        """The pattern for length n: from shapes and modes only (no host read, nothing changed). Kept
        per (length, mode, device): HF's train plan for a layer and length is the same every call."""
        key = (n, self.training, self.paper_random_plan, self.causal, self.attention_type, str(device))
        pattern = self._patterns.get(key)
        if pattern is None:
            if len(self._patterns) > 16:
                self._patterns.clear()
            pattern = self._patterns[key] = self._build_pattern(n, device)
        return pattern

    def _build_pattern(self, n: int, device: torch.device) -> Pattern:
        bs, r = self.block_size, self.r
        if self.causal or self.attention_type == "original_full" or n <= (5 + 2 * r) * bs:
            return Dense(causal=self.causal)
        nb = -(-n // bs)
        if self.training:
            plan = hf_random_plan(nb * bs, bs, r, self.heads, self.max_positions, self.seed)
            return BlockSparse(bs, r, seed=torch.tensor(plan, dtype=torch.long, device=device))
        if self.paper_random_plan:
            return BlockSparse(bs, r, seed=self.seed)
        return BlockSparse(bs, r, seed=torch.zeros(nb - 2, r, dtype=torch.long, device=device))

    def linear_groups(self) -> list[tuple[nn.Linear, ...]]:
        """q, k, v: one group, as `forward` projects them (`cast_linears`)."""
        return [(self.query, self.key, self.value)]

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in project(x, self.query, self.key, self.value))
        pattern = self.pattern(x.shape[1], x.device)
        # HF has no attention dropout in its block-sparse attention
        p = self.dropout if self.training and isinstance(pattern, Dense) else 0.0
        out = attend(q, k, v, pattern, padding_mask=padding_mask, dropout=p)  # (b, h, n, d)
        return merge_heads(out)  # (b, n, hidden)


def _check_type(value: str) -> str:
    if value not in ATTENTION_TYPES:
        raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {value!r}")
    return value


def base_rows(config: BigBirdConfig, pooler: bool) -> list[tuple[str, str]]:
    """Key-table rows of BigBirdModel (HF's pooler is a bare Linear; q/k/v biases per `use_bias`)."""
    rows = bert_rows(_ATTENTION, pooler=False)
    if not config.use_bias:
        names = {f".attention.{name}.bias" for name in _ATTENTION}
        rows = [row for row in rows if not any(row[0].endswith(s) for s in names)]
    if pooler:
        rows += weight_and_bias("pooler.dense", "pooler")
    return rows


class BigBirdModel(LongseqPreTrainedModel):
    config_class = BigBirdConfig
    base_model_prefix = "bert"

    def __init__(
        self, config: BigBirdConfig, add_pooling_layer: bool = True, paper_random_plan: bool | None = None
    ) -> None:
        super().__init__(config)
        c = config
        if c.add_cross_attention:
            raise ValueError("add_cross_attention is not supported by longseq's BigBird")
        self.embeddings = Embeddings(
            c.vocab_size,
            c.hidden_size,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            c.pad_token_id,
            roberta_positions=False,
            rescale=c.rescale_embeddings,
            dropout_first=True,
        )
        self.encoder = Encoder(
            [
                EncoderLayer(
                    BigBirdSelfAttention(c, seed=i),
                    c.hidden_size,
                    c.intermediate_size,
                    c.hidden_act,
                    c.layer_norm_eps,
                    c.hidden_dropout_prob,
                )
                for i in range(c.num_hidden_layers)
            ]
        )
        self.pooler = Pooler(c.hidden_size) if add_pooling_layer else None
        self.key_table = base_rows(c, add_pooling_layer)
        if paper_random_plan is not None:
            self.set_paper_random_plan(paper_random_plan)
        self.init_weights()

    def set_paper_random_plan(self, value: bool) -> None:
        """Eval mode with the paper's random blocks (BlockSparse's seeded plan per layer), or HF's
        none (the default). Also read from config.json's longseq-only `paper_random_plan`."""
        for layer in self.encoder.layers:
            layer.attention.paper_random_plan = bool(value)

    @property
    def attention_type(self) -> str:
        return self.encoder.layers[0].attention.attention_type

    def set_attention_type(self, value: str) -> None:
        """Choose "block_sparse" or "original_full" for every later call (an explicit user choice)."""
        for layer in self.encoder.layers:
            layer.attention.attention_type = _check_type(value)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        head_mask: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        check_unsupported(output_attentions, head_mask)
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            raise ValueError("cross-attention (encoder_hidden_states) is not supported by longseq's BigBird")
        if past_key_values is not None:
            raise ValueError("past_key_values (the generation cache) is not supported by longseq's BigBird")
        input_shape(input_ids, inputs_embeds)
        padding = None if attention_mask is None else attention_mask.bool()  # (batch, seq), True = real
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (b, n, hidden)
        x, states = self.encoder(x, output_hidden_states=bool(output_hidden_states), padding_mask=padding)
        pooled = self.pooler(x) if self.pooler is not None else None  # (b, hidden)
        return finish_output(
            BaseModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=states), return_dict
        )


# ------------------------------------------------------------------------------------------------
# heads


class _WithBase(LongseqPreTrainedModel):
    """A BigBird with a head: the base model under `self.bert` (HF's name), with a pooler unless
    the class says otherwise (HF keeps one even where the head never reads it)."""

    config_class = BigBirdConfig
    base_model_prefix = "bert"
    pooler = True

    def __init__(self, config: BigBirdConfig, add_pooling_layer: bool | None = None) -> None:
        super().__init__(config)
        pool = self.pooler if add_pooling_layer is None else add_pooling_layer
        self.bert = BigBirdModel(config, add_pooling_layer=pool)
        self.key_table = prefixed(self.bert.key_table, "bert")

    def base(self, input_ids: Tensor | None, attention_mask: Tensor | None, **kwargs: Any) -> BaseModelOutput:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)


_LM_ROWS = [
    *weight_and_bias("lm_head.dense", "cls.predictions.transform.dense"),
    *weight_and_bias("lm_head.norm", "cls.predictions.transform.LayerNorm"),
    ("lm_head.decoder.weight", "cls.predictions.decoder.weight"),
    ("lm_head.decoder.bias", "cls.predictions.bias"),
]


class _WithLMHead(_WithBase):
    """BERT's LM head (`cls.predictions`), its decoder tied to the word embeddings."""

    tied_keys: ClassVar[dict[str, str]] = {"lm_head.decoder.weight": "bert.embeddings.word.weight"}
    decoder_bias_alias = ("cls.predictions.decoder.bias", "cls.predictions.bias")

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        c = config
        self.lm_head = MaskedLMHead(c.hidden_size, c.vocab_size, c.hidden_act, c.layer_norm_eps)
        self.key_table = [*self.key_table, *_LM_ROWS]


class BigBirdForMaskedLM(_WithLMHead):
    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskedLMOutput | tuple:
        out = self.base(input_ids, attention_mask, **kwargs)
        logits = self.lm_head(out.last_hidden_state)  # (batch, seq, vocab)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return finish_output(MaskedLMOutput(loss, logits, out.hidden_states), return_dict)


class BigBirdForCausalLM(_WithLMHead):
    """Causal LM (set `is_decoder=True`, as HF asks): causal full attention at every length."""

    lm_loss_shift = 1  # the loss predicts labels[:, 1:] (the trainer weights eval batches by it)

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput | tuple:
        out = self.base(input_ids, attention_mask, **kwargs)
        logits = self.lm_head(out.last_hidden_state)  # (batch, seq, vocab)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return finish_output(CausalLMOutput(loss, logits, hidden_states=out.hidden_states), return_dict)


class BigBirdForPreTraining(_WithLMHead):
    """Masked LM + next sentence prediction (on the pooled first token)."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.key_table = [*self.key_table, *weight_and_bias("nsp", "cls.seq_relationship")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        next_sentence_label: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> PreTrainingOutput | tuple:
        out = self.base(input_ids, attention_mask, **kwargs)
        logits = self.lm_head(out.last_hidden_state)  # (batch, seq, vocab)
        nsp = self.nsp(out.pooler_output)  # (batch, 2)
        loss = None
        if labels is not None:  # as HF: the NSP loss only joins a masked LM loss
            loss = masked_lm_loss(logits, labels)
            if next_sentence_label is not None:
                loss = loss + masked_lm_loss(nsp, next_sentence_label)
        return finish_output(PreTrainingOutput(loss, logits, nsp, out.hidden_states), return_dict)


def _classifier_dropout(config: BigBirdConfig) -> float:
    c = config.classifier_dropout
    return config.hidden_dropout_prob if c is None else c


class BigBirdForSequenceClassification(_WithBase):
    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        c = config
        self.classifier = ClassificationHead(
            c.hidden_size, c.hidden_size, c.num_labels, _classifier_dropout(c), act=c.hidden_act
        )
        self.key_table = [
            *self.key_table,
            *weight_and_bias("classifier.dense", "classifier.dense"),
            *weight_and_bias("classifier.out_proj", "classifier.out_proj"),
        ]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple:
        out = self.base(input_ids, attention_mask, **kwargs)
        logits = self.classifier(out.last_hidden_state)  # (batch, num_labels)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return finish_output(SequenceClassifierOutput(loss, logits, out.hidden_states), return_dict)


class BigBirdForTokenClassification(_WithBase):
    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.token_head = TokenClassificationHead(
            config.hidden_size, config.num_labels, _classifier_dropout(config)
        )
        self.key_table = [*self.key_table, *weight_and_bias("token_head.classifier", "classifier")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple:
        out = self.base(input_ids, attention_mask, **kwargs)
        logits = self.token_head(out.last_hidden_state)  # (batch, seq, num_labels)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return finish_output(TokenClassifierOutput(loss, logits, out.hidden_states), return_dict)


class BigBirdQAHead(nn.Module):
    """HF's BigBirdForQuestionAnsweringHead: a residual feed-forward block, then start / end logits."""

    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__()
        c = config
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.ffn_in = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = activation(c.hidden_act)
        self.ffn_out = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.span = SpanHead(c.hidden_size)

    def forward(self, x: Tensor, question_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        h = act_linear(self.ffn_in(self.dropout(x)), self.act, self.ffn_out)
        start, end = self.span(self.norm(x + self.dropout(h)))  # (batch, seq) each
        if question_mask is not None:  # HF: question tokens (not the first) get -1e6
            start, end = start - question_mask * 1e6, end - question_mask * 1e6
        return start, end


def question_mask(question_lengths: Tensor, seq: int) -> Tensor:
    """(batch, seq) long: 1 on positions < question_lengths (batch, 1) or (batch,)."""
    lengths = question_lengths.reshape(-1, 1)
    return (torch.arange(seq, device=lengths.device)[None] < lengths).long()


class BigBirdForQuestionAnswering(_WithBase):
    """Extractive QA. As HF: without `question_lengths`, the question is up to and including the
    first [SEP]; its tokens get token type 0 (the rest 1, unless `token_type_ids` is given) and
    their logits (except position 0) are lowered by 1e6."""

    def __init__(self, config: BigBirdConfig, add_pooling_layer: bool = False) -> None:
        super().__init__(config, add_pooling_layer)
        self.qa_classifier = BigBirdQAHead(config)
        self.key_table = [
            *self.key_table,
            *weight_and_bias("qa_classifier.ffn_in", "qa_classifier.intermediate.dense"),
            *weight_and_bias("qa_classifier.ffn_out", "qa_classifier.output.dense"),
            *weight_and_bias("qa_classifier.norm", "qa_classifier.output.LayerNorm"),
            *weight_and_bias("qa_classifier.span.qa_outputs", "qa_classifier.qa_outputs"),
        ]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        question_lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput | tuple:
        seq = input_shape(input_ids, kwargs.get("inputs_embeds"))[1]
        if question_lengths is None and input_ids is not None:
            sep = input_ids.eq(self.config.sep_token_id).int()
            question_lengths = sep.argmax(-1, keepdim=True) + 1  # (batch, 1); no [SEP]: 1
        mask = None
        if question_lengths is not None:
            mask = question_mask(question_lengths, seq)  # (batch, seq)
            if token_type_ids is None:
                token_type_ids = 1 - mask
            mask = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, 1:]], dim=1)
        out = self.base(input_ids, attention_mask, token_type_ids=token_type_ids, **kwargs)
        start, end = self.qa_classifier(out.last_hidden_state, mask)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start, end, start_positions, end_positions)
        return finish_output(QuestionAnsweringModelOutput(loss, start, end, out.hidden_states), return_dict)


class BigBirdForMultipleChoice(_WithBase):
    def __init__(self, config: BigBirdConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.key_table = [*self.key_table, *weight_and_bias("classifier", "classifier")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MultipleChoiceModelOutput | tuple:
        first = input_ids if input_ids is not None else inputs_embeds
        if first is None or first.dim() < 3:
            raise ValueError("input_ids must have shape (batch, num_choices, seq)")
        choices = first.shape[1]

        def flat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        out = self.base(
            flat(input_ids),
            flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            inputs_embeds=flat(inputs_embeds),
            **kwargs,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, choices)  # (batch, choices)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return finish_output(MultipleChoiceModelOutput(loss, logits, out.hidden_states), return_dict)
