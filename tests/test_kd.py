"""Soft-target distillation (#13): the divergences against hand-written references, each source of soft targets end to
end on a tiny model, and the refusals (another tokenizer, no teacher)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import write_problems

import rationale_distill as rd
from rationale_distill.data.dataset import BuildConfig, build
from rationale_distill.errors import UsageError
from rationale_distill.testing.tiny import make_tiny_student
from rationale_distill.training import TrainConfig, train
from rationale_distill.training.divergence import divergence, full_divergence, topk_divergence
from rationale_distill.training.kd import token_pieces


def reference(s_logits, t_logits, beta, temperature):
    """Per-row divergence written out from the definitions, on full softmaxes."""
    p_s = torch.softmax(s_logits / temperature, -1)
    p_t = torch.softmax(t_logits / temperature, -1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(-1)  # noqa: E731
    if beta == 0:
        return kl(p_t, p_s)
    if beta == 1:
        return kl(p_s, p_t)
    m = (1 - beta) * p_s + beta * p_t
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_full_vocabulary_divergence_equals_the_reference_in_value_and_gradient(beta, temperature):
    torch.manual_seed(0)
    n, h, v = 7, 16, 50
    s_hidden = torch.randn(n, h, requires_grad=True)  # the kernel works in float32; the reference in float64
    s_head = (torch.randn(v, h) / 4).requires_grad_()
    t_hidden, t_head = torch.randn(n, h), torch.randn(v, h) / 4
    ours = full_divergence(s_hidden, s_head, t_hidden, t_head, beta, temperature)
    ref = reference((s_hidden @ s_head.T).double(), (t_hidden @ t_head.T).double(), beta, temperature)
    assert ref.min() > 0.01 and torch.allclose(ours.double(), ref, atol=1e-5)
    g_ours = torch.autograd.grad(ours.sum(), (s_hidden, s_head))
    g_ref = torch.autograd.grad(ref.sum(), (s_hidden, s_head))
    assert all(torch.allclose(a.double(), b.double(), atol=1e-5) for a, b in zip(g_ours, g_ref))


def test_divergence_is_zero_when_the_student_is_the_teacher():
    torch.manual_seed(1)
    logits = torch.randn(5, 40)
    for beta in (0.0, 1.0, 0.5):
        assert divergence(logits.log_softmax(-1), logits.log_softmax(-1), beta).abs().max() < 1e-6
        hidden, head = torch.randn(5, 8), torch.randn(40, 8)
        assert full_divergence(hidden, head, hidden, head, beta, 2.0).abs().max() < 1e-5


def test_top_k_with_a_remainder_bucket_is_the_full_divergence_when_k_is_the_vocabulary_and_a_k_plus_1_way_one_below():
    torch.manual_seed(2)
    n, v = 6, 30
    s, t = torch.randn(n, v, dtype=torch.float64, requires_grad=True), torch.randn(n, v, dtype=torch.float64)
    ids = torch.stack([torch.randperm(v) for _ in range(n)])
    t_logp = t.log_softmax(-1).gather(1, ids)
    for beta in (0.0, 1.0, 0.5):
        for temperature in (1.0, 2.0):
            ours = topk_divergence(s, ids, t_logp, beta, temperature)
            assert torch.allclose(ours, reference(s, t, beta, temperature), atol=1e-5)
    # k < V: the teacher's mass outside its top 3 and the student's outside the same 3 tokens are one outcome each
    k = 3
    ours = topk_divergence(s, ids[:, :k], t_logp[:, :k], 0.0, 1.0)
    p_s, p_t = s.softmax(-1), t.softmax(-1)
    top_s, top_t = p_s.gather(1, ids[:, :k]), p_t.gather(1, ids[:, :k])
    folded_s = torch.cat([top_s, 1 - top_s.sum(-1, keepdim=True)], -1)
    folded_t = torch.cat([top_t, 1 - top_t.sum(-1, keepdim=True)], -1)
    assert torch.allclose(ours, (folded_t * (folded_t.log() - folded_s.log())).sum(-1), atol=1e-6)
    # a position with fewer than K alternatives (padded with -inf) is the same as one with only those
    padded = torch.cat([t_logp[:, :2], torch.full((n, 1), -math.inf, dtype=torch.float64)], -1)
    assert torch.allclose(topk_divergence(s, ids[:, :k], padded, 0.0, 1.0), topk_divergence(s, ids[:, :2], t_logp[:, :2], 0.0, 1.0))


# --- end to end on a tiny model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Records with 3 samples each (votes), a rationale and a context dataset, and a tiny student."""
    from rationale_distill.testing.fake_openai import FakeOpenAI

    root = tmp_path_factory.mktemp("kd")
    data = write_problems(root / "p.jsonl", n=30, seed=5)
    with FakeOpenAI() as server:
        rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question",
                                      label_field="answer", out=str(root / "teacher.jsonl"), cache_dir=str(root / "cache"),
                                      samples=3, temperature=0.7))  # fmt: skip
    for mode in ("rationale", "context"):
        build(str(root / "teacher.jsonl"), BuildConfig(records=str(root / "teacher.jsonl"), out=str(root / mode), mode=mode,
                                                       validation_fraction=0.2, test_fraction=0.2))  # fmt: skip
    plain = root / "plain"  # the rationale data without the teacher's prompt: the teacher reads what the student reads
    plain.mkdir()
    for f in (root / "rationale").glob("*.json*"):
        lines = [json.loads(x) for x in f.read_text().splitlines()] if f.suffix == ".jsonl" else None
        strip = lambda r: {k: v for k, v in r.items() if not k.startswith("teacher_")}  # noqa: E731
        (plain / f.name).write_text("".join(json.dumps(strip(r)) + "\n" for r in lines) if lines is not None else f.read_text())
    rows = [json.loads(x) for x in (root / "rationale" / "train.jsonl").read_text().splitlines()]
    make_tiny_student(root / "tiny", [r["prompt"] + r["completion"] for r in rows] * 3)
    make_tiny_student(root / "deep", [r["prompt"] + r["completion"] for r in rows] * 3, layers=4, seed=1)
    return root


