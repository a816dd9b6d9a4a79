"""The Teacher contract and the LiteLLM boundary (imported lazily; provider errors -> TeacherError).

A teacher turns one ``Request`` (messages, n, seed, sampling params) into a ``Completion`` (choices, usage,
cost). Everything else (cache, journal, limits, retries, records) lives in the generation loop, so every
teacher, HTTP API or local model, gets it for free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import TeacherError, UsageError

# Providers whose API accepts ``n`` (several choices from one request); others get separate seeded calls.
TEXT_PROVIDERS = {"text-completion-openai", "hosted_vllm"}  # OpenAI-compatible servers with a /completions endpoint
NATIVE_N_PROVIDERS = {"openai", "azure", "hosted_vllm", "text-completion-openai", "openrouter", "together_ai", "fireworks_ai", "deepseek", "local"}  # fmt: skip
# Providers whose batch API LiteLLM's files and batches functions reach with OpenAI-format request files.
BATCH_PROVIDERS = {"openai": "openai", "azure": "azure", "hosted_vllm": "hosted_vllm", "text-completion-openai": "openai"}
# Where LiteLLM looks for each provider's key; named in errors, never printed.
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "azure": "AZURE_API_KEY",
           "gemini": "GEMINI_API_KEY", "together_ai": "TOGETHERAI_API_KEY", "openrouter": "OPENROUTER_API_KEY",
           "hosted_vllm": "HOSTED_VLLM_API_KEY", "deepseek": "DEEPSEEK_API_KEY", "groq": "GROQ_API_KEY"}  # fmt: skip


@dataclass
class Request:
    messages: list[dict]
    inputs: dict = field(default_factory=dict)  # the row fields the prompt uses (for DSPy-style teachers)
    n: int = 1
    seed: int | None = None
    params: dict = field(default_factory=dict)  # temperature, max_tokens, stop, top_p, ...
    timeout: float = 120.0  # seconds
    logprobs: int | None = None  # top-k logprobs to ask for, if any
    format: str = "chat"  # "text": a base-model prompt (one user message holding the whole text)


@dataclass
class Choice:
    text: str
    finish_reason: str | None = None
    fields: dict | None = None  # structured output (DSPy)
    logprobs: list | None = None  # [{token, logprob, top_logprobs: [{token, logprob}]}]


@dataclass
class Completion:
    choices: list[Choice]
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    cost: float | None = None  # USD for the whole request; None when unknown


class Teacher:
    """Subclass and implement ``complete``.

    The cache key of a call is a hash of ``identity()`` (who answers: model, endpoint), ``version`` (bump it when
    the plugin changes what it sends or how it answers) and ``request_payload(request)`` (exactly what goes out).
    Never put secrets in either."""

    name: str = "teacher"
    version: int = 1
    native_n: bool = False
    queues_locally: bool = False  # a local model that queues requests: time waiting in its queue is not a timeout
    parser: str | None = None  # overrides the prompt's parser (e.g. "dspy")
    price: tuple[float, float] | None = None  # USD per 1M (input, output) tokens

    def identity(self) -> dict:
        return {"teacher": self.name}

    def request_payload(self, request: "Request") -> dict:
        """What this teacher sends for ``request``: by default the messages and every sampling setting. A teacher
        that reads row fields (``request.inputs``) or adds parameters of its own must say so here."""
        payload = {"messages": request.messages, "n": request.n, "seed": request.seed, "params": request.params,
                   "logprobs": request.logprobs}  # fmt: skip
        if request.format != "chat":  # chat requests keep the keys they always had
            payload["format"] = request.format
        return payload

    def refuses(self, prompt_format: str) -> str | None:
        """Why this teacher cannot take prompts of this format (checked before anything is sent), or None."""
        return None

    async def complete(self, request: Request) -> Completion:
        raise NotImplementedError

    def context_window(self) -> int | None:
        """The most prompt tokens the model accepts, where known; rows whose prompt is bigger are refused unsent."""
        return None

    def count_tokens(self, messages: list[dict]) -> int:
        return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages)

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price is None:
            return None
        return (prompt_tokens * self.price[0] + completion_tokens * self.price[1]) / 1e6


def import_litellm():
    """LiteLLM, quiet: no "Give Feedback / Get Help" banner per failed call, no debug lines (errors are ours to say)."""
    import logging

    import litellm

    if not getattr(litellm, "_rdistill_quiet", False):
        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        for name in ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        litellm._rdistill_quiet = True
    return litellm


def parse_price(value: str | None) -> tuple[float, float] | None:
    """``--price IN,OUT``: USD per 1M input and output tokens."""
    if value is None:
        return None
    try:
        inp, out = (float(x) for x in str(value).split(","))
    except ValueError:
        raise UsageError(f"--price {value!r}: expected two numbers, USD per 1M input and output tokens, e.g. 0.15,0.60") from None
    return inp, out


def redact_url(url: str | None) -> str | None:
    """A URL without the secrets a user may have put in it: user info, and the values of its query parameters."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "&".join(f"{kv.split('=', 1)[0]}=***" if "=" in kv else kv for kv in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


