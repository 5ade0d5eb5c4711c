"""The calculator's harder eval subset (operands beyond the training range) and the
per-subset evaluation metrics computed from it."""

from __future__ import annotations

import math
import re

import pytest

from agentic_rl.envs import make_env_suite
from agentic_rl.envs.tools.calculator import evaluate_expression
from agentic_rl.rollout.metrics import eval_metrics, subset_metrics


def _operands(task) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", task.data["expression"])]


def test_hard_eval_subset_has_larger_operands():
    suite = make_env_suite("calculator", num_train=50, num_eval=20, num_eval_hard=10,
                           min_ops=1, max_ops=2)
    train, ev = suite.tasks.split("train"), suite.tasks.split("eval")
    assert len(ev) == 30 and len({t.id for t in ev}) == 30
    regular, hard = ev[:20], ev[20:]
    assert {t.data["subset"] for t in regular} == {"in_distribution"}
    assert {t.data["subset"] for t in hard} == {"larger_operands"}
    assert max(x for t in [*train, *regular] for x in _operands(t)) <= 99
    assert max(x for t in hard for x in _operands(t)) > 99
    assert all(max(_operands(t)) <= 999 for t in hard)
    for t in hard:  # the answer is the calculator's
        assert float(t.answer) == pytest.approx(evaluate_expression(t.data["expression"]))
    # without a hard subset nothing is tagged, and the regular split is unchanged
    plain = make_env_suite("calculator", num_train=50, num_eval=20, min_ops=1, max_ops=2)
    assert [t.prompt for t in plain.tasks.split("eval")] == [t.prompt for t in regular]
    assert all("subset" not in t.data for t in plain.tasks.split("eval"))
    with pytest.raises(ValueError, match="num_eval_hard"):
        make_env_suite("calculator", num_eval_hard=-1)


def _episode(task_id, success, ret):
    return {"task_id": task_id, "success": success, "return": ret, "num_turns": 2,
            "num_tokens": 10, "num_sampled_tokens": 4, "truncated": False,
            "finish_reasons": ["stop", "stop"], "tool_call_attempts": 1,
            "tool_call_valid": int(success), "tool_errors": [], "termination": "done"}


def test_subset_metrics_match_a_hand_count():
    subset_of = {"a": "in_distribution", "b": "in_distribution", "c": "larger_operands",
                 "d": "larger_operands", "e": "larger_operands"}
    eps = [_episode("a", True, 1.1), _episode("b", True, 1.1), _episode("c", False, 0.0),
           _episode("d", True, 1.1), _episode("e", False, 0.1)]
    m = subset_metrics(eps, subset_of)
    assert m["in_distribution/success_rate"] == 1.0
    assert m["larger_operands/success_rate"] == pytest.approx(1 / 3)
    assert m["larger_operands/mean_return"] == pytest.approx(1.2 / 3)
    assert m["larger_operands/num_episodes"] == 3.0
    assert m["larger_operands/tool_call_validity_rate"] == pytest.approx(1 / 3)
    assert subset_metrics(eps, {k: "x" for k in subset_of}) == {}  # one subset: nothing
    assert subset_metrics(eps, {}) == {}

    class T:
        def __init__(self, i):
            self.id, self.data = i, {"subset": subset_of[i]}

    full = eval_metrics(eps, [], [T(i) for i in subset_of])
    assert full["success_rate"] == pytest.approx(3 / 5)
    assert full["larger_operands/success_rate"] == m["larger_operands/success_rate"]
    assert not any(math.isnan(v) for v in m.values())
