"""Scripted players and a configurable toy environment shared by the rollout tests."""

from __future__ import annotations

import re
import time

from agentic_rl.envs import Action, StepResult, Task, message

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>'


def calculator_solver(request, history: str) -> str:
    """Calls the calculator on the question's expression, then answers with its result."""
    if request.turn == 0:
        expr = re.findall(r"What is (.*)\?", history)[-1]
        return "Let me compute. " + CALL % expr
    result = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", history)[-1]
    return f"<answer>{result}</answer>"


def binary_search_player(request, history: str) -> str:
    """Plays guess-the-number optimally by remembering every higher/lower answer."""
    lo, hi = map(int, re.search(r"between (-?\d+) and (-?\d+)", history).groups())
    for guess, direction in re.findall(r"(-?\d+) is too (low|high)", history):
        if direction == "low":
            lo = max(lo, int(guess) + 1)
        else:
            hi = min(hi, int(guess) - 1)
    return f"<guess>{(lo + hi) // 2}</guess>"


def memoryless_player(request, history: str) -> str:
    """Reacts only to the last feedback, forgetting earlier bounds."""
    last = re.findall(r"(-?\d+) is too (low|high)", history)
    if not last:
        return "<guess>50</guess>"
    guess, direction = int(last[-1][0]), last[-1][1]
    return f"<guess>{(guess + 100) // 2 if direction == 'low' else (guess + 1) // 2}</guess>"


class ToyEnv:
    """A tool-less env whose behaviour is set by task.data:

    turns (episode length, default 2), reward per turn (default 0.5; the last turn gets 1),
    fail ('reset' or 'step': raise there), sleep (seconds per step), bad ('reward' -> NaN,
    'obs' -> empty observation, 'type' -> not a StepResult).
    """

    tools = ()
    closed: list[str] = []  # task ids of closed instances, across instances

    def close(self):
        ToyEnv.closed.append(self.task.id)

    def reset(self, task: Task, seed: int):
        self.task, self.turn, self.seed = task, 0, seed
        if task.data.get("fail") == "reset":
            raise RuntimeError("reset exploded")
        return [message("system", "toy"), message("user", task.prompt)]

    def step(self, action: Action):
        d = self.task.data
        self.turn += 1
        time.sleep(d.get("sleep", 0.0))
        if d.get("fail") == "step":
            raise RuntimeError(f"step exploded on {self.task.id}")
        bad = d.get("bad")
        if bad == "type":
            return {"reward": 1}
        if bad == "reward":
            return StepResult([message("user", "x")], float("nan"), False)
        if bad == "obs":
            return StepResult([], 0.0, False)
        done = self.turn >= d.get("turns", 2)
        reward = 1.0 if done else d.get("reward", 0.5)
        obs = [message("user", f"obs {self.turn} for {self.task.id}")]
        return StepResult(obs, reward, done, {"success": done})


def toy_task(i: int, **data) -> Task:
    return Task(id=f"toy-{i}", prompt=f"task {i}", data=data)
