"""Guess-the-number: a multi-turn game with partial observability and dense rewards.

The agent must find a secret integer in [low, high]. After each guess it is told only
"higher" or "lower" relative to *that* guess; the feasible interval is never restated,
so playing well (binary search, never repeating an excluded number) requires
remembering every earlier answer: the observation alone is not a Markov state.

Rewards per turn (dense): +`win_reward` for the secret; otherwise
`info_weight` x (fraction of the initial range eliminated by this guess), or
`inconsistent_penalty` for a guess outside the interval already known to hold the
secret, or for a reply with no integer. Episodes end on a win or after `max_guesses`.
Registers the `guess_number` suite.

Imports: stdlib and agentic_rl.envs (base, suite, tasks, tools.base) only; never jax.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import partial

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.base import Tool

_GUESS_TAG_RE = re.compile(r"<guess>\s*(-?\d+)\s*</guess>")
_INT_RE = re.compile(r"-?\d+")

GUESS_INSTRUCTIONS = (
    "Let's play a game. I am thinking of an integer between {low} and {high} (inclusive). "
    "Each turn, guess it by replying with <guess>N</guess>. I will only tell you whether "
    "the secret is higher or lower than your last guess. Find it in as few turns as possible."
)
# Feedback templates ({guess} is filled in). The two default sentences are anagrams of each
# other ("too low ... higher" / "too high ... lower"): only word order tells them apart.
TOO_LOW_FEEDBACK = "{guess} is too low. The number is higher."
TOO_HIGH_FEEDBACK = "{guess} is too high. The number is lower."


def extract_guess(text: str) -> int | None:
    """The guess in a reply: the last `<guess>N</guess>`, else the last integer, else None."""
    tagged = _GUESS_TAG_RE.findall(text)
    if tagged:
        return int(tagged[-1])
    numbers = _INT_RE.findall(text)
    if not numbers or len(numbers[-1]) > 18:
        return None
    return int(numbers[-1])


def generate_guess_tasks(
    n: int,
    seed: int,
    *,
    low: int = 1,
    high: int = 100,
    id_prefix: str = "guess",
    instructions: str = GUESS_INSTRUCTIONS,
) -> list[Task]:
    """`n` games with secrets drawn uniformly from [low, high], reproducible from `seed`.

    `instructions` is the prompt template ({low} and {high} are filled in). A shorter one
    matters for character-level test models, whose episode length is mostly the prompt.
    """
    if n < 0 or high <= low:
        raise ValueError(f"need n >= 0 and high > low, got n={n}, low={low}, high={high}")
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        secret = rng.randint(low, high)
        tasks.append(
            Task(
                id=f"{id_prefix}-{seed}-{i}",
                prompt=instructions.format(low=low, high=high),
                answer=str(secret),
                data={"low": low, "high": high, "secret": secret},
            )
        )
    return tasks


@dataclass
class GuessNumberEnv:
    """One game per instance (see `Env`); a task's `data` gives low, high and secret."""

    max_guesses: int = 10
    win_reward: float = 1.0
    info_weight: float = 0.5
    inconsistent_penalty: float = -0.1
    too_low_feedback: str = TOO_LOW_FEEDBACK
    too_high_feedback: str = TOO_HIGH_FEEDBACK
    tools: tuple[Tool, ...] = ()
    _state: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        # a bad template would otherwise fail mid-episode, inside a rollout
        for name in ("too_low_feedback", "too_high_feedback"):
            template = getattr(self, name)
            try:
                template.format(guess=0)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"{name}={template!r} is not a valid template: only "
                                 f"{{guess}} can be filled in ({e!r})") from None
        if self.too_low_feedback.format(guess=0) == self.too_high_feedback.format(guess=0):
            raise ValueError("too_low_feedback and too_high_feedback must differ, or the "
                             "feedback carries no information")

    def reset(self, task: Task, seed: int) -> list[Message]:
        low, high = int(task.data["low"]), int(task.data["high"])
        secret = task.data.get("secret")
        if secret is None:  # a task may leave the secret to the episode seed
            secret = random.Random(seed).randint(low, high)
        if not low <= int(secret) <= high:
            raise ValueError(f"task {task.id!r}: secret {secret} is outside [{low}, {high}]")
        self._state = {
            "range": high - low + 1,
            "lo": low,
            "hi": high,
            "secret": int(secret),
            "guesses": 0,
            "done": False,
        }
        return [message("user", task.prompt)]

    def step(self, action: Action) -> StepResult:
        s = self._state
        if not s or s["done"]:
            raise RuntimeError("step() called before reset() or after the episode ended")
        s["guesses"] += 1
        out_of_guesses = s["guesses"] >= self.max_guesses
        guess = extract_guess(action.text)
        if guess is None:
            return self._result(
                "I could not find a guess. Reply with <guess>N</guess>.",
                self.inconsistent_penalty,
                out_of_guesses,
                valid=False,
            )
        if guess == s["secret"]:
            s["done"] = True
            return self._result(
                f"Correct! The number was {guess}.", self.win_reward, True, success=True
            )
        consistent = s["lo"] <= guess <= s["hi"]
        before = s["hi"] - s["lo"] + 1
        if guess < s["secret"]:
            s["lo"] = max(s["lo"], guess + 1)
            feedback = self.too_low_feedback.format(guess=guess)
        else:
            s["hi"] = min(s["hi"], guess - 1)
            feedback = self.too_high_feedback.format(guess=guess)
        gained = (before - (s["hi"] - s["lo"] + 1)) / s["range"]
        reward = self.info_weight * gained if consistent else self.inconsistent_penalty
        if out_of_guesses:
            feedback += f" Out of guesses: the number was {s['secret']}."
        return self._result(feedback, reward, out_of_guesses, consistent=consistent)

    def _result(
        self,
        text: str,
        reward: float,
        done: bool,
        *,
        success: bool = False,
        valid: bool = True,
        consistent: bool = True,
    ) -> StepResult:
        self._state["done"] = done
        info = {"valid_guess": valid, "consistent": consistent and valid}
        if done:
            info["success"] = success
        return StepResult([message("user", text)], reward, done, info)


