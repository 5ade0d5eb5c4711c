"""A relative LLM judge: a group of trajectories for one task, shown to a local judge model
at once with a rubric, comes back as one score in [0, 1] per trajectory (the shape of
OpenPipe ART's RULER; this module's own code).

Why relative: a small judge is poor at absolute grades but better at ranking attempts it
sees side by side, and group-relative advantages (GRPO, RLOO) only use the ranking within
a group anyway.

What it does beyond RULER:
- Any local model judges. The judge talks to a *chat function* `messages -> text`:
  `ServiceChat` (the in-process `ChatService` over a `BatchingEngine`: the policy being
  trained, frozen at the step, or a separately loaded model, through the same batched
  sampler) or `OpenAIChat` (any OpenAI-compatible base URL, e.g. our gateway
  `python -m agentic_rl.serve`). Every judge call is greedy (temperature 0).
- Multi-agent histories. A trajectory is every row of one rollout (all agents, all rows of
  a rewritten-context episode); each message is rendered with the agent that wrote it
  and, where the service's call ids allow (agent programs), in the order the calls were
  made across agents.
- Never a crash. Whatever the judge writes is parsed defensively (`parse_scores`: JSON
  `{"scores": [{"id": 1, "score": 0.7, "why": ...}]}`, a bare list, an id->score map,
  code fences and surrounding prose tolerated, or `1: 0.7` lines); ids it missed are asked
  for once more with a stricter instruction, then get the neutral score, counted in
  `metrics` (`retries`, `malformed`, `neutral_scores`); a judge call that raises (a
  context overflow, a dead server) gives the whole group the neutral score and counts
  `errors`.
- Cached. Scores are keyed by a hash of (system prompt, rubric, prompt template, task,
  the group's rendered trajectories, the judge's `model_key`): the same inputs never
  trigger a second call and always get the same scores. With the "policy" source the
  policy changes between steps but the key does not say so: a repeated identical group
  gets the scores of the first time it was judged (the cache is per run, LRU-bounded).

Combination with verifiable rewards is `combine_rewards` (pure numpy): a weighted sum
`w_verifier * verifier + w_judge * judge`, or "tiebreak", where the judge only orders
trajectories whose verifier rewards are equal. `judge_batch` applies it to an
`EpisodeBatch` (the trainer calls it between the rollout and the advantages).

Imports: agentic_rl.rollout (batches), agentic_rl.sampling (sampling parameters) and
agentic_rl.agents; no jax arrays, no model (a model source is built by the trainer).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import re
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_SYSTEM = "You are a careful, impartial judge of AI assistant trajectories."

DEFAULT_RUBRIC = (
    "- An attempt that reaches a correct final answer scores higher than one that does not.\n"
    "- Among attempts that reach the goal, fewer wasted or invalid steps score higher.\n"
    "- An attempt that makes progress towards the goal scores higher than one that makes "
    "none.\n"
    "- Equally good attempts get equal scores. Scores are between 0 and 1.")

# Placeholders: {n} {task} {trajectories} {rubric} (str.replace, not str.format: the
# template shows JSON braces).
DEFAULT_PROMPT = (
    "Here are {n} attempts at the same task. Compare them and score each one.\n\n"
    "Task:\n{task}\n\n{trajectories}\n\nRubric:\n{rubric}\n\n"
    'Reply with JSON only, one entry per attempt (ids 1 to {n}):\n'
    '{"scores": [{"id": 1, "score": <a number from 0 to 1>, "why": "<one sentence>"}, ...]}')
# The format is shown with placeholders, not numbers: a judge that copies the example
# (the embedded 135M model does) must not have the copy read as scores.

STRICT_RETRY = (
    "Your reply could not be read, or it missed attempts {missing}. Reply with this JSON "
    "and nothing else, one entry for every id from 1 to {n}, each score a number between "
    '0 and 1: {"scores": [{"id": 1, "score": <number>}, {"id": 2, "score": <number>}]}')

PLACEHOLDERS = ("{n}", "{task}", "{trajectories}", "{rubric}")

ChatFn = Callable[[list[dict[str, str]]], str]


# ------------------------------------------------------------------ parsing


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*")
_ID_KEYS = ("id", "trajectory_id", "trajectory", "attempt", "index")
_SCORE_KEYS = ("score", "value", "rating")
_LINE = re.compile(r"(?:trajectory|attempt|id)?\s*#?\s*(\d{1,4})\s*[:=)\-]\s*"
                   r"(?:score\s*[:=]?\s*)?([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", re.IGNORECASE)
MAX_PARSE_CHARS = 20_000  # a judge's reply longer than this is cut before parsing
MAX_JSON_STARTS = 64  # brace/bracket positions tried as the start of a JSON value


def _number(x: Any) -> float | None:
    """A finite float from a number or a numeric string, clamped to [0, 1]; else None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, str):
        try:
            x = float(x.strip())
        except ValueError:
            return None
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return min(1.0, max(0.0, float(x)))


