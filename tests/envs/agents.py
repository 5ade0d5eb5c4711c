"""Scripted agents that solve the generated search tasks through the real tools, turn by turn.

They read only what the environment shows them (search results, opened pages, calculator
results), so a broken index, tool or prompt makes them fail.
"""

from __future__ import annotations

import json
import re

from agentic_rl.envs import parse_action

_HIT_RE = re.compile(r"^\[(\S+)\] ([^:]+):", re.MULTILINE)


def tool_call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


class ToolDriver:
    """Sends tool calls to an env as assistant turns and returns the observation text."""

    def __init__(self, env):
        self.env, self.turns, self.tools_used = env, 0, []

    def call(self, name: str, **arguments) -> str:
        result = self.env.step(parse_action(tool_call(name, **arguments), self.env.tools))
        assert not result.done and result.reward == 0
        self.turns += 1
        self.tools_used.append(name)
        return result.observation[0]["content"]

    def answer(self, text: str):
        return self.env.step(parse_action(f"<answer>{text}</answer>", self.env.tools))

    def page(self, title: str) -> str:
        """Searches for `title` and opens the hit with exactly that title."""
        hits = self.call("search", query=title, k=5)
        doc_id = next(i for i, t in _HIT_RE.findall(hits) if t == title)
        return self.call("open", doc_id=doc_id)


def _fact(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return found.group(1)


def solve_search(driver: ToolDriver, question: str) -> str:
    """Answers a generated two-hop question by searching for each hop."""
    if m := re.fullmatch(r"In which city was the founder of (.+) born\?", question):
        founder = _fact(r"founded in \d+ by (.+?)\.", driver.page(m[1]))
        return _fact(r"born in \d+ in (\w+)\.", driver.page(founder))
    if m := re.fullmatch(r"In which country are the headquarters of (.+)\?", question):
        city = _fact(r"headquarters are in (\w+)\.", driver.page(m[1]))
        return _fact(r"is a city in (\w+)", driver.page(city))
    if m := re.fullmatch(r"Who founded the company that (.+) works for\?", question):
        company = _fact(r"works at (.+)\.", driver.page(m[1]))
        return _fact(r"founded in \d+ by (.+?)\.", driver.page(company))
    if m := re.fullmatch(r"Which river flows through the city where (.+) was born\?", question):
        city = _fact(r"born in \d+ in (\w+)\.", driver.page(m[1]))
        return _fact(r"on the (\w+) River", driver.page(city))
    m = re.fullmatch(r"In what year was the company that employs (.+) founded\?", question)
    assert m, question
    company = _fact(r"works at (.+)\.", driver.page(m[1]))
    return _fact(r"founded in (\d+)", driver.page(company))


def _number(text: str) -> str:
    return text.replace(",", "")


def solve_mixed(driver: ToolDriver, question: str) -> str:
    """Answers a search + calculator question: facts by search, arithmetic by the calculator."""
    if m := re.fullmatch(r"What is the combined population of the cities where (.+) and (.+) "
                         r"have their headquarters\?", question):  # fmt: skip
        pops = []
        for company in (m[1], m[2]):
            city = _fact(r"headquarters are in (\w+)\.", driver.page(company))
            pops.append(_number(_fact(r"population of ([\d,]+)", driver.page(city))))
        return driver.call("calculator", expression=f"{pops[0]} + {pops[1]}")
    if m := re.fullmatch(r"How many more employees does (.+) have than (.+)\?", question):
        a, b = (_number(_fact(r"has ([\d,]+) employees", driver.page(c))) for c in (m[1], m[2]))
        return driver.call("calculator", expression=f"{a} - {b}")
    m = re.fullmatch(r"What is the average number of employees of (.+), (.+) and (.+)\? "
                     r"Give the exact value\.", question)  # fmt: skip
    assert m, question
    counts = [_number(_fact(r"has ([\d,]+) employees", driver.page(c))) for c in m.groups()]
    return driver.call("calculator", expression=f"({' + '.join(counts)}) / 3")
