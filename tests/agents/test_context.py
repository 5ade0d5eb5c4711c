"""Context management (`agents.context`): what each strategy sends, and the rows it makes.

The row tests run the long gridworld (30-100 turns) with its scripted solver behind a
recording policy, and reconstruct what the policy saw from the policy's side: every
call's context and sample must be where the row says, every sampled token must be in
exactly one row with loss mask 1, and the episode's rows must chain (offsets, rewards,
one final row)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agentic_rl.agents import run_episodes
from agentic_rl.agents.context import MEMORY_TOOL, Context
from agentic_rl.envs import make_env_suite
from agentic_rl.envs.base import Action
from agentic_rl.envs.suites.gridworld import scripted_solver
from agentic_rl.envs.tools.base import ToolCall
from agentic_rl.rollout import CharTokenizer, ContextConfig, RolloutConfig, ScriptedPolicy
from agentic_rl.rollout.chat_format import make_chat_format

HEAD = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]


def turn(k):
    return {"role": "assistant", "content": f"a{k}"}, [{"role": "tool", "content": f"o{k}"}]


def contents(msgs):
    return [m["content"] for m in msgs]


def test_full_sends_everything_and_never_rewrites():
    ctx = Context(ContextConfig("full"), HEAD)
    for k in range(20):
        ctx.add_turn(*turn(k))
        assert not ctx.due()
    assert contents(ctx.messages()) == ["sys", "task", *[x for k in range(20)
                                                           for x in (f"a{k}", f"o{k}")]]


def test_window_drops_old_turns_in_blocks():
    ctx = Context(ContextConfig("window", keep_turns=2, rewrite_every=3), HEAD)
    sent = []
    for k in range(9):
        if ctx.due():
            ctx.rewrite()
        sent.append(contents(ctx.messages())[2::2])  # the assistant turns in context
        ctx.add_turn(*turn(k))
    # grows to keep + every = 5 turns, then back to the latest 2
    assert sent == [[], ["a0"], ["a0", "a1"], ["a0", "a1", "a2"], ["a0", "a1", "a2", "a3"],
                    ["a3", "a4"], ["a3", "a4", "a5"], ["a3", "a4", "a5", "a6"], ["a6", "a7"]]
    assert ctx.dropped == 6 and ctx.rewrites == 2


def test_memory_notes_show_in_a_fixed_slot_refreshed_at_rewrites():
    cfg = ContextConfig("memory", keep_turns=1, rewrite_every=1, memory_chars=8)
    ctx = Context(cfg, HEAD)
    assert MEMORY_TOOL in ctx.messages()[0]["content"]  # the system prompt tells how
    assert [t.name for t in ctx.tools([])] == [MEMORY_TOOL]
    call = ToolCall(MEMORY_TOOL, {"notes": "key at (3, 4) and more"}, "c0")
    other = ToolCall("move", {"direction": "north"}, "c1")
    rest, obs = ctx.split_memory(Action("t", tool_calls=(call, other)))
    assert rest.tool_calls == (other,) and ctx.notes == "key at (" and len(obs) == 1
    assert obs[0]["tool_call_id"] == "c0" and obs[0]["name"] == MEMORY_TOOL
    ctx.add_turn(*turn(0))
    assert ctx.slot() == []  # nothing dropped yet: the notes are in the history
    ctx.add_turn(*turn(1))
    assert ctx.due()
    ctx.rewrite()
    msgs = contents(ctx.messages())
    assert msgs[2] == "Your notes:\nkey at (" and msgs[3:] == ["a1", "o1"]
    plain = Context(ContextConfig("window"), HEAD)
    action = Action("t", tool_calls=(call,))
    assert plain.split_memory(action) == (action, []) and plain.tools([]) == []


def test_summarize_puts_the_summary_in_the_slot():
    ctx = Context(ContextConfig("summarize", keep_turns=1, rewrite_every=2), HEAD)
    for k in range(3):
        ctx.add_turn(*turn(k))
    assert ctx.due()
    ask = ctx.summary_messages()
    assert contents(ask)[:-1] == contents(ctx.messages())
    assert ask[-1]["role"] == "user" and "Summarize" in ask[-1]["content"]
    with pytest.raises(ValueError, match="summary"):
        ctx.rewrite()
    ctx.rewrite("  I am at (1, 2).  ")
    assert contents(ctx.messages()) == ["sys", "task", "Summary of your first 2 turns:\n"
                                        "I am at (1, 2).", "a2", "o2"]


def test_bad_context_configs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown context strategy 'sliding'"):
        ContextConfig("sliding")
    with pytest.raises(ValueError, match="rewrite_every"):
        ContextConfig("window", rewrite_every=0)
    with pytest.raises(ValueError, match="prompt messages"):
        Context(ContextConfig(), [])


# -- rows of a long episode -------------------------------------------------------------------


class Recorder:
    """A ScriptedPolicy that records every call's context and sample, in call order."""

    def __init__(self, policy):
        self.policy, self.log = policy, []

    def generate(self, requests, on_tokens=None):
        gens = self.policy.generate(requests)
        self.log.extend((r.episode_id, list(r.tokens), g) for r, g in zip(requests, gens))
        return gens

    def release(self, ids):
        self.policy.release(ids)


