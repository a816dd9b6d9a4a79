"""Every flag, YAML key and input row is checked by type and range before anything is sent or paid for: a bad one is
a one-line error naming the file, line or setting and the fix; with --skip-bad-rows bad rows are skipped and listed."""

import dataclasses
import json
import math
import typing

import pytest
from conftest import gen_args, tiny_prompt, write_problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rationale_distill.config import _base_type, build
from rationale_distill.data.dataset import BuildConfig
from rationale_distill.errors import BadRow, UsageError
from rationale_distill.evaluation.evaluate import EvalConfig
from rationale_distill.generation.generate import GenerateConfig, prepare_row
from rationale_distill.generation.prompts import PromptSpec
from rationale_distill.training import TrainConfig


def one_line_error(code, err):
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "args,match",
    [
        (["--max-retries", "-1"], "max_retries (--max-retries) = -1: must be >= 0"),
        (["--rpm", "-5"], "rpm (--rpm) = -5.0: must be > 0"),
        (["--tpm", "0"], "tpm (--tpm) = 0.0: must be > 0"),
        (["--limit", "-1"], "limit (--limit) = -1: must be >= 1"),
        (["--samples", "0"], "samples (--samples) = 0: must be >= 1"),
        (["--concurrency", "0"], "concurrency (--concurrency) = 0: must be >= 1"),
        (["--temperature", "-0.5"], "temperature (--temperature) = -0.5: must be >= 0"),
        (["--timeout", "nan"], "timeout (--timeout) = nan: expected a finite number"),
        (["--answer-type", "numbr"], "answer_type (--answer-type) = 'numbr': choose one of text, number, choice"),
        (["--max-tokens", "0"], "max_tokens (--max-tokens) = 0: must be >= 1"),
    ],
)  # fmt: skip
def test_flags_out_of_range_are_refused_before_any_call(server, problems, tmp_path, cli, args, match):
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(server, problems, out), *args)
    one_line_error(code, err)
    assert match in err
    assert not out.exists() and len(server.requests) == 0


def test_yaml_values_are_converted_or_refused_with_the_file_named(server, problems, tmp_path, cli):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("samples: three\n")
    code, _, err = cli(*gen_args(server, problems, tmp_path / "o.jsonl"), "--config", cfg)
    one_line_error(code, err)
    assert f"{cfg}: samples (--samples) = 'three': expected a whole number" in err
    assert len(server.requests) == 0
    # A flag given on top of the file is blamed on the command line, not on the file.
    cfg.write_text("samples: 2\n")
    code, _, err = cli(*gen_args(server, problems, tmp_path / "o.jsonl"), "--config", cfg, "--workers", "0")
    one_line_error(code, err)
    assert "command line: workers (--workers) = 0: must be >= 1" in err


def test_yaml_strings_take_their_type():
    # YAML 1.1 reads `1e-3` as a string and a quoted "no" is a string: both mean what the author meant.
    c = build(TrainConfig, {"data": "d", "learning_rate": "1e-3", "lora": "no", "epochs": "2"}, "run.yaml: train")
    assert c.learning_rate == 0.001 and c.lora is False and c.epochs == 2.0
    assert build(GenerateConfig, {"data": "x", "teacher": "openai/m"}, "g.yaml").teachers == ["openai/m"]
    for values, match in [
        ({"lora": "maybe"}, "lora (--lora) = 'maybe': expected true or false"),
        ({"batch_size": True}, "batch_size (--batch-size) = True: expected a number, not true"),
        ({"batch_size": 2.5}, "expected a whole number"),
        ({"device": "gpu"}, "device (--device) = 'gpu': expected auto, cpu, cuda or cuda:N"),
        ({"learning_rate": "fast"}, "expected a number (or null)"),
        ({"save_strategy": "often"}, "choose one of epoch, steps, no"),
        ({"lora_dropout": 1.5}, "must be < 1"),
    ]:
        with pytest.raises(UsageError, match=match.replace("(", r"\(").replace(")", r"\)")):
            build(TrainConfig, {"data": "d", **values}, "run.yaml: train")


