"""File-system investigation: follow chains of references across a generated directory tree.

The working directory is a generated company file dump: incident reports
(`incidents/<month>/INC-####.md`), service configurations under opaque ids
(`services/<area>/s-####/service.conf`, with a README and a deploy log beside each),
staff records (`people/<dept>/e####.txt`) and an archive of notes. The task names
`num_chains` incidents; for each, the agent must open the incident report (it names
the affected service), follow that service's `upstream = ...` links service by service
until one says `upstream = none` (the root cause), then find the root service's owner in
the staff records and read their badge code. The answer is the badge codes, in order.

Why it is long-horizon: every reference is by name, never by path, and paths are
opaque ids, so each hop costs a search (the `search_files` grep-like tool, which shows
only matching lines) and a read: `hops` files per chain (the incident, `hops - 2`
services, the owner's record). The scripted solver takes exactly
2 x hops x num_chains + 1 turns: 37 at the defaults (3 chains of 6 hops; `max_turns`
= 100). Broad searches do not shortcut this: a search for, say, `upstream` stops at
`max_search_matches` lines (20 of the 52 services at the defaults), and its lines name
opaque directories, not services, so the link graph cannot be dumped in one call.
What must be remembered: the badge codes of earlier chains, read up to 36 turns before
the answer, and where each chain stands. Distractors make each hop a choice: archive
notes and deploy logs mention incident ids, service and person names; every service
(on the chain or not) has an owner, so stopping early gives a wrong, plausible answer.

Observations reveal only what the agent asked for: a listing, a file it opened, or the
matching lines of a search. The episode ends with a reply without a tool call, scored
by exact match of the comma-separated badge codes (case and spacing ignored):
reward 1.0 and `info["success"]` when all are right (with `partial_credit`, the
fraction right), or at `max_turns` (truncation: reward 0, success False). Malformed
calls, unknown tools and refused paths (`..`, absolute paths: the confinement of
`agentic_rl.envs.tools.files`) are error observations that cost a turn.

The tree of a task is generated from `data["world_seed"]` and written to a fresh
directory per episode (removed by `close()`). Train and eval world seeds are disjoint
strings. Registers the `fs_investigation` suite.

Imports: stdlib and agentic_rl.envs (base, rewards, suite, tasks, tools) only; never jax.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.rewards import ANSWER_TAG_RE
from agentic_rl.envs.suite import ENVS, EnvSuite, temporary_dir
from agentic_rl.envs.tasks import TaskSet, unique_values
from agentic_rl.envs.tools.base import Tool, run_tool_calls, tool_error_step, tool_system_prompt
from agentic_rl.envs.tools.files import ConfinedFiles, FsLimits, file_tools, search_files_tool
from agentic_rl.envs.tools.parser import render_tool_call

FS_INSTRUCTIONS = (
    "You are investigating a company's files. Your working directory holds incident "
    "reports (incidents/), service configurations (services/), staff records (people/) "
    "and an archive (archive/). Use list_files, read_file and search_files; files refer "
    "to each other by name, not by path, so search for a name to find its file. When you "
    "know the answer, reply with <answer>...</answer> and no tool call."
)

_AREAS = ("core", "edge", "data", "billing", "infra", "media")
_DEPTS = ("eng", "ops", "sales", "finance", "support", "research")
_MONTHS = tuple(f"2024-{m:02d}" for m in range(1, 13))
_ONSETS = "b br c d dr f g gr k l m n p r s st t tr v z".split()
_VOWELS = "a e i o u ai ea io".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
_SYMPTOMS = ("elevated error rates", "timeouts on checkout", "stale caches", "a failed deploy",
             "dropped messages", "slow queries", "login failures", "a memory leak")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + (
        rng.choice(_CODAS))


@dataclass(frozen=True)
class FsWorld:
    """A generated tree: `files` (relative path -> text), the question's incident ids,
    the answers, and each chain's files in reading order (hidden: for tests and logs)."""

    files: dict[str, str]
    incidents: tuple[str, ...]
    answers: tuple[str, ...]
    chains: tuple[tuple[str, ...], ...]


