"""Find the tokenizer files of a Hugging Face model folder and build the matching `Tokenizer`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from . import builders as b
from .spm_model import read_spm_model
from .tokenizer import VERY_LARGE_INTEGER

# tokenizer_class (without "Fast") or config.json model_type -> family
_FAMILIES = {
    "roberta": "roberta",
    "longformer": "roberta",
    "robertatokenizer": "roberta",
    "longformertokenizer": "roberta",
    "bigbird": "bigbird",
    "big_bird": "bigbird",
    "bigbirdtokenizer": "bigbird",
    "reformer": "reformer",
    "reformertokenizer": "reformer",
    "bytes": "bytes",
}
_DEFAULTS = {"roberta": b.ROBERTA_SPECIALS, "bigbird": b.BIGBIRD_SPECIALS, "reformer": b.REFORMER_SPECIALS}
BYTE_VOCAB_SIZE = 258
LOOKED_FOR = (
    "tokenizer.json; vocab.json + merges.txt; spiece.model; or config.json with model_type 'reformer' and "
    f"vocab_size {BYTE_VOCAB_SIZE} (byte-level)"
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _resolve_family(family: str | None, tok_config: dict, model_config: dict) -> str | None:
    if family is not None:
        key = family.lower().replace("-", "_")
        if key not in _FAMILIES:
            raise ValueError(
                f"family={family!r} is unknown; use one of "
                "'longformer', 'roberta', 'bigbird', 'reformer', 'bytes'"
            )
        return _FAMILIES[key]
    cls_name = str(tok_config.get("tokenizer_class") or "").lower().removesuffix("fast")
    model_type = str(model_config.get("model_type") or "").lower()
    return _FAMILIES.get(cls_name) or _FAMILIES.get(model_type)


def _added_token(value: Any, default: AddedToken | None) -> AddedToken | None:
    """A special token from a config value: a str, a serialized AddedToken dict, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        flags = (
            {}
            if default is None or default.content != value
            else {"lstrip": default.lstrip, "rstrip": default.rstrip}
        )
        return b.special_token(value, **flags)
    if isinstance(value, dict) and "content" in value:
        return AddedToken(
            value["content"],
            single_word=value.get("single_word", False),
            lstrip=value.get("lstrip", False),
            rstrip=value.get("rstrip", False),
            normalized=value.get("normalized", False),
            special=True,
        )
    raise ValueError(f"cannot read special token {value!r}: expected a string or an AddedToken dict")


def _special_tokens(family: str | None, config: dict, special_map: dict, extras: list[AddedToken]):
    """Named special tokens: class defaults <- tokenizer_config.json <- special_tokens_map.json (legacy)."""
    defaults = _DEFAULTS.get(family, {})
    default_tokens = {name: b.special_token(tok) for name, tok in defaults.items() if tok is not None}
    if family == "bigbird":  # BigBirdTokenizer strips the space before [MASK]
        default_tokens["mask"] = b.special_token(defaults["mask"], lstrip=True)
    values = {name: config.get(f"{name}_token", defaults.get(name)) for name in b.SPECIAL_NAMES}
    decoder = config.get("added_tokens_decoder")
    if not decoder:
        values |= {
            name: special_map[f"{name}_token"] for name in b.SPECIAL_NAMES if f"{name}_token" in special_map
        }
    known = {}
    for entry in (decoder or {}).values():
        if isinstance(entry, dict) and "content" in entry:
            known[entry["content"]] = entry
    tokens = {}
    for name, value in values.items():
        content = value.get("content") if isinstance(value, dict) else value
        tokens[name] = _added_token(known.get(content, value), default_tokens.get(name))
    names = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if not decoder:
        names = names or special_map.get("additional_special_tokens") or []
    if isinstance(names, dict):
        names = list(names.values())
    seen = {t.content for t in extras}
    for value in names:
        token = _added_token(known.get(value, value) if isinstance(value, str) else value, None)
        if token is not None and token.content not in seen:
            extras.append(token)
            seen.add(token.content)
    return tokens, extras


