"""The trainer's LLM judge (`judge.enabled`): builds the judge from `cfg.judge` and applies
it to a step's rollout batch, between the rollout and the advantages.

Judge model sources (see `agentic_rl.agents.judge` for the judge itself):
- "policy": the policy being trained, frozen at the step. Its own `SamplerPolicy` over the
  trainer's current weights (synced before each judging), greedy, with a KV cache of
  `judge.max_context_tokens` tokens and a row per group: the rollout sampler's capacity
  is sized for episodes (640 tokens in the main job), too small for a group of them, and
  a sampler of its own never shares rows with a rollout.
- a model name, HF directory or .gguf: loaded once (`load_policy`), sampled the same way.
- an http(s):// base URL: any OpenAI-compatible server (`OpenAIChat`).
Local sources run behind a `BatchingEngine` and a `ChatService`, so the groups' judge
calls are batched into one sampler call.

Imports: agentic_rl.agents, agentic_rl.rollout, agentic_rl.models (a separate judge
model) and the train modules.
"""

from __future__ import annotations

from typing import Any

from agentic_rl.agents import BatchingEngine, ChatService
from agentic_rl.agents.judge import (
    Judge,
    JudgedBatch,
    OpenAIChat,
    ServiceChat,
    judge_batch,
    judge_service_config,
)
from agentic_rl.rollout import make_chat_format
from agentic_rl.rollout.sampler_policy import SamplerPolicy
from agentic_rl.sampling import SamplingParams
from agentic_rl.train.config import judge_settings


def local_chat(lm, tokenizer, chat_format, *, rows: int, seed: int, max_new_tokens: int,
               max_context_tokens: int) -> tuple[ServiceChat, BatchingEngine, SamplerPolicy]:
    """A greedy chat function (`messages -> text`) over a local model: its own sampler
    (`rows` rows of `max_context_tokens`) behind a `BatchingEngine`, so concurrent calls
    share one sampler call. Returns (chat, engine: close it when done, sampler)."""
    sampler = SamplerPolicy(lm, tokenizer, max_rows=rows,
                            params=SamplingParams(temperature=0.0, greedy=True), seed=seed,
                            capacity=max_context_tokens)
    engine = BatchingEngine(sampler, window_s=0.05)
    service = ChatService(engine, chat_format, judge_service_config(max_new_tokens,
                                                                    max_context_tokens))
    return ServiceChat(service, max_tokens=max_new_tokens), engine, sampler


class TrainJudge:
    """The judge of a run: `apply(batch, model)` -> (batch with judged rewards, metrics)."""

    def __init__(self, cfg, policy_bundle, model=None):
        j = cfg.judge
        self.cfg, self.combine = cfg, judge_settings(cfg)[1]
        config = judge_settings(cfg)[0]
        self.engine = self.sampler = None
        self.follows_policy = j.source == "policy"
        if j.source.startswith(("http://", "https://")):
            chat = OpenAIChat(j.source, model=j.model, max_tokens=j.max_new_tokens)
        else:
            if self.follows_policy:
                lm, tok, fmt = model, policy_bundle.tokenizer, policy_bundle.chat_format
            else:
                from agentic_rl.models import load_policy

                loaded = load_policy(j.source, dtype=cfg.model.dtype)
                lm, tok = loaded.model.lm, loaded.tokenizer
                fmt = make_chat_format(j.chat_format, tok)
            chat, self.engine, self.sampler = local_chat(
                lm, tok, fmt, rows=max(1, cfg.rollout.tasks_per_step), seed=cfg.seed,
                max_new_tokens=j.max_new_tokens, max_context_tokens=j.max_context_tokens)
        self.judge = Judge(chat, config)

    def apply(self, batch, model=None) -> tuple[Any, dict[str, float], JudgedBatch]:
        """Judges the batch's groups (with `model`, the current policy's weights, for the
        "policy" source) and returns the batch with its turn rewards combined."""
        if self.follows_policy and model is not None:
            def sync(sampler: SamplerPolicy) -> None:
                sampler.release(list(sampler.rows))  # a judge call that was cut short
                sampler.update_model(model)

            self.engine.call(sync)
        judged = judge_batch(self.judge, list(batch.metadata), batch.turn_rewards,
                             batch.turn_end, self.combine)
        return batch.replace(turn_rewards=judged.turn_rewards), judged.metrics, judged

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
