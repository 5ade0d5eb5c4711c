"""`EpisodeBatch`, the data contract between rollout and learning (see DESIGN.md).

One row per episode: the whole multi-turn interaction as one right-padded token
sequence, with masks, sampling log-probs, turn structure and per-turn rewards.
Arrays are built on the host as numpy; the trainer moves them to devices.

Conventions fixed here (the DESIGN table leaves them open):
- `turn_index` is -1 on the prompt and padding; an observation segment carries the index
  of the turn it answers, so turn k = assistant tokens of turn k + the observation after it.
- `agent_id` is the acting agent's id on assistant-turn tokens (including an end-of-turn
  token appended by the rollout) and -1 on prompt, observation and padding tokens.
- `turn_end[b, k]` is the position of the last *sampled* token of turn k (an appended
  end-of-turn token is not sampled, so it is never a turn end).
- `truncated[b]` is True when a limit of the rollout (max_turns, max_episode_tokens) cut
  the episode while the environment would have gone on, False when the environment
  ended it. A cut episode's return is not finished: critic-based advantages bootstrap
  from the value of the state at the cut instead of treating it as terminal.
- An episode whose context was rewritten (a sliding window, a summary) is laid out as
  several rows, one per unbroken context: rows with the same `episode_index[b]` are one
  episode, and row b's turn k is the episode's turn `turn_offset[b] + k`. Rows of one
  episode share `group_id`, their turn ranges do not overlap and fit the turn axis K, and
  only the row holding the episode's last turn may be `truncated` (the others are
  continued by the next row). The advantages of `agentic_rl.rl` then treat the rows as the
  one episode they are (`rl/episodes.py`). By default each row is its own episode
  (`episode_index` = 0..B-1, `turn_offset` = 0).

Imports: numpy and flax.struct only; no model, no environment.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flax import struct

from agentic_rl.shapes import bucket


class HostMetadata(Sequence):
    """Per-episode host-side metadata (one dict per row), carried as a static pytree field.

    All `HostMetadata` objects compare equal and hash alike, so passing batches with
    different metadata to a jitted function never retraces (a plain tuple of dicts would
    be unhashable, and a content-based hash would recompile every step). Consequence: a
    jitted function must not *return* the batch, or it would hand back the metadata of the
    first trace. Compare `.rows` to compare contents.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[Mapping[str, Any]] = ()):
        self.rows = tuple(rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self.rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostMetadata)

    def __hash__(self) -> int:
        return hash(HostMetadata)

    def __repr__(self) -> str:
        return f"HostMetadata({len(self.rows)} rows)"


@struct.dataclass
class EpisodeBatch:
    """Episodes as padded arrays; field meanings in DESIGN.md and the module docstring."""

    tokens: Any  # int32 [B, T]
    attention_mask: Any  # bool [B, T]
    loss_mask: Any  # bool [B, T]
    sample_logprobs: Any  # f32 [B, T]
    turn_index: Any  # int32 [B, T]
    turn_end: Any  # int32 [B, K]
    turn_rewards: Any  # f32 [B, K]
    group_id: Any  # int32 [B]
    agent_id: Any  # int32 [B, T]
    truncated: Any  # bool [B]: cut by a rollout limit rather than ended by the env
    # int32 [B]: rows with the same id are one episode (dense ids 0..E-1); None = each row
    # its own episode (0..B-1)
    episode_index: Any = None
    # int32 [B]: the episode-global index of the row's first turn; None = 0
    turn_offset: Any = None
    metadata: HostMetadata = struct.field(pytree_node=False, default_factory=HostMetadata)

    def __post_init__(self):
        # Fill the defaults (each row its own episode, offset 0) so every consumer sees
        # arrays. Only when constructed with None and real rows (not in pytree plumbing).
        rows = np.shape(self.tokens)[:1] if self.tokens is not None else ()
        if not rows:
            return
        if self.episode_index is None:
            object.__setattr__(self, "episode_index", np.arange(rows[0], dtype=np.int32))
        if self.turn_offset is None:
            object.__setattr__(self, "turn_offset", np.zeros(rows[0], np.int32))

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def num_turns(self) -> int:
        return int(self.turn_end.shape[1])

    def validate(self) -> EpisodeBatch:
        """Checks shapes, dtypes and the invariants between fields; returns self.

        Host-side only (reads values). Raises ValueError naming the broken field.
        """
        validate_episode_batch(self)
        return self


