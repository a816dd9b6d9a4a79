"""Classifier students (#15): encoder-classifier and tfidf-logreg, hard and soft labels, label mapping, save and
reload, evaluation in the same report as LM students. Tiny models built from a config; seconds on a CPU."""

import json
import math
import random

import pytest
import torch

from rationale_distill.errors import UsageError
from rationale_distill.evaluation.evaluate import EvalConfig, evaluate
from rationale_distill.testing.fake_openai import FakeOpenAI
from rationale_distill.testing.tiny import make_tiny_encoder
from rationale_distill.training import TrainConfig, read_student, train
from rationale_distill.training.classifier import classifier_loss, load_encoder
from rationale_distill.training.labels import class_logprobs, read_class_data, soft_label
from rationale_distill.training.linear import load_linear

QUEUES = {"billing": ["refund", "invoice", "charged twice", "receipt"], "technical": ["error 502", "crash", "bug", "slow api"],
          "account": ["password", "login", "two-factor", "remove a user"]}  # fmt: skip
OPENERS = ["Hi team,", "Hello,", "Urgent:", "Quick question:", "Good morning,"]


def tickets(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        queue = list(QUEUES)[i % 3]
        rows.append({"text": f"{rng.choice(OPENERS)} I need help with a {rng.choice(QUEUES[queue])} on order {rng.randint(100, 999)}.", "queue": queue})
    return rows


def triage_responder(body, i):
    """Names the queue its keyword belongs to; on 'order 1xx' one sample in four names the next queue (a split vote)."""
    text = body["messages"][-1]["content"]
    queue = next(q for q, words in QUEUES.items() if any(w in text for w in words))
    if " order 1" in text and i == 3:
        queue = list(QUEUES)[(list(QUEUES).index(queue) + 1) % 3]
    return f"The customer writes about their {queue} issue. So the answer is {queue}."


def dataset_folder(path, rows, options=None, teachers=("openai/fake",)):
    """A dataset folder as `rdistill build` writes it, by hand: build.json and train.jsonl of label rows."""
    path.mkdir(parents=True)
    report = {"student_input": {"answer_prefix": "", "completion_prefix": " ", "options": options}, "teachers": list(teachers),
              "config": {"mode": "label-only"}}  # fmt: skip
    (path / "build.json").write_text(json.dumps(report))
    (path / "train.jsonl").write_text("".join(json.dumps({"task": "label", **r}) + "\n" for r in rows))
    return path


def ask_teacher(root, rows, **options):
    """The triage fake teacher over real HTTP on ``rows``: root/teacher.jsonl."""
    import rationale_distill as rd

    (root / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "triage.yaml").write_text("name: triage\ntemplate: 'Message: {input}'\nanswer_marker: So the answer is\n")
    with FakeOpenAI(responder=triage_responder) as server:
        rd.generate(rd.GenerateConfig(data=str(root / "tickets.jsonl"), teachers=["openai/fake"], api_base=server.base_url, input_field="text",
                                      label_field="queue", prompt=str(root / "triage.yaml"), out=str(root / "teacher.jsonl"),
                                      cache_dir=str(root / "cache"), **options))  # fmt: skip
    return root / "teacher.jsonl"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Teacher records over real HTTP (4 samples, split votes on some inputs) -> a label-only dataset -> a tiny encoder."""
    from rationale_distill.data.dataset import BuildConfig, build

    root = tmp_path_factory.mktemp("classifiers")
    ask_teacher(root, tickets(90, 0), samples=4)
    build(str(root / "teacher.jsonl"), BuildConfig(records=str(root / "teacher.jsonl"), out=str(root / "data"), mode="label-only",
                                                   validation_fraction=0.1, test_fraction=0.2))  # fmt: skip
    make_tiny_encoder(root / "encoder", [r["text"] for r in tickets(200, 1)])
    return root


# --- soft labels, unit by unit ---------------------------------------------------------------------------------------


def test_votes_become_a_tempered_distribution_over_the_classes():
    row = {"answer_votes": [{"answer": " billing", "samples": 3}, {"answer": " account", "samples": 1}]}
    classes = ["account", "billing", "technical"]
    assert soft_label(row, classes, "votes", 1.0, " ") == ([0.25, 0.75, 0.0], "soft")
    warm, _ = soft_label(row, classes, "votes", 2.0, " ")  # share ** (1/T), renormalised
    assert warm == pytest.approx([math.sqrt(1) / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3)), 0.0])
    assert soft_label({"answer_votes": [{"answer": " other", "samples": 2}]}, classes, "votes", 1.0, " ") == (None, "no vote for a class")


def test_class_probabilities_come_from_the_first_token_of_the_answer():
    tokens = [{"token": " ", "logprob": -0.01, "top_logprobs": [{"token": " ", "logprob": -0.01}]},  # blank: not the answer's first token
              {"token": "bill", "logprob": math.log(0.6), "top_logprobs": [
                  {"token": "bill", "logprob": math.log(0.6)}, {"token": " tech", "logprob": math.log(0.2)},
                  {"token": "acc", "logprob": math.log(0.1)}, {"token": " the", "logprob": math.log(0.1)}]},  # " the" names no class
              {"token": "ing", "logprob": -0.01, "top_logprobs": [{"token": "ing", "logprob": -0.01}]}]  # fmt: skip
    row = {"teacher_logprobs": {"tokens": tokens}}
    classes = ["account", "billing", "technical"]
    probs, why = class_logprobs(row, classes, 1.0)
    assert why == "soft" and probs == pytest.approx([0.1 / 0.9, 0.6 / 0.9, 0.2 / 0.9])
    soft, _ = class_logprobs(row, classes, 2.0)
    assert soft == pytest.approx([x / sum(math.sqrt(v) for v in (0.1, 0.6, 0.2)) for x in map(math.sqrt, (0.1, 0.6, 0.2))])
    assert class_logprobs({"teacher_logprobs": {"tokens": tokens[-1:]}}, classes, 1.0) == (None, "no alternative names a class")
    assert class_logprobs(row, ["billing", "bill-later", "technical"], 1.0) == (None, "a token starts two classes")


def test_the_classifier_loss_is_the_hand_written_mix_of_hard_and_soft_terms():
    torch.manual_seed(0)
    logits = torch.randn(3, 4)
    labels = torch.tensor([0, 2, 3])
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.7]])
    has = torch.tensor([True, False, True])
    alpha, t = 0.3, 2.0
    expected = []
    for i in range(3):
        ce = -torch.log_softmax(logits[i], -1)[labels[i]]
        if has[i]:
            q = torch.log_softmax(logits[i] / t, -1)
            kl = sum(p * (math.log(p) - q[k]) for k, p in enumerate(soft[i].tolist()) if p > 0) * t * t
            expected.append(alpha * ce + (1 - alpha) * kl)
        else:
            expected.append(ce)
    assert float(classifier_loss(logits, labels, soft, has, alpha, t)) == pytest.approx(float(sum(expected) / 3), abs=1e-6)


# --- the soft-label loss changes what the student learns -------------------------------------------------------------


def _split_vote_rows():
    """Two inputs; the teacher voted 3-1 on the first and 4-0 on the second."""
    one = {"input": "please refund the duplicate charge", "label": "billing",
           "answer_votes": [{"answer": " billing", "samples": 3}, {"answer": " technical", "samples": 1}]}
    two = {"input": "the api crashes with error 502", "label": "technical", "answer_votes": [{"answer": " technical", "samples": 4}]}
    return [one, two] * 8


def test_tfidf_logreg_learns_the_teachers_distribution_from_soft_labels(tmp_path):
    data = dataset_folder(tmp_path / "d", _split_vote_rows())
    common = dict(data=str(data), trainer="tfidf-logreg", trainer_options={"logreg_c": 1e4}, eval_split="none")
    soft = load_linear(train(TrainConfig(**common, out=str(tmp_path / "soft"), objective="kd", kd_source="votes", kd_alpha=0.0, kd_temperature=1.0)))
    hard = load_linear(train(TrainConfig(**common, out=str(tmp_path / "hard"))))
    billing = soft.classes.index("billing")
    assert soft.probabilities(["please refund the duplicate charge"])[0, billing] == pytest.approx(0.75, abs=0.03)
    assert hard.probabilities(["please refund the duplicate charge"])[0, billing] > 0.97


def test_encoder_classifier_learns_the_teachers_distribution_from_soft_labels(tmp_path):
    rows = _split_vote_rows()
    encoder = make_tiny_encoder(tmp_path / "enc", [r["input"] for r in rows])
    data = dataset_folder(tmp_path / "d", rows)
    common = dict(data=str(data), trainer="encoder-classifier", student=str(encoder), max_steps=120, batch_size=4,
                  learning_rate=3e-3, eval_split="none", logging_steps=20)  # fmt: skip
    soft = load_encoder(train(TrainConfig(**common, out=str(tmp_path / "soft"), objective="kd", kd_source="votes", kd_alpha=0.0, kd_temperature=1.0)))
    hard = load_encoder(train(TrainConfig(**common, out=str(tmp_path / "hard"))))
    billing = soft.classes.index("billing")
    assert torch.softmax(soft.logits(["please refund the duplicate charge"]), -1)[0, billing].item() == pytest.approx(0.75, abs=0.05)
    assert torch.softmax(hard.logits(["please refund the duplicate charge"]), -1)[0, billing].item() > 0.95


# --- label mapping, save and reload ----------------------------------------------------------------------------------


def test_encoder_classifier_saves_its_label_mapping_and_reloads_as_a_plain_transformers_model(tmp_path):
    from transformers import AutoModelForSequenceClassification

    rows = [{"input": f"{word} {word} {word}", "label": label} for word, label in (("red", "zeta"), ("green", "alpha"), ("blue", "mid"))] * 6
    encoder = make_tiny_encoder(tmp_path / "enc", [r["input"] for r in rows])
    data = dataset_folder(tmp_path / "d", rows, options=["zeta", "alpha", "mid"])  # the prompt's order is the class index
    out = train(TrainConfig(data=str(data), trainer="encoder-classifier", student=str(encoder), out=str(tmp_path / "s"), max_steps=60,
                            batch_size=6, learning_rate=3e-3, eval_split="none", lora=True, lora_target_modules="query,value"))  # fmt: skip
    plain = AutoModelForSequenceClassification.from_pretrained(str(out))  # merged: no peft needed to load it
    assert plain.config.id2label == {0: "zeta", 1: "alpha", 2: "mid"} and not (out / "adapter_config.json").exists()
    student = load_encoder(out)
    assert student.predict(["red red red", "green green green", "blue blue blue"])[0] == ["zeta", "alpha", "mid"]
    meta = read_student(out, verify=True)
    assert meta["classes"] == ["zeta", "alpha", "mid"] and meta["trainable_parameters"] < meta["parameters"]  # LoRA + head


def test_tfidf_logreg_reloads_its_classes_and_refuses_a_changed_model_file(tmp_path):
    rows = [{"input": f"{word} thing", "label": label} for word, label in (("red", "zeta"), ("green", "alpha"), ("blue", "mid"))] * 4
    data = dataset_folder(tmp_path / "d", rows)
    out = train(TrainConfig(data=str(data), trainer="tfidf-logreg", out=str(tmp_path / "s"), eval_split="none"))
    assert load_linear(out).predict(["red thing", "green thing", "blue thing"])[0] == ["zeta", "alpha", "mid"]
    (out / "model.joblib").write_bytes((out / "model.joblib").read_bytes() + b"\0")
    with pytest.raises(UsageError, match="model.joblib is missing or changed since training"):
        load_linear(out)


# --- refusals --------------------------------------------------------------------------------------------------------


def test_classifier_trainers_refuse_what_they_cannot_train(tmp_path, ws):
    data = str(ws / "data")
    with pytest.raises(UsageError, match="--kd-source teacher: --trainer tfidf-logreg takes soft labels from votes or logprobs"):
        train(TrainConfig(data=data, trainer="tfidf-logreg", out=str(tmp_path / "a"), objective="kd"))
    with pytest.raises(UsageError, match="--objective multitask\\+kd: --trainer tfidf-logreg trains on labels only"):
        train(TrainConfig(data=data, trainer="tfidf-logreg", out=str(tmp_path / "a"), objective="multitask+kd"))
    with pytest.raises(UsageError, match="no training row .* carries the teacher's logprobs"):
        train(TrainConfig(data=data, trainer="tfidf-logreg", out=str(tmp_path / "a"), objective="kd", kd_source="logprobs"))
    with pytest.raises(UsageError, match="logreg_cc"):
        train(TrainConfig(data=data, trainer="tfidf-logreg", out=str(tmp_path / "a"), trainer_options={"logreg_cc": 1}))
    with pytest.raises(UsageError, match="--trainer trl-sft takes no options of its own"):
        train(TrainConfig(data=data, trainer="trl-sft", out=str(tmp_path / "a"), trainer_options={"logreg_c": 1}))
    single = dataset_folder(tmp_path / "one", [{"input": "x", "label": "only"}] * 3)
    with pytest.raises(UsageError, match="at least two classes"):
        train(TrainConfig(data=str(single), trainer="tfidf-logreg", out=str(tmp_path / "a")))


# --- the whole path, from the command line ---------------------------------------------------------------------------


def test_build_writes_input_label_and_votes_for_classifiers(ws):
    rows = [json.loads(x) for x in (ws / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["input"].startswith("Message: ") and r["label"] in QUEUES for r in rows)
    split = [r for r in rows if len(r["answer_votes"]) == 2]
    assert split and all(sum(v["samples"] for v in r["answer_votes"]) == 4 for r in rows)
    data = read_class_data(ws / "data", "votes", 1.0)
    assert data.classes == sorted(QUEUES) and data.soft_counts["soft"] == len(rows) + len(data.splits.get("validation", []))
    assert sorted(max(e.soft) for e in data.splits["train"])[0] == 0.75  # a split vote, 3 of 4


def test_cli_trains_both_kinds_and_evaluates_them_in_the_same_report(ws, tmp_path, cli):
    data = ws / "data"
    code, out, err = cli("train", data, "--trainer", "tfidf-logreg", "--objective", "kd", "--kd-source", "votes", "--logreg-c", "5",
                         "--out", tmp_path / "linear")  # fmt: skip
    assert code == 0, err
    assert "tfidf-logreg" in out and json.loads((tmp_path / "linear" / "rdistill_train.json").read_text())["trainer_settings"]["logreg_c"] == 5
    code, _, err = cli("train", data, "--trainer", "tfidf-logreg", "--freeze-encoder", "--out", tmp_path / "x")
    assert code == 2 and "--freeze-encoder is a setting of --trainer encoder-classifier, not of tfidf-logreg" in err
    code, _, err = cli("train", data, "--trainer", "encoder-classifier", "--student", ws / "encoder", "--epochs", "2",
                       "--learning-rate", "3e-3", "--out", tmp_path / "encoder")  # fmt: skip
    assert code == 0, err
    for kind in ("linear", "encoder"):
        code, out, err = cli("eval", tmp_path / kind, "--teacher-records", ws / "teacher.jsonl", "--teacher-latency", "records",
                             "--out", tmp_path / f"report-{kind}")  # fmt: skip
        assert code == 0, err
        report = json.loads((tmp_path / f"report-{kind}" / "report.json").read_text())
        s = report["student"]
        assert s["kind"] == {"linear": "tfidf-logreg", "encoder": "encoder-classifier"}[kind]
        assert s["accuracy"] is not None and len(s["accuracy_ci95"]) == 2 and s["agreement_with_teacher"] is not None
        assert s["latency_s"] > 0 and s["throughput_per_s"] > 0 and s["parameters"] > 0 and s["size_bytes"] > 0 and s["cost_per_1k_usd"] >= 0
        assert report["teacher"]["accuracy"] is not None
        assert "## Evaluation" in (tmp_path / kind / "README.md").read_text()
    assert json.loads((tmp_path / "report-linear" / "report.json").read_text())["student"]["accuracy"] >= 0.9  # keywords: easy


def test_logprobs_from_the_teacher_reach_the_classifier_through_the_builder(tmp_path):
    from rationale_distill.data.dataset import BuildConfig, build

    records = ask_teacher(tmp_path, tickets(30, 2), logprobs=3)
    build(str(records), BuildConfig(records=str(records), out=str(tmp_path / "d"), mode="label-only", test_fraction=0.2))
    classes = read_class_data(tmp_path / "d", "logprobs", 1.0)
    # the fake's logprobs put all mass on the word it wrote: the soft label is the one-hot of the teacher's answer
    assert classes.soft_counts == {"soft": len(classes.splits["train"]) + len(classes.splits.get("validation", []))}
    assert all(e.soft[classes.classes.index(e.label)] == 1.0 for e in classes.splits["train"])
    out = train(TrainConfig(data=str(tmp_path / "d"), trainer="tfidf-logreg", out=str(tmp_path / "s"), objective="kd", kd_source="logprobs"))
    assert read_student(out)["data"]["soft_labels"]["soft"] > 0


def test_a_run_file_distils_into_tfidf_logreg_and_reuses_it(tmp_path, cli):
    """`rdistill run` with `trainer: tfidf-logreg` and its own settings in `trainer_options`: every stage, then a
    re-run that reuses the student (the default student is filled in the same way both times)."""
    for name, n, seed in (("train", 60, 3), ("test", 15, 4)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tickets(n, seed)))
    (tmp_path / "triage.yaml").write_text("name: triage\ntemplate: 'Message: {input}'\nanswer_marker: So the answer is\n")
    with FakeOpenAI(responder=triage_responder) as server:
        cfg = tmp_path / "run.yaml"
        cfg.write_text(f"""
out: {tmp_path / 'run'}
data: train.jsonl
test_data: test.jsonl
generate: {{teachers: [openai/fake], api_base: "{server.base_url}", prompt: triage.yaml, input_field: text, label_field: queue, samples: 2}}
build: {{mode: label-only, label_source: vote, test_fraction: 0}}
train: {{trainer: tfidf-logreg, objective: kd, kd_source: votes, trainer_options: {{logreg_c: 3}}}}
compare: {{teacher: true}}
""")
        code, _, err = cli("run", cfg)
        assert code == 0, err
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["student"]["kind"] == "tfidf-logreg" and summary["student"]["accuracy"] >= 0.9 and summary["train"]["reused"] is False
        assert read_student(tmp_path / "run" / "student")["trainer_settings"]["logreg_c"] == 3
        code, _, err = cli("run", cfg)
        assert code == 0 and json.loads((tmp_path / "run" / "summary.json").read_text())["train"]["reused"] is True


def test_the_shipped_triage_example_is_what_its_script_writes_and_its_prompt_loads(tmp_path):
    import importlib.util
    from pathlib import Path

    from rationale_distill.plugins import load_plugins
    from rationale_distill.generation.prompts import resolve_prompt

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_triage", root / "examples" / "make_triage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for split in ("train", "test"):
        assert (tmp_path / f"triage_{split}.jsonl").read_text() == (root / "rationale_distill" / "demo" / f"triage_{split}.jsonl").read_text()
    train = [json.loads(x) for x in (tmp_path / "triage_train.jsonl").read_text().splitlines()]
    test = {json.loads(x)["text"] for x in (tmp_path / "triage_test.jsonl").read_text().splitlines()}
    assert len(train) == 400 and len(test) == 150 and not test & {r["text"] for r in train}  # held out: no message in both
    prompt = resolve_prompt(load_plugins(), "triage-cot")
    assert prompt.options == ["billing", "technical", "account", "sales", "feedback"] and {r["queue"] for r in train} == set(prompt.options)
    assert [d["answer"] for d in prompt.examples] == prompt.options  # one demo per queue


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_encoder_gradient_accumulation_equals_one_big_batch_and_freezing_trains_the_head_only(tmp_path):
    rows = _split_vote_rows()[:8] + [{"input": "reset my password please", "label": "account"}] * 2  # 10 rows: micro-batches 4, 4, 2
    encoder = make_tiny_encoder(tmp_path / "enc", [r["input"] for r in rows], dropout=0.0)
    data = dataset_folder(tmp_path / "d", rows)
    common = dict(data=str(data), trainer="encoder-classifier", student=str(encoder), max_steps=3, learning_rate=1e-3, eval_split="none",
                  objective="kd", kd_source="votes", kd_alpha=0.3)  # fmt: skip
    big = _weights(train(TrainConfig(**common, out=str(tmp_path / "big"), batch_size=10, grad_accum=1)))
    acc = _weights(train(TrainConfig(**common, out=str(tmp_path / "acc"), batch_size=4, grad_accum=3)))  # unequal: weighted by rows
    assert all(torch.allclose(big[k], acc[k], atol=1e-5) for k in big)
    start = {k: v for k, v in _weights(train(TrainConfig(**{**common, "max_steps": 1, "learning_rate": 1e-12}, out=str(tmp_path / "zero")))).items()}
    frozen = _weights(train(TrainConfig(**{**common, "trainer_options": {"freeze_encoder": True}}, out=str(tmp_path / "frozen"))))
    moved = {k for k in frozen if not torch.allclose(frozen[k], start[k], atol=1e-7)}
    assert moved and all(k.startswith("classifier.") for k in moved), moved
