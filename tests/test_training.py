"""Student training and evaluation on a tiny model built from a config (seconds on a CPU)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.errors import UsageError
from rationale_distill.evaluation.evaluate import EvalConfig, evaluate, score
from rationale_distill.testing.tiny import make_tiny_student
from rationale_distill.training import TrainConfig, fingerprint, read_student, train
from rationale_distill.training.multitask import MultiTaskCollator, multitask_loss, task_token_counts
from rationale_distill.training.sft import min_prompt_tokens, tokenize_row


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Teacher records from the real generation stage over HTTP -> a rationale dataset -> a tiny student."""
    from rationale_distill.testing.fake_openai import FakeOpenAI

    root = tmp_path_factory.mktemp("train")
    data = write_problems(root / "p.jsonl", n=40, seed=11)
    with FakeOpenAI() as server:
        rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question",
                                      label_field="answer", out=str(root / "teacher.jsonl"), cache_dir=str(root / "cache")))  # fmt: skip
    build(str(root / "teacher.jsonl"), BuildConfig(records=str(root / "teacher.jsonl"), out=str(root / "data"), validation_fraction=0.2, test_fraction=0.2))
    rows = [json.loads(x) for x in (root / "data" / "train.jsonl").read_text().splitlines()]
    make_tiny_student(root / "tiny", [r["prompt"] + r["completion"] for r in rows] * 3)
    return root


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def log(out):
    return json.loads((out / "rdistill_train.json").read_text())["log_history"]


def test_full_finetune_logs_decreasing_loss_changes_weights_and_reloads(workspace, tmp_path):
    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"),
                            epochs=6, batch_size=4, learning_rate=3e-3, logging_steps=2))  # fmt: skip
    losses = [h["loss"] for h in log(out) if "loss" in h]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert any("loss_label" in h and "loss_rationale" in h for h in log(out))
    before, after = weights(workspace / "tiny"), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    from rationale_distill.student import generate_answers, load_model

    model, tok = load_model(str(out))
    answers, latency = generate_answers(model, tok, ["[label] Q: What is 1 + 2?"], max_new_tokens=4)
    assert isinstance(answers[0], str) and latency[0] > 0
    meta = json.loads((out / "rdistill_train.json").read_text())
    assert meta["versions"]["trl"] and meta["dataset"]["config"]["mode"] == "rationale" and meta["config"]["rationale_weight"] == 1.0
    assert (out / "README.md").read_text().startswith("# Student distilled") and (out / "DATASET_CARD.md").is_file()


def test_lora_trains_the_adapter_only_and_merges(workspace, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "lora"),
                            lora=True, lora_r=4, epochs=2, batch_size=4, learning_rate=1e-2))  # fmt: skip
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(str(workspace / "tiny"))
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: it was trained
    for name, value in model.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if "lora_" not in name and key in original:
            assert torch.equal(value, original[key]), name  # the base weights did not move
    merged = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "merged"),
                               lora=True, lora_r=4, epochs=1, batch_size=4, merge_adapter=True))  # fmt: skip
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(str(merged))
    from rationale_distill.evaluation.evaluate import served_size
    from rationale_distill.student import folder_bytes

    size = served_size(str(out), read_student(out))  # an adapter is served with its base
    adapter = folder_bytes(out) - folder_bytes(out / "checkpoints")
    assert size["size_basis"] == "base model + LoRA adapter" and size["adapter_bytes"] == adapter
    assert size["size_bytes"] == adapter + folder_bytes(workspace / "tiny")
    meta = read_student(merged)
    assert 0 < meta["trainable_parameters"] < meta["parameters"]  # the adapter's, counted before the merge
    assert f"({meta['trainable_parameters']:,} trained)" in (merged / "README.md").read_text()


def _batch(workspace, rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workspace / "tiny"))
    return MultiTaskCollator(tok.pad_token_id)([tokenize_row(r, tok, 128) for r in rows])


def _rows(workspace, n):
    return [json.loads(x) for x in (workspace / "data" / "train.jsonl").read_text().splitlines()][:n]


