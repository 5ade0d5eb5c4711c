"""Tasks from a tool server: a model writes questions that need the tools, and only the
ones a real tool call answers are kept.

Given any tools (e.g. an MCP server's, through `McpToolset`) and a chat function
`messages -> text` (the judge's `ServiceChat` over any local model, or `OpenAIChat` over
any OpenAI-compatible URL), `generate_tool_tasks` runs:

1. Exploration: every tool that needs no arguments is called once; its results are the
   first *notes* (what the server has told us so far, e.g. the list of countries).
2. Proposals, round-robin over the tools that take arguments: the model sees worked
   examples (as chat turns, on other tools), then the tool to use and a value from the
   notes that fits it (a name, or two numbers for a numeric tool), and replies with JSON
   `{"question": ..., "call": {"name": ..., "arguments": {...}}}`.
3. The solvability check, for real: arguments the tool's schema does not name are
   dropped (counted as "repaired"), then the call is validated against the schema and
   executed on the server. A proposal is kept only if the call succeeds with a
   non-empty result, every string argument appears in the question (the question
   determines the call; numeric arguments must be numbers of the question), the result
   does not appear in the question (the question does
   not give its answer away), and the question is new. The result is the task's
   reference answer and the call its reference solution (`task.data["calls"]`).
   Each successful call's result joins the notes, so later proposals can build on it
   (the cities a `list_cities` call returned become hints for `city_facts`).

Every rejection is counted by reason in the returned stats, so a weak generator shows up
as numbers (e.g. "unparsed": the model did not write the JSON). Deterministic for a
deterministic chat function (greedy judges are).

Imports: stdlib and agentic_rl.envs (tools, base) only; no model, no jax.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentic_rl.envs.base import Task
from agentic_rl.envs.rewards import normalize_text
from agentic_rl.envs.tools.base import Tool, execute_tool, validate_arguments

ChatFn = Callable[[list[dict[str, str]]], str]

SYSTEM = ("You write test questions for an assistant that answers by calling tools. Each "
          "question must need the named tool and must not contain its answer. Reply with "
          "JSON only.")
ASK = "Tool: {tool}\nValue: {hint}\nWrite one question that needs this tool for this value."
# Worked examples as chat turns, on tools unlike any server's: they show the format (a
# 135M model copies a shown exchange; from a described format alone it copied the
# example's tool name every time), not answers.
DEMOS = (
    ("building_height(building: string): The height of a building in metres.",
     "Brenner tower", '{"question": "How tall is the Brenner tower?", "call": {"name": '
     '"building_height", "arguments": {"building": "Brenner tower"}}}'),
    ("rivers_of(region: string): The rivers of one region.", "Osterdal",
     '{"question": "Which rivers flow through Osterdal?", "call": {"name": "rivers_of", '
     '"arguments": {"region": "Osterdal"}}}'),
    ("multiply(x: number, y: number): x * y.", "12 and 31",
     '{"question": "What is 12 times 31?", "call": {"name": "multiply", "arguments": '
     '{"x": 12, "y": 31}}}'),
)
REASONS = ("unparsed", "unknown_tool", "bad_arguments", "tool_error", "empty_result",
           "not_grounded", "leaks_answer", "duplicate")
_MAX_JSON_STARTS = 64
_HINT_SPLIT = re.compile(r"[,;\n]|:\s")


def signature(tool: Tool) -> str:
    """`name(arg: type, ...): description`."""
    props = tool.parameters.get("properties", {}) or {}
    args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
    return f"{tool.name}({args}): {tool.description}"


def generation_messages(tool: Tool, hint: str) -> list[dict[str, str]]:
    """The generator's conversation: the system prompt, the worked examples as turns,
    then the ask for `tool` with `hint`."""
    msgs = [{"role": "system", "content": SYSTEM}]
    for sig, value, reply in DEMOS:
        msgs += [{"role": "user", "content": ASK.replace("{tool}", sig)
                  .replace("{hint}", value)}, {"role": "assistant", "content": reply}]
    msgs.append({"role": "user", "content": ASK.replace("{tool}", signature(tool))
                 .replace("{hint}", hint)})
    return msgs


def parse_proposal(text: Any) -> tuple[str, str, dict[str, Any]] | None:
    """(question, tool name, arguments) from a generator's reply, or None. Never raises.

    Takes the first JSON object in the text (code fences and prose around it tolerated)
    that has a non-empty string "question" and a call: {"call": {"name", "arguments"}}
    or, flattened, {"name"/"tool", "arguments"} next to the question."""
    if not isinstance(text, str):
        return None
    decoder = json.JSONDecoder()
    for m in list(re.finditer(r"\{", text))[:_MAX_JSON_STARTS]:
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            continue
        if not isinstance(value, dict):
            continue
        question = value.get("question")
        call = value.get("call") if isinstance(value.get("call"), dict) else value
        name = call.get("name", call.get("tool"))
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                continue
        if (isinstance(question, str) and question.strip() and isinstance(name, str)
                and isinstance(arguments, dict)):
            return question.strip(), name, arguments
    return None


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _hints(notes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Candidate argument values from the notes, in order of appearance, without
    repeats: (names: the comma/line-separated pieces of each result without digits,
    numbers: the numbers in the results)."""
    names: dict[str, None] = {}
    numbers: dict[str, None] = {}
    for note in notes:
        result = note.split(" -> ", 1)[-1]
        for piece in _HINT_SPLIT.split(result):
            piece = piece.strip().strip(".")
            if piece and len(piece) <= 40 and not any(c.isdigit() for c in piece):
                names.setdefault(piece, None)
        for num in _NUMBER.findall(result):
            numbers.setdefault(num, None)
    return list(names), list(numbers)