def load_folder(cls: type, folder: str | Path, *, family: str | None, overrides: dict[str, Any]):
    """Build ``cls`` (a `Tokenizer` subclass) from the tokenizer files in ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"folder={str(folder)!r} is not a directory; pass a Hugging Face model folder"
        )
    config = _read_json(root / "tokenizer_config.json") | overrides
    special_map = _read_json(root / "special_tokens_map.json")
    model_config = _read_json(root / "config.json")
    fam = _resolve_family(family, config, model_config)

    tokenizer_json, vocab_json, merges, spiece = (
        root / n for n in ("tokenizer.json", "vocab.json", "merges.txt", "spiece.model")
    )
    extras: list[AddedToken] = []
    post = None
    if tokenizer_json.is_file():
        backend = Backend.from_file(str(tokenizer_json))
        source = "tokenizer.json"
    elif vocab_json.is_file() and merges.is_file():
        fam = fam or "roberta"
        if fam != "roberta":
            raise ValueError(f"{root} has vocab.json + merges.txt (byte-level BPE) but its family is {fam!r}")
        add_prefix_space = bool(config.get("add_prefix_space", False))
        backend = b.roberta_bpe(vocab_json, merges, add_prefix_space)
        source = "vocab.json + merges.txt"
    elif spiece.is_file():
        if fam not in ("bigbird", "reformer"):
            raise ValueError(
                f"{root}/spiece.model can be a BigBird or a Reformer tokenizer, and neither "
                "tokenizer_config.json's tokenizer_class nor config.json's model_type says which; "
                "pass family='bigbird' or family='reformer'"
            )
        spm = read_spm_model(spiece)
        extras = b.spm_extra_tokens(spm)
        unk = _added_token(config.get("unk_token", "<unk>"), None)
        if fam == "bigbird":
            backend = b.bigbird_unigram(spm, unk.content, bool(config.get("add_prefix_space", True)))
        else:
            backend = b.reformer_bpe(spm, unk.content)
        source = "spiece.model"
    elif fam == "bytes" or (
        model_config.get("model_type") == "reformer" and model_config.get("vocab_size") == BYTE_VOCAB_SIZE
    ):
        from .byte_level import ByteTokenizer

        return ByteTokenizer(
            model_max_length=config.get("model_max_length"), padding_side=config.get("padding_side", "right")
        )
    else:
        raise FileNotFoundError(f"no tokenizer files in {root}; looked for {LOOKED_FOR}")

    specials, extras = _special_tokens(fam, config, special_map, extras)
    if source == "spiece.model":  # transformers registers spm control/user pieces first, with their own flags
        spm_tokens = {t.content: t for t in extras}
        specials = {name: t if t is None else spm_tokens.get(t.content, t) for name, t in specials.items()}
    if source != "tokenizer.json":
        post = _post_processor(fam, specials, config)
    return cls(
        backend,
        special_tokens=specials,
        extra_special_tokens=extras,
        post_processor=post,
        family=fam or source,
        model_max_length=config.get("model_max_length") or VERY_LARGE_INTEGER,
        padding_side=config.get("padding_side", "right"),
        truncation_side=config.get("truncation_side", "right"),
        model_input_names=config.get("model_input_names", ("input_ids", "attention_mask")),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
    )


def _post_processor(fam: str, specials: dict[str, AddedToken | None], config: dict):
    def content(name: str) -> str:
        token = specials[name]
        if token is None:
            raise ValueError(
                f"the {fam} tokenizer needs a {name}_token; set {name}_token in tokenizer_config.json"
            )
        return token.content

    if fam == "roberta":
        cls_tok, sep_tok = content("cls"), content("sep")
        trim, prefix = bool(config.get("trim_offsets", True)), bool(config.get("add_prefix_space", False))
        return lambda backend: b.roberta_post_processor(backend, cls_tok, sep_tok, trim, prefix)
    if fam == "bigbird":
        cls_tok, sep_tok = content("cls"), content("sep")
        return lambda backend: b.bigbird_post_processor(backend, cls_tok, sep_tok)
    bos, eos = specials["bos"], specials["eos"]
    add_bos, add_eos = bool(config.get("add_bos_token", False)), bool(config.get("add_eos_token", False))
    return lambda backend: b.bos_eos_post_processor(
        backend, bos and bos.content, eos and eos.content, add_bos, add_eos
    )
