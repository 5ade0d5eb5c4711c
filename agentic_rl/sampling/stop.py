"""Stop conditions of a sampled turn: stop token ids and stop strings.

- stop token ids stop a row inside the compiled decode loop (`decode`'s `stop_ids`,
  built by `stop_id_array`);
- stop strings (e.g. `</tool_call>`, which spans several tokens) need detokenising,
  so the host checks the text after each decoded chunk (`stop_string_cut`): a row is
  cut right after the token that completes the stop string.

Imports: numpy only; never jax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def stop_id_array(stops: Mapping[int, Sequence[int]], num_rows: int) -> np.ndarray:
    """int32 [num_rows, S] of each row's stop token ids, -1 padded (S >= 1)."""
    n_stop = max(1, max(len(v) for v in stops.values()))
    out = np.full((num_rows, n_stop), -1, np.int32)
    for r, ids in stops.items():
        out[r, : len(ids)] = ids
    return out


def find_stop(text: str, stops: Sequence[str]) -> str | None:
    """The stop string that occurs first in `text` (None: none does)."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    return min(hits)[1] if hits else None


def stop_string_cut(decode: Callable[[list[int]], str], tokens: list[int], n_new: int,
                    stops: Sequence[str]) -> tuple[int, str] | None:
    """(number of tokens to keep, stop string) if a stop string occurs in the text of
    `tokens`, whose last `n_new` were just sampled; `decode` detokenises."""
    text = decode(tokens)
    if find_stop(text, stops) is None:
        return None
    # The text before this chunk held no stop string, so the cut lies in the chunk.
    for keep in range(max(0, len(tokens) - n_new) + 1, len(tokens) + 1):
        s = find_stop(decode(tokens[:keep]), stops)
        if s is not None:
            return keep, s
    return len(tokens), find_stop(text, stops)