def hint_for(tool: Tool, notes: Sequence[str], k: int) -> str:
    """The k-th value (round-robin) from the notes that fits `tool`: two numbers for a tool
    whose required arguments are all numbers, else a name."""
    names, numbers = _hints(notes)
    props = tool.parameters.get("properties", {}) or {}
    required = tool.parameters.get("required") or []
    numeric = required and all(props.get(r, {}).get("type") in ("number", "integer")
                               for r in required)
    if numeric:
        if len(numbers) < 2:
            return f"{2 + k} and {7 + 3 * k}"
        return f"{numbers[k % len(numbers)]} and {numbers[(k + 1) % len(numbers)]}"
    return names[k % len(names)] if names else "(any)"


def _numbers(text: str) -> set[float]:
    return {float(x) for x in _NUMBER.findall(text)}


def repair_arguments(tool: Tool, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Drops arguments the tool's schema does not name (small generators add fields from
    the tool's description, e.g. `population` to `city_facts(city)`), unless the schema
    allows extra properties. Returns (arguments, whether any were dropped)."""
    props = tool.parameters.get("properties") or {}
    if tool.parameters.get("additionalProperties", False) or not props:
        return dict(arguments), False
    kept = {k: v for k, v in arguments.items() if k in props}
    return kept, len(kept) != len(arguments)


def check_proposal(tools: Mapping[str, Tool], question: str, name: str,
                   arguments: Mapping[str, Any], seen: set[str]) -> tuple[str | None, str]:
    """(reason it is rejected or None, the call's result). Executes the call.

    Grounded: every string argument occurs in the question (normalised) and every
    numeric argument is one of the question's numbers, so the question determines the
    call (a question "37 minus 19" with the call subtract(37, -19) is rejected)."""
    tool = tools.get(name)
    if tool is None:
        return "unknown_tool", ""
    if validate_arguments(tool, dict(arguments)) is not None:
        return "bad_arguments", ""
    result = execute_tool(tool, dict(arguments))
    if not result.ok:
        return "tool_error", result.content
    content = result.content.strip()
    if not content:
        return "empty_result", ""
    q = normalize_text(question)
    numbers = _numbers(question)
    for v in arguments.values():
        if isinstance(v, str) and normalize_text(v) not in q:
            return "not_grounded", content
        if (isinstance(v, (int, float)) and not isinstance(v, bool)
                and float(v) not in numbers):
            return "not_grounded", content
    if normalize_text(content) in q:
        return "leaks_answer", content
    if q in seen:
        return "duplicate", content
    return None, content


def generate_tool_tasks(chat: ChatFn, tools: Sequence[Tool], n: int, *,
                        max_attempts: int | None = None, prefix: str = "mcp",
                        explore: Sequence[str] | None = None
                        ) -> tuple[list[Task], dict[str, int]]:
    """Up to `n` solvable tasks from at most `max_attempts` (default 4n) proposals; see
    the module docstring. `explore`: the no-argument tools to call first (None: all of
    them; () : none). Every proposed call is executed, so point this at servers whose
    tools are safe to call (read-only). Returns (tasks, stats: attempts, kept, explored
    and each rejection reason)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    max_attempts = 4 * n if max_attempts is None else max_attempts
    by_name = {t.name: t for t in tools}
    needs_args = [t for t in tools if (t.parameters.get("required") or [])]
    if not needs_args:
        raise ValueError("no tool takes arguments: nothing to ask questions about")
    stats: Counter[str] = Counter({r: 0 for r in (*REASONS, "explored", "repaired")})
    notes: list[str] = []
    for t in tools:
        if t not in needs_args and (explore is None or t.name in explore):
            r = execute_tool(t, {})
            stats["explored"] += 1
            if r.ok and r.content.strip():
                notes.append(f"{t.name}() -> {r.content.strip()}")
    tasks: list[Task] = []
    seen: set[str] = set()
    for attempt in range(max_attempts):
        if len(tasks) >= n:
            break
        stats["attempts"] += 1
        focus = needs_args[attempt % len(needs_args)]
        messages = generation_messages(focus, hint_for(focus, notes,
                                                       attempt // len(needs_args)))
        proposal = parse_proposal(chat(messages))
        if proposal is None:
            stats["unparsed"] += 1
            continue
        question, name, arguments = proposal
        if name in by_name:
            arguments, repaired = repair_arguments(by_name[name], arguments)
            stats["repaired"] += repaired
        reason, result = check_proposal(by_name, question, name, arguments, seen)
        if result and reason in (None, "not_grounded", "leaks_answer", "duplicate"):
            note = f"{name}({json.dumps(arguments, sort_keys=True)}) -> {result}"
            if note not in notes:
                notes.append(note)
        if reason is not None:
            stats[reason] += 1
            continue
        seen.add(normalize_text(question))
        tasks.append(Task(id=f"{prefix}-{len(tasks)}", prompt=question, answer=result,
                          data={"calls": [{"name": name, "arguments": dict(arguments)}]}))
    stats["kept"] = len(tasks)
    return tasks, dict(stats)


def write_tasks_jsonl(path, tasks: Sequence[Task]) -> None:
    """One JSON object per task: id, prompt, answer, data."""
    with open(path, "w") as f:
        for t in tasks:
            f.write(json.dumps({"id": t.id, "prompt": t.prompt, "answer": t.answer,
                                "data": dict(t.data)}) + "\n")