def test_one_pass_loss_equals_the_two_pass_reference(workspace):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(workspace / "tiny"))
    rows = _rows(workspace, 8)
    lam = 0.7
    batch = _batch(workspace, rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours, _ = multitask_loss(logits, batch["labels"], batch["task_ids"], (1.0, lam), task_token_counts(batch["labels"], batch["task_ids"]))

    def reference(task):  # google-research/distilling-step-by-step: one forward pass per task, HF's mean token loss
        sub = _batch(workspace, [r for r in rows if r["task"] == task])
        return model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"], labels=sub["labels"]).loss

    expected = reference("label") + lam * reference("rationale")
    assert torch.allclose(ours, expected, atol=1e-5), (ours, expected)


def test_loss_is_invariant_to_micro_batching_and_survives_a_batch_without_rationales(workspace):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(workspace / "tiny"))
    rows = _rows(workspace, 8)
    full = _batch(workspace, rows)
    counts = task_token_counts(full["labels"], full["task_ids"])

    def loss_of(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return multitask_loss(logits, batch["labels"], batch["task_ids"], (1.0, 1.0), counts)[0]

    # Uneven micro-batches: one with label rows only, one with the rest. Window counts make the sum exact.
    labels_only = [r for r in rows if r["task"] == "label"][:3]
    rest = [r for r in rows if r not in labels_only]
    split_sum = loss_of(_batch(workspace, labels_only)) + loss_of(_batch(workspace, rest))
    assert torch.allclose(split_sum, loss_of(full), atol=1e-5)
    only = _batch(workspace, labels_only)
    logits = model(input_ids=only["input_ids"], attention_mask=only["attention_mask"]).logits
    loss, parts = multitask_loss(logits, only["labels"], only["task_ids"], (1.0, 1.0), task_token_counts(only["labels"], only["task_ids"]))
    assert math.isfinite(loss.item()) and parts[1].item() == 0.0


def test_gradient_accumulation_matches_one_big_batch(workspace, tmp_path):
    common = dict(data=str(workspace / "data"), student=str(workspace / "tiny"), max_steps=1, learning_rate=1e-2,
                  eval_split="none", save_strategy="no", logging_steps=1)  # fmt: skip
    big = train(TrainConfig(**common, out=str(tmp_path / "big"), batch_size=8, grad_accum=1))
    acc = train(TrainConfig(**common, out=str(tmp_path / "acc"), batch_size=4, grad_accum=2))
    a, b = weights(big), weights(acc)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert abs(log(big)[0]["loss"] - log(acc)[0]["loss"]) < 1e-4


def test_same_seed_twice_gives_identical_weights_and_another_seed_does_not(workspace, tmp_path):
    common = dict(data=str(workspace / "data"), student=str(workspace / "tiny"), max_steps=3, learning_rate=1e-2,
                  eval_split="none", save_strategy="no", logging_steps=1)  # fmt: skip
    runs = [weights(train(TrainConfig(**common, out=str(tmp_path / f"s{i}"), seed=seed))) for i, seed in enumerate((7, 7, 8))]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_validation_loss_is_reported_per_task(workspace, tmp_path, cli):
    out = tmp_path / "s"
    code, stdout, err = cli("train", workspace / "data", "--student", workspace / "tiny", "--out", out, "--epochs", 1,
                            "--batch-size", 8, "--save-strategy", "no")  # fmt: skip
    assert code == 0, err
    last = [h for h in read_student(out)["log_history"] if "eval_loss" in h][-1]
    assert last["eval_loss_label"] > 0 and last["eval_loss_rationale"] > 0
    line = f"total {last['eval_loss']:.4f}, label {last['eval_loss_label']:.4f}, rationale {last['eval_loss_rationale']:.4f}"
    assert line in stdout and f"Validation loss (last evaluation): {line}" in (out / "README.md").read_text()


def test_yaml_config_maps_onto_the_dataclass_and_resume(workspace, tmp_path, cli):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"student: {workspace / 'tiny'}\nepochs: 2\nbatch_size: 8\nrationale_weight: 0.5\nsave_strategy: epoch\n")
    out = tmp_path / "s"
    code, stdout, err = cli("train", workspace / "data", "--config", cfg, "--out", out)
    assert code == 0, err
    meta = json.loads((out / "rdistill_train.json").read_text())
    assert meta["config"]["rationale_weight"] == 0.5 and meta["config"]["epochs"] == 2.0 and "Training summary" in stdout
    code, _, err = cli("train", workspace / "data", "--config", cfg, "--out", out, "--resume", "--epochs", "3")
    assert code == 0, err
    cfg.write_text("epochz: 2\n")
    code, _, err = cli("train", workspace / "data", "--config", cfg, "--out", out)
    assert code == 2 and "unknown setting 'epochz'" in err


