"""Gridworld: a partially observed maze where the agent collects items, then leaves by the exit.

Why it is long-horizon: the maze is procedurally generated (a random spanning tree of
rooms, plus a few extra openings), the agent sees only the cells within `view_radius`
of itself, and it must collect `num_items` items spread over the maze before the exit
opens. Every task is generated so that even an agent that knew the whole map would
need at least `min_optimal_turns` turns (30 by default: the shortest tour start ->
every item -> exit, one turn per step plus one `pick_up` per item); an agent that must
explore first needs more (at the defaults the scripted solver takes 31-100 turns, median
about 53, and succeeds on about 98.5% of 1000 seeds within `max_turns` = 100).

What must be remembered: the map is never shown again. An item or the exit seen ten
turns ago is not in the current view, and dead ends already walked look like the
unexplored ones, so efficient play needs a map built from every earlier view (the
observation is not a Markov state). Positions are reported as (row, column), so a map
can be kept in text.

Actions (tools in the Hermes `<tool_call>` format, one per turn): `move(direction)`
with north/south/east/west, `pick_up()`, `look()` (the view again, costs a turn). A
reply without a tool call, a malformed call or a move into a wall is answered with an
error observation and costs the turn; nothing crashes the episode.

Rewards. `reward_mode="dense"`: each turn earns `explore_weight` x (newly seen floor
cells / floor cells not visible at the start) plus `item_weight / num_items` per item
picked up, and `success_reward` on reaching the exit with every item; an episode's total
is therefore at most explore_weight + item_weight + success_reward (1.5 at the
defaults) and exactly `success_reward` of it depends on success. `"sparse"`: only the
terminal `success_reward`. The episode ends on success or after `max_turns` turns
(truncation, `info["success"] = False`).

Tasks are data: a task's `data` holds the layout (grid, start, exit, items) generated
from a per-task seed string, so train and eval seeds are disjoint by construction, and
eval layouts equal to a train layout are skipped. `scripted_solver` is a frontier-
exploration policy over the observation text only. Registers `gridworld` and
`gridworld_sparse`.

Imports: stdlib and agentic_rl.envs (base, suite, tasks, tools.base, tools.parser) only;
never jax.
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agentic_rl.envs.base import Action, Message, StepResult, Task, message
from agentic_rl.envs.suite import ENVS, EnvSuite
from agentic_rl.envs.tasks import TaskSet
from agentic_rl.envs.tools.base import Tool, tool_error_step, tool_system_prompt
from agentic_rl.envs.tools.parser import render_tool_call

WALL, FLOOR, ITEM, EXIT, AGENT = "#", ".", "*", "E", "@"
DIRECTIONS: dict[str, tuple[int, int]] = {
    "north": (-1, 0),
    "south": (1, 0),
    "east": (0, 1),
    "west": (0, -1),
}
REWARD_MODES = ("dense", "sparse")
Pos = tuple[int, int]

GRID_INSTRUCTIONS = (
    "You are in a maze and can only see the cells near you. Collect every item (*) with "
    "pick_up, then step onto the exit (E): the exit stays locked until you carry every "
    "item. Map symbols: # wall, . floor, * item, E exit, @ you. Rows grow to the south, "
    "columns to the east. Each turn, call exactly one tool: move (north, south, east or "
    "west), pick_up (takes the item on your cell) or look (shows your surroundings again). "
    "The map is never shown in full: remember what you have seen."
)


# -- layouts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A maze: `grid` rows of '#'/'.', the start, the exit, the item cells, and the fewest
    turns any agent needs (the shortest start -> all items -> exit tour plus one pick_up
    per item)."""

    grid: tuple[str, ...]
    start: Pos
    exit: Pos
    items: tuple[Pos, ...]
    optimal_turns: int

    def to_data(self) -> dict[str, Any]:
        return {
            "grid": list(self.grid),
            "start": list(self.start),
            "exit": list(self.exit),
            "items": [list(p) for p in self.items],
            "optimal_turns": self.optimal_turns,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Layout:
        """A layout from a task's `data`, checked (a hand-written task fails loudly)."""
        try:
            grid = tuple(str(row) for row in data["grid"])
            start, exit_ = _pos(data["start"]), _pos(data["exit"])
            items = tuple(_pos(p) for p in data["items"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"gridworld task data needs grid, start, exit, items: {e}") from None
        if not grid or len({len(r) for r in grid}) != 1 or set("".join(grid)) - {WALL, FLOOR}:
            raise ValueError("gridworld grid must be equal-length rows of '#' and '.'")
        for p in (start, exit_, *items):
            inside = 0 <= p[0] < len(grid) and 0 <= p[1] < len(grid[0])
            if not inside or grid[p[0]][p[1]] != FLOOR:
                raise ValueError(f"gridworld position {p} is not a floor cell")
        if not items or len({start, exit_, *items}) != len(items) + 2:
            raise ValueError("gridworld needs >= 1 item; start, exit and items must differ")
        dist = _distances(grid, start)
        if any(p not in dist for p in (exit_, *items)):
            raise ValueError("gridworld exit or an item is unreachable from the start")
        optimal = data.get("optimal_turns")
        if optimal is None:
            optimal = _optimal_turns(grid, start, exit_, items)
        return cls(grid, start, exit_, items, int(optimal))


def _pos(value: Any) -> Pos:
    r, c = value
    return int(r), int(c)


def _neighbours(grid: Sequence[str], p: Pos):
    for dr, dc in DIRECTIONS.values():
        q = (p[0] + dr, p[1] + dc)
        if 0 <= q[0] < len(grid) and 0 <= q[1] < len(grid[0]) and grid[q[0]][q[1]] != WALL:
            yield q


def _distances(grid: Sequence[str], source: Pos) -> dict[Pos, int]:
    dist = {source: 0}
    queue = deque([source])
    while queue:
        p = queue.popleft()
        for q in _neighbours(grid, p):
            if q not in dist:
                dist[q] = dist[p] + 1
                queue.append(q)
    return dist


def _optimal_turns(grid: Sequence[str], start: Pos, exit_: Pos, items: Sequence[Pos]) -> int:
    """Shortest start -> every item (any order) -> exit walk, plus one pick_up per item
    (exact, by dynamic programming over subsets of items)."""
    k = len(items)
    from_item = [_distances(grid, p) for p in items]
    from_start = _distances(grid, start)
    best: dict[tuple[int, int], int] = {(1 << i, i): from_start[items[i]] for i in range(k)}
    for mask in range(1, 1 << k):
        for i in range(k):
            here = best.get((mask, i))
            if here is None:
                continue
            for j in range(k):
                if not mask & (1 << j):
                    key = (mask | (1 << j), j)
                    cost = here + from_item[i][items[j]]
                    if cost < best.get(key, 1 << 30):
                        best[key] = cost
    full = (1 << k) - 1
    walk = min(best[(full, i)] + from_item[i][exit_] for i in range(k))
    return walk + k


def _carve(rng: random.Random, size: int, loop_fraction: float) -> list[list[str]]:
    """A `size` x `size`-room maze on a (2 size + 1)-cell grid: rooms at odd coordinates,
    a random spanning tree (iterative depth-first backtracker) of openings between them,
    then each remaining interior wall between two rooms opened with `loop_fraction`."""
    n = 2 * size + 1
    cells = [[WALL] * n for _ in range(n)]
    start = (rng.randrange(size), rng.randrange(size))
    seen = {start}
    stack = [start]
    cells[2 * start[0] + 1][2 * start[1] + 1] = FLOOR
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in DIRECTIONS.values()
            if 0 <= r + dr < size and 0 <= c + dc < size and (r + dr, c + dc) not in seen
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = rng.choice(options)
        cells[r + nr + 1][c + nc + 1] = FLOOR  # the wall between the two rooms
        cells[2 * nr + 1][2 * nc + 1] = FLOOR
        seen.add((nr, nc))
        stack.append((nr, nc))
    for r in range(1, n - 1):
        for c in range(1, n - 1):
            between = (r % 2) != (c % 2)  # one odd, one even coordinate: a wall between rooms
            if between and cells[r][c] == WALL and rng.random() < loop_fraction:
                cells[r][c] = FLOOR
    return cells


def generate_layout(
    seed: str | int,
    *,
    size: int = 5,
    num_items: int = 3,
    loop_fraction: float = 0.1,
    min_optimal_turns: int = 30,
    max_attempts: int = 200,
) -> Layout:
    """A reproducible maze (see `_carve`) with a start, an exit and `num_items` items in
    distinct rooms, drawn again until even an omniscient agent needs `min_optimal_turns`."""
    if size < 2 or not 1 <= num_items <= min(size * size - 2, 10):
        raise ValueError(f"need size >= 2 and 1 <= num_items <= min(size^2 - 2, 10); got "
                         f"size={size}, num_items={num_items}")
    if not 0.0 <= loop_fraction <= 1.0:
        raise ValueError(f"loop_fraction must be in [0, 1], got {loop_fraction}")
    rng = random.Random(f"gridworld:{seed}")
    rooms = [(2 * r + 1, 2 * c + 1) for r in range(size) for c in range(size)]
    for attempt in range(max_attempts):
        if attempt % 20 == 0:
            cells = _carve(rng, size, loop_fraction)
            grid = tuple("".join(row) for row in cells)
        start, exit_, *items = rng.sample(rooms, num_items + 2)
        optimal = _optimal_turns(grid, start, exit_, items)
        if optimal >= min_optimal_turns:
            return Layout(grid, start, exit_, tuple(items), optimal)
    raise ValueError(
        f"could not place {num_items} items in a size-{size} maze needing >= "
        f"{min_optimal_turns} turns; lower min_optimal_turns or enlarge the maze"
    )


def generate_gridworld_tasks(
    n: int,
    seed: int,
    *,
    id_prefix: str = "gridworld",
    exclude: frozenset[tuple[str, ...]] | set = frozenset(),
    **layout_kwargs: Any,
) -> list[Task]:
    """`n` tasks from layout seeds "{seed}-{i}"; layouts whose fingerprint (grid, start,
    exit, items) is in `exclude` (e.g. the train split's) are skipped."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    tasks: list[Task] = []
    i = 0
    while len(tasks) < n:
        layout = generate_layout(f"{seed}-{i}", **layout_kwargs)
        i += 1
        if layout_fingerprint(layout) in exclude:
            continue
        k = len(layout.items)
        prompt = (f"Find and pick up all {k} item{'s' if k > 1 else ''} in the maze, then "
                  "walk onto the exit.")
        tasks.append(Task(f"{id_prefix}-{seed}-{len(tasks)}", prompt, None, layout.to_data()))
    return tasks


def layout_fingerprint(layout: Layout) -> tuple:
    return (layout.grid, layout.start, layout.exit, tuple(sorted(layout.items)))


# -- the environment ------------------------------------------------------------------------------


@dataclass
class GridworldEnv:
    """The maze POMDP (see the module docstring). One episode per instance at a time."""

    view_radius: int = 2
    max_turns: int = 100
    reward_mode: str = "dense"
    explore_weight: float = 0.2
    item_weight: float = 0.3
    success_reward: float = 1.0
    max_calls_per_turn: int = 1
    instructions: str = GRID_INSTRUCTIONS
    tools: tuple[Tool, ...] = field(init=False)
    _s: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.view_radius < 1 or self.max_turns < 1 or self.max_calls_per_turn < 1:
            raise ValueError("view_radius, max_turns and max_calls_per_turn must be >= 1")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if min(self.explore_weight, self.item_weight, self.success_reward) < 0:
            raise ValueError("reward weights must be >= 0")
        no_args = {"type": "object", "properties": {}, "additionalProperties": False}
        self.tools = (
            Tool("move", "Move one cell in a direction (north is up, east is right).",
                 {"type": "object",
                  "properties": {"direction": {"type": "string", "enum": list(DIRECTIONS)}},
                  "required": ["direction"], "additionalProperties": False},
                 lambda direction: self._move(direction)),
            Tool("pick_up", "Pick up the item on your cell.", no_args, lambda: self._pick_up()),
            Tool("look", "Describe your surroundings again (you do not move).", no_args,
                 lambda: self._status("You look around.")),
        )

    # -- episode --------------------------------------------------------------------------------

    def reset(self, task: Task, seed: int) -> list[Message]:
        del seed  # the task holds the layout
        layout = Layout.from_data(task.data)
        floor = {(r, c) for r, row in enumerate(layout.grid) for c, ch in enumerate(row)
                 if ch == FLOOR}
        self._s = {
            "layout": layout, "pos": layout.start, "items": set(layout.items), "carried": 0,
            "floor": floor, "seen": set(), "turn": 0, "done": False, "success": False,
            "invalid": 0,
        }
        self._see()
        self._s["initial_seen"] = len(self._s["seen"])
        system = self.instructions + "\n\n" + tool_system_prompt(self.tools,
                                                                 self.max_calls_per_turn)
        intro = (f"{task.prompt} You have {self.max_turns} turns.\n\n"
                 + self._status("You are at the start."))
        return [message("system", system), message("user", intro)]

    def step(self, action: Action) -> StepResult:
        s = self._s
        if s is None or s["done"]:
            raise RuntimeError("step() called before reset() or after the episode ended")
        s["turn"] += 1
        seen_before, carried_before = len(s["seen"]), s["carried"]
        info: dict[str, Any] = {}
        if action.errors:
            s["invalid"] += 1
            error = tool_error_step(action.errors, "\n\n" + self._status(""))
            obs, info = error.observation, error.info
        elif not action.tool_calls:
            s["invalid"] += 1
            obs = [message("user", "No tool call: call move, pick_up or look.\n\n"
                           + self._status(""))]
        elif len(action.tool_calls) > self.max_calls_per_turn:
            s["invalid"] += 1
            text = (f"Error: {len(action.tool_calls)} tool calls in one turn; at most "
                    f"{self.max_calls_per_turn} allowed. Nothing was done.\n\n" + self._status(""))
            obs = [message("tool", text, name="error")]
        else:
            by_name = {t.name: t for t in self.tools}
            obs = []
            for call in action.tool_calls:
                text = by_name[call.name].fn(**call.arguments)
                obs.append(message("tool", text, name=call.name, tool_call_id=call.id))
                if s["success"]:
                    break
        reward = self._reward(len(s["seen"]) - seen_before, s["carried"] - carried_before)
        if s["success"] or s["turn"] >= self.max_turns:
            s["done"] = True
            info["success"] = s["success"]
            info["truncated"] = not s["success"]
            info["optimal_turns"] = s["layout"].optimal_turns
            info["invalid_turns"] = s["invalid"]
            if not s["success"]:
                text = f"Out of turns ({self.max_turns}): the episode is over."
                obs.append(message("user", text))
        info.update(turn=s["turn"], items_collected=s["carried"], cells_seen=len(s["seen"]),
                    floor_cells=len(s["floor"]))
        return StepResult(obs, reward, s["done"], info)

    def _reward(self, new_seen: int, new_items: int) -> float:
        s = self._s
        reward = self.success_reward if s["success"] else 0.0
        if self.reward_mode == "dense":
            unseen_at_start = max(1, len(s["floor"]) - s["initial_seen"])
            reward += self.explore_weight * new_seen / unseen_at_start
            reward += self.item_weight * new_items / len(s["layout"].items)
        return reward

    # -- actions (each returns the observation text) -----------------------------------------

    def _move(self, direction: str) -> str:
        s = self._s
        dr, dc = DIRECTIONS[direction]
        r, c = s["pos"][0] + dr, s["pos"][1] + dc
        if (r, c) not in s["floor"]:
            s["invalid"] += 1
            return self._status(f"Blocked: there is a wall to the {direction}; you did not move.")
        s["pos"] = (r, c)
        self._see()
        text = f"You moved {direction}."
        if s["pos"] == s["layout"].exit:
            if not s["items"]:
                s["success"] = True
                return f"You moved {direction} onto the exit with every item. You escaped!"
            missing = len(s["items"])
            text += f" The exit is locked: you still need {missing} more item(s)."
        return self._status(text)

    def _pick_up(self) -> str:
        s = self._s
        if s["pos"] not in s["items"]:
            s["invalid"] += 1
            return self._status("There is no item here.")
        s["items"].discard(s["pos"])
        s["carried"] += 1
        return self._status("You picked up an item.")

    def _see(self) -> None:
        s, k = self._s, self.view_radius
        r0, c0 = s["pos"]
        for r in range(r0 - k, r0 + k + 1):
            for c in range(c0 - k, c0 + k + 1):
                if (r, c) in s["floor"]:
                    s["seen"].add((r, c))

    def view(self) -> list[str]:
        """The (2 view_radius + 1)-square around the agent as text rows (off-map is wall)."""
        s, k = self._s, self.view_radius
        grid, (r0, c0) = s["layout"].grid, s["pos"]
        rows = []
        for r in range(r0 - k, r0 + k + 1):
            row = []
            for c in range(c0 - k, c0 + k + 1):
                if (r, c) == (r0, c0):
                    row.append(AGENT)
                elif not (0 <= r < len(grid) and 0 <= c < len(grid[0])):
                    row.append(WALL)
                elif (r, c) in s["items"]:
                    row.append(ITEM)
                elif (r, c) == s["layout"].exit:
                    row.append(EXIT)
                else:
                    row.append(grid[r][c])
            rows.append("".join(row))
        return rows

    def _status(self, headline: str) -> str:
        s = self._s
        total = len(s["layout"].items)
        lines = [headline] if headline else []
        lines.append(f"Turn {s['turn']} of {self.max_turns}. You are at row {s['pos'][0]}, "
                     f"column {s['pos'][1]}. Items: {s['carried']} of {total} collected.")
        if s["pos"] in s["items"]:
            lines.append("There is an item here: call pick_up.")
        if s["pos"] == s["layout"].exit:
            lines.append("You are on the exit.")
        k = self.view_radius
        lines.append(f"View (rows {s['pos'][0] - k} to {s['pos'][0] + k}, columns "
                     f"{s['pos'][1] - k} to {s['pos'][1] + k}):")
        lines += self.view()
        return "\n".join(lines)


# -- the scripted solver --------------------------------------------------------------------------

_POS_RE = re.compile(r"You are at row (-?\d+), column (-?\d+)\. Items: (\d+) of (\d+) collected")
_VIEW_RE = re.compile(r"View \(rows (-?\d+) to (-?\d+), columns (-?\d+) to (-?\d+)\):")


def scripted_solver() -> Callable[[Sequence[Message]], str]:
    """A fresh frontier-exploration policy for one episode: call it with the messages the
    environment returned (reset's, then each step's observation); it returns the next
    assistant text (one tool call).

    It reads only the observation text: it builds a map from every view, picks up an item
    it stands on, walks (breadth-first shortest path over the known map) to the nearest
    known item or, when none is known, to the nearest known floor cell next to an unseen
    cell; with every item carried it walks to the exit once seen.
    """
    known: dict[Pos, str] = {}

    def policy(messages: Sequence[Message]) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        m = list(_POS_RE.finditer(text))[-1]
        pos = (int(m.group(1)), int(m.group(2)))
        carried, total = int(m.group(3)), int(m.group(4))
        v = list(_VIEW_RE.finditer(text))[-1]
        r0, c0 = int(v.group(1)), int(v.group(3))
        rows = text[v.end():].strip("\n").split("\n")[: int(v.group(2)) - r0 + 1]
        for i, row in enumerate(rows):
            for j, ch in enumerate(row):
                known[(r0 + i, c0 + j)] = FLOOR if ch == AGENT else ch
        if "There is an item here" in text[m.end():v.start()]:
            known[pos] = ITEM
            return render_tool_call("pick_up", {})
        items = {p for p, ch in known.items() if ch == ITEM}
        exits = {p for p, ch in known.items() if ch == EXIT}
        frontier = {
            p for p, ch in known.items() if ch != WALL
            and any((p[0] + dr, p[1] + dc) not in known for dr, dc in DIRECTIONS.values())
        }
        # A known goal may only be reachable through unexplored cells: explore then.
        goals = exits if carried == total else items
        step = _first_step(known, pos, goals) or _first_step(known, pos, frontier)
        if step is None:  # nothing left to explore or reach: look (never happens when solvable)
            return render_tool_call("look", {})
        return render_tool_call("move", {"direction": step})

    return policy


def _first_step(known: Mapping[Pos, str], start: Pos, targets: set[Pos]) -> str | None:
    """The first direction of a shortest path over known non-wall cells to any target."""
    first: dict[Pos, str | None] = {start: None}
    queue = deque([start])
    while queue:
        p = queue.popleft()
        if p in targets and p != start:
            return first[p]
        for name, (dr, dc) in DIRECTIONS.items():
            q = (p[0] + dr, p[1] + dc)
            if q not in first and known.get(q, WALL) != WALL:
                first[q] = first[p] or name
                queue.append(q)
    return None


# -- the suites -----------------------------------------------------------------------------------


def _gridworld_suite(
    name: str,
    *,
    size: int,
    num_items: int,
    loop_fraction: float,
    min_optimal_turns: int,
    view_radius: int,
    max_turns: int,
    reward_mode: str,
    explore_weight: float,
    item_weight: float,
    success_reward: float,
    num_train: int,
    num_eval: int,
    seed: int,
    gamma: float,
) -> EnvSuite:
    if min_optimal_turns > max_turns:
        raise ValueError(f"min_optimal_turns={min_optimal_turns} > max_turns={max_turns}: "
                         "no task could be solved")
    layout = {"size": size, "num_items": num_items, "loop_fraction": loop_fraction,
              "min_optimal_turns": min_optimal_turns}
    train = generate_gridworld_tasks(num_train, seed, id_prefix=f"{name}-train", **layout)
    seen = {layout_fingerprint(Layout.from_data(t.data)) for t in train}
    evals = generate_gridworld_tasks(num_eval, seed + 1, id_prefix=f"{name}-eval",
                                     exclude=seen, **layout)
    make = partial(GridworldEnv, view_radius=view_radius, max_turns=max_turns,
                   reward_mode=reward_mode, explore_weight=explore_weight,
                   item_weight=item_weight, success_reward=success_reward)
    make()  # validate the knobs now, not in a worker thread
    return EnvSuite(name, make, TaskSet({"train": train, "eval": evals}), gamma)


@ENVS.register("gridworld")
def gridworld_suite(
    *,
    size: int = 5,
    num_items: int = 3,
    loop_fraction: float = 0.1,
    min_optimal_turns: int = 30,
    view_radius: int = 2,
    max_turns: int = 100,
    reward_mode: str = "dense",
    explore_weight: float = 0.2,
    item_weight: float = 0.3,
    success_reward: float = 1.0,
    num_train: int = 1000,
    num_eval: int = 100,
    seed: int = 0,
    gamma: float = 1.0,
) -> EnvSuite:
    """Partially observed maze: collect `num_items` items, then reach the exit (dense
    rewards for exploring and collecting; see the module docstring).

    Difficulty: `size` (rooms per side; the grid is 2 size + 1 cells), `num_items`,
    `loop_fraction` (extra openings: more loops, fewer dead ends), `view_radius`,
    `min_optimal_turns` (every task needs at least this many turns even with the map
    known), `max_turns`."""
    return _gridworld_suite(
        "gridworld", size=size, num_items=num_items, loop_fraction=loop_fraction,
        min_optimal_turns=min_optimal_turns, view_radius=view_radius, max_turns=max_turns,
        reward_mode=reward_mode, explore_weight=explore_weight, item_weight=item_weight,
        success_reward=success_reward, num_train=num_train, num_eval=num_eval, seed=seed,
        gamma=gamma)


@ENVS.register("gridworld_sparse")
def gridworld_sparse_suite(**kwargs: Any) -> EnvSuite:
    """`gridworld` with the terminal reward only (`reward_mode="sparse"`); same knobs."""
    if kwargs.setdefault("reward_mode", "sparse") != "sparse":
        raise ValueError("gridworld_sparse is the sparse-reward suite; use gridworld for dense")
    suite = gridworld_suite(**kwargs)
    return EnvSuite("gridworld_sparse", suite.make_env, suite.tasks, suite.gamma)
