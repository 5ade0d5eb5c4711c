"""The rollout loop: exact tokens, the KV-cache request contract, limits, concurrency,
error isolation and the evaluation entry point, all with scripted policies."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agentic_rl.agents import evaluate_policy, run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.rollout import (
    ErrorBudgetExceeded,
    Generation,
    PolicyContractError,
    RolloutConfig,
    ScriptedPolicy,
    make_chat_format,
)
from tests.rollout.scripts import (
    CALL,
    ToyEnv,
    binary_search_player,
    calculator_solver,
    memoryless_player,
    toy_task,
)


def calc_suite():
    return make_env_suite("calculator", num_train=4, num_eval=6, seed=0)


def row_tokens(batch, b):
    return batch.tokens[b][batch.attention_mask[b]].tolist()


def expected_segments(fmt, tok, messages, texts_with_stop):
    """The per-segment tokenization the rollout must reproduce (built independently)."""
    prompt = [m for m in messages if m["role"] in ("system", "user")][:2]
    segs = [(tok.encode(fmt.prompt_text(prompt)), False)]
    rest = messages[2:]
    obs: list = []
    turn = 0
    for m in rest:
        if m["role"] == "assistant":
            if obs:
                segs.append((tok.encode(fmt.observation_text(obs)), False))
                obs = []
            sampled, appended = texts_with_stop[turn]
            segs.append(
                (tok.encode(sampled) + ([fmt.end_of_turn_id] if not appended else []), True)
            )
            if appended:
                segs.append(([fmt.end_of_turn_id], False))
            turn += 1
        else:
            obs.append(m)
    return segs


@pytest.mark.parametrize("tokenizer_name", ["char", "smollm2"])
def test_exact_tokens_calculator_episode(tokenizer_name, request):
    tok = request.getfixturevalue(
        "char_tokenizer" if tokenizer_name == "char" else "smollm2_tokenizer"
    )
    fmt = make_chat_format("smollm2", tok)
    suite = calc_suite()
    tasks = suite.tasks.split("eval")[:3]
    policy = ScriptedPolicy(tok, calculator_solver, logprob=-0.25)
    res = run_episodes(policy, fmt, suite.make_env, tasks, config=RolloutConfig(max_turns=4))
    assert not res.errors and res.metrics["success_rate"] == 1.0
    batch = res.batch
    for b, task in enumerate(tasks):
        meta = batch.metadata[b]
        msgs = meta["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
        call = "Let me compute. " + CALL % task.data["expression"]
        assert msgs[2]["content"] == call
        assert msgs[2]["tool_calls"][0]["function"]["name"] == "calculator"
        # Turn 0 stopped on the stop string "</tool_call>": <|im_end|> appended, not sampled.
        segs = expected_segments(
            fmt, tok, msgs, [(call, True), (f"<answer>{task.answer}</answer>", False)]
        )
        tokens = row_tokens(batch, b)
        assert tokens == [t for ids, _ in segs for t in ids]
        loss = [s for ids, s in segs for _ in ids]
        np.testing.assert_array_equal(batch.loss_mask[b][: len(tokens)], loss)
        np.testing.assert_allclose(
            batch.sample_logprobs[b][: len(tokens)], np.where(loss, -0.25, 0.0)
        )
        text = (
            fmt.prompt_text(msgs[:2])
            + call
            + "<|im_end|>"
            + fmt.observation_text(msgs[3:4])
            + f"<answer>{task.answer}</answer><|im_end|>"
        )
        assert tok.decode(tokens) == text
        ends = batch.turn_end[b]
        assert tokens[ends[0] + 1] == fmt.end_of_turn_id and not batch.loss_mask[b, ends[0] + 1]
        assert tokens[ends[1]] == fmt.end_of_turn_id and batch.loss_mask[b, ends[1]]
        np.testing.assert_allclose(batch.turn_rewards[b], [0.0, 1.1, 0.0, 0.0])
        assert meta["tool_calls"] == [
            {
                "turn": 0,
                "id": "call_0_0",
                "name": "calculator",
                "arguments": {"expression": task.data["expression"]},
            }
        ]


def test_guess_game_tokens_decode_to_the_smollm2_chat_template(
    smollm2_tokenizer, hf_gguf_tokenizer
):
    fmt = make_chat_format("smollm2", smollm2_tokenizer)
    suite = make_env_suite("guess_number", num_eval=4)
    policy = ScriptedPolicy(smollm2_tokenizer, binary_search_player)
    res = run_episodes(
        policy, fmt, suite.make_env, suite.tasks.split("eval"), config=RolloutConfig(max_turns=10)
    )
    assert res.metrics["success_rate"] == 1.0 and res.metrics["mean_turns"] > 2
    for b, meta in enumerate(res.batch.metadata):
        shown = meta["messages"][:-1]  # the final feedback is never fed to the policy
        template = hf_gguf_tokenizer.apply_chat_template(shown, tokenize=False)
        assert smollm2_tokenizer.decode(row_tokens(res.batch, b)) == template.removesuffix("\n")


def test_requests_follow_the_kv_cache_contract(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [toy_task(i, turns=3) for i in range(3)]
    policy = ScriptedPolicy(char_tokenizer, ["a", "<tool_call>x</tool_call> trailing", "c"])
    res = run_episodes(policy, fmt, ToyEnv, tasks, group_size=2, config=RolloutConfig())
    assert [len(c) for c in policy.calls] == [6, 6, 6]  # every turn batched across episodes
    last: dict[str, tuple] = {}
    for call in policy.calls:
        for req in call:
            gen = policy._sample(req)
            if req.episode_id in last:
                prev_tokens, prev_gen = last[req.episode_id]
                assert tuple(req.tokens[: -req.num_new_tokens]) == tuple(prev_tokens) + tuple(
                    prev_gen
                )
                # new suffix = (appended <|im_end|> if the turn did not sample it) + observation
                appended = prev_gen[-1] != fmt.end_of_turn_id
                new = list(req.new_tokens)
                assert (new[0] == fmt.end_of_turn_id) == appended
                assert char_tokenizer.decode(new[1:] if appended else new).startswith(
                    "\n<|im_start|>user\nobs"
                )
            else:
                assert req.num_new_tokens == len(req.tokens) and req.turn == 0
            assert req.stop_token_ids == (fmt.end_of_turn_id,) and req.stop_strings == (
                "</tool_call>",
            )
            last[req.episode_id] = (req.tokens, gen.token_ids)
    assert sorted(policy.released) == sorted(last)
    assert res.batch.group_id.tolist() == [0, 0, 1, 1, 2, 2]
    assert [m["episode_id"] for m in res.batch.metadata] == [
        "g0s0",
        "g0s1",
        "g1s0",
        "g1s1",
        "g2s0",
        "g2s1",
    ]
    assert len({m["seed"] for m in res.batch.metadata}) == 6
    np.testing.assert_allclose(res.batch.turn_rewards[0, :3], [0.5, 0.5, 1.0])


def test_length_limit_appends_end_of_turn_unsampled(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    policy = ScriptedPolicy(char_tokenizer, ["x" * 50, "ok"])
    res = run_episodes(policy, fmt, ToyEnv, [toy_task(0)], config=RolloutConfig(max_new_tokens=8))
    b = res.batch
    end = b.turn_end[0, 0]
    assert b.metadata[0]["finish_reasons"] == ["length", "stop"]
    assert b.loss_mask[0, end - 7 : end + 1].all() and not b.loss_mask[0, end + 1]
    assert b.tokens[0, end + 1] == fmt.end_of_turn_id
    assert res.metrics["length_finish_rate"] == 0.5


def test_max_turns_truncates(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "go")
    res = run_episodes(
        policy, fmt, ToyEnv, [toy_task(0, turns=100)], config=RolloutConfig(max_turns=3)
    )
    meta = res.batch.metadata[0]
    assert meta["termination"] == "max_turns" and meta["truncated"] and meta["num_turns"] == 3
    assert res.batch.turn_end.shape == (1, 3) and (res.batch.turn_end[0] >= 0).all()
    assert res.metrics["termination/max_turns"] == 1.0 and res.metrics["success_rate"] == 0.0
    # the last observation is not tokenized: the row ends with the last turn's <|im_end|>
    assert row_tokens(res.batch, 0)[-1] == fmt.end_of_turn_id


def test_max_episode_tokens_bounds_every_episode(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    prompt_len = len(fmt.encode_prompt(ToyEnv().reset(toy_task(0), 0)))
    limit = prompt_len + 60
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "y" * 30)
    cfg = RolloutConfig(max_episode_tokens=limit, max_new_tokens=100)
    res = run_episodes(policy, fmt, ToyEnv, [toy_task(0, turns=100)], config=cfg)
    meta = res.batch.metadata[0]
    assert meta["termination"] == "max_tokens" and meta["num_tokens"] <= limit
    assert all(len(r.tokens) + r.max_new_tokens + 1 <= limit for c in policy.calls for r in c)
    too_small = RolloutConfig(max_episode_tokens=prompt_len + 1, max_error_fraction=1.0)
    res = run_episodes(policy, fmt, ToyEnv, [toy_task(0)], config=too_small)
    assert res.batch is None and "leaves no room" in res.errors[0].message


def test_failing_environments_are_isolated(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [
        toy_task(0),
        toy_task(1, fail="step"),
        toy_task(2, fail="reset"),
        toy_task(3, bad="reward"),
        toy_task(4, bad="obs"),
        toy_task(5, bad="type"),
        toy_task(6),
    ]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(max_error_fraction=0.75))
    assert [m["task_id"] for m in res.batch.metadata] == ["toy-0", "toy-6"]
    errors = {e.task_id: e for e in res.errors}
    assert errors["toy-1"].stage == "step" and "step exploded on toy-1" in errors["toy-1"].message
    assert "Traceback" in errors["toy-1"].traceback
    assert errors["toy-2"].stage == "reset" and "reset exploded" in errors["toy-2"].message
    assert "non-finite" in errors["toy-3"].message
    assert "empty observation" in errors["toy-4"].message
    assert "must return StepResult" in errors["toy-5"].message
    assert res.metrics["num_errors"] == 5 and res.metrics["error_rate"] == 5 / 7
    assert sorted(policy.released) == [f"g{i}s0" for i in range(7) if i != 2]


def test_error_budget_stops_the_run_with_a_clear_message(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [toy_task(i, fail="step" if i < 3 else None, turns=5) for i in range(8)]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    with pytest.raises(
        ErrorBudgetExceeded, match=r"3 of 8 episodes failed, over the budget of 2"
    ) as info:
        run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(max_error_fraction=0.25))
    assert "step exploded on toy-0" in str(info.value)
    assert sorted(policy.released) == [f"g{i}s0" for i in range(8)]  # live episodes freed too


def test_a_slow_environment_does_not_stall_the_others(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [toy_task(0, sleep=0.5, turns=2)] + [toy_task(i, turns=4) for i in range(1, 4)]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(straggler_wait_s=0.02))
    assert not res.errors and len(res.records) == 4
    # the fast episodes play all their turns while the slow one's first step still runs
    first_slow_retry = next(
        i for i, c in enumerate(policy.calls) if i > 0 and any(r.episode_id == "g0s0" for r in c)
    )
    fast_turns = [
        r.turn for c in policy.calls[:first_slow_retry] for r in c if r.episode_id == "g1s0"
    ]
    assert fast_turns == [0, 1, 2, 3]


def test_a_hung_environment_times_out_and_is_dropped(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [toy_task(0, sleep=1.5), toy_task(1), toy_task(2), toy_task(3)]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    start = time.perf_counter()
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(step_timeout_s=0.2))
    assert time.perf_counter() - start < 1.0
    (err,) = res.errors
    assert (err.task_id, err.stage) == ("toy-0", "timeout") and "0.2 s" in err.message
    assert len(res.records) == 3


def test_queued_steps_do_not_time_out(char_tokenizer):
    """Timeouts count from when a worker starts a step, not from when it was queued."""
    fmt = make_chat_format("chatml", char_tokenizer)
    tasks = [toy_task(i, sleep=0.15, turns=1) for i in range(3)]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    cfg = RolloutConfig(max_workers=1, step_timeout_s=0.3)
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=cfg)
    assert not res.errors and len(res.records) == 3


def test_environments_are_closed(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    # ids of this test's own: environments of earlier tests (a hung one released late)
    # may still close while this runs, and ToyEnv.closed is shared
    ToyEnv.closed.clear()
    tasks = [toy_task(900), toy_task(901, fail="step")]
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "a")
    run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(max_error_fraction=0.5))
    mine = lambda: sorted(c for c in ToyEnv.closed if c in ("toy-900", "toy-901"))
    deadline = time.monotonic() + 2
    while len(mine()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # closing is asynchronous, off the rollout's critical path
    assert mine() == ["toy-900", "toy-901"]


def test_a_hung_environment_does_not_keep_the_process_alive():
    code = (
        "import time\n"
        "from agentic_rl.rollout import *\n"
        "from agentic_rl.agents import run_episodes\n"
        "from tests.rollout.scripts import ToyEnv, toy_task\n"
        "tok = CharTokenizer()\n"
        "res = run_episodes(ScriptedPolicy(tok, ['a']), make_chat_format('chatml', tok), ToyEnv,\n"
        "                   [toy_task(0, sleep=3600), toy_task(1, turns=1)],\n"
        "                   config=RolloutConfig(step_timeout_s=0.1, max_error_fraction=0.5))\n"
        "assert [e.stage for e in res.errors] == ['timeout'], res.errors\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


class _BadPolicy:
    def __init__(self, make):
        self.make = make

    def generate(self, requests):
        return self.make(requests)

    def release(self, ids):
        pass


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda rs: [], "0 generations for 1 requests"),
        (lambda rs: [Generation([], [], "stop")], "no tokens"),
        (lambda rs: [Generation([5] * 9999, [0.0] * 9999, "length")], "max_new_tokens"),
        (lambda rs: [Generation([5], [], "stop")], "0 logprobs for 1 tokens"),
        (lambda rs: [Generation([5], [0.0], "eos")], "finish_reason"),
        (lambda rs: [Generation([5], [0.7], "stop")], "<= 0"),
        (lambda rs: ["text"], "expected Generation"),
    ],
)
def test_policy_contract_violations_raise(char_tokenizer, make, fragment):
    fmt = make_chat_format("chatml", char_tokenizer)
    with pytest.raises(PolicyContractError, match=fragment):
        run_episodes(_BadPolicy(make), fmt, ToyEnv, [toy_task(0)])


def test_run_episodes_argument_errors(char_tokenizer):
    fmt = make_chat_format("chatml", char_tokenizer)
    policy = ScriptedPolicy(char_tokenizer, ["a"])
    with pytest.raises(ValueError, match="at least one task"):
        run_episodes(policy, fmt, ToyEnv, [])
    with pytest.raises(ValueError, match="group_size"):
        run_episodes(policy, fmt, ToyEnv, [toy_task(0)], group_size=0)
    with pytest.raises(ValueError, match="max_turns"):
        RolloutConfig(max_turns=0)
    with pytest.raises(ValueError, match="tuple of strings"):
        RolloutConfig(stop_strings="</tool_call>")
    with pytest.raises(IndexError, match="script has 1 turns"):
        run_episodes(policy, fmt, ToyEnv, [toy_task(0, turns=2)])


def test_evaluate_reports_success_validity_and_turns(char_tokenizer):
    fmt = make_chat_format("smollm2", char_tokenizer)
    policy = ScriptedPolicy(char_tokenizer, calculator_solver)
    report = evaluate_policy(
        policy, fmt, "calculator", num_episodes=5, batch_size=2, env_kwargs={"num_eval": 6}
    )
    m = report.metrics
    assert (
        m["num_episodes"],
        m["success_rate"],
        m["tool_call_validity_rate"],
        m["mean_turns"],
    ) == (5, 1.0, 1.0, 2.0)
    assert [len(c) for c in policy.calls] == [2, 2, 2, 2, 1, 1]  # chunks of batch_size
    assert len(report.episodes) == 5 and not report.errors

    def sloppy(req, hist):  # first call has broken JSON, then recovers
        if req.turn == 0:
            return '<tool_call>{"name": "calculator", "arguments": {expression}}</tool_call>'
        return calculator_solver(req.__class__(**{**req.__dict__, "turn": req.turn - 1}), hist)

    report = evaluate_policy(
        ScriptedPolicy(char_tokenizer, sloppy), fmt, "calculator", num_episodes=3
    )
    m = report.metrics
    assert m["tool_call_validity_rate"] == 0.5 and m["tool_errors/bad_json"] == 3
    assert m["success_rate"] == 1.0 and m["mean_turns"] == 3.0

    report = evaluate_policy(
        ScriptedPolicy(char_tokenizer, ["<answer>0</answer>"]), fmt, "calculator", num_episodes=2
    )
    assert math.isnan(report.metrics["tool_call_validity_rate"])
    assert report.summary()["tool_call_validity_rate"] is None
    with pytest.raises(ValueError, match="has 200 tasks"):
        evaluate_policy(policy, fmt, "calculator", num_episodes=201)
    with pytest.raises(ValueError, match="only apply when env is given by name"):
        evaluate_policy(policy, fmt, calc_suite(), env_kwargs={"seed": 1})


def test_guess_game_rewards_memory(char_tokenizer):
    fmt = make_chat_format("smollm2", char_tokenizer)
    suite = make_env_suite("guess_number", num_eval=20)
    cfg = RolloutConfig(max_turns=10)
    smart = evaluate_policy(
        ScriptedPolicy(char_tokenizer, binary_search_player), fmt, suite, config=cfg
    )
    forgetful = evaluate_policy(
        ScriptedPolicy(char_tokenizer, memoryless_player), fmt, suite, config=cfg
    )
    assert smart.metrics["success_rate"] == 1.0 and smart.metrics["mean_turns"] <= 7
    assert forgetful.metrics["success_rate"] < 0.8
    assert smart.metrics["mean_return"] > forgetful.metrics["mean_return"]
