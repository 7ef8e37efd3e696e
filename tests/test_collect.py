"""`orca-data collect` against a real chat-completions server on localhost that answers as the mini-Orca
teacher, with injected faults (429 + Retry-After, 500s, a hung request, malformed JSON, dropped
connections, refusals, empty and truncated answers); the collector killed mid-run and restarted."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
from chat_server import ChatHandler, ChatServer

from orca_jax.cli.data import main
from orca_jax.datagen import collect, teacher_client
from orca_jax.datagen.mini_orca import addition_question, explain_addition
from orca_jax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-test-9f8e7d6c5b4a"
HANG_S, TIMEOUT_S = 2.0, 0.5

# Query i's fault, by i % 20: on the first attempt only (transient), or on every attempt (reject).
FIRST_TRY = {1: "429", 2: "500", 3: "hang", 4: "bad_json", 5: "drop", 10: "429_ms"}
ALWAYS = {6: "refuse", 7: "empty", 8: "length", 9: "500", 11: "400"}
EXPECTED_REJECT = {6: "refusal", 7: "empty", 8: "length", 9: "failed", 11: "bad_request"}


def operands(i):
    return 100 + i, 200 + 3 * i


class TeacherHandler(ChatHandler):
    def reply(self, status, body, headers=()):
        super().reply(status, body, headers)
        if self.server.stale:  # close after answering, though the reply promised to keep the connection
            self.close_connection = True

    def do_POST(self):
        srv = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            return self.reply(404, {"error": "not found"})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self.reply(401, {"error": {"message": "Incorrect API key provided"}})
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", request["messages"][-1]["content"]).groups())
        i = a - 100
        with srv.lock:
            attempt = srv.attempts[i]
            srv.attempts[i] += 1
            srv.log.append((i, attempt, time.monotonic(), request))
        fault = ALWAYS.get(i % 20) or (FIRST_TRY.get(i % 20) if attempt == 0 else None)
        if fault == "429":
            return self.reply(429, {"error": "rate limited"}, [("Retry-After", "0.1")])
        if fault == "429_ms":
            return self.reply(429, {"error": "rate limited"}, [("retry-after-ms", "100")])
        if fault == "500":
            return self.reply(500, {"error": "internal"})
        if fault == "400":
            return self.reply(400, {"error": {"message": "maximum context length exceeded"}})
        if fault == "hang":
            time.sleep(HANG_S)
            self.close_connection = True
            return
        if fault == "drop":
            self.close_connection = True  # close the connection without a response
            return
        if fault == "bad_json":
            return self.reply(200, b'{"choices": [{"message": {"content": "7+')
        time.sleep(srv.latency)
        content, finish = explain_addition(a, b), "stop"
        if fault == "refuse":
            content = "I'm sorry, but I can't help with that request."
        elif fault == "empty":
            content = ""
        elif fault == "length":
            content, finish = content[:20], "length"
        prompt = sum(len(m["content"]) for m in request["messages"]) // 4
        self.reply(200, {"id": "cmpl", "object": "chat.completion", "model": request["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": finish}],
                         "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4,
                                   "total_tokens": prompt + len(content) // 4}})  # fmt: skip


class TeacherServer(ChatServer):
    def __init__(self, latency=0.0):
        super().__init__(TeacherHandler, latency)
        self.stale = False


@pytest.fixture
def teacher():
    server = TeacherServer(latency=0.002)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_queries(path, n):
    with open(path, "w") as f:
        for i in range(n):
            a, b = operands(i)
            system = "" if i % 3 == 0 else "Think step by step and justify each step."
            f.write(json.dumps({"id": f"q.{i}", "system_prompt": system, "question": addition_question(a, b),
                                "response": "", "collection": "niv"}) + "\n")  # fmt: skip


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_exactly_once(n, out, rejects):
    """Every query has exactly one answer or reject line; answers are the teacher's; rejects say why."""
    answers, rejected = read_lines(out), read_lines(rejects)
    ids = Counter(r["id"] for r in answers + rejected)
    assert ids == Counter(f"q.{i}" for i in range(n)), "a query was lost or answered twice"
    for r in answers:
        i = int(r["id"][2:])
        assert i % 20 not in ALWAYS
        assert r["response"] == explain_addition(*operands(i))
        assert r["question"] == addition_question(*operands(i)) and r["collection"] == "niv"
        assert set(r) == {"id", "system_prompt", "question", "response", "collection"}
    for r in rejected:
        assert r["reason"] == EXPECTED_REJECT[int(r["id"][2:]) % 20], r
    return answers, rejected


ARGS = ["--model", "mini-teacher", "--concurrency", "4", "--timeout_s", str(TIMEOUT_S), "--max_retries", "2",
        "--retry_base_s", "0.02", "--retry_max_s", "0.3", "--log_every_s", "0.2", "--price_input_per_1m", "2.5",
        "--price_output_per_1m", "10"]  # fmt: skip