def _as_id(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str):
        m = re.fullmatch(r"\s*(?:trajectory|attempt|id)?[\s_#-]*(\d{1,6})\s*", x, re.IGNORECASE)
        return int(m.group(1)) if m else None
    return None


def _from_value(value: Any, n: int) -> dict[int, float]:
    """Scores from a decoded JSON value: {"scores": [...]}, a list of {"id", "score"}
    entries, a list of numbers (ids 1.. in order), or an {"1": 0.7} map."""
    out: dict[int, float] = {}

    def put(i: int | None, s: float | None) -> None:
        if i is not None and s is not None and 1 <= i <= n and i not in out:
            out[i] = s

    if isinstance(value, Mapping):
        for key in ("scores", "results", "ratings"):
            if key in value:
                return _from_value(value[key], n)
        if any(k in value for k in _SCORE_KEYS):  # a single entry
            return _from_value([value], n)
        for k, v in value.items():  # {"1": 0.7} or {"1": {"score": 0.7}}
            put(_as_id(k), _number(v.get("score") if isinstance(v, Mapping) else v))
        return out
    if isinstance(value, list):
        for pos, entry in enumerate(value, 1):
            if isinstance(entry, Mapping):
                i = next((_as_id(entry[k]) for k in _ID_KEYS if k in entry), pos)
                s = next((_number(entry[k]) for k in _SCORE_KEYS if k in entry), None)
                put(i, s)
            else:
                put(pos, _number(entry))
    return out


def parse_scores(text: Any, n: int) -> dict[int, float]:
    """The scores a judge's reply gives to attempts 1..n: {id: score in [0, 1]}, possibly
    missing ids (the caller retries or fills in the neutral score). Never raises.

    Tries, in order, the first JSON value in the text that yields any score (code fences
    dropped; a JSON object or list may sit inside prose), then `<id>: <score>` lines.
    Scores are clamped to [0, 1] (a judge that grades out of 10 gets 1.0 for 7: the
    prompt asks for [0, 1] and a clamp is the honest reading of an answer out of range);
    ids outside 1..n are ignored; the first score of a repeated id wins."""
    if not isinstance(text, str) or n < 1:
        return {}
    text = _FENCE.sub(" ", text[:MAX_PARSE_CHARS])
    decoder = json.JSONDecoder()
    best: dict[int, float] = {}
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:MAX_JSON_STARTS]
    for pos in starts:
        try:
            value, _ = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            continue
        try:
            found = _from_value(value, n)
        except RecursionError:
            continue
        if len(found) > len(best):
            best = found
        if len(best) == n:
            return best
    if best:
        return best
    out: dict[int, float] = {}
    for m in _LINE.finditer(text):
        i, s = int(m.group(1)), _number(m.group(2))
        if s is not None and 1 <= i <= n and i not in out:
            out[i] = s
    return out


# ------------------------------------------------------------------ rendering