def test_messages_format_needs_a_chat_template(workspace, tmp_path):
    build(str(workspace / "teacher.jsonl"), BuildConfig(records=str(workspace / "teacher.jsonl"), out=str(tmp_path / "m"), format="messages"))
    with pytest.raises(UsageError, match="no chat template"):
        train(TrainConfig(data=str(tmp_path / "m"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), max_steps=1))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workspace / "tiny"))
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    tok.save_pretrained(str(tmp_path / "chat"))
    import shutil

    for f in ("config.json", "model.safetensors", "generation_config.json"):
        if (workspace / "tiny" / f).exists():
            shutil.copy(workspace / "tiny" / f, tmp_path / "chat" / f)
    out = train(TrainConfig(data=str(tmp_path / "m"), student=str(tmp_path / "chat"), out=str(tmp_path / "s2"), max_steps=2, eval_split="none"))
    assert (out / "model.safetensors").is_file()
    report = evaluate(EvalConfig(student=str(out), latency_samples=1))  # asked exactly as trained: through the template
    asked = report["student"]["prompt_example"]
    assert asked.startswith("<user>[label] ") and asked.endswith("\n<assistant>"), asked


def test_bad_training_input(workspace, tmp_path):
    with pytest.raises(UsageError, match="not a dataset folder"):
        train(TrainConfig(data=str(tmp_path), student=str(workspace / "tiny"), out=str(tmp_path / "s")))
    with pytest.raises(UsageError, match="not a model folder"):
        train(TrainConfig(data=str(workspace / "data"), student=str(tmp_path / "nothing-here"), out=str(tmp_path / "s")))
    with pytest.raises(UsageError, match="--qlora needs a CUDA GPU"):
        train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), qlora=True))


def test_score_on_a_hand_checked_toy_case():
    result = score(["4", "7", "1", None], ["4", "8", "1", "2"], ["4", "7", None, "3"])
    assert result["accuracy"] == 0.5 and result["n_gold"] == 4
    assert result["agreement"] == pytest.approx(2 / 3) and result["n_teacher"] == 3


def test_evaluate_student_against_gold_and_teacher(workspace, tmp_path, cli):
    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), epochs=1, batch_size=8))
    code, stdout, err = cli("eval", out, "--teacher-records", workspace / "teacher.jsonl", "--out", tmp_path / "r", "--rationales", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    ex = report["examples"]
    assert report["student"]["n"] == len(ex) > 0
    assert report["student"]["accuracy"] == sum(e["student"] == e["gold"] for e in ex) / len(ex)
    assert report["student"]["agreement_with_teacher"] == sum(e["student"] == e["teacher"] for e in ex) / len(ex)
    assert report["teacher"]["accuracy"] == 1.0 and report["teacher"]["n_matched"] == len(ex)
    low, high = report["student"]["accuracy_ci95"]
    assert low <= report["student"]["accuracy"] <= high and high - low > 0.1  # a dozen rows: a wide interval
    assert report["comparison"]["n"] == len(ex) and report["split"] == "test"
    s = report["student"]
    assert s["cost_per_1k_usd"] == pytest.approx(s["latency_s"] * 1000 * 0.10 / 3600, rel=0.05) and "$0.1/hour" in s["cost_basis"]
    assert s["size_basis"] == "the student folder (full weights)"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "its cost is measured seconds per answer at batch 1 x $0.1/hour" in md
    assert "95% CI" in md and "Student minus teacher on the same" in md and "examples have a gold label" in md
    assert report["student"]["prompt_tokens"] < report["teacher"]["prompt_tokens"]  # no engineered prompt at inference
    assert report["student"]["parameters"] > 0 and report["student"]["size_bytes"] > 0 and len(report["rationales"]) == 2
    assert (tmp_path / "r" / "report.png").stat().st_size > 5000 and "| accuracy (gold) |" in (tmp_path / "r" / "report.md").read_text()
    assert "Evaluation" in stdout
    assert "## Evaluation" in (out / "README.md").read_text() and "| accuracy (gold) |" in (out / "README.md").read_text()
    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"question": "What is 1 + 2?", "answer": 3}\n')
    report = evaluate(EvalConfig(student=str(out), data=str(raw), label_field="answer"))
    assert report["examples"][0]["input"] == "Q: What is 1 + 2?" and report["examples"][0]["gold"] == "3"
    table = tmp_path / "raw.csv"  # any type a loader is registered for, as generate reads it
    table.write_text('question,answer\n"What is 1 + 2?",3\n')
    from_csv = evaluate(EvalConfig(student=str(out), data=str(table), label_field="answer"))
    assert from_csv["examples"] == report["examples"]
    assert from_csv["examples"][0]["input"] == "Q: What is 1 + 2?"