def test_collect_survives_every_fault(teacher, tmp_path, monkeypatch, capsys):
    n = 40
    queries, out = tmp_path / "queries.jsonl", tmp_path / "responses.jsonl"
    write_queries(queries, n)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    main(["collect", "--base_url", teacher.url, "--in", str(queries), "--out", str(out), *ARGS])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    answers, rejected = check_exactly_once(n, out, str(out) + ".rejects")
    assert summary["accepted"] == len(answers) == n - 2 * len(ALWAYS)
    assert summary["rejected"] == {"refusal": 2, "empty": 2, "length": 2, "failed": 2, "bad_request": 2}
    assert summary["prompt_tokens"] > 0 and summary["cost"] > 0
    assert KEY not in captured.out + captured.err
    assert re.search(r"collect 40/40 \(100\.0%\) \| .* req/s \| ETA .* \| tokens in .* out .* \| \$", captured.err)
    # Each transient fault was retried once; the always-500 query used its three attempts.
    for i in range(n):
        expected = 3 if i % 20 == 9 else 2 if i % 20 in FIRST_TRY else 1
        assert teacher.attempts[i] == expected, (i, teacher.attempts[i])
    # The 429s' Retry-After (0.1 s) was honoured.
    times = defaultdict(dict)
    for i, attempt, t, _ in teacher.log:
        times[i][attempt] = t
    for i in (1, 10, 21, 30):
        assert times[i][1] - times[i][0] >= 0.095
    # Orca's sampling settings; the system message is sent only when there is one.
    for i, _, _, request in teacher.log:
        assert request["model"] == "mini-teacher" and request["temperature"] == 0.7 and request["top_p"] == 0.95
        assert [m["role"] for m in request["messages"]] == (["user"] if i % 3 == 0 else ["system", "user"])
    # A rerun has nothing left to do and sends nothing.
    sent = len(teacher.log)
    main(["collect", "--base_url", teacher.url, "--in", str(queries), "--out", str(out), *ARGS])
    assert len(teacher.log) == sent
    # --retry_failed asks the failed ones again (they fail again, and stay exactly once).
    main(["collect", "--base_url", teacher.url, "--in", str(queries), "--out", str(out), "--retry_failed", *ARGS])
    assert len(teacher.log) == sent + 2 * 3
    check_exactly_once(n, out, str(out) + ".rejects")


