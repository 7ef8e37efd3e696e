"""The teacher's side of `orca-data collect`: one query in, one answer or reject out, through an
OpenAI-compatible endpoint (`POST {base_url}/chat/completions`: a hosted API, or an open model served by vLLM).

Orca's 5M calls to ChatGPT and 1M to GPT-4 ran for weeks under rate limits, so most of this module
is pacing and retrying; `collect` runs the threads and writes the files.

- Answers: `Teacher.ask` returns a `Result`, accepted or with the reason it is a reject: a refusal,
  an empty answer, one cut off at the token limit (`finish_reason` `length`), a content-filtered
  one, a request the endpoint calls malformed (HTTP 400/413/422) or one that failed every retry.
- Limits: token buckets for requests and tokens per minute (a request's tokens are estimated from
  its characters before sending, then corrected from `usage`); retries with exponential backoff and
  jitter on 429, 5xx, timeouts, dropped connections and malformed replies, honouring `Retry-After`
  (a 429's wait pauses every thread); a per-request deadline. 401/403/404 stop the run (a wrong
  key, URL or model fails every request alike).
- The API key comes from the environment variable `--api_key_env` (default OPENAI_API_KEY), never
  a flag, and is never printed. Without it, requests go out unauthenticated to local and private
  addresses only (a vLLM server on the same network), unless `--no_api_key` says the remote
  endpoint needs none.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import random
import threading
import time
import urllib.parse
from email.utils import parsedate_to_datetime

from orca_jax.errors import ConfigError

REASONS = ("refusal", "empty", "length", "content_filter", "bad_request", "failed")
FATAL_STATUS = {401: "the endpoint refused the API key", 403: "the endpoint refused the API key",
                404: "no such endpoint or model: check --base_url (it usually ends in /v1) and --model"}  # fmt: skip
RETRY_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
CHARS_PER_TOKEN = 4  # a rough figure for English text; `usage` corrects it after each reply
# A refusal opens with an apology or a disclaimer and declines within its first sentences.
REFUSAL_OPENERS = ("i'm sorry", "i am sorry", "sorry,", "i apologize", "as an ai", "i cannot", "i can't", "i can not",
                   "i'm unable", "i am unable", "i'm not able", "i am not able", "i won't", "i will not")  # fmt: skip
REFUSAL_MARKERS = ("can't", "cannot", "can not", "unable", "not able", "won't", "will not", "not appropriate",
                   "not comfortable", "not allowed")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Settings:
    base_url: str
    model: str
    concurrency: int = 16
    rpm: float = 0.0  # requests per minute; 0: no limit
    tpm: float = 0.0  # tokens (prompt + completion) per minute; 0: no limit
    timeout_s: float = 300.0  # a long GPT-4 explanation can take minutes
    max_retries: int = 8
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    temperature: float = 0.7  # Orca's GPT-4 calls
    top_p: float = 0.95
    max_tokens: int | None = None
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0
    keep_refusals: bool = False
    retry_failed: bool = False
    max_consecutive_failures: int = 50
    log_every_s: float = 30.0


class Stopped(Exception):
    """The run is stopping; this request is abandoned and stays pending for the next run."""


class Fatal(Exception):
    """Every request would fail the same way (bad key, URL or model): stop the run."""


class Transient(Exception):
    """A failure worth retrying: a timeout, a dropped connection, a 429 or 5xx, a malformed reply."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass
class Result:
    response: str = ""
    reason: str = ""  # "" when accepted, else one of REASONS
    detail: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0


# Rate limits.


class TokenBucket:
    """`per_minute` units, refilled continuously, holding at most a second's worth (or one request).
    A request costing more than the bucket holds waits for a full bucket and leaves it in debt."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level, self.stamp = self.capacity, time.monotonic()

    def shortfall(self, cost: float, now: float) -> float:
        """Seconds until `cost` can be taken (0: now)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return max(0.0, (min(cost, self.capacity) - self.level) / self.rate)


class Limiter:
    """Requests/min and tokens/min buckets, taken together, and a pause every thread obeys after a 429."""

    def __init__(self, rpm: float, tpm: float, stop: threading.Event):
        self.buckets = [(b, unit) for b, unit in ((TokenBucket(rpm) if rpm else None, "requests"),
                                                  (TokenBucket(tpm) if tpm else None, "tokens")) if b]  # fmt: skip
        self.paused_until = 0.0
        self.lock, self.stop = threading.Lock(), stop

    def acquire(self, tokens: float) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                costs = [(b, 1.0 if unit == "requests" else tokens) for b, unit in self.buckets]
                wait = max([self.paused_until - now] + [b.shortfall(c, now) for b, c in costs])
                if wait <= 0:
                    for b, c in costs:
                        b.level -= c
                    return
            if self.stop.wait(min(wait, 0.25)):
                raise Stopped

    def settle(self, estimated: float, actual: float) -> None:
        with self.lock:
            for b, unit in self.buckets:
                if unit == "tokens":
                    b.level += estimated - actual

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)


# The endpoint.


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


