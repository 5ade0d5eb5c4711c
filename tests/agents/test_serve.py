"""`python -m agentic_rl.serve` as a real process: it serves the tiny model to the openai
SDK (more conversations than KV-cache rows: the oldest idle row is evicted and re-prefilled
on its next call), reports its model, stops cleanly on SIGTERM, and refuses bad
arguments with one error line."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import openai
import pytest

from tests.train.conftest import REPO


def test_bad_arguments_are_one_error_line():
    r = subprocess.run([sys.executable, "-m", "agentic_rl.serve", "--port", "70000"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: --port must be in [0, 65535], got 70000"
    r = subprocess.run([sys.executable, "-m", "agentic_rl.serve", "--model", "/no/such/dir"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "no/such" in r.stderr


@pytest.mark.slow
def test_serve_the_tiny_model_to_the_openai_sdk():
    proc = subprocess.Popen([sys.executable, "-m", "agentic_rl.serve", "--model", "tiny",
                             "--port", "0", "--max-rows", "2", "--max-new-tokens", "8",
                             "--name", "tiny-policy"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving tiny on http://127.0.0.1:"), line
        client = openai.OpenAI(base_url=line.split(" on ")[1].strip(), api_key="k",
                               max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-policy"]
        results, errors = {}, []

        def talk(k):
            try:
                messages = [{"role": "user", "content": f"hello {k}"}]
                for _ in range(2):
                    r = client.chat.completions.create(model="tiny-policy", messages=messages)
                    messages += [{"role": "assistant", "content": r.choices[0].message.content},
                                 {"role": "user", "content": "more"}]
                    assert 1 <= r.usage.completion_tokens <= 8
                results[k] = r.model_extra["agentic_rl"]["new_prompt_tokens"]
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=talk, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(results) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
