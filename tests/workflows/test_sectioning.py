from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.sectioning import (
    Part,
    Section,
    Split,
    covered_sections,
    describe_missing,
    headings,
    leaf_order,
    plan_level,
    plan_tree,
    section_request,
    split,
    split_tokens,
    synthesis_request,
)

MARKDOWN = "intro line\n\n# One\nalpha\n\n## Two\nbeta\n```\n# not a heading\n```\n# Three\ngamma\n"
MAN = "NAME\n       bash - GNU Bourne-Again SHell\n\nSYNOPSIS\n       bash [options]\n\nSEE ALSO\n       sh(1)\n"
ROFF = '.TH BASH 1\n.SH NAME\nbash \\- shell\n.SH "SEE ALSO"\nsh(1)\n'


def assert_covers(text: str, sections: list[Section], overlap_chars: int = 0) -> None:
    """Sections start at 0, end at len(text), keep order, and skip nothing; consecutive sections
    overlap by at most `overlap_chars`."""
    assert sections[0].start == 0 and sections[-1].end == len(text)
    for i, (a, b) in enumerate(zip(sections, sections[1:], strict=False)):
        assert a.index == i and b.index == i + 1
        assert a.start < b.start <= a.end <= b.end
        assert a.end - b.start <= overlap_chars
    rebuilt = "".join(s.text(text)[max(0, (sections[i - 1].end if i else 0) - s.start):]
                      for i, s in enumerate(sections))
    assert rebuilt == text


@pytest.mark.parametrize(
    ("text", "titles"),
    [
        (MARKDOWN, ["(preamble)", "One", "Two", "Three"]),
        (MAN, ["NAME", "SYNOPSIS", "SEE ALSO"]),
        (ROFF, ["(preamble)", "NAME", "SEE ALSO"]),
        ("\n\n# A\nx\n# B\ny", ["A", "B"]),  # leading blank lines join the first section
    ],
)
def test_headings_split_markdown_man_pages_and_roff_into_titled_sections(text, titles):
    sections = split(text, Split.HEADINGS)
    assert [s.title for s in sections] == titles
    assert_covers(text, sections)


def test_a_fenced_code_line_that_looks_like_a_heading_is_not_one():
    assert "not a heading" not in [t for _, t in headings(MARKDOWN)]


def test_paragraphs_are_packed_up_to_the_token_budget():
    text = "\n\n".join(f"paragraph {i} " + "word " * 10 for i in range(6))  # ~60 chars each
    sections = split(text, Split.PARAGRAPHS, max_tokens=40)  # 160 chars: two paragraphs each
    assert len(sections) == 3
    assert [s.title.split()[:2] for s in sections] == [["paragraph", "0"], ["paragraph", "2"], ["paragraph", "4"]]
    assert_covers(text, sections)


@pytest.mark.parametrize("how", [Split.AUTO, Split.HEADINGS, Split.PARAGRAPHS])
def test_text_without_structure_falls_back_to_the_token_budget(how):
    text = "word " * 1000  # 5000 chars, no heading, no blank line
    sections = split(text, how, max_tokens=250)
    assert len(sections) == 5
    assert_covers(text, sections)


def test_auto_prefers_headings_then_paragraphs():
    assert [s.title for s in split(MAN)] == ["NAME", "SYNOPSIS", "SEE ALSO"]
    assert [s.title for s in split("first para\n\nsecond para", max_tokens=4)] == ["first para", "second para"]


def test_a_heading_section_over_the_budget_is_cut_and_keeps_its_title_with_part_numbers():
    text = "# Small\nx\n# Big\n" + "long line of text\n" * 100
    sections = split(text, Split.HEADINGS, max_tokens=200)
    assert sections[0].title == "Small"
    assert [s.title for s in sections[1:]] == ["Big (1/3)", "Big (2/3)", "Big (3/3)"]
    assert_covers(text, sections)


def test_token_windows_break_at_a_line_end_when_one_is_near():
    text = "aaaa bbbb\n" * 40
    for a, b, _ in split_tokens(text, 20):
        assert text[a:b].endswith("\n")


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_a_bad_token_budget_or_overlap_is_refused(max_tokens, overlap):
    with pytest.raises(ValueError):
        split_tokens("text", max_tokens, overlap)


