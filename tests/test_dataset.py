"""The dataset builder, on teacher records made by the real generation stage over HTTP."""

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import random
import re

import pytest
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.errors import UsageError
from rationale_distill.generation.teachers import LiteLLMTeacher


def noisy_responder(body, i):
    """Right 3 times in 4, a parse failure now and then; rationales vary by sample."""
    text = body["messages"][-1]["content"]
    a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)", text)[-1])
    rng = random.Random(f"{a}-{b}-{body.get('seed')}-{i}")
    roll = rng.random()
    if roll < 0.1:
        return "Hmm, hard to say."
    answer = a + b if roll < 0.75 else a + b + 1
    style = ["Adding {a} and {b} gives {v}.", "{a} plus {b} equals {v}.", "First {a}, then add {b}: {v}."][(body.get("seed") or 0) % 3]
    return style.format(a=a, b=b, v=answer) + f" So the answer is {answer}."


@pytest.fixture
def records(make_server, tmp_path):
    s = make_server(responder=noisy_responder)
    data = write_problems(tmp_path / "p.jsonl", n=40, seed=5)
    out = tmp_path / "teacher.jsonl"
    rd.generate(rd.GenerateConfig(data=str(data), teachers=[LiteLLMTeacher("openai/fake", api_base=s.base_url, native_n=False)],
                                  input_field="question", label_field="answer", samples=4, out=str(out)))  # fmt: skip
    return out


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_rationale_mode_gold_yields_label_and_rationale_rows(records, tmp_path):
    ds, report = build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "d")))
    train = rows(tmp_path / "d" / "train.jsonl")
    by_id = {}
    for r in train:
        by_id.setdefault(r["id"], []).append(r)
    for group in by_id.values():
        assert [r["task"] for r in group] == ["label", "rationale"]
        label, rationale = group
        assert label["prompt"].startswith("[label] Q: What is") and rationale["prompt"].startswith("[rationale] Q: ")
        a, b = map(int, re.findall(r"(\d+) \+ (\d+)", label["prompt"])[0])
        assert label["completion"] == f" {a + b}"  # gold: only agreeing samples survive
        assert str(a + b) in rationale["completion"] and "So the answer is" not in rationale["completion"]
    assert set(ds.keys()) <= {"train", "validation", "test"} and ds["train"].column_names == ["id", "task", "input", "label", "prompt", "completion", "answer_votes", "teacher_messages", "teacher_format", "teacher_prefix"]
    assert report["filters"]["agrees"] > 0 and report["filters"]["parsed"] > 0


def test_rejects_file_names_filter_and_reason(records, tmp_path):
    build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "d")))
    rejects = rows(tmp_path / "d" / "rejects.jsonl")
    reasons = {r["filter"]: r["reason"] for r in rejects}
    assert reasons["parsed"].startswith("parse failure: no answer marker 'So the answer is' in the response")
    assert re.match(r"answer '\d+' disagrees with '\d+'", reasons["agrees"])
    assert all(r["text"] for r in rejects if r["filter"] in ("parsed", "agrees"))  # the raw text is kept
    card = (tmp_path / "d" / "README.md").read_text()
    assert "| dropped by parsed |" in card and "| dropped by agrees |" in card and "sha256" in card and "openai/fake" in card


def test_vote_label_source_and_min_agreement(records):
    _, loose = build(str(records), label_source="vote")
    _, strict = build(str(records), label_source="vote", min_agreement=0.9)
    assert strict["examples_kept"] < loose["examples_kept"]
    assert strict["filters"]["label-source"] > 0


def test_vote_can_differ_from_gold(make_server, tmp_path):
    s = make_server(responder=lambda body, i: "Off by one. So the answer is 1000.")
    data = write_problems(tmp_path / "p.jsonl", n=5)
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url,
                                           input_field="question", label_field="answer"))  # fmt: skip
    ds, _ = build(result.records, label_source="vote", test_fraction=0, validation_fraction=0)
    assert set(ds["train"].filter(lambda r: r["task"] == "label")["completion"]) == {" 1000"}
    with pytest.raises(UsageError, match="no usable samples"):
        build(result.records, label_source="gold")


