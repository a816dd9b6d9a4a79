"""The local-model engine behind the `local/...` LiteLLM provider, under load: seeds per request, cancellation,
finish reasons, queue time that is not a timeout, a clean close."""

import time
from concurrent.futures import CancelledError

import pytest
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.generation.local_engine import Engine, Job
from rationale_distill.testing.tiny import make_tiny_student

TEXTS = [f"Q: What is {a} + {b}? We compute {a} + {b} = {a + b}." for a in range(30) for b in range(0, 30, 7)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_student(tmp_path_factory.mktemp("tiny-engine") / "m", TEXTS)


@pytest.fixture
def eng(tiny):
    e = Engine(str(tiny), device="cpu")
    yield e
    e.close()


def job(prompt, seed, n=2, max_tokens=8, temperature=1.0):
    return Job(prompt=prompt, n=n, temperature=temperature, max_tokens=max_tokens, stop=(), seed=seed)


def texts(future):
    return [t for t, _, _ in future.result(60)[0]]


def test_samples_depend_on_their_own_seed_not_on_the_batch(eng):
    alone = texts(eng.submit(job("Q: What is 3 + 4?", seed=11)))
    # The same request again, now batched with two others of different lengths (left padding moves it).
    futures = [eng.submit(job(p, seed=s)) for p, s in (("Q: What is 12 + 21? We", 5), ("Q: What is 3 + 4?", 11), ("Q:", 7))]
    assert texts(futures[1]) == alone
    assert eng.batches >= 2
    assert texts(eng.submit(job("Q: What is 3 + 4?", seed=12))) != alone  # another seed, other samples
    s0, s1 = alone
    assert s0 != s1  # sample k is seeded seed + k: the two samples differ


def test_a_cancelled_request_does_not_poison_its_batch(eng):
    first = eng.submit(job("Q: What is 1 + 1?", seed=1))
    cancelled = eng.submit(job("Q: What is 2 + 2?", seed=2))
    cancelled.cancel()
    last = eng.submit(job("Q: What is 3 + 3?", seed=3))
    assert len(texts(first)) == 2 and len(texts(last)) == 2
    with pytest.raises(CancelledError):
        cancelled.result(1)


def test_finish_reason_is_length_when_max_tokens_cut_the_text(eng):
    (cut, *_), _ = eng.submit(job("Q: What is 1 + 1?", seed=1, n=1, max_tokens=3, temperature=0)).result(60)
    assert cut[2] == "length" and cut[1] == 3


def test_close_stops_the_thread_and_fails_what_is_queued(tiny):
    e = Engine(str(tiny), device="cpu")
    assert texts(e.submit(job("Q:", seed=1)))
    e.close()
    assert not e.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        e.submit(job("Q:", seed=1))


def test_truncated_samples_are_named_in_records_and_summary(tiny, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=4)
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\nformat: text\ntemplate: 'Q: {input}'\nanswer_type: number\n")
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=[f"local/{tiny}"], input_field="question", prompt=str(prompt),
                                           max_tokens=2, temperature=0))  # fmt: skip
    sample = result.records[0].samples[0]
    assert sample.finish_reason == "length" and result.stats.truncated == 4
    assert sample.parse_error is None or sample.parse_error.startswith("cut at max_tokens")


def test_queue_time_is_not_request_time(tiny, tmp_path):
    """Many requests queued behind a slow batch: none times out, though the queue is longer than --timeout."""
    data = write_problems(tmp_path / "p.jsonl", n=24, seed=3)
    start = time.perf_counter()
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=[f"local/{tiny}"], input_field="question", samples=4,
                                           temperature=1.0, max_tokens=24, concurrency=24, timeout=0.05, max_retries=0))  # fmt: skip
    assert time.perf_counter() - start > 0.5  # the queue really was longer than the timeout (and its 0.1 s safety net)
    assert all(s.error is None for r in result.records for s in r.samples)


def test_a_shared_prompt_prefix_is_computed_once_and_changes_no_output(tiny):
    """Few-shot prompts share a long prefix: its key/value cache is computed once per batch, with the same texts."""
    demos = " ".join(TEXTS[:12])  # well over MIN_SHARED_PREFIX tokens
    prompts = [f"{demos} Q: What is {a} + {b}?" + " We" * (a % 3) for a, b in ((1, 2), (13, 7), (22, 14), (5, 28))]
    outs = {}
    for share in (True, False):
        e = Engine(str(tiny), device="cpu", share_prefix=share)
        futures = [e.submit(job(p, seed=i, n=2, max_tokens=10)) for i, p in enumerate(prompts)]
        outs[share] = [texts(f) for f in futures]
        outs[share, "saved"] = e.prefix_tokens_saved
        e.close()
    assert outs[True] == outs[False]
    assert outs[True, "saved"] > 0 and outs[False, "saved"] == 0