def test_empty_text_has_no_sections():
    assert split("") == []


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab #\n.ABC\t")), min_size=1, max_size=600),
       how=st.sampled_from(list(Split)), max_tokens=st.integers(1, 60))
def test_any_text_splits_without_losing_or_duplicating_characters(text, how, max_tokens):
    assert_covers(text, split(text, how, max_tokens=max_tokens))


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=800), max_tokens=st.integers(2, 50), data=st.data())
def test_token_overlap_repeats_at_most_the_overlap_and_skips_nothing(text, max_tokens, data):
    overlap = data.draw(st.integers(0, max_tokens - 1))
    sections = split(text, Split.TOKENS, max_tokens=max_tokens, overlap_tokens=overlap)
    assert_covers(text, sections, overlap_chars=overlap * 4)
    assert all(s.end - s.start <= max_tokens * 4 for s in sections)


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [([3], "section 3 missing"), ([3, 7], "sections 3 and 7 missing"), ([1, 4, 9], "sections 1, 4 and 9 missing")],
)
def test_missing_sections_are_named(numbers, expected):
    assert describe_missing(numbers) == expected


@pytest.mark.parametrize(
    ("sizes", "budget", "groups"),
    [
        ([10, 10, 10], 30, None),  # everything fits one final synthesis
        ([50], 10, None),  # one item: nothing to combine
        ([40, 40], 30, None),  # a single group of partials would only repeat the final synthesis
        ([10, 10, 10, 10], 25, [[0, 1], [2, 3]]),
        ([10, 10, 10, 10, 10], 25, [[0, 1], [2, 3], [4]]),  # the lone last item is carried up
        ([40, 40, 5], 30, [[0, 1], [2]]),  # an item over budget still pairs, so the level shrinks
        ([5, 5, 5, 20], 16, [[0, 1, 2], [3]]),
    ],
)
def test_a_level_groups_consecutive_items_within_the_budget(sizes, budget, groups):
    assert plan_level(sizes, budget) == groups


def test_the_tree_reduces_level_by_level_to_one_final_synthesis():
    levels = plan_tree([100] * 10, budget=300, output_tokens=100)
    assert levels == [
        [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]],
        [[0, 1, 2], [3]],
        [[0, 1]],
    ]


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 500), min_size=1, max_size=80), budget=st.integers(1, 2000),
       out=st.integers(1, 400))
def test_the_tree_presents_every_section_once_in_document_order(sizes, budget, out):
    levels = plan_tree(sizes, budget, out)
    assert len(levels[-1]) == 1
    assert leaf_order(levels) == list(range(len(sizes)))
    for prev, groups in zip(levels, levels[1:], strict=False):
        assert len(groups) < len(prev)  # the groups of a level are the items of the next: it shrinks


def test_a_section_request_carries_its_task_number_title_and_only_its_own_text():
    doc = "# A\nalpha text\n# B\nbeta text\n"
    sections = split(doc)
    request = section_request("m", "summarize", sections[1], doc, len(sections), tags=(("run", "r"),))
    assert "section 2 of 2" in request.user_text and "'B'" in request.user_text
    assert "beta text" in request.user_text and "alpha text" not in request.user_text
    assert request.tags == (("run", "r"),)


def test_a_synthesis_request_lists_the_parts_in_order_and_names_the_missing_ones():
    parts = [Part("section 1: A", "first"), Part("section 3: C", "third")]
    request = synthesis_request("m", "summarize", parts, missing=[2])
    text = request.user_text
    assert text.index("first") < text.index("third")
    assert "section 2 missing" in text


@pytest.mark.parametrize(
    ("items", "succeeded", "covered"),
    [
        ([6], {0, 1, 2, 3, 4, 5, 6}, [0, 1, 2, 3]),  # final (6) <- partials 4 (0,1) and 5 (2,3)
        ([6], {0, 1, 3, 4, 5, 6}, [0, 1, 3]),  # section 2 failed
        ([6], {0, 1, 2, 3, 5, 6}, [2, 3]),  # partial 4 failed: sections 0 and 1 are lost with it
        ([6], {0, 1, 2, 3, 4, 5}, []),  # the final step failed
    ],
)
def test_only_sections_reached_through_succeeded_steps_count_as_covered(items, succeeded, covered):
    inputs_of = {4: [0, 1], 5: [2, 3], 6: [4, 5]}
    assert covered_sections(items, inputs_of, succeeded) == covered
