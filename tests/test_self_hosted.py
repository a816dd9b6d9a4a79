"""Self-hosted teachers (llama.cpp's llama-server, vLLM, any OpenAI-compatible server), through the test server made
to behave like one: it wraps chat requests in Gemma's chat template, serves /v1/completions untouched, honours stop
and max_tokens, counts usage for one choice when n > 1, and rejects `top_logprobs` on the text route. The real
llama-server runs the same checks in tests/test_llama_server.py (opt-in)."""

import json

import pytest
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.errors import GenerationError
from rationale_distill.generation.prompts import load_prompt
from rationale_distill.testing.fake_openai import Faults, base_model_responder

# A base-model prompt: instructions and a demo in one plain text, no stop sequence (so the model runs on).
BASE_PROMPT = """name: base-sums
format: text
instructions: Answer each question, then write "So the answer is N."
examples:
  - input: {input: "What is 1 + 1?"}
    rationale: We compute 1 + 1 = 2.
    answer: 2
template: "Q: {input}\\nA:"
answer_type: number
"""


@pytest.fixture
def base_prompt(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(BASE_PROMPT)
    return path


@pytest.fixture
def gemma_server(make_server):
    """A base model behind a server that applies a chat template to /v1/chat/completions, as llama-server does."""
    return make_server(responder=base_model_responder, chat_template="gemma")


def run(server, data, prompt, teacher="openai/gemma", **kw):
    return rd.generate(rd.GenerateConfig(data=str(data), teachers=[teacher], api_base=server.base_url, prompt=str(prompt),
                                         input_field="question", label_field="answer", retry_base_delay=0.01, **kw))  # fmt: skip


@pytest.mark.parametrize("teacher", ["openai/gemma", "hosted_vllm/gemma", "text-completion-openai/gemma"])
def test_a_text_prompt_reaches_a_base_model_as_text_on_the_completions_endpoint(gemma_server, base_prompt, tmp_path, monkeypatch, teacher):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key; the client gets a dummy one
    data = write_problems(tmp_path / "p.jsonl", n=6)
    result = run(gemma_server, data, base_prompt, teacher=teacher, samples=2, logprobs=2)
    bodies = gemma_server.requests
    assert bodies and all("prompt" in b and "messages" not in b for b in bodies)  # /v1/completions, not chat
    record = result.records[0]
    assert {b["prompt"] for b in bodies} == {r.messages[0]["content"] for r in result.records}  # the text as rendered
    assert bodies[0]["logprobs"] == 2 and "top_logprobs" not in bodies[0]  # the completions API's own form
    assert all(s.ok and s.answer == r.label for r in result.records for s in r.samples)
    assert record.samples[0].logprobs and record.samples[0].logprobs[0]["top_logprobs"]
    assert result.stats.retries == 0 and result.stats.failed == 0


def test_text_route_logprobs_in_the_chat_form_as_llama_server_sends_them_are_kept(make_server, base_prompt, tmp_path):
    """llama-server answers /v1/completions with `logprobs: {"content": [...]}` (the chat form), which LiteLLM passes
    on as plain dicts: every sample failed as a teacher bug until those were read too (found on a real llama-server)."""
    server = make_server(responder=base_model_responder, chat_template="gemma", faults=Faults(text_logprobs_as_chat=True))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    result = run(server, data, base_prompt, samples=2, logprobs=2)
    samples = [s for r in result.records for s in r.samples]
    assert all(s.ok and s.error is None for s in samples), [s.error for s in samples]
    entry = samples[0].logprobs[0]
    assert entry["token"] and entry["logprob"] == -0.1 and entry["top_logprobs"][0]["token"] == entry["token"]


def test_through_the_chat_endpoint_the_same_base_model_gives_nothing_usable(gemma_server, tmp_path):
    """Why the route matters: the chat template wraps the text and the base model rambles (56 of 60 unparsed on a
    stock llama-server). A chat prompt is still sent to the chat endpoint, as asked."""
    data = write_problems(tmp_path / "p.jsonl", n=4)
    chat = tmp_path / "chat.yaml"
    chat.write_text(BASE_PROMPT.replace("format: text\n", ""))
    result = run(gemma_server, data, chat)
    assert all("messages" in b for b in gemma_server.requests)
    assert result.stats.parse_failures == 4


def test_a_text_prompt_for_a_chat_only_teacher_is_refused_before_anything_is_sent(base_prompt, tmp_path, cli):
    data = write_problems(tmp_path / "p.jsonl", n=2)
    code, _, err = cli("generate", data, "--input-field", "question", "--teacher", "anthropic/claude-3-5-haiku-latest",
                       "--prompt", base_prompt, "--out", tmp_path / "o.jsonl", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 2 and "format: text (a base-model prompt)" in err and "--api-base" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.jsonl").exists()


def test_a_client_side_error_is_not_a_server_error_and_is_not_retried(gemma_server, base_prompt, tmp_path):
    """`top_logprobs` is a chat argument: the completions client refuses it before sending. LiteLLM calls that
    "HTTP 500"; it was retried 7 times per call."""
    data = write_problems(tmp_path / "p.jsonl", n=3)
    prompt = tmp_path / "p.yaml"
    prompt.write_text(BASE_PROMPT + "params: {top_logprobs: 2}\n")
    result = run(gemma_server, data, prompt, max_retries=5)
    sample = result.records[0].samples[0]
    assert sample.error_kind == "client" and "not retried" in sample.error, sample.error
    assert result.stats.retries == 0 and gemma_server.requests == []


def test_the_first_complete_answer_counts_not_the_one_to_an_invented_question(gemma_server, base_prompt, tmp_path):
    """With no stop sequence the base model answers, then writes the next question and answers it (42)."""
    data = write_problems(tmp_path / "p.jsonl", n=5)
    result = run(gemma_server, data, base_prompt)
    assert all("Q: What is 40 + 2?" in r.samples[0].text for r in result.records)
    assert all(r.samples[0].answer == r.label != "42" for r in result.records)
    assert all("40 + 2" not in r.samples[0].rationale for r in result.records)
    last = tmp_path / "last.yaml"
    last.write_text(BASE_PROMPT + "answer_position: last\n")  # a prompt may ask for the old rule
    assert {r.samples[0].answer for r in run(gemma_server, data, last, cache_dir=str(tmp_path / "c2")).records} == {"42"}


def test_a_stop_sequence_ends_the_reply_where_the_next_demo_would_start(gemma_server, tmp_path):
    data = write_problems(tmp_path / "p.jsonl", n=3)
    stopped = tmp_path / "s.yaml"
    stopped.write_text(BASE_PROMPT + 'stop: ["\\nQ:"]\n')
    result = run(gemma_server, data, stopped)
    assert gemma_server.requests[0]["stop"] == ["\nQ:"]
    assert all("Q:" not in r.samples[0].text and r.samples[0].answer == r.label for r in result.records)


def test_every_shipped_prompt_bounds_its_output_and_stops_before_a_next_demo():
    from importlib import resources

    shipped = sorted(p for p in resources.files("prompts").iterdir() if p.name.endswith(".yaml"))
    assert len(shipped) >= 5
    for path in shipped:
        spec = load_prompt(str(path))
        assert isinstance(spec.params.get("max_tokens"), int) and spec.params["max_tokens"] > 0, path.name
        assert spec.stop, path.name
        if spec.examples:  # a model that runs on writes the next demo, which starts like the template
            opening = spec.template.split("{")[0].strip()
            assert any(opening in s and s.startswith("\n") for s in spec.stop), (path.name, spec.stop)


def test_a_reply_cut_at_max_tokens_is_named_so_everywhere(gemma_server, base_prompt, tmp_path, cli):
    data = write_problems(tmp_path / "p.jsonl", n=3)
    out = tmp_path / "t.jsonl"
    code, stdout, _ = cli("generate", data, "--input-field", "question", "--label-field", "answer", "--teacher", "openai/gemma",
                          "--api-base", gemma_server.base_url, "--prompt", base_prompt, "--max-tokens", "3", "--out", out,
                          "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0 and "cut at max_tokens" in stdout
    samples = [s for r in rd.read_records(out) for s in r.samples]
    assert all(s.finish_reason == "length" and s.parse_error.startswith("cut at max_tokens") for s in samples)
    code, _, err = cli("build", out, "--out", tmp_path / "d")
    assert code == 2 and "d.rejects.jsonl" in err
    rejects = [json.loads(x) for x in (tmp_path / "d.rejects.jsonl").read_text().splitlines()]
    assert rejects and all("cut at max_tokens" in r["reason"] for r in rejects if r["sample"] is not None)


def test_a_server_that_does_not_see_the_prompt_stops_the_run_and_its_replies_leave_the_cache(make_server, tmp_path):
    """A chat template that drops the user's turn: every input gets the same reply. Stopped within the first
    requests, and those replies are not kept as answers: a re-run against the fixed server asks again."""
    blind = make_server(responder=base_model_responder, faults=Faults(blind=True))
    data = write_problems(tmp_path / "p.jsonl", n=30)
    prompt = tmp_path / "chat.yaml"
    prompt.write_text(BASE_PROMPT.replace("format: text\n", ""))
    kw = {"cache_dir": str(tmp_path / "c"), "concurrency": 2}
    with pytest.raises(GenerationError, match=r"reports 1 prompt tokens for a prompt of about \d+: the server is not seeing the whole prompt.*taken out of the cache"):
        run(blind, data, prompt, **kw)
    sent = len(blind.requests)
    assert sent < 10
    blind.faults.blind = False  # the template fixed, same server and URL: the same cache keys
    result = run(blind, data, prompt, **kw)
    assert result.stats.cached == 0 and len(blind.requests) - sent == len({r.input for r in result.records})
    assert all(r.samples[0].answer == r.label for r in result.records)


def test_a_prompt_token_count_far_below_the_prompt_stops_the_run(make_server, tmp_path):
    # a short reply (no same-text signal), but the server says it read ~1 token of a ~60-token prompt
    shy = make_server(responder=lambda body, i: "4", faults=Faults(blind=True))
    data = write_problems(tmp_path / "p.jsonl", n=10)
    prompt = tmp_path / "chat.yaml"
    prompt.write_text(BASE_PROMPT.replace("format: text\n", "").replace("Answer each question", "Read the question "
                      "carefully, think about every number in it, add them up step by step, check the sum, and answer"))  # fmt: skip
    with pytest.raises(GenerationError, match=r"reports \d+ prompt tokens for a prompt of about \d+"):
        run(shy, data, prompt, cache_dir=str(tmp_path / "c"), concurrency=1)


def test_usage_counted_for_one_choice_is_recounted_from_the_texts(make_server, tmp_path):
    s = make_server(faults=Faults(usage_one_choice=True))
    data = write_problems(tmp_path / "p.jsonl", n=3)
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=s.base_url, input_field="question",
                                           label_field="answer", samples=4, cache_dir=str(tmp_path / "c")))  # fmt: skip
    words = sum(len(x.text.split()) for r in result.records for x in r.samples)
    assert result.stats.completion_tokens >= words  # the texts' own count, not a quarter of it
    assert any("reported" in n and "counted from the texts" in n for n in result.stats.notes)
    usage = result.records[0].samples[0].usage
    assert usage["completion_tokens_reported"] < usage["completion_tokens"]


def test_the_same_reply_with_an_answer_is_only_noted(make_server, tmp_path):
    """A terse classifier may well answer four different inputs alike: that is noted, never stopped."""
    terse = make_server(responder=lambda body, i: "The customer wants money back. So the answer is billing.")
    data = write_problems(tmp_path / "p.jsonl", n=6)
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=terse.base_url, input_field="question",
                                           cache_dir=str(tmp_path / "c")))  # fmt: skip
    assert len(result.records) == 6 and result.stats.made == len(terse.requests)
    assert any("gave the same reply to its first 4 different prompts" in n for n in result.stats.notes)