def _clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its head and its tail (a final
    answer sits at the end)."""
    if len(text) <= limit:
        return text
    if limit < 20:
        return text[:limit]
    head = limit * 2 // 5
    tail = limit - head - 5
    return f"{text[:head]} [...] {text[-tail:]}"


def _call_serial(call_id: str) -> int | None:
    """The service's call ids end in a global hex counter (see `ChatService._next_id`)."""
    m = re.search(r"([0-9a-f]{12})$", call_id or "")
    return int(m.group(1), 16) if m else None


@dataclass
class Trajectory:
    """One attempt at a task: (agent name or None, role, content) in order."""

    steps: list[tuple[str | None, str, str]]


def trajectory_from_rows(rows: Sequence[Mapping[str, Any]]) -> Trajectory:
    """The messages of one rollout's rows (metadata dicts) as one trajectory.

    Messages whose origin is "prompt" are left out (the task is shown once on top; a row
    that rewrote an earlier row's history repeats kept messages as its prompt). Rows with
    an `agent` (agent programs) are multi-agent when the names differ: every message is
    tagged with its agent, and when the rows carry the service's `call_ids` the messages
    of all rows are merged in call order (call k's new observation, then its reply);
    otherwise rows are taken in order of (first appearance, turn_offset)."""
    agents = {r.get("agent") for r in rows}
    tag = len(agents) > 1
    items: list[tuple[tuple, str | None, str, str]] = []
    for ri, r in enumerate(sorted(rows, key=lambda r: int(r.get("turn_offset", 0) or 0))):
        msgs = list(r.get("messages") or [])
        origins = list(r.get("origins") or [])
        calls = list(r.get("call_ids") or [])
        agent = r.get("agent") if tag else None
        k = -1  # the call the next messages belong to
        for mi, m in enumerate(msgs):
            if not isinstance(m, Mapping):
                continue
            origin = origins[mi] if mi < len(origins) else None
            role = str(m.get("role", "?"))
            if origin is None and not origins:  # no origins: drop the leading system/user
                origin = "prompt" if mi == 0 or (role in ("system", "user") and k < 0) \
                    else "environment"
            if role == "assistant":
                k += 1
            if origin == "prompt":
                continue
            call = k if role == "assistant" else k + 1
            serial = _call_serial(calls[call]) if 0 <= call < len(calls) else None
            order = (serial, 0 if role != "assistant" else 1, ri, mi) if serial is not None \
                else (math.inf, ri, mi, 0)
            items.append((order, agent, role, str(m.get("content") or "")))
    items.sort(key=lambda t: t[0])
    return Trajectory([(a, role, content) for _, a, role, content in items])


def task_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The task as the policy saw it: the last user message of the first row's prompt."""
    for r in rows[:1]:
        msgs, origins = list(r.get("messages") or []), list(r.get("origins") or [])
        users = [m for i, m in enumerate(msgs) if isinstance(m, Mapping) and m.get("role") ==
                 "user" and (not origins or (i < len(origins) and origins[i] == "prompt"))]
        if users:
            return str(users[-1].get("content") or "")
    return ""


def render_trajectory(t: Trajectory, max_chars: int, max_message_chars: int) -> str:
    lines = []
    for agent, role, content in t.steps:
        who = f"{agent} ({role})" if agent else role
        lines.append(f"{who}: {_clip(content.strip(), max_message_chars)}")
    return _clip("\n".join(lines) or "(no messages)", max_chars)


def render_group(trajectories: Sequence[Trajectory], max_chars: int,
                 max_message_chars: int) -> str:
    return "\n\n".join(f"=== Attempt {i} ===\n{render_trajectory(t, max_chars, max_message_chars)}"
                       for i, t in enumerate(trajectories, 1))


# ------------------------------------------------------------------ chat functions


