"""What a classifier student learns from: each example's input, its class, and the teacher's distribution over the
classes (soft labels, Hinton et al. 2015). No torch here; both classifier trainers read their data through this.

The dataset builder writes ``input`` and ``label`` on every label/context row, and (unless built with
``--no-soft-target-fields``) the teacher's votes (``answer_votes``) and, where the provider returned them, its top-K
logprobs over the tokens of its answer (``teacher_logprobs``). From those:

- ``votes``: the share of the teacher's samples that gave each class, tempered as ``share ** (1 / T)``, renormalised
  (the same as a softmax of the log-shares at temperature T).
- ``logprobs``: the teacher's probability of each class at the first token of its answer (the first that is not only
  blank): every top-K alternative
  there that starts exactly one class name (or spells one whole, "billing.") is that class's mass, softened as ``softmax(logprob / T)`` over
  the classes. A row where no alternative names a class, or one names two, falls back to its hard label (counted).

The soft distribution is then mixed with the hard label by the trainer (``alpha`` on the hard label).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass
class Example:
    input: str
    label: str
    soft: list[float] | None = None  # over ``ClassData.classes``, at the trainer's temperature; None: hard label only


@dataclass
class ClassData:
    classes: list[str]
    splits: dict[str, list[Example]]
    report: dict  # the dataset's build.json
    soft_counts: Counter = field(default_factory=Counter)  # rows with a soft label, and why the others have none

    def summary(self) -> dict:
        return {"classes": self.classes, "rows": {k: len(v) for k, v in self.splits.items()}, "soft_labels": dict(self.soft_counts)}


def read_class_data(data: str | Path, source: str | None = None, temperature: float = 1.0) -> ClassData:
    """The dataset folder's label/context rows as classification examples; ``source`` (votes, logprobs or None)
    attaches soft labels to the train and validation rows."""
    from . import load_split_rows

    splits, report = load_split_rows(data)
    student_input = report.get("student_input", {})
    prefix = student_input.get("answer_prefix", "")
    completion_prefix = student_input.get("completion_prefix", "")
    examples: dict[str, list[tuple[dict, Example]]] = {}
    for split, rows in splits.items():
        out = []
        for row in rows:
            if row.get("task") not in ("label", "context"):
                continue  # rationale rows: a classifier reads inputs and classes only
            if "input" in row and "label" in row:
                x, y = row["input"], row["label"]
            elif "prompt" in row and row.get("task") == "label":  # a dataset built before the input/label fields
                x = row["prompt"][len(prefix) :] if row["prompt"].startswith(prefix) else row["prompt"]
                y = row["completion"][len(completion_prefix) :] if row["completion"].startswith(completion_prefix) else row["completion"]
            else:
                raise UsageError(f"{data}: {split}.jsonl has rows without `input` and `label`; rebuild it with `rdistill build`")
            if y is None or str(y).strip() == "":
                continue
            out.append((row, Example(str(x), str(y).strip())))
        examples[split] = out
    if not examples.get("train"):
        raise UsageError(f"{data}: no label rows in the train split for a classifier (build with --mode label-only or rationale)")
    classes = class_set(report, [e for rows in examples.values() for _, e in rows])
    if len(classes) < 2:
        raise UsageError(f"{data}: a classifier needs at least two classes; the data has {classes}")
    known = set(classes)
    for split, rows in examples.items():
        for _, e in rows:
            if e.label not in known:
                raise UsageError(f"{data}: {split} row label {e.label!r} is not one of the classes {classes}")
    data_out = ClassData(classes, {k: [e for _, e in v] for k, v in examples.items()}, report)
    if source:
        for split in ("train", "validation"):
            for row, e in examples.get(split, []):
                e.soft, why = soft_label(row, classes, source, temperature, completion_prefix)
                data_out.soft_counts[why] += 1
        if not data_out.soft_counts.get("soft"):
            fix = ("rebuild without --no-soft-target-fields" if source == "votes" else
                   "generate with --logprobs K on a provider that returns them, then rebuild")  # fmt: skip
            raise UsageError(f"--kd-source {source}: no training row of {data} carries the teacher's {source} ({dict(data_out.soft_counts)}); {fix}")
    return data_out


def class_set(report: dict, examples: list[Example]) -> list[str]:
    """The prompt's declared options when it has them (their order is the class index), else the labels seen, sorted."""
    options = (report.get("student_input") or {}).get("options")
    if options:
        return [str(o) for o in options]
    return sorted({e.label for e in examples})