class LiteLLMTeacher(Teacher):
    """Any LiteLLM model string: ``openai/...``, ``anthropic/...``, ``ollama/...``, ``hosted_vllm/...``, a custom provider."""

    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None,
                 api_key_env: str | None = None, native_n: bool | None = None, price=None, name: str | None = None,
                 **params):  # fmt: skip
        if not model:
            raise UsageError("--teacher: a LiteLLM teacher needs a model string such as openai/gpt-4o-mini")
        self.model = model
        self.name = name or model
        self.api_base = api_base
        self.provider = provider_of(model)
        self.api_key_env = api_key_env or KEY_ENV.get(self.provider)
        # The key is read from the environment at call time by default and never stored in records or logs.
        self._api_key = api_key
        self.native_n = self.provider in NATIVE_N_PROVIDERS if native_n is None else native_n
        self.price = price
        self.params = params
        self._price_unknown = self._response_price_unknown = False  # remembered: each failed lookup raises
        self._queues_locally: bool | None = None

    def identity(self) -> dict:
        return {"model": self.model, "api_base": redact_url(self.api_base)}

    @property
    def queues_locally(self) -> bool:
        """A model served in this process (a custom provider such as ``local/``): its queue time is not a timeout.
        Looked up once, on the first call (providers are installed before any call is sent)."""
        if self._queues_locally is None:
            self._queues_locally = self.provider in _custom_providers()
        return self._queues_locally

    @property
    def text_route(self) -> bool:
        """Base-model (format: text) prompts go to a text-completions endpoint: a self-hosted OpenAI-compatible
        server (llama.cpp, vLLM) at --api-base, or a text-completion-openai/ model. Through the chat endpoint the
        server would wrap the text in its chat template, which a base model has never seen."""
        return self.provider in TEXT_PROVIDERS or (self.provider == "openai" and bool(self.api_base))

    def refuses(self, prompt_format: str) -> str | None:
        if prompt_format != "text" or self.text_route or self.queues_locally:
            return None
        return (f"the prompt is format: text (a base-model prompt) but {self.model} would get it through a chat endpoint, "
                "wrapped in a chat template; serve a base model on an OpenAI-compatible server and pass --api-base "
                "(openai/MODEL or hosted_vllm/MODEL), use text-completion-openai/MODEL, or use a chat prompt")  # fmt: skip

    def request_payload(self, request: Request) -> dict:
        # The parameters exactly as complete() merges them: the teacher's own (top_p, response_format, reasoning
        # settings, ...) under the request's.
        return {**super().request_payload(request), "params": {**self.params, **request.params}}

    def _key(self) -> str | None:
        key = self._api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key is None and self.api_base and self.provider in ("openai", "hosted_vllm", *TEXT_PROVIDERS):
            return "EMPTY"  # OpenAI-compatible local servers (vLLM, llama.cpp) need no key, the client needs one
        return key

    async def complete(self, request: Request) -> Completion:
        litellm = import_litellm()

        text = request.format == "text" and self.text_route
        kwargs = self._params(request, text)
        kwargs.update(model=self.model, messages=request.messages, timeout=request.timeout, num_retries=0, max_retries=0,
                      drop_params=True)  # fmt: skip
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self._key()
        if key:
            kwargs["api_key"] = key
        try:
            if text:
                del kwargs["messages"]
                name = self.model.split("/", 1)[1] if "/" in self.model else self.model
                kwargs.update(model=f"text-completion-openai/{name}", prompt="".join(m.get("content") or "" for m in request.messages))
                response = await litellm.atext_completion(**kwargs)
            else:
                response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every provider error is mapped onto the taxonomy
            raise map_error(exc, self, key) from None
        return self._completion(response)

    def _params(self, request: Request, text: bool) -> dict:
        """What is sent besides the prompt, online and in a batch line: the teacher's own parameters under the
        request's, n, seed, logprobs."""
        params = {**self.params, **request.params}
        if request.n > 1:
            params["n"] = request.n
        if request.seed is not None:
            params["seed"] = request.seed
        if request.logprobs:
            # the completions API takes the number of top logprobs as `logprobs`; chat takes a flag and `top_logprobs`
            params.update(logprobs=request.logprobs) if text else params.update(logprobs=True, top_logprobs=request.logprobs)
        return params

    def _completion(self, response) -> Completion:
        choices = []
        for c in response.choices:
            logprobs = None
            lp = getattr(c, "logprobs", None)
            content = getattr(lp, "content", None) if lp is not None else None
            if content:  # the chat form; llama-server also answers /v1/completions in it, where LiteLLM keeps dicts
                logprobs = [{"token": _get(t, "token"), "logprob": _get(t, "logprob"),
                             "top_logprobs": [{"token": _get(x, "token"), "logprob": _get(x, "logprob")} for x in (_get(t, "top_logprobs") or [])]}
                            for t in content]  # fmt: skip
            elif lp is not None and getattr(lp, "tokens", None):  # the completions format: parallel lists
                logprobs = [{"token": t, "logprob": p, "top_logprobs": [{"token": k, "logprob": v} for k, v in (top or {}).items()]}
                            for t, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs or [None] * len(lp.tokens))]  # fmt: skip
            message = getattr(c, "message", None)
            text = message.content if message is not None else getattr(c, "text", None)
            choices.append(Choice(text=text or "", finish_reason=c.finish_reason, logprobs=logprobs))
        usage = getattr(response, "usage", None)
        usage = {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                 "completion_tokens": getattr(usage, "completion_tokens", 0) or 0}  # fmt: skip
        cost = self.cost_of(usage["prompt_tokens"], usage["completion_tokens"])
        if cost is None and not self._response_price_unknown:
            # The response names the dated model (claude-3-5-haiku-20241022 for ...-latest), which may have a price.
            cost = litellm_cost(response)
            self._response_price_unknown = cost is None
        return Completion(choices=choices, usage=usage, cost=cost)

    @property
    def batch_provider(self) -> str | None:
        """The provider's batch API through LiteLLM's files and batches functions (OpenAI-format request files), or
        None where this LiteLLM has none."""
        return BATCH_PROVIDERS.get(self.provider)

    def batch_request(self, request: Request) -> tuple[str, dict]:
        """(endpoint, body): the request ``complete`` sends, as a line of a batch input file (the model without its
        provider prefix, the same parameters)."""
        text = request.format == "text" and self.text_route
        body = {"model": self.model.split("/", 1)[1] if "/" in self.model else self.model, **self._params(request, text)}
        if text:
            return "/v1/completions", {**body, "prompt": "".join(m.get("content") or "" for m in request.messages)}
        return "/v1/chat/completions", {**body, "messages": request.messages}

    def batch_completion(self, body: dict, endpoint: str) -> Completion:
        """A batch output line's response body -> Completion (parsed by LiteLLM, as an online reply is)."""
        import litellm

        response = litellm.TextCompletionResponse(**body) if endpoint == "/v1/completions" else litellm.ModelResponse(**body)
        return self._completion(response)

    def context_window(self) -> int | None:
        import litellm

        try:
            return litellm.get_model_info(self.model).get("max_input_tokens")
        except Exception:  # noqa: BLE001 - a model LiteLLM does not know (a local server): unknown
            return None

    def count_tokens(self, messages: list[dict]) -> int:
        import litellm

        try:
            return int(litellm.token_counter(model=self.model, messages=messages))
        except Exception:  # noqa: BLE001 - unknown tokenizer: fall back to the 4-chars-per-token rule
            return super().count_tokens(messages)

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price is not None:
            return super().cost_of(prompt_tokens, completion_tokens)
        if self.provider in _custom_providers():
            return 0.0  # a local model behind a custom provider costs nothing per token
        if self._price_unknown:
            return None
        import litellm

        try:
            inp, out = litellm.cost_per_token(model=self.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            return inp + out
        except Exception:  # noqa: BLE001 - a model LiteLLM has no price for: cost unknown, use --price
            self._price_unknown = True
            return None


def litellm_cost(response) -> float | None:
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:  # noqa: BLE001 - no price for this model either
        return None


def map_error(exc: Exception, teacher: LiteLLMTeacher, key: str | None = None) -> TeacherError:
    """LiteLLM/OpenAI exceptions -> one TeacherError with a kind, a status, a retryable flag and the provider's message
    without secrets (redacted first, then cut)."""
    import litellm

    status, text = status_and_text(exc, key)
    where = redact_url(teacher.api_base) or teacher.provider

    def err(message, kind, retryable=False, retry_after=None):
        return TeacherError(message, kind=kind, retryable=retryable, retry_after=retry_after, status=status)

    if isinstance(exc, litellm.RateLimitError):
        return err(f"rate limited by {where} (HTTP 429)", "rate_limit", True, _retry_after(exc))
    if _client_side(exc, text):
        status = None
        return err(f"the client refused the request to {teacher.model} before sending it (not a server error, not retried): {text}", "client")
    if isinstance(exc, litellm.Timeout):
        return err(f"request to {where} timed out", "timeout", True)
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        env = f"set {teacher.api_key_env} or pass --api-key-env" if teacher.api_key_env else "check the API key"
        return err(f"authentication failed for {teacher.model} at {where} (HTTP {status}): {env}", "auth")
    if isinstance(exc, litellm.NotFoundError):
        return err(f"model {teacher.model!r} not found at {where} (HTTP 404): check the model name", "not_found")
    # LiteLLM reports a refused connection as APIConnectionError or as InternalServerError("Connection error.").
    if isinstance(exc, (litellm.APIConnectionError, litellm.InternalServerError)) and _is_connection(exc):
        return err(f"cannot reach {where}: is the server running and --api-base right?", "connection", True)
    hint = next((kind for cls, kind in ((litellm.ContentPolicyViolationError, "content_filter"),
                                        (litellm.ContextWindowExceededError, "context_window"),
                                        (litellm.BadRequestError, "bad_request")) if isinstance(exc, cls)), None)  # fmt: skip
    return error_from_status(status, text, teacher, _retry_after(exc), hint)


def status_and_text(exc: Exception, key: str | None = None) -> tuple[int | None, str]:
    """A provider error's HTTP status (None if it has none) and its message on one line, the key redacted, cut to 300
    characters (redacted first, so a key cut in two cannot survive)."""
    status = getattr(exc, "status_code", None)
    status = int(status) if isinstance(status, (int, str)) and str(status).isdigit() else None
    text = " ".join(str(exc).split())
    if key and key != "EMPTY":
        text = text.replace(key, "***")
    return status, text[:300]


def error_from_status(status: int | None, text: str, teacher, retry_after: float | None = None,
                      hint: str | None = None) -> TeacherError:  # fmt: skip
    """A provider's answer with an error status (an HTTP reply, or a line of a batch's error file) -> TeacherError:
    a refusal, a prompt over the window, a bad request and other 4xx are permanent; 408, 409, 429 and 5xx are not.
    ``hint``: what the client library already knew (its exception class) where the status alone does not say."""
    where = redact_url(getattr(teacher, "api_base", None)) or getattr(teacher, "provider", teacher.name)
    model = getattr(teacher, "model", teacher.name)

    def err(message, kind, retryable=False):
        return TeacherError(message, kind=kind, retryable=retryable, retry_after=retry_after if retryable else None, status=status)

    lowered, bad = text.lower(), status == 400 or hint is not None
    if status == 429:
        return err(f"rate limited by {where} (HTTP 429)", "rate_limit", True)
    if hint == "content_filter" or (bad and any(w in lowered for w in ("content_policy", "content policy", "content_filter", "safety system"))):
        return err(f"{model} refused the request (HTTP {status or 400}, content filter): {text}", "content_filter")
    if hint == "context_window" or (bad and any(w in lowered for w in ("context length", "context_length", "context window", "too many tokens"))):
        return err(f"the prompt is longer than {model}'s context window (HTTP {status or 400}): {text}", "context_window")
    if bad:
        return err(f"bad request to {model} (HTTP {status or 400}): {text}", "bad_request")
    if status is not None and status < 500 and status not in (408, 409):
        return err(f"{model} at {where} answered HTTP {status}: {text}", "client")
    return err(f"{model} at {where} failed (HTTP {status or '?'}): {text}", "server", True)


# what a client library raises before anything is sent: an argument it does not take, a key it wants. LiteLLM wraps
# these as "HTTP 500", but no server ever answered: retrying cannot help.
_CLIENT_SIDE = ("got an unexpected keyword argument", "missing credentials", "required positional argument",
                "takes no keyword arguments", "unsupported parameter")  # fmt: skip


def _client_side(exc: Exception, text: str) -> bool:
    chain, seen = exc, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, (TypeError, AttributeError)):
            return True
        chain = chain.__cause__ or chain.__context__
    return any(s in text.lower() for s in _CLIENT_SIDE)


