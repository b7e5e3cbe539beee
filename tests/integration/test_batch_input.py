"""Reading batch input: per-document failures carry on, whole-input errors write nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from chorus.batch import prepare_batch
from chorus.inputs import read_records
from models import Batch, Session, ensure_schema
from workflows.errors import ConfigError


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
        "i-notes.bin": b"plain text under an unknown suffix",
        "j-tool.exe": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)

    records = {r.key: r for r in read_records(folder, max_bytes=1000)}

    assert sorted(records) == sorted(files)  # every file is a document: none is skipped in silence
    assert records["a-good.txt"].text == "A fine document." and records["h-good.md"].error is None
    assert records["i-notes.bin"].text == "plain text under an unknown suffix"  # recognised by its content
    reasons = {k: r.error for k, r in records.items() if r.error}
    assert set(reasons) == {"b-empty.txt", "c-blank.md", "d-scan.txt", "e-logo.txt", "f-latin1.txt", "g-huge.txt",
                            "j-tool.exe"}
    assert all(reason.startswith(f"{name}: ") for name, reason in reasons.items())  # each names its file
    for name, why in {"b-empty.txt": "empty file", "c-blank.md": "only whitespace",
                      "d-scan.txt": "the PDF cannot be read",  # a (broken) PDF by its content, whatever its name
                      "e-logo.txt": "image header cannot be read", "f-latin1.txt": "not valid UTF-8",
                      "g-huge.txt": "CHORUS_MAX_DOCUMENT_BYTES", "j-tool.exe": "not a kind chorus reads"}.items():
        assert why in reasons[name], reasons[name]
    assert records["d-scan.txt"].kind == "pdf" and records["j-tool.exe"].kind == "exe"


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
        (lambda p: p / "notes.docx", "vote", {"labels": "a,b"}, "for one document, use chorus vote"),
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
