"""Asks a teacher for explanations, query by query, through an OpenAI-compatible endpoint (`orca-data collect`).

Orca's data is the teacher's answers to FLAN queries under Orca's system messages: 5M calls to
ChatGPT and 1M to GPT-4 over weeks, under rate limits. This is that loop for any teacher behind
`POST {base_url}/chat/completions` (a hosted API, or an open model served by vLLM):

- Input: the queries `orca-data sample` writes (JSONL, or parquet, with `id`, `question` and
  optionally `system_prompt` and `collection`; any `response` is ignored). An empty system
  message (Orca's behaviour 1) is sent as no system message.
- Output: one OpenOrca record per answered query (`id`, `system_prompt`, `question`, `response`,
  `collection`), appended and flushed as each answer arrives, so the file is training data at any
  moment and `orca-data validate` / the data configs read it as it is.
- Rejects: refusals, empty answers, answers cut off at the token limit (`finish_reason` `length`),
  content-filtered answers, requests the endpoint calls malformed (HTTP 400/413/422) and requests
  that failed every retry go to the rejects file (default `OUT.rejects`, a name that `*.jsonl`
  globs do not pick up), one JSON line each with its `reason`, never to the training data.
- Restart: the output and rejects files say what is done; a rerun skips those ids, so a crash,
  SIGKILL or Ctrl-C loses at most the requests in flight. A torn last line (a write cut short) is
  dropped and its query asked again. `--retry_failed` asks the `failed` rejects again.
- Limits: `--concurrency` threads; token buckets for requests and tokens per minute (a request's
  tokens are estimated from its characters before sending, then corrected from `usage`); retries
  with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and malformed
  replies, honouring `Retry-After` (a 429's wait pauses every thread); a per-request deadline.
  401/403/404 stop the run (a wrong key, URL or model fails every request alike), and so do
  `--max_consecutive_failures` failed requests in a row (the endpoint is down).
- The API key comes from the environment variable `--api_key_env` (default OPENAI_API_KEY), never
  a flag, and is never printed. Without it, requests go out unauthenticated to local and private
  addresses only (a vLLM server on the same network), unless `--no_api_key` says the remote
  endpoint needs none.
"""

from __future__ import annotations

import dataclasses
import fcntl
import http.client
import ipaddress
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime

from orca_jax.errors import ConfigError, DataError

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


# Queries and resumable JSONL files.


def read_queries(path: str) -> Iterator[tuple[str, dict]]:
    """(`file:line`, query) for each query of a JSONL or parquet file; a malformed one is an error."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such query file (write one with `orca-data sample`)")
    for n, obj in _objects(path):
        where = f"{path}:{n}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object")
        for field in ("id", "question", "system_prompt", "collection"):
            if field in obj and obj[field] is not None and not isinstance(obj[field], str):
                raise DataError(f"{where}: {field}: expected a string, got {type(obj[field]).__name__}")
        if not obj.get("id"):
            raise DataError(f"{where}: id: missing or empty")
        if not (obj.get("question") or "").strip():
            raise DataError(f"{where}: question: missing or empty")
        yield where, obj


def _objects(path: str) -> Iterator[tuple[int, object]]:
    """(line or row number, parsed object) for a JSONL or parquet file."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        yield from enumerate((obj for batch in batches for obj in batch.to_pylist()), start=1)
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                yield n, _json_line(path, n, raw)


def _json_line(path: str, n: int, raw: bytes):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}:{n}: not valid JSON ({e})") from None