def answer_rows(ws) -> int:
    return sum(json.loads(x)["task"] == "label" for x in (ws / "rationale" / "train.jsonl").read_text().splitlines())


def run(ws, tmp_path, **kw):
    config = dict(data=str(ws / "rationale"), student=str(ws / "tiny"), out=str(tmp_path / "s"), epochs=1, batch_size=4,
                  learning_rate=3e-3, logging_steps=1)  # fmt: skip
    out = train(TrainConfig(**{**config, **kw}))
    return json.loads((out / "rdistill_train.json").read_text())


def kd_losses(meta):
    return [h["loss_kd"] for h in meta["log_history"] if "loss_kd" in h and "loss" in h]


def test_a_teacher_identical_to_the_student_gives_zero_kd_at_the_first_step(ws, tmp_path):
    meta = run(ws, tmp_path, data=str(ws / "plain"), objective="kd", teacher_model=str(ws / "tiny"))
    losses = kd_losses(meta)
    assert losses[0] < 1e-6 and max(losses) > 0  # equal at the start, apart once the student moves
    assert meta["soft_targets"]["train"] == {"rows the teacher reads as the student does": answer_rows(ws)}
    card = (tmp_path / "s" / "README.md").read_text()
    assert f"Objective: soft targets: kd from teacher {ws / 'tiny'}, forward_kl, T 2.0, alpha 0.5" in card


