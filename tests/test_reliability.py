"""Faults a hostile user (or a bad day) brings: kills of the parent with workers, SIGTERM, two runs at once, torn
journals. Each test checks what the test server saw, not only what the engine says."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import gen_args, tiny_prompt, write_problems

import rationale_distill as rd
from rationale_distill.testing.fake_openai import Faults


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def start(s, data, out, cache, tmp_path, *extra):
    cmd = [sys.executable, "-m", "rationale_distill.cli",
           *map(str, gen_args(s, data, out, "--prompt", tiny_prompt(tmp_path), "--cache-dir", cache, *extra))]  # fmt: skip
    return cmd, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_served(s, n, timeout=60):
    deadline = time.time() + timeout
    while sum(1 for e in s.log if e[5] == 200) < n and time.time() < deadline:
        time.sleep(0.02)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_workers_die_with_a_killed_parent_and_a_rerun_pays_only_what_was_in_flight(make_server, tmp_path):
    s = make_server(faults=Faults(latency=0.2))
    data = write_problems(tmp_path / "p.jsonl", n=200, seed=11)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    cmd, proc = start(s, data, out, cache, tmp_path, "--workers", "2", "--concurrency", "4")  # ~10 s of work
    wait_served(s, 12)
    workers = children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 3
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers)  # no orphan keeps paying for calls nobody collects
    answered = {e[2] for e in s.log if e[5] == 200}
    first = len(s.log)
    rerun = cmd[: cmd.index("--concurrency")] + ["--concurrency", "32"] + cmd[cmd.index("--concurrency") + 2 :]
    assert subprocess.run(rerun, capture_output=True).returncode == 0
    asked_again = [e[2] for e in s.log[first:] if e[2] in answered]
    assert len(asked_again) <= 4, len(asked_again)  # at most the calls in flight
    assert len(lines(out)) == 200


def test_sigterm_stops_gracefully_and_says_how_to_resume(make_server, tmp_path):
    s = make_server(faults=Faults(latency=0.3))
    data = write_problems(tmp_path / "p.jsonl", n=60, seed=12)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    cmd, proc = start(s, data, out, cache, tmp_path, "--workers", "2", "--concurrency", "4")
    wait_served(s, 8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "re-run the same command to resume" in err
    answered = {e[2] for e in s.log if e[5] == 200}
    first = len(s.log)
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert not [e for e in s.log[first:] if e[2] in answered]  # in-flight calls were let finish and journaled


def test_sigterm_single_process_lets_calls_in_flight_land(make_server, tmp_path):
    s = make_server(faults=Faults(latency=0.3))
    data = write_problems(tmp_path / "p.jsonl", n=40, seed=13)
    out, cache = tmp_path / "t.jsonl", tmp_path / "cache"
    cmd, proc = start(s, data, out, cache, tmp_path, "--concurrency", "4")
    wait_served(s, 6)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "re-run the same command to resume" in err, err
    answered = {e[2] for e in s.log if e[5] == 200}
    first = len(s.log)
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert not [e for e in s.log[first:] if e[2] in answered]


def test_a_second_run_on_the_same_cache_or_output_refuses_with_one_line(make_server, tmp_path):
    s = make_server(faults=Faults(latency=0.5))
    data = write_problems(tmp_path / "p.jsonl", n=30, seed=14)
    cmd, proc = start(s, data, tmp_path / "a.jsonl", tmp_path / "cache", tmp_path, "--concurrency", "2")
    wait_served(s, 2)
    # Both start at once, while the first run has several seconds of calls left.
    second = subprocess.Popen(cmd[:-4] + ["--out", str(tmp_path / "b.jsonl"), "--cache-dir", str(tmp_path / "cache")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    third = subprocess.Popen(cmd[:-2] + ["--cache-dir", str(tmp_path / "other")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    second_err, third_err = second.communicate(60)[1], third.communicate(60)[1]
    assert proc.poll() is None, "the first run ended before the others asked: the test proved nothing"
    assert second.returncode == 2 and f"in use by rdistill (pid {proc.pid})" in second_err
    assert "--cache-dir" in second_err and len(second_err.strip().splitlines()) == 1
    assert third.returncode == 2 and "the output" in third_err
    proc.wait(60)
    assert proc.returncode == 0
    assert len(s.requests) == len({row["question"] for row in lines(data)})  # nothing was paid twice


def test_torn_and_foreign_journal_lines_are_skipped_and_reported(server, problems, tmp_path, cli, cache_dir):
    out = tmp_path / "t.jsonl"
    assert cli(*gen_args(server, problems, out))[0] == 0
    segment = next((cache_dir / "calls").glob("*.jsonl"))
    with segment.open("ab") as fh:
        fh.write(b'{"ok": true, "key": "abc", "text": "caf\xc3')  # a kill inside a multi-byte character
        fh.write(b"\n[1, 2]\n\"a string\"\n{\"ok\": true}\n")
    code, stdout, _ = cli(*gen_args(server, problems, out))
    assert code == 0 and len(server.requests) == 12  # the resume was not blocked, nothing re-paid
    assert f"4 torn or foreign lines skipped in {segment}" in stdout
    assert rd.generate(rd.GenerateConfig(data=str(problems), teachers=["openai/fake"], api_base=server.base_url,
                                         input_field="question")).stats.made == 0  # fmt: skip


def test_a_key_straddling_the_cut_of_an_error_message_is_redacted_first():
    import litellm

    from rationale_distill.generation.teachers import LiteLLMTeacher, map_error

    key = "sk-" + "abcdefghijklmnopqrst"  # built at run time: no key-shaped string in the source
    for pad in range(200, 320, 3):  # somewhere in here the key straddles the 300-character cut
        exc = litellm.BadRequestError(message="x" * pad + f" {key} was rejected", model="m", llm_provider="openai")
        err = str(map_error(exc, LiteLLMTeacher("openai/m"), key))
        assert "sk-abcd" not in err, pad


def test_a_key_inside_the_api_base_never_reaches_the_journal(server, problems, tmp_path, cli, cache_dir):
    base = server.base_url.replace("http://", "http://user:sk-urlsecret123@") + "?api-key=sk-querysecret456"
    code, _, err = cli(*gen_args(server, problems, tmp_path / "t.jsonl", "--api-base", base))
    assert code == 1 and "http://***@127.0.0.1" in err and "api-key=***" in err  # named, without its secrets
    for path in [tmp_path / "t.jsonl", *cache_dir.rglob("*.jsonl")]:
        if path.is_file():
            text = path.read_text()
            assert "sk-urlsecret" not in text and "sk-querysecret" not in text
    assert "sk-urlsecret" not in err and "sk-querysecret" not in err
