"""Real SmolLM2-135M-Instruct rollouts on the calculator environment, and the evaluate CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.agents import run_episodes
from agentic_rl.envs import make_env_suite
from agentic_rl.models import token_logprobs
from agentic_rl.rollout import RolloutConfig, make_chat_format
from agentic_rl.rollout.batch import validate_episode_batch
from agentic_rl.rollout.sampler_policy import SamplerPolicy
from agentic_rl.sampling import SamplingParams
from tests.conftest import REPO

pytestmark = pytest.mark.slow

GSM8K_STYLE = [
    {"question": "Tom has 3 boxes with 12 pencils each. He gives away 5 pencils. How many "
                 "pencils does he have left?", "answer": "3*12=36\n36-5=31\n#### 31"},
    {"question": "A shirt costs $20 and is on sale for 25% off. What is the sale price?",
     "answer": "20*0.25=5\n20-5=15\n#### 15"},
    {"question": "Sara reads 14 pages a day for 6 days. How many pages does she read?",
     "answer": "14*6=84\n#### 84"},
]


def test_real_rollout_on_calculator_gives_valid_batch(smollm2_policy):
    tok = smollm2_policy.tokenizer
    policy = SamplerPolicy(smollm2_policy.model.lm, tok, max_rows=8,
                           params=SamplingParams(temperature=1.0), seed=0)
    suite = make_env_suite("calculator", num_eval=2, seed=0)
    res = run_episodes(policy, make_chat_format("smollm2", tok), suite.make_env,
                       suite.tasks.split("eval"), group_size=2,
                       config=RolloutConfig(max_turns=2, max_new_tokens=48), seed=1)
    b = res.batch
    validate_episode_batch(b)
    assert b.tokens.shape[0] == 4 and policy.stats["reprefills"] == 0
    assert list(np.asarray(b.group_id)) == [0, 0, 1, 1]
    mask = np.asarray(b.loss_mask, bool)
    gd, st = nnx.split(smollm2_policy.model.lm)
    lp = np.asarray(jax.jit(lambda s, t, m: token_logprobs(nnx.merge(gd, s), t, m)[0])(
        st, jnp.asarray(b.tokens), jnp.asarray(b.attention_mask)))
    # the sampler's log-probs are what a full forward of the same weights gives
    np.testing.assert_allclose(np.asarray(b.sample_logprobs)[mask], lp[mask], atol=2e-3)
    for row, meta in enumerate(b.metadata):
        assert meta["messages"][0]["role"] == "system"
        n = int(np.asarray(b.attention_mask)[row].sum())
        assert tok.decode(np.asarray(b.tokens)[row, :n].tolist()).startswith("<|im_start|>system")


def test_evaluate_cli_on_gsm8k_format_file(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in GSM8K_STYLE))
    proc = subprocess.run(
        [sys.executable, "-m", "agentic_rl.evaluate", "--env", "calculator", "--tasks",
         str(tasks), "--model", "smollm2-135m-instruct", "--num-episodes", "3",
         "--max-turns", "2", "--max-new-tokens", "48", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["num_episodes"] == 3 and summary["num_errors"] == 0
    for key in ("success_rate", "tool_call_validity_rate", "mean_turns"):
        assert key in summary
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_turns"] >= 1


def test_evaluate_cli_rejects_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "agentic_rl.evaluate", "--env", "nope", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2 and "valid:" in proc.stderr