def test_run_file_is_checked_whole_before_generate_spends(server, problems, tmp_path, cli):
    run = tmp_path / "run.yaml"
    run.write_text(
        f"out: {tmp_path / 'run'}\ndata: {problems}\n"
        f"generate: {{teachers: [openai/fake], api_base: '{server.base_url}', input_field: question, label_field: answer}}\n"
        "train: {max_steps: 1}\neval: {batch_sise: 4}\n"
    )
    code, _, err = cli("run", run)
    one_line_error(code, err)
    assert f"{run}: eval: unknown setting 'batch_sise'" in err
    assert len(server.requests) == 0  # nothing was paid for before the typo was found
    run.write_text(run.read_text().replace("eval: {batch_sise: 4}", "compare: {teacher: perhaps}"))
    code, _, err = cli("run", run)
    one_line_error(code, err)
    assert "compare: teacher = 'perhaps': expected true or false" in err and len(server.requests) == 0
    run.write_text(run.read_text().replace("compare: {teacher: perhaps}", "train: [1, 2]"))
    code, _, err = cli("run", run)
    one_line_error(code, err)
    assert "section 'train' must be a mapping" in err


# --- rows ------------------------------------------------------------------------------------------------------


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD = [
    ({"question": None, "answer": 1}, "field 'question' is null"),
    ({"question": ["What is", "1 + 1?"], "answer": 2}, "field 'question' is a list"),
    ({"question": {"text": "1 + 1"}, "answer": 2}, "field 'question' is a dict"),
    (["What is 1 + 1?", 2], "expected an object with named fields, got list"),
    ({"q": "What is 1 + 1?", "answer": 2}, "--input-field 'question' is not in the row"),
]


@pytest.mark.parametrize("row,match", BAD)
def test_a_bad_row_stops_the_run_unsent_with_file_and_line(server, tmp_path, cli, row, match):
    data = write_rows(tmp_path / "rows.jsonl", [{"question": "What is 2 + 2?", "answer": 4}, row])
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)))
    one_line_error(code, err)
    assert f"rows.jsonl:2: {match}" in err and "--skip-bad-rows" in err
    assert len(server.requests) == 0 and not out.exists()


def test_skip_bad_rows_sends_only_good_ones_and_lists_the_rest(server, tmp_path, cli):
    good = [{"question": f"What is {i} + 1?", "answer": i + 1} for i in range(3)]
    data = write_rows(tmp_path / "rows.jsonl", [good[0], *(r for r, _ in BAD), good[1], good[2]])
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)), "--skip-bad-rows")
    assert code == 0, err
    assert len(server.requests) == 3
    sent = [m["content"] for r in server.requests for m in r["messages"]]
    assert not any("None" in s or "[" in s or "{" in s for s in sent), sent
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["row-1", "row-7", "row-8"]
    listed = [json.loads(x) for x in (tmp_path / "t.skipped.jsonl").read_text().splitlines()]
    assert [x["where"].rsplit(":", 1)[1] for x in listed] == ["2", "3", "4", "5", "6"]
    assert [m in x["reason"] for x, (_, m) in zip(listed, BAD)] == [True] * len(BAD)
    assert "5 bad rows skipped (--skip-bad-rows)" in stdout and "t.skipped.jsonl" in stdout
    # A later run with nothing skipped removes the stale list.
    write_rows(data, good)
    code, _, _ = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)), "--skip-bad-rows")
    assert code == 0 and not (tmp_path / "t.skipped.jsonl").exists()


def test_a_prompt_too_big_for_the_model_is_refused_unsent(server, tmp_path, cli):
    huge = "word " * 200_000  # 1 MB: about 330k tokens, over the 131072 assumed for a model LiteLLM does not know
    data = write_rows(tmp_path / "rows.jsonl", [{"question": "What is 1 + 1?", "answer": 2}, {"question": huge, "answer": 3}])
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)))
    one_line_error(code, err)
    assert "rows.jsonl:2: the prompt is about 333," in err and "over the 131,072 the model accepts" in err
    assert len(server.requests) == 0
    code, _, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)), "--max-prompt-tokens", "5")
    assert code == 2 and "rows.jsonl:1: the prompt is about" in err and "over the 5 the model" in err
    code, _, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)), "--skip-bad-rows")
    assert code == 0 and len(server.requests) == 1
    assert out.stat().st_size < 10_000  # the huge row is not written as a record either


