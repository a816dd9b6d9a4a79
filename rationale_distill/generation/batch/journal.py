"""The batch journal (``OUT.batches.jsonl``): what was uploaded, submitted, collected and cancelled, one fsynced line
per step, read back into one ``Submitted`` per input file."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...config import default_cache_dir

TERMINAL = ("completed", "failed", "expired", "cancelled")


def journal_path(out: str | os.PathLike | None, cache_dir: str | None = None) -> Path:
    """``runs/x/teacher.batches.jsonl`` beside the records; without --out, ``batches.jsonl`` in the cache folder."""
    if out:
        out = Path(out)
        return out.with_name(out.stem + ".batches.jsonl")
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "batches.jsonl"


@dataclass
class Submitted:
    """One input file and the batch made from it, as the journal knows them."""

    file_id: str
    teacher: str
    endpoint: str
    provider: str
    api_base: str | None
    keys: list[str]
    bytes: int = 0
    api_key_env: str | None = None  # the variable holding the key (never the key)
    batch_id: str | None = None
    status: str = "uploaded"  # the provider's status when last seen
    counts: dict = field(default_factory=dict)  # total / completed / failed, as the provider reported them
    collected: bool = False
    ok: int = 0
    failed: int = 0
    cost: float = 0.0

    def seen(self, batch) -> None:
        """Take the provider's status and request counts from a batch object it answered."""
        counts = getattr(batch, "request_counts", None)
        self.status = batch.status
        self.counts = {k: getattr(counts, k, 0) or 0 for k in ("total", "completed", "failed")} if counts else {}


class Journal:
    """Append-only JSONL of what was submitted: one line per file uploaded, batch created, batch collected, cancel.
    Every line is flushed and fsynced before the next step, so a kill -9 anywhere leaves the truth on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, event: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def load(self) -> dict[str, Submitted]:
        """file id -> what became of it, in submission order."""
        subs: dict[str, Submitted] = {}
        if not self.path.is_file():
            return subs
        with self.path.open("rb") as fh:
            for line in fh:
                try:
                    e = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue  # torn by a kill: the step it records did not finish
                if not isinstance(e, dict):
                    continue
                kind, sub = e.get("event"), subs.get(e.get("file_id"))
                if kind == "file":
                    subs[e["file_id"]] = Submitted(e["file_id"], e["teacher"], e["endpoint"], e["provider"], e.get("api_base"),
                                                   list(e["keys"]), e.get("bytes", 0), e.get("api_key_env"))  # fmt: skip
                elif sub is None:
                    continue
                elif kind == "batch":
                    sub.batch_id, sub.status = e["batch_id"], e.get("status", "validating")
                elif kind == "collected":
                    sub.collected, sub.status = True, e["status"]
                    sub.ok, sub.failed, sub.cost = e.get("ok", 0), e.get("failed", 0), e.get("cost", 0.0)
                    sub.counts = e.get("counts") or sub.counts
                elif kind == "cancel":
                    sub.status = e.get("status", "cancelling")
        return subs
