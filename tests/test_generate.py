import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gen_args, write_problems

import rationale_distill as rd
from rationale_distill.records import read_records
from rationale_distill.generation.teachers import LiteLLMTeacher
from rationale_distill.testing.fake_openai import Faults


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_generate_over_http_writes_one_record_per_input(server, problems, tmp_path, cli):
    out = tmp_path / "teacher.jsonl"
    code, stdout, _ = cli(*gen_args(server, problems, out, "--samples", "3"))
    assert code == 0, stdout
    records = read_records(out)
    assert len(records) == 12
    for r in records:
        assert len(r.samples) == 3
        assert r.majority == r.label  # the fake teacher does arithmetic right
        assert r.vote_share == 1.0
        assert all(s.rationale.startswith("We compute") for s in r.samples)
        assert [p.part for p in r.parts][-1] == "input" and r.input.startswith("Q: What is")
    assert "Generation summary" in stdout and "parse failures" in stdout


def test_python_api_and_cli_give_identical_records(server, problems, tmp_path, cli):
    out = tmp_path / "cli.jsonl"
    assert cli(*gen_args(server, problems, out, "--samples", "2"))[0] == 0
    result = rd.generate(rd.GenerateConfig(data=str(problems), input_field="question", label_field="answer",
                                           teachers=["openai/fake"], api_base=server.base_url, samples=2))
    strip = lambda d: {**d, "samples": [{**s, "cached": None, "latency_s": None} for s in d["samples"]]}  # noqa: E731
    assert [strip(r.to_dict()) for r in result.records] == [strip(d) for d in lines(out)]
    assert result.stats.cached == 12  # the second run paid for nothing


def test_rerun_makes_zero_new_calls_and_prompt_change_invalidates_exactly_those(server, problems, tmp_path, cli):
    out = tmp_path / "t.jsonl"
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\ntemplate: 'Q: {input}'\nanswer_type: number\n")
    assert cli(*gen_args(server, problems, out, "--prompt", prompt))[0] == 0
    assert len(server.requests) == 12
    assert cli(*gen_args(server, problems, out, "--prompt", prompt))[0] == 0
    assert len(server.requests) == 12  # nothing re-paid
    prompt.write_text("name: p\ntemplate: 'Question: {input}'\nanswer_type: number\n")
    assert cli(*gen_args(server, problems, out, "--prompt", prompt))[0] == 0
    assert len(server.requests) == 24  # every call changed, every call re-made, once


def test_faults_at_15_percent_still_complete_every_input(make_server, problems, tmp_path, cli):
    s = make_server(faults=Faults(rate_429=0.05, rate_500=0.05, rate_malformed=0.05, seed=3))
    out = tmp_path / "t.jsonl"
    code, stdout, _ = cli(*gen_args(s, problems, out, "--samples", "2", "--concurrency", "4"))
    assert code == 0
    records = read_records(out)
    assert all(len(r.samples) == 2 and all(x.error is None for x in r.samples) for r in records)
    assert s.status_counts[429] + s.status_counts[500] > 0  # faults really were injected and retried


def test_hung_requests_time_out_and_are_retried(make_server, problems, tmp_path, cli):
    s = make_server(faults=Faults(rate_hang=0.2, hang_s=5, seed=1))
    out = tmp_path / "t.jsonl"
    code, _, _ = cli(*gen_args(s, problems, out, "--timeout", "0.5", "--concurrency", "12"))
    assert code == 0
    assert all(r.samples[0].error is None for r in read_records(out))


def test_a_slow_drip_is_cut_at_the_timeout_and_retried(make_server, problems, tmp_path, cli):
    # Each piece of the body arrives well within the read timeout; the whole would take 30 s. The per-request deadline
    # (not the HTTP client's per-read timeout) cuts it and the retry gets a normal answer.
    s = make_server(faults=Faults(rate_drip=0.25, drip_s=1.0, drip_pieces=30, seed=4))
    out = tmp_path / "t.jsonl"
    started = time.monotonic()
    code, stdout, err = cli(*gen_args(s, problems, out, "--timeout", "1.5", "--concurrency", "12"))
    assert code == 0, err
    assert all(r.samples[0].error is None for r in read_records(out))
    assert len(s.requests) > 12  # some calls dripped and were re-asked
    assert time.monotonic() - started < 20


