"""Evaluation: the student against the gold labels and the teacher. Accuracy, agreement, latency, size, cost.

The student answers from the label prefix alone (no rationale generated), so it is fast; optionally it also
writes rationales for a few examples, for a person to inspect. Reports: JSON, Markdown, a PNG plot.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import option, to_dict
from ..errors import UsageError
from ..generation.parsing import ParseFailure, extract, find_answer, normalize, same_answer
from ..generation.prompts import PromptSpec
from ..records import TeacherRecord, read_records
from ..training import read_student
from .stats import describe, paired, wilson

_MARKER = "So the answer is"  # the default answer marker


@dataclass
class EvalConfig:
    student: str = option(help="a student folder written by `rdistill train`", positional=True)
    data: str | None = option(None, help="a dataset folder (its --split is used) or a data file (JSONL, JSON, CSV: any type a loader is registered for) of rows with --input-field/--label-field (default: the student's own dataset)")
    split: str = option("test", help="with a dataset folder: the split to evaluate on")
    input_field: str | None = option(None, help="with a data file: the field holding the input (default: the one used to generate)")
    label_field: str | None = option(None, help="with a data file: the field holding the gold label")
    teacher_records: str | None = option(None, help="teacher records JSONL, to compare with the teacher")
    out: str | None = option(None, help="report folder: report.json, report.md, report.png")
    max_new_tokens: int | None = option(None, help="tokens the student may generate per answer (default: 16, or 160 for full responses)", ge=1)
    batch_size: int = option(16, help="prompts per generation batch (throughput); latency is also measured at batch 1", ge=1)
    latency_samples: int = option(16, help="examples timed one at a time for per-answer latency", ge=1)
    rationales: int = option(0, help="also generate rationales for the first N examples, for inspection", ge=0)
    limit: int | None = option(None, help="evaluate only the first N examples", ge=1)
    teacher_latency: str = option("auto", help="the teacher's latency per answer: measure (ask it again, one answer at a time, on the first --latency-samples matched rows, as the student is timed), records (from its generation records, queueing included), or auto (measure when the teacher runs on this machine, such as local/...)", choices=("auto", "measure", "records"))
    teacher_api_base: str | None = option(None, help="with --teacher-latency measure: the teacher's base URL (as --api-base was for generate)")
    serve_usd_per_hour: float = option(0.10, help="USD per hour of the machine that serves the student, for its cost per 1,000 answers (measured seconds per answer at batch 1 x this price); the report states it", ge=0)
    device: str = option("auto", help="auto, cuda or cpu", pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"))


@dataclass
class Example:
    input: str  # the bare input, as the teacher records store it
    prompt: str  # what the student is asked
    gold: str | None


def score(predictions: list[str | None], golds: list[str | None], teacher: list[str | None] | None = None,
          answer_type: str = "text") -> dict:  # fmt: skip
    """Accuracy against gold (over examples with a gold label) and agreement with the teacher (where it answered);
    answers are compared as ``same_answer`` does (numbers by value)."""
    pairs = [(p, g) for p, g in zip(predictions, golds) if g is not None]
    right = sum(same_answer(p, g, answer_type) for p, g in pairs)
    result = {"n": len(predictions), "n_gold": len(pairs), "n_right": right, "accuracy": right / len(pairs) if pairs else None}
    if teacher is not None:
        agree = [(p, t) for p, t in zip(predictions, teacher) if t is not None]
        result["agreement"] = sum(same_answer(p, t, answer_type) for p, t in agree) / len(agree) if agree else None
        result["n_teacher"] = len(agree)
    return result


def load_examples(config: EvalConfig, meta: dict, plugins=None) -> list[Example]:
    """The held-out examples: a built dataset folder's test split, or a data file read by the loader registered for
    its type (JSONL, JSON, CSV, or a plugin's), as generation reads it."""
    student_input = meta["dataset"].get("student_input", {})
    prefix = student_input.get("answer_prefix", "")
    data = config.data or meta["config"]["data"]
    path = Path(data)
    answer_type, options = student_input.get("answer_type") or "text", student_input.get("options")
    if path.is_dir():
        rows_path = path / f"{config.split}.jsonl"
        if not rows_path.is_file():
            raise UsageError(f"{data}: no {config.split} split (pass --split, or --data with a data file)")
        examples = []
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            if row["task"] not in ("label", "context"):
                continue
            prompt = row["prompt"] if "prompt" in row else row["messages"][0]["content"]
            completion = row["completion"] if "prompt" in row else row["messages"][-1]["content"]
            gold = row["gold"] if "gold" in row else _answer(completion, answer_type, options)  # held-out: the data's own
            examples.append(Example(prompt[len(prefix) :] if prompt.startswith(prefix) else prompt, prompt, gold))
    elif path.is_file():
        from ..generation.rows import load_rows
        from ..plugins import load_plugins

        student_spec = PromptSpec(name="student input", template=student_input.get("template") or "{input}")
        input_field = config.input_field or student_input.get("input_field")
        examples = []
        for where, row in load_rows(plugins or load_plugins(), str(data)):
            fields = dict(row)
            if input_field:
                if input_field not in row:
                    raise UsageError(f"{where}: --input-field {input_field!r} is not in the row")
                fields["input"] = row[input_field]
            x = student_spec.render_input(fields, where)
            gold = None
            if config.label_field:
                if config.label_field not in row:
                    raise UsageError(f"{where}: --label-field {config.label_field!r} is not in the row")
                gold = _normalize(str(row[config.label_field]), answer_type, options)
            examples.append(Example(x, prefix + x, gold))
    else:
        raise UsageError(f"--data {data}: no such file or folder")
    if not examples:
        raise UsageError(f"{data}: no examples to evaluate")
    return examples[: config.limit] if config.limit else examples


def _normalize(text: str, answer_type: str, options=None) -> str | None:
    try:
        return normalize(text, answer_type, options)
    except ParseFailure:
        return None


def _answer(text: str, answer_type: str, options=None) -> str | None:
    """The answer in a student output or a gold completion: where a reader finds it (after the answer marker, in
    \\boxed{}, ...), else the text itself read by its answer type."""
    text = text.strip()
    try:
        return find_answer(text, _MARKER, answer_type, options)[2]
    except ParseFailure:
        pass
    try:
        return extract(text, answer_type, options)[1]
    except ParseFailure:
        return None


def evaluate(config: EvalConfig, plugins=None) -> dict:
    """Evaluate a trained student; writes reports when config.out is set; returns the report dict. The student is
    loaded through the trainer plugin that made it (its ``load``); without one, as a causal LM."""
    from ..student import pick_device

    meta = read_student(config.student)
    examples = load_examples(config, meta, plugins)
    student_input = meta["dataset"].get("student_input", {})
    answer_type, options = student_input.get("answer_type") or "text", student_input.get("options")
    device = pick_device(config.device)
    load = trainer_loader(meta, config.student, plugins)
    asked = ask_classifier(load, config, examples, device, answer_type, options) if load else ask_lm(config, meta, examples, device)
    prompts, outputs, predictions = asked.prompts, asked.outputs, asked.predictions

    golds = [e.gold for e in examples]
    teacher = teacher_view(config.teacher_records, examples) if config.teacher_records else None
    if teacher:
        teacher["summary"].update(teacher_timing(config, teacher["records"]))
    student_scores = score(predictions, golds, teacher["answers"] if teacher else None, answer_type)
    intervals = confidence(student_scores, predictions, golds, teacher, answer_type)
    report = {
        "config": to_dict(config),
        "student": {
            "path": str(config.student), "base": meta["config"]["student"], "kind": meta["config"].get("trainer", "trl-sft"), "parameters": asked.parameters,
            **served_size(config.student, meta),
            "accuracy": student_scores["accuracy"], "accuracy_ci95": intervals["student"], "n_gold": student_scores["n_gold"],
            "agreement_with_teacher": student_scores.get("agreement"),
            "n": len(examples), "latency_s": round(statistics.mean(asked.single_latency), 4),
            "latency_s_batched": round(statistics.mean(asked.batch_latency), 4),
            "throughput_per_s": round(len(prompts) / sum(asked.batch_latency), 2) if sum(asked.batch_latency) else None,
            "prompt_tokens": round(statistics.mean(asked.prompt_tokens), 1), "prompt_example": prompts[0],
            # Like for like with the teacher's price per answer: the serving machine's time for one answer, priced.
            "cost_per_1k_usd": machine_cost(statistics.mean(asked.single_latency), config.serve_usd_per_hour),
            "cost_basis": f"measured seconds per answer at batch 1 x {per_hour(config)}",
            "device": device,
        },
        "teacher": {**teacher["summary"], "accuracy_ci95": intervals["teacher"]} if teacher else None,
        "comparison": intervals["paired"],
        "split": config.split if Path(config.data or meta["config"]["data"]).is_dir() else str(config.data),
        "examples": [{"input": e.input, "gold": e.gold, "student": p, "student_raw": o,
                      "teacher": teacher["answers"][i] if teacher else None}
                     for i, (e, p, o) in enumerate(zip(examples, predictions, outputs))][:100],  # fmt: skip
    }
    if config.rationales and asked.lm is None:
        import warnings

        warnings.warn(f"--rationales: a {meta['config']['trainer']} student writes no rationale", stacklevel=2)
    elif config.rationales:
        from ..student import as_trained, generate_answers

        model, tokenizer, chat, special = asked.lm
        rationale_prefix = meta["dataset"]["config"].get("rationale_prefix", "[rationale] ")
        asked, _ = as_trained(tokenizer, [rationale_prefix + e.input for e in examples[: config.rationales]], chat)
        texts, _ = generate_answers(model, tokenizer, asked, 96, config.batch_size, stop=None, add_special_tokens=special)
        report["rationales"] = [{"input": e.input, "rationale": t} for e, t in zip(examples, texts)]
    if config.out:
        write_reports(Path(config.out), report)
        from ..training import model_card

        table = markdown(report).split("\n\n")[1]  # the student-vs-teacher table
        (Path(config.student) / "README.md").write_text(model_card(meta, evaluation=f"{table}\n\nFull report: `{config.out}/report.md`"))
    return report


@dataclass
class Asked:
    """A student's answers to the evaluated examples and how they were timed."""

    prompts: list[str]  # exactly what the student read
    outputs: list[str]  # what it wrote (an LM) or named (a classifier)
    predictions: list[str | None]  # the answers, read by the answer type
    batch_latency: list[float]  # seconds per example, in batches of --batch-size
    single_latency: list[float]  # seconds per example, one at a time (the first --latency-samples)
    parameters: int
    prompt_tokens: list[int]
    lm: tuple | None = None  # (model, tokenizer, chat, add_special_tokens) of an LM student, to ask it for rationales


def trainer_loader(meta: dict, folder: str, plugins=None):
    """The ``load`` of the trainer plugin that wrote a classifier student; None for a causal LM (trl-sft)."""
    if meta.get("student_kind") != "classifier":
        return None
    from ..plugins import load_plugins

    trainer = meta["config"]["trainer"]
    plugins = plugins or load_plugins()
    if trainer not in plugins.trainers:
        raise UsageError(f"{folder}: written by --trainer {trainer}, which no loaded plugin registers; load its plugin (--plugins-dir)")
    load = plugins.trainers.entry(trainer).options.get("load")
    if load is None:
        raise UsageError(f"{folder}: --trainer {trainer} registered no `load`, so its students cannot be evaluated")
    return load


def ask_classifier(load, config: EvalConfig, examples: list[Example], device: str, answer_type: str, options) -> Asked:
    """A classifier student (loaded by its trainer's ``load``) names a class for each bare input."""
    student = load(config.student, device=device)
    prompts = [e.input for e in examples]
    outputs, batch_latency = student.predict(prompts, config.batch_size)
    _, single_latency = student.predict(prompts[: config.latency_samples], 1)
    return Asked(prompts, outputs, [_normalize(o, answer_type, options) for o in outputs], batch_latency, single_latency,
                 student.parameters, [student.tokens(p) for p in prompts])  # fmt: skip


def ask_lm(config: EvalConfig, meta: dict, examples: list[Example], device: str) -> Asked:
    """A causal-LM student's answers from the label prefix, timed in batches and one at a time."""
    from ..student import as_trained, generate_answers, load_model, parameter_count

    full_response = meta["dataset"]["config"]["mode"] in ("context", "single-task") and meta["dataset"]["config"].get("context_target", "response") == "response"
    max_new = config.max_new_tokens or (160 if full_response else 16)
    student_input = meta["dataset"].get("student_input", {})
    answer_type, options = student_input.get("answer_type") or "text", student_input.get("options")
    model, tokenizer = load_model(config.student, device=device)
    chat = meta["dataset"]["config"].get("format") == "messages"
    prompts, special = as_trained(tokenizer, [e.prompt for e in examples], chat)  # asked exactly as trained
    outputs, batch_latency = generate_answers(model, tokenizer, prompts, max_new, config.batch_size,
                                              stop=None if full_response else "\n", add_special_tokens=special)  # fmt: skip
    timed = prompts[: config.latency_samples]
    _, single_latency = generate_answers(model, tokenizer, timed, max_new, batch_size=1, stop=None, add_special_tokens=special)
    return Asked(prompts, outputs, [_answer(o, answer_type, options) for o in outputs], batch_latency, single_latency,
                 parameter_count(model), [len(tokenizer(p, add_special_tokens=special)["input_ids"]) for p in prompts],
                 (model, tokenizer, chat, special))  # fmt: skip


def machine_cost(seconds_per_answer: float, usd_per_hour: float) -> float:
    """USD per 1,000 answers of a model served on a machine priced by the hour (student, or a teacher on this machine)."""
    return round(seconds_per_answer * 1000 * usd_per_hour / 3600, 6)


def per_hour(config: EvalConfig) -> str:
    return f"${config.serve_usd_per_hour:g}/hour (--serve-usd-per-hour)"


def served_size(student: str, meta: dict) -> dict:
    """Bytes on disk of what must be served: the student folder, plus the base model when it is a LoRA adapter."""
    from ..student import folder_bytes, resolve_student

    own = folder_bytes(student) - folder_bytes(Path(student) / "checkpoints")
    if not (Path(student) / "adapter_config.json").is_file():
        return {"size_bytes": own, "size_basis": "the student folder (full weights)"}
    base, _ = resolve_student(meta["config"]["student"])
    base_bytes = folder_bytes(base) if Path(base).is_dir() else None
    if base_bytes is None:
        return {"size_bytes": own, "adapter_bytes": own, "size_basis": f"the adapter only: base {base} is not a local folder"}
    return {"size_bytes": own + base_bytes, "adapter_bytes": own, "size_basis": "base model + LoRA adapter"}


def confidence(student_scores: dict, predictions, golds, teacher, answer_type: str) -> dict:
    """95% Wilson intervals for each accuracy, and the paired student-minus-teacher test on the rows where both
    were scored against gold (a teacher record that gave no answer counts as wrong)."""
    out = {"student": wilson(student_scores["n_right"], student_scores["n_gold"]), "teacher": None, "paired": None}
    if teacher:
        rows = [(p, t, g) for p, t, g, m in zip(predictions, teacher["answers"], golds, teacher["matched"]) if m and g is not None]
        student_right = [same_answer(p, g, answer_type) for p, _, g in rows]
        teacher_right = [same_answer(t, g, answer_type) for _, t, g in rows]
        out["teacher"] = wilson(sum(teacher_right), len(rows))
        out["paired"] = paired(student_right, teacher_right)
    return out


def teacher_view(path: str, examples: list[Example]) -> dict:
    """The teacher's (vote) answers on the evaluated inputs, its own accuracy, latency and cost, from its records."""
    records = {r.input: r for r in read_records(path)}
    matched = [records.get(e.input) for e in examples]
    found = [r for r in matched if r is not None]
    if not found:
        raise UsageError(f"--teacher-records {path}: the teacher has not answered any of the evaluated inputs; evaluate on "
                         "the dataset's held-out test split (leave out --data), or run `rdistill generate` on this file "
                         "(--samples 1) and pass those records")  # fmt: skip
    answers = [r.majority if r else None for r in matched]
    golds = [e.gold for e, r in zip(examples, matched) if r is not None]
    acc = score([r.majority for r in found], golds, answer_type=found[0].prompt.get("answer_type") or "text")
    usage = records_summary(found)
    samples_per = statistics.mean(len(r.samples) for r in found)
    answered = [s for r in found for s in r.samples if s.text is not None]
    cost = sum(s.cost or 0.0 for s in answered) / max(1, len(answered))  # one answer at its price, not every sample
    return {
        "answers": answers, "matched": [r is not None for r in matched], "records": found,
        "summary": {
            "teachers": sorted({s.teacher for r in found for s in r.samples}), "n_matched": len(found),
            "accuracy": acc["accuracy"], "samples_per_answer": samples_per,
            "latency_s": usage["latency_s"], "prompt_tokens": usage["prompt_tokens"],
            "cost_per_1k_usd": round(cost * 1000, 4),
            "latency_basis": "from its records: wall time per call, queueing included",
            "cost_basis": "one answer at its price, from its records (whatever the number of samples)",
        },
    }  # fmt: skip


def teacher_timing(config: EvalConfig, records: list[TeacherRecord]) -> dict:
    """The teacher timed as the student is: its recorded prompts asked again one at a time, one answer each (n=1),
    with the sampling settings of the run; nothing is cached or written. Done when asked (--teacher-latency measure)
    or when the teacher runs on this machine (auto), where its recorded latency would include queueing behind the
    run's other requests. A teacher on this machine is then priced as the student is: seconds x --serve-usd-per-hour."""
    if config.teacher_latency == "records":
        return {}
    import asyncio
    import time
    from types import SimpleNamespace

    from ..generation.generate import resolve_teacher
    from ..generation.teachers import Request, install_providers
    from ..plugins import load_plugins

    plugins = load_plugins()
    install_providers(plugins)
    name = next((s.teacher for r in records for s in r.samples), None)  # with several teachers: the first one
    if name is None:
        return {}
    teacher = resolve_teacher(plugins, name, SimpleNamespace(api_base=config.teacher_api_base, price=None, api_key_env=None))
    here = bool(getattr(teacher, "queues_locally", False))
    if config.teacher_latency == "auto" and not here:
        return {}
    timed = records[: config.latency_samples]

    async def ask(record: TeacherRecord) -> float:
        params = {k: v for k, v in record.prompt.get("params", {}).items() if k != "n"}
        started = time.perf_counter()
        await teacher.complete(Request(messages=record.messages, inputs=record.row, n=1, params=params,
                                       format=record.prompt.get("format", "chat")))  # the route it was generated on
        return time.perf_counter() - started

    async def all_in_turn() -> list[float]:
        return [await ask(r) for r in timed]

    try:
        seconds = asyncio.run(all_in_turn())
    except Exception as exc:  # noqa: BLE001 - a teacher that cannot be reached: say so, in one line
        raise UsageError(f"--teacher-latency {config.teacher_latency}: asking the teacher {name} failed ({exc}); pass "
                         "--teacher-api-base if it is served, or --teacher-latency records") from None  # fmt: skip
    latency = statistics.mean(seconds)
    out = {"latency_s": round(latency, 4), "latency_measured": len(seconds), "latency_teacher": name,
           "latency_basis": f"measured: {len(seconds)} answers asked one at a time (n=1) at eval, as the student was timed"}  # fmt: skip
    if here:
        out["cost_per_1k_usd"] = machine_cost(latency, config.serve_usd_per_hour)
        out["cost_basis"] = f"runs on this machine: measured seconds per answer x {per_hour(config)}"
    return out


def records_summary(records: list[TeacherRecord]) -> dict:
    """Accuracy (majority vs gold), latency and prompt tokens per call of a generation run, from its records."""
    graded = [r for r in records if r.label is not None]
    calls = [s for r in records for s in r.samples if s.usage]  # usage sits on the first sample of each call
    return {
        "accuracy": sum(r.majority == r.label for r in graded) / len(graded) if graded else None,
        "n": len(records),
        "latency_s": round(statistics.mean(s.latency_s for s in calls), 4) if calls else None,
        "prompt_tokens": round(statistics.mean(s.usage.get("prompt_tokens", 0) for s in calls), 1) if calls else None,
    }  # fmt: skip


# --- reports ----------------------------------------------------------------------------------------


def table_rows(report: dict) -> list[tuple]:
    s, t = report["student"], report["teacher"] or {}

    def pct(x, ci=None):
        if x is None:
            return "-"
        return f"{100 * x:.1f}%" + (f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")

    def num(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    return [
        ("", "student", "teacher"),
        ("accuracy (gold)", pct(s["accuracy"], s.get("accuracy_ci95")), pct(t.get("accuracy"), t.get("accuracy_ci95"))),
        ("agreement with teacher", pct(s["agreement_with_teacher"]), "-"),
        ("latency per answer (s)", num(s["latency_s"]), num(t.get("latency_s"))),
        ("prompt tokens per answer", num(s["prompt_tokens"], "{:.0f}"), num(t.get("prompt_tokens"), "{:.0f}")),
        ("cost per 1,000 answers (USD)", num(s["cost_per_1k_usd"], "{:.4f}"), num(t.get("cost_per_1k_usd"), "{:.4f}")),
        ("parameters", f"{s['parameters']:,}", "-"),
        ("size on disk (MB)", f"{s['size_bytes'] / 1e6:.1f}", "-"),
        ("examples", s["n"], t.get("n_matched", "-")),
    ]  # fmt: skip


def markdown(report: dict) -> str:
    rows = table_rows(report)
    t = report.get("teacher")
    lines = ["# Student vs teacher", "", "| " + " | ".join(rows[0]) + " |", "|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows[1:]]
    s = report["student"]
    gold = (f"{s.get('n_gold', s['n'])} of {s['n']} examples have a gold label" if s.get("n_gold")
            else f"none of the {s['n']} examples has a gold label: the student's score is agreement with the teacher's vote, not accuracy")  # fmt: skip
    lines += ["", f"Evaluated on {report.get('split', 'the test split')}: {gold}.",
              describe(report.get("comparison")) if report.get("teacher") else "No teacher records were given, so the student is not compared with the teacher."]
    lines += ["", f"Student `{report['student']['path']}` (base `{report['student']['base']}`), measured on {report['student']['device']}; "
              f"its cost is {s.get('cost_basis', 'not priced')}, its size {s.get('size_basis', 'the student folder')}."
              + (f" The teacher's latency is {t['latency_basis']}; its cost is {t['cost_basis']}." if t else ""), "", "![accuracy vs latency](report.png)", "",
              "## Examples", "", "| input | gold | student | teacher |", "|---|---|---|---|"]  # fmt: skip
    for e in report["examples"][:20]:
        lines.append(f"| {e['input'][:80].replace('|', '/').replace(chr(10), ' ')} | {e['gold']} | {e['student']} | {e['teacher']} |")
    for r in report.get("rationales", []):
        lines += ["", f"**{r['input'][:80]}** -> {r['rationale'][:300]}"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t = report["student"], report["teacher"] or {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names, accs, lats = ["student"], [s["accuracy"] or 0], [s["latency_s"]]
    if t.get("accuracy") is not None:
        names.append("teacher")
        accs.append(t["accuracy"])
        lats.append(t.get("latency_s") or 0)
    colors = ["#2b8cbe", "#e6550d"][: len(names)]
    axes[0].bar(names, [100 * a for a in accs], color=colors)
    axes[0].set_ylabel("accuracy on gold (%)")
    axes[0].set_ylim(0, 100)
    axes[1].bar(names, lats, color=colors)
    axes[1].set_ylabel("seconds per answer")
    for ax, values, fmt in ((axes[0], [100 * a for a in accs], "{:.1f}%"), (axes[1], lats, "{:.3f}s")):
        for i, v in enumerate(values):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom")
    fig.suptitle("Distilled student vs prompted teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "report.png")
