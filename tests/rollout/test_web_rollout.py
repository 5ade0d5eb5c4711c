"""The web environment inside the real rollout loop: a scripted policy replays the scripted
solver's turns, every episode succeeds, and every episode's HTTP server is stopped
(the loop calls `close()` on its worker pool, soon after), so no server thread outlives
the rollout."""

from __future__ import annotations

import threading
import time

from agentic_rl.agents import run_episodes
from agentic_rl.envs import make_env_suite, solve_web_task
from agentic_rl.rollout import CharTokenizer, RolloutConfig, ScriptedPolicy
from agentic_rl.rollout.chat_format import make_chat_format


class _Recorder:
    """Passes steps through to an env and records the assistant texts."""

    def __init__(self, env):
        self.env, self.tools, self.texts = env, env.tools, []

    def step(self, action):
        self.texts.append(action.text)
        return self.env.step(action)


def test_web_episodes_through_the_rollout_loop():
    suite = make_env_suite("web_search_extract", num_train=3, num_eval=6)
    tasks = suite.tasks.split("eval")
    scripts = []
    with suite.make_env() as env:
        for task in tasks:
            env.reset(task, seed=0)
            recorder = _Recorder(env)
            assert solve_web_task(recorder, task.prompt).result.info["success"]
            scripts.append(recorder.texts)

    def replay(request, history):
        group = int(request.episode_id[1:].split("s")[0])
        return scripts[group][request.turn]

    before = {t.name for t in threading.enumerate() if t.name.startswith("web-server-")}
    tok = CharTokenizer()
    res = run_episodes(ScriptedPolicy(tok, replay), make_chat_format("smollm2", tok),
                       suite.make_env, tasks,
                       config=RolloutConfig(max_turns=10, max_episode_tokens=60_000))  # fmt: skip
    assert not res.errors and res.metrics["success_rate"] == 1.0
    hops = [t.data["hops"] for t in tasks]
    assert sorted(hops) == [1, 1, 2, 2, 3, 3]
    for b, task in enumerate(tasks):
        roles = [m["role"] for m in res.batch.metadata[b]["messages"]]
        assert roles.count("tool") == len(scripts[b]) - 1 >= task.data["hops"] + 1
    # the loop closes finished envs on its worker pool, asynchronously: wait for them
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = {t.name for t in threading.enumerate() if t.name.startswith("web-server-")}
        if after == before:
            break
        time.sleep(0.02)
    assert after == before