def _trainer_and_batch(ws, tmp_path, **kw):
    """The project's trainer on a tiny student and teacher, and one collated training batch."""
    from datasets import Dataset
    from trl import SFTConfig

    from rationale_distill.student import load_model
    from rationale_distill.training import load_split_rows
    from rationale_distill.training.multitask import MultiTaskCollator
    from rationale_distill.training.sft import make_trainer_class, objective_weights, soft_targets, tokenize_rows

    config = TrainConfig(data=str(ws / "plain"), student=str(ws / "tiny"), out=str(tmp_path / "x"), **kw)
    model, tok = load_model(config.student)
    soft = soft_targets(config)
    soft.setup(model, tok, "cpu")
    rows = [r for r in load_split_rows(config.data)[0]["train"] if r["task"] == "label"][:6]
    items, _ = tokenize_rows(soft.prepare(rows), tok, 512, soft)
    weights, kd_weight = objective_weights(config)
    args = SFTConfig(output_dir=str(tmp_path / "c"), use_cpu=True, report_to="none", remove_unused_columns=False, bf16=False,
                     dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)  # fmt: skip
    trainer = make_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(items), processing_class=tok,
                                   data_collator=MultiTaskCollator(tok.pad_token_id, soft.fields), task_weights=weights,
                                   soft=soft, kd_weight=kd_weight)  # fmt: skip
    return trainer, model, soft, MultiTaskCollator(tok.pad_token_id, soft.fields)(items)


@pytest.mark.parametrize("divergence_name,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.5)])
def test_the_trainers_kd_objective_equals_a_hand_written_reference_in_value_and_gradient(ws, tmp_path, divergence_name, beta):
    """alpha * mean CE on the answer tokens + (1 - alpha) * T^2 * mean divergence over the same positions, from the
    full logits of both models, against the trainer's loss (chunked kernel, windowed counts)."""
    from rationale_distill.training.multitask import batch_counts

    alpha, temperature = 0.3, 2.0
    teacher_dir = ws / "deep"  # another model with the same tokenizer
    trainer, model, soft, batch = _trainer_and_batch(ws, tmp_path, objective="kd", teacher_model=str(teacher_dir), kd_alpha=alpha,
                                                     kd_temperature=temperature, kd_divergence=divergence_name)  # fmt: skip
    model.train()
    trainer._window_counts = batch_counts(batch)
    loss = trainer.compute_loss(model, dict(batch))
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        t_logits = soft.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = F.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
    at = targets != -100
    assert torch.equal(at, batch["kd_mask"] > 0)  # the soft targets sit on every answer token
    ce = F.cross_entropy(logits[at], targets[at])
    kd = reference(logits[at], t_logits[at], beta, temperature).mean()
    expected = alpha * ce + (1 - alpha) * temperature**2 * kd
    assert abs(loss.item() - expected.item()) < 1e-5
    expected_grads = torch.autograd.grad(expected, [p for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, expected_grads))


def test_context_distillation_the_teacher_reads_the_engineered_prompt_and_the_student_the_bare_input(ws, tmp_path):
    rows = [json.loads(x) for x in (ws / "context" / "train.jsonl").read_text().splitlines()]
    assert all(r["teacher_messages"][0]["role"] == "system" and r["prompt"] in r["teacher_messages"][-1]["content"] for r in rows)
    meta = run(ws, tmp_path, data=str(ws / "context"), objective="kd", teacher_model=str(ws / "deep"))
    assert meta["soft_targets"]["train"] == {"rows the teacher reads with the engineered prompt": len(rows)}
    assert kd_losses(meta)[0] > 0


def test_context_rows_align_the_teachers_completion_with_the_students(ws, tmp_path):
    from rationale_distill.student import load_model
    from rationale_distill.training import load_split_rows
    from rationale_distill.training.sft import soft_targets, tokenize_rows

    config = TrainConfig(data=str(ws / "context"), student=str(ws / "tiny"), out=str(tmp_path / "x"), objective="kd",
                         teacher_model=str(ws / "deep"))  # fmt: skip
    model, tok = load_model(config.student)
    soft = soft_targets(config)
    soft.setup(model, tok, "cpu")
    rows = load_split_rows(config.data)[0]["train"][:4]
    items, _ = tokenize_rows(rows, tok, 512, soft)
    for item in items:
        mine = [t for t, m in zip(item["input_ids"][1:], item["kd_mask"]) if m]
        theirs = [t for t, m in zip(item["teacher_input_ids"][1:], item["teacher_kd_mask"]) if m]
        assert mine == theirs and len(item["teacher_input_ids"]) > len(item["input_ids"]) + 20
    # an answer row of rationale data: the teacher reads its prompt, then its own response up to the answer
    rows = [r for r in load_split_rows(ws / "rationale")[0]["train"] if r["task"] == "label"][:3]
    items, _ = tokenize_rows(rows, tok, 512, soft)
    for row, item in zip(rows, items):
        assert row["teacher_prefix"].endswith("So the answer is") and row["completion"].strip() in row["teacher_prefix"]
        start = item["teacher_kd_mask"].index(1.0) + 1  # the first token the teacher gives a target for
        before = tok.decode(item["teacher_input_ids"][:start])
        assert before.endswith("So the answer is") and tok.decode(item["teacher_input_ids"][start:]).strip().startswith(row["completion"].strip())


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(ws, tmp_path):
    other = make_tiny_student(tmp_path / "other", ["completely different words to learn from"] * 5, vocab_size=300)
    with pytest.raises(UsageError, match="soft targets need one vocabulary") as err:
        run(ws, tmp_path, objective="kd", teacher_model=str(other))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="needs --teacher-model"):
        run(ws, tmp_path, objective="kd")