def gridworld_script(strategy):
    """The gridworld solver per episode; writes notes every 6th turn (memory) and a short
    summary when asked (summarize)."""
    solvers, turns = {}, {}

    def script(request, text):
        ep = request.episode_id.split(".")[0]
        k = turns[ep] = turns.get(ep, -1) + 1
        if "Summarize everything you will still need" in text[-400:]:
            return f"Summary {k}: exploring."
        if strategy == "memory" and k % 6 == 5:
            notes = json.dumps({"name": MEMORY_TOOL, "arguments": {"notes": f"turn {k}"}})
            return f"<tool_call>{notes}</tool_call>"
        solver = solvers.setdefault(ep, scripted_solver())
        return solver([{"content": text}])

    return script


def run_long(strategy, *, tasks=2, max_turns=100, keep=3, every=5, max_tokens=60_000):
    fmt = make_chat_format("chatml", CharTokenizer())
    suite = make_env_suite("gridworld", num_train=1, num_eval=tasks)
    policy = Recorder(ScriptedPolicy(fmt.tok, gridworld_script(strategy), logprob=-0.5))
    cfg = RolloutConfig(max_turns=max_turns, max_new_tokens=200, max_episode_tokens=max_tokens,
                        context=ContextConfig(strategy, keep_turns=keep, rewrite_every=every))
    res = run_episodes(policy, fmt, suite.make_env, suite.tasks.split("eval"), config=cfg)
    return res, policy.log