_SPEC = {  # field -> (allowed numpy dtype kinds, named axes)
    "tokens": ("iu", ("B", "T")),
    "attention_mask": ("b", ("B", "T")),
    "loss_mask": ("b", ("B", "T")),
    "sample_logprobs": ("f", ("B", "T")),
    "turn_index": ("iu", ("B", "T")),
    "agent_id": ("iu", ("B", "T")),
    "turn_end": ("iu", ("B", "K")),
    "turn_rewards": ("f", ("B", "K")),
    "group_id": ("iu", ("B",)),
    "truncated": ("b", ("B",)),
    "episode_index": ("iu", ("B",)),
    "turn_offset": ("iu", ("B",)),
}


def _check_shapes(batch: EpisodeBatch) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(getattr(batch, name)) for name in _SPEC}
    dims: dict[str, tuple[int, str]] = {}  # axis -> (size, field that set it)
    for name, (kinds, axes) in _SPEC.items():
        a = arrays[name]
        if a.ndim != len(axes):
            raise ValueError(
                f"EpisodeBatch.{name} must have shape [{', '.join(axes)}], got {a.shape}"
            )
        if a.dtype.kind not in kinds:
            raise ValueError(f"EpisodeBatch.{name} has dtype {a.dtype}; expected kind {kinds!r}")
        for axis, size in zip(axes, a.shape):
            known, source = dims.setdefault(axis, (size, name))
            if known != size:
                raise ValueError(
                    f"EpisodeBatch.{name} has {axis}={size} but EpisodeBatch.{source} has "
                    f"{axis}={known}"
                )
    if len(batch.metadata) != dims["B"][0]:
        raise ValueError(
            f"EpisodeBatch.metadata has {len(batch.metadata)} rows for B={dims['B'][0]}"
        )
    return arrays


def _check_turn_ends(a: dict[str, np.ndarray]) -> None:
    turn_end, loss, turn_index = a["turn_end"], a["loss_mask"], a["turn_index"]
    present = turn_end >= 0
    if np.any(turn_end < -1) or np.any(turn_end >= loss.shape[1]):
        raise ValueError("EpisodeBatch.turn_end must be -1 or a position in [0, T)")
    if np.any(present[:, 1:] & ~present[:, :-1]):
        raise ValueError("EpisodeBatch.turn_end: present turns must come first (no gaps)")
    rows, ks = np.nonzero(present)
    pos = turn_end[rows, ks]
    if not np.all(loss[rows, pos]):
        raise ValueError("EpisodeBatch.turn_end must point at sampled tokens (loss_mask 1)")
    if not np.all(turn_index[rows, pos] == ks):
        raise ValueError("EpisodeBatch.turn_end[b, k] must point at a token of turn k")
    both = present[:, 1:] & present[:, :-1]
    if np.any(both & (turn_end[:, 1:] <= turn_end[:, :-1])):
        raise ValueError("EpisodeBatch.turn_end must increase with k")
    if np.any(a["turn_rewards"][~present] != 0):
        raise ValueError("EpisodeBatch.turn_rewards must be 0 for absent turns")


def _check_episodes(a: dict[str, np.ndarray]) -> None:
    """The invariants of episodes laid out as several rows (module docstring)."""
    ep, off = a["episode_index"].astype(np.int64), a["turn_offset"].astype(np.int64)
    B, K = a["turn_end"].shape
    if np.any(ep < 0) or np.any(ep >= B):
        raise ValueError(f"EpisodeBatch.episode_index must be dense ids in [0, B={B})")
    if np.any(off < 0):
        raise ValueError("EpisodeBatch.turn_offset must be >= 0")
    n = (a["turn_end"] >= 0).sum(axis=1)  # present turns come first (_check_turn_ends)
    end = off + n
    if np.any(end > K):
        b = int(np.argmax(end > K))
        raise ValueError(
            f"EpisodeBatch.turn_offset: row {b} holds episode turns [{off[b]}, {end[b]}), "
            f"past the turn axis K={K}")
    for e in np.unique(ep):
        rows = np.flatnonzero(ep == e)
        if len(rows) == 1:
            continue
        if np.any(a["group_id"][rows] != a["group_id"][rows[0]]):
            raise ValueError(
                f"EpisodeBatch.group_id: rows {rows.tolist()} of episode {e} differ in group_id")
        held = rows[n[rows] > 0]
        order = held[np.argsort(off[held], kind="stable")]
        if np.any(off[order[1:]] < end[order[:-1]]):
            raise ValueError(
                f"EpisodeBatch.turn_offset: rows {rows.tolist()} of episode {e} overlap in "
                "their turn ranges [turn_offset, turn_offset + num_turns)")
        last = order[-1] if len(order) else None
        bad = [int(b) for b in rows if a["truncated"][b] and b != last]
        if bad:
            raise ValueError(
                f"EpisodeBatch.truncated: row {bad[0]} of episode {e} is not its final row; "
                "only the row holding the episode's last turn may be truncated (the others "
                "are continued by the next row)")


