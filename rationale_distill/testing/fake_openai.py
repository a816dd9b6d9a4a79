"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

It answers over real HTTP (aiohttp in a background thread), so the whole LiteLLM client path is exercised,
and it can inject latency, 429s (with Retry-After), 500s, hangs and malformed bodies at chosen rates.

    with FakeOpenAI(responder=lambda body, i: "2 + 2 = 4. So the answer is 4.") as server:
        server.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from .fake_batches import BatchEndpoints


@dataclass
class Faults:
    latency: float = 0.0  # seconds added to every request
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0  # sleep for `hang_s` (longer than the client's timeout)
    rate_malformed: float = 0.0  # a 200 with a body that is not JSON
    rate_drip: float = 0.0  # a 200 whose body trickles in `drip_pieces` pieces, `drip_s` apart (each read is quick)
    drip_s: float = 1.0
    drip_pieces: int = 30
    hang_s: float = 30.0
    retry_after: str | None = "0"
    retry_after_ms: str | None = None  # also send a retry-after-ms header with every 429
    first_429: int = 0  # the first N requests get a 429 (with the Retry-After above), whatever the rates say
    align_s: float = 0.0  # answer at the next multiple of this many seconds: replies arrive in clumps, like a batching server
    ignore_n: bool = False  # answer one choice whatever `n` says (many OpenAI-compatible servers do)
    usage_one_choice: bool = False  # with n > 1, count completion tokens of the first choice only (llama-server does)
    blind: bool = False  # the model never sees the prompt (a chat template that drops the user's turn)
    text_logprobs_as_chat: bool = False  # /v1/completions logprobs in the chat form ({"content": [...]}), as llama-server sends them
    seed: int = 0
    # the batch API (/v1/files, /v1/batches): each batch's lines go through the faults above (a 429 or a 500 becomes
    # an error-file line, a refusal a 400 line); a batch waits `batch_delay` seconds, then answers its lines in order
    batch_delay: float = 0.0
    batch_line_s: float = 0.0  # seconds per line once a batch runs (progress a poller can watch)
    batch_create_delay: float = 0.0  # the batch exists at once, its id is answered this many seconds later
    expire_first_batch_after: int | None = None  # the first batch expires after answering this many lines
    expired_in_error_file: bool = True  # list what an expired batch never answered in its error file (OpenAI does)
    fail_first_batch: str | None = None  # the first batch fails validation with this message (nothing answered)
    batch_queue_limit: int | None = None  # a batch created while this many are open fails: token_limit_exceeded
    files_unseen: int = 0  # the first N batch creations answer 400 "Cannot find file" (a file not visible yet)
    batch_api_503: int = 0  # the first N requests to /v1/files and /v1/batches get a 503 (retry-after-ms: 10)


def chat_logprobs(text: str, k: int) -> dict:
    """Logprobs in the chat form (one entry per whitespace-led word, each its own top-k alternative)."""
    return {"content": [{"token": t, "logprob": -0.1, "bytes": list(t.encode()),
                         "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": list(t.encode())}] * k}
                        for t in re.findall(r"\s*\S+", text)]}  # fmt: skip


def arithmetic_responder(body: dict, choice_index: int) -> str:
    """Solve 'What is A + B?'-style questions in the last user message: a rationale, then the answer marker."""
    text = body["messages"][-1]["content"]
    match = re.findall(r"(-?\d+)\s*([+\-*])\s*(-?\d+)", text)
    if not match:
        return "I am not sure. So the answer is 0."
    a, op, b = match[-1]
    value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    return f"We compute {a} {op} {b} = {value}. So the answer is {value}."


