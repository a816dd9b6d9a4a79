"""Per-request cache and journal: the audit trail of every paid call and the resume point.

Each completed call is appended as one JSON line and flushed as it completes, so Ctrl-C or ``kill -9`` loses
nothing that was paid for. Each process writes its own segment file (``calls-<time>-<pid>.jsonl``); reading
merges every segment, so worker processes share one cache. A torn last line is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from ..config import default_cache_dir
from ..errors import UsageError

KEY_VERSION = 2  # bumped when the key's recipe changes (2: the request as sent, not the data row)


def call_key(teacher, request) -> str:
    """A canonical hash of the request that goes out: who answers (the teacher's identity: model, endpoint without
    secrets), the version the teacher plugin declares, and exactly what it sends (``request_payload``: the rendered
    messages, every sampling parameter, n, seed). Not the data row: editing a label or an unused column re-pays
    nothing. Never the API key."""
    payload = {"key": KEY_VERSION, "teacher": teacher.identity(), "version": getattr(teacher, "version", 1),
               "request": teacher.request_payload(request)}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class Store:
    def __init__(self, root: str | os.PathLike | None = None, load: bool = True):
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "calls"
        self.index: dict[str, dict] = {}
        self.failures: dict[str, dict] = {}  # permanent failures (4xx), not resent unless asked
        self.torn_lines = 0
        self.torn: dict[str, int] = {}  # segment file -> lines skipped (torn by a kill, not ours, not JSON objects)
        self._fh = None
        self._read: set[Path] = set()  # segments already in the index
        if load:  # a worker process that only appends need not read the whole cache
            self._load()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for segment in sorted(self.dir.glob("calls-*.jsonl")):
            if segment in self._read:
                continue
            self._read.add(segment)
            with segment.open("rb") as fh:  # bytes: a kill inside a multi-byte character must not stop a resume
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        entry = None  # a write cut short by kill -9: that call was not completed
                    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                        self.torn_lines += 1
                        self.torn[str(segment)] = self.torn.get(str(segment), 0) + 1
                        continue
                    self._remember(entry)

    def _remember(self, entry: dict) -> None:
        if entry.get("revoked"):  # a journaled answer found to be no answer (the server never saw the prompt)
            self.index.pop(entry["key"], None)
        elif entry.get("ok"):
            self.index[entry["key"]] = entry
        elif entry.get("permanent") and entry.get("key"):
            self.failures[entry["key"]] = entry

    def torn_report(self) -> str | None:
        """One line per file with skipped lines, for the run summary; None when every line was whole."""
        if not self.torn:
            return None
        return "; ".join(f"{n} torn or foreign line{'s' * (n > 1)} skipped in {f}" for f, n in sorted(self.torn.items()))

    def refresh(self) -> None:
        """Read the segments other processes wrote since this store was opened (worker processes, say)."""
        self._load()

    def get(self, key: str) -> dict | None:
        return self.index.get(key)

    def failure(self, key: str) -> dict | None:
        """The journaled permanent failure of this request, unless it has succeeded since."""
        return None if key in self.index else self.failures.get(key)

    def put(self, entry: dict) -> None:
        """Journal one call (successful or not); successful ones become cache hits."""
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"calls-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{id(self) & 0xFFFF:04x}.jsonl"
            self._fh = (self.dir / name).open("a", encoding="utf-8")
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the OS's hands now: survives the process being killed
        self._remember(entry)

    def revoke(self, keys: list[str]) -> None:
        """Take these answers out of the cache (journaled, so every process and every later run agrees)."""
        for key in keys:
            self.put({"key": key, "ok": False, "revoked": True, "time": time.time()})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str, fix: str):
    """Hold an exclusive lock on ``path`` (a lock file) while a run uses ``what``; a second run refuses at once with
    one line naming the process that holds it. The lock dies with its process (flock), so a killed run leaves none."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UsageError(f"{what} is in use by {holder}; wait for it to finish, or {fix}") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"rdistill (pid {os.getpid()})")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
