"""Reformer (Kitaev et al. 2020) with Hugging Face's classes, arguments, outputs and checkpoints.

    embeddings (word + axial or learned positions)
      -> reversible layers: Y1 = X1 + attn(X2), Y2 = X2 + ff(Y1), attn "local" or "lsh" per layer
      -> layer norm over [Y1, Y2] (2 * hidden) -> head

Any length works: like Hugging Face, inputs longer than the smallest chunk are padded (and masked)
to a multiple of the chunks' least common multiple, and the outputs are cut back. Unlike HF, this
also holds in training, and `num_buckets: null` is resolved per call from the padded length
(HF writes the first value it computes into the config and keeps it forever).

Differences from Hugging Face transformers 5.23 (on purpose):
- no global reseeding: HF reseeds torch's generator before every layer in training (and with
  `hash_seed`, inside every LSH layer, so its LSH dropout masks repeat from step to step); longseq
  replays the recorded random state in the backward pass instead (see `layers/reversible.py`);
- `hidden_states` are cut back to the input length (HF returns them at the padded length);
- cached decoding is correct for batch > 1 (see `reformer_cache.py`);
- `use_cache` defaults to `config.use_cache` in eval mode only (no cache is built while training);
- `output_attentions=True` raises: no attention probabilities are ever built.
The LM head adds `lm_head.decoder.bias` to the logits, as transformers 4.x and >= 5.24 do; a
checkpoint without that key (transformers 5.23, whose head had no decoder bias) loads with a zero bias,
which is what 5.23 computed. `lm_head.bias` is loaded and saved but not added (as in HF).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import KeyTable
from ..layers.positions import AxialPositionEmbeddings, LearnedPositionEmbeddings
from ..layers.reversible import reversible_sequence
from .base import LongseqPreTrainedModel
from .configs import ReformerConfig
from .encoder import check_unsupported, prefixed, weight_and_bias
from .heads import (
    ClassificationHead,
    SpanHead,
    causal_lm_loss,
    masked_lm_loss,
    sequence_classification_loss,
    span_loss,
)
from .outputs import (
    BaseModelOutput,
    CausalLMOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)
from .reformer_cache import LayerCache, ReformerCache, decode_attention
from .reformer_layers import ReformerLayer, chunk_lcm, layer_kinds, min_chunk

__all__ = [
    "ReformerCache",
    "ReformerForMaskedLM",
    "ReformerForQuestionAnswering",
    "ReformerForSequenceClassification",
    "ReformerModel",
    "ReformerModelWithLMHead",
]


def _base_rows() -> list[tuple[str, str]]:
    """Key table of the bare model (`{}`: the layer index, or the axis of an axial weight)."""
    ours, hf = "layers.{}", "encoder.layers.{}"
    rows = [
        ("embeddings.word.weight", "embeddings.word_embeddings.weight"),
        ("embeddings.position.weights.{}", "embeddings.position_embeddings.weights.{}"),
        ("embeddings.position.embedding.weight", "embeddings.position_embeddings.embedding.weight"),
        *weight_and_bias(f"{ours}.attn.norm", f"{hf}.attention.layer_norm"),
        (f"{ours}.attn.wqk.weight", f"{hf}.attention.self_attention.query_key.weight"),
        (f"{ours}.attn.wq.weight", f"{hf}.attention.self_attention.query.weight"),
        (f"{ours}.attn.wk.weight", f"{hf}.attention.self_attention.key.weight"),
        (f"{ours}.attn.wv.weight", f"{hf}.attention.self_attention.value.weight"),
        (f"{ours}.attn.wo.weight", f"{hf}.attention.output.dense.weight"),
        *weight_and_bias(f"{ours}.ff.norm", f"{hf}.feed_forward.layer_norm"),
        *weight_and_bias(f"{ours}.ff.w1", f"{hf}.feed_forward.dense.dense"),
        *weight_and_bias(f"{ours}.ff.w2", f"{hf}.feed_forward.output.dense"),
        *weight_and_bias("norm", "encoder.layer_norm"),
    ]
    return rows


BASE_KEYS: KeyTable = tuple(_base_rows())
LM_KEYS: KeyTable = (
    *prefixed(_base_rows(), "reformer"),
    ("lm_head.decoder.weight", "lm_head.decoder.weight"),
    ("lm_head.decoder.bias", "lm_head.decoder.bias"),
    ("lm_head.bias", "lm_head.bias"),
)
CLASSIFIER_KEYS: KeyTable = (
    *prefixed(_base_rows(), "reformer"),
    *weight_and_bias("classifier.dense", "classifier.dense"),
    *weight_and_bias("classifier.out_proj", "classifier.out_proj"),
)
QA_KEYS: KeyTable = (*prefixed(_base_rows(), "reformer"), *weight_and_bias("qa.qa_outputs", "qa_outputs"))


class ReformerEmbeddings(nn.Module):
    """dropout(word embeddings) + position embeddings (axial or learned), as HF's ReformerEmbeddings."""

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position: AxialPositionEmbeddings | LearnedPositionEmbeddings
        if config.axial_pos_embds:
            if sum(config.axial_pos_embds_dim) != config.hidden_size:
                raise ValueError(
                    f"axial_pos_embds_dim {config.axial_pos_embds_dim} must sum to hidden_size "
                    f"{config.hidden_size}"
                )
            self.position = AxialPositionEmbeddings(
                config.axial_pos_shape, config.axial_pos_embds_dim, config.hidden_dropout_prob
            )
        else:
            self.position = LearnedPositionEmbeddings(
                config.max_position_embeddings, config.hidden_size, config.hidden_dropout_prob
            )
        self.dropout = float(config.hidden_dropout_prob)

    def forward(self, input_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = F.dropout(input_embeds, p=self.dropout, training=self.training)  # (batch, seq, hidden)
        return x + self.position(position_ids)


class ReformerLMHead(nn.Module):
    """Linear (with bias) from 2 * hidden to the vocabulary, `chunk_size` tokens at a time (HF's
    ReformerOnlyLMHead). `bias` is a separate parameter that HF keeps but does not add: so here."""

    def __init__(self, in_dim: int, vocab: int, chunk_size: int = 0) -> None:
        super().__init__()
        self.decoder = nn.Linear(in_dim, vocab)
        self.bias = nn.Parameter(torch.zeros(vocab))
        self.chunk_size = int(chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.chunk_size, dim=1) if self.chunk_size > 0 else (x,)
        return torch.cat([self.decoder(p) for p in parts], dim=1)  # (batch, seq, vocab)


class _ReformerPreTrained(LongseqPreTrainedModel):
    config_class = ReformerConfig
    base_model_prefix = "reformer"
    config: ReformerConfig

    def init_weights(self) -> None:
        """HF's init: normal(initializer_range) linears and embeddings, normal(axial_norm_std) axial."""
        super().init_weights()
        for module in self.modules():
            if isinstance(module, AxialPositionEmbeddings):
                for w in module.weights:
                    nn.init.normal_(w, std=self.config.axial_norm_std)
            elif isinstance(module, ReformerLMHead):
                nn.init.zeros_(module.bias)
                nn.init.zeros_(module.decoder.bias)

    def hf_load_fixups(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = dict(super().hf_load_fixups(state))
        weight = state.get("lm_head.decoder.weight")
        if weight is not None:
            # transformers 5.23 had no decoder bias (and added none): zero; 4.x tied the two biases
            bias = state.get("lm_head.decoder.bias", state.get("lm_head.bias"))
            if "lm_head.decoder.bias" not in state:
                state["lm_head.decoder.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
            state.setdefault("lm_head.bias", bias if bias is not None else state["lm_head.decoder.bias"])
        return state


def _resolve(value: Any, default: Any) -> Any:
    return default if value is None else value


class ReformerModel(_ReformerPreTrained):
    """The bare Reformer: embeddings, reversible layers, final norm. Output width 2 * hidden_size.

    `reversible` (default True): in training, keep no activations and recompute them in the backward
    pass; False runs plain autograd (more memory, the same gradients).
    """

    key_table: ClassVar[KeyTable] = BASE_KEYS

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__(config)
        self.kinds = layer_kinds(config)
        self.lcm, self.min_chunk = chunk_lcm(config), min_chunk(config)
        self.embeddings = ReformerEmbeddings(config)
        self.layers = nn.ModuleList(ReformerLayer(config, kind) for kind in self.kinds)
        self.norm = nn.LayerNorm(2 * config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = float(config.hidden_dropout_prob)
        self.reversible = True
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word

    # -------------------------------------------------------------------------------- inputs

    def _padded_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        start: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
        """Embedding input (b, n_p, hidden), padding mask (b, n_p) or None, position ids, and n.

        Padding (to the chunk lcm, as HF) uses pad_token_id's embedding and masked positions.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            assert input_ids is not None
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq), got {tuple(input_ids.shape)}")
            inputs_embeds = self.embeddings.word(input_ids)
        if inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must be (batch, seq, hidden), got {tuple(inputs_embeds.shape)}")
        b, n, _ = inputs_embeds.shape
        device = inputs_embeds.device
        capacity = self.embeddings.position.num_positions
        if position_ids is None:
            self.embeddings.position.check_length(start + n)
            position_ids = torch.arange(start, start + n, device=device).expand(b, n)
        else:
            position_ids = position_ids.to(device).expand(b, n)
        mask = None if attention_mask is None else attention_mask.to(device).bool()
        pad = (-n) % self.lcm if n > self.min_chunk else 0
        if pad:
            pad_id = self.config.pad_token_id or 0
            pad_embeds = self.embeddings.word(torch.full((b, pad), pad_id, device=device))
            inputs_embeds = torch.cat([inputs_embeds, pad_embeds.to(inputs_embeds.dtype)], dim=1)
            extra = torch.arange(start + n, start + n + pad, device=device).clamp(max=capacity - 1)
            position_ids = torch.cat([position_ids, extra.expand(b, pad)], dim=1)
            real = torch.ones(b, n, dtype=torch.bool, device=device) if mask is None else mask
            mask = torch.cat([real, torch.zeros(b, pad, dtype=torch.bool, device=device)], dim=1)
        return inputs_embeds, mask, position_ids, n

    # ------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        past_buckets_states: ReformerCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """Hidden states (batch, seq, 2 * hidden_size) in `last_hidden_state`.

        attention_mask (batch, seq): 1 for real tokens. num_hashes overrides config.num_hashes.
        past_buckets_states: a `ReformerCache` from an earlier call (then give one new token);
        use_cache: return the cache for the next call.
        """
        check_unsupported(output_attentions, None)
        use_cache = _resolve(use_cache, self.config.use_cache and not self.training)
        output_hidden_states = _resolve(output_hidden_states, self.config.output_hidden_states)
        return_dict = _resolve(return_dict, self.config.return_dict)
        if num_hashes is not None and (isinstance(num_hashes, bool) or int(num_hashes) < 1):
            raise ValueError(f"num_hashes must be a positive int, got {num_hashes!r}")
        if past_buckets_states is not None:
            y, cache, hidden = self._decode(
                input_ids, attention_mask, position_ids, inputs_embeds, num_hashes, past_buckets_states
            )
        else:
            y, cache, hidden = self._encode(
                input_ids,
                attention_mask,
                position_ids,
                inputs_embeds,
                num_hashes,
                use_cache,
                output_hidden_states,
            )
        out = BaseModelOutput(
            last_hidden_state=y,
            past_buckets_states=cache if use_cache else None,
            hidden_states=hidden if output_hidden_states else None,
        )
        return out if return_dict else out.to_tuple()

    def _encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        num_hashes: int | None,
        use_cache: bool,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, ReformerCache | None, tuple[torch.Tensor, ...]]:
        embeds, mask, position_ids, n = self._padded_inputs(
            input_ids, attention_mask, position_ids, inputs_embeds, 0
        )
        x = self.embeddings(embeds, position_ids)  # (batch, n_p, hidden)
        hidden: list[torch.Tensor] = []
        entries: list[LayerCache] = []

        def before_f(i: int, x2: torch.Tensor) -> None:
            if output_hidden_states:
                hidden.append(x2[:, :n])
            if use_cache:  # HF caches each layer's normed attention input, and its LSH buckets
                attn = self.layers[i].attn
                with torch.no_grad():
                    buckets, num_buckets = attn.hashed(x2, mask, num_hashes)
                    states = attn.norm(x2)[:, :n]
                entries.append(LayerCache(states, None if buckets is None else buckets[..., :n], num_buckets))

        pairs = [(layer.attn, layer.ff) for layer in self.layers]
        f_kwargs = {"padding_mask": mask, "num_hashes": num_hashes}
        y1, y2 = reversible_sequence(x, x, pairs, f_kwargs, recompute=self.reversible, before_f=before_f)
        if output_hidden_states:
            hidden.append(y2[:, :n])
        y = F.dropout(self.norm(torch.cat([y1, y2], dim=-1)), p=self.dropout, training=self.training)
        return y[:, :n], (ReformerCache(tuple(entries)) if use_cache else None), tuple(hidden)

    def _decode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        num_hashes: int | None,
        cache: ReformerCache,
    ) -> tuple[torch.Tensor, ReformerCache, tuple[torch.Tensor, ...]]:
        """One new token against the cache (inference only, as in HF)."""
        if self.training:
            raise ValueError("past_buckets_states is for inference: call model.eval() first")
        if attention_mask is not None:
            raise ValueError("attention_mask cannot be combined with past_buckets_states (HF ignores it)")
        if not isinstance(cache, ReformerCache) or len(cache) != len(self.layers):
            raise ValueError(
                f"past_buckets_states must be the ReformerCache of a {len(self.layers)}-layer call"
            )
        embeds, _, position_ids, n = self._padded_inputs(
            input_ids, None, position_ids, inputs_embeds, cache.seen
        )
        if n != 1:
            raise ValueError(f"with past_buckets_states, give one new token per call, got {n}")
        x1 = x2 = self.embeddings(embeds, position_ids)  # (batch, 1, hidden)
        hidden, entries = [], []
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            hidden.append(x2)
            out, entry = decode_attention(layer.attn, x2, layer_cache, num_hashes)
            entries.append(entry)
            x1 = x1 + out
            x2 = x2 + layer.ff(x1)
        hidden.append(x2)
        y = self.norm(torch.cat([x1, x2], dim=-1))
        return y, ReformerCache(tuple(entries)), tuple(hidden)


# ---------------------------------------------------------------------------------------- heads


class ReformerModelWithLMHead(_ReformerPreTrained):
    """Causal language model (config.is_decoder must be True); cached decoding with past_buckets_states."""

    key_table: ClassVar[KeyTable] = LM_KEYS
    lm_loss_shift = 1  # the loss predicts labels[:, 1:] (the trainer weights eval batches by it)

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__(config)
        if not config.is_decoder:
            raise ValueError("ReformerModelWithLMHead needs config.is_decoder=True (causal attention)")
        kinds = set(layer_kinds(config))
        if "local" in kinds and config.local_num_chunks_after != 0:
            raise ValueError("a causal Reformer needs local_num_chunks_after=0")
        if "lsh" in kinds and config.lsh_num_chunks_after != 0:
            raise ValueError("a causal Reformer needs lsh_num_chunks_after=0")
        self.reformer = ReformerModel(config)
        self.lm_head = ReformerLMHead(2 * config.hidden_size, config.vocab_size, config.chunk_size_lm_head)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        past_buckets_states: ReformerCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> CausalLMOutput | tuple:
        """logits (batch, seq, vocab); loss: next-token cross entropy when labels (batch, seq) are given."""
        out = self.reformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            num_hashes=num_hashes,
            past_buckets_states=past_buckets_states,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        h = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:] if logits_to_keep > 0 else h
        else:
            h = h[:, logits_to_keep]
        logits = self.lm_head(h)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        result = CausalLMOutput(
            loss=loss,
            logits=logits,
            past_buckets_states=out.past_buckets_states,
            hidden_states=out.hidden_states,
        )
        return result if _resolve(return_dict, self.config.return_dict) else result.to_tuple()


class ReformerForMaskedLM(_ReformerPreTrained):
    """Masked language model (bidirectional: config.is_decoder must be False)."""

    key_table: ClassVar[KeyTable] = LM_KEYS

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__(config)
        if config.is_decoder:
            raise ValueError("ReformerForMaskedLM needs config.is_decoder=False (bidirectional attention)")
        self.reformer = ReformerModel(config)
        self.lm_head = ReformerLMHead(2 * config.hidden_size, config.vocab_size, config.chunk_size_lm_head)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """logits (batch, seq, vocab); loss over labels != -100."""
        out = self.reformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            num_hashes=num_hashes,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state)
        loss = None if labels is None else masked_lm_loss(logits, labels)
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return result if _resolve(return_dict, self.config.return_dict) else result.to_tuple()


class ReformerForSequenceClassification(_ReformerPreTrained):
    """Classification / regression from the first token (HF's problem_type rules for the loss)."""

    key_table: ClassVar[KeyTable] = CLASSIFIER_KEYS

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__(config)
        self.reformer = ReformerModel(config)
        dropout = _resolve(config.classifier_dropout, config.hidden_dropout_prob)
        self.classifier = ClassificationHead(
            2 * config.hidden_size, config.hidden_size, config.num_labels, dropout
        )
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """logits (batch, num_labels)."""
        out = self.reformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            num_hashes=num_hashes,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return result if _resolve(return_dict, self.config.return_dict) else result.to_tuple()


class ReformerForQuestionAnswering(_ReformerPreTrained):
    """Extractive QA: start and end logits per token."""

    key_table: ClassVar[KeyTable] = QA_KEYS

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"question answering has 2 outputs (start, end), config.num_labels={config.num_labels}"
            )
        self.reformer = ReformerModel(config)
        self.qa = SpanHead(2 * config.hidden_size)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        """start_logits, end_logits (batch, seq); loss when start and end positions (batch,) are given."""
        out = self.reformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            num_hashes=num_hashes,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        start, end = self.qa(out.last_hidden_state)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start, end, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start, end_logits=end, hidden_states=out.hidden_states
        )
        return result if _resolve(return_dict, self.config.return_dict) else result.to_tuple()
