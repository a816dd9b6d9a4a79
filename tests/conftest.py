import json
import os
import random

import pytest

# Offline and hermetic: no price-list fetch, no hub, no third-party entry-point plugins unless a test asks.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["RDISTILL_LOAD_PLUGINS"] = ""
os.environ.pop("OPENAI_API_KEY", None)
os.environ["COLUMNS"] = "250"  # rich tables unwrapped, so tests can read whole cells

from rationale_distill.cli import main  # noqa: E402
from rationale_distill.testing.fake_openai import Faults, FakeOpenAI  # noqa: E402


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def make_server():
    started = []

    def make(**kwargs):
        faults = kwargs.pop("faults", None) or Faults()
        s = FakeOpenAI(faults=faults, **kwargs).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def write_problems(path, n=12, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            a, b = rng.randint(1, 60), rng.randint(1, 60)
            fh.write(json.dumps({"question": f"What is {a} + {b}?", "answer": a + b}) + "\n")
    return path


def tiny_prompt(tmp_path):
    """A one-line prompt: small journal lines and known token counts (the default few-shot prompt is ~180 words)."""
    prompt = tmp_path / "tiny.yaml"
    prompt.write_text("name: tiny\ntemplate: 'Q: {input}'\nanswer_type: number\n")
    return prompt


@pytest.fixture
def problems(tmp_path):
    return write_problems(tmp_path / "problems.jsonl")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("RDISTILL_CACHE_DIR", str(path))
    return path


@pytest.fixture
def cli(capsys):
    """Run `rdistill ARGS...` in-process; return (exit code, stdout, stderr)."""

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def gen_args(server, data, out, *extra):
    return ["generate", data, "--input-field", "question", "--label-field", "answer", "--teacher", "openai/fake",
            "--api-base", server.base_url, "--retry-base-delay", "0.01", "--out", out, *extra]
