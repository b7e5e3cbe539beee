from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chorus.schedule import beat_entries, load_jobs
from workflows.errors import ConfigError

INBOX = {"name": "inbox", "kind": "inbox", "every_minutes": 5, "folder": "/srv/inbox", "batch": "mail",
         "pattern": "vote", "options": {"labels": "a,b"}}
RETRY = {"name": "nightly", "kind": "retry_failed", "batch": "mail", "at": "03:00"}


def write(tmp_path, data, suffix=".json"):
    path = tmp_path / f"jobs{suffix}"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_json_schedule_becomes_beat_entries_that_carry_the_checked_job(tmp_path):
    jobs = load_jobs(write(tmp_path, {"jobs": [INBOX, RETRY]}))
    entries = beat_entries(jobs, "callbacks")
    assert entries["chorus-job-inbox"]["schedule"] == timedelta(minutes=5)
    assert entries["chorus-job-inbox"]["args"][0]["folder"] == "/srv/inbox"
    cron = entries["chorus-job-nightly"]["schedule"]
    assert cron.hour == {3} and cron.minute == {0}
    assert jobs[1].describe() == "daily at 03:00 UTC: re-run the failed documents of batch 'mail'"


def test_a_toml_schedule_reads_the_same(tmp_path):
    text = ('[[jobs]]\nname = "inbox"\nkind = "inbox"\nevery_seconds = 30\nfolder = "/in"\nbatch = "b"\n'
            'pattern = "section"\noptions = { task = "summarize" }\n')
    (job,) = load_jobs(write(tmp_path, text, ".toml"))
    assert job.every_seconds == 30 and job.options == {"task": "summarize"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"jobs": []}, "expected a non-empty list under \"jobs\""),
        ({"jobs": [{**INBOX, "every_minutes": 0}]}, "job 1 (inbox): every_minutes: Input should be greater than 0"),
        ({"jobs": [{**INBOX, "at": "03:00"}]}, "job 1 (inbox): give exactly one of every_minutes"),
        ({"jobs": [{**RETRY, "at": "25:00"}]}, "job 1 (nightly): at: expected a UTC time of day as HH:MM"),
        ({"jobs": [{k: v for k, v in INBOX.items() if k != "folder"}]}, "an inbox job needs folder and pattern"),
        ({"jobs": [{**RETRY, "pattern": "vote"}]}, "a retry_failed job takes only batch"),
        ({"jobs": [{**INBOX, "kind": "cleanup"}]}, "kind: Input should be 'inbox' or 'retry_failed'"),
        ({"jobs": [{**INBOX, "colour": "red"}]}, "colour: Extra inputs are not permitted"),
        ({"jobs": [INBOX, INBOX]}, "job names must be unique; repeated: inbox"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_file_job_and_field(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_jobs(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "CHORUS_SCHEDULE_FILE" in str(info.value)


def test_a_missing_schedule_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_jobs(tmp_path / "nope.json")


@pytest.mark.integration  # the command, in a process of its own
@pytest.mark.parametrize(("jobs", "code", "expected"), [
    ({"jobs": [INBOX, RETRY]}, 0, "job nightly: daily at 03:00 UTC: re-run the failed documents of batch 'mail'"),
    ({"jobs": [{**RETRY, "every_minutes": 5}]}, 2, "job 1 (nightly): give exactly one of"),
])
def test_chorus_beat_check_validates_the_schedule_file_without_starting_beat(tmp_path, jobs, code, expected):
    from tests.clirunner import session_chorus

    schedule = str(write(tmp_path, jobs))
    done = session_chorus("beat", "--check", CHORUS_SCHEDULE_FILE=schedule)
    assert done.returncode == code
    assert expected in " ".join(done.stderr.split())
    if code == 0:
        as_json = session_chorus("beat", "--check", "--json", CHORUS_SCHEDULE_FILE=schedule)
        assert as_json.returncode == 0, as_json.stderr
        checked = json.loads(as_json.stdout)
        assert [j["name"] for j in checked] == [j["name"] for j in jobs["jobs"]]
        assert all(j["describe"] for j in checked)


TASK = """name = "mail-urgency"
[[labels]]
name = "urgent"
description = "an outage"
[[labels]]
name = "normal"
[[voters]]
name = "reader"
count = 2
"""


def test_a_job_names_a_task_file_relative_to_the_schedule_and_carries_it_resolved(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mail.toml").write_text(TASK)
    job = {k: v for k, v in INBOX.items() if k not in ("pattern", "options")} | {"task": "tasks/mail.toml"}
    (loaded,) = load_jobs(write(tmp_path, {"jobs": [job]}))
    assert loaded.pattern == "vote"  # from the task
    assert loaded.task_spec is not None and loaded.task_spec["name"] == "mail-urgency"
    sent = beat_entries([loaded], "callbacks")["chorus-job-inbox"]["args"][0]
    assert sent["task_spec"]["labels"][0] == {"name": "urgent", "description": "an outage"}
    assert "task 'mail-urgency'" in loaded.describe()


@pytest.mark.parametrize(
    ("task_text", "job_extra", "message"),
    [
        (TASK.replace('name = "urgent"', 'name = "normal"'), {}, "field `labels[1].name`"),
        (None, {}, "no such file"),
        (TASK, {"pattern": "section"}, "is a vote task but the job says pattern = 'section'"),
    ],
)
def test_a_job_with_a_bad_task_file_is_refused_naming_the_job_and_the_task_field(tmp_path, task_text, job_extra,
                                                                                 message):
    if task_text is not None:
        (tmp_path / "mail.toml").write_text(task_text)
    job = {k: v for k, v in INBOX.items() if k not in ("pattern", "options")} | {"task": "mail.toml", **job_extra}
    with pytest.raises(ConfigError) as info:
        load_jobs(write(tmp_path, {"jobs": [job]}))
    assert "job 1 (inbox): task" in str(info.value)
    assert message in str(info.value)


def test_a_job_on_the_batch_lane_says_so_and_passes_the_lane_to_its_batch(tmp_path, monkeypatch):
    import chorus.schedule as schedule

    (job,) = load_jobs(write(tmp_path, {"jobs": [{**INBOX, "lane": "batch"}]}))
    assert job.lane == "batch" and ", batch lane)" in job.describe()
    assert beat_entries([job], "callbacks")["chorus-job-inbox"]["args"][0]["lane"] == "batch"
    seen = {}

    class Sub:
        def to_json(self):
            return {"sent": 0}

    def fake_run_batch(folder, **kwargs):
        seen.update(kwargs)
        return Sub()

    monkeypatch.setattr("chorus.batch.run_batch", fake_run_batch)  # run_job imports it when it runs
    schedule.run_job(job)
    assert seen["lane"] == "batch"
    (default,) = load_jobs(write(tmp_path, {"jobs": [INBOX]}))
    assert default.lane == "sync" and "batch lane" not in default.describe()


def test_an_unknown_lane_is_refused_naming_the_job(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_jobs(write(tmp_path, {"jobs": [{**INBOX, "lane": "overnight"}]}))
    assert "job 1 (inbox): lane" in str(info.value) and "'sync' or 'batch'" in str(info.value)
