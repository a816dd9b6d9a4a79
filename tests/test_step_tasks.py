"""The step tasks (#14): shipped data equals what its script writes, and the programmatic teacher plugin answers
every question through the real generation loop with rationales that state the intermediate result."""

import filecmp
import json
import runpy
from pathlib import Path

import pytest

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.plugins import load_plugins
from rationale_distill.generation.prompts import load_prompt

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "rationale_distill" / "demo"


def test_the_shipped_step_tasks_are_what_the_script_writes(tmp_path):
    runpy.run_path(str(ROOT / "examples" / "make_step_tasks.py"), run_name="not_main")["main"](tmp_path)
    for name in ("twohop_train", "twohop_test", "arith_train", "arith_test"):
        assert filecmp.cmp(tmp_path / f"{name}.jsonl", DEMO / f"{name}.jsonl", shallow=False), name
    train = {json.loads(x)["question"] for x in (DEMO / "twohop_train.jsonl").read_text().splitlines()}
    test = {json.loads(x)["question"] for x in (DEMO / "twohop_test.jsonl").read_text().splitlines()}
    assert len(train) == 400 and len(test) == 100 and not train & test  # held out


@pytest.mark.parametrize("task,prompt", [("twohop", "twohop-cot"), ("arith", "arith-cot"), ("lookup", "lookup-cot")])
def test_the_programmatic_teacher_solves_every_question_and_states_the_intermediate_step(task, prompt, tmp_path):
    plugins = load_plugins(plugins_dirs=[str(ROOT / "plugins")])
    result = rd.generate(rd.GenerateConfig(data=str(DEMO / f"{task}_train.jsonl"), teachers=["step-teacher"], prompt=prompt,
                                           input_field="question", label_field="answer", id_field="id", limit=60,
                                           out=str(tmp_path / "t.jsonl")), plugins=plugins)  # fmt: skip
    rows = {json.loads(x)["id"]: json.loads(x) for x in (DEMO / f"{task}_train.jsonl").read_text().splitlines()}
    for record in result.records:
        sample = record.samples[0]
        assert sample.ok and sample.answer == record.label, sample.text
        question = rows[record.id]["question"]
        who, thing = question.rsplit(" is ", 1)[1].rstrip("?").split("'s ") if task == "lookup" else (None, None)
        reference = rows[record.id].get("reference_rationale") or f"{who} has a {record.label} {thing}."  # look-up: the clause
        assert sample.rationale.strip() == reference and (task != "lookup" or reference[:-1] in question)
    _, report = build(str(tmp_path / "t.jsonl"), BuildConfig(records=str(tmp_path / "t.jsonl"), out=str(tmp_path / "d"),
                                                             test_fraction=0, validation_fraction=0))  # fmt: skip
    assert report["examples_kept"] == 60


@pytest.mark.parametrize("prompt", ["twohop-cot", "arith-cot", "lookup-cot"])
def test_the_few_shot_demos_are_right_by_the_teachers_own_rules(prompt):
    import runpy as _runpy

    solve = _runpy.run_path(str(ROOT / "plugins" / "step_teacher.py"))["solve"]
    plugins = load_plugins()
    spec = load_prompt(plugins.prompts.get(prompt))
    assert spec.format == "text" and spec.stop and spec.params.get("max_tokens")
    for demo in spec.examples:
        assert solve(demo["input"]["input"]) == (demo["rationale"], str(demo["answer"]))