@pytest.mark.parametrize("strategy", ["full", "window", "memory", "summarize"])
def test_rows_hold_every_sampled_token_once_with_the_context_it_was_sampled_under(strategy):
    res, log = run_long(strategy)
    assert not res.errors and res.metrics["success_rate"] == 1.0
    assert res.metrics["num_episodes"] == 2
    batch = res.batch
    by_row = {}
    for episode_id, tokens, gen in log:
        by_row.setdefault(episode_id, []).append((tokens, gen))
    assert len(by_row) == batch.batch_size
    sampled = 0
    for b, rec in enumerate(res.records):
        row_tokens = rec.tokens
        calls = by_row[rec.metadata["episode_id"]]
        assert len(calls) == rec.metadata["num_turns"] == len(rec.turn_ends)
        for k, (tokens, gen) in enumerate(calls):
            # what the policy saw is the row's prefix; its sample follows, trained
            n, g = len(tokens), list(gen.token_ids)
            assert row_tokens[:n] == tokens
            assert row_tokens[n:n + len(g)] == g
            assert all(rec.loss_mask[n:n + len(g)]) and rec.turn_ends[k] == n + len(g) - 1
            assert set(rec.turn_index[n:n + len(g)]) == {k}
        assert sum(rec.loss_mask) == sum(len(g.token_ids) for _, g in calls)
        sampled += sum(rec.loss_mask)
        assert batch.loss_mask[b].sum() == sum(rec.loss_mask)
    assert sampled == sum(len(g.token_ids) for _, _, g in log)  # each sample exactly once

    keep, every = 3, 5
    for ep in ("g0s0", "g1s0"):
        rows = [r for r in res.records if r.metadata["episode_id"].split(".")[0] == ep]
        n_env = len(rows[-1].metadata["infos"])  # turns answered by the env (or memory)
        # a rewrite before turn keep + every, then every `every` turns
        assert len(rows) == 1 + (0 if strategy == "full" else (n_env - 1 - keep) // every)
        assert len({r.episode for r in rows}) == 1
        offsets = [r.turn_offset for r in rows]
        assert offsets == [sum(len(r.turn_ends) for r in rows[:i]) for i in range(len(rows))]
        assert [r.metadata["continued"] for r in rows] == [True] * (len(rows) - 1) + [False]
        assert not any(r.truncated for r in rows)
        total = sum(sum(r.turn_rewards) for r in rows)
        assert all(r.metadata["return"] == pytest.approx(total) for r in rows)
        assert total > 1.0  # dense: exploration + items + success
        # the turns in view at each call: all earlier ones (full), else keep to
        # keep + every - 1
        seen = [CharTokenizer().decode(tokens).count("<|im_start|>assistant") - 1
                for episode_id, tokens, _ in log if episode_id.split(".")[0] == ep]
        if strategy == "full":
            assert seen == list(range(n_env))
        else:
            # (a summary is asked for with the keep + every turns about to be dropped)
            most = keep + every - (strategy != "summarize")
            assert max(seen) == most and min(seen[keep + every:]) >= keep
            head = CharTokenizer().decode(rows[0].tokens[:300])
            assert all(CharTokenizer().decode(r.tokens).startswith(head) for r in rows)
        last = CharTokenizer().decode(rows[-1].tokens)
        if strategy == "memory":
            assert "Your notes:\nturn " in last
        if strategy == "summarize":
            assert "Summary of your first" in last and "exploring." in last
    if strategy != "full":
        assert batch.batch_size >= 8  # at least 4 rows per episode


def test_max_turns_counts_the_calls_of_the_whole_episode():
    res, log = run_long("window", tasks=1, max_turns=20, keep=2, every=4)
    assert len(log) == 20
    assert res.metrics["termination/max_turns"] == 1.0 and res.metrics["mean_turns"] == 20
    rows = res.records
    assert rows[-1].turn_offset + len(rows[-1].turn_ends) == 20
    assert rows[-1].truncated and not any(r.truncated for r in rows[:-1])
    assert res.batch.turn_end.shape[1] == 20


def test_full_context_ends_truncated_at_the_context_limit():
    res, _ = run_long("full", tasks=1, max_tokens=8000)
    assert res.metrics["termination/max_tokens"] == 1.0
    assert len(res.records) == 1 and res.records[0].truncated
    res, _ = run_long("window", tasks=1, max_tokens=8000)  # the window fits where full cannot
    assert res.metrics["success_rate"] == 1.0
    assert max(len(r.tokens) for r in res.records) < 8000


@pytest.mark.parametrize("estimator,extra", [
    ("mc_returns", {"turn_gamma": 0.9}),
    ("reinforce_pp", {"gamma": 0.999, "whiten_weighting": "rollout"}),
])
def test_rows_of_a_rewritten_episode_get_the_whole_episodes_credit(estimator, extra):
    """The scripted solver plays the same moves whatever it is shown, so the window run and
    the full run are the same episodes cut differently: every sampled token must get the
    same advantage, although a window row holds only its slice of the episode."""
    from agentic_rl.rl import AdvantageConfig, compute_advantages

    full, _ = run_long("full")
    win, _ = run_long("window")
    assert win.batch.batch_size > 2 * full.batch.batch_size
    episodes = [r.metadata["episode_id"].split(".")[0] for r in win.records]
    assert np.asarray(win.batch.episode_index).tolist() == [int(e[1]) for e in episodes]
    cfg = AdvantageConfig(estimator=estimator, **extra)

    def per_turn(result):
        b = result.batch
        adv = np.asarray(compute_advantages(b, cfg)[0])
        out = {}
        for r in range(b.batch_size):
            mask = np.asarray(b.loss_mask[r], bool)
            for k in set(np.asarray(b.turn_index[r])[mask].tolist()):
                sel = mask & (np.asarray(b.turn_index[r]) == k)
                key = (int(b.episode_index[r]), int(b.turn_offset[r]) + k)
                out[key] = adv[r][sel].tolist()
        return out

    got, want = per_turn(win), per_turn(full)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=str(key))
