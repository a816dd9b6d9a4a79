"""Generation against teachers that misbehave the way real ones do: personas, refusals, servers that ignore `n`,
Retry-After, clumped replies, unreachable hosts, kills. Each test names the mechanism it would catch missing."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import gen_args, tiny_prompt, write_problems

import rationale_distill as rd
from rationale_distill.records import read_records
from rationale_distill.generation.store import call_key
from rationale_distill.generation.teachers import LiteLLMTeacher, Request, parse_retry_after
from rationale_distill.testing.fake_openai import Faults, arithmetic_responder


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def pirate(body, i):
    return "Arr, " + arithmetic_responder(body, i) + " Yo-ho, matey!"


# --- 1. answers parsed the way a person reads them ---------------------------------------------------


def test_a_persona_teacher_keeps_every_row_in_a_context_distillation_build(make_server, problems, tmp_path, cli):
    s = make_server(responder=pirate)
    out = tmp_path / "t.jsonl"
    assert cli(*gen_args(s, problems, out))[0] == 0
    assert all(r.samples[0].answer == r.label for r in read_records(out))
    _, report = rd.build(str(out), mode="context")
    assert report["examples_kept"] + report["test"].get("examples", 0) == 12  # the sign-off no longer makes every answer disagree with the gold label


def test_answer_type_is_inferred_from_gold_labels_and_said_in_summary_and_card(server, problems, tmp_path, cli):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\ntemplate: 'Q: {input}'\n")  # no answer_type
    out = tmp_path / "t.jsonl"
    code, stdout, _ = cli(*gen_args(server, problems, out, "--prompt", prompt))
    assert code == 0 and "number (inferred: all 12 gold labels are numbers)" in stdout
    assert read_records(out)[0].prompt["answer_type"] == "number"
    code, _, _ = cli("build", out, "--out", tmp_path / "data")
    assert code == 0 and "Answers read as **number** (inferred: all 12 gold labels are numbers)" in (tmp_path / "data" / "README.md").read_text()
    code, stdout, _ = cli(*gen_args(server, problems, tmp_path / "t2.jsonl", "--prompt", prompt, "--answer-type", "text"))
    assert code == 0 and "text (--answer-type)" in stdout


def test_choice_answers_are_read_against_the_option_set(make_server, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": "B"}) + "\n" for i in range(4)))
    s = make_server(responder=lambda body, i: "Hmm. So the answer is I think (b).")
    result = rd.generate(rd.GenerateConfig(data=str(data), input_field="question", label_field="answer", teachers=["openai/fake"],
                                           api_base=s.base_url, answer_type="choice", options=["A", "B", "C", "D"]))  # fmt: skip
    assert [r.samples[0].answer for r in result.records] == ["B"] * 4


# --- 2. failures never block a re-run and are never silent -------------------------------------------


def refuse_even(body):
    a = int(re.findall(r"(\d+) \+", body["messages"][-1]["content"])[-1])
    if a % 2 == 0:
        return 400, "content_policy_violation", "Your request was rejected as a result of our safety system."
    return None


def test_permanent_failures_are_journaled_and_the_rest_completes(make_server, problems, tmp_path, cli):
    s = make_server(refuse=refuse_even)
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(s, problems, out))
    refused = sum(1 for row in lines(problems) if int(row["question"].split()[2]) % 2 == 0)
    assert 0 < refused < 12
    assert code == 4 and err.startswith("error: completed with failures") and len(err.strip().splitlines()) == 1
    assert "failures by kind" in stdout and f"content_filter {refused}" in stdout
    records = read_records(out)
    assert len(records) == 12  # every input written, the refused ones with their reason
    failed = [r for r in records if r.samples[0].error]
    assert len(failed) == refused and all(r.samples[0].error_kind == "content_filter" for r in failed)
    assert "HTTP 400" in failed[0].samples[0].error and "safety system" in failed[0].samples[0].error
    sent = len(s.requests)
    code, stdout, _ = cli(*gen_args(s, problems, out))
    assert code == 4 and len(s.requests) == sent  # a re-run does not resend a permanent failure
    assert re.search(rf"failed before \(not resent\)\s+│ {refused}", stdout)
    assert cli(*gen_args(s, problems, out, "--allow-failures", refused))[0] == 0
    assert cli(*gen_args(s, problems, out, "--allow-failures", "0.5"))[0] == 0
    assert cli(*gen_args(s, problems, out, "--retry-failed", "--allow-failures", refused))[0] == 0
    assert len(s.requests) == sent + refused  # --retry-failed resent exactly those
    _, report = rd.build(str(out))
    assert report["filters"]["parsed"] == refused  # the builder counts them as rejects, with the reason


def test_transient_failures_that_ran_out_of_retries_are_retried_next_run(make_server, problems, tmp_path, cli):
    s = make_server(faults=Faults(rate_500=1.0))
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, problems, out, "--max-retries", "1"))
    assert code == 4 and len(s.requests) == 24
    s.faults.rate_500 = 0.0
    code, _, _ = cli(*gen_args(s, problems, out, "--max-retries", "1"))
    assert code == 0 and len(s.requests) == 36 and all(r.samples[0].ok for r in read_records(out))


def test_an_auth_error_mid_run_stops_at_once_without_retries(make_server, problems, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-1234567890")
    s = make_server(api_key="right-key")
    code, _, err = cli(*gen_args(s, problems, tmp_path / "t.jsonl", "--concurrency", "1"))
    assert code == 1 and "authentication failed" in err and len(s.requests) == 1
    assert "sk-wrong" not in err


def test_an_unreachable_server_fails_in_seconds_with_one_line(problems, tmp_path):
    env = {**os.environ, "RDISTILL_CACHE_DIR": str(tmp_path / "c")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rationale_distill.cli", "generate", str(problems), "--input-field", "question",
                           "--teacher", "openai/x", "--api-base", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "t.jsonl")],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.perf_counter() - start
    assert proc.returncode == 1 and took < 15, (took, proc.stderr[-500:])
    text = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(text) <= 3, text  # no LiteLLM banner per failed call
    assert "cannot reach http://127.0.0.1:9/v1" in proc.stderr and "Give Feedback" not in proc.stdout + proc.stderr


# --- 3. providers that ignore n ----------------------------------------------------------------------


def test_a_server_that_ignores_n_gets_the_missing_samples_as_seeded_requests(make_server, problems, tmp_path, cli):
    s = make_server(faults=Faults(ignore_n=True))
    out = tmp_path / "t.jsonl"
    code, stdout, _ = cli(*gen_args(s, problems, out, "--samples", "4", "--concurrency", "2"))
    assert code == 0 and "returned 1 of 4 choices" in stdout
    for r in read_records(out):
        assert len(r.samples) == 4 and all(x.ok for x in r.samples)
    assert sum(1 for b in s.requests if (b.get("n") or 1) > 1) <= 2  # n stopped being sent once seen ignored
    by_input = {}
    for b in s.requests:
        by_input.setdefault(b["messages"][-1]["content"], set()).add(b.get("seed"))
    assert all(seeds >= {0, 1, 2, 3} for seeds in by_input.values())  # every sample its own seed
    sent = len(s.requests)
    assert cli(*gen_args(s, problems, out, "--samples", "4"))[0] == 0
    assert len(s.requests) == sent  # the filled samples are cached like any call


# --- 4. the cache key is exactly what is sent -------------------------------------------------------


def test_editing_the_label_or_an_unused_column_repays_nothing(server, problems, tmp_path, cli):
    out = tmp_path / "t.jsonl"
    assert cli(*gen_args(server, problems, out))[0] == 0
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps({**row, "answer": 0, "note": "x"}) + "\n" for row in lines(problems)))
    assert cli(*gen_args(server, edited, out, "--allow-failures", "12"))[0] == 0
    assert len(server.requests) == 12


def test_every_sent_parameter_is_in_the_key():
    base = Request(messages=[{"role": "user", "content": "hi"}], params={"temperature": 0})
    plain = LiteLLMTeacher("openai/m", api_base="http://127.0.0.1:1/v1")
    key = call_key(plain, base)
    assert call_key(LiteLLMTeacher("openai/m", api_base="http://127.0.0.1:1/v1", top_p=0.5), base) != key
    assert call_key(LiteLLMTeacher("openai/m", api_base="http://127.0.0.1:1/v1", response_format={"type": "json_object"}), base) != key
    assert call_key(plain, Request(messages=base.messages, params={"temperature": 0, "max_tokens": 5})) != key
    assert call_key(plain, Request(messages=base.messages, params=base.params, inputs={"label": 3})) == key  # not sent
    assert call_key(plain, Request(messages=base.messages, params=base.params, seed=1)) != key
    key_user = LiteLLMTeacher("openai/m", api_base="http://user:sk-secret@127.0.0.1:1/v1?key=sk-secret")
    assert "sk-secret" not in json.dumps(key_user.identity())


def test_a_dspy_programs_demos_are_in_the_key():
    import dspy

    from rationale_distill.generation.dspy_teacher import DSPyTeacher

    teacher = DSPyTeacher("openai/m", api_base="http://127.0.0.1:1/v1")
    request = Request(messages=[], inputs={"question": "What is 1 + 1?", "answer": "2"})
    key = call_key(teacher, request)
    assert call_key(teacher, Request(messages=[], inputs={"question": "What is 1 + 1?", "answer": "7"})) == key
    teacher.program.predict.demos = [dspy.Example(question="q", reasoning="r", answer="a")]
    assert call_key(teacher, request) != key


# --- 5. durability a test can prove -----------------------------------------------------------------


def test_after_kill_9_every_answered_call_is_kept_or_was_in_flight(make_server, tmp_path, cache_dir):
    s = make_server(faults=Faults(latency=0.05))
    data = write_problems(tmp_path / "p.jsonl", n=80, seed=7)
    out = tmp_path / "t.jsonl"
    concurrency = 2  # small journal lines and few in flight: an unflushed buffer would lose many more than this
    cmd = [sys.executable, "-m", "rationale_distill.cli",
           *map(str, gen_args(s, data, out, "--concurrency", concurrency, "--prompt", tiny_prompt(tmp_path)))]  # fmt: skip
    env = {**os.environ, "RDISTILL_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while sum(1 for e in s.log if e[5] == 200) < 30 and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered_before = {e[2] for e in s.log if e[5] == 200}
    first = len(s.log)
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    asked_again = [e[2] for e in s.log[first:] if e[2] in answered_before]
    assert len(asked_again) <= concurrency, len(asked_again)  # only what was in flight at the kill
    assert len(lines(out)) == 80


# --- 6. limits that hold ----------------------------------------------------------------------------


def test_rpm_starts_stay_spaced_when_replies_arrive_in_clumps(make_server, problems):
    s = make_server(faults=Faults(align_s=0.5))  # every in-flight reply lands at once
    # LiteLLM's first call in a process spends ~0.2 s on lazy set-up, holding the first requests (spaced when they
    # left the limiter) until they hit the wire together; warm it first so this measures the limiter.
    rd.generate(rd.GenerateConfig(data=str(write_problems(problems.with_name("warm.jsonl"), n=1, seed=99)),
                                  teachers=["openai/fake"], api_base=s.base_url, input_field="question"))  # fmt: skip
    s.log.clear()
    rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=s.base_url, input_field="question",
                                  rpm=600, concurrency=4))  # fmt: skip
    arrivals = sorted(e[0] for e in s.log)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # 600/min is one start per 0.1 s, never a burst when slots free together (a burst arrives within a millisecond or
    # two). Arrivals carry the machine's scheduling jitter (one request late by 80 ms on a loaded CI box), so each gap
    # is held to 40 ms and every two gaps to 160 ms, not each gap to 100 ms.
    assert min(gaps) >= 0.04, gaps
    assert min(a + b for a, b in zip(gaps, gaps[1:])) >= 0.16, gaps


def test_tpm_holds_in_every_window_and_is_corrected_by_reported_usage(server, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=20, seed=2)
    prompt = tiny_prompt(tmp_path)
    start = time.perf_counter()
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question",
                                           prompt=str(prompt), tpm=200, max_tokens=50, rate_window=1.0, concurrency=20))  # fmt: skip
    took = time.perf_counter() - start
    usage = {r.messages[-1]["content"]: sum(r.samples[0].usage.values()) for r in result.records}
    events = sorted((e[0], usage[e[2]]) for e in server.log)
    for t0, _ in events:
        assert sum(u for t, u in events if t0 <= t < t0 + 1.0) <= 200 + max(usage.values())  # one request may overrun
    assert sum(usage.values()) > 300  # enough work for the limit to matter
    # The estimate (prompt + 50 max tokens, ~70 a request) alone would allow ~3 requests a second: > 6 s.
    assert took < 5.5, took


def test_retry_after_seconds_is_honoured_and_capped(make_server, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=1)
    s = make_server(faults=Faults(first_429=1, retry_after="2"))
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url, input_field="question",
                                  retry_base_delay=0.01))  # fmt: skip
    first, retry = s.log[0], s.log[1]
    assert (first[5], retry[5]) == (429, 200) and retry[0] - first[1] >= 1.9  # answered 429 -> asked again
    s2 = make_server(faults=Faults(first_429=1, retry_after="30"))
    start = time.perf_counter()
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s2.base_url, input_field="question",
                                  retry_base_delay=0.01, max_retry_after=0.5, cache_dir=str(tmp_path / "c2")))  # fmt: skip
    assert time.perf_counter() - start < 5


def test_retry_after_ms_is_honoured(make_server, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=1)
    s = make_server(faults=Faults(first_429=1, retry_after=None, retry_after_ms="1500"))
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url, input_field="question",
                                  retry_base_delay=0.01))  # fmt: skip
    assert s.log[1][0] - s.log[0][1] >= 1.4


def test_retry_after_forms():
    assert parse_retry_after(None, "3") == 3.0
    assert parse_retry_after("250", "9") == 0.25
    assert parse_retry_after(None, "Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after(None, "soon") is None and parse_retry_after(None, None) is None


def test_max_cost_is_pooled_across_workers(make_server, tmp_path, cli):
    s = make_server(faults=Faults(latency=0.05))
    data = write_problems(tmp_path / "p.jsonl", n=40, seed=5)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, "--workers", "2", "--concurrency", "2", "--price", "1000,1000", "--max-cost", "0.1",
                                 "--prompt", tiny_prompt(tmp_path)))  # fmt: skip
    assert code == 3 and "--max-cost 0.1 reached" in err
    per_call = min(sum(r["samples"][0]["usage"].values()) for r in lines(out)) / 1000  # USD: tokens at $1000 per 1M
    assert len(s.requests) <= 0.1 / per_call + 2, (len(s.requests), per_call)  # the pooled budget, plus calls in flight


def test_max_cost_without_a_price_refuses_to_start(server, problems, tmp_path, cli):
    code, _, err = cli(*gen_args(server, problems, tmp_path / "t.jsonl", "--max-cost", "1"))
    assert code == 2 and "no price is known for openai/fake" in err and "--price IN,OUT" in err
    assert len(server.requests) == 0


def test_truncated_responses_are_rejected_by_the_builder_with_the_reason(server, problems):
    records = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                            input_field="question", label_field="answer")).records  # fmt: skip
    records[0].samples[0].finish_reason = "length"
    _, report = rd.build(records, mode="context", test_fraction=0)  # the held-out split skips the filters
    assert report["examples_kept"] == 11 and report["filters"]["parsed"] == 1
