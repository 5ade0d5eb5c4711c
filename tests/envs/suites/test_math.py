"""Few-shot calculator demonstrations: correct worked episodes in the chat history, a
compact prompt without the JSON schema, and the same episode dynamics afterwards."""

from __future__ import annotations

import json

import pytest

from agentic_rl.envs import calculator_tool, make_env_suite
from agentic_rl.envs.base import Action
from agentic_rl.envs.suites.math import COMPACT_CALCULATOR_INSTRUCTIONS, calculator_demonstrations
from agentic_rl.envs.tools.calculator import evaluate_expression, format_number
from agentic_rl.envs.tools.parser import parse_action


def test_demonstrations_are_correct_parseable_episodes():
    tool = calculator_tool()
    demos = calculator_demonstrations(4, tool)
    assert [m["role"] for m in demos] == ["user", "assistant", "tool", "assistant"] * 4
    for i in range(4):
        user, call, result, answer = demos[4 * i: 4 * i + 4]
        parsed = parse_action(call["content"], [tool])
        assert not parsed.errors and len(parsed.tool_calls) == 1
        expr = parsed.tool_calls[0].arguments["expression"]
        assert expr in user["content"]
        assert result["content"] == format_number(evaluate_expression(expr))
        assert answer["content"] == f"<answer>{result['content']}</answer>"
    assert calculator_demonstrations(0, tool) == []
    with pytest.raises(ValueError, match="demonstrations"):
        calculator_demonstrations(5, tool)


def test_calculator_suite_with_demonstrations_and_compact_prompt():
    suite = make_env_suite("calculator", demonstrations=2, compact_prompt=True, num_train=4,
                           num_eval=2, min_ops=1, max_ops=1)
    task = suite.tasks.split("train")[0]
    env = suite.make_env()
    messages = env.reset(task, seed=0)
    assert messages[0] == {"role": "system", "content": COMPACT_CALCULATOR_INSTRUCTIONS}
    assert "<tools>" not in messages[0]["content"]  # no JSON-schema prompt
    assert len(messages) == 1 + 2 * 4 + 1 and messages[-1]["content"] == task.prompt
    # the episode itself is unchanged: a tool call, then a correct answer succeeds
    expr = task.data["expression"]
    call = json.dumps({"name": "calculator", "arguments": {"expression": expr}})
    step = env.step(parse_action(f"<tool_call>{call}</tool_call>", [calculator_tool()]))
    assert step.observation[0]["content"] == task.answer and not step.done
    step = env.step(Action(text=f"<answer>{task.answer}</answer>"))
    assert step.done and step.info["success"]
    # the default suite keeps the full Hermes tool prompt and no demonstrations
    plain = make_env_suite("calculator", num_train=4, num_eval=2).make_env()
    msgs = plain.reset(task, seed=0)
    assert "<tools>" in msgs[0]["content"] and len(msgs) == 2
