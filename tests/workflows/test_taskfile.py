import tomllib
from pathlib import Path

import pytest

from workflows.taskfile import (
    Label,
    SectionTask,
    TaskFileError,
    VoterSpec,
    VoteRules,
    VoteTask,
    check_vote_task,
    closed_schema,
    concat_key,
    labels_task,
    parse_task,
    task_from_json,
    task_hash,
    with_vote_overrides,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VOTE = """
name = "ticket-urgency"
pattern = "vote"
instructions = "You triage support tickets."
[[labels]]
name = "urgent"
description = "cannot work at all"
[[labels]]
name = "Normal"
[[examples]]
text = "Locked out."
label = "URGENT"
[[voters]]
name = "cannot-do"
model = "claude-haiku-5-5"
prompt = "Judge from what they cannot do."
count = 2
[[voters]]
name = "outage"
model = "claude-sonnet-5-5"
effort = "low"
[vote]
quorum = 2
tie_policy = "first"
low_agreement_below = 0.5
"""

SECTION = """
name = "man-options"
pattern = "section"
split = "headings"
max_tokens = 2000
[map]
model = "claude-haiku-5-5"
instructions = "List every option."
output_schema = { type = "object", required = ["options"], additionalProperties = false, \
  properties = { options = { type = "array", items = { type = "string" } } } }
[reduce]
model = "claude-sonnet-5-5"
instructions = "Merge the lists."
"""


def parse(text: str):
    return parse_task(tomllib.loads(text), source="t.toml")


def test_a_vote_file_reads_every_field():
    task = parse(VOTE)
    assert isinstance(task, VoteTask)
    assert task.label_names == ("urgent", "Normal")
    assert task.labels[0].description == "cannot work at all"
    assert task.examples[0].label == "URGENT"
    assert [(v.name, v.model, v.count, v.effort) for v in task.voters] == [
        ("cannot-do", "claude-haiku-5-5", 2, None), ("outage", "claude-sonnet-5-5", 1, "low")]
    assert task.panel_size == 3
    assert (task.vote.quorum, task.vote.tie_policy, task.vote.low_agreement_below) == (2, "first", 0.5)


def test_labels_match_case_insensitively_and_show_as_written():
    task = parse(VOTE)
    assert task.canonical_label("normal") == "Normal"
    assert task.canonical_label("  URGENT ") == "urgent"
    assert task.canonical_label("banana") is None


def test_a_section_file_reads_map_reduce_and_schema():
    task = parse(SECTION)
    assert isinstance(task, SectionTask)
    assert task.split == "headings" and task.max_tokens == 2000
    assert task.map.output_schema is not None
    assert task.map.output_schema["properties"]["options"]["type"] == "array"
    assert task.reduce is not None and task.reduce.model == "claude-sonnet-5-5"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_the_shipped_examples_parse(path):
    parse_task(tomllib.loads(path.read_text()), source=str(path))


def test_the_hash_follows_the_content_not_the_layout():
    same = parse(VOTE.replace('quorum = 2', '# a comment\nquorum    =   2'))
    assert task_hash(same) == task_hash(parse(VOTE))
    changed = parse(VOTE.replace("Judge from what they cannot do.", "Judge from the tone."))
    assert task_hash(changed) != task_hash(parse(VOTE))


def test_a_stored_task_reads_back_as_the_same_task():
    for text in (VOTE, SECTION):
        task = parse(text)
        assert task_from_json(task.to_json()) == task


def test_unicode_labels_up_to_64_characters_are_accepted():
    task = labels_task(["très urgent", "normal — später", "x" * 64], voters=3)
    assert task.label_names[0] == "très urgent"


def test_the_labels_only_task_keeps_todays_panel():
    task = labels_task("positive,negative,neutral", voters=5, models=["m1", "m2"])
    assert task.panel_size == 5
    assert [v.model for v in task.voters] == ["m1", "m2", "m1", "m2", "m1"]
    assert all(v.prompt is None for v in task.voters)


def test_command_line_options_override_the_file():
    task = parse(VOTE)
    over = with_vote_overrides(task, voters=5, quorum=3, tie_policy="none", models=["claude-opus-5-5"])
    assert over.panel_size == 5
    assert [v.name for v in over.voters] == ["cannot-do", "cannot-do", "outage", "cannot-do", "cannot-do"]
    assert {v.model for v in over.voters} == {"claude-opus-5-5"}
    assert (over.vote.quorum, over.vote.tie_policy) == (3, "none")
    relabelled = with_vote_overrides(task, labels="urgent,low")
    assert relabelled.labels[0] == Label("urgent", "cannot work at all")  # the kept label keeps its meaning
    assert relabelled.label_names == ("urgent", "low")


def test_stop_decided_makes_the_vote_adaptive_and_changes_the_task_hash():
    task = parse(VOTE)
    adaptive = parse(VOTE.replace("quorum = 2", 'quorum = 2\nstop = "decided"\nstop_when_agree = 2'))
    assert not task.vote.adaptive and adaptive.vote.adaptive and adaptive.vote.stop_when_agree == 2
    assert task_hash(adaptive) != task_hash(task)
    assert task_hash(parse(VOTE.replace("quorum = 2", 'quorum = 2\nstop = "all"'))) == task_hash(task)
    assert with_vote_overrides(task, adaptive=True).vote.adaptive
    assert not with_vote_overrides(adaptive, adaptive=False).vote.adaptive


def test_concat_finds_the_one_list_of_a_schema():
    assert concat_key({"type": "array"}) is None
    assert concat_key({"type": "object", "properties": {"options": {"type": "array"}}}) == "options"
    assert concat_key({"type": "object", "properties": {"a": {"type": "array"}, "b": {"type": "array"}}}) is False
    assert concat_key({"type": "string"}) is False


BAD = [
    # (what to change, the field the error must name, words of the message)
    (lambda t: t.replace('name = "ticket-urgency"\n', ""), "name", "required"),
    (lambda t: t.replace('pattern = "vote"', 'pattern = "poll"'), "pattern", "unknown pattern"),
    (lambda t: t.replace('name = "Normal"', 'name = "URGENT"'), "labels[1].name", "repeats labels[0]"),
    (lambda t: t.replace('name = "Normal"', 'name = ""'), "labels[1].name", "needs a name"),
    (lambda t: t.replace('name = "Normal"', f'name = "{"n" * 65}"'), "labels[1].name", "at most 64"),
    (lambda t: t.replace('label = "URGENT"', 'label = "banana"'), "examples[0].label", "not one of the labels"),
    (lambda t: t.replace("count = 2", "count = 0"), "voters[0].count", "from 1 to"),
    (lambda t: t.replace("count = 2", 'count = "two"'), "voters[0].count", "whole number"),
    (lambda t: t.replace("quorum = 2", "quorum = 9"), "vote.quorum", "between 1 and 3"),
    (lambda t: t.replace('tie_policy = "first"', 'tie_policy = "random"'), "vote.tie_policy", "none, first"),
    (lambda t: t.replace("low_agreement_below = 0.5", "low_agreement_below = 1.5"), "vote.low_agreement_below",
     "between 0 and 1"),
    (lambda t: t.replace("quorum = 2", 'quorum = 2\nstop = "early"'), "vote.stop", "use \"decided\""),
    (lambda t: t.replace("quorum = 2", "quorum = 2\nstop_when_agree = 2"), "vote.stop_when_agree",
     "needs stop = \"decided\""),
    (lambda t: t.replace("quorum = 2", 'quorum = 2\nstop = "decided"\nstop_when_agree = 4'), "vote.stop_when_agree",
     "between 1 and 3"),
    (lambda t: t.replace('effort = "low"', 'efort = "low"'), "voters[1].efort", "unknown field"),
    (lambda t: t.replace('prompt = "Judge from what they cannot do."', 'prompt = "  "'), "voters[0].prompt",
     "empty"),
    (lambda t: t.replace("[[labels]]\nname = \"Normal\"\n", ""), "labels", "at least two"),
    (lambda t: t.replace('instructions = "You triage support tickets."', "instructions = 3"), "instructions",
     "must be text"),
]


@pytest.mark.parametrize(("change", "field", "words"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_a_bad_vote_file_names_its_field(change, field, words):
    with pytest.raises(TaskFileError) as caught:
        parse(change(VOTE))
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith("t.toml: field `" + field + "`")


BAD_SECTION = [
    (lambda t: t.replace('split = "headings"', 'split = "chapters"'), "split", "auto, headings"),
    (lambda t: t.replace('instructions = "List every option."\n', ""), "map.instructions", "required"),
    (lambda t: t.replace('type = "array"', 'type = "list"'), "map.output_schema.properties.options.type",
     "unknown JSON type"),
    (lambda t: t.replace('required = ["options"]', 'required = ["option"]'), "map.output_schema.required",
     "not in `properties`"),
    (lambda t: t.replace('[reduce]\nmodel = "claude-sonnet-5-5"\ninstructions = "Merge the lists."\n', ""), "reduce",
     "how to combine"),
    (lambda t: t + 'merge = "concat"\n', "reduce.merge", "unknown field"),
    (lambda t: t.replace('split = "headings"', 'split = "headings"\nmerge = "concat"'), "merge", "not both"),
    (lambda t: t.replace("max_tokens = 2000", "max_tokens = 0"), "max_tokens", "at least 1"),
]


@pytest.mark.parametrize(("change", "field", "words"), BAD_SECTION, ids=[b[1] + ":" + b[2] for b in BAD_SECTION])
def test_a_bad_section_file_names_its_field(change, field, words):
    with pytest.raises(TaskFileError) as caught:
        parse(change(SECTION))
    assert caught.value.field == field
    assert words in str(caught.value)


def test_concat_needs_a_list_in_the_schema():
    text = SECTION.replace('[reduce]\nmodel = "claude-sonnet-5-5"\ninstructions = "Merge the lists."\n', "")
    text = text.replace("[map]", 'merge = "concat"\n[map]')
    assert parse(text).merge == "concat"
    with pytest.raises(TaskFileError, match="joins JSON arrays") as caught:
        parse(text.replace('options = { type = "array", items = { type = "string" } }',
                           'options = { type = "string" }'))
    assert caught.value.field == "merge"


def test_a_panel_above_the_limit_is_refused():
    with pytest.raises(TaskFileError, match="1 to 1000 voters"):
        with_vote_overrides(labels_task("a,b", voters=2), voters=1001)
    with pytest.raises(TaskFileError, match="at most 1000") as caught:
        parse(VOTE.replace("count = 2", "count = 1000"))
    assert caught.value.field == "voters"


def test_a_python_task_is_checked_like_a_file():
    with pytest.raises(TaskFileError, match="repeats"):
        with_vote_overrides(VoteTask(name="t", labels=(Label("a"), Label("A")), voters=(VoterSpec(),)))


def test_objects_in_a_schema_are_closed_unless_the_file_says_otherwise():
    task = parse(SECTION.replace("additionalProperties = false, ", ""))
    assert isinstance(task, SectionTask) and task.map.output_schema is not None
    assert task.map.output_schema["additionalProperties"] is False
    nested = closed_schema({"type": "array", "items": {"type": "object", "properties": {
        "x": {"type": ["object", "null"], "properties": {}}}}})
    assert nested["items"]["additionalProperties"] is False
    assert nested["items"]["properties"]["x"]["additionalProperties"] is False


@pytest.mark.parametrize(("keyword", "value", "field"), [
    ("maxLength", 10, "map.output_schema.properties.options.items.maxLength"),
    ("minimum", 0, "map.output_schema.properties.options.items.minimum"),
    ("additionalProperties", True, "map.output_schema.properties.options.items.additionalProperties"),
])
def test_a_schema_keyword_structured_outputs_cannot_follow_is_refused_naming_it(keyword, value, field):
    extra = f"{keyword} = {str(value).lower()}"
    text = SECTION.replace('items = { type = "string" }', f'items = {{ type = "string", {extra} }}')
    with pytest.raises(TaskFileError) as caught:
        parse(text)
    assert caught.value.field == field


# ----- vote rules that cannot hold together (issue 22, item 6) -------------------------------------
def rules_file(vote: str, panel: str = "[[voters]]\ncount = 5\n") -> str:
    """A vote task with the given `[vote]` lines and panel (`[[voters]]` entries)."""
    return ('name = "rules"\n[[labels]]\nname = "yes"\n[[labels]]\nname = "no"\n' + panel
            + "[vote]\n" + vote + "\n")


THREE = '[[voters]]\nname = "a"\nprompt = "Read it."\ncount = 2\n[[voters]]\nname = "b"\n'  # a panel of 3

CONTRADICTIONS = [
    # ([vote] lines, panel, the field named, words of the message)
    ('quorum = 3\nstop = "decided"\nstop_when_agree = 2', None, "vote.stop_when_agree",
     "raise it to at least the quorum (3) or lower the quorum"),
    ('stop = "decided"\nstop_when_agree = 2', None, "vote.stop_when_agree",
     "below the quorum (3: vote.quorum is not set, so a majority of the 5 voters)"),
    ('stop = "decided"\nstop_when_agree = 3', "[[voters]]\ncount = 7\n", "vote.stop_when_agree",
     "raise it to at least the quorum (4) or set a lower vote.quorum"),
    ('quorum = 2\nstop = "decided"\nstop_when_agree = 1', THREE, "vote.stop_when_agree", "below the quorum (2)"),
    ('stop = "decided"\nstop_when_agree = 6', None, "vote.stop_when_agree", "between 1 and 5 (the panel), got 6"),
    ('stop = "decided"\nstop_when_agree = 4', THREE, "vote.stop_when_agree", "between 1 and 3 (the panel)"),
    ('stop = "decided"\nstop_when_agree = 0', None, "vote.stop_when_agree", "at least 1"),
    ("quorum = 1\nstop_when_agree = 3", None, "vote.stop_when_agree", 'needs stop = "decided"'),
    ('quorum = 1\nstop = "all"\nstop_when_agree = 3', None, "vote.stop_when_agree", 'needs stop = "decided"'),
    ("quorum = 6", None, "vote.quorum", "between 1 and 5 (the panel), got 6"),
    ("quorum = 4", THREE, "vote.quorum", "between 1 and 3 (the panel), got 4"),
    ("quorum = 0", None, "vote.quorum", "at least 1"),
    ("quorum = -2", None, "vote.quorum", "at least 1"),
    ("quorum = 2.5", None, "vote.quorum", "whole number"),
    ("low_agreement_below = 0", None, "vote.low_agreement_below", "above 0"),
    ("low_agreement_below = 0.0", None, "vote.low_agreement_below", "above 0"),
    ("low_agreement_below = -0.1", None, "vote.low_agreement_below", "between 0 and 1"),
    ("low_agreement_below = 1.01", None, "vote.low_agreement_below", "between 0 and 1"),
    ("low_agreement_below = nan", None, "vote.low_agreement_below", "between 0 and 1"),
    ('tie_policy = "random"', None, "vote.tie_policy", "use one of: none, first"),
    ('stop = "early"', None, "vote.stop", 'use "decided"'),
]


@pytest.mark.parametrize(("vote", "panel", "field", "words"), CONTRADICTIONS,
                         ids=[f"{c[2]}:{c[0]}" for c in CONTRADICTIONS])
def test_vote_rules_that_contradict_each_other_are_refused_naming_the_field(vote, panel, field, words):
    with pytest.raises(TaskFileError) as caught:
        parse(rules_file(vote, panel or "[[voters]]\ncount = 5\n"))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"t.toml: field `{field}`: ")
    assert words in str(caught.value)


SOUND = [
    # ([vote] lines, panel): each holds together
    ('quorum = 3\nstop = "decided"\nstop_when_agree = 3', None),
    ('quorum = 2\nstop = "decided"\nstop_when_agree = 2', None),
    ('stop = "decided"\nstop_when_agree = 3', None),  # the default quorum of 5 is 3
    ('stop = "decided"\nstop_when_agree = 5', None),
    ('quorum = 1\ntie_policy = "first"\nstop = "decided"\nstop_when_agree = 1', None),
    ('quorum = 2\ntie_policy = "none"\nstop = "decided"\nstop_when_agree = 2', THREE),  # README's example
    ('quorum = 5\nstop = "decided"', None),
    ('quorum = 3\nstop = "all"', THREE),
    ("quorum = 1", "[[voters]]\n"),
    ("low_agreement_below = 1", None),
    ("low_agreement_below = 1.0", None),
    ("low_agreement_below = 0.01", None),
    ('tie_policy = "first"\nlow_agreement_below = 0.5', None),
    ("", None),
]


@pytest.mark.parametrize(("vote", "panel"), SOUND, ids=[s[0] or "defaults" for s in SOUND])
def test_vote_rules_that_hold_together_are_accepted(vote, panel):
    task = parse(rules_file(vote, panel or "[[voters]]\ncount = 5\n"))
    assert isinstance(task, VoteTask)
    assert task_hash(task_from_json(task.to_json())) == task_hash(task)  # a run of it reads back


def test_python_task_objects_are_held_to_the_same_rules():
    labels = (Label("yes"), Label("no"))
    contradicting = VoteTask(name="t", labels=labels, voters=(VoterSpec(count=5),),
                             vote=VoteRules(quorum=3, stop="decided", stop_when_agree=2))
    with pytest.raises(TaskFileError, match="field `vote.stop_when_agree`: .*raise it to at least the quorum"):
        check_vote_task(contradicting)
    for rules, field in ((VoteRules(quorum=True), "vote.quorum"), (VoteRules(quorum=2.0), "vote.quorum"),  # type: ignore[arg-type]
                         (VoteRules(stop="decided", stop_when_agree=3.5), "vote.stop_when_agree"),  # type: ignore[arg-type]
                         (VoteRules(low_agreement_below="0.5"), "vote.low_agreement_below")):  # type: ignore[arg-type]
        with pytest.raises(TaskFileError) as caught:
            check_vote_task(VoteTask(name="t", labels=labels, vote=rules))
        assert caught.value.field == field


def test_a_run_stored_before_the_rules_still_reads_back():
    """A run's stored task is read by its workers: a rule added later must not break a run in flight;
    planning a new run from it (chorus.batch, chorus.schedule) checks it again in full."""
    stored = {"name": "old", "pattern": "vote", "labels": [{"name": "yes"}, {"name": "no"}],
              "voters": [{"count": 5}],
              "vote": {"quorum": 3, "stop": "decided", "stop_when_agree": 2, "low_agreement_below": 0.0}}
    task = task_from_json(stored)
    assert isinstance(task, VoteTask) and task.vote.stop_when_agree == 2
    with pytest.raises(TaskFileError, match="vote.low_agreement_below"):
        parse_task(stored)
    with pytest.raises(TaskFileError, match="vote.low_agreement_below"):
        with_vote_overrides(task)


ADAPTIVE_5 = rules_file('quorum = 2\nstop = "decided"\nstop_when_agree = 2')
UNSET_5 = rules_file('stop = "decided"\nstop_when_agree = 3')

OVERRIDES = [
    # (the task file, the options, the field, how the message starts after the options)
    (ADAPTIVE_5, {"quorum": 3}, "vote.stop_when_agree",
     "option quorum=3: field `vote.stop_when_agree`: stop_when_agree = 2 is below the quorum (3)"),
    (UNSET_5, {"voters": 7}, "vote.stop_when_agree",
     "option voters=7: field `vote.stop_when_agree`: stop_when_agree = 3 is below the quorum (4: vote.quorum is not "
     "set, so a majority of the 7 voters)"),
    (UNSET_5, {"voters": 2}, "vote.stop_when_agree",
     "option voters=2: field `vote.stop_when_agree`: must be between 1 and 2 (the panel), got 3"),
    (rules_file("quorum = 3"), {"voters": 2}, "vote.quorum",
     "option voters=2: field `vote.quorum`: quorum must be between 1 and 2 (the panel), got 3"),
    (ADAPTIVE_5, {"voters": 3, "quorum": 3}, "vote.stop_when_agree", "options voters=3, quorum=3: field"),
    (ADAPTIVE_5, {"quorum": 9}, "vote.quorum", "option quorum=9: field `vote.quorum`: quorum must be between 1 and 5"),
    (ADAPTIVE_5, {"quorum": 0}, "vote.quorum", "option quorum=0: field `vote.quorum`"),
    (ADAPTIVE_5, {"low_agreement_below": 0.0}, "vote.low_agreement_below", "option low_agreement_below=0.0: field"),
    (ADAPTIVE_5, {"low_agreement_below": 2}, "vote.low_agreement_below", "option low_agreement_below=2: field"),
    (ADAPTIVE_5, {"tie_policy": "coin"}, "vote.tie_policy", "option tie_policy='coin': field `vote.tie_policy`"),
]


@pytest.mark.parametrize(("text", "options", "field", "start"), OVERRIDES,
                         ids=[f"{o[2]}:{o[1]}" for o in OVERRIDES])
def test_options_that_make_the_task_contradict_itself_are_refused_naming_the_options(text, options, field, start):
    with pytest.raises(TaskFileError) as caught:
        with_vote_overrides(parse(text), **options)
    assert caught.value.field == field
    assert str(caught.value).startswith(start)


@pytest.mark.parametrize(("text", "options"), [
    (UNSET_5, {"voters": 4}),  # the default quorum of 4 is 3: stop_when_agree = 3 still meets it
    (UNSET_5, {"voters": 7, "quorum": 3}),
    (UNSET_5, {"voters": 7, "adaptive": False}),  # asking every voter drops stop_when_agree
    (ADAPTIVE_5, {"quorum": 1, "tie_policy": "first", "low_agreement_below": 1.0}),
    (ADAPTIVE_5, {"voters": 2}),
])
def test_options_that_keep_the_task_sound_are_accepted(text, options):
    assert isinstance(with_vote_overrides(parse(text), **options), VoteTask)


def test_a_contradiction_of_the_task_itself_is_named_as_the_tasks_not_the_options():
    task = VoteTask(name="t", labels=(Label("yes"), Label("no")), voters=(VoterSpec(count=5),),
                    vote=VoteRules(quorum=3, stop="decided", stop_when_agree=2))  # never checked
    with pytest.raises(TaskFileError) as caught:
        with_vote_overrides(task, voters=5, tie_policy="first")
    assert caught.value.options is None
    assert str(caught.value).startswith("field `vote.stop_when_agree`: stop_when_agree = 2 is below the quorum (3)")
