"""Signal walk: a 30+ turn corridor walk with one-character actions, learnable by a char model.

The agent walks a corridor of `length` cells (30 by default). Each turn it replies with
one character, `a` or `b`; at every cell one of the two letters moves it forward, shown
by the cell's *sign*. After each turn the observation shows the sign of the cell the
agent now stands on (`sign_text`, "{sign}" by default: a single character, because the
tiny test models attend poorly over long contexts). A correct letter moves one cell
forward and earns `1 / length` (dense reward); a wrong one stays (reward 0); any other
reply is answered by `invalid_text` and costs the turn (reward 0). Reaching the end
earns `success_reward` and ends the episode; after `max_turns` turns (default
`length + 10`) it is truncated (`info["success"] = False`, `info["truncated"] = True`).
The total return is therefore at most 1 + success_reward.

Partial observability (`sign_every = k`): the sign is shown only at cells 0, k, 2k, ...
(elsewhere the observation is `blank_text`), and it holds until the next sign, so with
k > 1 the agent must remember the last sign it saw. With k = 1 the latest observation is
a Markov state (the task is long, not hard to remember), which makes it the right first
target for a tiny model and for comparing how context strategies cost in tokens and time.

Baselines: the scripted solver (`scripted_solver`, which reads only the observations)
succeeds in exactly `length` turns; a uniformly random a/b policy succeeds with
probability P(Binomial(max_turns, 1/2) >= length) (`random_success_probability`: 0.0011
at length 30, max_turns 40). Tasks are data: each task's `data["signs"]` holds its signs
(one letter per cell), drawn from a seeded RNG; train and eval use different seeds, and
eval tasks equal to a train task are skipped. Registers `signal_walk`.

Imports: stdlib and agentic_rl.envs (base, suite, tasks, tools.base) only; never jax.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.base import Tool

LETTERS = ("a", "b")
INSTRUCTIONS = "Walk: reply a or b."
SIGN_TEXT = "{sign}"
BLANK_TEXT = "-"
INVALID_TEXT = "? {obs}"


def random_success_probability(length: int, max_turns: int) -> float:
    """Success probability of a uniformly random a/b policy: P(Binomial(max_turns, 1/2) >=
    length) (each turn moves forward with probability 1/2, whatever the sign)."""
    return sum(math.comb(max_turns, k) for k in range(length, max_turns + 1)) / 2 ** max_turns


def draw_signs(rng: random.Random, length: int, sign_every: int) -> str:
    """One letter per cell; a new sign every `sign_every` cells, held until the next."""
    blocks = [rng.choice(LETTERS) for _ in range(-(-length // sign_every))]
    return "".join(blocks[i // sign_every] for i in range(length))


def generate_signal_walk_tasks(
    n: int,
    seed: int,
    *,
    length: int = 30,
    sign_every: int = 1,
    instructions: str = INSTRUCTIONS,
    sign_text: str = SIGN_TEXT,
    id_prefix: str = "walk",
    exclude: frozenset[str] = frozenset(),
) -> list[Task]:
    """`n` corridors reproducible from `seed`; sign strings in `exclude` are skipped (so an
    eval split can be kept disjoint from the train split). The prompt is `instructions`
    followed by the first cell's sign."""
    if n < 0 or length < 1 or sign_every < 1:
        raise ValueError(f"need n >= 0, length >= 1, sign_every >= 1; got {n}, {length}, "
                         f"{sign_every}")
    distinct = 2 ** -(-length // sign_every)
    if n + len(exclude) > distinct:
        raise ValueError(f"only {distinct} distinct corridors exist at length={length}, "
                         f"sign_every={sign_every}; asked for {n} (+{len(exclude)} excluded)")
    rng = random.Random(f"signal_walk-{seed}")
    tasks, seen = [], set(exclude)
    while len(tasks) < n:
        signs = draw_signs(rng, length, sign_every)
        if signs in seen:
            continue
        seen.add(signs)
        first = sign_text.format(sign=signs[0])
        tasks.append(Task(id=f"{id_prefix}-{seed}-{len(tasks)}",
                          prompt=f"{instructions} {first}" if instructions else first,
                          answer=None, data={"signs": signs, "sign_every": sign_every}))
    return tasks


@dataclass
class SignalWalkEnv:
    """One corridor per instance (see `Env`); a task's `data` gives its signs."""

    max_turns: int = 40
    success_reward: float = 1.0
    sign_text: str = SIGN_TEXT
    blank_text: str = BLANK_TEXT
    invalid_text: str = INVALID_TEXT
    tools: tuple[Tool, ...] = ()
    _state: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        try:
            texts = {self.sign_text.format(sign=s) for s in LETTERS}
            self.invalid_text.format(obs="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"sign_text takes {{sign}} and invalid_text {{obs}} ({e!r})") from None
        if len(texts) < 2 or self.blank_text in texts:
            raise ValueError("the two signs and blank_text must all differ, or the "
                             "observation carries no information")

    def reset(self, task: Task, seed: int) -> list[Message]:
        signs = str(task.data["signs"])
        if not signs or set(signs) - set(LETTERS):
            raise ValueError(f"task {task.id!r}: signs must be a non-empty string of a/b")
        self._state = {"signs": signs, "every": int(task.data.get("sign_every", 1)),
                       "pos": 0, "turn": 0, "done": False}
        return [message("user", task.prompt)]

    def _observation(self) -> str:
        s = self._state
        if s["pos"] % s["every"] == 0:
            return self.sign_text.format(sign=s["signs"][s["pos"]])
        return self.blank_text

    def step(self, action: Action) -> StepResult:
        s = self._state
        if not s or s["done"]:
            raise RuntimeError("step() called before reset() or after the episode ended")
        s["turn"] += 1
        length = len(s["signs"])
        reply = action.text.strip()
        valid = reply in LETTERS
        reward = 0.0
        if valid and reply == s["signs"][s["pos"]]:
            s["pos"] += 1
            reward = 1.0 / length
        info = {"valid_action": valid, "position": s["pos"]}
        if s["pos"] >= length:
            s["done"] = True
            info["success"] = True
            return StepResult([message("user", "end")], reward + self.success_reward, True, info)
        obs = self._observation()
        if not valid:
            obs = self.invalid_text.format(obs=obs)
        if s["turn"] >= self.max_turns:
            s["done"] = True
            info.update(success=False, truncated=True)
        return StepResult([message("user", obs)], reward, s["done"], info)


def scripted_solver() -> Callable[[Sequence[Message]], str]:
    """A fresh policy for one episode: call it with the messages the environment returned
    (reset's, then each step's observation); it returns the letter of the last sign seen
    (at the default texts: the last a/b character of the latest message showing one)."""
    last = {"sign": "a"}

    def policy(messages: Sequence[Message]) -> str:
        text = str(messages[-1].get("content", "")).strip() if messages else ""
        letters = [ch for ch in text.split(" ")[-1] if ch in LETTERS]
        if letters:
            last["sign"] = letters[-1]
        return last["sign"]

    return policy


@ENVS.register("signal_walk")
def signal_walk_suite(
    *,
    length: int = 30,
    max_turns: int | None = None,
    sign_every: int = 1,
    num_train: int = 1000,
    num_eval: int = 100,
    seed: int = 0,
    success_reward: float = 1.0,
    gamma: float = 1.0,
    instructions: str = INSTRUCTIONS,
    sign_text: str = SIGN_TEXT,
    blank_text: str = BLANK_TEXT,
    invalid_text: str = INVALID_TEXT,
) -> EnvSuite:
    """The signal walk (long horizon, one character per turn, dense reward; memory needed
    when `sign_every` > 1). `max_turns` defaults to `length + 10`."""
    max_turns = length + 10 if max_turns is None else max_turns
    if max_turns < length:
        raise ValueError(f"max_turns={max_turns} < length={length}: no episode can succeed")
    kw = {"length": length, "sign_every": sign_every, "instructions": instructions,
          "sign_text": sign_text}
    train = generate_signal_walk_tasks(num_train, seed, id_prefix="walk-train", **kw)
    evals = generate_signal_walk_tasks(num_eval, seed + 1, id_prefix="walk-eval",
                                       exclude=frozenset(t.data["signs"] for t in train), **kw)
    make = partial(SignalWalkEnv, max_turns=max_turns, success_reward=success_reward,
                   sign_text=sign_text, blank_text=blank_text, invalid_text=invalid_text)
    return EnvSuite("signal_walk", make, TaskSet({"train": train, "eval": evals}), gamma)