def done_ids(path: str, drop_reason: str = "", log: Callable[[str], None] = print) -> set[str]:
    """Ids already in an output or rejects file, read line by line (it may hold millions). A torn
    last line (no newline: the writer died mid-line) is cut off the file. Lines whose `reason` is
    `drop_reason` are removed from the file, so that their queries are asked again."""
    if not os.path.exists(path):
        return set()
    ids: set[str] = set()
    removed, offset, torn = 0, 0, -1
    partial = path + ".partial"  # the rewrite without `drop_reason` lines replaces the file whole or not at all
    rewrite = open(partial, "wb") if drop_reason else None
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):  # only the last line can lack one
                    torn = offset
                    break
                offset += len(raw)
                if not raw.strip():
                    continue
                obj = _json_line(path, n, raw)
                if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                    raise DataError(f'{path}:{n}: expected a JSON object with a string "id"')
                if drop_reason and obj.get("reason") == drop_reason:
                    removed += 1
                    continue
                ids.add(obj["id"])
                if rewrite:
                    rewrite.write(raw)
    except BaseException:
        if rewrite:
            rewrite.close()
            os.remove(partial)
        raise
    if rewrite:
        rewrite.close()
        if not removed:
            os.remove(partial)
    if torn >= 0:
        with open(path, "r+b") as f:
            f.truncate(torn)
        log(f"{path}: dropped a torn last line (a write cut short); its query will be asked again")
    if removed:
        os.replace(partial, path)
        log(f"{path}: removed {removed} `{drop_reason}` rejects, to ask them again")
    return ids


