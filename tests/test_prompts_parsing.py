import pytest

from rationale_distill.errors import UsageError
from rationale_distill.generation.parsing import ParseFailure, answer_marker, json_object, normalize
from rationale_distill.plugins import load_plugins
from rationale_distill.generation.prompts import load_prompt, resolve_prompt, strip_context


@pytest.mark.parametrize("name", ["few-shot-cot", "zero-shot-cot", "support-triage"])
def test_shipped_prompts_load_and_render_marked_parts(name):
    spec = resolve_prompt(load_plugins(), name)
    messages, parts = spec.render({"input": "What is 2 + 2?"})
    assert parts[-1].part == "input" and parts[-1].text.endswith("What is 2 + 2?")
    # The messages are exactly the parts, grouped: nothing is sent that is not marked.
    assert sum(len(m["content"]) for m in messages) == sum(len(p.text) for p in parts) + 2 * (len(parts) - len(messages))
    assert strip_context(parts) == parts[-1].text


def test_engineered_prompt_is_heavy():
    spec = resolve_prompt(load_plugins(), "support-triage")
    _, parts = spec.render({"input": "x"})
    context = sum(len(p.text) for p in parts if p.part != "input")
    assert context > 2000 and {p.part for p in parts} == {"system", "instructions", "demos", "input"}


def test_text_format_for_base_models_is_one_plain_prompt():
    spec = load_prompt({"name": "t", "format": "text", "template": "Q: {input}\nA:", "stop": "\nQ:",
                        "examples": [{"input": {"input": "1+1"}, "rationale": "1 and 1 make 2.", "answer": 2}]})  # fmt: skip
    messages, parts = spec.render({"input": "2+2"})
    assert messages == [{"role": "user", "content": "Q: 1+1\nA: 1 and 1 make 2. So the answer is 2.\n\nQ: 2+2\nA:"}]
    assert [p.part for p in parts] == ["demos", "input"] and spec.stop == ["\nQ:"]


def test_missing_field_names_the_row_and_the_field():
    spec = load_prompt({"name": "t", "template": "{question} ({context})"})
    with pytest.raises(UsageError, match=r"data.jsonl:7: missing field 'context' needed by prompt 't'"):
        spec.render({"question": "q"}, "data.jsonl:7")


@pytest.mark.parametrize(
    "text,match",
    [
        ("name: x\ntemplate: [unclosed\n", r"p.yaml:\d+: invalid YAML"),
        ("name: x\n", "missing required field 'template'"),
        ("name: x\ntemplate: '{input}'\ntemplat: y\n", "unknown field 'templat'"),
        ("name: x\ntemplate: '{input}'\nexamples: [{input: a, answer: b}]\n", r"examples\[0\] is missing 'rationale'"),
        ("name: x\ntemplate: '{input}'\nanswer_type: float\n", "answer_type must be one of"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_bad_prompt_files_give_one_line_errors(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match) as exc:
        load_prompt(path)
    assert "\n" not in str(exc.value)


def test_prompt_hash_follows_the_file_content(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\ntemplate: '{input}'\n")
    first = load_prompt(path).sha256
    path.write_text("name: x\ntemplate: 'Q: {input}'\n")
    assert load_prompt(path).sha256 != first


@pytest.mark.parametrize(
    "raw,kind,expected",
    [
        ("1,000.", "number", "1000"), ("$12", "number", "12"), ("3.50", "number", "3.5"), ("-4.0", "number", "-4"),
        ("about 7 apples", "number", "7"), ("(b)", "choice", "B"), ("C) red", "choice", "C"),
        ("  Billing. ", "text", "billing"), ('"Yes"', "text", "yes"),
    ],
)  # fmt: skip
def test_normalize(raw, kind, expected):
    assert normalize(raw, kind) == expected


def test_normalize_failures_have_reasons():
    with pytest.raises(ParseFailure, match="is not a number"):
        normalize("many", "number")
    with pytest.raises(ParseFailure, match="is not one of the options"):
        normalize("??", "choice")


def test_answer_marker_takes_the_last_marker():
    spec = load_prompt({"name": "t", "template": "{input}"})
    parsed = answer_marker("First, so the answer is 3? No. So the answer is **4**.\nThanks", spec)
    assert parsed.raw_answer == "4" and parsed.rationale == "First, so the answer is 3? No."
    with pytest.raises(ParseFailure, match="nothing after the answer marker"):
        answer_marker("So the answer is", spec)


def test_json_parser():
    parsed = json_object('```json\n{"rationale": "r", "answer": 5}\n```', None)
    assert (parsed.rationale, parsed.raw_answer) == ("r", "5")
    with pytest.raises(ParseFailure, match="invalid JSON"):
        json_object("{'answer': 5}", None)
    with pytest.raises(ParseFailure, match="no 'answer' field"):
        json_object('{"rationale": "r"}', None)