def test_vote_shares_become_weighted_answer_rows(ws, tmp_path):
    from rationale_distill.training.kd import KDSettings, VoteShares

    source = VoteShares(KDSettings(source="votes", temperature=1, beta=0))
    row = {"task": "label", "prompt": "[label] Q: 3 + 4?", "completion": " 7",
           "answer_votes": [{"answer": " 7", "samples": 3}, {"answer": " 8", "samples": 2}]}  # fmt: skip
    out = source.prepare([row, {"task": "rationale", "prompt": "p", "completion": "c"}])
    soft = [r for r in out if r["task"] == "soft"]
    assert [(r["completion"], r["weight"]) for r in soft] == [(" 7", 0.6), (" 8", 0.4)]
    assert out[0] is row and len(out) == 4
    meta = run(ws, tmp_path, objective="kd", kd_source="votes")
    assert meta["soft_targets"]["train"]["answer rows with votes"] == answer_rows(ws) and kd_losses(meta)[0] > 0


def test_the_votes_term_is_the_vote_weighted_cross_entropy(ws, tmp_path):
    trainer, model, soft, batch = _trainer_and_batch(ws, tmp_path, objective="kd", kd_source="votes", kd_alpha=0.0)
    from rationale_distill.training.multitask import batch_counts

    model.train()
    trainer._window_counts = batch_counts(batch)
    loss = trainer.compute_loss(model, dict(batch))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = F.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
    w = batch["kd_mask"]
    token_ce = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    expected = (token_ce * w).sum() / w.sum()  # alpha 0: the soft term alone, no temperature on whole answers
    assert (batch["task_ids"] == 2).any() and abs(loss.item() - expected.item()) < 1e-5


KD_SOURCES = {"teacher": {}, "teacher-topk": {"kd_top_k": 4}, "votes": {"kd_source": "votes"},
              "on-policy": {"kd_source": "teacher", "kd_on_policy": 1.0}, "multitask+kd": {"objective": "multitask+kd", "kd_source": "teacher"}}


@pytest.mark.parametrize("source", sorted(KD_SOURCES))
def test_with_soft_targets_the_students_head_runs_only_where_a_loss_reads_it(ws, tmp_path, source):
    """The training forward asks for logits at completion and soft-target positions only ((N, V), as without soft
    targets), and every source's loss and gradients equal those of the full (B, T, V) logits."""
    import random

    from rationale_distill.training.multitask import batch_counts

    kw = {"objective": "kd", "kd_source": source, "teacher_model": str(ws / "deep"), "kd_temperature": 2.0, **KD_SOURCES[source]}
    if kw["kd_source"] == "votes":
        del kw["teacher_model"]
    trainer, model, soft, batch = _trainer_and_batch(ws, tmp_path, **kw)
    model.train()
    trainer._window_counts = batch_counts(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    dims = []
    hook = model.register_forward_hook(lambda module, args, out: dims.append(out.logits.dim()) if module.training else None)

    def loss_and_grads(masked: bool):
        trainer._head_takes_a_mask, trainer._rng = masked, random.Random(0)
        torch.manual_seed(0)  # the on-policy samples: the same completions both times
        dims.clear()
        loss = trainer.compute_loss(model, dict(batch))
        return loss, torch.autograd.grad(loss, params), list(dims)

    full, full_grads, full_dims = loss_and_grads(masked=False)
    cut, cut_grads, cut_dims = loss_and_grads(masked=True)
    hook.remove()
    assert full_dims and set(full_dims) == {3} and set(cut_dims) == {2} and len(cut_dims) == len(full_dims)
    assert abs(full.item() - cut.item()) < 1e-5 and full.item() > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full_grads, cut_grads))