def test_teacher_latency_measured_one_answer_at_a_time_like_the_student(workspace, tmp_path, make_server):
    """Recorded latencies include queueing (here: none, a fast server); asked to measure, eval asks the teacher again,
    one answer (n=1) at a time with the run's settings, on --latency-samples rows. An API teacher is not re-asked by
    default; a teacher on this machine (local/...) is, and is then priced by the serving machine's time."""
    from rationale_distill.testing.fake_openai import Faults

    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), epochs=1, batch_size=8))
    slow = make_server(faults=Faults(latency=1.0))
    auto = evaluate(EvalConfig(student=str(out), teacher_records=str(workspace / "teacher.jsonl"), teacher_api_base=slow.base_url))
    assert slow.requests == [] and auto["teacher"]["latency_s"] < 1.0 and "from its records" in auto["teacher"]["latency_basis"]
    measured = evaluate(EvalConfig(student=str(out), teacher_records=str(workspace / "teacher.jsonl"), teacher_latency="measure",
                                   teacher_api_base=slow.base_url, latency_samples=3, out=str(tmp_path / "r")))  # fmt: skip
    assert len(slow.requests) == 3 and all(b.get("n", 1) == 1 for b in slow.requests)
    recorded = [json.loads(x) for x in (workspace / "teacher.jsonl").read_text().splitlines()]
    assert slow.requests[0]["messages"] == next(r["messages"] for r in recorded if r["input"] == measured["examples"][0]["input"])
    t = measured["teacher"]
    assert 1.0 <= t["latency_s"] < 2.0 and t["latency_measured"] == 3 and t["latency_basis"].startswith("measured: 3 answers")
    assert "The teacher's latency is measured: 3 answers asked one at a time" in (tmp_path / "r" / "report.md").read_text()
    assert t["cost_basis"].startswith("one answer at its price")  # an API teacher keeps its own price
    with pytest.raises(UsageError, match="--teacher-latency measure: asking the teacher openai/fake failed"):
        evaluate(EvalConfig(student=str(out), teacher_records=str(workspace / "teacher.jsonl"), teacher_latency="measure",
                            teacher_api_base="http://127.0.0.1:9/v1"))  # fmt: skip


