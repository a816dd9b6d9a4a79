"""The dataset builder: teacher records -> selected samples -> training pairs -> splits, card, files.

Modes:
  rationale    Distilling Step-by-Step (Hsieh et al. 2023): per kept example a label row
               ``[label] x -> answer`` and a rationale row ``[rationale] x -> rationale`` (column ``task``).
  context      Learning by Distilling Context (Snell et al. 2022): the engineered context (system prompt,
               instructions, demos) is stripped using the part markers saved in each record; the row is the bare
               input -> the teacher's response (or only its final answer, the scratch-pad stripped).
  label-only   standard distillation: x -> answer.
  single-task  rationale and answer in one target: x -> "rationale So the answer is answer." (the paper's ablation).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config import option, to_dict
from ..errors import PluginError, UsageError
from ..generation.parsing import same_answer
from ..generation.prompts import strip_context
from ..records import TeacherRecord, read_records, write_jsonl
from .filters import Candidate, Context

MODES = ("rationale", "context", "label-only", "single-task")
SPLITS = ("train", "validation", "test")


@dataclass
class BuildConfig:
    records: str = option(help="teacher records JSONL written by `rdistill generate`", positional=True)
    out: str | None = option(None, help="output folder: a saved DatasetDict, JSONL splits, rejects and a card")
    mode: str = option("rationale", help="rationale | context | label-only | single-task", choices=MODES)
    label_source: str = option("gold", help="gold: the data's own label; vote: the majority answer over all samples", choices=("gold", "vote"))
    min_agreement: float = option(0.0, help="with --label-source vote: drop examples whose majority vote share is lower", ge=0, le=1)
    rationales: str = option("one", help="one: one rationale per example; all: every distinct agreeing rationale (diverse reasoning)", choices=("one", "all"))
    filters: list[str] | None = option(None, flag="filter", help="filters to apply, in order (default: parsed, agrees, rationale-length, dedup; 'none' for none)")
    min_rationale_chars: int = option(1, help="rationale-length filter: fewest characters", ge=0)
    max_rationale_chars: int = option(4000, help="rationale-length filter: most characters", ge=1)
    near_duplicate: float = option(0.9, help="dedup filter: token Jaccard similarity at which two rationales are near duplicates", gt=0, le=1)
    grounding: float = option(0.5, help="grounded filter: the least share of each rationale sentence's content words found in the input", ge=0, le=1)
    judge: str | None = option(None, help="judge filter: the LiteLLM model asked whether each rationale supports its answer (e.g. openai/gpt-4o-mini)")
    judge_api_base: str | None = option(None, help="judge filter: the judge's base URL (a self-hosted server)")
    cache_dir: str | None = option(None, help="judge filter: cache and journal folder (default: as for generate)")
    label_prefix: str = option("[label] ", help="rationale mode: prefix of label rows")
    rationale_prefix: str = option("[rationale] ", help="rationale mode: prefix of rationale rows")
    answer_marker: str = option("So the answer is", help="single-task mode: the words between rationale and answer")
    context_target: str = option("response", help="context mode: response (the teacher's full response) or answer (the final answer only)", choices=("response", "answer"))
    format: str = option("prompt-completion", help="prompt-completion (TRL trains on the completion only) or messages (conversational)", choices=("prompt-completion", "messages"))
    completion_prefix: str = option(" ", help="prompt-completion format: text put before each completion (a space after 'A:')")
    split_field: str | None = option(None, help="a row field that already says train/validation/test (else split by seeded hash of the id)")
    validation_fraction: float = option(0.1, help="fraction of examples for validation", ge=0, lt=1)
    test_fraction: float = option(0.1, help="fraction of examples for test", ge=0, lt=1)
    seed: int = option(0, help="split seed", ge=0)
    soft_target_fields: bool = option(True, help="keep on each row what `train --objective kd` reads: answer votes, the teacher's logprobs, and the prompt it was sent (--no-soft-target-fields for lean files when the prompt is long and you train on text only)")


@dataclass
class Reject:
    id: str
    filter: str
    reason: str
    teacher: str | None = None
    sample: int | None = None
    text: str | None = None


def build(records: list[TeacherRecord] | str, config: BuildConfig | None = None, plugins=None, **overrides):
    """Build training pairs from teacher records; returns (DatasetDict, report). Writes files when config.out is set."""
    from ..plugins import load_plugins

    if isinstance(records, (str, os.PathLike)):
        config = config or BuildConfig(records=str(records))
        records = read_records(records)
    config = config or BuildConfig(records="<in memory>")
    for key, value in overrides.items():
        setattr(config, key, value)
    validate(config)
    plugins = plugins or load_plugins()
    checks = make_filters(plugins, config, records)

    rows, rejects, kept_samples = [], [], []
    counts = Counter()
    held_out = Counter()
    for record in records:
        split = split_of(record, config)
        if split == "test":  # held out from the inputs, before any filter: every one, whatever the teacher said
            row = heldout_row(record, config)
            held_out["unscorable (no gold, no teacher answer)" if row is None else "examples"] += 1
            if row is not None:
                held_out["with gold"] += row["gold"] is not None
                held_out["teacher right"] += row["gold"] is not None and row["teacher"] is not None and same_answer(
                    row["teacher"], row["gold"], record.prompt.get("answer_type") or "text")
                rows.append({"id": record.id, "split": "test", **row})
            continue
        target, why = label_for(record, config)
        if target is None:
            rejects.append(Reject(record.id, "label-source", why))
            counts["label-source"] += 1
            continue
        kept = select(record, target, checks, config, rejects, counts)
        if not kept:
            continue
        kept_samples.extend(kept)
        for i, c in enumerate(kept):
            rows.extend({"id": record.id, "split": split, **row} for row in pairs(record, c, target, config, first=i == 0))
    if not any(r["split"] != "test" for r in rows):
        # Nothing to build, and an earlier build in --out stays as it was; the rejects say why, beside it.
        where = ""
        if config.out:
            path = Path(config.out).with_name(f"{Path(config.out).name}.rejects.jsonl")
            write_jsonl(path, [r.__dict__ for r in rejects])
            where = f" ({len(rejects)} listed in {path})"
        raise UsageError(f"{config.records}: no usable samples: every example was dropped ({summary_of(counts)}); "
                         f"see the rejects{where}, or loosen the filters")  # fmt: skip
    report = make_report(config, records, rows, rejects, counts, kept_samples)
    report["filter_details"] = {name: check.summary for name, check in checks if getattr(check, "summary", None)}
    report["test"] = dict(held_out)
    report["duplicate_inputs"] = duplicate_inputs(records)
    dataset = to_dataset(rows, config)
    if config.out:
        write_output(Path(config.out), dataset, rows, rejects, report, config)
    return dataset, report


def validate(config: BuildConfig) -> None:
    choices = {"mode": MODES, "label_source": ("gold", "vote"), "rationales": ("one", "all"),
               "context_target": ("response", "answer"), "format": ("prompt-completion", "messages")}  # fmt: skip
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} {getattr(config, name)!r}: unknown; choose one of {', '.join(allowed)}")
    if not 0 <= config.validation_fraction + config.test_fraction < 1:
        raise UsageError("--validation-fraction plus --test-fraction must be in [0, 1)")


def make_filters(plugins, config: BuildConfig, records) -> list[tuple[str, object]]:
    names = config.filters
    if names is None:
        names = ["parsed", "agrees", "dedup"] if config.mode in ("context", "label-only") else ["parsed", "agrees", "rationale-length", "dedup"]
    names = [n for n in names if n != "none"]
    options = {"min_chars": config.min_rationale_chars, "max_chars": config.max_rationale_chars, "near": config.near_duplicate,
               "grounding": config.grounding, "judge_model": config.judge, "judge_api_base": config.judge_api_base,
               "records": records, "build_config": config}  # fmt: skip
    checks = []
    for name in names:
        if name not in plugins.filters:
            raise PluginError(f"--filter {name!r}: unknown filter (known: {', '.join(plugins.filters.names())})")
        factory = plugins.filters.get(name)
        try:
            checks.append((name, factory(**options, before=list(checks))))  # before: the filters that run first
        except TypeError as exc:
            raise PluginError(f"--filter {name!r}: {exc}") from None
    return checks


def label_for(record: TeacherRecord, config: BuildConfig) -> tuple[str | None, str]:
    if config.label_source == "gold":
        if record.label is None:
            return None, "no gold label (generate with --label-field, or build with --label-source vote)"
        return record.label, ""
    if record.majority is None:
        return None, "no parsed sample to vote with"
    if record.vote_share < config.min_agreement:
        return None, f"vote share {record.vote_share:.2f} below --min-agreement {config.min_agreement}"
    return record.majority, ""


def select(record, target, checks, config, rejects, counts) -> list[Candidate]:
    ctx = Context(target=target)
    for sample in sorted(record.samples, key=lambda s: (s.teacher, s.index)):
        cand = Candidate(record, sample)
        for name, check in checks:
            reason = check(cand, ctx)
            if reason:
                rejects.append(Reject(record.id, name, reason, sample.teacher, sample.index, sample.text))
                counts[name] += 1
                break
        else:
            if config.rationales == "one" and ctx.kept:
                counts["extra-rationale"] += 1  # kept by every filter, but one per example was asked for
                continue
            ctx.kept.append(cand)
    counts["kept"] += len(ctx.kept)
    if not ctx.kept:
        rejects.append(Reject(record.id, "no-sample-left", "every sample of this example was dropped"))
        counts["examples-dropped"] += 1
    return ctx.kept


def pairs(record: TeacherRecord, c: Candidate, target: str, config: BuildConfig, first: bool = True) -> list[dict]:
    """The training rows one kept sample yields: (task, prompt, completion). An example has one label row whatever
    ``--rationales`` keeps (``first``: this is its first kept sample); each kept rationale adds a rationale row."""
    x = strip_context(record.parts)  # the bare input, by its part marker
    answer = {**soft_fields(record, c), **teacher_view(record, c, answer=True)}
    plain = {"input": x, "label": target}  # what a classifier student reads (training/labels.py)
    if config.mode == "rationale":
        label = [{"task": "label", "prompt": config.label_prefix + x, "completion": target, **plain, **answer}] if first else []
        return label + [{"task": "rationale", "prompt": config.rationale_prefix + x, "completion": c.sample.rationale.strip(),
                         **teacher_view(record, c, answer=False)}]  # fmt: skip
    if config.mode == "single-task":
        return [{"task": "single", "prompt": x, "completion": f"{c.sample.rationale.strip()} {config.answer_marker} {target}."}]
    if config.mode == "label-only":
        return [{"task": "label", "prompt": x, "completion": target, **plain, **answer}] if first else []
    if config.context_target == "response":
        return [{"task": "context", "prompt": x, "completion": c.sample.text.strip(), **plain, **soft_fields(record, c),
                 **teacher_view(record, c, answer=False)}]  # fmt: skip
    return [{"task": "context", "prompt": x, "completion": c.sample.raw_answer or target, **plain, **answer}]


def soft_fields(record: TeacherRecord, c: Candidate) -> dict:
    """What `rdistill train --objective kd` reads besides the text: the teacher's votes over answers (--kd-source
    votes) and, where the teacher returned them, the top-K logprobs of the answer tokens (--kd-source logprobs)."""
    out = {"answer_votes": [{"answer": answer, "samples": n} for answer, n in record.votes.items()]} if record.votes else {}
    if c.sample.logprobs:
        out["teacher_logprobs"] = {"teacher": c.sample.teacher, "tokens": c.sample.logprobs}
    return out


def teacher_view(record: TeacherRecord, c: Candidate, answer: bool) -> dict:
    """What a white-box teacher (`train --kd-source teacher`) reads before the tokens it gives soft targets on: the
    prompt it was sent (Snell et al. 2022: the student reads the bare input) and, before an answer, its own response
    up to that answer (its rationale and the marker), so that its distribution over the answer is the one it answered
    from. A rationale row (or a whole response) starts where the response starts."""
    view = {"teacher_messages": record.messages, "teacher_format": record.prompt.get("format", "chat"), "teacher_prefix": ""}
    text, raw = c.sample.text or "", c.sample.raw_answer
    if answer and raw:
        marker = record.prompt.get("answer_marker") or ""
        after = text.find(marker) + len(marker) if marker and marker in text else 0
        at = text.find(raw, after)
        view["teacher_prefix"] = text[: at if at >= 0 else len(text)].rstrip()
    return view


def heldout_row(record: TeacherRecord, config: BuildConfig) -> dict | None:
    """A test row: the student's prompt, the user's gold label (else the teacher's vote, and ``gold`` is None so the
    report calls the score agreement), and the teacher's vote on the same input."""
    x = strip_context(record.parts)
    target = record.label if record.label is not None else record.majority
    if target is None:
        return None
    prompt = config.label_prefix + x if config.mode == "rationale" else x
    return {"task": "context" if config.mode == "context" else "label", "prompt": prompt, "completion": target,
            "input": x, "label": target, "gold": record.label, "teacher": record.majority}  # fmt: skip