def test_a_row_field_placeholder_in_system_is_refused(server, problems, tmp_path, cli):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\nsystem: 'You check the sum in {question}.'\ntemplate: 'Q: {question}'\n"
                      "instructions: 'Reply with a number like {{answer}}, or JSON {\"answer\": 1}.'\n")  # fmt: skip
    code, _, err = cli(*gen_args(server, problems, tmp_path / "t.jsonl", "--prompt", prompt))
    one_line_error(code, err)
    assert f"{prompt}: system contains {{question}}, a field of the rows" in err and len(server.requests) == 0
    # Literal braces and names that are not row fields stay as written.
    prompt.write_text(prompt.read_text().replace("{question}.'", "the question.'"))
    code, _, err = cli(*gen_args(server, problems, tmp_path / "t.jsonl", "--prompt", prompt))
    assert code == 0, err
    assert 'Reply with a number like {{answer}}, or JSON {"answer": 1}.' in server.requests[0]["messages"][0]["content"]


def test_duplicate_ids_are_reported(server, tmp_path, cli):
    rows = [{"id": i % 3, "question": f"What is {i} + 1?", "answer": i + 1} for i in range(5)]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    code, stdout, err = cli(*gen_args(server, data, tmp_path / "t.jsonl", "--prompt", tiny_prompt(tmp_path)), "--id-field", "id")
    assert code == 0, err
    assert "2 duplicate ids (first: '0' at" in stdout and "rows.jsonl:1 and" in stdout and "rows.jsonl:4" in stdout


# --- property: random settings and rows give a valid config or one line, never a traceback ---------------------

CONFIGS = [GenerateConfig, TrainConfig, BuildConfig, EvalConfig]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1e-3", "-1", "0", "no", "yes", "3", "2.5", "nan", "auto", "cpu", "one"]),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


def holds(f, hint, value) -> bool:
    """Does an accepted value have the field's type and lie in its range?"""
    tp, is_list = _base_type(hint)
    if value is None:
        return type(None) in typing.get_args(hint)
    items = value if is_list else [value]
    if is_list and not isinstance(value, list):
        return False
    m = f.metadata
    for v in items:
        if tp is float and not (isinstance(v, float) and math.isfinite(v)):
            return False
        if tp is not float and type(v) is not tp:
            return False
        for key, ok in (("ge", lambda a, b: a >= b), ("gt", lambda a, b: a > b), ("le", lambda a, b: a <= b), ("lt", lambda a, b: a < b)):
            if m.get(key) is not None and not ok(v, m[key]):
                return False
        if m.get("choices") and v not in m["choices"]:
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_property_any_settings_give_a_valid_config_or_one_line(cls, data):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    required = {n: "x" for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    chosen = data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True))
    values = {**required, **{n: data.draw(VALUES, label=n) for n in chosen}}
    try:
        config = build(cls, values, "run.yaml")
    except UsageError as exc:
        message = str(exc)
        assert message.startswith("run.yaml: ") and "\n" not in message
        return
    for name in values:
        assert holds(fields[name], hints[name], getattr(config, name)), (name, values[name], getattr(config, name))


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                          max_leaves=5))  # fmt: skip
def test_property_any_row_value_renders_faithfully_or_is_a_bad_row(value):
    spec = PromptSpec(name="p", template="Q: {question}")
    config = GenerateConfig(data="rows.jsonl", input_field="question")
    try:
        ex = prepare_row(spec, config, "rows.jsonl:7", {"question": value})
    except BadRow as exc:
        assert str(exc).startswith("rows.jsonl:7: ") and "\n" not in str(exc)
        assert value is None or isinstance(value, (list, dict))
        return
    assert isinstance(value, (str, int, float, bool))
    assert ex.messages[-1]["content"] == f"Q: {value}"


def test_problems_helper_rows_stay_valid(tmp_path):
    # The shared fixture rows must pass validation, or every other test here proves nothing.
    data = write_problems(tmp_path / "p.jsonl", n=3)
    config = GenerateConfig(data=str(data), input_field="question", label_field="answer")
    for i, line in enumerate(data.read_text().splitlines(), 1):
        prepare_row(PromptSpec(name="p", template="Q: {input}", answer_type="number"), config, f"p.jsonl:{i}", json.loads(line))