def soft_label(row: dict, classes: list[str], source: str, temperature: float, completion_prefix: str = "") -> tuple[list[float] | None, str]:
    """(the row's soft label over ``classes`` at ``temperature``, or None; why), for ``votes`` or ``logprobs``."""
    if source == "votes":
        votes = row.get("answer_votes") or []
        if not votes:
            return None, "no votes"
        counts = Counter()
        for v in votes:
            answer = str(v["answer"])
            answer = answer[len(completion_prefix) :] if completion_prefix and answer.startswith(completion_prefix) else answer
            counts[answer.strip()] += v["samples"]
        shares = [counts.get(c, 0) for c in classes]
        if not sum(shares):
            return None, "no vote for a class"
        return temper([math.log(s) if s else -math.inf for s in shares], temperature), "soft"
    if source == "logprobs":
        return class_logprobs(row, classes, temperature)
    raise UsageError(f"--kd-source {source}: a classifier takes its soft labels from votes or logprobs")


def temper(logits: list[float], temperature: float) -> list[float]:
    """softmax(logits / T); -inf stays at zero probability."""
    top = max(logits)
    exps = [math.exp((x - top) / temperature) if x != -math.inf else 0.0 for x in logits]
    total = sum(exps)
    return [x / total for x in exps]


def class_logprobs(row: dict, classes: list[str], temperature: float) -> tuple[list[float] | None, str]:
    """The teacher's distribution over the classes at the first token of its answer (see the module docstring)."""
    tokens = (row.get("teacher_logprobs") or {}).get("tokens") or []  # the tokens that spell the answer (generate keeps those)
    at = next((i for i, t in enumerate(tokens) if (t.get("token") or "").strip()), None)
    if at is None:
        return None, "no logprobs"
    alternatives = {a["token"]: a["logprob"] for a in tokens[at].get("top_logprobs") or []}
    alternatives.setdefault(tokens[at]["token"], tokens[at]["logprob"])
    lowered = [c.lower() for c in classes]
    logits = [-math.inf] * len(classes)
    for token, logprob in alternatives.items():
        piece = token.strip().lower()
        if not piece or logprob is None:
            continue
        hits = [i for i, c in enumerate(lowered) if c.startswith(piece) or piece.startswith(c)]  # "bill" or "billing."
        if len(hits) > 1:
            return None, "a token starts two classes"
        if hits:
            i = hits[0]
            logits[i] = logprob if logits[i] == -math.inf else math.log(math.exp(logits[i]) + math.exp(logprob))
    if all(x == -math.inf for x in logits):
        return None, "no alternative names a class"
    return temper(logits, temperature), "soft"


def mixed_target(label_index: int, soft: list[float] | None, alpha: float, n_classes: int) -> list[float]:
    """alpha * one-hot(label) + (1 - alpha) * soft; the one-hot alone where there is no soft label."""
    hard = [0.0] * n_classes
    hard[label_index] = 1.0
    if soft is None:
        return hard
    return [alpha * h + (1 - alpha) * s for h, s in zip(hard, soft)]


# --- what both classifier trainers check before they start ---


def soft_source(config) -> str | None:
    """The soft-label source a classifier trainer reads: None for hard labels (--objective sft)."""
    if config.objective == "sft":
        return None
    if config.objective != "kd":
        raise UsageError(f"--objective {config.objective}: --trainer {config.trainer} trains on labels only; use sft (hard labels) or kd (soft labels)")
    if config.kd_source not in ("votes", "logprobs"):
        raise UsageError(f"--kd-source {config.kd_source}: --trainer {config.trainer} takes soft labels from votes or logprobs")
    return config.kd_source


def ignored(config, names: tuple[str, ...]) -> None:
    """Warn about settings the chosen trainer does not use (TRL's habit: a setting that is ignored is said so)."""
    import warnings

    from . import TrainConfig

    defaults = TrainConfig(data="")
    for name in names:
        if getattr(config, name) != getattr(defaults, name):
            warnings.warn(f"--{name.replace('_', '-')} has no effect with --trainer {config.trainer}", stacklevel=3)