def test_the_same_reply_with_no_answer_to_different_prompts_stops_the_run(make_server, tmp_path):
    """The prompt-token count looks right (a base model behind a chat template sees the text, then says hello)."""
    hello = make_server(responder=lambda body, i: "Hello! How can I help you today? Feel free to ask me anything.")
    data = write_problems(tmp_path / "p.jsonl", n=12)
    with pytest.raises(GenerationError, match=r"gave the same reply to 4 different prompts \('Hello!.*\), with no answer in it"):
        rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=hello.base_url, input_field="question",
                                      cache_dir=str(tmp_path / "c"), concurrency=1))  # fmt: skip
    assert len(hello.requests) == 4


def test_eval_times_a_text_prompt_teacher_on_the_route_it_was_generated_on(gemma_server, base_prompt, tmp_path):
    from rationale_distill.evaluation.evaluate import EvalConfig, teacher_timing

    data = write_problems(tmp_path / "p.jsonl", n=3)
    result = run(gemma_server, data, base_prompt)
    assert result.records[0].prompt["format"] == "text"
    sent = len(gemma_server.requests)
    timing = teacher_timing(EvalConfig(student="unused", teacher_latency="measure", teacher_api_base=gemma_server.base_url,
                                       latency_samples=2), result.records)  # fmt: skip
    assert timing["latency_measured"] == 2
    assert all("prompt" in b and "messages" not in b for b in gemma_server.requests[sent:])  # /v1/completions again
