"""``rdistill batches list|cancel``: the journaled batches, asked of the provider."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ...errors import UsageError
from .api import BatchAPI
from .journal import TERMINAL, Journal, Submitted, journal_path


def _api_for(sub: Submitted, api_base: str | None) -> BatchAPI:
    key = os.environ.get(sub.api_key_env) if sub.api_key_env else None
    base = api_base or sub.api_base
    if key is None and base:
        key = "EMPTY"  # an OpenAI-compatible server that takes no key; the client needs one
    return BatchAPI(sub.provider, base, key, max_retries=2)


def list_batches(out: str | os.PathLike, api_base: str | None = None, refresh: bool = True) -> list[Submitted]:
    """Every batch journaled for ``out`` (the records file, or a journal), with its status asked of the provider
    when ``refresh`` (and the batch is not collected yet)."""
    subs = Journal(_journal_of(out)).load()

    async def ask():
        for sub in subs.values():
            if refresh and sub.batch_id and not sub.collected:
                sub.seen(await _api_for(sub, api_base).retrieve(sub.batch_id))

    asyncio.run(ask())
    return list(subs.values())


def cancel_batches(out: str | os.PathLike, api_base: str | None = None) -> list[Submitted]:
    """Cancel every journaled batch still running; returns those cancelled. Collected and ended ones are left."""
    journal = Journal(_journal_of(out))
    subs = journal.load()
    cancelled = []

    async def go():
        for sub in subs.values():
            if not sub.batch_id or sub.collected or sub.status in TERMINAL:
                continue
            api = _api_for(sub, api_base)
            batch = await api.retrieve(sub.batch_id)
            if batch.status in TERMINAL or batch.status == "cancelling":
                sub.status = batch.status
                continue
            batch = await api.cancel(sub.batch_id)
            sub.status = batch.status
            journal.append({"event": "cancel", "file_id": sub.file_id, "batch_id": sub.batch_id, "status": batch.status})
            cancelled.append(sub)

    asyncio.run(go())
    return cancelled


def _journal_of(out: str | os.PathLike) -> Path:
    path = Path(out)
    journal = path if path.name.endswith(".batches.jsonl") else journal_path(path)
    if not journal.is_file():
        raise UsageError(f"{out}: no batch journal at {journal} (batches are journaled beside the --out of `rdistill generate --batch`)")
    return journal
