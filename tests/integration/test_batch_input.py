"""Reading batch input: per-document failures carry on, whole-input errors write nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from chorus.batch import prepare_batch, read_records
from models import Batch, Session, ensure_schema
from workflows.errors import ConfigError

pytestmark = pytest.mark.integration


def test_every_kind_of_bad_file_in_a_folder_fails_alone_with_its_reason(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    files = {
        "a-good.txt": b"A fine document.",
        "b-empty.txt": b"",
        "c-blank.md": b"  \n\n ",
        "d-scan.txt": b"%PDF-1.4\n...",
        "e-logo.txt": b"\x89PNG\r\n\x1a\n",
        "f-latin1.txt": "résumé".encode("latin-1"),
        "g-huge.txt": b"word " * 300,
        "h-good.md": b"# Title\nAnother fine one.",
        "ignored.bin": b"not read",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)

    records = {r.key: r for r in read_records(folder, max_bytes=1000)}

    assert sorted(records) == sorted(k for k in files if k != "ignored.bin")
    assert records["a-good.txt"].text == "A fine document." and records["h-good.md"].error is None
    reasons = {k: r.error for k, r in records.items() if r.error}
    assert reasons == {
        "b-empty.txt": "empty document",
        "c-blank.md": "the document is only whitespace",
        "d-scan.txt": "binary content: this is a PDF file, not text; convert it to text first",
        "e-logo.txt": "binary content: this is a PNG image, not text; convert it to text first",
        "f-latin1.txt": "invalid UTF-8 at byte 1 (b'\\xe9sum'); re-encode the file as UTF-8 (e.g. iconv -f latin1 "
                        "-t utf-8)",
        "g-huge.txt": "1500 bytes is over the size cap of 1000 bytes (CHORUS_MAX_DOCUMENT_BYTES)",
    }


def test_csv_rows_with_missing_values_or_duplicate_ids_fail_alone(tmp_path):
    source = tmp_path / "docs.csv"
    source.write_text('id,text,label\n1,first text,pos\n2\n3,"third, quoted",\n1,again,neg\n,no id,\n')

    records = list(read_records(source, max_bytes=1000))

    assert [(r.key, r.text, r.error) for r in records] == [
        ("1", "first text", None),
        ("2", None, "row 3: missing column(s) text"),
        ("3", "third, quoted", None),
        ("1#dup-4", None, "row 5: duplicate id '1' (first at row 2)"),
        ("row-6", None, "row 6: \"id\" must be a non-empty string or number"),
    ]
    assert records[0].label == "pos" and records[2].label is None


@pytest.mark.parametrize(
    ("make", "pattern", "options", "message"),
    [
        (lambda p: p / "missing.jsonl", "vote", {"labels": "a,b"}, "no such file or folder"),
        (lambda p: p / "ok.jsonl", "stack", {}, "unknown pattern 'stack'"),
        (lambda p: p / "ok.jsonl", "vote", {}, "--pattern vote needs --labels"),
        (lambda p: p / "ok.jsonl", "section", {"how": "chapters"}, "unknown split 'chapters'"),
        (lambda p: p / "nocol.csv", "vote", {"labels": "a,b"}, "the CSV header has no text column"),
        (lambda p: p / "notes.docx", "vote", {"labels": "a,b"}, "give a folder of .txt/.md files"),
    ],
)
def test_whole_input_errors_are_refused_before_anything_is_written(postgres, tmp_path, make, pattern, options,
                                                                  message):
    ensure_schema(postgres)
    (tmp_path / "ok.jsonl").write_text('{"id": "1", "text": "x"}\n')
    (tmp_path / "nocol.csv").write_text("id,body\n1,x\n")
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    with Session() as s:
        before = s.scalar(select(func.count()).select_from(Batch))

    with pytest.raises(ConfigError, match=message):
        prepare_batch(make(tmp_path), pattern=pattern, options=options, name="never-written")

    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == before