def test_one_versus_all_rationales(records):
    _, one = build(str(records), rationales="one")
    _, every = build(str(records), rationales="all")
    assert every["rows_by_task"]["rationale"] > one["rows_by_task"]["rationale"] == one["examples_kept"]
    # One label row per example either way: more rationales must not weigh the same label several times.
    assert every["rows_by_task"]["label"] == one["rows_by_task"]["label"] == every["examples_kept"] + every["test"]["examples"]
    dataset, _ = build(str(records), rationales="all")
    ids = [r["id"] for split in dataset for r in dataset[split] if r["task"] == "label"]
    assert len(ids) == len(set(ids))
    _, labels = build(str(records), rationales="all", mode="label-only")
    assert labels["rows_by_task"]["label"] == labels["examples_kept"] + labels["test"]["examples"]


def test_dedup_exact_and_near(make_server, tmp_path):
    texts = ["We add 1 and 2 to get 3.", "we add 1 and  2 to get 3.", "We add 1 and 2 to get 3 !", "Count: one, two, three."]
    s = make_server(responder=lambda body, i: texts[body.get("seed", 0) % 4] + " So the answer is 3.")
    data = tmp_path / "p.jsonl"
    data.write_text('{"question": "What is 1 + 2?", "answer": 3}\n')
    teacher = LiteLLMTeacher("openai/fake", api_base=s.base_url, native_n=False)
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=[teacher], input_field="question", label_field="answer", samples=4))
    _, report = build(result.records, rationales="all", test_fraction=0, validation_fraction=0)
    assert report["filters"]["dedup"] == 2 and report["rows_by_task"]["rationale"] == 2


def test_rationale_length_filter(records):
    _, report = build(str(records), min_rationale_chars=20, rationales="all")
    assert report["filters"]["rationale-length"] > 0


def test_leak_filter_drops_rationales_copying_a_shown_answer(make_server, tmp_path):
    s = make_server(responder=lambda body, i: "The hint says 3, so 3. So the answer is 3.")
    data = tmp_path / "p.jsonl"
    data.write_text('{"question": "What is 1 + 2? (hint: 3)", "answer": 3}\n{"question": "What is 5 + 5?", "answer": 3}\n')
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url,
                                           input_field="question", label_field="answer"))  # fmt: skip
    _, report = build(result.records, filters=["parsed", "agrees", "leak"], test_fraction=0, validation_fraction=0)
    assert report["filters"]["leak"] == 1 and report["examples_kept"] == 1


def test_unknown_filter_and_mode_are_errors(records):
    with pytest.raises(rd.RdistillError, match="--filter 'nope': unknown filter"):
        build(str(records), filters=["nope"])
    with pytest.raises(UsageError, match="--mode 'fancy': unknown"):
        build(str(records), mode="fancy")


def test_context_mode_strips_every_engineered_part(make_server, tmp_path):
    s = make_server(responder=lambda body, i: "The customer wants money back for a double charge. So the answer is billing.")
    data = tmp_path / "msgs.jsonl"
    data.write_text("".join(json.dumps({"text": f"I was charged twice, order {i}", "queue": "billing"}) + "\n" for i in range(10)))
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url,
                                           prompt="support-triage", input_field="text", label_field="queue"))  # fmt: skip
    context_texts = [p.text for p in result.records[0].parts if p.part != "input"]
    for target in ("response", "answer"):
        ds, _ = build(result.records, mode="context", context_target=target, test_fraction=0, validation_fraction=0)
        for row in ds["train"]:
            assert row["prompt"].startswith("Message: I was charged twice")
            assert not any(chunk in row["prompt"] for chunk in context_texts)
            assert "triage assistant" not in row["prompt"] and "Routing mistakes" not in row["prompt"]
        completions = set(ds["train"]["completion"])
        assert completions == ({" The customer wants money back for a double charge. So the answer is billing."} if target == "response" else {" billing"})


