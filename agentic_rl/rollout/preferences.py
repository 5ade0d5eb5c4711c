"""Ranked preference pairs from a JSONL file, laid out as an `EpisodeBatch` for offline DPO.

One pair per line::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "chosen": "the preferred reply", "rejected": "the other reply"}

(`"prompt": "text"` stands for one user message). Each pair becomes two rows of one
group, the chosen one with return 1 and the rejected one with return 0, so the DPO
learner's best-vs-worst pairing recovers exactly the file's pairs. The prompt is encoded
with the chat format, as in a rollout; a reply is one assistant turn, its text encoded
literally (a reply holding `<|im_end|>` cannot end its turn early) and closed with the
end-of-turn token, all of it in the loss mask.

Imports: the rollout modules only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentic_rl.rollout.batch import EpisodeBatch, EpisodeRecord, collate

_ROLES = ("system", "user", "assistant", "tool")


def load_preference_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The pairs of a JSONL file as {"messages", "chosen", "rejected"} dicts. A line that
    is not such a pair raises ValueError naming the file, the line and the problem."""
    path = Path(path)
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a pair must be a JSON object")
        messages = row.get("messages")
        if messages is None and isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: needs 'messages' (a non-empty list) or 'prompt' (text)")
        for m in messages:
            if (not isinstance(m, dict) or m.get("role") not in _ROLES
                    or not isinstance(m.get("content"), str)):
                raise ValueError(f"{where}: each message needs a role in {_ROLES} and text "
                                 f"content, got {str(m)[:80]!r}")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where}: {key!r} must be the reply text")
        pairs.append({"messages": messages, "chosen": row["chosen"],
                      "rejected": row["rejected"]})
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


def preference_batch(pairs: Sequence[dict[str, Any]], chat_format, *, length_bucket=64,
                     max_tokens: int | None = None, first_group: int = 0) -> EpisodeBatch:
    """Two rows per pair (chosen, rejected), group `first_group + i` for pair i.

    A row longer than `max_tokens` is cut at it (marked truncated), keeping the prompt
    and the start of the reply."""
    records = []
    for i, pair in enumerate(pairs):
        prompt = chat_format.encode_prompt(pair["messages"])
        for key, reward in (("chosen", 1.0), ("rejected", 0.0)):
            reply = chat_format.encode_pieces([(pair[key], False)])
            reply = [*reply, chat_format.end_of_turn_id]
            truncated = False
            if max_tokens is not None and len(prompt) + len(reply) > max_tokens:
                keep = max_tokens - len(prompt)
                if keep < 1:
                    raise ValueError(f"pair {i}: the prompt alone has {len(prompt)} tokens "
                                     f"> max_tokens={max_tokens}")
                reply, truncated = reply[:keep], True
            r = EpisodeRecord(group_id=first_group + i, truncated=truncated,
                              metadata={"pair": first_group + i, "kind": key,
                                        "task_id": f"pair-{first_group + i}",
                                        "episode_id": f"pair-{first_group + i}-{key}",
                                        "messages": [*pair["messages"], {
                                            "role": "assistant", "content": pair[key]}],
                                        "num_turns": 1, "return": reward})
            r.append(prompt, sampled=False, turn=-1, agent=-1)
            # log-probs unknown (not sampled here): 0, which only the off-policy
            # corrections would read, and DPO reads none
            r.append(reply, sampled=True, turn=0, agent=0, logprobs=[0.0] * len(reply))
            r.turn_ends.append(len(r) - 1)
            r.turn_rewards.append(reward)
            records.append(r)
    return collate(records, length_bucket=length_bucket, num_turns=1)
