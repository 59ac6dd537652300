"""The `openai` engine: any OpenAI-compatible chat endpoint (`nerft serve`, vLLM, LLaMA-Factory, ...).

Requests run concurrently (at most `concurrency` in flight) and answers are yielded in request
order. Each request is greedy (temperature 0), bounded by the output format's `max_tokens` and
stopped at the template's end word. A connection error, a timeout, 429 or a 5xx is retried
`retries` times with exponential backoff; then, or at once on any other error status, the
engine raises `ServerError` naming the URL. Answers already yielded stay with the caller, which
is what makes predicting over a server resumable.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from nerft.errors import ServerError
from nerft.inference.engines import ChatRequest, Generation
from nerft.inference.grounding import grounded_regex
from nerft.io import json_line
from nerft.metrics.parse import not_text
from nerft.prompts import PromptFormat

DEFAULT_CONCURRENCY = 8
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def normalize_base_url(url: str) -> str:
    """`http://host:port` and `http://host:port/` mean `http://host:port/v1`; a path is kept as given."""
    example = "e.g. http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError as exc:
        raise ServerError(f"{url}: not a valid URL ({exc}; {example})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"{url}: not an http(s) URL ({example})")
    base = url.strip().rstrip("/")
    return base + "/v1" if parts.path in ("", "/") else base


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        stop: Iterable[str] = (),
        extra_body: dict | None = None,
        fmt: PromptFormat | None = None,
        grounded: bool | None = None,
    ):
        import httpx

        self.base_url = normalize_base_url(endpoint)
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.stop = list(stop)
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: a proxy set for the internet must not intercept a server on loopback.
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=self.concurrency),
            trust_env=False,
        )
        self.listed: list[dict] | None = None
        self.model = model or self.served_model()
        if model is not None:
            self.check_served(model)
        self.fmt = fmt
        if grounded is None:  # vLLM's server constrains decoding; other servers ignore the field
            grounded = self.served_by_vllm()
        self.grounded = bool(grounded) and fmt is not None

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "endpoint": self.base_url,
            "model": self.model,
            "grounded": self.grounded,
            "structured": "structured_outputs" in self.extra_body,
        }

    def served_by_vllm(self) -> bool:
        """Whether the server is vLLM's (its `/v1/models` entries are `owned_by` vllm); a server
        that does not list its models is not."""
        return any(entry.get("owned_by") == "vllm" for entry in self.models_if_listed())

    def check_served(self, model: str) -> None:
        """A `ServerError` when the server lists its models and `model` is not one of them (a
        server of several runs: a name mistyped fails here, once, not at every request)."""
        names = [entry["id"] for entry in self.models_if_listed()]
        if names and model not in names:
            raise ServerError(
                f"{self.base_url}/models lists {', '.join(names)}, not {model!r}", hint="choose one with --model"
            )

    def models_if_listed(self) -> list[dict]:
        """`models()`, or [] from a server that does not list them (the requests will say why);
        a failed listing is not asked for again."""
        try:
            return self.models()
        except ServerError:
            self.listed = []
            return []

    def models(self) -> list[dict]:
        """The server's `GET /v1/models` entries (asked once)."""
        if self.listed is None:
            self.listed = listed_models(self._call("GET", "/models"), f"{self.base_url}/models")
        return self.listed

    def served_model(self) -> str:
        """The model to ask for: the only one served, or the only LoRA adapter among them."""
        models = self.models()
        if len(models) == 1:
            return models[0]["id"]
        adapters = [
            entry for entry in models if entry.get("parent")
        ]  # vLLM lists LoRA modules with their base as parent
        if len(adapters) == 1:
            return adapters[0]["id"]
        names = ", ".join(entry["id"] for entry in models) or "none"
        raise ServerError(
            f"{self.base_url}/models lists {len(models)} models ({names})", hint="choose one with --model"
        )

    def request_body(self, request: ChatRequest) -> dict:
        body = {
            "model": self.model,
            "messages": request.messages,
            "temperature": 0,
            "max_tokens": request.max_new_tokens,
        }
        if self.stop:
            body["stop"] = self.stop
        body["logprobs"] = True  # OpenAI's and vLLM's: each token's log-probability (entity confidences)
        body.update(self.extra_body)
        if self.grounded:
            body["structured_outputs"] = {"regex": grounded_regex(self.fmt, request.text)}
        return body

    def complete(self, request: ChatRequest) -> Generation:
        data = self._call("POST", "/chat/completions", json=self.request_body(request))
        try:
            choice = data["choices"][0]
            text = message_text(choice["message"].get("content"))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(
                f"{self.base_url}/chat/completions: answer without choices[0].message: {str(data)[:200]}"
            ) from None
        return Generation(
            text, "length" if choice.get("finish_reason") == "length" else "stop", answer_tokens(choice, text)
        )

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="nerft-openai")
        pending: deque[Future] = deque()
        try:
            for request in requests:
                pending.append(executor.submit(self.complete, request))
                # Keep the pool busy but never run far ahead of what has been written.
                while len(pending) >= 2 * self.concurrency:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        import httpx

        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 400:
                    return answer_json(response, url)
                problem = f"HTTP {response.status_code}: {_error_detail(response)}"
                if response.status_code not in RETRY_STATUSES:
                    hint = "check --api-key" if response.status_code in (401, 403) else None
                    raise ServerError(f"{url}: {problem}", hint=hint)
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise ServerError(f"{url}: no answer after {self.retries + 1} attempts ({problem})")

    def close(self) -> None:
        self.client.close()