def test_label_only_and_single_task_modes(records):
    ds, _ = build(str(records), mode="label-only")
    assert set(ds["train"]["task"]) == {"label"} and not ds["train"][0]["prompt"].startswith("[")
    ds, _ = build(str(records), mode="single-task")
    row = ds["train"][0]
    assert row["task"] == "single" and re.fullmatch(r" .+ So the answer is \d+\.", row["completion"])


def test_messages_format(records):
    ds, _ = build(str(records), format="messages")
    msgs = ds["train"][0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[0]["content"].startswith("[label] ")


def test_splits_never_separate_an_examples_rows(records, tmp_path):
    build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "d"), validation_fraction=0.25, test_fraction=0.25, rationales="all"))
    ids = {split: {r["id"] for r in rows(tmp_path / "d" / f"{split}.jsonl")} for split in ("train", "validation", "test")}
    assert all(ids.values())
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"]) and not (ids["validation"] & ids["test"])


def test_same_input_and_seed_give_byte_identical_output(records, tmp_path):
    for name in ("a", "b"):
        build(str(records), BuildConfig(records=str(records), out=str(tmp_path / name), seed=7))
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")

    def same(c):
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return not mismatch and not errors and not c.left_only and not c.right_only and all(same(s) for s in c.subdirs.values())

    assert same(cmp)
    build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "c"), seed=8))
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


def test_saved_dataset_loads_back(records, tmp_path):
    from datasets import load_from_disk

    build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "d")))
    ds = load_from_disk(str(tmp_path / "d" / "dataset"))
    assert len(ds["train"]) == len(rows(tmp_path / "d" / "train.jsonl"))


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "the file is empty"),
        ('{"question": "q"}\n', "teacher.jsonl:1: not a teacher record"),
        ("{oops\n", "teacher.jsonl:1: malformed JSON line"),
    ],
)
def test_bad_records_files_give_one_line_errors_and_write_nothing(tmp_path, cli, content, match):
    path = tmp_path / "teacher.jsonl"
    path.write_text(content)
    code, _, err = cli("build", path, "--out", tmp_path / "d")
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


def test_cli_build_and_failures_leave_previous_output_intact(records, tmp_path, cli):
    out = tmp_path / "d"
    code, stdout, _ = cli("build", records, "--out", out, "--mode", "rationale", "--label-source", "vote", "--min-agreement", "0.5")
    assert code == 0 and "Build summary" in stdout
    before = (out / "train.jsonl").read_bytes()
    code, _, err = cli("build", records, "--out", out, "--label-source", "vote", "--max-rationale-chars", "1")
    assert code == 2 and "no usable samples" in err and f"listed in {tmp_path / 'd.rejects.jsonl'}" in err
    rejects = [json.loads(x) for x in (tmp_path / "d.rejects.jsonl").read_text().splitlines()]
    assert rejects and any("max-rationale-chars" in r["filter"] or "rationale" in r["filter"] for r in rejects), rejects[:2]
    assert (out / "train.jsonl").read_bytes() == before
    code, _, err = cli("build", records, "--out", out, "--mode", "nope")
    assert code == 2 and "mode (--mode) = 'nope': choose one of" in err


