"""Judged open-ended evaluation against a real chat-completions server on localhost that answers as a
judge and as a reference model: well-formed and malformed scores, 429s, dropped connections, bad
JSON; the prompt-set layouts; the metrics; and `orca-eval` killed mid-judging and started again."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from chat_server import ChatHandler, ChatServer
from test_eval import make_run

from orca_jax.cli import eval as eval_binary
from orca_jax.errors import ConfigError, DataError
from orca_jax.evaluation import judge
from orca_jax.evaluation.prompt_sets import OpenPrompt, read_prompt_set, read_references

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-judge-test-1a2b3c"
STUDENT, REFERENCE, FIRST_BONUS = 4, 8, 1  # the server's scores: a judge that favours the first answer by 1
# Prompt i's fault, by i: on the judge's first attempt only, or on every attempt.
FIRST_TRY = {1: "429", 2: "drop", 3: "bad_json", 4: "500"}
UNREADABLE = {5}  # the judge writes no scores for these prompts


class JudgeHandler(ChatHandler):
    def do_POST(self):
        srv = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self.reply(401, {"error": {"message": "Incorrect API key provided"}})
        question = request["messages"][-1]["content"]
        if request["model"] == "reference-model":  # asked the prompt itself
            key, content = f"ref/{question}", f"REFERENCE ANSWER to {question}"
        else:
            key, content = self.judgment(request)
        with srv.lock:
            attempt = srv.attempts[key]
            srv.attempts[key] += 1
            srv.log.append((key, attempt, time.monotonic(), request))
        fault = FIRST_TRY.get(srv.prompt_of.get(key, -1)) if attempt == 0 else None
        if fault == "429":
            return self.reply(429, {"error": "rate limited"}, [("Retry-After", "0.1")])
        if fault == "500":
            return self.reply(500, {"error": "internal"})
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "bad_json":
            return self.reply(200, b'{"choices": [{"message": {"content": "4 ')
        time.sleep(srv.latency)
        self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(question) // 4, "completion_tokens": 20}})  # fmt: skip

    def judgment(self, request):
        """Scores the student's answer 4 and the reference's 8, plus 1 for whichever came first."""
        prompt = request["messages"][-1]["content"]
        question = re.search(r"\[Question\]\n(.*?)\n\n\[The Start", prompt, re.S).group(1)
        first = re.search(r"Assistant 1's Answer\]\n(.*?)\n\n\[The End", prompt, re.S).group(1)
        order = "reference_first" if first.startswith("REFERENCE ANSWER") else "student_first"
        i = int(re.search(r"prompt number (\d+)", question).group(1))
        key = f"judge/{i}/{order}"
        self.server.prompt_of[key] = i
        if i in UNREADABLE:
            return key, "Both assistants tried hard; I cannot choose between them."
        a1, a2 = (STUDENT, REFERENCE) if order == "student_first" else (REFERENCE, STUDENT)
        return key, f"{a1 + FIRST_BONUS} {a2}\nAssistant 1 was better organised."


class JudgeServer(ChatServer):
    def __init__(self, latency=0.0):
        super().__init__(JudgeHandler, latency)
        self.prompt_of = {}


@pytest.fixture
def server():
    srv = JudgeServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_vicuna_questions(path, n):
    with open(path, "w") as f:
        for i in range(n):
            category = "math" if i == 7 else "coding" if i == 8 else "generic"
            f.write(
                json.dumps({"question_id": i, "category": category, "turns": [f"Tell me about prompt number {i}."]})
            )
            f.write("\n")


def judged_args(run, questions, url, *extra):
    return [
        "--gin_file=configs/runs/eval_judged.gin", f"--gin.CHECKPOINT_DIR={run}",
        f"--gin.PROMPT_SETS={{'vicuna': '{questions}'}}", f"--gin.JUDGE_URL='{url}'", "--gin.JUDGE_MODEL='judge-model'",
        f"--gin.REFERENCE_URL='{url}'", "--gin.REFERENCE_MODEL='reference-model'", "--gin.Judged.max_new_tokens=6",
        "--gin.Judged.retry_base_s=0.02", "--gin.Judged.retry_max_s=0.3", "--gin.Judged.max_retries=3",
        "--gin.Judged.timeout_s=5.0", "--gin.Generation.batch_size=16", *extra,
    ]  # fmt: skip


def expected_metrics(n):
    parsed = n - len(UNREADABLE)
    return {
        "prompts": n, "judgments": 2 * parsed, "unparsed": 2 * len(UNREADABLE), "failed": 0,
        "student_score": STUDENT + FIRST_BONUS / 2, "reference_score": REFERENCE + FIRST_BONUS / 2,
        "ratio": (STUDENT + FIRST_BONUS / 2) / (REFERENCE + FIRST_BONUS / 2), "position_bias": FIRST_BONUS,
    }  # fmt: skip


def test_judged_eval_scores_both_orders_survives_faults_and_asks_nothing_twice(server, tmp_path, monkeypatch, capsys):
    n = 10
    run, questions = make_run(tmp_path / "run", steps=(4,)), tmp_path / "question.jsonl"
    write_vicuna_questions(questions, n)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    eval_binary.main(judged_args(run, questions, server.url))
    out = os.path.join(run, "eval")
    metrics = json.load(open(os.path.join(out, "metrics_step_4.json")))
    for name, value in expected_metrics(n).items():
        assert math.isclose(metrics[f"judged/vicuna/{name}"], value), name
    printed = capsys.readouterr()
    assert re.search(r"vicuna\s+4\.50\s+8\.50\s+52\.9%\s+\+1\.00\s+2\s+0\s+10", printed.out), printed.out
    assert KEY not in printed.out + printed.err

    rows = [json.loads(line) for line in open(os.path.join(out, "judgments_step_4.jsonl"))]
    assert [r["id"] for r in rows] == [str(i) for i in range(n)]
    for r in rows:
        i = int(r["id"])
        assert r["prompt"] == f"Tell me about prompt number {i}." and r["set"] == "vicuna"
        assert r["reference_answer"] == f"REFERENCE ANSWER to {r['prompt']}" and isinstance(r["student_answer"], str)
        for order in judge.ORDERS:
            assert r[order]["judge_text"], (i, order)
            expected = None if i in UNREADABLE else [STUDENT + 1, REFERENCE] if order == "student_first" else [
                REFERENCE + 1, STUDENT]  # fmt: skip
            assert r[order]["scores"] == expected, (i, order)
    # Each judgment asked once, plus one retry for each transient fault; the reference once per prompt.
    for i in range(n):
        for order in judge.ORDERS:
            assert server.attempts[f"judge/{i}/{order}"] == (2 if i in FIRST_TRY else 1), (i, order)
        assert server.attempts[f"ref/Tell me about prompt number {i}."] == 1
    # Vicuna's prompt for the category (math, coding, general), its system message and settings.
    judge_requests = {key: req for key, attempt, _, req in server.log if key.startswith("judge/") and attempt == 0}
    for key, req in judge_requests.items():
        i = int(key.split("/")[1])
        kind = {7: "math", 8: "coding"}.get(i, "general")
        assert req["messages"][0] == {"role": "system", "content": judge.JUDGE_SYSTEM}
        assert req["messages"][1]["content"].endswith(f"[System]\n{judge.JUDGE_PROMPTS[kind]}\n\n")
        assert req["temperature"] == 0.2 and req["max_tokens"] == 1024 and req["model"] == "judge-model"
    # The 429's Retry-After (0.1 s) was honoured.
    times = {(key, attempt): t for key, attempt, t, _ in server.log}
    assert times[("judge/1/student_first", 1)] - times[("judge/1/student_first", 0)] >= 0.095

    # Run again: the answers, references and judgments are on disk; nothing is asked.
    sent = len(server.log)
    eval_binary.main(judged_args(run, questions, server.url))
    assert len(server.log) == sent
    again = json.load(open(os.path.join(out, "metrics_step_4.json")))
    assert {k: v for k, v in again.items() if k.startswith("judged/")} == {
        k: v for k, v in metrics.items() if k.startswith("judged/")}  # fmt: skip


def test_reference_answers_from_a_file_are_not_asked_for(server, tmp_path, monkeypatch):
    run, questions = make_run(tmp_path / "run", steps=(4,)), tmp_path / "question.jsonl"
    write_vicuna_questions(questions, 3)
    references = tmp_path / "gpt-3.5-turbo.jsonl"
    with open(references, "w") as f:
        for i in range(3):
            answer = f"REFERENCE ANSWER to Tell me about prompt number {i}."
            f.write(
                json.dumps({"question_id": i, "model_id": "gpt-3.5-turbo", "choices": [{"turns": [answer]}]}) + "\n"
            )
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    eval_binary.main(judged_args(run, questions, server.url, f"--gin.REFERENCES={{'vicuna': '{references}'}}",
                                 "--gin.REFERENCE_URL=''"))  # fmt: skip
    assert not [key for key in server.attempts if key.startswith("ref/")]
    metrics = json.load(open(os.path.join(run, "eval", "metrics_step_4.json")))
    assert metrics["judged/vicuna/judgments"] == 6 and metrics["judged/vicuna/position_bias"] == FIRST_BONUS


def judged_process(run, questions, url):
    args = judged_args(run, questions, url, "--gin.Judged.concurrency=2")
    return subprocess.Popen([sys.executable, "-m", "orca_jax.cli.eval", *args], cwd=REPO,
                            env={**os.environ, "OPENAI_API_KEY": KEY, "JAX_PLATFORMS": "cpu"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_killed_judged_eval_restarts_without_judging_anything_twice(tmp_path):
    n = 10
    srv = JudgeServer(latency=0.1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        run, questions = make_run(tmp_path / "run", steps=(4,)), tmp_path / "question.jsonl"
        write_vicuna_questions(questions, n)
        calls = tmp_path / "run" / "eval" / "judge_calls_step_4.jsonl"
        first = judged_process(run, questions, srv.url)
        deadline = time.monotonic() + 120
        while not (calls.exists() and len(calls.read_bytes().splitlines()) >= 6) and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        judged_before = {json.loads(line)["id"] for line in calls.read_text().splitlines()}
        assert 6 <= len(judged_before) < 2 * n, "the evaluation was not killed mid-judging"
        asked_before = len(srv.log)
        second = judged_process(run, questions, srv.url)
        stdout, stderr = second.communicate(timeout=240)
        assert second.returncode == 0, stderr
        assert f"{len(judged_before)} of {2 * n} answered before" in stderr
        # Nothing the judge had answered was asked again; every (prompt, order) is judged exactly once.
        asked_after = Counter(key for key, _, _, _ in srv.log[asked_before:] if key.startswith("judge/"))
        for call_id in judged_before:
            _, i, order = call_id.split("/")
            assert asked_after[f"judge/{i}/{order}"] == 0, call_id
        ids = [json.loads(line)["id"] for line in calls.read_text().splitlines()]
        assert Counter(ids) == Counter(f"vicuna/{i}/{o}" for i in range(n) for o in judge.ORDERS)
        metrics = json.load(open(tmp_path / "run" / "eval" / "metrics_step_4.json"))
        for name, value in expected_metrics(n).items():
            assert math.isclose(metrics[f"judged/vicuna/{name}"], value), name
    finally:
        srv.shutdown()
        srv.server_close()


def test_prompt_sets_in_their_public_layouts(tmp_path):
    vicuna_old = tmp_path / "question.jsonl"
    vicuna_old.write_text('{"question_id": 1, "text": "How can I improve?", "category": "generic"}\n')
    assert read_prompt_set(str(vicuna_old)) == [OpenPrompt("1", "How can I improve?", "generic")]
    wizard = tmp_path / "WizardLM_testset.jsonl"
    wizard.write_text(
        '{"idx": 1, "Skill": "Math", "Difficulty": 1, "Instruction": "What is 2+2?"}\n'
        '{"idx": 2, "Skill": "Code Generation", "Difficulty": 6, "Instruction": "Sort a list."}\n'
    )
    prompts = read_prompt_set(str(wizard))
    assert [(p.id, p.text, p.judge_kind) for p in prompts] == [("1", "What is 2+2?", "math"),
                                                               ("2", "Sort a list.", "coding")]  # fmt: skip
    awesome = tmp_path / "prompts.csv"
    with open(awesome, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerows([["act", "prompt", "for_devs"], ["Linux Terminal", 'I want you to act as a "terminal",\nok.',
                                                          "TRUE"], ["Poet", "Write a poem.", "FALSE"]])  # fmt: skip
    assert [(p.id, p.text) for p in read_prompt_set(str(awesome))] == [
        ("1", 'I want you to act as a "terminal",\nok.'), ("2", "Write a poem.")]  # fmt: skip
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        '{"question_id": 1, "text": "Plan your day."}\n'
        '{"question_id": 2, "choices": [{"turns": ["B"]}]}\n'
        '{"id": "x", "response": "C"}\n'
    )
    assert read_references(str(answers)) == {"1": "Plan your day.", "2": "B", "x": "C"}


@pytest.mark.parametrize(
    "content, error",
    [
        ('{"question_id": 1, "turns": []}\n', r"question\.jsonl:1: no prompt"),
        ('{"question_id": 1, "text": "a"}\n{"question_id": 1, "text": "b"}\n', "id '1' appears twice"),
        ('{"text": "a"}\n', r"question\.jsonl:1: no id"),
        ('{"question_id": 1, "text": "a"}\nnot json\n', r"question\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_prompt_files_are_one_clear_error(tmp_path, content, error):
    path = tmp_path / "question.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=error):
        read_prompt_set(str(path))


def test_bad_judged_settings_stop_before_the_model_is_loaded(tmp_path, server, monkeypatch, capsys):
    run, questions = make_run(tmp_path / "run", steps=(4,)), tmp_path / "question.jsonl"
    write_vicuna_questions(questions, 2)
    references = tmp_path / "refs.jsonl"
    references.write_text('{"question_id": 0, "text": "x"}\n')
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cases = [
        (["--gin.JUDGE_URL='https://judge.example.com/v1'"], r"\$OPENAI_API_KEY is not set"),
        ([f"--gin.REFERENCES={{'vicuna': '{references}'}}"], r"refs\.jsonl: no reference answer for prompt ids"),
        (["--gin.REFERENCES={'other': 'x.jsonl'}"], r"\['other'\] name no prompt set"),
        (["--gin.REFERENCE_URL=''"], r"give Judged\.references\['vicuna'\]"),
    ]  # fmt: skip
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            eval_binary.main(judged_args(run, questions, server.url, *extra))
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err), message
    assert not server.log and not os.path.exists(os.path.join(run, "eval"))
    with pytest.raises(ConfigError, match="judge_url and Judged.judge_model"):
        from orca_jax.evaluation.judged import Judged

        Judged(prompt_sets={"v": str(questions)}).read()


@pytest.mark.parametrize(
    "text, scores",
    [
        ("8 6\nAssistant 1 was more detailed.", (8.0, 6.0)),
        ("8, 6\n...", (8.0, 6.0)),
        ("**7 9**\nbecause", (7.0, 9.0)),
        ("8/10 6/10", (8.0, 6.0)),
        ("9.5 10\nclose", (9.5, 10.0)),
        ("First I solve it: x = 3.\n...\nSo the scores are (9, 4).", (9.0, 4.0)),
        ("Assistant 1 was better.", None),
        ("11 3", None),
        ("", None),
    ],
)
def test_judge_scores_are_read_as_vicuna_asks_for_them(text, scores):
    assert judge.parse_scores(text) == scores


def test_summary_ratio_and_position_bias():
    def judgment(first, second):
        return {"student_first": {"scores": first, "reason": ""}, "reference_first": {"scores": second, "reason": ""}}

    failed = {"scores": None, "reason": "failed"}
    rows = [judgment([6, 8], [9, 5]), judgment([4, 8], None), {**judgment(None, [7, 7]), "student_first": failed}]
    summary = judge.summarize(rows)
    # student scores 6, 5, 4, 7; reference 8, 9, 8, 7; bias only from the prompt judged both ways.
    assert summary["student_score"] == 22 / 4 and summary["reference_score"] == 32 / 4
    assert summary["ratio"] == 22 / 32 and summary["position_bias"] == ((6 - 8) + (9 - 5)) / 2
    assert summary["unparsed"] == 1 and summary["failed"] == 1 and summary["judgments"] == 4