class ServiceChat:
    """A `ChatFn` over an in-process `ChatService`: each judge conversation is a rollout
    scope of its own (started, called, finished: its sampler rows are freed at once).
    The service should sample greedily (`judge_service_config`); the request asks for
    temperature 0 too. `count_tokens(messages)` renders with the service's chat format."""

    def __init__(self, service, max_tokens: int = 256):
        self.service, self.max_tokens = service, max_tokens
        self._ids = iter(range(1 << 62))
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> str:
        with self._lock:
            rid = f"judge-{next(self._ids)}"
        self.service.start_rollout(rid)
        try:
            response, _, _ = self.service.chat(
                {"model": "judge", "messages": messages, "temperature": 0.0,
                 "max_tokens": self.max_tokens}, rollout_id=rid, agent="judge")
        finally:
            self.service.finish_rollout(rid)
        return response["choices"][0]["message"].get("content") or ""

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.service.fmt.encode_prompt(messages))


def judge_service_config(max_new_tokens: int, max_context_tokens: int):
    """The `ServiceConfig` of a judge's chat service: greedy, fixed, no tool stop string."""
    from agentic_rl.agents.service import ServiceConfig
    from agentic_rl.sampling.params import SamplingParams

    return ServiceConfig(model_name="judge", sampling=SamplingParams(temperature=0.0,
                                                                     greedy=True),
                         fixed_sampling=True, max_new_tokens=max_new_tokens,
                         max_context_tokens=max_context_tokens, stop_strings=(),
                         render_tools=False, max_open_chains=1024)