def test_separate_seeded_calls_when_the_provider_has_no_native_n(server, problems):
    teacher = LiteLLMTeacher("openai/fake", api_base=server.base_url, native_n=False)
    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=[teacher], input_field="question", samples=3))
    assert len(server.requests) == 36
    assert sorted({r.get("seed") for r in server.requests}) == [0, 1, 2]
    assert all("n" not in r or r["n"] == 1 for r in server.requests)
    assert [s.index for s in result.records[0].samples] == [0, 1, 2]


def test_native_n_is_one_request_per_input(server, problems):
    rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                  input_field="question", samples=4))  # fmt: skip
    assert len(server.requests) == 12 and all(r["n"] == 4 for r in server.requests)


def test_several_teachers_vote_together(make_server, problems):
    good = make_server()
    bad = make_server(responder=lambda body, i: "No idea. So the answer is 7.")
    result = rd.generate(rd.GenerateConfig(
        data=str(problems), input_field="question", label_field="answer", samples=1,
        teachers=[LiteLLMTeacher("openai/good", api_base=good.base_url, name="good"),
                  LiteLLMTeacher("openai/bad", api_base=bad.base_url, name="bad")]))  # fmt: skip
    r = result.records[0]
    assert {s.teacher for s in r.samples} == {"good", "bad"}
    assert r.vote_share == 0.5 and r.votes == {r.label: 1, "7": 1}
    assert r.majority == r.label  # ties go to the first teacher's answer, deterministically


def test_parse_failures_are_kept_with_the_raw_text_and_a_reason(make_server, problems, tmp_path, cli):
    s = make_server(responder=lambda body, i: "I think it is probably large." if i == 0 else "1+1. So the answer is 2.")
    out = tmp_path / "t.jsonl"
    code, stdout, _ = cli(*gen_args(s, problems, out, "--samples", "2"))
    assert code == 0
    sample = read_records(out)[0].samples[0]
    assert sample.text == "I think it is probably large."
    assert sample.parse_error.startswith("no answer marker 'So the answer is' in the response")
    assert sample.answer is None and sample.rationale is None
    assert "│ parse failures               │ 12" in stdout


def test_logprobs_of_the_answer_tokens_are_kept_and_absence_is_fine(server, problems):
    result = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                           input_field="question", logprobs=2))  # fmt: skip
    sample = result.records[0].samples[0]
    assert sample.logprobs and "".join(t["token"] for t in sample.logprobs).strip() == sample.raw_answer + "."
    assert len(sample.logprobs[0]["top_logprobs"]) == 2
    plain = rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                          input_field="question"))  # fmt: skip
    assert plain.records[0].samples[0].logprobs is None


@pytest.mark.parametrize(
    "make,needle",
    [
        (dict(api_key="right-key"), "authentication failed"),
        (dict(models={"other-model"}), "not found"),
    ],
)
def test_total_failure_gives_a_clear_error_and_no_output(make_server, problems, tmp_path, cli, monkeypatch, make, needle):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-1234567890")
    s = make_server(**make)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, problems, out, "--concurrency", "2"))
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1
    assert "sk-wrong-key" not in err
    assert not out.exists()
    assert len(s.requests) < 12  # it stopped early instead of hammering a server that says no


def test_unreachable_base_url_says_so(problems, tmp_path, cli):
    out = tmp_path / "t.jsonl"
    code, _, err = cli("generate", problems, "--input-field", "question", "--teacher", "openai/x", "--api-base",
                       "http://127.0.0.1:9/v1", "--max-retries", "1", "--retry-base-delay", "0.01", "--out", out)  # fmt: skip
    assert code == 1 and "cannot reach http://127.0.0.1:9/v1" in err and not out.exists()


