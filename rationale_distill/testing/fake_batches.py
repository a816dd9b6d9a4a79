"""The batch API of the test server: /v1/files (upload, retrieve, content) and /v1/batches (create, list, retrieve,
cancel). A batch's lines are answered by the same code as online requests, so every fault of ``Faults`` applies per
line (a 429 or a 500 becomes an error-file line, a refusal a 400 line); ``Faults.batch_delay``,
``batch_create_delay``, ``expire_first_batch_after`` and ``expired_in_error_file`` shape the batch itself.
``submissions`` lists every batch created (id, input file, custom ids): the proof that nothing was submitted twice."""

from __future__ import annotations

import asyncio
import json
import time


TERMINAL = ("completed", "failed", "expired", "cancelled")  # a batch in these states never changes again


class BatchEndpoints:
    """Mixed into FakeOpenAI: needs its ``faults``, ``requests``, ``_rng``, ``_lock``, ``_loop``, ``_answer`` and ``_error``."""

    def batch_routes(self, app) -> None:
        self.files: dict[str, dict] = {}  # file id -> {bytes, filename, purpose, created_at}
        self.batches: dict[str, dict] = {}  # batch id -> the batch object as the API answers it (plus private fields)
        self.submissions: list[tuple[str, str, list[str]]] = []  # every batch created: (batch id, input file, custom ids)
        self._release = None
        self._unseen = 0  # batch creations refused so far (Faults.files_unseen)
        app.router.add_post("/v1/files", self._file_create)
        app.router.add_get("/v1/files/{id}", self._file_get)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._batch_create)
        app.router.add_get("/v1/batches", self._batch_list)
        app.router.add_get("/v1/batches/{id}", self._batch_get)
        app.router.add_post("/v1/batches/{id}/cancel", self._batch_cancel)

    def _released(self) -> asyncio.Event:
        if self._release is None:
            self._release = asyncio.Event()
        return self._release

    def release_batches(self) -> None:
        """End the `batch_delay` wait of every batch now and from now on (thread-safe: call it from a test)."""
        self._loop.call_soon_threadsafe(lambda: self._released().set())

    def _authorized(self, request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict:
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"bytes": data, "filename": filename, "purpose": purpose, "created_at": int(time.time())}
        return self._file_object(file_id)

    def _file_object(self, file_id: str) -> dict:
        f = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["bytes"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}  # fmt: skip

    async def _file_create(self, request):
        from aiohttp import web

        form = await request.post()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return self._error(web, 400, "invalid_request_error", "a file is required")
        return web.json_response(self._new_file(upload.file.read(), upload.filename or "upload.jsonl", str(form.get("purpose") or "")))

    def _unknown(self, request, table: dict, message: str):
        """The 404 OpenAI answers for an id it does not know (``message`` names the id), or None when it is known."""
        from aiohttp import web

        known = request.match_info["id"] in table
        return None if known else self._error(web, 404, "not_found", message.format(request.match_info["id"]))

    async def _file_get(self, request):
        from aiohttp import web

        missing = self._unknown(request, self.files, "No such File object: {}")
        return missing or web.json_response(self._file_object(request.match_info["id"]))

    async def _file_content(self, request):
        from aiohttp import web

        missing = self._unknown(request, self.files, "No such File object: {}")
        return missing or web.Response(body=self.files[request.match_info["id"]]["bytes"], content_type="application/octet-stream")

    async def _batch_create(self, request):
        from aiohttp import web

        body = await request.json()
        file_id = body.get("input_file_id")
        if self._unseen < self.faults.files_unseen:  # a new file not visible to the batches endpoint yet
            self._unseen += 1
            return self._error(web, 400, "invalid_request_error", f"Cannot find file {file_id}, or project proj_test does not have access to it.")
        if file_id not in self.files:
            return self._error(web, 400, "invalid_request_error", f"No such File object: {file_id}")
        lines = [json.loads(x) for x in self.files[file_id]["bytes"].splitlines() if x.strip()]
        with self._lock:
            open_now = sum(b["status"] not in TERMINAL for b in self.batches.values())
            full = self.faults.batch_queue_limit is not None and open_now >= self.faults.batch_queue_limit
            self.most_open = max(getattr(self, "most_open", 0), open_now + (not full))
            batch_id = f"batch_{len(self.batches) + 1}"
            now = int(time.time())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": file_id, "completion_window": body.get("completion_window", "24h"),
                "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
                "_expire_after": self.faults.expire_first_batch_after if not self.submissions else None, "_created_wall": time.time(),
                "_queue_full": full,
            }  # fmt: skip
            self.submissions.append((batch_id, file_id, [line.get("custom_id") for line in lines]))
        asyncio.ensure_future(self._run_batch(batch_id, lines, dict(request.headers)))
        if self.faults.batch_create_delay:
            await asyncio.sleep(self.faults.batch_create_delay)
        return web.json_response(self._batch_object(batch_id))

    def _batch_object(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    async def _run_batch(self, batch_id: str, lines: list[dict], headers: dict) -> None:
        """Answer a batch's lines through the same code as online requests; output and error files at the end."""
        batch, f = self.batches[batch_id], self.faults
        if batch["_queue_full"]:  # refused at validation, as OpenAI does when the enqueued-token limit is reached
            batch["errors"] = {"object": "list", "data": [{"code": "token_limit_exceeded", "line": None, "param": None,
                               "message": "Enqueued token limit reached for fake in organization org-test. Please try again once some in_progress batches have been completed."}]}  # fmt: skip
            return self._finish(batch, [], [], "failed")
        try:  # tests may end the wait early: release_batches()
            await asyncio.wait_for(self._released().wait(), f.batch_delay)
        except asyncio.TimeoutError:
            pass
        if batch["status"] == "cancelling":
            return self._finish(batch, [], [], "cancelled")
        if f.fail_first_batch and batch is next(iter(self.batches.values())):  # validation failed: nothing is answered
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1, "param": "body.model",
                                                          "message": f.fail_first_batch}]}  # fmt: skip
            return self._finish(batch, [], [], "failed")
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        out, errors, status = [], [], "completed"

        class Asked:  # what _answer reads of an HTTP request
            pass

        asked = Asked()
        asked.headers = headers
        for i, line in enumerate(lines):
            if batch["status"] == "cancelling":
                status = "cancelled"
                break
            if batch["_expire_after"] is not None and i >= batch["_expire_after"]:
                status = "expired"
                for rest in lines[i:] if f.expired_in_error_file else []:
                    errors.append({"id": f"batch_req_{batch_id}_{len(out) + len(errors)}", "custom_id": rest.get("custom_id"), "response": None,
                                   "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})  # fmt: skip
                break
            body = line["body"]
            with self._lock:
                self.requests.append(body)
                roll, number = self._rng.random(), len(self.requests)
            response = await self._answer(body, asked, roll, number, batch=True)
            try:
                payload = json.loads(response.body)
            except (TypeError, ValueError):
                response, payload = None, {"error": {"message": "The server had an error", "type": "server_error"}}
            code = response.status if response is not None else 500
            entry = {"id": f"batch_req_{batch_id}_{i}", "custom_id": line.get("custom_id"),
                     "response": {"status_code": code, "request_id": f"req_{number}", "body": payload}, "error": None}  # fmt: skip
            (out if code == 200 else errors).append(entry)
            batch["request_counts"]["completed" if code == 200 else "failed"] += 1
            if f.batch_line_s:
                await asyncio.sleep(f.batch_line_s)
        self._finish(batch, out, errors, status)

    def _finish(self, batch: dict, out: list[dict], errors: list[dict], status: str) -> None:
        batch["status"] = "finalizing"
        if out:
            batch["output_file_id"] = self._jsonl_file(out, "batch_output.jsonl")
        if errors:
            batch["error_file_id"] = self._jsonl_file(errors, "batch_errors.jsonl")
        now = int(time.time())
        batch.update(status=status, **{f"{status}_at": now, "finalizing_at": now})

    def _jsonl_file(self, rows: list[dict], name: str) -> str:
        return self._new_file("".join(json.dumps(x) + "\n" for x in rows).encode(), name, "batch_output")["id"]

    async def _batch_get(self, request):
        from aiohttp import web

        missing = self._unknown(request, self.batches, "No batch found with id '{}'")
        return missing or web.json_response(self._batch_object(request.match_info["id"]))

    async def _batch_list(self, request):
        from aiohttp import web

        ids = sorted(self.batches, key=lambda b: int(b.split("_")[1]), reverse=True)  # newest first, as OpenAI lists
        after = request.query.get("after")
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        limit = int(request.query.get("limit", 20))
        page = [self._batch_object(b) for b in ids[:limit]]
        return web.json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit})  # fmt: skip

    async def _batch_cancel(self, request):
        from aiohttp import web

        missing = self._unknown(request, self.batches, "No batch found with id '{}'")
        if missing:
            return missing
        batch_id = request.match_info["id"]
        batch = self.batches[batch_id]
        if batch["status"] in TERMINAL:
            return self._error(web, 400, "invalid_request_error", f"Cannot cancel a batch with status '{batch['status']}'")
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return web.json_response(self._batch_object(batch_id))