@dataclass
class FakeOpenAI(BatchEndpoints):
    responder: Callable[[dict, int], str] = arithmetic_responder
    faults: Faults = field(default_factory=Faults)
    # refuse(body) -> (status, error type, message) to refuse a request, as a content filter or a length check does
    refuse: Callable[[dict], tuple[int, str, str] | None] | None = None
    models: set[str] | None = None  # None: any model; else unknown models get a 404
    api_key: str | None = None  # when set, requests must carry "Authorization: Bearer <api_key>"
    # Like llama-server or vLLM serving a model: "gemma" wraps the chat endpoint's messages in Gemma's chat template
    # before the responder sees them (the text endpoint /v1/completions passes its prompt through untouched).
    chat_template: str | None = None
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self):
        self.requests: list[dict] = []  # every request body received
        # every request answered, in order: (arrived, answered, last message, seed, n, status), monotonic seconds
        self.log: list[tuple] = []
        self.served: Counter = Counter()  # successful responses per (last message, seed, n)
        self.status_counts: Counter = Counter()
        self._unavailable = 0  # 503s answered on the batch API so far (Faults.batch_api_503)
        self.http: Counter = Counter()  # every HTTP request received, by method and route ("POST /v1/files", ...)
        self.first_request_at: float | None = None  # time.time() of the first request since start or POST /_bench/reset
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._runner = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self, started: threading.Event) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        @web.middleware
        async def count(request, handler):
            self.http[f"{request.method} {re.sub(r'/(file-|batch_)[^/]+', '/{id}', request.path)}"] += 1
            if request.path.startswith(("/v1/files", "/v1/batches")):  # every call of the batch API: key, then overload
                if not self._authorized(request):
                    return self._error(web, 401, "invalid_api_key", "Incorrect API key provided")
                if self._unavailable < self.faults.batch_api_503:
                    self._unavailable += 1
                    return self._error(web, 503, "server_error", "The server is overloaded", {"retry-after-ms": "10"})
            return await handler(request)

        app = web.Application(middlewares=[count])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._text)
        app.router.add_get("/v1/models", self._models)
        self.batch_routes(app)  # /v1/files and /v1/batches (fake_batches.py)
        # for benchmarks: when the first request arrived (wall clock, comparable with another process's time.time())
        app.router.add_get("/_bench/first", self._first)
        app.router.add_post("/_bench/reset", self._reset)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    # --- handlers -------------------------------------------------------------------------------

    async def _models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in sorted(self.models or [])]})

    async def _first(self, request):
        from aiohttp import web

        return web.json_response({"first_request_at": self.first_request_at, "requests": len(self.requests)})

    async def _reset(self, request):
        from aiohttp import web

        self.first_request_at = None
        return web.json_response({})

    async def _text(self, request):
        """The text-completions endpoint: the prompt goes to the model as it is; answered in the completions format."""
        body = await request.json()
        return await self._chat(request, body=body)

    async def _chat(self, request, body: dict | None = None):

        arrived = time.monotonic()
        if self.first_request_at is None:
            self.first_request_at = time.time()
        body = body if body is not None else await request.json()
        with self._lock:
            self.requests.append(body)
            roll = self._rng.random()
            number = len(self.requests)
        response = await self._answer(body, request, roll, number)
        with self._lock:
            messages = body.get("messages") or [{"content": body.get("prompt")}]
            self.log.append((arrived, time.monotonic(), messages[-1].get("content"), body.get("seed"), body.get("n"), response.status))
        return response

    async def _answer(self, body, request, roll, number, batch: bool = False):
        from aiohttp import web

        f = self.faults
        if not self._authorized(request):
            return self._error(web, 401, "invalid_api_key", "Incorrect API key provided")
        model = body.get("model", "")
        if self.models is not None and model not in self.models:
            return self._error(web, 404, "model_not_found", f"The model `{model}` does not exist")
        text_route = "prompt" in body
        if text_route:
            prompt = body["prompt"][0] if isinstance(body["prompt"], list) else body["prompt"]
            if not isinstance(body.get("logprobs", 0), int) or isinstance(body.get("logprobs"), bool) or "top_logprobs" in body:
                return self._error(web, 400, "invalid_request_error", "logprobs must be an integer (0-5) on /v1/completions")
            body = {**body, "messages": [{"role": "user", "content": prompt}]}
        elif not body.get("messages"):  # as OpenAI answers it (curator probes rate-limit headers this way)
            return self._error(web, 400, "invalid_request_error", "[] is too short - 'messages'")
        seen = body["messages"]
        if f.blind:  # what is left of the conversation: the template's own scaffolding
            seen = [{"role": "user", "content": "<start_of_turn>model\n"}]
        elif self.chat_template and not text_route:
            seen = [{"role": "user", "content": gemma_template(body["messages"])}]
        if f.latency:
            await asyncio.sleep(f.latency)
        if f.align_s:
            await asyncio.sleep(f.align_s - time.monotonic() % f.align_s)
        refusal = self.refuse(body) if self.refuse else None
        if refusal:
            return self._error(web, refusal[0], refusal[1], refusal[2])
        edges = [f.rate_429, f.rate_500, f.rate_hang, f.rate_malformed, f.rate_drip]
        if roll < edges[0] or number <= f.first_429:
            headers = {"retry-after": f.retry_after} if f.retry_after is not None else {}
            if f.retry_after_ms is not None:
                headers["retry-after-ms"] = f.retry_after_ms
            return self._error(web, 429, "rate_limit_exceeded", "Rate limit reached", headers)
        if roll < sum(edges[:2]):
            return self._error(web, 500, "server_error", "The server had an error")
        if roll < sum(edges[:3]):
            await asyncio.sleep(0 if batch else f.hang_s)
            return self._error(web, 504, "timeout", "gateway timeout")
        if roll < sum(edges[:4]):
            with self._lock:
                self.status_counts[200] += 1
            return web.Response(status=200, text="{this is not json", content_type="application/json")
        drip = roll < sum(edges) and not batch

        n = 1 if f.ignore_n else int(body.get("n") or 1)
        texts, reasons = [], []
        for i in range(n):
            text, reason = bounded(self.responder({**body, "messages": seen}, i), body.get("stop"), body.get("max_tokens"))
            texts.append(text)
            reasons.append(reason)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in seen)
        choices = []
        for i, text in enumerate(texts):
            if text_route:
                choice = {"index": i, "text": text, "finish_reason": reasons[i], "logprobs": None}
                if body.get("logprobs") and f.text_logprobs_as_chat:
                    choice["logprobs"] = chat_logprobs(text, int(body["logprobs"]))
                elif body.get("logprobs"):
                    tokens = re.findall(r"\s*\S+", text)
                    choice["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.1] * len(tokens),
                                          "top_logprobs": [{t: -0.1} for t in tokens], "text_offset": list(range(len(tokens)))}  # fmt: skip
                choices.append(choice)
                continue
            choice = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reasons[i]}
            if body.get("logprobs"):
                choice["logprobs"] = chat_logprobs(text, int(body.get("top_logprobs") or 1))
            choices.append(choice)
        completion_tokens = sum(len(t.split()) for t in (texts[:1] if f.usage_one_choice else texts))
        with self._lock:
            self.status_counts[200] += 1
            self.served[(body["messages"][-1]["content"], body.get("seed"), int(body.get("n") or 1))] += 1
        payload = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "text_completion" if text_route else "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip
        if not drip:
            return web.json_response(payload)
        data = json.dumps(payload).encode()
        stream = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
        await stream.prepare(request)
        step = max(1, -(-len(data) // f.drip_pieces))
        for i in range(0, len(data), step):  # a slow drip: every read returns something, the whole never ends in time
            await stream.write(data[i : i + step])
            await asyncio.sleep(f.drip_s)
        await stream.write_eof()
        return stream

    def _error(self, web, status: int, code: str, message: str, headers: dict | None = None):
        with self._lock:
            self.status_counts[status] += 1
        return web.json_response({"error": {"message": message, "type": code, "code": code}}, status=status, headers=headers)


def gemma_template(messages: list[dict]) -> str:
    """Gemma's chat template, as llama-server applies it to /v1/chat/completions."""
    turns = "".join(f"<start_of_turn>{'model' if m['role'] == 'assistant' else 'user'}\n{m.get('content') or ''}<end_of_turn>\n" for m in messages)
    return turns + "<start_of_turn>model\n"


def bounded(text: str, stop, max_tokens) -> tuple[str, str]:
    """The text cut at the first stop sequence (finish "stop") or at max_tokens words (finish "length")."""
    for s in [stop] if isinstance(stop, str) else stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    words = re.findall(r"\s*\S+", text)
    if max_tokens and len(words) > int(max_tokens):
        return "".join(words[: int(max_tokens)]), "length"
    return text, "stop"


def base_model_responder(body: dict, choice_index: int) -> str:
    """A base model continuing its prompt: after a few-shot prompt it answers the last question and then, as base
    models do, writes the next question and answers that too (unless a stop sequence ends it). Inside a chat
    template it has never seen, it rambles in a persona with no answer format."""
    text = body["messages"][-1]["content"]
    if text.startswith("<start_of_turn>model"):  # nothing but the template's scaffolding: it says hello
        return "Hello! How can I help you today? Feel free to ask me anything."
    if "<start_of_turn>" in text:
        topic = re.findall(r"What is [^?]*\?", text)[-1:] or ["that"]
        return f"Sure! I'm your friendly assistant. {topic[0]} That's an interesting one, let me think about it with you!"
    answer = arithmetic_responder(body, choice_index)
    return f"{answer}\n\nQ: What is 40 + 2?\nA: We compute 40 + 2 = 42. So the answer is 42."


def main() -> None:  # pragma: no cover - `python -m rationale_distill.testing.fake_openai` for manual runs
    import argparse

    parser = argparse.ArgumentParser(description="serve the fake OpenAI-compatible API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeOpenAI(port=args.port, faults=Faults(latency=args.latency)).start()
    print(f"serving on {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