@ENVS.register("guess_number")
def guess_number_suite(
    *,
    low: int = 1,
    high: int = 100,
    num_train: int = 1000,
    num_eval: int = 100,
    seed: int = 0,
    max_guesses: int = 10,
    win_reward: float = 1.0,
    info_weight: float = 0.5,
    inconsistent_penalty: float = -0.1,
    gamma: float = 0.95,
    instructions: str = GUESS_INSTRUCTIONS,
    too_low_feedback: str = TOO_LOW_FEEDBACK,
    too_high_feedback: str = TOO_HIGH_FEEDBACK,
) -> EnvSuite:
    """Guess-the-number with higher/lower feedback (multi-turn, memory needed, dense reward).

    `instructions`: the prompt template ({low}, {high}); see `generate_guess_tasks`.
    `too_low_feedback` / `too_high_feedback`: the reply to a wrong guess ({guess})."""
    tasks = TaskSet(
        {
            "train": generate_guess_tasks(
                num_train,
                seed,
                low=low,
                high=high,
                id_prefix="guess-train",
                instructions=instructions,
            ),
            "eval": generate_guess_tasks(
                num_eval,
                seed + 1,
                low=low,
                high=high,
                id_prefix="guess-eval",
                instructions=instructions,
            ),
        }
    )
    make = partial(
        GuessNumberEnv,
        max_guesses=max_guesses,
        win_reward=win_reward,
        info_weight=info_weight,
        inconsistent_penalty=inconsistent_penalty,
        too_low_feedback=too_low_feedback,
        too_high_feedback=too_high_feedback,
    )
    return EnvSuite("guess_number", make, tasks, gamma)
