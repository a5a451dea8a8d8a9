"""User file loaders: the happy paths and one-line errors that name the file and line."""

import json

import pytest

from longseq.data import load_classification, load_squad, load_text


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_label_set_from_train_then_given(tmp_path):
    lines = '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n'
    train = write(tmp_path / "train.jsonl", lines)
    data = load_classification(train)
    assert data.texts == ["good", "bad"] and data.label_names == ["neg", "pos"] and data.labels == [1, 0]
    lines = '{"text": "ok", "label": "pos"}\n{"text": "meh", "label": "mid"}\n'
    valid = write(tmp_path / "valid.jsonl", lines)
    with pytest.raises(ValueError, match=r"valid\.jsonl:2: label 'mid' is not in the label set"):
        load_classification(valid, label_names=data.label_names)


def test_integer_labels_sort_numerically(tmp_path):
    f = write(tmp_path / "a.jsonl", "".join(json.dumps({"text": "t", "label": y}) + "\n" for y in (10, 2, 1)))
    data = load_classification(f)
    assert data.label_names == ["1", "2", "10"] and data.labels == [2, 1, 0]


def test_csv_and_tsv(tmp_path):
    csv_file = write(tmp_path / "d.csv", 'text,label\n"hello, world",a\nbye,b\n')
    data = load_classification(csv_file)
    assert data.texts == ["hello, world", "bye"] and data.labels == [0, 1]
    tsv = write(tmp_path / "d.tsv", "label\ttext\nb\tx\n")
    assert load_classification(tsv, label_names=["a", "b"]).labels == [1]


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', r"bad\.jsonl:2: invalid JSON"),
        ("miss.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', r"miss\.jsonl:2: missing field 'label'"),
        ("type.jsonl", '{"text": 5, "label": 1}\n', r"type\.jsonl:1: field 'text' must be a string"),
        ("lab.jsonl", '{"text": "a", "label": 1.5}\n', r"lab\.jsonl:1: field 'label' must be"),
        ("arr.jsonl", "[1, 2]\n", r"arr\.jsonl:1: expected a JSON object"),
        ("short.csv", "text,label\na,b\nc\n", r"short\.csv:3: fewer fields"),
        ("long.csv", "text,label\na,b,c\n", r"long\.csv:2: more fields"),
        ("head.csv", "body,label\na,b\n", r"head\.csv:1: header has no column 'text'"),
        ("empty.jsonl", "\n\n", r"empty\.jsonl: empty data set"),
        ("data.xml", "<a/>", r"data\.xml: unknown format"),
        ("enc.jsonl", b'{"text": "a", "label": 1}\n{"text": "\xff"}\n', r"enc\.jsonl:2: not valid utf-8"),
    ],
)
def test_classification_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=pattern) as err:
        load_classification(path)
    assert "\n" not in str(err.value)


def test_missing_files(tmp_path):
    for loader in (load_classification, load_squad, load_text):
        with pytest.raises(FileNotFoundError, match=r"nope\.\w+: no such file"):
            loader(tmp_path / "nope.jsonl")


def squad(qas, context="The cat sat on the mat."):
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_squad_v1_and_v2(tmp_path):
    qas = [
        {"id": "q1", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]},
        {"id": "q2", "question": "Who flew?", "answers": [], "is_impossible": True},
    ]
    out = load_squad(write(tmp_path / "s.json", json.dumps(squad(qas))))
    assert [e.id for e in out] == ["q1", "q2"]
    assert out[0].answers[0].text == "cat" and out[0].answers[0].start == 4 and not out[0].is_impossible
    assert out[1].is_impossible and out[1].answers == [] and out[1].title == "T"


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ({"version": "1.1"}, r"root: missing field 'data'"),
        (squad([{"id": "q1", "answers": []}]), r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: no answers"),
        (
            squad([{"id": "q1", "question": "?", "answers": [{"text": "cat", "answer_start": "4"}]}]),
            r"qas\[0\]\.answers\[0\]\.answer_start: expected int, got str",
        ),
        (
            squad([{"id": "q1", "question": "?", "answers": [{"text": "dog", "answer_start": 4}]}]),
            r"qas\[0\]\.answers\[0\]: 'dog' is not the context at answer_start=4",
        ),
        (
            squad([{"id": 7, "question": "?", "answers": [], "is_impossible": True}]),
            r"qas\[0\]\.id: expected str",
        ),
        (squad([]), r"empty data set"),
    ],
)
def test_squad_errors(tmp_path, doc, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_squad(write(tmp_path / "s.json", json.dumps(doc)))


def test_squad_syntax_error_names_line(tmp_path):
    with pytest.raises(ValueError, match=r"s\.json:3: invalid JSON"):
        load_squad(write(tmp_path / "s.json", '{\n  "data": [\n  oops\n]}'))


def test_text(tmp_path):
    assert load_text(write(tmp_path / "a.txt", "line one\nline two\n")) == "line one\nline two\n"
    with pytest.raises(ValueError, match=r"b\.txt: empty data set"):
        load_text(write(tmp_path / "b.txt", " \n"))
