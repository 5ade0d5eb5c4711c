"""Sample trajectories: JSONL records and a static, self-contained HTML viewer.

At each evaluation the loop saves a few training episodes (with per-turn rewards and
advantages) and evaluation episodes to `workdir/trajectories/step_<n>.jsonl` and renders
`step_<n>.html` next to it: one card per episode with the conversation, tool calls,
tool errors, and each assistant turn's reward and mean advantage. A multi-agent
program's rows say which agent they are (one colour per agent) and carry the team's
transcript, drawn below with each agent's messages in its colour and every hand-off
from one agent to the next marked.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def turn_advantages(advantages: np.ndarray, turn_index: np.ndarray,
                    loss_mask: np.ndarray, num_turns: int) -> list[float]:
    """Mean advantage over the sampled tokens of each turn of one row."""
    out = []
    for k in range(num_turns):
        sel = loss_mask & (turn_index == k)
        out.append(float(advantages[sel].mean()) if sel.any() else 0.0)
    return out


def trajectory_record(meta: Mapping[str, Any], *, step: int, kind: str,
                      turn_rewards: Sequence[float] | None = None,
                      advantages: Sequence[float] | None = None) -> dict[str, Any]:
    """A JSON-safe record of one episode from its rollout metadata."""
    n = int(meta.get("num_turns", 0))
    rewards = list(turn_rewards[:n]) if turn_rewards is not None else [
        None] * n
    return {
        "step": step,
        "kind": kind,
        "task_id": meta.get("task_id"),
        "episode_id": meta.get("episode_id"),
        "return": meta.get("return"),
        "success": meta.get("success"),
        "termination": meta.get("termination"),
        "messages": list(meta.get("messages", [])),
        "tool_calls": list(meta.get("tool_calls", [])),
        "tool_errors": list(meta.get("tool_errors", [])),
        "turn_rewards": [None if r is None else float(r) for r in rewards],
        "turn_advantages": None if advantages is None else [float(a) for a in advantages[:n]],
        "agent": meta.get("agent"),
        "transcript": list((meta.get("info") or {}).get("transcript", [])),
    }


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f6;color:#222}
.ep{background:#fff;border-radius:8px;padding:1em;margin:1em 0;box-shadow:0 1px 3px #0002}
.head{font-weight:600;margin-bottom:.5em}.ok{color:#187a2f}.bad{color:#b3261e}
.msg{border-left:4px solid #ccc;margin:.4em 0;padding:.3em .6em;white-space:pre-wrap;
font-family:ui-monospace,monospace;font-size:13px}
.system{border-color:#999;background:#fafafa}.user{border-color:#3b82f6;background:#eff6ff}
.assistant{border-color:#10b981;background:#ecfdf5}.tool{border-color:#f59e0b;background:#fffbeb}
.role{font-weight:600;font-family:system-ui}.turn{float:right;font-family:system-ui;color:#555}
.calls{color:#7c3aed}.errors{color:#b3261e}
.agent{display:inline-block;padding:0 .5em;border-radius:4px;color:#fff;font-weight:600}
.team{margin-top:.6em;border-top:1px dashed #bbb;padding-top:.4em}
.said{border-left:6px solid;margin:.3em 0;padding:.2em .6em;white-space:pre-wrap;
font-family:ui-monospace,monospace;font-size:13px;background:#fafafa}
.handoff{color:#555;font-size:12px;margin:.2em 0 .2em 1em}
"""

# one colour per agent: the page's agents in order of appearance get these in turn
_PALETTE = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626",
            "#4d7c0f")