class OpenAIChat:
    """A `ChatFn` over any OpenAI-compatible base URL (`.../v1`), temperature 0. Tokens
    are estimated as characters / 3 (no tokenizer on this side)."""

    def __init__(self, base_url: str, model: str = "policy", max_tokens: int = 256,
                 api_key: str = "agentic-rl", timeout_s: float = 300.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_tokens, self.api_key, self.timeout_s = (model, max_tokens,
                                                                    api_key, timeout_s)

    def __call__(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens}).encode()
        req = urllib.request.Request(self.url, body, {
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
            data = json.loads(resp.read())
        return data["choices"][0]["message"].get("content") or ""

    @staticmethod
    def count_tokens(messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)


# ------------------------------------------------------------------ the judge


@dataclass(frozen=True)
class JudgeConfig:
    """What the judge is shown and how its replies are read.

    prompt: the user message, with {n} {task} {trajectories} {rubric} placeholders.
    max_prompt_tokens: the rendered prompt is shrunk (per-trajectory characters cut by
        40% at a time) until it fits; the judge's context must hold it plus its reply.
    retries: stricter re-asks for ids the reply missed (then `neutral`).
    """

    rubric: str = DEFAULT_RUBRIC
    prompt: str = DEFAULT_PROMPT
    system: str = DEFAULT_SYSTEM
    max_prompt_tokens: int = 3072
    max_chars_per_trajectory: int = 2000
    max_chars_per_message: int = 600
    max_task_chars: int = 1500
    neutral: float = 0.5
    retries: int = 1
    cache_size: int = 4096
    model_key: str = ""  # part of the cache key: which judge model this is

    def __post_init__(self):
        if "{trajectories}" not in self.prompt:
            raise ValueError("judge prompt must contain the {trajectories} placeholder")
        if not 0.0 <= self.neutral <= 1.0:
            raise ValueError(f"judge neutral score must be in [0, 1], got {self.neutral}")
        if self.retries < 0 or self.max_prompt_tokens < 64 or self.cache_size < 0:
            raise ValueError("judge retries must be >= 0, max_prompt_tokens >= 64 and "
                             "cache_size >= 0")


METRIC_KEYS = ("groups", "calls", "cache_hits", "retries", "malformed", "neutral_scores",
               "errors", "shrunk")


class Judge:
    """Scores groups of trajectories with a chat function (see the module docstring).

    `chat(messages) -> text` must be greedy; `count_tokens(messages)` (default: the chat
    function's own, else characters / 3) sizes the prompt. Thread-safe: `score_groups`
    judges groups concurrently so a batching engine batches their calls."""

    def __init__(self, chat: ChatFn, config: JudgeConfig | None = None,
                 count_tokens: Callable[[list[dict[str, str]]], int] | None = None):
        self.chat, self.cfg = chat, config or JudgeConfig()
        self.count_tokens = count_tokens or getattr(chat, "count_tokens", None) or \
            OpenAIChat.count_tokens
        self.cache: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self.metrics: dict[str, float] = dict.fromkeys(METRIC_KEYS, 0.0)
        self._lock = threading.Lock()

    def _count(self, key: str, n: float = 1) -> None:
        with self._lock:
            self.metrics[key] += n

    def messages(self, task: str, trajectories: Sequence[Trajectory]) -> list[dict[str, str]]:
        """The judge's request, shrunk to fit `max_prompt_tokens`."""
        c = self.cfg
        chars, msg_chars = c.max_chars_per_trajectory, c.max_chars_per_message
        while True:
            body = c.prompt
            for key, value in (("{n}", str(len(trajectories))), ("{rubric}", c.rubric),
                               ("{task}", _clip(task, c.max_task_chars))):
                body = body.replace(key, value)
            body = body.replace("{trajectories}", render_group(trajectories, chars, msg_chars))
            msgs = ([{"role": "system", "content": c.system}] if c.system else []) + \
                [{"role": "user", "content": body}]
            if chars <= 80 or self.count_tokens(msgs) <= c.max_prompt_tokens:
                return msgs
            chars, msg_chars = int(chars * 0.6), max(40, int(msg_chars * 0.6))
            self._count("shrunk")

    def key(self, task: str, trajectories: Sequence[Trajectory]) -> str:
        c = self.cfg
        payload = json.dumps([c.model_key, c.system, c.rubric, c.prompt, c.max_prompt_tokens,
                              task, [t.steps for t in trajectories]], default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def score_group(self, task: str, trajectories: Sequence[Trajectory]) -> list[float]:
        """One score in [0, 1] per trajectory (a group of one gets the neutral score
        without a call: there is nothing to compare)."""
        n = len(trajectories)
        if n == 0:
            return []
        self._count("groups")
        if n == 1:
            return [self.cfg.neutral]
        key = self.key(task, trajectories)
        with self._lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                self.metrics["cache_hits"] += 1
                return list(self.cache[key])
        scores = self._ask(task, trajectories)
        if self.cfg.cache_size:
            with self._lock:
                self.cache[key] = list(scores)
                while len(self.cache) > self.cfg.cache_size:
                    self.cache.popitem(last=False)
        return scores

    def _ask(self, task: str, trajectories: Sequence[Trajectory]) -> list[float]:
        n = len(trajectories)
        msgs = self.messages(task, trajectories)
        found: dict[int, float] = {}
        reply = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self._count("retries")
                missing = [i for i in range(1, n + 1) if i not in found]
                msgs = [*msgs, {"role": "assistant", "content": reply[:2000]},
                        {"role": "user", "content": STRICT_RETRY.replace(
                            "{n}", str(n)).replace("{missing}", str(missing))}]
            self._count("calls")
            try:
                reply = self.chat(msgs)
            except Exception:  # noqa: BLE001 - a failed judge call costs scores, not the run
                self._count("errors")
                break
            for i, s in parse_scores(reply, n).items():
                found.setdefault(i, s)
            if len(found) == n:
                break
        if len(found) < n:
            self._count("malformed")
            self._count("neutral_scores", n - len(found))
        return [found.get(i, self.cfg.neutral) for i in range(1, n + 1)]

    def score_groups(self, groups: Sequence[tuple[str, Sequence[Trajectory]]],
                     max_workers: int = 16) -> list[list[float]]:
        if not groups:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(groups)))) as pool:
            return list(pool.map(lambda g: self.score_group(*g), groups))


# ------------------------------------------------------------------ rewards


MODES = ("weighted", "tiebreak")


