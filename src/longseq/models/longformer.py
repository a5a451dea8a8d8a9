"""Longformer: RoBERTa layers whose attention is a sliding window plus global tokens.

Global tokens have their own query / key / value projections, as in Hugging Face and the paper.
Beyond Hugging Face: per-layer (and per-head) dilation and causal windows (`attention_dilation`,
`attention_causal` in the config), for the paper's character-level LM setting.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..attention import Dense, SlidingWindow, attend
from ..attention.global_tokens import global_tokens, model_masks
from ..layers.projection import autocast_input, project
from ..layers.weight_cast import linear
from .base import LongseqPreTrainedModel, finish_output, input_shape
from .configs import LongformerConfig
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
    masked_lm_loss,
    sequence_classification_loss,
    span_loss,
)
from .outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

Tensor = torch.Tensor
_ATTENTION = {
    "query": "query",
    "key": "key",
    "value": "value",
    "query_global": "query_global",
    "key_global": "key_global",
    "value_global": "value_global",
}


class LongformerSelfAttention(nn.Module):
    """Windowed attention for every token; global tokens attend to all with their own projections."""

    def __init__(self, config: LongformerConfig, window: int, dilation: list[int], causal: bool) -> None:
        super().__init__()
        hidden, self.heads = config.hidden_size, config.num_attention_heads
        if hidden % self.heads:
            raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {self.heads}")
        for name in _ATTENTION:
            setattr(self, name, nn.Linear(hidden, hidden))
        dil: int | tuple[int, ...] = dilation[0] if len(set(dilation)) == 1 else tuple(dilation)
        # global rows come from query_global / key_global / value_global below, not from attend
        self.pattern = SlidingWindow(window, dilation=dil, causal=causal, global_rows=False)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, padding_mask: Tensor | None, global_mask: Tensor | None) -> Tensor:
        h = self.heads
        # q, k, v in one matrix product (the kernels take their gradient as one tensor), the global
        # keys and values in another, over one autocast copy of x (kept once for backward)
        x = autocast_input(x)
        q, k, v = (split_heads(t, h) for t in project(x, self.query, self.key, self.value))  # (b, h, n, d)
        kv_global = []
        if global_mask is not None:
            kv_global = [split_heads(t, h) for t in project(x, self.key_global, self.value_global)]
        p = self.dropout if self.training else 0.0
        rows_out = None
        if global_mask is not None:
            rows_out = self._global_rows(x, kv_global, padding_mask, global_mask, p)
        out = attend(
            q,
            k,
            v,
            self.pattern,
            padding_mask=padding_mask,
            global_mask=global_mask,
            dropout=p,
            global_rows_out=rows_out,
        )
        return merge_heads(out)  # (b, n, hidden); a view when the kernels wrote the heads sequence-major

    def linear_groups(self) -> list[tuple[nn.Linear, ...]]:
        """The projections, in the groups `forward` uses them in (`cast_linears`)."""
        qkv, kv_global = (self.query, self.key, self.value), (self.key_global, self.value_global)
        return [qkv, kv_global, (self.query_global,)]

    def _global_rows(
        self, x: Tensor, kv_global: list[Tensor], padding: Tensor | None, glob: Tensor, p: float
    ) -> Tensor | None:
        """Global queries (query_global) over every real key (key_global, value_global): (b, h, G, d),
        slot by slot as the global tokens' `idx`; None without global tokens."""
        b = x.shape[0]
        tokens = global_tokens(glob, padding)  # (b, G): read once per mask, shared with the attention core
        if tokens.g == 0:
            return None
        # index_select keeps no copy of x for backward (gather would keep all of it)
        rows = tokens.flat_index()  # (b * G,)
        xg = x.flatten(0, 1).index_select(0, rows).view(b, -1, x.shape[-1])  # (b, G, hidden)
        qg = split_heads(linear(xg, self.query_global), self.heads)  # (b, h, G, d)
        return attend(qg, *kv_global, Dense(), padding_mask=padding, dropout=p)  # (b, h, G, d)


_GRAPH_UNSAFE = (
    "its global tokens are read from the masks on the host once per mask, so a replayed graph would "
    "keep the first batch's global tokens"
)