class Endpoint:
    """POSTs to the chat-completions URL over one kept-alive connection per thread."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        url = base_url.rstrip("/")
        url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--base_url {base_url!r}: expected http(s)://HOST[:PORT]/v1")
        self.url, self.parts, self.timeout_s = url, parts, timeout_s
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.local = threading.local()

    def __repr__(self) -> str:  # the headers hold the key: never show them
        return f"Endpoint({self.url})"

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
            conn = self.local.conn = kind(self.parts.hostname, self.parts.port, timeout=self.timeout_s)
        return conn

    def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body) within the deadline; Transient on any transport failure."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            conn = self._connection()
            reused = conn.sock is not None  # a kept-alive connection the server may have closed while idle
            try:
                conn.request("POST", self.path, body, self._headers)
                chunks = []
                _time_left(conn, deadline)
                response = conn.getresponse()
                while chunk := (_time_left(conn, deadline) and response.read(65536)):
                    chunks.append(chunk)
                return response.status, {k.lower(): v for k, v in response.getheaders()}, b"".join(chunks)
            except (OSError, http.client.HTTPException) as e:
                conn.close()  # a half-read connection cannot be reused
                if reused and isinstance(e, (ConnectionError, http.client.RemoteDisconnected)):
                    continue  # an idle connection went stale: that costs no retry, the next one is fresh
                kind = "timed out" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}".rstrip(": ")
                raise Transient(f"{kind} ({self.url})") from None

    def redact(self, text: str) -> str:
        """`text` (an error body the endpoint sent) without the API key, should the endpoint echo it."""
        key = self._headers.get("Authorization", "")[len("Bearer ") :]
        return text.replace(key, "***") if key else text


def _time_left(conn: http.client.HTTPConnection, deadline: float) -> bool:
    """Caps the socket's next wait at the request's remaining time (the whole request has one deadline)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    if conn.sock is not None:
        conn.sock.settimeout(left)
    return True


def retry_after(headers: dict[str, str]) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def is_refusal(text: str) -> bool:
    head = text.strip()[:300].lower().replace("\u2019", "'")
    return head.startswith(REFUSAL_OPENERS) and any(m in head for m in REFUSAL_MARKERS)


class Teacher:
    """One query -> a Result, with rate limits, retries and the checks that make a reject."""

    def __init__(self, endpoint: Endpoint, settings: Settings, limiter: Limiter, stop: threading.Event):
        self.endpoint, self.settings, self.limiter, self.stop = endpoint, settings, limiter, stop
        self.completion_estimate = float(settings.max_tokens or 512)  # a running mean once replies come
        self.retries = 0
        self.retries_lock = threading.Lock()

    def body(self, query: dict) -> bytes:
        messages = [{"role": "system", "content": query["system_prompt"]}] if query.get("system_prompt") else []
        messages.append({"role": "user", "content": query["question"]})
        request = {"model": self.settings.model, "messages": messages, "temperature": self.settings.temperature,
                   "top_p": self.settings.top_p}  # fmt: skip
        if self.settings.max_tokens:
            request["max_tokens"] = self.settings.max_tokens
        return json.dumps(request, ensure_ascii=False).encode("utf-8")

    def ask(self, query: dict) -> Result:
        s, body = self.settings, self.body(query)
        estimate = (len(query.get("system_prompt") or "") + len(query["question"])) / CHARS_PER_TOKEN
        estimate += self.completion_estimate
        error = ""
        for attempt in range(s.max_retries + 1):
            if attempt:
                with self.retries_lock:
                    self.retries += 1
            self.limiter.acquire(estimate)
            try:
                return self._classify(self._send(body), attempt + 1, estimate)
            except Transient as e:
                error = str(e)
                self.limiter.settle(estimate, 0)  # nothing was generated
                delay = min(s.retry_max_s, s.retry_base_s * 2**attempt) * random.uniform(0.5, 1.0)
                if e.retry_after is not None:
                    delay = min(s.retry_max_s, e.retry_after) * random.uniform(1.0, 1.1)
                    self.limiter.pause(delay)  # the endpoint is over its limit for everyone, not just us
                if attempt < s.max_retries and self.stop.wait(delay):
                    raise Stopped from None
        attempts = s.max_retries + 1
        return Result(reason="failed", detail=f"{attempts} attempts; last: {error}", attempts=attempts)

    def _send(self, body: bytes) -> dict:
        status, headers, raw = self.endpoint.post(body)
        excerpt = self.endpoint.redact(raw[:300].decode("utf-8", "replace"))
        if status in FATAL_STATUS:
            raise Fatal(f"HTTP {status} from {self.endpoint.url}: {FATAL_STATUS[status]} ({excerpt})")
        if status in RETRY_STATUS or status >= 500:
            raise Transient(f"HTTP {status}: {excerpt}", retry_after(headers))
        if status != 200:
            return {"_bad_request": f"HTTP {status}: {excerpt}"}
        try:
            reply = json.loads(raw)
            choice = reply["choices"][0]
            content = choice["message"].get("content") or ""
            usage = reply.get("usage") or {}
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise Transient(f"malformed reply ({type(e).__name__}: {e}): {excerpt}") from None
        return {"content": content, "finish_reason": choice.get("finish_reason") or "", "usage": usage}

    def _classify(self, reply: dict, attempts: int, estimate: float) -> Result:
        if "_bad_request" in reply:
            self.limiter.settle(estimate, 0)
            return Result(reason="bad_request", detail=reply["_bad_request"], attempts=attempts)
        usage = reply["usage"]
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or len(reply["content"]) / CHARS_PER_TOKEN)
        self.limiter.settle(estimate, prompt + completion if prompt else estimate)
        self.completion_estimate = 0.95 * self.completion_estimate + 0.05 * completion
        text = reply["content"].strip()
        result = Result(response=text, prompt_tokens=prompt, completion_tokens=completion, attempts=attempts)
        if reply["finish_reason"] == "length":
            result.reason, result.detail = "length", "the answer hit the token limit (finish_reason length)"
        elif reply["finish_reason"] == "content_filter":
            result.reason, result.detail = "content_filter", "finish_reason content_filter"
        elif not text:
            result.reason, result.detail = "empty", "empty answer"
        elif is_refusal(text) and not self.settings.keep_refusals:
            result.reason, result.detail = "refusal", "the answer opens as a refusal"
        return result
