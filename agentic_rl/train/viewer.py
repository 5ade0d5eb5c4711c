"""Sample trajectories: JSONL records and a static, self-contained HTML viewer.

At each evaluation the loop saves a few training episodes (with per-turn rewards and
advantages) and evaluation episodes to `workdir/trajectories/step_<n>.jsonl` and renders
`step_<n>.html` next to it. Every message of a record says where it came from (`origin`:
prompt / policy / environment) and which policy turn it belongs to (`turn`), so worked
examples in the prompt are never mistaken for the policy's turns. A page has one card per
episode: the prompt collapsed ("prompt · 14 messages: system, 3 worked examples, task"),
then each policy turn labelled "turn k of n" with its reward, mean advantage, tool calls
and tool errors, followed by the environment's observation of it. A toolbar filters the
cards (the URL hash: #success, #failure, #train, #eval) and opens every prompt. A
multi-agent program's rows say which agent they are (one colour per agent) and carry the
team's transcript, drawn below with each agent's messages in its colour and every
hand-off from one agent to the next marked. `notebooks/look_at_rollouts.ipynb` reads the
same records (`load_trajectories`).

Imports: the standard library and numpy only.
"""

from __future__ import annotations

import html
import json
from collections import Counter
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


ORIGINS = ("prompt", "policy", "environment")


def infer_origins(messages: Sequence[Mapping[str, Any]], num_turns: int) -> list[str]:
    """Origins for metadata written before rollouts recorded them: the last `num_turns`
    assistant messages are the policy's turns; what precedes the first is the prompt
    (system, demonstrations, task), what follows it the environment's observations."""
    policy = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    policy = set(policy[len(policy) - min(num_turns, len(policy)):])
    first = min(policy, default=len(messages))
    return ["policy" if i in policy else "prompt" if i < first else "environment"
            for i in range(len(messages))]


