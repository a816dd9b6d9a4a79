"""`rdistill run` (one YAML file drives every stage), the local-model provider, and the offline demo."""

import json
from pathlib import Path

import pytest
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.pipeline import load_run_config, run_pipeline, stage_configs
from rationale_distill.testing.tiny import make_tiny_student

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [f"[label] Q: What is {a} + {b}? {a + b}" for a in range(30) for b in range(0, 30, 7)]
    texts += [f"[rationale] Q: What is {a} + {b}? We compute {a} + {b} = {a + b}." for a in range(30) for b in range(0, 30, 7)]
    return make_tiny_student(tmp_path_factory.mktemp("tiny") / "m", texts)


def test_run_config_drives_every_stage_and_reuses_what_is_done(server, tiny, tmp_path, cli):
    train = write_problems(tmp_path / "train.jsonl", n=30, seed=1)
    test = write_problems(tmp_path / "test.jsonl", n=8, seed=2)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
out: {tmp_path / 'run'}
data: train.jsonl
test_data: test.jsonl
generate: {{teachers: [openai/fake], api_base: "{server.base_url}", input_field: question, label_field: answer, samples: 2, retry_base_delay: 0.01}}
build: {{mode: rationale, label_source: gold, test_fraction: 0}}
train: {{student: "{tiny}", epochs: 1, batch_size: 8, eval_split: none, save_strategy: "no"}}
eval: {{batch_size: 8, latency_samples: 2}}
compare: {{teacher: true}}
""")
    code, stdout, err = cli("run", cfg)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher"]["accuracy"] == 1.0 and summary["student"]["n"] == 8
    assert summary["train"]["reused"] is False and set(summary["timings_s"]) == {"generate", "build", "train", "eval"}
    assert "Distillation result (measured)" in stdout and (tmp_path / "run" / "report" / "report.png").is_file()
    requests = len(server.requests)
    code, stdout, _ = cli("run", cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert code == 0 and summary["train"]["reused"] is True and len(server.requests) == requests  # nothing re-paid, not re-trained
    code, _, _ = cli("run", cfg, "--only", "build")
    assert code == 0 and set(json.loads((tmp_path / "run" / "summary.json").read_text())["timings_s"]) == {"build"}


def test_run_config_errors_name_the_file_and_setting(tmp_path, cli):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("out: x\ndata: d.jsonl\ntrain: {epochz: 1}\n")
    code, _, err = cli("run", cfg)
    assert code == 2 and f"{cfg}: train: unknown setting 'epochz'" in err
    cfg.write_text("out: x\ndata: d.jsonl\nstages: []\n")
    assert "unknown section 'stages'" in cli("run", cfg)[2]


@pytest.mark.parametrize("name", ["demo", "openai", "anthropic", "ollama", "vllm", "llama_cpp"])
def test_example_configs_are_valid(name):
    run = load_run_config(ROOT / "examples" / f"{name}.yaml")
    gen, bld, trn = stage_configs(run)
    assert Path(run.data).is_file() and Path(run.test_data).is_file()
    assert gen.input_field == "question" and bld.mode == "rationale" and trn.student == "gemma-3-270m" and trn.lora


def test_local_provider_serves_a_local_model_through_litellm_in_batches(tiny, tmp_path):
    from rationale_distill.generation.local_engine import engine

    data = write_problems(tmp_path / "p.jsonl", n=12)
    result = rd.generate(rd.GenerateConfig(data=str(data), teachers=[f"local/{tiny}"], input_field="question", samples=2,
                                           temperature=0.9, max_tokens=6, concurrency=12))  # fmt: skip
    sample = result.records[0].samples[0]
    assert sample.text is not None and sample.error is None and sample.cost == 0.0
    assert sample.usage["prompt_tokens"] > 0 and result.stats.made == 12 and result.stats.cost_unknown == 0
    eng = engine(str(tiny))
    assert eng.requests == 12 and eng.batches < 12  # concurrent requests were batched


def test_quick_demo_end_to_end(tmp_path, cli, monkeypatch, tmp_path_factory):
    """The real thing: Gemma 3 270M from PyPI, teacher through LiteLLM, LoRA student, evaluation. ~2-3 minutes."""
    monkeypatch.setenv("RDISTILL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "demo-cache"))
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "--quick", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    for who in ("teacher", "bare", "student"):
        assert summary[who]["accuracy"] is not None and summary[who]["latency_s"] > 0
    assert summary["student"]["prompt_tokens"] < summary["teacher"]["prompt_tokens"]  # the prompt is baked in
    assert summary["train"]["loss_last"] is not None
    assert (out / "student" / "adapter_config.json").is_file() and (out / "report" / "report.md").is_file()
    assert "prompted teacher" in stdout and "distilled student" in stdout


def test_quick_demo_with_soft_targets_from_the_prompted_teacher(tmp_path, cli, monkeypatch, tmp_path_factory):
    """`rdistill demo --objective kd`: the demo's Gemma, reading its engineered prompt, is the white-box teacher of the
    student that reads the bare input (context distillation with logits). Reuses the quick demo's teacher cache."""
    monkeypatch.setenv("RDISTILL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "demo-cache"))
    out = tmp_path / "demo-kd"
    code, stdout, err = cli("demo", "--quick", "--objective", "kd", "--out", out)
    assert code == 0, err
    meta = json.loads((out / "student" / "rdistill_train.json").read_text())
    assert meta["config"]["objective"] == "kd" and meta["config"]["teacher_model"] == "gemma-3-270m"
    assert meta["soft_targets"]["train"] == {"rows the teacher reads with the engineered prompt": meta["fit"]["train"]["kept"]}
    assert any(h.get("loss_kd", 0) > 0 for h in meta["log_history"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["accuracy"] is not None