def test_api_logprobs_become_top_k_targets_on_the_answer_tokens(ws, tmp_path):
    """Records' top-K logprobs spelled in the student's own token pieces (as a teacher with its tokenizer returns them)
    train the student; spelled in another tokenizer's pieces they are refused in one line naming both."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ws / "tiny"))
    pieces = token_pieces(tok)
    data = tmp_path / "data"
    data.mkdir()
    (data / "build.json").write_text((ws / "rationale" / "build.json").read_text())
    rows = [json.loads(x) for x in (ws / "rationale" / "train.jsonl").read_text().splitlines()]
    for r in rows:
        if r["task"] == "label":
            ids = tok(r["completion"], add_special_tokens=False)["input_ids"]
            r["teacher_logprobs"] = {"teacher": "openai/fake", "tokens": [
                {"token": pieces[i], "logprob": -0.2, "top_logprobs": [{"token": pieces[i], "logprob": -0.2}, {"token": pieces[(i + 1) % len(pieces)], "logprob": -2.0}]}
                for i in ids]}  # fmt: skip
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = run(ws, tmp_path, data=str(data), objective="kd", kd_source="logprobs", eval_split="none")
    assert meta["soft_targets"]["train"]["rows with teacher logprobs"] == answer_rows(ws) and kd_losses(meta)[0] > 0

    for r in rows:  # the same answers in whitespace-split words: another tokenizer's tokens
        if r["task"] == "label":
            r["teacher_logprobs"]["tokens"] = [{"token": w, "logprob": -0.1, "top_logprobs": []} for w in [r["completion"][:2], r["completion"][2:]]]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UsageError, match="not the student's") as err:
        run(ws, tmp_path, data=str(data), objective="kd", kd_source="logprobs", eval_split="none")
    assert "openai/fake" in str(err.value) and str(ws / "tiny") in str(err.value) and "--objective sft" in str(err.value)


def test_the_builder_keeps_votes_logprobs_and_the_teachers_prompt_for_soft_targets(tmp_path, make_server):
    data = write_problems(tmp_path / "p.jsonl", n=6)
    server = make_server()
    rd.generate(rd.GenerateConfig(data=str(data), teachers=["openai/fake"], api_base=server.base_url, input_field="question",
                                  label_field="answer", out=str(tmp_path / "t.jsonl"), samples=2, logprobs=2))  # fmt: skip
    build(str(tmp_path / "t.jsonl"), BuildConfig(records=str(tmp_path / "t.jsonl"), out=str(tmp_path / "d"), test_fraction=0, validation_fraction=0))
    rows = [json.loads(x) for x in (tmp_path / "d" / "train.jsonl").read_text().splitlines()]
    labels = [r for r in rows if r["task"] == "label"]
    assert labels and all(r["answer_votes"] and r["teacher_logprobs"]["tokens"] for r in labels)
    assert all(sum(v["samples"] for v in r["answer_votes"]) == 2 for r in labels)
    from datasets import load_from_disk

    hf = load_from_disk(str(tmp_path / "d" / "dataset"))["train"]
    assert "answer_votes" in hf.column_names and "teacher_logprobs" in hf.column_names
    build(str(tmp_path / "t.jsonl"), BuildConfig(records=str(tmp_path / "t.jsonl"), out=str(tmp_path / "lean"), test_fraction=0,
                                                 validation_fraction=0, soft_target_fields=False))  # fmt: skip
    lean = [json.loads(x) for x in (tmp_path / "lean" / "train.jsonl").read_text().splitlines()]
    assert all(set(r) == {"id", "task", "prompt", "completion"} | ({"input", "label"} if r["task"] == "label" else set()) for r in lean)


def test_a_half_depth_student_keeps_every_other_layer_and_reloads_at_that_depth(ws, tmp_path):
    from transformers import AutoModelForCausalLM

    meta = run(ws, tmp_path, student=str(ws / "deep"), objective="kd", teacher_model=str(ws / "deep"), student_keep_every=2)
    assert meta["layers"] == 2
    deep = AutoModelForCausalLM.from_pretrained(str(ws / "deep"))
    student = AutoModelForCausalLM.from_pretrained(str(tmp_path / "s"))
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert kd_losses(meta)[0] > 0  # half the layers: no longer the teacher
    from rationale_distill.training.sft import keep_every_kth_layer

    keep_every_kth_layer(deep, 2)
    fresh = AutoModelForCausalLM.from_pretrained(str(ws / "deep"))
    assert torch.equal(deep.model.layers[1].mlp.up_proj.weight, fresh.model.layers[2].mlp.up_proj.weight)  # layers 0 and 2


@pytest.mark.parametrize("extra", [dict(objective="multitask+kd", kd_weight=2.0), dict(objective="kd", kd_source="votes", kd_alpha=0.2)])
def test_kd_with_gradient_accumulation_matches_one_big_batch(ws, tmp_path, extra):
    """The soft term is normalised over the accumulation window, like the others: 2 x 4 rows == 1 x 8 rows."""
    from safetensors.torch import load_file

    common = dict(data=str(ws / "rationale"), student=str(ws / "tiny"), teacher_model=str(ws / "deep"), max_steps=1,
                  learning_rate=1e-4, eval_split="none", save_strategy="no", logging_steps=1, **extra)  # fmt: skip
    big = train(TrainConfig(**common, out=str(tmp_path / "big"), batch_size=8, grad_accum=1))
    acc = train(TrainConfig(**common, out=str(tmp_path / "acc"), batch_size=4, grad_accum=2))
    first = lambda out: next(h for h in json.loads((out / "rdistill_train.json").read_text())["log_history"] if "loss" in h)  # noqa: E731
    assert abs(first(big)["loss"] - first(acc)["loss"]) < 1e-5 and first(big)["loss_kd"] > 0
    a, b = load_file(str(big / "model.safetensors")), load_file(str(acc / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # float32 sums in another order, through Adam's first step


def test_precomputed_top_k_teacher_targets_equal_the_live_teacher_at_k_equal_vocabulary(ws, tmp_path):
    """--kd-source teacher-topk reads the teacher once, keeps its top K per token at float16 and releases it; with K =
    the vocabulary the loss is the live teacher's (to float16 precision), with a small K it is an approximation."""
    from transformers import AutoTokenizer

    from rationale_distill.training.multitask import batch_counts

    vocab = len(AutoTokenizer.from_pretrained(str(ws / "tiny")))
    losses = {}
    for source, k in (("teacher", 20), ("teacher-topk", vocab), ("teacher-topk", 4)):
        trainer, model, soft, batch = _trainer_and_batch(ws, tmp_path, objective="kd", kd_source=source, kd_top_k=k,
                                                         teacher_model=str(ws / "deep"), kd_temperature=1.0)  # fmt: skip
        if source == "teacher-topk":
            soft.release()
            assert soft.teacher is None and batch["topk_ids"].shape[-1] == k
        model.train()
        trainer._window_counts = batch_counts(batch)
        losses[(source, k)] = trainer.compute_loss(model, dict(batch)).item()
    assert abs(losses[("teacher-topk", vocab)] - losses[("teacher", 20)]) < 2e-3
    assert losses[("teacher-topk", 4)] != losses[("teacher", 20)]
    meta = run(ws, tmp_path, data=str(ws / "plain"), objective="kd", kd_source="teacher-topk", teacher_model=str(ws / "deep"))
    assert kd_losses(meta)[0] > 0