def test_a_teacher_on_this_machine_is_timed_and_priced_as_the_student_is(workspace, tmp_path):
    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), epochs=1, batch_size=8))
    prompt = tmp_path / "p.yaml"
    prompt.write_text("name: p\nformat: text\ntemplate: 'Q: {input}'\nanswer_type: number\n")
    rows = [json.loads(x) for x in (workspace / "data" / "test.jsonl").read_text().splitlines()]
    raw = tmp_path / "test.jsonl"
    raw.write_text("".join(json.dumps({"question": r["prompt"].removeprefix("[label] ").removeprefix("Q: "), "answer": r["gold"]}) + "\n" for r in rows if r["task"] == "label"))
    rd.generate(rd.GenerateConfig(data=str(raw), teachers=[f"local/{workspace / 'tiny'}"], input_field="question", label_field="answer",
                                  prompt=str(prompt), max_tokens=4, temperature=0, out=str(tmp_path / "t.jsonl"), cache_dir=str(tmp_path / "c")))  # fmt: skip
    report = evaluate(EvalConfig(student=str(out), data=str(raw), input_field="question", label_field="answer",
                                 teacher_records=str(tmp_path / "t.jsonl"), latency_samples=2))  # fmt: skip
    t = report["teacher"]
    assert t["latency_measured"] == 2 and t["latency_basis"].startswith("measured")
    assert t["cost_per_1k_usd"] == pytest.approx(t["latency_s"] * 1000 * 0.10 / 3600, rel=0.01) and "runs on this machine" in t["cost_basis"]


@pytest.mark.gpu
def test_gpu_bf16_lora(workspace, tmp_path):
    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "g"), lora=True, max_steps=5, device="cuda"))
    meta = json.loads((out / "rdistill_train.json").read_text())
    assert meta["device"] == "cuda" and meta["bf16"] is True


# --- faults: kills while training and while saving; resuming the right checkpoint ---------------------------------


def test_resume_after_kill_takes_the_last_complete_checkpoint_and_refuses_a_foreign_one(workspace, tmp_path, cli):
    out = tmp_path / "s"
    args = ["train", workspace / "data", "--student", workspace / "tiny", "--out", out, "--batch-size", "2",
            "--max-steps", "2000", "--save-strategy", "steps", "--save-steps", "3", "--eval-split", "none"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "rationale_distill.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    while len(list(out.glob("checkpoints/checkpoint-*/rdistill_checkpoint.json"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 in the middle of training
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert not (out / "rdistill_train.json").exists()
    complete = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoints/checkpoint-*/rdistill_checkpoint.json"))
    last = complete[-1]
    torn = out / "checkpoints" / "checkpoint-99999"  # newer, but the trainer died while writing it
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 64)

    code, _, err = cli(*args, "--resume", "--learning-rate", "0.01")  # other settings: another run's checkpoints
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"checkpoint-{last} belongs to another run" in err

    code, _, err = cli(*args, "--resume", "--max-steps", last + 3)  # the same run, resumed and extended
    assert code == 0, err
    assert "checkpoint-99999 is incomplete (killed while saving?), passed over" in err
    meta = read_student(out, verify=True)
    assert meta["resumed_from"].endswith(f"checkpoint-{last}")
    assert meta["log_history"][-1]["step"] == last + 3


def test_a_kill_during_the_final_save_never_passes_for_a_finished_student(workspace, tmp_path, monkeypatch):
    import rationale_distill.training.sft as trl_trainer
    from rationale_distill.pipeline import train_or_reuse

    config = TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"),
                         max_steps=2, batch_size=4, save_strategy="no", eval_split="none")  # fmt: skip
    out = train(config)
    assert read_student(out, verify=True)["fingerprint"] == fingerprint(config)

    def killed(out, meta):  # the process dies after writing run B's weights, before its manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(trl_trainer, "finish_output", killed)
    with pytest.raises(KeyboardInterrupt):
        train(replace(config, learning_rate=0.05))
    monkeypatch.undo()
    with pytest.raises(UsageError, match="did not finish saving"):
        read_student(out)
    with pytest.raises(UsageError, match="did not finish saving"):
        evaluate(EvalConfig(student=str(out)))
    said = []
    summary = train_or_reuse(config, None, said.append)  # run A's settings again: B's weights must not pass for A's
    assert summary["reused"] is False and read_student(out, verify=True)["fingerprint"] == fingerprint(config)
    assert train_or_reuse(config, None, said.append)["reused"] is True
    (out / "config.json").write_text((out / "config.json").read_text().replace("{", '{"edited": 1, ', 1))
    assert train_or_reuse(config, None, said.append)["reused"] is False
    assert any("config.json is missing or changed since training" in line for line in said), said