def _is_connection(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("connection error", "connecterror", "connection refused", "unreachable",
                                   "name or service not known", "failed to resolve", "cannot connect"))


def _retry_after(exc: Exception) -> float | None:
    """Seconds the provider asked us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as an HTTP date."""
    for source in (getattr(getattr(exc, "response", None), "headers", None), getattr(exc, "headers", None),
                   getattr(exc, "litellm_response_headers", None)):  # fmt: skip
        if source is None:
            continue
        seconds = parse_retry_after(_header(source, "retry-after-ms"), _header(source, "retry-after"))
        if seconds is not None:
            return seconds
    return None


def _header(headers, name: str):
    try:
        return headers.get(name) or headers.get(name.title())
    except AttributeError:
        return None


def parse_retry_after(ms: str | None, value: str | None, now: float | None = None) -> float | None:
    import time
    from email.utils import parsedate_to_datetime

    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# --- custom LiteLLM providers (teachers that are not HTTP APIs) -------------------------------------


def _custom_providers() -> set[str]:
    import litellm

    return {p["provider"] for p in litellm.custom_provider_map}


def install_providers(plugins) -> None:
    """Route ``provider/...`` model strings to the handlers registered through ``register_litellm_providers``."""
    import_litellm()
    entries = list(plugins.litellm_providers)
    if not entries:
        return
    import litellm
    from litellm.utils import custom_llm_setup

    installed = _custom_providers()
    for entry in entries:
        if entry.name not in installed:
            litellm.custom_provider_map.append({"provider": entry.name, "custom_handler": entry.obj()})
    custom_llm_setup()


def _get(entry, name: str):
    """A field of a logprob entry, whether LiteLLM parsed it into an object or kept the server's dict."""
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