def message_text(content: object) -> str:
    """The text of a chat answer's `message.content`: a string as it is; OpenAI's list of content
    parts (`{"type": "text", "text": ...}`, or bare strings) joined; anything else (null, a number,
    an object, a refusal part) is no text, kept in the form the parser counts as unparseable."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part if isinstance(part, str) else _text_part(part) for part in content]
        if all(part is not None for part in parts):
            return "".join(parts)
    return not_text(content)


def _text_part(part: object) -> str | None:
    if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    return None


def answer_json(response, url: str) -> dict:
    """A server's JSON object answer, or a `ServerError` naming the URL and what came instead."""

    if not response.text.strip():
        raise ServerError(f"{url}: answered {response.status_code} with an empty body, not JSON")
    if response.text.lstrip()[:1] not in ("{", "["):
        raise ServerError(
            f"{url}: answered {response.status_code} with something that is not JSON: {response.text.strip()[:80]!r}"
        )
    return json_line(
        response.text, url, None, expect=dict, error=ServerError, what=f"HTTP {response.status_code} answer"
    )


def listed_models(data: dict, url: str) -> list[dict]:
    """The model entries of a `GET /v1/models` answer (`{"data": [{"id": ...}, ...]}`)."""
    entries = data.get("data")
    if not isinstance(entries, list):
        raise ServerError(f'{url}: the answer has no list of models under "data" (is it an OpenAI-compatible server?)')
    return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]]


def _error_detail(response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:200]
    return str(data)[:200]


REPLACEMENT = "\ufffd".encode()


def answer_tokens(choice: dict, text: str) -> tuple[tuple[bytes, float], ...] | None:
    """The answer's tokens as (bytes, log-probability) from a choice's `logprobs.content`
    (`{"token", "logprob", "bytes"}` each), the tokens after the answer's text (an end token a
    server lists) as b""; None when the server sent none or they do not spell the answer.

    A token that holds part of a UTF-8 character (byte-level BPE writes "《" as two tokens) is
    spelled by servers as U+FFFD, vLLM's `bytes` included: such a token stands for one to three
    non-ASCII bytes of the answer, found by matching the run of them up to the next whole token."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list) or not content:
        return None
    answer = text.encode()
    tokens: list[tuple[bytes, float]] = []
    written = 0
    partial: list[tuple[bytes, float]] = []  # tokens spelled with U+FFFD, not placed yet

    def place(after: bytes | None) -> bool:
        """Give the partial tokens the answer's bytes from `written`, up to `after` (the next whole
        token) or, with None, up to the answer's end."""
        nonlocal written
        pattern = b"".join(
            b"(" + rb"[\x80-\xff]{1,3}".join(map(re.escape, data.split(REPLACEMENT))) + b")" for data, _ in partial
        )
        found = re.compile(pattern + (b"\\Z" if after is None else b"(?=" + re.escape(after) + b")"), re.S).match(
            answer, written
        )
        if found is None:
            return False
        tokens.extend((found.group(n + 1), logprob) for n, (_, logprob) in enumerate(partial))
        written = found.end()
        partial.clear()
        return True

    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("logprob"), (int, float)):
            return None
        raw = entry.get("bytes")
        data = bytes(raw) if isinstance(raw, list) else str(entry.get("token", "")).encode()
        logprob = max(float(entry["logprob"]), -1e4)
        if (REPLACEMENT in data or (partial and not data)) and written < len(answer):
            partial.append((data, logprob))  # vLLM spells the tokens before a character's last as b""
            continue
        if partial and not (data and place(data)) and not place(None):
            return None
        if written >= len(answer):
            data = b""  # past the answer: its end token
        elif answer[written : written + len(data)] != data:
            return None
        written += len(data)
        tokens.append((data, logprob))
    if partial and not place(None):
        return None
    return tuple(tokens) if written >= len(answer) else None