def generate_world(
    seed: str | int, *, num_chains: int = 3, hops: int = 6, num_distractors: int = 40
) -> FsWorld:
    """A reproducible file tree with `num_chains` disjoint reference chains of `hops` files
    (incident -> hops - 2 services linked by `upstream` -> the root service owner's record)
    and `num_distractors` distractor services (plus as many people, half as many
    incidents, and archive notes) that mention the same kinds of names."""
    if num_chains < 1 or hops < 3 or num_distractors < 0:
        raise ValueError(f"need num_chains >= 1, hops >= 3, num_distractors >= 0; got "
                         f"{num_chains}, {hops}, {num_distractors}")
    rng = random.Random(f"fs_investigation:{seed}")
    taken: set[str] = set()
    chain_len = hops - 2
    num_services = num_chains * chain_len + num_distractors
    services = unique_values(num_services, lambda: f"{_word(rng, 2)}-{rng.choice(('api', 'db', 'queue', 'cache', 'worker', 'gateway'))}", taken)  # noqa: E501
    people = unique_values(num_services + num_chains + 10,
                     lambda: f"{_word(rng, 2).capitalize()} {_word(rng, 2).capitalize()}", taken)
    sids = unique_values(num_services, lambda: f"s-{rng.randrange(10_000):04d}", taken)
    eids = unique_values(len(people), lambda: f"e{rng.randrange(10_000):04d}", taken)
    badges = unique_values(len(people), lambda: (
        "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
        + f"-{rng.randrange(10_000):04d}"), taken)
    num_incidents = num_chains + max(2, num_distractors // 2)
    incidents = unique_values(num_incidents, lambda: f"INC-{rng.randrange(10_000):04d}", taken)

    person = {p: {"eid": e, "badge": b, "dept": rng.choice(_DEPTS)}
              for p, e, b in zip(people, eids, badges)}
    svc: dict[str, dict[str, Any]] = {
        s: {"sid": sid, "area": rng.choice(_AREAS), "owner": rng.choice(people)}
        for s, sid in zip(services, sids)}
    chains: list[list[str]] = []
    for i in range(num_chains):
        members = services[i * chain_len:(i + 1) * chain_len]
        for a, b in zip(members, members[1:]):
            svc[a]["upstream"] = b
        svc[members[-1]]["upstream"] = "none"
        chains.append(members)
    distractors = services[num_chains * chain_len:]
    for j, s in enumerate(distractors):  # acyclic: only earlier distractors upstream
        svc[s]["upstream"] = rng.choice(distractors[:j]) if j and rng.random() < 0.6 else "none"

    files: dict[str, str] = {}
    for s, d in svc.items():
        base = f"services/{d['area']}/{d['sid']}"
        files[f"{base}/service.conf"] = (
            f"# service configuration\nname = {s}\nid = {d['sid']}\narea = {d['area']}\n"
            f"upstream = {d['upstream']}\nowner = {d['owner']}\n"
            f"replicas = {rng.randint(1, 9)}\nport = {rng.randint(8000, 8999)}\n")
        files[f"{base}/README.md"] = (
            f"# {s}\n\nPart of the {d['area']} area. Questions go to "
            f"{rng.choice(people)} (not the owner of record; see service.conf).\n"
            f"It was once meant to depend on {rng.choice(services)}.\n")
        files[f"{base}/deploy.log"] = "".join(
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} deployed {s} "
            f"v{rng.randint(1, 4)}.{rng.randint(0, 20)} by {rng.choice(people)}\n"
            for _ in range(3))
    for p, d in person.items():
        files[f"people/{d['dept']}/{d['eid']}.txt"] = (
            f"name: {p}\nemployee: {d['eid']}\ndept: {d['dept']}\nbadge: {d['badge']}\n"
            f"phone: 555-{rng.randrange(10_000):04d}\n")
    affected = [c[0] for c in chains] + [rng.choice(distractors or services)
                                         for _ in range(num_incidents - num_chains)]
    incident_path = {}
    for inc, s in zip(incidents, affected):
        incident_path[inc] = f"incidents/{rng.choice(_MONTHS)}/{inc}.md"
        files[incident_path[inc]] = (
            f"# {inc}\nid: {inc}\nseverity: {rng.randint(1, 4)}\n"
            f"affected service: {s}\nsummary: {rng.choice(_SYMPTOMS)} reported by "
            f"{rng.choice(people)}.\n")
    for k in range(max(3, num_distractors // 4)):  # notes that mention ids and names
        files[f"archive/notes/note-{k:03d}.md"] = (
            f"Follow-up on {rng.choice(incidents)}: {rng.choice(people)} suspected "
            f"{rng.choice(services)}, later ruled out. Ask {rng.choice(people)}.\n")
    files["archive/README.md"] = "Old notes. Not authoritative: the configs are.\n"

    paths, answers = [], []
    for inc, members in zip(incidents, chains):
        root_owner = person[svc[members[-1]]["owner"]]
        answers.append(root_owner["badge"])
        paths.append((incident_path[inc],
                      *(f"services/{svc[s]['area']}/{svc[s]['sid']}/service.conf"
                        for s in members),
                      f"people/{root_owner['dept']}/{root_owner['eid']}.txt"))
    return FsWorld(files, tuple(incidents[:num_chains]), tuple(answers), tuple(paths))


def world_prompt(incidents: Sequence[str]) -> str:
    ids = ", ".join(incidents)
    example = ", ".join(f"CODE{i + 1}" for i in range(len(incidents)))
    verb = "were each" if len(incidents) > 1 else "was"
    return (
        f"Incident{'s' if len(incidents) > 1 else ''} {ids} {verb} caused by a failure that "
        "started upstream. For each "
        "incident: read its report to find the affected service; follow that service's "
        "`upstream` setting from service to service until you reach one whose upstream is "
        "`none` (the root cause); find that root service's owner in the staff records. "
        "Reply with the owners' badge codes in the order of the incidents, separated by "
        f"commas: <answer>{example}</answer>."
    )


def generate_fs_tasks(
    n: int, seed: int, *, num_chains: int = 3, hops: int = 6, num_distractors: int = 40,
    id_prefix: str = "fs",
) -> list[Task]:
    """`n` tasks from world seeds "{seed}-{i}"; each holds the knobs and its answer."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    tasks = []
    for i in range(n):
        world_seed = f"{seed}-{i}"
        world = generate_world(world_seed, num_chains=num_chains, hops=hops,
                               num_distractors=num_distractors)
        data = {"world_seed": world_seed, "num_chains": num_chains, "hops": hops,
                "num_distractors": num_distractors}
        tasks.append(Task(f"{id_prefix}-{seed}-{i}", world_prompt(world.incidents),
                          ", ".join(world.answers), data))
    return tasks


def world_of(task: Task) -> FsWorld:
    d = task.data
    try:
        return generate_world(d["world_seed"], num_chains=int(d["num_chains"]),
                              hops=int(d["hops"]), num_distractors=int(d["num_distractors"]))
    except KeyError as e:
        raise ValueError(f"task {task.id!r}: fs_investigation tasks need data[{e}]") from None


def _codes(text: str) -> list[str]:
    return [" ".join(part.split()).casefold() for part in text.split(",")]


def score_answer(text: str, answers: Sequence[str]) -> tuple[int, str | None]:
    """(how many codes are right, position by position; the extracted answer) for the last
    `<answer>` in `text`; a different number of codes scores 0."""
    found = ANSWER_TAG_RE.findall(text)
    if not found:
        return 0, None
    given, gold = _codes(found[-1]), _codes(", ".join(answers))
    if len(given) != len(gold):
        return 0, found[-1]
    return sum(g == a for g, a in zip(given, gold)), found[-1]


# -- the environment ------------------------------------------------------------------------------


@dataclass
class FsInvestigationEnv:
    """The investigation POMDP (see the module docstring). One episode per instance at a
    time; `close()` removes its directory. `base_dir` is where episode directories go."""

    max_turns: int = 100
    partial_credit: bool = False
    limits: FsLimits = field(default_factory=FsLimits)
    max_calls_per_turn: int = 1
    instructions: str = FS_INSTRUCTIONS
    base_dir: str | os.PathLike | None = None
    tools: tuple[Tool, ...] = field(init=False)
    _root: Path | None = field(default=None, init=False, repr=False)
    _s: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.max_turns < 1 or self.max_calls_per_turn < 1:
            raise ValueError("max_turns and max_calls_per_turn must be >= 1")
        self._new_root()

    def _new_root(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="fs-investigation-", dir=self.base_dir))
        files = ConfinedFiles(self._root, self.limits)
        list_tool, read_tool, _ = file_tools(files)  # read-only: no write_file
        self.tools = (list_tool, read_tool, search_files_tool(files))

    def reset(self, task: Task, seed: int) -> list[Message]:
        del seed  # the task's world seed determines the tree
        world = world_of(task)
        if self._root is None or not self._root.is_dir():
            self._new_root()
        assert self._root is not None
        for child in self._root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        for rel, text in world.files.items():
            path = self._root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        self._s = {"world": world, "turn": 0, "done": False}
        system = self.instructions + "\n\n" + tool_system_prompt(self.tools,
                                                                 self.max_calls_per_turn)
        prompt = f"{task.prompt}\nYou have {self.max_turns} turns."
        return [message("system", system), message("user", prompt)]

    def step(self, action: Action) -> StepResult:
        s = self._s
        if s is None or s["done"]:
            raise RuntimeError("step() called before reset() or after the episode ended")
        s["turn"] += 1
        if action.errors:
            result = tool_error_step(action.errors)
        elif len(action.tool_calls) > self.max_calls_per_turn:
            text = (f"Error: {len(action.tool_calls)} tool calls in one turn; at most "
                    f"{self.max_calls_per_turn} allowed. Nothing was run.")
            result = StepResult([message("tool", text, name="error")], 0.0, False, {})
        elif action.tool_calls:
            result = run_tool_calls(self.tools, action.tool_calls)
        else:
            return self._finish(action.text)
        result.info["turn"] = s["turn"]
        if s["turn"] >= self.max_turns:
            return self._end(result.observation + [message(
                "user", f"Out of turns ({self.max_turns}) without an answer.")], 0.0,
                {**result.info, "success": False, "truncated": True})
        return result

    def _finish(self, text: str) -> StepResult:
        answers = self._s["world"].answers
        right, given = score_answer(text, answers)
        success = right == len(answers)
        reward = right / len(answers) if self.partial_credit else float(success)
        return self._end([], reward, {"success": success, "truncated": False,
                                      "correct_parts": right, "predicted": given,
                                      "answer": ", ".join(answers)})

    def _end(self, observation: list[Message], reward: float, info: dict) -> StepResult:
        self._s["done"] = True
        info["turn"] = self._s["turn"]
        self.close()
        return StepResult(observation, reward, True, info)

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


# -- the scripted solver --------------------------------------------------------------------------

_INCIDENTS_RE = re.compile(r"Incidents? (.+?) (?:were each|was) caused")
_FIELD_RE = {
    "affected": re.compile(r"^affected service: (.+)$", re.M),
    "upstream": re.compile(r"^upstream = (.+)$", re.M),
    "owner": re.compile(r"^owner = (.+)$", re.M),
    "badge": re.compile(r"^badge: (.+)$", re.M),
}


def scripted_solver() -> Callable[[Sequence[Message]], str]:
    """A fresh policy for one episode over the observation text only: for each incident
    of the prompt, search for the defining line of the next name (`id: INC-..`,
    `name = <service>`, `name: <person>`), read the file the search found, take the next
    name from it; after the last chain, answer. 2 turns per hop: 2 x hops x chains + 1."""
    st: dict[str, Any] = {"queue": [], "answers": [], "want": None, "pending": None}

    def search(pattern: str, kind: str) -> str:
        st["want"] = (pattern, kind)
        return render_tool_call("search_files", {"pattern": pattern})

    def next_chain() -> str:
        if not st["queue"]:
            return f"<answer>{', '.join(st['answers'])}</answer>"
        return search(f"id: {st['queue'].pop(0)}", "incident")

    def policy(messages: Sequence[Message]) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        if st["want"] is None and st["pending"] is None:  # the first call: the prompt
            found = _INCIDENTS_RE.search(text)
            st["queue"] = [x.strip() for x in re.split(r",| and ", found.group(1)) if x.strip()]
            return next_chain()
        if st["pending"] is None:  # a search result: open the file whose line matches exactly
            pattern, kind = st["want"]
            for line in text.splitlines():
                path, _, rest = line.partition(":")
                if rest.partition(": ")[2].strip() == pattern:
                    st["pending"] = kind
                    return render_tool_call("read_file", {"path": path})
            return f"<answer>{', '.join(st['answers'])}</answer>"  # lost: give up
        kind, st["pending"] = st["pending"], None
        if kind == "incident":
            return search(f"name = {_FIELD_RE['affected'].search(text).group(1)}", "service")
        if kind == "service":
            upstream = _FIELD_RE["upstream"].search(text).group(1).strip()
            if upstream != "none":
                return search(f"name = {upstream}", "service")
            return search(f"name: {_FIELD_RE['owner'].search(text).group(1)}", "person")
        st["answers"].append(_FIELD_RE["badge"].search(text).group(1).strip())
        return next_chain()

    return policy


# -- the suite ------------------------------------------------------------------------------------


@ENVS.register("fs_investigation")
def fs_investigation_suite(
    *,
    num_chains: int = 3,
    hops: int = 6,
    num_distractors: int = 40,
    max_turns: int = 100,
    partial_credit: bool = False,
    max_search_matches: int = 20,
    num_train: int = 500,
    num_eval: int = 50,
    seed: int = 0,
    gamma: float = 1.0,
) -> EnvSuite:
    """Follow `num_chains` chains of `hops` file references through a generated tree and
    answer with the badge codes they end at (see the module docstring). Difficulty:
    `hops` (chain length), `num_chains`, `num_distractors` (distractor services, people,
    incidents, notes), `max_turns`, `max_search_matches` (how much one search shows)."""
    knobs = {"num_chains": num_chains, "hops": hops, "num_distractors": num_distractors}
    tasks = TaskSet({
        "train": generate_fs_tasks(num_train, seed, id_prefix="fs-train", **knobs),
        "eval": generate_fs_tasks(num_eval, seed + 1, id_prefix="fs-eval", **knobs),
    })
    limits = FsLimits(max_search_matches=max_search_matches)
    make = partial(FsInvestigationEnv, max_turns=max_turns, partial_credit=partial_credit,
                   limits=limits, base_dir=temporary_dir("fs-investigation-"))
    return EnvSuite("fs_investigation", make, tasks, gamma)
