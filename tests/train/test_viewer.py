"""Trajectory records mark each message's origin (prompt / policy / environment) and its
turn, so worked examples in the prompt are never taken for the policy's turns; the page
puts rewards, advantages and tool calls on the policy's turns and collapses the prompt."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from agentic_rl.train import viewer
from tests.train.viewer_episodes import DEMOS, calculator_rollout, page_records

PROMPT = 1 + 4 * DEMOS + 1  # system, the worked examples, the task


def test_rollout_metadata_marks_origins():
    res = calculator_rollout()
    assert not res.errors
    for rec in res.records:
        meta = rec.metadata
        assert len(meta["origins"]) == len(meta["messages"])
        assert meta["origins"] == ["prompt"] * PROMPT + ["policy", "environment", "policy"]
        roles = [m["role"] for m in meta["messages"]]
        assert roles[PROMPT:] == ["assistant", "tool", "assistant"]
        assert roles[:PROMPT].count("assistant") == 2 * DEMOS  # demonstrations look alike


def test_trajectory_record_messages_carry_origin_and_turn():
    train, evals, _ = page_records()
    for rec in (train, evals):
        msgs = rec["messages"]
        assert [m["origin"] for m in msgs] == ["prompt"] * PROMPT + [
            "policy", "environment", "policy"]
        assert [m["turn"] for m in msgs] == [None] * PROMPT + [0, 0, 1]
        assert all(m["turn"] is None for m in msgs if m["origin"] == "prompt")
    assert [c["turn"] for c in train["tool_calls"]] == [0]
    # an eval record has no advantages but keeps the rewards its rollout recorded
    assert evals["turn_advantages"] is None and evals["turn_rewards"] == pytest.approx(
        train["turn_rewards"])
    assert train["turn_advantages"] == [0.5, -0.25]
    assert train["turn_rewards"][1] > 1.0 and train["turn_rewards"][0] == 0.0
    json.dumps(train)  # JSON-safe


def test_origins_inferred_for_metadata_without_them():
    msgs = [{"role": "system"}, {"role": "user"}, {"role": "assistant"}, {"role": "user"},
            {"role": "assistant"}, {"role": "tool"}, {"role": "assistant"}]
    assert viewer.infer_origins(msgs, 2) == ["prompt"] * 4 + ["policy", "environment",
                                                             "policy"]
    assert viewer.infer_origins(msgs, 0) == ["prompt"] * 7
    assert viewer.infer_origins(msgs, 9) == ["prompt", "prompt", "policy", "environment",
                                             "policy", "environment", "policy"]
    rec = viewer.trajectory_record({"messages": msgs, "num_turns": 2}, step=0, kind="eval")
    assert [m["turn"] for m in rec["messages"]] == [None] * 4 + [0, 0, 1]


class Page(HTMLParser):
    """(origin, turn, text) of each message div; text inside <details> is flagged."""

    def __init__(self):
        super().__init__()
        self.msgs, self.depth, self.in_details, self.cur = [], 0, 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "details":
            self.in_details += 1
        if tag == "div" and "data-origin" in a:
            self.cur = {"origin": a["data-origin"], "turn": a.get("data-turn"),
                        "collapsed": self.in_details > 0, "text": ""}
            self.msgs.append(self.cur)
            self.depth = 0
        elif tag == "div" and self.cur is not None:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "details":
            self.in_details -= 1
        if tag == "div" and self.cur is not None:
            if self.depth == 0:
                self.cur = None
            else:
                self.depth -= 1

    def handle_data(self, data):
        if self.cur is not None:
            self.cur["text"] += data


def test_page_labels_turns_not_demonstrations():
    train = page_records()[0]
    page = Page()
    page.feed(viewer.render_html([train], "t"))
    prompt = [m for m in page.msgs if m["origin"] == "prompt"]
    assert len(prompt) == PROMPT and all(m["collapsed"] for m in prompt)
    assert not any(re.search(r"turn \d+ of|reward [+-]|advantage", m["text"]) for m in prompt)
    policy = [m for m in page.msgs if m["origin"] == "policy"]
    assert [m["turn"] for m in policy] == ["0", "1"]
    assert "turn 1 of 2" in policy[0]["text"] and "reward +0.000" in policy[0]["text"]
    assert "advantage +0.500" in policy[0]["text"] and "tool calls:" in policy[0]["text"]
    assert "turn 2 of 2" in policy[1]["text"] and "advantage -0.250" in policy[1]["text"]
    assert "tool calls:" not in policy[1]["text"]
    (obs,) = [m for m in page.msgs if m["origin"] == "environment"]
    assert "observation after turn 1" in obs["text"] and not obs["collapsed"]
    html = viewer.render_html([train], "t")
    assert f"prompt &middot; {PROMPT} messages: system, {DEMOS} worked examples, task" in html


def test_spread_samples_the_whole_split():
    items = list(range(10))
    assert viewer.spread(items, 4) == [0, 3, 6, 9]
    assert viewer.spread(items, 2) == [0, 9]
    assert viewer.spread(items, 1) == [0] and viewer.spread(items, 0) == []
    assert viewer.spread(items, 10) == items and viewer.spread(items, 30) == items
    assert len(set(viewer.spread(list(range(96)), 8))) == 8


def test_card_names_the_task_subset():
    train = page_records()[0]
    rec = {**train, "task_subset": "larger_operands"}
    assert '<span class="subset">(larger_operands)</span>' in viewer.render_html([rec], "t")
    assert viewer.episode_rows([rec])[0]["subset"] == "larger_operands"
    assert 'class="subset"' not in viewer.render_html([train], "t")
