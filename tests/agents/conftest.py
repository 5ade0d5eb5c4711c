"""Agent-program fixtures: a chat format on the character tokenizer, a scripted policy
that calls tools, and a chat service with its real HTTP gateway (uvicorn on a free port)."""

from __future__ import annotations

import json

import pytest

from agentic_rl.agents import BatchingEngine, ChatService, Gateway, ServiceConfig
from agentic_rl.rollout import CharTokenizer, ScriptedPolicy, make_chat_format
from tests.train.conftest import compile_cache  # noqa: F401 - the trainer tests' XLA cache

ADD_TOOL = {"type": "function", "function": {
    "name": "add", "description": "Adds two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                    "b": {"type": "number"}},
                   "required": ["a", "b"]}}}


def tool_script(request, history: str) -> str:
    """Turn 0 calls `add(2, 3)`; later turns answer with the last tool result."""
    if request.turn == 0:
        return '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    results = history.split("<tool_response>\n")
    last = results[-1].split("\n</tool_response>")[0] if len(results) > 1 else "?"
    return f"The sum is {last}."


@pytest.fixture
def fmt():
    return make_chat_format("chatml", CharTokenizer())


def make_service(policy, fmt, **config):
    engine = BatchingEngine(policy, window_s=0.002)
    return ChatService(engine, fmt, ServiceConfig(**config))


@pytest.fixture
def scripted(fmt):
    """(service, policy) over a ScriptedPolicy running `tool_script`."""
    policy = ScriptedPolicy(fmt.tok, tool_script, logprob=-0.5)
    service = make_service(policy, fmt, max_new_tokens=200, max_context_tokens=4096)
    yield service, policy
    service.engine.close()


@pytest.fixture
def gateway(scripted):
    service, _ = scripted
    with Gateway(service) as gw:
        yield gw


def add_tool_result(call) -> str:
    args = json.loads(call.function.arguments if hasattr(call, "function") else call["args"])
    return str(args["a"] + args["b"])