def content_key(record: TeacherRecord) -> str:
    """The example's input text, normalised (case, whitespace): what decides its split and finds duplicates."""
    return " ".join((record.input or "").lower().split())


def duplicate_inputs(records) -> int:
    seen = Counter(content_key(r) for r in records)
    return sum(n - 1 for n in seen.values() if n > 1)


def split_of(record: TeacherRecord, config: BuildConfig) -> str:
    """Seeded, by a hash of the input's content (not its line or id): inserting a row reshuffles nothing, the rows of
    one example always land together, and two examples with the same input never sit in two splits."""
    if config.split_field:
        value = record.row.get(config.split_field)
        if value not in SPLITS:
            raise UsageError(f"example {record.id}: --split-field {config.split_field!r} is {value!r}; expected one of {', '.join(SPLITS)}")
        return value
    u = int(hashlib.sha256(f"{config.seed}:{content_key(record)}".encode()).hexdigest()[:12], 16) / 16**12
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.validation_fraction:
        return "validation"
    return "train"


SOFT_FIELDS = ("answer_votes", "teacher_logprobs", "teacher_messages", "teacher_format", "teacher_prefix")


def formatted(row: dict, config: BuildConfig) -> dict:
    base = {"id": row["id"], "task": row["task"], **{k: row[k] for k in ("input", "label", "gold", "teacher") if k in row}}
    soft = {k: row[k] for k in SOFT_FIELDS if k in row} if config.soft_target_fields else {}  # what `train --objective kd` reads
    if "answer_votes" in soft and config.format == "prompt-completion":  # the answers as the completion spells them
        soft["answer_votes"] = [{**v, "answer": config.completion_prefix + v["answer"]} for v in soft["answer_votes"]]
    if config.format == "messages":
        return {**base, "messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}], **soft}
    return {**base, "prompt": row["prompt"], "completion": config.completion_prefix + row["completion"], **soft}


def to_dataset(rows: list[dict], config: BuildConfig):
    from datasets import Dataset, DatasetDict

    splits = {}
    for split in SPLITS:
        part = [formatted(r, config) for r in rows if r["split"] == split]
        keys = list(dict.fromkeys(k for r in part for k in r))
        part = [{k: r.get(k) for k in keys} for r in part]  # every column in every row (from_list reads the first row's keys)
        if part:
            ds = Dataset.from_list(part)
            # A fingerprint from the content, not a random one, so the same input gives byte-identical files.
            ds._fingerprint = hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]
            splits[split] = ds
    return DatasetDict(splits)