def test_kd_trains_a_lora_adapter_and_leaves_the_base_alone(ws, tmp_path):
    """The student's side of the divergence is read from the LM head of the PEFT-wrapped model: LoRA B moves."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    meta = run(ws, tmp_path, objective="multitask+kd", teacher_model=str(ws / "deep"), lora=True, lora_r=4, learning_rate=1e-2)
    assert kd_losses(meta)[0] > 0 and meta["trainable_parameters"] < meta["parameters"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(ws / "tiny")), str(tmp_path / "s"))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_on_policy_batches_score_the_students_own_samples_with_the_teacher(ws, tmp_path):
    """--kd-on-policy 1: the soft term is taken on completions the student samples from the same prompts (GKD's
    lambda), scored by the teacher reading its own prompt; the hard-label term stays on the data."""
    from rationale_distill.training.multitask import batch_counts

    trainer, model, soft, batch = _trainer_and_batch(ws, tmp_path, objective="kd", teacher_model=str(ws / "deep"), kd_on_policy=1.0)
    seen = []
    original = soft.per_token

    def spy(trainer_, model_, inputs, extra, kd_mask, hidden, logits):
        seen.append((inputs["input_ids"], kd_mask, extra["teacher_input_ids"], extra["teacher_kd_mask"]))
        return original(trainer_, model_, inputs, extra, kd_mask, hidden, logits)

    soft.per_token = spy
    model.train()
    trainer._window_counts = batch_counts(batch)
    torch.manual_seed(0)
    loss = trainer.compute_loss(model, dict(batch))
    assert torch.isfinite(loss) and len(seen) == 1
    ids, mask, t_ids, t_mask = seen[0]
    for i in range(ids.shape[0]):
        start = int((batch["kd_mask"][i] > 0).nonzero()[0]) + 1
        assert ids[i, :start].tolist() == batch["input_ids"][i, :start].tolist()  # the row's own prompt
        mine = [t for t, m in zip(ids[i, 1:].tolist(), mask[i].tolist()) if m]
        theirs = [t for t, m in zip(t_ids[i, 1:].tolist(), t_mask[i].tolist()) if m]
        assert mine == theirs and mine  # the teacher scores exactly the tokens the student sampled
    data = [[t for t, m in zip(batch["input_ids"][i, 1:].tolist(), batch["kd_mask"][i].tolist()) if m] for i in range(ids.shape[0])]
    sampled = [[t for t, m in zip(ids[i, 1:].tolist(), mask[i].tolist()) if m] for i in range(ids.shape[0])]
    assert sampled != data  # an untrained tiny model does not sample the dataset's answers
    meta = run(ws, tmp_path, data=str(ws / "plain"), objective="kd", teacher_model=str(ws / "deep"), kd_on_policy=0.5)
    shares = [h["on_policy"] for h in meta["log_history"] if "on_policy" in h and "loss" in h]
    assert shares and 0 < sum(shares) / len(shares) < 1
    with pytest.raises(UsageError, match="--kd-on-policy needs"):
        run(ws, tmp_path, objective="kd", kd_source="votes", kd_on_policy=0.5)


def test_an_8bit_teacher_needs_cuda_and_says_so(ws, tmp_path):
    with pytest.raises(UsageError, match="--teacher-8bit needs a CUDA GPU"):
        run(ws, tmp_path, objective="kd", teacher_model=str(ws / "deep"), teacher_8bit=True, device="cpu")


@pytest.mark.gpu
def test_gpu_kd_with_an_8bit_teacher_and_a_bf16_lora_student(ws, tmp_path):
    meta = run(ws, tmp_path, objective="multitask+kd", teacher_model=str(ws / "deep"), teacher_8bit=True, lora=True, device="cuda")
    assert meta["device"] == "cuda" and kd_losses(meta)[0] > 0
