"""Reading a labelled set: JSONL and CSV, bad rows skipped and named, the rest kept."""

from __future__ import annotations

import json

import pytest

from chorus.analysis.labelled import read_labelled
from workflows.errors import ConfigError

LABELS = ("positive", "negative")


def test_jsonl_rows_are_read_and_bad_ones_skipped_with_their_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "text": "good", "label": "Positive"}),
        "{not json",
        json.dumps({"id": "b", "text": "  ", "label": "negative"}),
        json.dumps({"id": "c", "text": "meh", "label": "mixed"}),
        json.dumps({"id": "a", "text": "again", "label": "negative"}),
        json.dumps({"text": "no id, no label"}),
    ]) + "\n")
    found = read_labelled(path, LABELS)
    assert [(d.id, d.label) for d in found.docs] == [("a", "positive"), ("line-6", None)]
    assert [s.split(":")[0] for s in found.skipped] == ["line 2", "line 3", "line 4", "line 5"]
    assert "mixed" in found.skipped[2] and "repeats line 1" in found.skipped[3]
    assert not found.labelled


def test_csv_needs_a_text_column_and_limit_stops_early(tmp_path):
    good = tmp_path / "set.csv"
    good.write_text("id,text,label\n1,great,positive\n2,awful,negative\n3,fine,positive\n")
    found = read_labelled(good, LABELS, limit=2)
    assert [d.id for d in found.docs] == ["1", "2"] and found.labelled
    bad = tmp_path / "bad.csv"
    bad.write_text("id,body\n1,x\n")
    with pytest.raises(ConfigError, match="text column"):
        read_labelled(bad, LABELS)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "no such file"),
    ("set.txt", "hello", ".jsonl or .csv"),
    ("empty.jsonl", "\n", "no usable documents"),
])
def test_an_unusable_file_is_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_labelled(path, LABELS)


def test_a_folder_is_refused_with_a_message_not_a_traceback(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give one JSONL or CSV file"):
        read_labelled(tmp_path, LABELS)


def test_gold_labels_are_kept_as_the_label_set_writes_them():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "set.jsonl"
        path.write_text(json.dumps({"id": "a", "text": "t", "label": "URGENT"}) + "\n")
        (doc,) = read_labelled(path, ("Urgent", "Normal")).docs
    assert doc.label == "Urgent"
