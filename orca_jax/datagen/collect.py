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
- Threads: `--concurrency` threads each take the next pending query and ask the teacher
  (`teacher_client`: rate limits, retries, a per-request deadline, the API key); a fatal reply
  (401/403/404) stops the run, and so do `--max_consecutive_failures` failed requests in a row
  (the endpoint is down).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from orca_jax.datagen.teacher_client import (
    REASONS,
    Endpoint,
    Fatal,
    Limiter,
    Result,
    Settings,
    Stopped,
    Teacher,
    is_local,
)
from orca_jax.errors import ConfigError, DataError

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
            raise DataError(f"{path}: another `orca-data collect` or `orca-eval` is writing it") from None
        self.lock = threading.Lock()

    def write(self, obj: dict) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        os.close(self.fd)


# The run.


class Progress:
    """Counts, and a status line: a redrawn line on a terminal, a log line every `log_every_s` otherwise."""

    def __init__(self, total: int, settings: Settings, stream=None, label: str = "collect"):
        self.total, self.settings, self.stream, self.label = total, settings, stream or sys.stderr, label
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
        return (f"{self.label} {done:,}/{self.total:,} ({100 * done / max(self.total, 1):.1f}%) | {rate:.2f} req/s | "
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


def ask_each(feed: Iterator[dict], teacher: Teacher, handle: Callable[[dict, Result], None], concurrency: int,
             tick: Callable[[], None]) -> str:  # fmt: skip
    """`concurrency` threads each take the next query of `feed`, ask `teacher` and pass the query and
    its result to `handle`, until the feed runs dry or `teacher.stop` is set; `tick` runs five times
    a second meanwhile. Returns why the threads stopped early ("" when they did not): a Fatal reply
    (a bad key, URL or model) or an error in `handle` (a full disk) stops them all. On Ctrl-C the
    threads are told to stop and die with the process: only requests in flight are lost."""
    feed_lock, fatal = threading.Lock(), []

    def work() -> None:
        try:
            while not teacher.stop.is_set():
                with feed_lock:
                    query = next(feed, None)
                if query is None:
                    return
                handle(query, teacher.ask(query))
        except Stopped:
            return
        except Exception as e:
            fatal.append(str(e) if isinstance(e, (Fatal, DataError)) else f"{type(e).__name__}: {e}")
            teacher.stop.set()

    workers = [threading.Thread(target=work, daemon=True, name=f"ask-{i}") for i in range(concurrency)]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(0.2)
            tick()
    except KeyboardInterrupt:
        teacher.stop.set()
        raise
    return fatal[0] if fatal else ""


def _run(queries: str, done: set[str], pending: int, out: AppendLog, rejects: AppendLog, endpoint: Endpoint,
         settings: Settings) -> dict:  # fmt: skip
    stop = threading.Event()
    teacher = Teacher(endpoint, settings, Limiter(settings.rpm, settings.tpm, stop), stop)
    progress = Progress(pending, settings)
    feed = (q for _, q in read_queries(queries) if q["id"] not in done)
    state_lock, state = threading.Lock(), {"fatal": "", "failed_in_a_row": 0}

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

    try:
        stopped_by = ask_each(feed, teacher, write, settings.concurrency, lambda: progress.tick(teacher.retries))
    except KeyboardInterrupt:
        progress.tick(teacher.retries, final=True)
        print(f"stopping: {progress.done:,} queries answered or rejected; rerun the same command to resume",
              file=sys.stderr)  # fmt: skip
        raise
    state["fatal"] = state["fatal"] or stopped_by
    progress.tick(teacher.retries, final=True)
    if state["fatal"]:
        raise DataError(f"collect stopped after {progress.done:,} queries: {state['fatal']}")
    return {"accepted": progress.counts["accepted"], "rejected": {r: progress.counts[r] for r in REASONS
            if progress.counts[r]}, "retries": teacher.retries, "prompt_tokens": progress.prompt_tokens,
            "completion_tokens": progress.completion_tokens, "cost": round(progress.cost, 4)}  # fmt: skip


def api_key_for(base_url: str, api_key_env: str, no_api_key: bool, log: Callable[[str], None],
                flags: tuple[str, str] = ("--api_key_env", "--no_api_key")) -> str | None:  # fmt: skip
    """The API key for `base_url`, only ever from the environment variable `api_key_env`. A local or
    private address may go without one; a remote one needs one unless `no_api_key`."""
    endpoint = Endpoint(base_url, None, 1.0)  # checks the URL before anything else
    api_key = None if no_api_key else os.environ.get(api_key_env) or None
    if api_key is None and not no_api_key:
        if not is_local(endpoint.parts.hostname or ""):
            raise DataError(f"${api_key_env} is not set: export your API key in it (or name another variable "
                            f"with {flags[0]}; {flags[1]} for an endpoint without authentication)")  # fmt: skip
        log(f"${api_key_env} is not set: sending no API key to {endpoint.url} (a local server)")
    return api_key


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def collect_from(queries: str, out: str, rejects: str = "", *, api_key_env: str = "OPENAI_API_KEY",
                 no_api_key: bool = False, log: Callable[[str], None] = _to_stderr, **settings) -> dict:  # fmt: skip
    """`orca-data collect`: `settings` are Settings' fields. Takes the API key from `$api_key_env`
    (only ever from the environment; a local endpoint may go without), `collect`s (rejects default
    to OUT.rejects), logs progress to stderr and prints the summary as one JSON line."""
    config = Settings(**settings)
    api_key = api_key_for(config.base_url, api_key_env, no_api_key, log)
    summary = collect(queries, out, rejects or out + ".rejects", config, api_key, log=log)
    print(json.dumps(summary))
    return summary