@dataclass(frozen=True)
class Combine:
    """How judge scores join the verifier's rewards.

    weighted: every turn reward x w_verifier, plus w_judge x score on each final row's
        last turn (w_verifier=0, w_judge=1: judge reward only).
    tiebreak: the verifier's rewards unchanged, plus eps_g x score on each final row's
        last turn, where eps_g = min(eps, half the smallest gap between distinct
        trajectory returns of the group / final rows per trajectory): the judge orders
        only trajectories whose returns tie (all-fail and all-succeed groups get a
        signal; an order the verifier decided never flips).
    """

    mode: str = "weighted"
    w_verifier: float = 1.0
    w_judge: float = 1.0
    eps: float = 0.01

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"judge mode {self.mode!r} is not one of {MODES}")
        vals = (self.w_verifier, self.w_judge, self.eps)
        if not all(math.isfinite(v) for v in vals) or self.eps <= 0:
            raise ValueError("judge weights must be finite and eps > 0")


def combine_rewards(turn_rewards: np.ndarray, last_turn: np.ndarray, final: np.ndarray,
                    traj: np.ndarray, group: np.ndarray, judge: np.ndarray,
                    combine: Combine) -> np.ndarray:
    """New turn rewards [B, K] (numpy; rows of -1 trajectory are left as they are).

    last_turn [B]: each row's last present turn (-1: none); final [B]: rows that get the
    judge part (an episode's last row; in a multi-agent rollout each agent's); traj [B]:
    trajectory index (-1: padding); group [B]: judge group; judge [T]: score per
    trajectory."""
    tr = np.asarray(turn_rewards, np.float64)
    out = tr.copy()
    real = traj >= 0
    ret = np.zeros(len(judge))
    np.add.at(ret, traj[real], tr[real].sum(axis=1))
    finals = np.zeros(len(judge))
    np.add.at(finals, traj[real & final], 1.0)
    add = np.zeros(len(tr))
    if combine.mode == "weighted":
        out[real] *= combine.w_verifier
        add[real] = combine.w_judge * judge[traj[real]]
    else:
        eps_of: dict[int, float] = {}
        for g in np.unique(group[real]):
            ts = np.unique(traj[real & (group == g)])
            vals = np.unique(np.round(ret[ts], 9))
            gap = np.min(np.diff(vals)) if len(vals) > 1 else math.inf
            per = max(1.0, float(finals[ts].max()))
            eps_of[int(g)] = min(combine.eps, gap / (2.0 * per))
        for b in np.nonzero(real)[0]:
            add[b] = eps_of[int(group[b])] * judge[traj[b]]
    rows = np.nonzero(real & final & (last_turn >= 0))[0]
    out[rows, last_turn[rows]] += add[rows]
    return out.astype(np.float32)


