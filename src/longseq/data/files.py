"""Loaders for user data: classification (JSONL / CSV / TSV), SQuAD-style QA (JSON) and raw text for LM.

Every error is one line naming the file, and the line where there is one: ``FileNotFoundError`` for a
missing file, ``ValueError`` for malformed content or an empty data set.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Answer", "ClassificationData", "QAExample", "load_classification", "load_squad", "load_text"]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _read_text(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid {encoding} ({e.reason})") from None


@dataclass
class ClassificationData:
    """Texts with label ids; ``label_names[i]`` is the name of label id ``i``."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _label_name(value: Any, where: str, label_field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: field {label_field!r} must be a string or an integer, got {value!r}")
    return str(value)


def _iter_records(path: Path, text: str, text_field: str, label_field: str):
    """Yield (where, text, label name) per record of a JSONL, CSV or TSV file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            for name in (text_field, label_field):
                if name not in rec:
                    raise ValueError(f"{where}: missing field {name!r}")
            if not isinstance(rec[text_field], str):
                raise ValueError(f"{where}: field {text_field!r} must be a string, got {rec[text_field]!r}")
            yield where, rec[text_field], _label_name(rec[label_field], where, label_field)
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        header = reader.fieldnames or []
        for name in (text_field, label_field):
            if name not in header:
                raise ValueError(f"{path}:1: header has no column {name!r} (columns: {header})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header's {len(header)}")
            if row[text_field] is None or row[label_field] is None:
                raise ValueError(f"{where}: fewer fields than the header's {len(header)}")
            yield where, row[text_field], row[label_field]
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .tsv")


def _sorted_names(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_classification(
    path: str | Path,
    label_names: list[str] | None = None,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
) -> ClassificationData:
    """Read a JSONL (one object per line), CSV or TSV (with a header) file of ``text`` / ``label``.

    Without ``label_names`` the label set is built from this file (sorted; numerically when every label is
    an integer): load the training file first and pass its ``label_names`` to the others, where a label
    outside the set is an error naming the file and line.
    """
    path = _existing(path)
    records = list(_iter_records(path, _read_text(path, encoding), text_field, label_field))
    if not records:
        raise ValueError(f"{path}: empty data set (no records)")
    if label_names is None:
        label_names = _sorted_names({name for _, _, name in records})
    index = {str(n): i for i, n in enumerate(label_names)}
    labels = []
    for where, _, name in records:
        if name not in index:
            raise ValueError(f"{where}: label {name!r} is not in the label set {list(index)}")
        labels.append(index[name])
    return ClassificationData([t for _, t, _ in records], labels, list(index))


@dataclass
class Answer:
    text: str
    start: int  # character offset of the answer in the context


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[Answer] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{where}: missing field {key!r}")
    value = obj[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"{where}.{key}: expected {name}, got {type(value).__name__}")
    return value


def load_squad(path: str | Path, check_spans: bool = True, encoding: str = "utf-8") -> list[QAExample]:
    """Read SQuAD 1.1 / 2.0 JSON: ``data -> paragraphs -> {context, qas -> {question, id, answers}}``.

    ``is_impossible`` (2.0) defaults to False; a possible question needs at least one answer. With
    ``check_spans`` every answer must equal ``context[answer_start : answer_start + len(text)]``. Errors name
    the file and the JSON path (e.g. ``data[0].paragraphs[3].qas[1]``), or the line of a JSON syntax error.
    """
    path = _existing(path)
    try:
        root = json.loads(_read_text(path, encoding))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    out: list[QAExample] = []
    for a, article in enumerate(_get(root, "data", list, f"{path}: root")):
        where_a = f"{path}: data[{a}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, para in enumerate(_get(article, "paragraphs", list, where_a)):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = _get(para, "context", str, where_p)
            for q, qa in enumerate(_get(para, "qas", list, where_p)):
                where = f"{where_p}.qas[{q}]"
                impossible = qa.get("is_impossible", False) if isinstance(qa, dict) else False
                if not isinstance(impossible, bool):
                    raise ValueError(f"{where}.is_impossible: expected bool, got {type(impossible).__name__}")
                answers = []
                for k, ans in enumerate(_get(qa, "answers", list, where)):
                    text = _get(ans, "text", str, f"{where}.answers[{k}]")
                    start = _get(ans, "answer_start", int, f"{where}.answers[{k}]")
                    if check_spans and context[start : start + len(text)] != text:
                        raise ValueError(
                            f"{where}.answers[{k}]: {text!r} is not the context at answer_start={start}"
                        )
                    answers.append(Answer(text, start))
                if not impossible and not answers:
                    raise ValueError(f"{where}: no answers and is_impossible is not true")
                question, qid = _get(qa, "question", str, where), _get(qa, "id", str, where)
                out.append(QAExample(qid, question, context, answers, impossible, title))
    if not out:
        raise ValueError(f"{path}: empty data set (no questions)")
    return out


def load_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole text of a file, for masked or causal LM; chunking is done later with a tokenizer."""
    path = _existing(path)
    text = _read_text(path, encoding)
    if not text.strip():
        raise ValueError(f"{path}: empty data set (no text)")
    return text