# --- report and card --------------------------------------------------------------------------------


def summary_of(counts: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing counted"


def make_report(config, records, rows, rejects, counts, kept) -> dict:
    rationale_words = [len((c.sample.rationale or "").split()) for c in kept]
    labels = Counter(r["completion"] for r in rows if r["task"] in ("label", "context") and r["split"] != "test")
    prompts = {(r.prompt.get("name"), r.prompt.get("sha256")) for r in records}
    return {
        "config": {k: v for k, v in to_dict(config).items() if k not in ("out", "cache_dir")},  # where it lies is not provenance
        "examples": len(records),
        "examples_kept": len({r["id"] for r in rows if r["split"] != "test"}),
        "rows": dict(Counter(r["split"] for r in rows)),
        "rows_by_task": dict(Counter(r["task"] for r in rows)),
        "filters": dict(sorted(counts.items())),
        "teachers": sorted({s.teacher for r in records for s in r.samples}),
        "prompts": [{"name": n, "sha256": h} for n, h in sorted(prompts, key=str)],
        "sampling_params": records[0].prompt.get("params", {}),
        # What evaluation needs to ask the student the way it was trained: the input template and the prefixes.
        "student_input": {"template": records[0].prompt.get("template"), "input_field": records[0].prompt.get("input_field"),
                          "answer_type": records[0].prompt.get("answer_type") or "text",
                          "options": records[0].prompt.get("options"),
                          "answer_type_source": records[0].prompt.get("answer_type_source", "prompt"),
                          "answer_prefix": config.label_prefix if config.mode == "rationale" else "",
                          "completion_prefix": config.completion_prefix if config.format == "prompt-completion" else ""},
        "samples_per_example": max(len(r.samples) for r in records),
        "label_distribution": dict(labels.most_common(20)),
        "rationale_words": _stats(rationale_words),
        "teacher_cost_usd": round(sum(s.cost or 0.0 for r in records for s in r.samples), 6),
        "rejects": len(rejects),
    }


def _stats(values: list[int]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"mean": round(statistics.mean(values), 1), "median": statistics.median(values), "min": values[0],
            "max": values[-1], "p90": values[int(0.9 * (len(values) - 1))]}  # fmt: skip


def heldout_summary(report: dict) -> str:
    t = report.get("test", {})
    if not t.get("examples"):
        return "no test split: --test-fraction is 0 or no input fell in it"
    right = f", the teacher's vote right on {t.get('teacher right', 0)}" if t.get("with gold") else ""
    return f"{t['examples']} examples, {t.get('with gold', 0)} with a gold label{right}"


TALLIES = {"kept": "samples kept", "extra-rationale": "extra rationales kept (--rationales all)",
           "examples-dropped": "examples with no sample left"}  # counts that are not a filter's drops


def decision(key: str) -> str:
    return TALLIES.get(key, f"dropped by {key}")


def card(report: dict) -> str:
    c = report["config"]
    lines = [
        "# Distillation dataset", "",
        f"Built by rationale-distill in **{c['mode']}** mode from `{c['records']}`, label source **{c['label_source']}**"
        + (f" (min agreement {c['min_agreement']})" if c["label_source"] == "vote" else "") + ".", "",
        "## Provenance", "",
        f"- Teachers: {', '.join(f'`{t}`' for t in report['teachers'])}",
        "- Prompts: " + ", ".join(f"`{p['name']}` (sha256 `{(p['sha256'] or '')[:12]}`)" for p in report["prompts"]),
        f"- Sampling: {json.dumps(report['sampling_params'], sort_keys=True)}; up to {report['samples_per_example']} samples per example",
        f"- Answers read as **{report['student_input']['answer_type']}**"
        + (f" over {', '.join(report['student_input']['options'])}" if report["student_input"].get("options") else "")
        + f" ({report['student_input'].get('answer_type_source', 'prompt')}); compared by value for numbers",
        f"- Teacher cost: ${report['teacher_cost_usd']:.4f}",
        f"- Filters, in order: {', '.join(c['filters'] or ['defaults'])}", "",
        "## Counts", "",
        f"{report['examples_kept']} of {report['examples']} examples kept; {report['rejects']} rejects (see `rejects.jsonl`).", "",
        "| split | rows |", "|---|---|", *[f"| {k} | {v} |" for k, v in sorted(report["rows"].items())], "",
        f"The **test** split is held out from the inputs before any filter, by a hash of each input's text: every "
        f"held-out input is in it, whatever the teacher answered ({heldout_summary(report)}). Its `gold` column is the "
        "data's own label (null where there is none: scores against the teacher's vote are agreement, not accuracy); "
        f"`teacher` is the teacher's vote on the same input. Duplicate inputs: {report.get('duplicate_inputs', 0)}.", "",
        "| task | rows |", "|---|---|", *[f"| {k} | {v} |" for k, v in sorted(report["rows_by_task"].items())], "",
        "| decision | count |", "|---|---|", *[f"| {decision(k)} | {v} |" for k, v in report["filters"].items()], "",
        *[f"- Filter `{name}`: {json.dumps(d, sort_keys=True)}" for name, d in report.get("filter_details", {}).items()], "",
        "## Labels", "", "| label | rows |", "|---|---|", *[f"| {k.strip()} | {v} |" for k, v in report["label_distribution"].items()], "",
        "## Rationale length (words)", "",
        " ".join(f"{k} {v}" for k, v in report["rationale_words"].items()) or "no rationales", "",
    ]  # fmt: skip
    return "\n".join(lines)


def clean_stale(out: Path) -> list[Path]:
    """Remove the temporary folders of builds into ``out`` whose process is gone; returns what was removed."""
    removed = []
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        pid = path.name[len(out.name) + 2 :].split(".")[0]
        if not path.is_dir() or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if path.name.endswith(".old") and not out.exists():
            path.rename(out)  # killed between the two renames: the old build is the complete one
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_output(out: Path, dataset, rows, rejects, report, config) -> None:
    """Everything goes to a temporary folder beside ``out`` and is renamed into place at the end, so ``out`` is
    always the old build or the new one. A build killed midway leaves ``.OUT.PID.tmp`` (or ``.OUT.PID.old``)
    behind; the next build removes what a dead process left, first restoring ``out`` if the kill fell between the
    two renames."""
    from ..generation.store import exclusive

    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(out.with_name(f".{out.name}.lock"), f"the dataset folder {out}", "pass another --out"):
        clean_stale(out)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            import datasets

            datasets.disable_progress_bars()
            dataset.save_to_disk(str(tmp / "dataset"))
            for split in SPLITS:
                write_jsonl(tmp / f"{split}.jsonl", [formatted(r, config) for r in rows if r["split"] == split])
            write_jsonl(tmp / "rejects.jsonl", [r.__dict__ for r in rejects])
            (tmp / "build.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
            (tmp / "README.md").write_text(card(report))
            if out.exists():
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old)
            else:
                tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