def trajectory_keys(metadata: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """Per row: (trajectory index, judge group index, gets-the-judge-part) from row
    metadata. A trajectory is one rollout: its id `g{group}s{sample}` (agent programs'
    rows carry `rollout_id`) or (group_id, sample_index) (environment rows, whose group_id
    is the task's index). A judge group is the rollouts of one task (the `g` part:
    multi-agent rows have a group_id per agent, which the judge does not want). Padding
    rows (metadata `padding`) get -1. The judge part goes to every row that is not
    `continued` (an episode's last row; each agent's last row)."""
    traj_ids: dict[Any, int] = {}
    group_ids: dict[Any, int] = {}
    traj, group, final = [], [], []
    for m in metadata:
        if m.get("padding"):
            traj.append(-1)
            group.append(-1)
            final.append(False)
            continue
        rid = m.get("rollout_id")
        hit = re.fullmatch(r"g(\d+)s(\d+)", rid) if isinstance(rid, str) else None
        if hit:
            g, key = int(hit.group(1)), rid
        else:
            g, key = m.get("group_id", 0), ("row", m.get("group_id", 0), m.get("sample_index"),
                                             m.get("episode_id") if m.get("sample_index")
                                             is None else None)
        traj.append(traj_ids.setdefault(key, len(traj_ids)))
        group.append(group_ids.setdefault(g, len(group_ids)))
        final.append(not m.get("continued"))
    return np.array(traj, np.int64), np.array(group, np.int64), np.array(final, bool)


def pairwise_agreement(scores: Sequence[float], rewards: Sequence[float],
                       groups: Sequence[int]) -> dict[str, float]:
    """How the judge's ranking agrees with the verifier's, over pairs of one group with
    different verifier rewards: pairwise accuracy (a tied judge counts half), Kendall's
    tau-b over those pairs (concordant - discordant over the pair count; judge ties are
    neither) and the number of pairs."""
    s, r, g = (np.asarray(x, np.float64) for x in (scores, rewards, groups))
    conc = disc = ties = 0
    for gid in np.unique(g):
        idx = np.nonzero(g == gid)[0]
        for a_i, a in enumerate(idx):
            for b in idx[a_i + 1:]:
                dr = r[a] - r[b]
                if abs(dr) < 1e-9:
                    continue
                ds = s[a] - s[b]
                if abs(ds) < 1e-9:
                    ties += 1
                elif (ds > 0) == (dr > 0):
                    conc += 1
                else:
                    disc += 1
    pairs = conc + disc + ties
    if not pairs:
        return {"pairs": 0.0}
    return {"pairs": float(pairs), "pairwise_accuracy": (conc + 0.5 * ties) / pairs,
            "kendall_tau": (conc - disc) / pairs, "judge_ties": ties / pairs}


@dataclass
class JudgedBatch:
    turn_rewards: np.ndarray
    scores: list[float]  # per trajectory
    returns: list[float]  # per trajectory, the verifier's
    groups: list[int]  # per trajectory
    metrics: dict[str, float] = field(default_factory=dict)


def judge_batch(judge: Judge, metadata: Sequence[Mapping[str, Any]], turn_rewards,
                turn_end, combine: Combine) -> JudgedBatch:
    """Judges every group of a batch's rows and combines the scores with its rewards
    (see `combine_rewards`, `trajectory_keys`). `turn_end` [B, K] marks present turns."""
    traj, group, final = trajectory_keys(metadata)
    tr = np.asarray(turn_rewards, np.float64)
    te = np.asarray(turn_end)
    present = te >= 0
    last_turn = np.where(present.any(axis=1), present.shape[1] - 1 -
                         np.argmax(present[:, ::-1], axis=1), -1)
    n_traj = int(traj.max()) + 1 if (traj >= 0).any() else 0
    rows_of: list[list[int]] = [[] for _ in range(n_traj)]
    for b, t in enumerate(traj):
        if t >= 0:
            rows_of[t].append(b)
    traj_group = [int(group[rows[0]]) for rows in rows_of]
    by_group: dict[int, list[int]] = {}
    for t, g in enumerate(traj_group):
        by_group.setdefault(g, []).append(t)
    before = dict(judge.metrics)
    requests = []
    for ts in by_group.values():
        metas = [metadata[b] for b in rows_of[ts[0]]]
        requests.append((task_text(metas), [trajectory_from_rows([metadata[b] for b in
                                                                 rows_of[t]]) for t in ts]))
    results = judge.score_groups(requests)
    scores = np.full(n_traj, judge.cfg.neutral)
    for ts, sc in zip(by_group.values(), results):
        scores[ts] = sc
    returns = np.zeros(n_traj)
    for t, rows in enumerate(rows_of):
        # each final row (one per agent's episode) holds the rollout's reward once
        returns[t] = tr[rows].sum() / max(1, int(final[rows].sum()))
    new = combine_rewards(tr, last_turn, final, traj, group, scores, combine)
    metrics = {f"judge/{k}": judge.metrics[k] - before.get(k, 0.0) for k in METRIC_KEYS}
    metrics["judge/mean_score"] = float(scores.mean()) if n_traj else 0.0
    agree = pairwise_agreement(scores, returns, traj_group)
    metrics.update({f"judge/{k}": v for k, v in agree.items()})
    return JudgedBatch(new, scores.tolist(), returns.tolist(), traj_group, metrics)
