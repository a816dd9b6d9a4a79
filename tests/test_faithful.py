"""Faithful rationales: right answer, wrong reason is dropped. The grounded filter checks a rationale against its input;
the judge filter asks a teacher (over HTTP, cached and costed like any call)."""

import json
import re

import pytest

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.errors import UsageError
from rationale_distill.data.filters import _question_entities

QUESTIONS = [
    ("Ben has a green cup, Zoe has a white bike, Sam has a pink hat. What color is Zoe's bike?", "white"),
    ("Eva has a black kite, Leo has a yellow pen, Ivy has a black bag. What color is Eva's kite?", "black"),
    ("Max has a brown shoe, Lily has a blue ball, Noah has a green book. What color is Lily's ball?", "blue"),
    ("Mia has a red hat, Tom has a red cup, Ada has a grey box. What color is Mia's hat?", "red"),
]


def lookup_responder(body, i):
    """Right answers; for Eva and Mia the rationale quotes the wrong person (who happens to share the colour)."""
    q = body["messages"][-1]["content"]
    person = re.findall(r"What color is (\w+)'s", q)[-1]
    clauses = dict(re.findall(r"(\w+) has a (\w+ \w+)", q))
    wrong = {"Eva": "Ivy", "Mia": "Tom"}.get(person)
    who = wrong or person
    colour = clauses[person].split()[0]
    return f"{who} has a {clauses[who]}. So the answer is {colour}."


@pytest.fixture
def lookup_records(make_server, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    s = make_server(responder=lookup_responder)
    out = tmp_path / "t.jsonl"
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url, input_field="question",
                                  label_field="answer", prompt="zero-shot-cot", out=str(out), cache_dir=str(tmp_path / "c")))  # fmt: skip
    return out


def test_question_entities():
    assert _question_entities(QUESTIONS[1][0]) == ["Eva"]
    assert _question_entities("How many apples are left?") == []


def test_grounded_drops_right_answer_wrong_reason_and_says_why(lookup_records, tmp_path):
    ds, report = build(str(lookup_records), BuildConfig(records=str(lookup_records), out=str(tmp_path / "d"), test_fraction=0, validation_fraction=0,
                                                        filters=["parsed", "agrees", "grounded"]))  # fmt: skip
    assert report["filters"]["grounded"] == 2 and report["examples_kept"] == 2
    rejects = [json.loads(x) for x in (tmp_path / "d" / "rejects.jsonl").read_text().splitlines()]
    reasons = sorted(r["reason"] for r in rejects if r["filter"] == "grounded")
    assert reasons == ["the rationale does not mention Eva, whom the question asks about",
                       "the rationale does not mention Mia, whom the question asks about"]
    assert "| dropped by grounded | 2 |" in (tmp_path / "d" / "README.md").read_text()
    _, plain = build(str(lookup_records), BuildConfig(records=str(lookup_records), test_fraction=0, validation_fraction=0))
    assert plain["examples_kept"] == 4  # the answer-only filters keep all four


def test_grounded_drops_a_sentence_of_facts_not_in_the_input():
    from rationale_distill.data.filters import Candidate, Context, grounded
    from rationale_distill.records import Sample, TeacherRecord

    record = TeacherRecord(id="1", row={}, input=QUESTIONS[0][0], label="white", prompt={}, messages=[], parts=[])
    check = grounded(grounding=0.5)

    def verdict(rationale):
        return check(Candidate(record, Sample(teacher="t", index=0, text="", rationale=rationale, raw_answer="white")), Context(target="white"))

    assert verdict("Zoe has a white bike.") is None
    assert "is in the input" in verdict("Zoe rides her white bike to the lake every summer with friends.")
    assert verdict("") == "no rationale to ground"


def judge_responder(body, i):
    """yes when the rationale names the person the question asks about, no otherwise."""
    user = body["messages"][-1]["content"]
    person = re.findall(r"What color is (\w+)'s", user)[-1]
    rationale = re.findall(r"Rationale: (.*)", user)[0]
    return "Yes." if person in rationale else "No, it is about someone else."


def test_judge_asks_a_teacher_caches_and_counts(lookup_records, make_server, tmp_path):
    judge = make_server(responder=judge_responder)
    config = BuildConfig(records=str(lookup_records), out=str(tmp_path / "d"), test_fraction=0, validation_fraction=0,
                         filters=["parsed", "agrees", "judge"], judge="openai/judge", judge_api_base=judge.base_url,
                         cache_dir=str(tmp_path / "jc"))  # fmt: skip
    _, report = build(str(lookup_records), config)
    assert report["filters"]["judge"] == 2 and report["examples_kept"] == 2
    details = report["filter_details"]["judge"]
    assert details["asked"] == 4 and details["made"] == 4 and details["verdicts"] == {"yes": 2, "no": 2, "unclear": 0, "failed": 0}
    assert all("Rationale:" in b["messages"][-1]["content"] and b["temperature"] == 0.0 for b in judge.requests)
    card = (tmp_path / "d" / "README.md").read_text()
    assert "| dropped by judge | 2 |" in card and "Filter `judge`" in card
    _, again = build(str(lookup_records), config)
    assert len(judge.requests) == 4 and again["filter_details"]["judge"]["cached"] == 4  # a re-build pays nothing
    with pytest.raises(UsageError, match="--filter judge needs --judge MODEL"):
        build(str(lookup_records), BuildConfig(records=str(lookup_records), filters=["judge"]))


def test_cli_build_with_faithfulness_filters(lookup_records, make_server, tmp_path, cli):
    judge = make_server(responder=judge_responder)
    code, stdout, err = cli("build", lookup_records, "--out", tmp_path / "d", "--filter", "parsed", "--filter", "agrees", "--filter", "grounded",
                            "--filter", "judge", "--judge", "openai/judge", "--judge-api-base", judge.base_url, "--cache-dir", tmp_path / "jc",
                            "--test-fraction", "0", "--validation-fraction", "0")  # fmt: skip
    assert code == 0, err
    assert "dropped by grounded" in stdout and "filter judge" in stdout and "verdicts: yes 2, no 0" in stdout
    assert len(judge.requests) == 2  # grounded dropped two first: the judge is asked only about what it would decide
