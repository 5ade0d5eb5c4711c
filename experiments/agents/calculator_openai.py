"""The calculator task as a third-party agent: written only against the `openai` SDK.

The trainer hands the agent `llm.base_url` (this episode's gateway URL); the agent builds
its own chat history (a system prompt that shows the call format, three worked examples
as ordinary OpenAI messages with `tool_calls` and `role: "tool"` results, the question),
passes the calculator as an OpenAI `tools=` function, executes the calls it gets back
with its own calculator, and scores its final `<answer>` itself (1 if right, plus 0.1 for
the answer format). Nothing in it knows about the trainer but `llm.base_url`/`llm.api_key`.

Trained by experiments/smollm2_calculator_gateway.py. With `agent.render_tools=False`
the gateway parses the tool calls without adding the JSON-schema prompt, so the prompt
the policy sees is token for token the one of the environment version
(experiments/smollm2_calculator_grpo.py); tests/agents/test_calculator_agent.py checks it.
"""

from __future__ import annotations

import json
import re
import threading

import openai

from agentic_rl.agents import AgentResult
from agentic_rl.envs import calculator_tool, execute_tool
from agentic_rl.envs.suites.math import COMPACT_CALCULATOR_INSTRUCTIONS, default_math_reward

EXAMPLES = (("What is 12 * 7?", "12 * 7"), ("What is 95 - 38?", "95 - 38"),
            ("What is (6 + 9) / 5?", "(6 + 9) / 5"))
CALCULATOR = calculator_tool()
TOOL = {"type": "function", "function": {"name": "calculator",
                                         "description": CALCULATOR.description,
                                         "parameters": dict(CALCULATOR.parameters)}}
REWARD = default_math_reward(0.1)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)

_lock = threading.Lock()
_client: list[openai.OpenAI] = []


def client_for(base_url: str, api_key: str) -> openai.OpenAI:
    """One shared client (connection pool) for every episode, re-pointed per episode."""
    with _lock:
        if not _client:
            _client.append(openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                         timeout=600))
    return _client[0].with_options(base_url=base_url)


def calculate(expression: str) -> str:
    return execute_tool(CALCULATOR, {"expression": expression}).content


def worked_examples() -> list[dict]:
    out = []
    for i, (question, expression) in enumerate(EXAMPLES):
        call = {"id": f"example_{i}", "type": "function",
                "function": {"name": "calculator",
                             "arguments": json.dumps({"expression": expression})}}
        result = calculate(expression)
        out += [{"role": "user", "content": question},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": f"example_{i}", "content": result},
                {"role": "assistant", "content": f"<answer>{result}</answer>"}]
    return out


def agent(task, llm) -> AgentResult:
    client = client_for(llm.base_url, llm.api_key)
    messages = [{"role": "system", "content": COMPACT_CALCULATOR_INSTRUCTIONS},
                *worked_examples(), {"role": "user", "content": task.prompt}]
    calls = 0
    for _ in range(2):  # call the calculator, then answer
        try:
            reply = client.chat.completions.create(model="policy", messages=messages,
                                                   tools=[TOOL]).choices[0].message
        except openai.BadRequestError:  # a limit of the trainer (turns, context)
            return AgentResult(reward=0.0, success=False, truncated=True)
        messages.append(reply.model_dump(exclude_none=True))
        if reply.tool_calls:
            calls += 1
            call = reply.tool_calls[0]
            expression = json.loads(call.function.arguments).get("expression", "")
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": calculate(str(expression))})
            continue
        text = reply.content or ""
        components = REWARD.components(text, task)
        found = _ANSWER.findall(text)
        return AgentResult(reward=REWARD.total(components), success=components["correct"] > 0,
                           answer=found[-1].strip() if found else None,
                           info={"calculator_calls": calls})
    return AgentResult(reward=0.0, success=False, truncated=True,
                       info={"calculator_calls": calls})