class LongformerModel(LongseqPreTrainedModel):
    config_class = LongformerConfig
    base_model_prefix = "longformer"
    cuda_graph_unsafe = _GRAPH_UNSAFE

    def __init__(self, config: LongformerConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        c = config
        self.embeddings = Embeddings(
            c.vocab_size,
            c.hidden_size,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            c.pad_token_id,
            roberta_positions=True,
        )
        windows, dilations = c.layer_windows(), c.layer_dilations()
        causal = bool(getattr(c, "attention_causal", False))
        self.encoder = Encoder(
            [
                EncoderLayer(
                    LongformerSelfAttention(c, windows[i], dilations[i], causal),
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
        self.key_table = bert_rows(_ATTENTION, pooler=add_pooling_layer)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        global_attention_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        check_unsupported(output_attentions, head_mask)
        shape = input_shape(input_ids, inputs_embeds)
        device = input_ids.device if input_ids is not None else inputs_embeds.device  # type: ignore[union-attr]
        # the same mask tensors for the same inputs: the global tokens are read once per mask
        padding, glob = model_masks(attention_mask, global_attention_mask, shape, device)
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        x, states = self.encoder(
            x, output_hidden_states=bool(output_hidden_states), padding_mask=padding, global_mask=glob
        )
        pooled = self.pooler(x) if self.pooler is not None else None
        return finish_output(
            BaseModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=states), return_dict
        )


class _WithBase(LongseqPreTrainedModel):
    """A Longformer with a head: the base model under `self.longformer`."""

    config_class = LongformerConfig
    cuda_graph_unsafe = _GRAPH_UNSAFE
    base_model_prefix = "longformer"
    pooler = False

    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        self.longformer = LongformerModel(config, add_pooling_layer=self.pooler)
        self.key_table = prefixed(self.longformer.key_table, "longformer")

    def base(self, kwargs: dict[str, Any], global_attention_mask: Tensor | None) -> BaseModelOutput:
        return self.longformer(global_attention_mask=global_attention_mask, return_dict=True, **kwargs)


class LongformerForMaskedLM(_WithBase):
    tied_keys: ClassVar[dict[str, str]] = {"lm_head.decoder.weight": "longformer.embeddings.word.weight"}
    decoder_bias_alias = ("lm_head.decoder.bias", "lm_head.bias")

    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        self.lm_head = MaskedLMHead(config.hidden_size, config.vocab_size, "gelu", config.layer_norm_eps)
        self.key_table = [
            *self.key_table,
            *weight_and_bias("lm_head.dense", "lm_head.dense"),
            *weight_and_bias("lm_head.norm", "lm_head.layer_norm"),
            ("lm_head.decoder.weight", "lm_head.decoder.weight"),
            ("lm_head.decoder.bias", "lm_head.bias"),
        ]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        global_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskedLMOutput | tuple:
        out = self.base(
            dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs), global_attention_mask
        )
        logits = self.lm_head(out.last_hidden_state)  # (batch, seq, vocab)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return finish_output(MaskedLMOutput(loss, logits, out.hidden_states), return_dict)


class LongformerForSequenceClassification(_WithBase):
    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        c = config
        self.classifier = ClassificationHead(
            c.hidden_size, c.hidden_size, c.num_labels, c.hidden_dropout_prob
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
        global_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple:
        if global_attention_mask is None:  # as Hugging Face: global attention on <s>
            shape = input_shape(input_ids, kwargs.get("inputs_embeds"))
            device = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).device
            global_attention_mask = torch.zeros(shape, dtype=torch.long, device=device)
            global_attention_mask[:, 0] = 1
        out = self.base(
            dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs), global_attention_mask
        )
        logits = self.classifier(out.last_hidden_state)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return finish_output(SequenceClassifierOutput(loss, logits, out.hidden_states), return_dict)


class LongformerForTokenClassification(_WithBase):
    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        self.token_head = TokenClassificationHead(
            config.hidden_size, config.num_labels, config.hidden_dropout_prob
        )
        self.key_table = [*self.key_table, *weight_and_bias("token_head.classifier", "classifier")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        global_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple:
        out = self.base(
            dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs), global_attention_mask
        )
        logits = self.token_head(out.last_hidden_state)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return finish_output(TokenClassifierOutput(loss, logits, out.hidden_states), return_dict)


def question_global_mask(input_ids: Tensor, sep_token_id: int, before_sep: bool = True) -> Tensor:
    """Hugging Face's automatic global tokens: the question (tokens before the first separator), or
    with `before_sep=False` the tokens after the first separator pair (multiple choice)."""
    is_sep = input_ids == sep_token_id
    missing = ~is_sep.any(-1)
    if not torch.compiler.is_compiling() and bool(missing.any()):
        raise ValueError(
            f"input_ids row(s) {missing.nonzero().flatten().tolist()} have no separator token "
            f"(sep_token_id={sep_token_id}) to find the question by: pass global_attention_mask"
        )
    first = is_sep.int().argmax(-1, keepdim=True)  # (batch, 1)
    pos = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return pos < first if before_sep else pos > first + 1


class LongformerForQuestionAnswering(_WithBase):
    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        self.span_head = SpanHead(config.hidden_size)
        self.key_table = [*self.key_table, *weight_and_bias("span_head.qa_outputs", "qa_outputs")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        global_attention_mask: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput | tuple:
        if global_attention_mask is None and input_ids is not None:  # global attention on the question
            global_attention_mask = question_global_mask(input_ids, self.config.sep_token_id)
        out = self.base(
            dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs), global_attention_mask
        )
        start, end = self.span_head(out.last_hidden_state)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start, end, start_positions, end_positions)
        return finish_output(QuestionAnsweringModelOutput(loss, start, end, out.hidden_states), return_dict)


class LongformerForMultipleChoice(_WithBase):
    pooler = True

    def __init__(self, config: LongformerConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.key_table = [*self.key_table, *weight_and_bias("classifier", "classifier")]
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        global_attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MultipleChoiceModelOutput | tuple:
        first = input_ids if input_ids is not None else inputs_embeds
        if first is None or first.dim() < 3:
            raise ValueError("input_ids must have shape (batch, num_choices, seq)")
        choices = first.shape[1]
        if global_attention_mask is None and input_ids is not None:  # global attention on the answer
            global_attention_mask = torch.stack(
                [
                    question_global_mask(input_ids[:, i], self.config.sep_token_id, False)
                    for i in range(choices)
                ],
                1,
            )

        def flat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        out = self.base(
            dict(
                input_ids=flat(input_ids),
                attention_mask=flat(attention_mask),
                token_type_ids=flat(token_type_ids),
                position_ids=flat(position_ids),
                inputs_embeds=flat(inputs_embeds),
                **kwargs,
            ),
            flat(global_attention_mask),
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, choices)  # (batch, choices)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return finish_output(MultipleChoiceModelOutput(loss, logits, out.hidden_states), return_dict)