# --- targets the student can learn from: BOS kept, EOS always, rows that do not fit dropped and counted -------------


def test_a_long_prompt_keeps_bos_and_a_long_completion_is_dropped_not_cut(workspace):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workspace / "tiny"))
    long_prompt = {"task": "label", "prompt": "[label] Q: " + "What is 12 + 30? " * 40, "completion": " 42"}
    item = tokenize_row(long_prompt, tok, 64)
    assert len(item["input_ids"]) == 64 and item["prompt_cut"]
    assert item["input_ids"][0] == tok.bos_token_id  # the left cut kept BOS
    completion = [t for t in item["labels"] if t != -100]
    assert completion[-1] == tok.eos_token_id and tok.decode(completion[:-1]).strip() == "42"  # EOS in the labels
    assert item["input_ids"][-len(completion) - 4 : -len(completion)] == tok(long_prompt["prompt"], add_special_tokens=False)["input_ids"][-4:]
    long_completion = {"task": "rationale", "prompt": "[rationale] Q: What is 1 + 2?", "completion": " 1 plus 2 is 3." * 30}
    assert tokenize_row(long_completion, tok, 64) is None  # never cut: dropped, so the caller can count it
    short = {"task": "label", "prompt": "[label] Q: What is 1 + 2?", "completion": " 3"}
    whole = tokenize_row(short, tok, 64)
    assert not whole["prompt_cut"] and whole["input_ids"][0] == tok.bos_token_id and whole["labels"][-1] == tok.eos_token_id
    assert min_prompt_tokens(64) == 16 and min_prompt_tokens(4096) == 64


def test_rows_that_do_not_fit_are_counted_in_the_summary_and_the_card(workspace, tmp_path, cli):
    import shutil

    def dataset(name, times):  # the workspace data with every rationale (or every completion) made longer
        data = tmp_path / name
        shutil.copytree(workspace / "data", data)
        rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
        (data / "train.jsonl").write_text("".join(
            json.dumps({**r, "completion": r["completion"] * (times if r["task"] == "rationale" or name == "long" else 1)}) + "\n"
            for r in rows))  # fmt: skip
        return data

    out = tmp_path / "s"
    code, stdout, err = cli("train", dataset("rationales", 3), "--student", workspace / "tiny", "--out", out, "--max-steps", 1,
                            "--max-length", 16, "--eval-split", "none", "--save-strategy", "no")  # fmt: skip
    assert code == 0, err
    fit = read_student(out)["fit"]["train"]
    assert fit["dropped"] == {"rationale": fit["rows"] // 2} and fit["kept"] == fit["rows"] // 2  # the label rows fit
    assert "rows that fit (train)" in stdout and f"{fit['kept']} of {fit['rows']} rows" in stdout
    assert f"Rows that fit (max_length 16), train: {fit['kept']} of {fit['rows']} rows" in (out / "README.md").read_text()
    code, _, err = cli("train", dataset("long", 20), "--student", workspace / "tiny", "--out", tmp_path / "t", "--max-length", 16)
    assert code == 2 and "--max-length 16: no training row fits" in err


def test_teacher_cost_is_one_answer_at_its_price_not_every_sample(workspace, tmp_path):
    from rationale_distill.evaluation.evaluate import Example, teacher_view
    from rationale_distill.records import read_records, write_jsonl

    records = read_records(workspace / "teacher.jsonl")[:5]
    for r in records:
        r.samples = [replace(r.samples[0], index=i, cost=0.002) for i in range(4)]  # 4 samples per input, $0.002 each
    write_jsonl(tmp_path / "t.jsonl", records)
    view = teacher_view(str(tmp_path / "t.jsonl"), [Example(r.input, r.input, r.label) for r in records])
    assert view["summary"]["cost_per_1k_usd"] == pytest.approx(2.0)  # $0.002 per answer, not $0.008 per input
    assert view["summary"]["samples_per_answer"] == 4


@pytest.mark.parametrize("name", ["linear-decay", "cosine-decay"])
def test_a_decaying_rationale_weight_follows_its_schedule_step_by_step(workspace, tmp_path, name):
    from rationale_distill.training.multitask import schedule

    out = train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), max_steps=6,
                            batch_size=4, learning_rate=1e-3, logging_steps=1, eval_split="none", save_strategy="no",
                            rationale_weight=2.0, rationale_schedule=name))  # fmt: skip
    steps = [h for h in log(out) if "loss" in h and "loss_rationale" in h and "loss_label" in h]
    assert len(steps) >= 4
    for h in steps:  # logged after step s: the loss was computed at global step s - 1
        factor = schedule(name, (h["step"] - 1) / 6)
        assert abs(h["loss"] - (h["loss_label"] + 2.0 * factor * h["loss_rationale"])) < 1e-3 * h["loss"], (h, factor)
    assert schedule(name, 0) == 1 and abs(schedule(name, 1)) < 1e-9