def _annotated_messages(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The episode's messages, each with its `origin` and `turn`: the policy's k-th turn
    has turn k, the environment's messages after it turn k too, prompt messages None."""
    messages = list(meta.get("messages", []))
    origins = meta.get("origins")
    if origins is None or len(origins) != len(messages):
        origins = infer_origins(messages, int(meta.get("num_turns", 0)))
    out, turn = [], -1
    for m, origin in zip(messages, origins):
        if origin not in ORIGINS:
            raise ValueError(f"message origin must be one of {ORIGINS}, got {origin!r}")
        turn += origin == "policy"
        out.append({**m, "origin": origin, "turn": None if origin == "prompt" else turn})
    return out


def trajectory_record(meta: Mapping[str, Any], *, step: int, kind: str,
                      turn_rewards: Sequence[float] | None = None,
                      advantages: Sequence[float] | None = None) -> dict[str, Any]:
    """A JSON-safe record of one episode from its rollout metadata.

    Every message carries `origin` (prompt / policy / environment) and `turn`, so a
    reader tells worked examples in the prompt from what the policy sampled; the
    per-turn lists (`turn_rewards`, `turn_advantages`, the `turn` of each tool call) are
    indexed by the policy's turns only."""
    n = int(meta.get("num_turns", 0))
    if turn_rewards is None:  # an evaluation episode: the rewards its rollout recorded
        turn_rewards = meta.get("turn_rewards")
    rewards = list(turn_rewards[:n]) if turn_rewards is not None else []
    rewards += [None] * (n - len(rewards))
    return {
        "step": step,
        "kind": kind,
        "task_id": meta.get("task_id"),
        "task_subset": meta.get("task_subset"),
        "episode_id": meta.get("episode_id"),
        "return": meta.get("return"),
        "success": meta.get("success"),
        "termination": meta.get("termination"),
        "num_turns": n,
        "num_tokens": meta.get("num_tokens"),
        "num_sampled_tokens": meta.get("num_sampled_tokens"),
        "messages": _annotated_messages(meta),
        "tool_calls": list(meta.get("tool_calls", [])),
        "tool_errors": list(meta.get("tool_errors", [])),
        "turn_rewards": [None if r is None else float(r) for r in rewards],
        "turn_advantages": None if advantages is None else [float(a) for a in advantages[:n]],
        "agent": meta.get("agent"),
        "transcript": list((meta.get("info") or {}).get("transcript", [])),
    }


def load_trajectories(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every saved episode record of a run (`run_dir/trajectories/step_*.jsonl`), in step
    order; the notebook notebooks/look_at_rollouts.ipynb starts from this."""
    directory = Path(run_dir) / "trajectories"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: is {run_dir} a run directory "
                                "(the --workdir of a training run)?")
    out = []
    for path in sorted(directory.glob("step_*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def episode_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per episode record: the columns of a table of episodes."""
    return [{"step": r.get("step"), "kind": r.get("kind"), "task": r.get("task_id"),
             "subset": r.get("task_subset") or "", "agent": r.get("agent") or "",
             "success": r.get("success"),
             "return": r.get("return"), "turns": r.get("num_turns"),
             "sampled_tokens": r.get("num_sampled_tokens"),
             "tool_calls": len(r.get("tool_calls") or ()),
             "tool_errors": len(r.get("tool_errors") or ()),
             "termination": r.get("termination")} for r in records]


def table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain HTML table of `episode_rows` (no pandas needed)."""
    if not rows:
        return "<p>no episodes</p>"
    cols = list(rows[0])

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else _esc("" if v is None else v)

    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table class='episodes'><tr>{head}</tr>{body}</table>"


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """`n` items evenly spaced over `items`, first and last included (all if fewer): the
    saved eval sample then covers every part of the split (e.g. its harder subset at the
    end), not only its first tasks."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return list(items[:n])
    return [items[round(k * (len(items) - 1) / (n - 1))] for k in range(n)]


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
details.prompt{border:1px dashed #bbb;border-radius:6px;padding:.2em .6em;margin:.4em 0;
background:#f3f3f3}details.prompt summary{cursor:pointer;color:#555;font-size:13px}
details.prompt .msg{opacity:.75}.policy{box-shadow:inset 0 0 0 1px #10b98155}
.environment .turn{color:#92400e}#toolbar{position:sticky;top:0;background:#f6f6f6;
padding:.4em 0;font-size:14px}#toolbar a{margin:0 .2em}#toolbar a.on{font-weight:700}
.summary{color:#555;font-size:12px}.subset{color:#555;font-weight:400}
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


def _prompt_summary(prompt: Sequence[Mapping[str, Any]]) -> str:
    """'prompt · 8 messages: system, 3 worked examples, task' for the collapsed prompt."""
    roles = [m.get("role") for m in prompt]
    parts = ["system"] * (roles.count("system") > 0)
    users = [i for i, r in enumerate(roles) if r == "user"]
    task_last = bool(users) and users[-1] == len(roles) - 1
    examples = len(users) - task_last if "assistant" in roles else 0
    if examples:
        parts.append(f"{examples} worked example{'s' * (examples != 1)}")
    if task_last:
        parts.append("task")
    n = len(prompt)
    return f"prompt &middot; {n} message{'s' * (n != 1)}" + (
        f": {', '.join(parts)}" if parts else "")


def _message_html(m: Mapping[str, Any], badge: str = "", extra: str = "", label: str = ""
                  ) -> str:
    role, origin, turn = m.get("role", "?"), m.get("origin", "prompt"), m.get("turn")
    attrs = f' data-origin="{_esc(origin)}"' + (
        f' data-turn="{int(turn)}"' if turn is not None else "")
    return (f'<div class="msg {_esc(role)} {_esc(origin)}"{attrs}>{badge}'
            f'<span class="role">{_esc(label or role)}</span>\n'
            f"{_esc(m.get('content', '') or '')}{extra}</div>")


def _turn_extra(turn: int, calls, errors) -> str:
    tc = [c for c in calls if c.get("turn") == turn]
    te = [e for e in errors if e.get("turn") == turn]
    out = ""
    if tc:
        out += '<div class="calls">tool calls: ' + _esc(json.dumps(
            [{"name": c["name"], "arguments": c["arguments"]} for c in tc])) + "</div>"
    return out + _errors_html(te)


def _errors_html(errors) -> str:
    if not errors:
        return ""
    return '<div class="errors">tool errors: ' + _esc("; ".join(
        f"{e.get('kind')}: {e.get('message', '')}" for e in errors)) + "</div>"


def _episode_html(rec: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    """One card: head, the prompt collapsed, then each policy turn (with its reward,
    advantage and tool calls) followed by the environment's observation of it."""
    success = rec.get("success")
    cls = "ok" if success else "bad"
    ret = rec.get("return")
    ret_s = f"{ret:.3f}" if isinstance(ret, (int, float)) else "-"
    agent = rec.get("agent")
    who = f"{_agent_badge(str(agent), colours)} " if agent and rec.get("transcript") else ""
    messages = rec.get("messages", [])
    if messages and "origin" not in messages[0]:  # a record of an older version
        messages = _annotated_messages({"messages": messages,
                                        "num_turns": rec.get("num_turns", len(
                                            rec.get("turn_rewards") or []))})
    n_turns = sum(m["origin"] == "policy" for m in messages)
    subset = (f' <span class="subset">({_esc(rec["task_subset"])})</span>'
              if rec.get("task_subset") else "")
    parts = [
        f'<div class="ep" data-kind="{_esc(rec.get("kind"))}" '
        f'data-success="{str(bool(success)).lower()}" data-task="{_esc(rec.get("task_id"))}">'
        f'<div class="head">{who}[{_esc(rec.get("kind"))}] task '
        f'{_esc(rec.get("task_id"))}{subset} &middot; return {ret_s} &middot; '
        f'<span class="{cls}">success={_esc(success)}</span> &middot; '
        f'{_esc(rec.get("termination"))} &middot; {n_turns} turn{"s" * (n_turns != 1)}</div>'
    ]
    rewards = rec.get("turn_rewards") or []
    advs = rec.get("turn_advantages")
    calls = rec.get("tool_calls") or []
    errors = rec.get("tool_errors") or []
    prompt = [m for m in messages if m["origin"] == "prompt"]
    if prompt:
        body = [_message_html(m, label=m.get("role", "?") + (
            " (worked example)" if m.get("role") in ("assistant", "tool") else ""))
            for m in prompt]
        parts.append(f'<details class="prompt" data-origin="prompt"><summary>'
                     f'{_prompt_summary(prompt)}</summary>{"".join(body)}</details>')
    for m in messages:
        turn = m["turn"]
        if m["origin"] == "policy":
            bits = [f"turn {turn + 1} of {n_turns}"]
            if turn < len(rewards) and rewards[turn] is not None:
                bits.append(f'<span class="reward">reward {rewards[turn]:+.3f}</span>')
            if advs is not None and turn < len(advs):
                bits.append(f'<span class="advantage">advantage {advs[turn]:+.3f}</span>')
            badge = f'<span class="turn">{" &middot; ".join(bits)}</span>'
            parts.append(_message_html(m, badge, _turn_extra(turn, calls, errors)))
        elif m["origin"] == "environment":
            badge = f'<span class="turn">observation after turn {turn + 1}</span>'
            parts.append(_message_html(m, badge))
    # errors not tied to a turn (e.g. a gateway's malformed calls)
    parts.append(_errors_html([e for e in errors if not 0 <= int(e.get("turn", -1)) < n_turns]))
    if rec.get("transcript"):
        parts.append(_transcript_html(rec["transcript"], colours))
    parts.append("</div>")
    return "".join(parts)


# The toolbar's filter follows the URL hash (#all, #success, #failure, #train, #eval), so
# a filtered view can be linked to; "expand prompts" opens every collapsed prompt.
_SCRIPT = """
function arlApply(){
  const f=(location.hash||'#all').slice(1);let shown=0,total=0;
  document.querySelectorAll('.ep').forEach(e=>{total++;
    const ok=f==='all'||(f==='success'&&e.dataset.success==='true')||
      (f==='failure'&&e.dataset.success!=='true')||e.dataset.kind===f;
    e.hidden=!ok;shown+=ok;});
  document.querySelectorAll('#toolbar a').forEach(a=>a.classList.toggle('on',a.hash==='#'+f));
  document.getElementById('count').textContent='showing '+shown+' of '+total+' episodes';
}
function arlExpand(open){document.querySelectorAll('details.prompt').forEach(d=>d.open=open);}
window.addEventListener('hashchange',arlApply);
document.addEventListener('DOMContentLoaded',arlApply);
"""


def _toolbar(records: Sequence[Mapping[str, Any]]) -> str:
    kinds = Counter(str(r.get("kind")) for r in records)
    ok = sum(bool(r.get("success")) for r in records)
    links = " ".join(f'<a href="#{k}">{k}</a>' for k in ("all", "success", "failure",
                                                         *kinds))
    counts = ", ".join(f"{v} {k}" for k, v in kinds.items())
    return (f'<div id="toolbar">show: {links} &middot; <label><input type="checkbox" '
            f'onchange="arlExpand(this.checked)"> expand prompts</label> &middot; '
            f'<span id="count"></span><div class="summary">{len(records)} episodes'
            f'{" (" + counts + ")" if counts else ""}, {ok} successful</div></div>')


def render_html(records: Sequence[Mapping[str, Any]], title: str) -> str:
    colours = agent_colours(records)
    body = "".join(_episode_html(r, colours) for r in records)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>{_esc(title)}</h1>{_toolbar(records)}{body}</body></html>")


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
