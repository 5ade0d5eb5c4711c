"""Real clients against the real gateway (uvicorn on a free port): the `openai` SDK (chat,
tools, streaming), the OpenAI Agents SDK (an agent with a function tool) and LangGraph
(`ChatOpenAI` with a bound tool in a tool loop). Each completes a multi-turn tool-using
episode, and its trace becomes one valid EpisodeBatch row whose tokens are the prompt
and observation segments rendered once plus exactly the sampled tokens.

The tool-calling turns come from a scripted policy (a random tiny model does not emit
tool calls); `test_tiny_model_tokens_are_the_samplers` runs the real jitted sampler."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import openai
import pytest

from agentic_rl.rollout import collate
from tests.agents.conftest import ADD_TOOL


def one_row(service, rollout_id):
    records, scope = service.finish_rollout(rollout_id)
    assert scope.prefix_breaks == 0
    batch = collate(records, length_bucket=16)  # validates the batch
    return records, batch


def check_sampled_tokens(record, fmt, completions):
    """The loss-masked tokens are exactly the sampled ids of each completion, in order."""
    sampled = [t for t, m in zip(record.tokens, record.loss_mask) if m]
    assert sampled == [t for ids in completions for t in ids]
    lps = [lp for lp, m in zip(record.logprobs, record.loss_mask) if m]
    assert lps == [-0.5] * len(sampled)
    assert len(record.turn_ends) == len(completions)


def test_openai_sdk_chat_with_tools_and_streaming(scripted, gateway, fmt):
    service, _ = scripted
    service.start_rollout("r1", group_id=3)
    client = openai.OpenAI(base_url=f"{gateway.url}/rollouts/r1/v1", api_key="k", max_retries=0)
    messages = [{"role": "system", "content": "You add."},
                {"role": "user", "content": "What is 2+3?"}]
    first = client.chat.completions.create(model="policy", messages=messages, tools=[ADD_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "5"})
    stream = client.chat.completions.create(model="policy", messages=messages, tools=[ADD_TOOL],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The sum is 5."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len("The sum is 5.") + 1  # + <|im_end|>
    assert len([c for c in chunks if c.choices]) > 3  # one chunk per token, not one blob
    records, batch = one_row(service, "r1")
    (rec,) = records
    first_ids = first.choices[0].model_extra["token_ids"]  # the sampler's ids, for debugging
    second_ids = next(c.model_extra["token_ids"] for c in chunks if "token_ids" in c.model_extra)
    check_sampled_tokens(rec, fmt, [first_ids, second_ids])
    # prompt and observation: each rendered once, as the environment loop would
    sysmsg = {"role": "system", "content": "You add.\n\n" + _tool_prompt()}
    prompt = fmt.encode_prompt([sysmsg, messages[1]])
    observation = fmt.encode_observation([{"role": "tool", "content": "5"}])
    eot = [fmt.end_of_turn_id]  # closes the stop-string turn, not sampled
    assert rec.tokens == prompt + first_ids + eot + observation + second_ids
    assert batch.group_id.tolist() == [3]
    meta = rec.metadata
    assert meta["num_turns"] == 2 and meta["tool_calls"][0]["name"] == "add"
    # the first call's messages are the prompt, the tool result the program added the
    # environment, our two completions the policy
    assert meta["origins"] == ["prompt", "prompt", "policy", "environment", "policy"]
    assert [m["role"] for m in meta["messages"]] == ["system", "user", "assistant", "tool",
                                                     "assistant"]


def _tool_prompt():
    from agentic_rl.envs.tools.base import schema_system_prompt

    return schema_system_prompt([ADD_TOOL])


def test_openai_sdk_streams_tool_calls(scripted, gateway):
    service, _ = scripted
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0)
    stream = client.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": "2+3?"}], tools=[ADD_TOOL],
        stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or ():
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "add" and json.loads(calls[0]["arguments"]) == {"a": 2, "b": 3}


def test_openai_agents_sdk_agent_with_a_function_tool(scripted, gateway, fmt):
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    seen = []

    @function_tool
    def add(a: float, b: float) -> str:
        """Adds two numbers."""
        seen.append((a, b))
        return str(int(a + b))

    service, _ = scripted
    service.start_rollout("agents-1")
    model = OpenAIChatCompletionsModel(model="policy", openai_client=openai.AsyncOpenAI(
        base_url=f"{gateway.url}/rollouts/agents-1/v1", api_key="k", max_retries=0))
    agent = Agent(name="calc", instructions="You add numbers.", tools=[add], model=model)
    result = asyncio.run(Runner.run(agent, "What is 2+3?"))
    assert result.final_output == "The sum is 5."
    assert seen == [(2, 3)]
    records, batch = one_row(service, "agents-1")
    assert records[0].metadata["num_turns"] == 2 and batch.loss_mask.sum() > 0
    assert records[0].metadata["agent"] == "policy"


def test_langgraph_tool_loop_with_chat_openai(scripted, gateway):
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def add(a: float, b: float) -> str:
        """Adds two numbers."""
        return str(int(a + b))

    service, _ = scripted
    service.start_rollout("lg-1")
    llm = ChatOpenAI(model="policy", base_url=f"{gateway.url}/rollouts/lg-1/v1", api_key="k",
                     max_retries=0).bind_tools([add])
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [llm.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([add]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    out = graph.compile().invoke({"messages": [HumanMessage("What is 2+3?")]})
    assert out["messages"][-1].content == "The sum is 5."
    assert out["messages"][1].tool_calls[0]["name"] == "add"
    records, _ = one_row(service, "lg-1")
    assert records[0].metadata["num_turns"] == 2


@pytest.mark.slow
def test_tiny_model_tokens_are_the_samplers(fmt):
    """The jitted KV-cache sampler behind the gateway: a three-call conversation through
    the openai SDK; the row's sampled tokens and log-probs are the ids and log-probs the
    responses reported, the prompt/observations are rendered once, and the sampler
    continued its cache (no re-prefill) across calls."""
    from flax import nnx

    from agentic_rl.agents import Gateway
    from agentic_rl.models.transformer import Transformer
    from agentic_rl.rollout.sampler_policy import SamplerPolicy
    from agentic_rl.train.builders import tiny_model_config
    from agentic_rl.train.config import default_config
    from tests.agents.conftest import make_service

    cfg = default_config()
    model = Transformer(tiny_model_config(cfg), rngs=nnx.Rngs(0))
    policy = SamplerPolicy(model, fmt.tok, max_rows=4, capacity=1024)
    service = make_service(policy, fmt, max_new_tokens=12, max_context_tokens=1024)
    service.start_rollout("t1")
    try:
        with Gateway(service) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/rollouts/t1/v1", api_key="k",
                                   max_retries=0)
            messages = [{"role": "user", "content": "Hi"}]
            ids, lps = [], []
            for turn in range(3):
                r = client.chat.completions.create(model="policy", messages=messages,
                                                   logprobs=True, temperature=1.0)
                ch = r.choices[0]
                ids.append(ch.model_extra["token_ids"])
                lps.append([t.logprob for t in ch.logprobs.content])
                messages += [{"role": "assistant", "content": ch.message.content},
                             {"role": "user", "content": f"again {turn}"}]
        records, _ = service.finish_rollout("t1")
    finally:
        service.engine.close()
    (rec,) = records
    mask = np.asarray(rec.loss_mask)
    assert np.asarray(rec.tokens)[mask].tolist() == [t for x in ids for t in x]
    np.testing.assert_allclose(np.asarray(rec.logprobs)[mask], [v for x in lps for v in x],
                               rtol=1e-6)
    assert policy.stats["reprefills"] == 0
    assert rec.metadata["num_turns"] == 3