def test_a_killed_build_leaves_nothing_behind_and_the_next_one_cleans_up(records, tmp_path, cli):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "rationale_distill.cli", "build", str(records), "--out", str(out)]
    for _ in range(20):  # kill -9 while the temporary folder is being written (retry if the build was too quick)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and not list(tmp_path.glob(".data.*.tmp")):
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and list(tmp_path.glob(".data.*.tmp")):
            break
        shutil.rmtree(out, ignore_errors=True)
    assert list(tmp_path.glob(".data.*.tmp")), "never caught the build while it wrote"
    assert not (out / "build.json").exists() or json.loads((out / "build.json").read_text())  # old or none, never half
    code, _, err = cli("build", records, "--out", out)
    assert code == 0, err
    leftovers = [p for p in tmp_path.glob(".data.*") if p.is_dir()]
    assert not leftovers, leftovers  # the dead build's folder is gone (the lock file stays: flock needs it)
    assert json.loads((out / "build.json").read_text())["examples"] == 40

    # Killed between the two renames: the old build waits as .data.PID.old and out is missing. The next build puts
    # the old one back first (so a crash of that build too leaves a complete dataset), then replaces it.
    dead = 4_999_999  # above any pid_max: no such process
    out.rename(tmp_path / f".data.{dead}.old")
    (tmp_path / f".data.{dead}.tmp").mkdir()
    from rationale_distill.data.dataset import clean_stale

    assert clean_stale(out) == [tmp_path / f".data.{dead}.tmp"]
    assert json.loads((out / "build.json").read_text())["examples"] == 40 and not [p for p in tmp_path.glob(".data.*") if p.is_dir()]


def test_two_builds_into_one_folder_do_not_interleave(records, tmp_path, cli):
    from rationale_distill.generation.store import exclusive

    out = tmp_path / "data"
    with exclusive(tmp_path / ".data.lock", "x", "y"):  # another build holds the folder
        code, _, err = cli("build", records, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"the dataset folder {out} is in use by rdistill (pid {os.getpid()})" in err
    assert not out.exists()


def test_the_test_split_is_held_out_from_the_inputs_before_any_filter(records, tmp_path):
    from rationale_distill.data.dataset import split_of
    from rationale_distill.records import read_records

    config = BuildConfig(records=str(records), out=str(tmp_path / "d"), test_fraction=0.3)
    dataset, report = build(str(records), config)
    recs = {r.id: r for r in read_records(records)}
    expected = {i for i, r in recs.items() if split_of(r, config) == "test"}
    test = list(dataset["test"])
    assert {row["id"] for row in test} == expected and report["test"]["examples"] == len(expected) > 5
    # Every held-out input is there, with the data's own label, whatever the teacher said (it is wrong on some).
    assert all(row["gold"] == recs[row["id"]].label and row["teacher"] == recs[row["id"]].majority for row in test)
    assert report["test"]["with gold"] == len(expected) and 0 < report["test"]["teacher right"] < len(expected)
    assert any(row["teacher"] != row["gold"] for row in test)
    # Nothing held out is trained on.
    trained = {recs[row["id"]].input for split in ("train", "validation") if split in dataset for row in dataset[split]}
    assert trained.isdisjoint({recs[i].input for i in expected})
    assert "held out from the inputs before any filter" in (tmp_path / "d" / "README.md").read_text()


def test_splits_follow_the_input_text_not_the_line(records, tmp_path):
    from rationale_distill.data.dataset import content_key, split_of
    from rationale_distill.records import read_records

    config = BuildConfig(records=str(records), test_fraction=0.3, validation_fraction=0.2)
    recs = read_records(records)
    before = {content_key(r): split_of(r, config) for r in recs}
    # A row inserted at the top shifts every line number and id; a copy of an input in other case and spacing is
    # the same example. Neither moves any input to another split.
    from dataclasses import replace

    shifted = [replace(r, id=f"row-{i + 2}") for i, r in enumerate(recs)]
    twin = replace(recs[0], id="twin", input="  " + recs[0].input.upper().replace(" ", "   "))
    assert {content_key(r): split_of(r, config) for r in shifted} == before
    assert split_of(twin, config) == split_of(recs[0], config)
    assert len(set(before.values())) == 3  # all three splits are used
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines + [lines[0], lines[1]]) + "\n")  # two inputs appear twice
    _, report = build(str(records), test_fraction=0.3)
    assert report["duplicate_inputs"] == 2