def agent_colours(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{agent name: colour} for the agents of `records`, distinct up to 8 agents."""
    names: dict[str, None] = {}
    for r in records:
        if r.get("agent") and r.get("transcript"):
            names.setdefault(str(r["agent"]))
        for said in r.get("transcript") or ():
            names.setdefault(str(said.get("agent", "?")))
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}


def _agent_badge(name: str, colours: Mapping[str, str]) -> str:
    return (f'<span class="agent" style="background:{colours.get(name, "#555")}" '
            f'data-agent="{_esc(name)}">{_esc(name)}</span>')


def _transcript_html(transcript: Sequence[Mapping[str, Any]], colours: Mapping[str, str]
                     ) -> str:
    """The team's messages in order, coloured by agent, hand-offs marked."""
    parts = ['<div class="team"><div class="role">team transcript</div>']
    prev = None
    for said in transcript:
        name = str(said.get("agent", "?"))
        if prev is not None and name != prev:
            parts.append(f'<div class="handoff">hand-off: {_esc(prev)} &rarr; {_esc(name)}'
                         "</div>")
        parts.append(f'<div class="said" style="border-color:{colours.get(name, "#555")}">'
                     f"{_agent_badge(name, colours)}\n{_esc(said.get('text', ''))}</div>")
        prev = name
    parts.append("</div>")
    return "".join(parts)


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _episode_html(rec: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    success = rec.get("success")
    cls = "ok" if success else "bad"
    ret = rec.get("return")
    ret_s = f"{ret:.3f}" if isinstance(ret, (int, float)) else "-"
    agent = rec.get("agent")
    who = f"{_agent_badge(str(agent), colours)} " if agent and rec.get("transcript") else ""
    parts = [
        f'<div class="ep"><div class="head">{who}[{_esc(rec.get("kind"))}] task '
        f'{_esc(rec.get("task_id"))} &middot; return {ret_s} &middot; '
        f'<span class="{cls}">success={_esc(success)}</span> &middot; '
        f'{_esc(rec.get("termination"))}</div>'
    ]
    rewards = rec.get("turn_rewards") or []
    advs = rec.get("turn_advantages")
    calls = rec.get("tool_calls") or []
    errors = rec.get("tool_errors") or []
    turn = 0
    for m in rec.get("messages", []):
        role = m.get("role", "?")
        badge = ""
        extra = ""
        if role == "assistant":
            bits = []
            if turn < len(rewards) and rewards[turn] is not None:
                bits.append(f"reward {rewards[turn]:+.3f}")
            if advs is not None and turn < len(advs):
                bits.append(f"advantage {advs[turn]:+.3f}")
            badge = f'<span class="turn">turn {turn}' + (
                f" &middot; {' &middot; '.join(bits)}" if bits else "") + "</span>"
            tc = [c for c in calls if c.get("turn") == turn]
            te = [e for e in errors if e.get("turn") == turn]
            if tc:
                extra += '<div class="calls">tool calls: ' + _esc(
                    json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in tc])
                ) + "</div>"
            if te:
                extra += '<div class="errors">tool errors: ' + _esc(
                    "; ".join(f"{e['kind']}: {e['message']}" for e in te)) + "</div>"
            turn += 1
        parts.append(f'<div class="msg {_esc(role)}">{badge}<span class="role">{_esc(role)}'
                     f"</span>\n{_esc(m.get('content', ''))}{extra}</div>")
    if rec.get("transcript"):
        parts.append(_transcript_html(rec["transcript"], colours))
    parts.append("</div>")
    return "".join(parts)


def render_html(records: Sequence[Mapping[str, Any]], title: str) -> str:
    colours = agent_colours(records)
    body = "".join(_episode_html(r, colours) for r in records)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>{body}</body></html>")


def save_trajectories(directory: Path, step: int, records: Sequence[Mapping[str, Any]]) -> Path:
    """Writes step_<n>.jsonl and step_<n>.html; returns the HTML path."""
    stem = directory / f"step_{step:06d}"
    write_jsonl(stem.with_suffix(".jsonl"), records)
    page = stem.with_suffix(".html")
    page.write_text(render_html(records, f"trajectories at step {step}"))
    return page


def records_from_batch(metas: Sequence[Mapping[str, Any]], turn_rewards: np.ndarray,
                       advantages: np.ndarray, turn_index: np.ndarray, loss_mask: np.ndarray,
                       *, step: int, limit: int) -> list[dict[str, Any]]:
    """Training episodes with per-turn rewards and mean advantages."""
    out = []
    for b, meta in enumerate(metas[:limit]):
        k = int(meta.get("num_turns", 0))
        adv = turn_advantages(advantages[b], turn_index[b], loss_mask[b], k)
        out.append(trajectory_record(meta, step=step, kind="train",
                                     turn_rewards=list(turn_rewards[b]), advantages=adv))
    return out
