from __future__ import annotations

import json

import pytest

from workflows.intake import duplicate, parse_jsonl

CAP = 1000


@pytest.mark.parametrize(
    ("line", "key", "error"),
    [
        ('{"id": "a", "text": "hello", "label": "pos"}', "a", None),
        ('{"id": 7, "text": "hello"}', "7", None),
        ('{"id": "a", "text": "hello"', "line-3", "line 3: malformed JSON"),
        ('["a", "hello"]', "line-3", "line 3: expected a JSON object"),
        ('{"text": "hello"}', "line-3", "line 3: missing 'id'"),
        ('{"id": "a"}', "a", "line 3: missing 'text'"),
        ('{"id": "a", "text": 5}', "a", "line 3: \"text\" must be a string, not int"),
        ('{"id": "", "text": "x"}', "line-3", "line 3: \"id\" must be a non-empty string or number"),
        ('{"id": "a", "text": ""}', "a", "line 3: empty document"),
    ],
)
def test_a_jsonl_line_becomes_a_record_or_a_reason(line, key, error):
    record = parse_jsonl(line, 3, CAP)
    assert record.key == key
    if error is None:
        assert record.error is None and record.text == json.loads(line)["text"]
    else:
        assert record.text is None and record.error is not None and record.error.startswith(error)


def test_a_duplicate_id_fails_under_a_key_of_its_own_naming_the_first():
    dup = duplicate(parse_jsonl('{"id": "a", "text": "again"}', 9, CAP), "line 2", "line 9", 9)
    assert dup.key == "a#dup-9" and dup.text is None
    assert dup.error == "line 9: duplicate id 'a' (first at line 2)"
