"""Batch mode (--batch) against the test server's files and batches endpoints, over real HTTP through LiteLLM's
files and batches functions. Each test checks what the server saw (its submissions journal, its request log), not
only what the engine says."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gen_args, tiny_prompt, write_problems

from rationale_distill.testing.fake_openai import Faults

FAST = ("--batch", "--batch-poll", "0.05", "--batch-poll-max", "0.2")


def records(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def journal(out):
    path = Path(out).with_name(Path(out).stem + ".batches.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def answers(path):
    return {r["id"]: [s.get("answer") for s in r["samples"]] for r in records(path)}


def submitted(s):
    """custom ids the server was sent, over every batch."""
    return [k for _, _, ids in s.submissions for k in ids]


def test_a_batch_sends_what_online_sends_and_both_modes_share_the_cache(cli, make_server, tmp_path):
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=8)
    online, batch = tmp_path / "online.jsonl", tmp_path / "batch.jsonl"
    extra = ("--samples", "3", "--temperature", "0.7", "--max-tokens", "60", "--seed", "5", "--logprobs", "2")
    # online for the first 4 inputs: the server's log holds the bodies LiteLLM sent
    code, _, err = cli(*gen_args(s, data, online, "--limit", "4", *extra))
    assert code == 0, err
    online_bodies = {b["messages"][-1]["content"]: b for b in s.requests}
    # batch for all 8: the 4 cached inputs are not submitted; the rest go in one batch
    code, out, err = cli(*gen_args(s, data, batch, *extra, *FAST))
    assert code == 0, err
    assert len(s.submissions) == 1 and len(s.submissions[0][2]) == 4
    line_bodies = [json.loads(x)["body"] for x in s.files[s.submissions[0][1]]["bytes"].splitlines()]
    # the same rendering: what a batch line asks is what LiteLLM sends online (asked for the other inputs, compared key by key)
    code, _, err = cli(*gen_args(s, data, tmp_path / "o2.jsonl", *extra))  # online again, all 8: nothing sent (batch filled the cache)
    assert code == 0, err
    assert len(s.requests) == 4 + 4  # 4 online, 4 in the batch, none for the online re-run
    sample_online = next(iter(online_bodies.values()))
    for body in line_bodies:
        assert set(body) == set(sample_online) - {"stream"}, (sorted(body), sorted(sample_online))
        for k in ("n", "seed", "temperature", "max_tokens", "logprobs", "top_logprobs", "stop"):
            assert body.get(k) == sample_online.get(k), k
    assert answers(tmp_path / "o2.jsonl") == answers(batch)
    assert all(len(r["samples"]) == 3 and all(x["answer"] for x in r["samples"]) for r in records(batch))


def test_requests_are_split_into_files_within_the_limits_one_teacher_per_file(cli, make_server, tmp_path):
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=12)
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(s, data, out, "--teacher", "openai/other", "--batch-max-requests", "5", "--workers", "2", *FAST))
    assert code == 0, err
    assert "--workers is not used with --batch" in stdout
    # two teachers (openai/fake and openai/other), 12 each, at most 5 per file: 3 files each
    assert sorted(len(ids) for _, _, ids in s.submissions) == [2, 2, 5, 5, 5, 5]
    models = {json.loads(s.files[f]["bytes"].splitlines()[0])["body"]["model"] for _, f, _ in s.submissions}
    assert models == {"fake", "other"}
    for _, f, _ in s.submissions:
        assert len({json.loads(x)["body"]["model"] for x in s.files[f]["bytes"].splitlines()}) == 1
    events = journal(out)
    assert [e["event"] for e in events].count("batch") == 6 and [e["event"] for e in events].count("collected") == 6
    assert len(submitted(s)) == len(set(submitted(s))) == 24
    code, _, err = cli(*gen_args(s, data, tmp_path / "b.jsonl", "--batch-max-bytes", "3000", "--limit", "6", *FAST, "--cache-dir", tmp_path / "c2"))
    assert code == 0, err
    assert all(len(s.files[f]["bytes"]) <= 3000 for _, f, _ in s.submissions[6:]) and len(s.submissions) > 7


def test_transient_errors_go_into_a_follow_up_batch_and_permanent_ones_are_recorded(cli, make_server, tmp_path):
    refused = "What is 7 + 7?"
    s = make_server(faults=Faults(rate_500=0.3, seed=3),
                    refuse=lambda b: (400, "content_filter", "flagged by the content policy") if refused in str(b["messages"]) else None)
    data = tmp_path / "p.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(1, 15)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--batch-resubmits", "5", "--allow-failures", "1", *FAST))
    assert code == 0, err
    first = s.submissions[0][2]
    errors = s.files[s.batches[s.submissions[0][0]]["error_file_id"]]["bytes"].decode()
    failed_500 = [json.loads(x)["custom_id"] for x in errors.splitlines() if json.loads(x)["response"]["status_code"] == 500]
    assert failed_500 and len(s.submissions) >= 2
    assert set(s.submissions[1][2]) == set(failed_500)  # exactly the transient failures are resubmitted
    assert len(first) == 14
    recs = {str(r["label"]): r for r in records(out)}
    bad = recs["14"]["samples"][0]
    assert bad["error_kind"] == "content_filter" and "content policy" in bad["error"]
    assert all(r["samples"][0]["answer"] == label for label, r in recs.items() if label != "14")
    assert sum(refused in str(b["messages"]) for b in s.requests) == 1  # the refusal was not resubmitted
    # a re-run sends nothing: the refusal is a permanent failure, kept (as online) until --retry-failed
    before = len(s.requests)
    code, _, _ = cli(*gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--allow-failures", "1", *FAST))
    assert code == 0 and len(s.requests) == before


def test_out_of_resubmits_a_transient_failure_is_recorded_and_the_next_run_submits_it_again(cli, make_server, tmp_path):
    s = make_server(faults=Faults(rate_500=0.5, seed=1))
    data = write_problems(tmp_path / "p.jsonl", n=10)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, "--batch-resubmits", "0", *FAST))
    assert code == 4, err  # completed with failures
    failed = [r for r in records(out) if r["samples"][0].get("error")]
    assert failed and all(r["samples"][0]["error_kind"] == "server" for r in failed)
    assert len(s.submissions) == 1
    s.faults.rate_500 = 0.0
    code, _, err = cli(*gen_args(s, data, out, "--batch-resubmits", "0", *FAST))
    assert code == 0, err
    assert len(s.submissions[1][2]) == len(failed)
    assert not any(r["samples"][0].get("error") for r in records(out))


@pytest.mark.parametrize("listed", [True, False], ids=["listed-in-error-file", "missing"])
def test_an_expired_batch_resubmits_only_what_it_never_answered(cli, make_server, tmp_path, listed):
    s = make_server(faults=Faults(expire_first_batch_after=5, expired_in_error_file=listed))
    data = write_problems(tmp_path / "p.jsonl", n=12)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 0, err
    assert s.batches["batch_1"]["status"] == "expired" and s.batches["batch_2"]["status"] == "completed"
    assert set(s.submissions[1][2]) == set(s.submissions[0][2][5:])  # the 7 unanswered, not the 5 answered
    assert len(s.requests) == 12  # every question answered once
    assert all(r["samples"][0]["answer"] == str(r["label"]) for r in records(out))
    assert [e["status"] for e in journal(out) if e["event"] == "collected"] == ["expired", "completed"]


def test_no_wait_submits_and_the_same_command_later_collects_without_resubmitting(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=60))
    data = write_problems(tmp_path / "p.jsonl", n=6)
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(s, data, out, *FAST, "--no-wait"))
    assert code == 0, err
    assert "batch_1" in stdout and "batches list" in stdout and not out.exists()
    code, stdout, _ = cli("batches", "list", out)
    assert code == 0 and "batch_1" in stdout and "validating" in stdout
    s.release_batches()
    code, _, err = cli(*gen_args(s, data, out, *FAST))  # resumes polling batch_1
    assert code == 0, err
    assert len(s.submissions) == 1 and len(records(out)) == 6
    code, stdout, _ = cli("batches", "list", out)
    assert "completed (collected)" in stdout


def test_from_python_no_wait_then_list_then_collect_once_done(make_server, tmp_path):
    import rationale_distill as rd
    from rationale_distill.generation.batch import cancel_batches, list_batches

    s = make_server(faults=Faults(batch_delay=60))
    data = write_problems(tmp_path / "p.jsonl", n=5)
    out = tmp_path / "t.jsonl"
    config = rd.GenerateConfig(data=str(data), teachers=["openai/fake"], input_field="question", label_field="answer",
                               api_base=s.base_url, out=str(out), batch=True, batch_wait=False, batch_poll=0.05)  # fmt: skip
    result = rd.generate(config)
    assert result.batches.open == 1 and result.records == [] and not out.exists()
    assert [b.status for b in list_batches(out)] == ["validating"]
    result = rd.generate(config)  # still running: looked at once, nothing submitted
    assert result.batches.open == 1 and len(s.submissions) == 1
    s.release_batches()
    wait_for(lambda: s.batches["batch_1"]["status"] == "completed")
    result = rd.generate(config)  # ended: collected with --no-wait too
    assert result.batches.open == 0 and len(result.records) == 5 and all(r.samples[0].answer for r in result.records)
    assert [(b.status, b.collected, b.ok) for b in list_batches(out)] == [("completed", True, 5)]
    assert cancel_batches(out) == [] and len(s.submissions) == 1


def test_polls_back_off(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=1.5))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    code, _, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--batch", "--batch-poll", "0.05", "--batch-poll-max", "1"))
    assert code == 0, err
    # 0.05, 0.075, 0.11, ... s between polls: about 8 polls in 1.5 s where a fixed 0.05 s would make about 30
    assert 3 <= s.http["GET /v1/batches/{id}"] <= 12, s.http


def test_cancel_stops_running_batches_and_the_next_runs_record_then_resubmit_the_rest(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=30))
    data = write_problems(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST, "--no-wait"))
    assert code == 0, err
    code, stdout, err = cli("batches", "cancel", out)
    assert code == 0, err
    assert "batch_1" in stdout and s.batches["batch_1"]["status"] == "cancelling"
    assert any(e["event"] == "cancel" for e in journal(out))
    s.release_batches()  # the server's worker ends it at its next step
    wait_for(lambda: s.batches["batch_1"]["status"] == "cancelled")
    code, _, _ = cli(*gen_args(s, data, out, *FAST))
    assert code == 4  # collected: nothing answered, the 4 recorded as cancelled
    assert {r["samples"][0]["error_kind"] for r in records(out)} == {"batch_cancelled"}
    assert len(s.submissions) == 1
    s.faults.batch_delay = 0
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 0, err
    assert len(s.submissions) == 2 and all(r["samples"][0]["answer"] for r in records(out))


def test_a_batch_that_fails_validation_records_the_reason_and_the_next_run_submits_again(cli, make_server, tmp_path):
    s = make_server(faults=Faults(fail_first_batch="The model `fake` does not support the batch API."))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 4, err  # completed with failures: no follow-up batch (it would fail the same way)
    assert len(s.submissions) == 1
    errors = {(x["error_kind"], x["error"]) for r in records(out) for x in r["samples"]}
    assert errors == {("batch_failed", "the batch batch_1 failed: The model `fake` does not support the batch API.")}, errors
    code, _, err = cli(*gen_args(s, data, out, *FAST))  # not a permanent failure: the next run submits again
    assert code == 0, err
    assert len(s.submissions) == 2 and all(r["samples"][0]["answer"] for r in records(out))


def test_a_full_provider_queue_is_waited_out_and_max_open_never_fills_it(cli, make_server, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=12)
    # the provider takes 2 open batches; 6 files: 4 refused (token_limit_exceeded), each sent again once room frees up
    s = make_server(faults=Faults(batch_delay=1.5, batch_queue_limit=2))
    code, stdout, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--batch-max-requests", "2", *FAST))
    assert code == 0, err
    refused = [b for b in s.batches.values() if b["_queue_full"]]
    assert refused and len(s.submissions) == 6 + len(refused) and "batch queue was full" in stdout
    assert len(s.requests) == 12 and all(r["samples"][0]["answer"] for r in records(tmp_path / "t.jsonl"))
    # --batch-max-open 2: never more than 2 open, nothing refused
    s = make_server(faults=Faults(batch_delay=1.5, batch_queue_limit=2))
    code, _, err = cli(*gen_args(s, data, tmp_path / "u.jsonl", "--batch-max-requests", "2", "--batch-max-open", "2", *FAST,
                                 "--cache-dir", tmp_path / "c2"))  # fmt: skip
    assert code == 0, err
    assert len(s.submissions) == 6 and s.most_open == 2 and not any(b["_queue_full"] for b in s.batches.values())


def test_a_file_over_the_queue_limit_by_itself_is_recorded_with_the_fix(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_queue_limit=0))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 4, err
    assert len(s.submissions) == 1  # not resubmitted in a loop
    assert all("lower --batch-max-requests" in r["samples"][0]["error"] for r in records(out))


def test_a_server_that_ignores_n_gets_the_missing_samples_as_single_seeded_requests(cli, make_server, tmp_path):
    s = make_server(faults=Faults(ignore_n=True))
    data = write_problems(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(s, data, out, "--samples", "3", *FAST))
    assert code == 0, err
    assert "returned 1 of 3 choices in a batch" in stdout
    first = [json.loads(x)["body"] for x in s.files[s.submissions[0][1]]["bytes"].splitlines()]
    follow = [json.loads(x)["body"] for x in s.files[s.submissions[1][1]]["bytes"].splitlines()]
    assert all(b["n"] == 3 for b in first) and len(follow) == 8 and all("n" not in b for b in follow)
    assert sorted({b["seed"] for b in follow}) == [1, 2]
    assert all(len(r["samples"]) == 3 and all(x["answer"] for x in r["samples"]) for r in records(out))
    # online with the same settings sends nothing: the merged n-entries are in the cache
    before = len(s.requests)
    code, _, _ = cli(*gen_args(s, data, tmp_path / "o.jsonl", "--samples", "3"))
    assert code == 0 and len(s.requests) == before


def test_dry_run_counts_files_and_prices_at_the_batch_price(cli, make_server, tmp_path):
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=12)
    code, stdout, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--teacher", "openai/gpt-4o-mini", "--dry-run",
                                      "--batch-max-requests", "5", *FAST))  # fmt: skip
    assert code == 0, err
    rows = dict(line.strip("│ ").split("│")[:2] for line in stdout.splitlines() if line.count("│") == 3)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["batch files (one batch each)"] == "6"  # two teachers, 12 requests each, 5 per file
    assert s.requests == [] and s.submissions == []
    # openai/fake has no price, so the whole is unknown; gpt-4o-mini alone has LiteLLM's batch price: half the online one
    code, stdout, _ = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--dry-run", *FAST, "--price", "150,600", "--batch-discount", "0.4"))
    rows = {k.strip(): v.strip() for k, v in (line.strip("│ ").split("│")[:2] for line in stdout.splitlines() if line.count("│") == 3)}
    online, batch = float(rows["est. cost online"].lstrip("$")), float(rows["est. cost at batch price"].lstrip("$"))
    assert batch == pytest.approx(online * 0.4, rel=0.01)


def test_batch_cost_uses_litellm_batch_rates_and_is_shown_against_online(cli, make_server, tmp_path):
    from rationale_distill.generation.batch import batch_cost
    from rationale_distill.generation.teachers import LiteLLMTeacher

    t = LiteLLMTeacher("openai/gpt-4o-mini")
    assert batch_cost(t, 1_000_000, 1_000_000, 0.5) == pytest.approx(0.075 + 0.30)  # LiteLLM's batch rates
    assert batch_cost(LiteLLMTeacher("openai/fake", price=(1.0, 2.0)), 1_000_000, 0, 0.4) == pytest.approx(0.4)
    assert batch_cost(LiteLLMTeacher("openai/fake"), 1000, 1000, 0.5) is None
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=5)
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli(*gen_args(s, data, out, "--teacher", "openai/gpt-4o-mini", *FAST))
    assert code == 0, err
    mini = [x for r in records(out) for x in r["samples"] if x["teacher"] == "openai/gpt-4o-mini"]
    tokens = [(x["usage"]["prompt_tokens"], x["usage"]["completion_tokens"]) for x in mini]
    costs = [x["cost"] for x in mini]
    assert len(costs) == 5
    assert costs == pytest.approx([(p * 0.075 + c * 0.30) / 1e6 for p, c in tokens])
    assert "the same tokens online" in stdout


def test_the_batch_api_calls_are_retried_on_503_and_an_unseen_file_and_a_bad_key_stops_in_one_line(cli, make_server, tmp_path, monkeypatch):
    s = make_server(faults=Faults(batch_api_503=6, files_unseen=2))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 0, err
    assert s.http["POST /v1/files"] >= 4 and len(s.files) == 2 and len(s.submissions) == 1  # one upload stored, one batch
    assert s._unseen == 2  # a just-uploaded file the batches endpoint did not see yet: the creation was retried
    assert len(records(out)) == 3
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    locked = make_server(api_key="sk-right")
    code, _, err = cli(*gen_args(locked, data, tmp_path / "u.jsonl", *FAST, "--cache-dir", tmp_path / "c2"))
    assert code == 1 and err.count("\n") == 1 and "batch mode: uploading a request file" in err and "HTTP 401" in err
    assert "sk-wrong" not in err and locked.files == {}


def test_refusals_before_anything_is_sent(cli, make_server, tmp_path):
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=3)
    code, _, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--teacher", "anthropic/claude-3-5-haiku-latest", *FAST))
    assert code == 2 and "--batch: anthropic/claude-3-5-haiku-latest has no batch API" in err and err.count("\n") == 1
    code, _, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--max-cost", "1", "--price", "1,1", *FAST))
    assert code == 2 and "--max-cost with --batch" in err
    code, _, err = cli(*gen_args(s, data, tmp_path / "t.jsonl", "--no-wait"))
    assert code == 2 and "--no-wait: only with --batch" in err
    code, _, err = cli("batches", "list", tmp_path / "nothing.jsonl")
    assert code == 2 and "no batch journal" in err
    assert s.requests == [] and s.files == {}


def test_the_api_key_is_never_written(cli, make_server, tmp_path, monkeypatch):
    key = "sk-test-SECRET-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    s = make_server(api_key=key, faults=Faults(batch_delay=60))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST, "--cache-dir", tmp_path / "cache", "--no-wait"))
    assert code == 0, err
    code, stdout, err = cli("batches", "list", out)  # asks the provider with the key of the journaled variable
    assert code == 0 and "validating" in stdout, err
    s.release_batches()
    code, _, err = cli(*gen_args(s, data, out, *FAST, "--cache-dir", tmp_path / "cache"))
    assert code == 0, err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    assert journal(out)[0]["api_key_env"] == "OPENAI_API_KEY"


# --- kills and Ctrl-C: a separate process, killed where it hurts ---------------------------------------------


def spawn(s, data, out, cache, tmp_path, *extra):
    cmd = [sys.executable, "-m", "rationale_distill.cli",
           *map(str, gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--cache-dir", cache, *FAST, *extra))]  # fmt: skip
    env = {**os.environ, "RDISTILL_CACHE_DIR": str(cache)}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def wait_for(condition, timeout=60):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.02)
    assert condition()


def test_kill_9_between_creating_a_batch_and_journaling_its_id_never_submits_twice(cli, make_server, tmp_path):
    # The server creates the batch at once but answers its id 5 s later: the kill lands in between.
    s = make_server(faults=Faults(batch_create_delay=5))
    data = write_problems(tmp_path / "p.jsonl", n=6)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    proc = spawn(s, data, out, cache, tmp_path)
    wait_for(lambda: s.submissions)
    assert [e["event"] for e in journal(out)] == ["file"]  # the file is journaled, the batch id not yet
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s.faults.batch_create_delay = 0
    code, _, err = cli(*gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--cache-dir", cache, *FAST))
    assert code == 0, err
    assert len(s.submissions) == 1  # found at the provider by its input file, not created again
    assert [e.get("adopted") for e in journal(out) if e["event"] == "batch"] == [True]
    assert len(records(out)) == 6 and len(s.requests) == 6


def test_a_file_uploaded_but_never_made_a_batch_is_submitted_from_the_same_file(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=30))
    data = write_problems(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "t.jsonl"
    code, _, err = cli(*gen_args(s, data, out, *FAST, "--no-wait"))
    assert code == 0, err
    # as if killed after the upload, before the batch was created: no batch line, no batch at the server
    path = out.with_name("t.batches.jsonl")
    path.write_text("".join(x + "\n" for x in path.read_text().splitlines() if json.loads(x)["event"] == "file"))
    s.batches.clear()
    s.submissions.clear()
    s.faults.batch_delay = 0
    s.http.clear()
    code, _, err = cli(*gen_args(s, data, out, *FAST))
    assert code == 0, err
    assert s.http["POST /v1/files"] == 0 and [f for _, f, _ in s.submissions] == ["file-1"]
    assert [e.get("adopted") for e in journal(out) if e["event"] == "batch"] == [False]
    assert len(records(out)) == 4


def test_a_run_killed_while_collecting_resumes_from_the_same_batch_and_counts_each_answer_once(cli, make_server, tmp_path):
    s = make_server()
    data = write_problems(tmp_path / "p.jsonl", n=6)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    code, _, err = cli(*gen_args(s, data, out, *FAST, "--cache-dir", cache))
    assert code == 0, err
    # as if killed after 4 of the 6 answers were journaled: the last 2 cache lines and the `collected` line are gone
    segment = next((cache / "calls").glob("calls-*.jsonl"))
    segment.write_text("".join(x + "\n" for x in segment.read_text().splitlines()[:4]))
    path = out.with_name("t.batches.jsonl")
    path.write_text("".join(x + "\n" for x in path.read_text().splitlines() if json.loads(x)["event"] != "collected"))
    out.unlink()
    code, stdout, err = cli(*gen_args(s, data, out, *FAST, "--cache-dir", cache))
    assert code == 0, err
    assert len(s.submissions) == 1 and len(s.requests) == 6  # the same batch, collected again; nothing resubmitted
    done_now = next(line for line in stdout.splitlines() if "done now" in line)
    assert done_now.split("│")[2].strip() == "2"  # the 4 already in the cache are not counted (or priced) twice
    assert len(records(out)) == 6 and all(r["samples"][0]["answer"] for r in records(out))


def test_kill_9_while_polling_then_a_rerun_resumes_the_same_batch(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=2.5))
    data = write_problems(tmp_path / "p.jsonl", n=6)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    proc = spawn(s, data, out, cache, tmp_path)
    wait_for(lambda: any(e["event"] == "batch" for e in journal(out)))
    time.sleep(0.3)  # polling now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, _, err = cli(*gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--cache-dir", cache, *FAST))
    assert code == 0, err
    assert len(s.submissions) == 1 and len(s.requests) == 6 and len(records(out)) == 6


def test_ctrl_c_stops_waiting_without_cancelling_and_says_how_to_resume(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=3))
    data = write_problems(tmp_path / "p.jsonl", n=4)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    proc = spawn(s, data, out, cache, tmp_path)
    wait_for(lambda: any(e["event"] == "batch" for e in journal(out)))
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "stopped waiting" in err and "re-run the same command" in err and "batches cancel" in err
    assert s.batches["batch_1"]["status"] not in ("cancelling", "cancelled")
    code, _, err = cli(*gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--cache-dir", cache, *FAST))
    assert code == 0, err
    assert len(s.submissions) == 1 and len(records(out)) == 4


def test_a_run_file_with_batch_wait_false_stops_after_submitting_and_resumes(cli, make_server, tmp_path):
    s = make_server(faults=Faults(batch_delay=60))
    write_problems(tmp_path / "train.jsonl", n=5)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
out: {tmp_path / 'run'}
data: train.jsonl
generate: {{teachers: [openai/fake], api_base: "{s.base_url}", input_field: question, label_field: answer, batch: true, batch_wait: false, batch_poll: 0.05}}
build: {{mode: rationale, label_source: gold, test_fraction: 0}}
train: {{student: none}}
""")
    code, _, err = cli("run", cfg)
    assert code == 75 and "stopping after generate: 1 batch still running at the provider" in err and "re-run the same command" in err
    s.release_batches()
    code, _, err = cli("run", cfg, "--only", "generate")
    assert code == 0, err
    assert len(records(tmp_path / "run" / "teacher.jsonl")) == 5 and len(s.submissions) == 1