def validate_episode_batch(batch: EpisodeBatch) -> None:
    """See `EpisodeBatch.validate`."""
    a = _check_shapes(batch)
    attn, loss = a["attention_mask"], a["loss_mask"]
    if np.any(attn[:, 1:] & ~attn[:, :-1]):
        raise ValueError("EpisodeBatch.attention_mask must be right-padded (ones, then zeros)")
    if np.any(loss & ~attn):
        raise ValueError("EpisodeBatch.loss_mask is set on padding tokens")
    lp = a["sample_logprobs"]
    if not np.all(np.isfinite(lp)):
        raise ValueError("EpisodeBatch.sample_logprobs has non-finite values")
    if np.any(lp[~loss] != 0):
        raise ValueError("EpisodeBatch.sample_logprobs must be 0 where loss_mask is 0")
    if np.any(lp > 1e-4):
        raise ValueError("EpisodeBatch.sample_logprobs must be <= 0 (they are log-probs)")
    if np.any(a["turn_index"][~attn] != -1) or np.any(a["agent_id"][~attn] != -1):
        raise ValueError("EpisodeBatch.turn_index and agent_id must be -1 on padding")
    if np.any(a["turn_index"][loss] < 0):
        raise ValueError("EpisodeBatch.turn_index must be >= 0 on sampled tokens")
    if not np.all(np.isfinite(a["turn_rewards"])):
        raise ValueError("EpisodeBatch.turn_rewards has non-finite values")
    _check_turn_ends(a)
    _check_episodes(a)