def _spy_forward(monkeypatch, mask: str = "takes"):
    """Record what each training-mode forward of the tiny Llama returns. ``mask``: "takes" (transformers' own), "refuses"
    (a forward with no ``logits_to_keep``: an older or custom architecture) or "mis-slices" (one that reads any
    ``logits_to_keep`` as "the last N positions", as forwards did before masks)."""
    from transformers import LlamaForCausalLM

    original, seen = LlamaForCausalLM.forward, []

    def forward(self, *args, **kwargs):
        keep = kwargs.get("logits_to_keep")
        if mask == "refuses" and keep is not None:
            raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")
        if mask == "mis-slices" and isinstance(keep, torch.Tensor):
            kwargs["logits_to_keep"] = int(keep.sum())
        out = original(self, *args, **kwargs)
        if self.training:
            seen.append(tuple(out.logits.shape))
        return out

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return seen


def test_the_lm_head_runs_at_completion_positions_only_with_the_same_loss_and_gradients(workspace, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from rationale_distill.training.multitask import completion_positions, head_takes_a_mask

    model = AutoModelForCausalLM.from_pretrained(str(workspace / "tiny"))
    assert head_takes_a_mask(model) and model.training is False
    batch = _batch(workspace, _rows(workspace, 8))
    keep = completion_positions(batch["labels"])

    def loss_and_grads(**kw):
        model.zero_grad()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw)
        loss = multitask_loss(out.logits, batch["labels"], batch["task_ids"], (1.0, 0.7), task_token_counts(batch["labels"], batch["task_ids"]))[0]
        loss.backward()
        return out.logits.shape, loss, [p.grad.clone() for p in model.parameters()]

    full_shape, full, full_grads = loss_and_grads()
    cut_shape, cut, cut_grads = loss_and_grads(logits_to_keep=keep)
    assert cut_shape[0] == int(keep.sum()) < full_shape[0] * full_shape[1] / 2  # well under half the positions
    assert torch.allclose(full, cut, atol=1e-6) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_grads, cut_grads))

    seen = _spy_forward(monkeypatch)  # and the trainer asks for exactly that: (N, V) logits on every training step
    train(TrainConfig(data=str(workspace / "data"), student=str(workspace / "tiny"), out=str(tmp_path / "s"), max_steps=3, batch_size=4,
                      eval_split="none", save_strategy="no"))  # fmt: skip
    assert len(seen) == 3 and all(len(shape) == 2 for shape in seen), seen


@pytest.mark.parametrize("mask", ["refuses", "mis-slices"])
def test_a_model_whose_forward_takes_no_logits_mask_trains_to_the_same_weights(workspace, tmp_path, monkeypatch, mask):
    common = dict(data=str(workspace / "data"), student=str(workspace / "tiny"), max_steps=3, batch_size=4, learning_rate=1e-2,
                  eval_split="none", save_strategy="no")  # fmt: skip
    masked = weights(train(TrainConfig(**common, out=str(tmp_path / "masked"))))
    seen = _spy_forward(monkeypatch, mask)
    full = weights(train(TrainConfig(**common, out=str(tmp_path / "full"))))
    assert len(seen) == 3 and all(len(shape) == 3 for shape in seen)  # full (B, T, V) logits: the probe said no
    assert all(torch.allclose(masked[k], full[k], atol=1e-5) for k in masked)