def collector(teacher, queries, out, env):
    return subprocess.Popen([sys.executable, "-m", "orca_jax.cli.data", "collect", "--base_url", teacher.url,
                             "--in", str(queries), "--out", str(out), *ARGS],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_killed_collector_resumes_with_nothing_lost_or_duplicated(tmp_path):
    n = 200
    server = TeacherServer(latency=0.02)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        queries, out = tmp_path / "queries.jsonl", tmp_path / "responses.jsonl"
        write_queries(queries, n)
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        first = collector(server, queries, out, env)
        deadline = time.monotonic() + 30
        while not (out.exists() and len(out.read_bytes().splitlines()) >= 40) and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        written = len(read_lines(out))
        assert 40 <= written < n - len(ALWAYS) * n // 20, "the collector was not killed mid-run"
        with open(out, "a") as f:  # a crash mid-write leaves a torn last line
            f.write('{"id": "q.199", "system_prompt": "", "question": "What is 2')
        second = collector(server, queries, out, env)
        stdout, stderr = second.communicate(timeout=60)
        assert second.returncode == 0, stderr
        assert "dropped a torn last line" in stderr and KEY not in stdout + stderr
        answers, rejected = check_exactly_once(n, out, str(out) + ".rejects")
        assert len(answers) == n - len(ALWAYS) * n // 20 and len(rejected) == len(ALWAYS) * n // 20
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["accepted"] + sum(summary["rejected"].values()) < n  # the rerun skipped what was done
    finally:
        server.shutdown()
        server.server_close()


def test_api_key_comes_from_the_environment_only(teacher, tmp_path):
    queries = tmp_path / "queries.jsonl"
    write_queries(queries, 3)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

    def run(*args, env=env):
        cmd = [sys.executable, "-m", "orca_jax.cli.data", "collect", "--model", "m", "--in", str(queries), *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    # A remote endpoint without a key: refused before any request.
    r = run("--base_url", "https://api.example.invalid/v1", "--out", str(tmp_path / "a.jsonl"))
    assert r.returncode == 2 and "$OPENAI_API_KEY is not set" in r.stderr
    # The wrong key: the endpoint's 401 stops the run at once, and no key is printed.
    wrong = {**env, "TEACHER_KEY": "sk-wrong-123456"}
    r = run("--base_url", teacher.url, "--out", str(tmp_path / "b.jsonl"), "--api_key_env", "TEACHER_KEY", env=wrong)
    assert r.returncode == 2 and "HTTP 401" in r.stderr and "sk-wrong" not in r.stdout + r.stderr
    assert not (tmp_path / "b.jsonl").read_text() and not (tmp_path / "b.jsonl.rejects").read_text()
    # The right key, from the variable --api_key_env names.
    r = run("--base_url", teacher.url, "--out", str(tmp_path / "c.jsonl"), "--api_key_env", "TEACHER_KEY",
            env={**env, "TEACHER_KEY": KEY})  # fmt: skip
    assert r.returncode == 0 and KEY not in r.stdout + r.stderr
    assert len(read_lines(tmp_path / "c.jsonl")) == 3


def test_rate_limits_pace_the_requests(teacher, tmp_path):
    n = 40  # of which 2 * 5 always fail, 1 * 3 retried once or twice
    queries, out = tmp_path / "queries.jsonl", tmp_path / "responses.jsonl"
    write_queries(queries, n)
    settings = collect.Settings(base_url=teacher.url, model="m", concurrency=8, rpm=1200, timeout_s=TIMEOUT_S,
                                max_retries=0, retry_base_s=0.01, log_every_s=60)  # fmt: skip
    start = time.monotonic()
    collect.collect(str(queries), str(out), str(out) + ".rejects", settings, KEY, log=lambda _: None)
    elapsed = time.monotonic() - start
    # 1,200 a minute is 20 a second after a burst of 20: 40 requests need at least a second.
    starts = sorted(t for _, _, t, _ in teacher.log)
    assert len({i for i, _, _, _ in teacher.log}) == n and starts[-1] - starts[0] >= 0.9 and elapsed >= 0.9


def test_token_bucket_takes_tokens_per_minute():
    stop = threading.Event()
    limiter = teacher_client.Limiter(rpm=0, tpm=60 * 2000, stop=stop)  # 2,000 tokens a second, holding 2,000
    start = time.monotonic()
    for _ in range(3):
        limiter.acquire(1000)
    assert 0.45 <= time.monotonic() - start < 1.0  # 3,000 tokens: the first 2,000 at once, then 0.5 s
    limiter.settle(estimated=1000, actual=2000)  # the reply used more than estimated: a debt to wait out
    start = time.monotonic()
    limiter.acquire(1)
    assert time.monotonic() - start >= 0.45
    stop.set()
    with pytest.raises(teacher_client.Stopped):
        limiter.acquire(10**6)


def test_bad_queries_and_flags_are_one_clear_error(tmp_path, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "a", "question": "What is 1 + 2?"}\n{"id": "b", "question": 5}\n')
    settings = collect.Settings(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(DataError, match=r"queries\.jsonl:2: question: expected a string"):
        collect.collect(str(queries), str(tmp_path / "o"), str(tmp_path / "r"), settings, None)
    queries.write_text('{"id": "a", "question": "What is 1 + 2?"}\n{"id": "a", "question": "What is 2 + 2?"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: id 'a' appears twice"):
        collect.collect(str(queries), str(tmp_path / "o"), str(tmp_path / "r"), settings, None)
    with pytest.raises(SystemExit) as e:
        main(["collect", "--base_url", "ftp://x", "--model", "m", "--in", str(queries), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "expected http(s)://" in capsys.readouterr().err
    assert teacher_client.is_refusal("I’m sorry, but I cannot assist with that.")
    assert not teacher_client.is_refusal("I'm sorry to hear that. The answer is 4, because 2 + 2 = 4.")
    assert not teacher_client.is_refusal("As an AI assistant, I will solve this step by step: 2 + 2 = 4.")
    assert teacher_client.retry_after({"retry-after": "3"}) == 3.0 and teacher_client.retry_after({}) is None


def test_stale_keep_alive_connections_cost_no_retry(teacher, tmp_path):
    """A server may close an idle kept-alive connection; the next request on it fails before any
    reply and goes out again at once on a fresh connection, without spending a retry."""
    teacher.stale = True
    queries, out = tmp_path / "queries.jsonl", tmp_path / "responses.jsonl"
    with open(queries, "w") as f:
        for i in (0, 12, 13, 14, 15, 16):  # no injected faults
            f.write(json.dumps({"id": f"q.{i}", "question": addition_question(*operands(i))}) + "\n")
    settings = collect.Settings(base_url=teacher.url, model="m", concurrency=1, max_retries=0, timeout_s=TIMEOUT_S)
    summary = collect.collect(str(queries), str(out), str(out) + ".rejects", settings, KEY, log=lambda _: None)
    assert summary["accepted"] == 6 and summary["retries"] == 0 and len(teacher.log) == 6