@dataclass
class EpisodeRecord:
    """One finished episode, unpadded (what `collate` stacks). Lists are per token/turn."""

    tokens: list[int] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_index: list[int] = field(default_factory=list)
    agent_id: list[int] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)
    turn_rewards: list[float] = field(default_factory=list)
    group_id: int = 0
    truncated: bool = False  # cut by a rollout limit, not ended by the environment
    metadata: dict[str, Any] = field(default_factory=dict)
    # rows (records) with the same non-None key are one episode; None: its own episode
    episode: Hashable | None = None
    turn_offset: int = 0  # the episode-global index of the row's first turn

    def __len__(self) -> int:
        return len(self.tokens)

    def append(
        self,
        ids: Sequence[int],
        *,
        sampled: bool,
        turn: int,
        agent: int,
        logprobs: Sequence[float] | None = None,
    ) -> None:
        """Appends one segment; `logprobs` is required iff the tokens were sampled."""
        if sampled != (logprobs is not None) or (
            logprobs is not None and len(logprobs) != len(ids)
        ):
            raise ValueError("sampled segments need one log-prob per token; others none")
        self.tokens.extend(int(i) for i in ids)
        self.loss_mask.extend([sampled] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.turn_index.extend([turn] * len(ids))
        self.agent_id.extend([agent] * len(ids))


def collate(
    records: Sequence[EpisodeRecord],
    *,
    length_bucket: int | str = 64,
    length: int | None = None,
    num_turns: int | None = None,
    pad_token_id: int = 0,
) -> EpisodeBatch:
    """Stacks episodes into a validated `EpisodeBatch`.

    T is `length` if given (an error if a row is longer), else the bucketed longest row.
    K is `num_turns` if given (pass the max-turns config for a static shape), else the
    most turns of an episode (`turn_offset` + turns of its rows). Records with the same
    non-None `episode` key become rows of one episode (`episode_index`, dense in order of
    first appearance; None keys get their own ids).
    """
    if not records:
        raise ValueError("collate needs at least one episode")
    longest = max(len(r) for r in records)
    most_turns = max(int(r.turn_offset) + len(r.turn_ends) for r in records)
    T = bucket(longest, length_bucket) if length is None else length
    K = max(most_turns, 1) if num_turns is None else num_turns
    if longest > T:
        raise ValueError(f"an episode has {longest} tokens > length={T}")
    if most_turns > K:
        raise ValueError(f"an episode has {most_turns} turns > num_turns={K}")
    B = len(records)
    out = {
        "tokens": np.full((B, T), pad_token_id, np.int32),
        "attention_mask": np.zeros((B, T), bool),
        "loss_mask": np.zeros((B, T), bool),
        "sample_logprobs": np.zeros((B, T), np.float32),
        "turn_index": np.full((B, T), -1, np.int32),
        "agent_id": np.full((B, T), -1, np.int32),
        "turn_end": np.full((B, K), -1, np.int32),
        "turn_rewards": np.zeros((B, K), np.float32),
        "group_id": np.zeros((B,), np.int32),
        "truncated": np.zeros((B,), bool),
        "episode_index": np.zeros((B,), np.int32),
        "turn_offset": np.zeros((B,), np.int32),
    }
    ids: dict[Hashable, int] = {}
    for b, r in enumerate(records):
        n, k = len(r), len(r.turn_ends)
        if len(r.turn_rewards) != k:
            raise ValueError(f"episode {b}: {k} turn ends but {len(r.turn_rewards)} rewards")
        out["tokens"][b, :n] = r.tokens
        out["attention_mask"][b, :n] = True
        out["loss_mask"][b, :n] = r.loss_mask
        out["sample_logprobs"][b, :n] = r.logprobs
        out["turn_index"][b, :n] = r.turn_index
        out["agent_id"][b, :n] = r.agent_id
        out["turn_end"][b, :k] = r.turn_ends
        out["turn_rewards"][b, :k] = r.turn_rewards
        out["group_id"][b] = r.group_id
        out["truncated"][b] = bool(r.truncated)
        key = ("row", b) if r.episode is None else ("episode", r.episode)
        out["episode_index"][b] = ids.setdefault(key, len(ids))
        out["turn_offset"][b] = int(r.turn_offset)
    batch = EpisodeBatch(**out, metadata=HostMetadata([r.metadata for r in records]))
    return batch.validate()


# ------------------------------------------------------------------ host-side transforms
# EpisodeBatch -> EpisodeBatch functions the trainer applies before the learner step.


def pad_rows(batch: EpisodeBatch, rows: int) -> EpisodeBatch:
    """`batch` with empty rows appended up to `rows` (episodes dropped by env errors), so
    every step has the same shape. Empty rows have no tokens, hence no loss, and each its
    own (negative) group id so no group statistics see them, and each its own episode;
    their metadata is `{"padding": True}`."""
    missing = rows - batch.batch_size
    if missing <= 0:
        return batch
    fill = {"turn_index": -1, "turn_end": -1, "agent_id": -1}
    out = {}
    for name in _SPEC:
        a = np.asarray(getattr(batch, name))
        pad = np.full((missing, *a.shape[1:]), fill.get(name, 0), a.dtype)
        if name == "group_id":
            pad = (a.min(initial=0) - 1 - np.arange(missing)).astype(a.dtype)
        if name == "episode_index":  # each padding row its own episode
            pad = (a.max(initial=-1) + 1 + np.arange(missing)).astype(a.dtype)
        out[name] = np.concatenate([a, pad])
    metadata = HostMetadata([*batch.metadata, *({"padding": True} for _ in range(missing))])
    return batch.replace(**out, metadata=metadata)


def share_prefix(batch: EpisodeBatch, prefix_len: int) -> EpisodeBatch:
    """Gives empty (padding) rows the shared prefix too, so every row of the batch meets
    the shared-prefix forward's precondition; they still have no loss tokens (their
    turn_index stays -1, as on a prompt)."""
    if not prefix_len:
        return batch
    attn = np.asarray(batch.attention_mask)
    empty = ~attn.any(axis=1)
    if not empty.any():
        return batch
    real = int(np.argmax(~empty))
    tokens, attn = np.array(batch.tokens), attn.copy()
    tokens[empty, :prefix_len] = tokens[real, :prefix_len]
    attn[empty, :prefix_len] = True
    return batch.replace(tokens=tokens, attention_mask=attn)


def token_adapters(agent_id: np.ndarray) -> np.ndarray:
    """Which agent's LoRA adapter computed each token, from `agent_id` [B, T] (set on the
    acting agent's turn tokens, -1 elsewhere): a token before a turn was prefilled as
    that turn's context, so it takes the agent of the next turn at or after it; tokens
    after a row's last turn take that turn's agent; a row with no turn gets -1 (the base
    model). A row of one agent's calls (the chat service's chains) is that agent's
    throughout, exactly as the sampler computed it."""
    a = np.asarray(agent_id)
    B, T = a.shape
    valid = a >= 0
    pos = np.where(valid, np.arange(T)[None], T)
    nxt = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]
    last = T - 1 - np.argmax(valid[:, ::-1], axis=1)
    src = np.where(nxt < T, nxt, last[:, None])
    out = np.take_along_axis(a, src, axis=1)
    return np.where(valid.any(axis=1)[:, None], out, -1).astype(np.int32)