def test_api_keys_never_reach_any_file(make_server, problems, tmp_path, cli, cache_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-abcdefghijklmnop")
    s = make_server(api_key="sk-secret-abcdefghijklmnop")
    out = tmp_path / "t.jsonl"
    assert cli(*gen_args(s, problems, out))[0] == 0
    for path in [out, *cache_dir.rglob("*")]:
        if path.is_file():
            assert "sk-secret" not in path.read_text()


def test_dry_run_estimates_and_calls_nothing(server, problems, tmp_path, cli):
    code, stdout, _ = cli(*gen_args(server, problems, tmp_path / "t.jsonl", "--samples", "3", "--dry-run", "--price", "1,2"))
    assert code == 0 and len(server.requests) == 0 and not (tmp_path / "t.jsonl").exists()
    assert "to make" in stdout and "est. cost" in stdout and "$0.00" in stdout


def test_max_cost_stops_cleanly_and_a_rerun_finishes(make_server, problems, tmp_path, cli):
    s = make_server(faults=Faults(latency=0.02))
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, problems, out, "--price", "1000,1000", "--max-cost", "0.2", "--concurrency", "1"))
    assert code == 3 and "--max-cost 0.2 reached" in err
    done = len(lines(out))
    assert 0 < done < 12 and len(s.requests) < 12
    code, _, _ = cli(*gen_args(s, problems, out, "--price", "1000,1000"))
    assert code == 0 and len(lines(out)) == 12
    assert len(s.requests) == 12  # the budget-stopped run's calls were not paid twice


def test_rpm_limit_spaces_requests(server, problems):
    start = time.perf_counter()
    rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                  input_field="question", rpm=600, limit=6))  # fmt: skip
    assert time.perf_counter() - start >= 0.5  # 6 requests at 10/s: at least 5 gaps of 0.1 s


def test_resume_after_kill_9_never_repays_a_journaled_call(make_server, tmp_path, cache_dir):
    s = make_server(faults=Faults(latency=0.15))
    data = write_problems(tmp_path / "p.jsonl", n=40)
    out = tmp_path / "t.jsonl"
    cmd = [sys.executable, "-m", "rationale_distill.cli", *map(str, gen_args(s, data, out, "--concurrency", "4"))]
    env = {**os.environ, "RDISTILL_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def journaled():
        return sum(f.read_text().count('"ok": true') for f in (cache_dir / "calls").glob("*.jsonl"))

    deadline = time.time() + 60
    while (not (cache_dir / "calls").is_dir() or journaled() < 8) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = journaled()
    assert 8 <= done < 40
    first_run = len(s.requests)
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    distinct = len({row["question"] for row in lines(data)})  # a repeated question is one cached call
    assert len(s.requests) - first_run == distinct - done  # only what was missing
    assert len(lines(out)) == 40


def test_identical_inputs_in_one_run_are_paid_for_once(server, tmp_path):
    data = tmp_path / "dup.jsonl"
    data.write_text('{"question": "What is 1 + 2?"}\n' * 3 + '{"question": "What is 2 + 2?"}\n')
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question"))
    assert len(server.requests) == 2
    assert [r.majority for r in result.records] == ["3", "3", "3", "4"]


def test_worker_processes_give_the_same_records_and_share_the_cache(server, tmp_path, cli):
    data = write_problems(tmp_path / "p.jsonl", n=30, seed=4)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    code, stdout, _ = cli(*gen_args(server, data, two, "--workers", "2", "--samples", "2", "--cache-dir", tmp_path / "c2"))
    assert code == 0 and "Generation summary" in stdout
    distinct = len({json.loads(x)["question"] for x in data.read_text().splitlines()})
    assert len(server.requests) == distinct  # each call once, across both processes
    assert cli(*gen_args(server, data, two, "--workers", "2", "--samples", "2", "--cache-dir", tmp_path / "c2"))[0] == 0
    assert len(server.requests) == distinct  # the re-run found everything in the merged cache
    assert cli(*gen_args(server, data, one, "--samples", "2", "--cache-dir", tmp_path / "c1"))[0] == 0
    strip = lambda d: {**d, "samples": [{**s, "cached": None, "latency_s": None} for s in d["samples"]]}  # noqa: E731
    assert [strip(r) for r in lines(one)] == [strip(r) for r in lines(two)]


def test_fake_server_answers_an_empty_message_list_with_a_400_like_openai(server):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{server.base_url}/chat/completions", data=json.dumps({"model": "m", "messages": []}).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and json.load(err.value)["error"]["type"] == "invalid_request_error"
