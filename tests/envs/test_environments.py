"""Concrete environments and the ENVS registry, driven step by step without a model."""

from __future__ import annotations

import pytest

from agentic_rl.envs import (
    ENVS,
    GSM8K_DIR_ENV,
    Env,
    GuessNumberEnv,
    MathToolEnv,
    Task,
    calculator_tool,
    extract_guess,
    generate_guess_tasks,
    make_env_suite,
    parse_action,
    resolve_gsm8k_dir,
)

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>'


def act(env, text):
    return env.step(parse_action(text, env.tools))


def test_math_env_tool_then_answer():
    env = MathToolEnv(tools=(calculator_tool(),))
    assert isinstance(env, Env)
    msgs = env.reset(Task("t", "What is 6 * 7?", "42"), seed=0)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<tools>" in msgs[0]["content"] and msgs[1]["content"] == "What is 6 * 7?"

    r = act(env, "Let me check. " + CALL % "6 * 7")
    assert (r.reward, r.done) == (0.0, False)
    assert r.observation == [
        {"role": "tool", "content": "42", "name": "calculator", "tool_call_id": "call_0"}
    ]

    r = act(env, "bad " + CALL % "6 *")
    assert not r.done and r.observation[0]["content"].startswith("Error: cannot parse")
    assert r.info["tool_exec_errors"] == ["tool_error"]

    r = act(env, '<tool_call>{"name": "calc"}</tool_call>')
    assert not r.done and r.info["tool_error_kinds"] == ["unknown_tool"]
    assert "unknown tool 'calc'" in r.observation[0]["content"]

    r = act(env, "<answer>42</answer>")
    assert r.done and r.info["success"] and r.reward == pytest.approx(1.1)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        act(env, "again")


def test_math_env_wrong_answer_and_bad_success_term():
    env = MathToolEnv(tools=(calculator_tool(),))
    env.reset(Task("t", "q", "42"), seed=0)
    r = act(env, "It is 41")
    assert r.done and not r.info["success"] and r.reward == 0.0
    with pytest.raises(RuntimeError, match="before reset"):
        act(MathToolEnv(tools=()), "x")
    with pytest.raises(ValueError, match="not a reward term"):
        MathToolEnv(tools=(), success_term="nope")


def test_extract_guess():
    assert extract_guess("I think <guess>37</guess>") == 37
    assert extract_guess("maybe 12, no, 40") == 40
    assert extract_guess("no idea") is None
    assert extract_guess("9" * 40) is None


def binary_search_game(env, task):
    env.reset(task, seed=0)
    lo, hi = task.data["low"], task.data["high"]
    rewards = []
    while True:
        guess = (lo + hi) // 2
        r = act(env, f"<guess>{guess}</guess>")
        rewards.append(r.reward)
        if r.done:
            return r, rewards
        if "higher" in r.observation[0]["content"]:
            lo = guess + 1
        else:
            hi = guess - 1


def test_guess_number_binary_search_wins_with_dense_rewards():
    for task in generate_guess_tasks(20, seed=0):
        r, rewards = binary_search_game(GuessNumberEnv(), task)
        assert r.info["success"] and len(rewards) <= 7
        assert rewards[-1] == 1.0
        assert all(0 < x <= 0.5 for x in rewards[:-1])  # every consistent guess earns reward


def test_guess_number_needs_memory():
    """Feedback is relative to the last guess only: forgetting it repeats excluded guesses."""
    task = Task("g", "guess", "90", {"low": 1, "high": 100, "secret": 90})
    env = GuessNumberEnv(max_guesses=5)
    env.reset(task, seed=0)
    first = act(env, "<guess>50</guess>")
    assert first.observation[0]["content"] == "50 is too low. The number is higher."
    assert act(env, "<guess>75</guess>").reward > 0
    r = act(env, "<guess>60</guess>")  # ignores "higher than 75": inconsistent
    assert r.reward == -0.1 and not r.info["consistent"]
    assert act(env, "no number").info["valid_guess"] is False
    last = act(env, "<guess>10</guess>")
    assert (
        last.done
        and not last.info["success"]
        and "the number was 90" in last.observation[0]["content"]
    )


def test_guess_number_custom_feedback_through_the_suite():
    suite = ENVS.get("guess_number")(low=1, high=3, max_guesses=2, num_train=4, num_eval=4,
                                     too_low_feedback="higher", too_high_feedback="{guess}: lower")
    env = suite.make_env()
    env.reset(Task("g", "guess", "2", {"low": 1, "high": 3, "secret": 2}), seed=0)
    assert act(env, "<guess>1</guess>").observation[0]["content"] == "higher"
    env.reset(Task("g", "guess", "2", {"low": 1, "high": 3, "secret": 2}), seed=0)
    assert act(env, "<guess>3</guess>").observation[0]["content"] == "3: lower"
    with pytest.raises(ValueError, match="too_low_feedback.*only \\{guess\\}"):
        GuessNumberEnv(too_low_feedback="{secret} is more")
    with pytest.raises(ValueError, match="must differ"):
        GuessNumberEnv(too_low_feedback="no", too_high_feedback="no")


def test_guess_number_secret_from_seed_and_validation():
    task = Task("g", "guess", None, {"low": 1, "high": 10})
    env = GuessNumberEnv()
    env.reset(task, seed=5)
    s1 = env._state["secret"]
    env.reset(task, seed=5)
    assert env._state["secret"] == s1
    with pytest.raises(ValueError, match="outside"):
        env.reset(Task("g", "p", None, {"low": 1, "high": 10, "secret": 11}), seed=0)


def test_registry_lists_valid_names_on_unknown_name():
    assert set(ENVS.names()) >= {"calculator", "gsm8k", "guess_number"}
    with pytest.raises(ValueError, match="valid names: calculator, .*gsm8k, guess_number"):
        make_env_suite("calculater")


def test_calculator_suite_from_config_and_files(tmp_path):
    suite = make_env_suite("calculator", {"num_train": 3, "num_eval": 2}, seed=7)
    assert (len(suite.tasks.split("train")), len(suite.tasks.split("eval"))) == (3, 2)
    assert suite.gamma == 1.0 and isinstance(suite.make_env(), Env)
    assert suite.make_env() is not suite.make_env()
    f = tmp_path / "eval.jsonl"
    f.write_text('{"question": "2+2?", "answer": "#### 4"}\n')
    from_file = make_env_suite("calculator", eval_path=f, num_train=1)
    assert [t.answer for t in from_file.tasks.split("eval")] == ["4"]
    with pytest.raises(TypeError):
        make_env_suite("calculator", bogus=1)
    with pytest.raises(ValueError, match="gamma"):
        make_env_suite("guess_number", gamma=1.5)


def test_gsm8k_suite_missing_data_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(GSM8K_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=GSM8K_DIR_ENV):
        make_env_suite("gsm8k")


def test_gsm8k_suite_on_real_data():
    if not (resolve_gsm8k_dir() / "test.jsonl").is_file():
        pytest.skip("GSM8K data not present")
    suite = make_env_suite("gsm8k", limit=10)
    task = suite.tasks.split("eval")[0]
    env = suite.make_env()
    env.reset(task, seed=0)
    r = act(env, f"<answer>{task.answer}</answer>")
    assert r.done and r.info["success"]
