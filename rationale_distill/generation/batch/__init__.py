"""Batch mode: the requests online mode would send, sent as files through the provider's batch API (LiteLLM's files
and batches functions), at the batch price (about half) and far higher rate limits, answered within 24 hours.

Read ``run_batches`` top to bottom:
1. The journal (``OUT.batches.jsonl``) says what earlier runs submitted. A file uploaded whose batch id was never
   journaled (a kill between the two) is matched to its batch at the provider by its input file, or submitted now.
2. What is neither cached nor in an open batch is written into files within the provider's limits (requests and
   bytes per file, one teacher and endpoint per file), one batch per file. Each file id and batch id is journaled
   (flushed and fsynced) the moment it exists, so no request is ever submitted twice.
3. Open batches are polled with backoff under a progress bar. Each batch that ends is collected at once: successes
   become cache entries under the online cache keys (a later online or batch run pays for none of them), permanent
   errors are journaled failures as online, transient errors and what an expired batch never answered go into a
   follow-up batch (up to ``--batch-resubmits`` times), and a reply with fewer than ``n`` choices gets its missing
   samples as single seeded requests, as online.
4. Ctrl-C stops waiting and leaves the batches running at the provider; the same command collects them later.
"""

from .api import BatchAPI, batch_cost
from .journal import TERMINAL, Journal, Submitted, journal_path
from .manage import cancel_batches, list_batches
from .run import BatchReport, lines_for, plan_files, run_batches, split_files

__all__ = ["TERMINAL", "BatchAPI", "BatchReport", "Journal", "Submitted", "batch_cost", "cancel_batches", "journal_path",
           "lines_for", "list_batches", "plan_files", "run_batches", "split_files"]  # fmt: skip
