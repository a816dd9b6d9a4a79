"""The nouns passed between stages, and their JSONL form.

rows -> prompts -> teachers -> TeacherRecord (one per input, JSONL) -> pairs -> student -> report
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonlines

from .errors import UsageError

SCHEMA = "rdistill.teacher_record.v1"

# The parts a rendered prompt is made of. The dataset builder strips everything but "input" for
# context distillation, working from these markers, never from string guessing.
PARTS = ("system", "instructions", "demos", "input")


@dataclass
class Part:
    part: str  # one of PARTS
    role: str  # chat role of the message this text belongs to
    text: str
    message: int  # index of the message it is in


@dataclass
class Sample:
    teacher: str
    index: int  # sample index within this teacher, 0..samples-1
    text: str | None = None  # the raw completion; None only when the call itself failed
    rationale: str | None = None
    answer: str | None = None  # normalised
    raw_answer: str | None = None  # as written by the teacher
    parse_error: str | None = None  # set when parsing failed; text is kept
    error: str | None = None  # set when the call failed after all retries
    error_kind: str | None = None  # auth, bad_request, content_filter, context_window, rate_limit, server, budget, ...
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    cost: float = 0.0  # USD
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    logprobs: list | None = None  # top-k logprobs of the answer tokens, where the provider returned them

    @property
    def ok(self) -> bool:
        return self.error is None and self.parse_error is None and self.answer is not None


@dataclass
class TeacherRecord:
    id: str
    row: dict
    input: str  # the bare rendered input (the "input" part), what a student sees
    label: str | None  # the gold label, normalised; None when the data has none
    prompt: dict  # name, sha256 of the prompt file, answer_type, parser
    messages: list[dict]  # exactly what was sent
    parts: list[Part]
    samples: list[Sample] = field(default_factory=list)
    majority: str | None = None
    vote_share: float = 0.0  # votes for the majority / samples that returned text
    votes: dict = field(default_factory=dict)
    schema: str = SCHEMA

    def vote(self) -> None:
        """Majority answer over every parsed sample of every teacher (self-consistency, multi-teacher)."""
        answered = [s for s in self.samples if s.text is not None]
        counts = Counter(s.answer for s in answered if s.ok)
        self.votes = dict(counts.most_common())
        if counts:
            # Ties break towards the answer seen first, so the result is deterministic.
            top = max(counts.values())
            self.majority = next(s.answer for s in answered if s.ok and counts[s.answer] == top)
            self.vote_share = round(top / len(answered), 6)
        else:
            self.majority, self.vote_share = None, 0.0

    def to_dict(self) -> dict:
        # A shallow copy per level, in field order: what dataclasses.asdict gives for this shape, without its
        # recursive deepcopy of every row and message (which made replaying a cached run 3x slower).
        d = dict(vars(self))
        d["parts"] = [dict(vars(p)) for p in self.parts]
        d["samples"] = [dict(vars(s)) for s in self.samples]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "TeacherRecord":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["parts"] = [Part(**p) for p in data.get("parts", [])]
        sample_fields = {f.name for f in fields(Sample)}
        data["samples"] = [Sample(**{k: v for k, v in s.items() if k in sample_fields}) for s in data.get("samples", [])]
        return cls(**data)


def read_records(path: str | os.PathLike) -> list[TeacherRecord]:
    """Read a teacher-records JSONL file, with a one-line error naming the file and line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected teacher records written by `rdistill generate`)")
    records = []
    with path.open(encoding="utf-8") as fh:
        reader = jsonlines.Reader(fh)
        try:
            for lineno, obj in enumerate(reader.iter(skip_empty=True), start=1):
                if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
                    raise UsageError(
                        f"{path}:{lineno}: not a teacher record (no schema {SCHEMA!r}); "
                        "pass the output of `rdistill generate`"
                    )
                records.append(TeacherRecord.from_dict(obj))
        except jsonlines.InvalidLineError as exc:
            raise UsageError(f"{path}:{exc.lineno}: malformed JSON line; the file is not teacher records") from None
    if not records:
        raise UsageError(f"{path}: the file is empty; run `rdistill generate` first")
    return records


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows (dicts or records) to JSONL atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, jsonlines.open(tmp, mode="w", compact=True, sort_keys=False) as writer:
        for row in rows:
            writer.write(row.to_dict() if hasattr(row, "to_dict") else row)
            n += 1
    return n
