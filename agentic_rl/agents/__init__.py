"""Agent programs and the OpenAI-compatible gateway.

- `runtime`: agent programs (`agent(task, llm)`), `AgentLLM`, `run_agents` -> EpisodeBatch;
- `env_agent`: our environments as agent programs (one rollout runtime for both);
- `env_rollout`: `run_episodes` / `evaluate_policy`, our environments' rollouts and
  evaluation over `run_agents` + `EnvAgent`;
- `system`: multi-agent systems (`Agent`, `AgentSystem`, pipeline and critique loop);
- `teams`: ready-made systems on our tasks (`SqlTeam`: a SQL writer and a checker;
  `GuessTeam`: an opener and a closer on guess-the-number);
- `service`: the chat service (token-exact chains of calls, rewards, rows);
- `engine`: dynamic batching of concurrent requests into one sampler call;
- `gateway`: the HTTP server (Starlette + uvicorn) in front of the service;
- `openai_format`: the wire format (request checks, responses, streaming chunks).

Imports: the agents modules only (their public names).
"""

from agentic_rl.agents.engine import BatchingEngine
from agentic_rl.agents.env_agent import EnvAgent
from agentic_rl.agents.env_rollout import evaluate_policy, run_episodes
from agentic_rl.agents.gateway import Gateway, build_app
from agentic_rl.agents.openai_format import APIError
from agentic_rl.agents.runtime import (
    AGENTS,
    AgentLLM,
    AgentResult,
    EpisodeFailure,
    load_agent,
    run_agents,
)
from agentic_rl.agents.service import ChatService, ServiceConfig
from agentic_rl.agents.system import Agent, AgentContext, AgentSystem, critique_loop, pipeline
from agentic_rl.agents.teams import GuessTeam, SqlTeam

__all__ = [
    "AGENTS",
    "Agent",
    "AgentContext",
    "AgentSystem",
    "SqlTeam",
    "GuessTeam",
    "critique_loop",
    "pipeline",
    "APIError",
    "AgentLLM",
    "AgentResult",
    "BatchingEngine",
    "ChatService",
    "EnvAgent",
    "EpisodeFailure",
    "Gateway",
    "ServiceConfig",
    "build_app",
    "evaluate_policy",
    "load_agent",
    "run_agents",
    "run_episodes",
]
