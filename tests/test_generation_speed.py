"""What makes re-runs and dry runs fast (issue #19), each checked by behaviour, not by a clock:
a run answered wholly from the cache never imports LiteLLM (2-4 s of every start here), and a dry run counts at
most EXACT_COUNTS prompts per teacher with the tokenizer, scaling the rest by length."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import gen_args, tiny_prompt, write_problems

from rationale_distill.generation.teachers import Teacher

generate_module = importlib.import_module("rationale_distill.generation.generate")  # the package's `generate` is the function

REPLAY = """
import json, sys
from rationale_distill.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "litellm": "litellm" in sys.modules}))
"""


def replay(args, cache_dir):
    env = {**os.environ, "RDISTILL_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", REPLAY, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def test_a_rerun_answered_from_the_cache_never_imports_litellm_and_writes_the_same_records(server, problems, tmp_path, cli, cache_dir):
    out = tmp_path / "t.jsonl"
    args = gen_args(server, problems, out, "--prompt", tiny_prompt(tmp_path), "--samples", "2")
    assert cli(*args)[0] == 0
    first = out.read_text()
    sent = len(server.requests)

    result, proc = replay(args, cache_dir)
    assert result == {"code": 0, "litellm": False}, proc.stderr[-2000:]
    assert len(server.requests) == sent  # nothing sent
    uncached = lambda text: [{**r, "samples": [{**s, "cached": None} for s in r["samples"]]} for r in map(json.loads, text.splitlines())]  # noqa: E731
    assert uncached(out.read_text()) == uncached(first)

    # One new input: now something is to be sent, and the teachers are asked (LiteLLM imported) as before.
    write_problems(problems, n=13)
    result, proc = replay(args, cache_dir)
    assert result == {"code": 0, "litellm": True}, proc.stderr[-2000:]
    assert len(server.requests) == sent + 1


def test_a_rerun_with_something_to_send_still_refuses_rows_over_the_models_window(server, tmp_path, cli):
    """The window check moved after the cache lookup; a row over it is still refused unsent when anything is sent."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": 2}) + "\n")
    out = tmp_path / "t.jsonl"
    assert cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)))[0] == 0
    with data.open("a") as fh:
        fh.write(json.dumps({"question": "word " * 200_000, "answer": 3}) + "\n")
    code, _, err = cli(*gen_args(server, data, out, "--prompt", tiny_prompt(tmp_path)))
    assert code == 2 and "rows.jsonl:2: the prompt is about" in err and "over the 131,072 the model accepts" in err
    assert len(server.requests) == 1


class CountingTeacher(Teacher):
    name = "counting"

    def __init__(self):
        self.counted = 0

    def count_tokens(self, messages):
        self.counted += 1
        return sum(len(m["content"].split()) for m in messages)  # one token per word


def test_a_large_dry_run_counts_a_sample_of_prompts_and_scales_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(generate_module, "EXACT_COUNTS", 10)
    data = tmp_path / "rows.jsonl"
    # prompts of 1 to 100 words: the sample must be spread over them, not the first ten
    data.write_text("".join(json.dumps({"input": " ".join(["w"] * (1 + i % 100))}) + "\n" for i in range(200)))
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\ntemplate: '{input}'\nanswer_type: text\n")
    teacher = CountingTeacher()
    config = generate_module.GenerateConfig(data=str(data), prompt=str(prompt), teachers=[teacher], dry_run=True, max_tokens=5)
    result = generate_module.generate(config)
    exact = sum(1 + i % 100 for i in range(200))
    assert teacher.counted == 10
    assert abs(result.dry_run.prompt_tokens - exact) / exact < 0.05
    assert result.dry_run.calls == 200 and result.dry_run.completion_tokens == 200 * 5

    teacher = CountingTeacher()  # under the threshold every prompt is counted exactly
    monkeypatch.setattr(generate_module, "EXACT_COUNTS", 1000)
    config = generate_module.GenerateConfig(data=str(data), prompt=str(prompt), teachers=[teacher], dry_run=True, max_tokens=5)
    assert generate_module.generate(config).dry_run.prompt_tokens == exact and teacher.counted == 200