class AppendLog:
    """A JSONL file that grows by whole lines: one os.write per line on an O_APPEND descriptor, so
    a killed writer leaves at most one torn last line. An exclusive lock keeps a second collector
    from writing the same file (the kernel drops it when the process dies, even by SIGKILL)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise DataError(f"{path}: cannot open for appending ({e.strerror})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DataError(f"{path}: another `orca-data collect` is writing this file") from None
        self.lock = threading.Lock()

    def write(self, obj: dict) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        os.close(self.fd)


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


# The run.


class Progress:
    """Counts, and a status line: a redrawn line on a terminal, a log line every `log_every_s` otherwise."""

    def __init__(self, total: int, settings: Settings, stream=None):
        self.total, self.settings, self.stream = total, settings, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.counts: Counter = Counter()
        self.prompt_tokens = self.completion_tokens = 0
        self.start = self.last_log = time.monotonic()
        self.last_line = ""
        self.lock = threading.Lock()

    def add(self, result: Result) -> None:
        with self.lock:
            self.counts[result.reason or "accepted"] += 1
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def cost(self) -> float:  # every answer the endpoint produced was paid for, rejected or not
        s = self.settings
        return (self.prompt_tokens * s.price_input_per_1m + self.completion_tokens * s.price_output_per_1m) / 1e6

    def line(self, retries: int) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        done, rate = self.done, self.done / elapsed
        eta = _duration((self.total - done) / rate) if rate > 0 else "?"
        rejected = done - self.counts["accepted"]
        return (f"collect {done:,}/{self.total:,} ({100 * done / max(self.total, 1):.1f}%) | {rate:.2f} req/s | "
                f"ETA {eta} | tokens in {_si(self.prompt_tokens)} out {_si(self.completion_tokens)} | "
                f"${self.cost:,.2f} | rejected {rejected:,} | retries {retries:,}")  # fmt: skip

    def tick(self, retries: int, final: bool = False) -> None:
        now, line = time.monotonic(), self.line(retries)
        if self.tty:  # redraw in place, blanking what a longer previous line left
            self.stream.write("\r" + line.ljust(len(self.last_line)) + ("\n" if final else ""))
            self.last_line = line
        elif (final and line != self.last_line) or now - self.last_log >= self.settings.log_every_s:
            self.stream.write(line + "\n")
            self.last_log, self.last_line = now, line
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _si(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def collect(queries: str, out: str, rejects: str, settings: Settings, api_key: str | None,
            log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Answers every query of `queries` not yet in `out` or `rejects`; returns the summary."""
    if os.path.abspath(out) == os.path.abspath(rejects):
        raise ConfigError("--out and --rejects must be different files")
    endpoint = Endpoint(settings.base_url, api_key, settings.timeout_s)
    out_log, rejects_log = AppendLog(out), None  # the lock on `out` keeps a second collector away from both
    try:
        done = done_ids(out, log=log) | done_ids(rejects, "failed" if settings.retry_failed else "", log=log)
        rejects_log = AppendLog(rejects)  # opened after done_ids may have replaced the file
        seen: set[str] = set()
        for where, query in read_queries(queries):  # validate everything before the first request
            if query["id"] in seen:
                raise DataError(f"{where}: id {query['id']!r} appears twice; ids must be unique")
            seen.add(query["id"])
        pending = len(seen - done)
        log(f"{queries}: {len(seen):,} queries, {len(seen) - pending:,} done before, {pending:,} to ask {endpoint.url}")
        nothing = {"accepted": 0, "rejected": {}, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
        summary = _run(queries, done, pending, out_log, rejects_log, endpoint, settings) if pending else nothing
    finally:
        out_log.close()
        if rejects_log:
            rejects_log.close()
    summary.update(queries=len(seen), out=out, rejects=rejects)
    return summary


def _run(queries: str, done: set[str], pending: int, out: AppendLog, rejects: AppendLog, endpoint: Endpoint,
         settings: Settings) -> dict:  # fmt: skip
    stop = threading.Event()
    teacher = Teacher(endpoint, settings, Limiter(settings.rpm, settings.tpm, stop), stop)
    progress = Progress(pending, settings)
    feed = (q for _, q in read_queries(queries) if q["id"] not in done)
    feed_lock, state_lock, state = threading.Lock(), threading.Lock(), {"fatal": "", "failed_in_a_row": 0}

    def write(query: dict, result: Result) -> None:
        fields = {"id": query["id"], "system_prompt": query.get("system_prompt") or "", "question": query["question"]}
        if query.get("collection"):
            fields["collection"] = query["collection"]
        if result.reason:
            rejects.write({"id": query["id"], "reason": result.reason, "detail": result.detail,
                           "attempts": result.attempts, **fields, "response": result.response})  # fmt: skip
        else:
            out.write({**fields, "response": result.response})
        progress.add(result)
        with state_lock:
            state["failed_in_a_row"] = state["failed_in_a_row"] + 1 if result.reason == "failed" else 0
            if state["failed_in_a_row"] >= settings.max_consecutive_failures:
                state["fatal"] = (f"{state['failed_in_a_row']} requests in a row failed every retry (last: "
                                  f"{result.detail}); fix the endpoint, then rerun with --retry_failed")  # fmt: skip
                stop.set()

    def work() -> None:
        try:
            while not stop.is_set():
                with feed_lock:
                    query = next(feed, None)
                if query is None:
                    return
                write(query, teacher.ask(query))
        except Stopped:
            return
        except Exception as e:  # Fatal, or a full disk: stop everything and say why; what is written stays
            state["fatal"] = str(e) if isinstance(e, (Fatal, DataError)) else f"{type(e).__name__}: {e}"
            stop.set()

    workers = [threading.Thread(target=work, daemon=True, name=f"collect-{i}") for i in range(settings.concurrency)]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(0.2)
            progress.tick(teacher.retries)
    except KeyboardInterrupt:
        stop.set()  # daemon workers die with the process: only requests in flight are lost
        progress.tick(teacher.retries, final=True)
        print(
            f"stopping: {progress.done:,} queries answered or rejected; rerun the same command to resume",
            file=sys.stderr,
        )
        raise
    progress.tick(teacher.retries, final=True)
    if state["fatal"]:
        raise DataError(f"collect stopped after {progress.done:,} queries: {state['fatal']}")
    return {"accepted": progress.counts["accepted"], "rejected": {r: progress.counts[r] for r in REASONS
            if progress.counts[r]}, "retries": teacher.retries, "prompt_tokens": progress.prompt_tokens,
            "completion_tokens": progress.completion_tokens, "cost": round(progress.cost, 4)}  # fmt: skip
