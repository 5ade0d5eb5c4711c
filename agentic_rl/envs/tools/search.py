"""Retrieval tools over a local corpus: `Document`, the BM25 `SearchIndex` (bm25s) and the
`search`/`open` tools (`search_tools`). The generated world, its questions and the corpus /
QA loaders are in `agentic_rl.envs.suites.search`.

Imports: stdlib, numpy, bm25s (lazily) and agentic_rl.envs.tools.base only; never jax.

bm25s is imported lazily, and with jax hidden from it: bm25s probes `import jax` at import
time to pick a top-k backend, but this package must not import jax. Scores come from
`BM25.get_scores` and the top-k is taken here with numpy, so no jax backend is ever used.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from agentic_rl.envs.tools.base import Tool, ToolExecutionError

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from has have in is it its of on or that the "
    "their this to was were what when where which who whom whose why with how".split()
)
_IMPORT_LOCK = threading.Lock()


def import_bm25s():
    """Imports bm25s without letting it import jax (see the module docstring)."""
    with _IMPORT_LOCK:
        if "bm25s" in sys.modules:
            return sys.modules["bm25s"]
        hide = "jax" not in sys.modules
        if hide:
            sys.modules["jax"] = None  # makes `import jax` raise ImportError inside bm25s
        try:
            import bm25s
        except ImportError as e:
            raise ImportError("the search environments need bm25s: pip install 'bm25s>=0.2'") from e
        finally:
            if hide:
                del sys.modules["jax"]
        return bm25s


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without English stop words (corpus and queries alike)."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


class SearchIndex:
    """A BM25 index over `documents` (title + text). Read-only after construction, and
    thread-safe (episodes share one index)."""

    def __init__(self, documents: Sequence[Document]):
        if not documents:
            raise ValueError("SearchIndex needs at least one document")
        self.documents = list(documents)
        self._by_id = {d.id: d for d in self.documents}
        if len(self._by_id) != len(self.documents):
            raise ValueError("document ids must be unique")
        bm25s = import_bm25s()
        self._bm25 = bm25s.BM25()
        corpus = [tokenize(f"{d.title} {d.text}") or ["<empty>"] for d in self.documents]
        self._bm25.index(corpus, show_progress=False)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, query: str, k: int = 5) -> list[tuple[Document, float]]:
        """The top-`k` documents with a positive score, best first (ties: corpus order)."""
        import numpy as np

        tokens = tokenize(query)
        if not tokens:
            return []
        with self._lock:
            scores = np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: max(0, k)]
        return [(self.documents[i], float(scores[i])) for i in order if scores[i] > 0]

    def get(self, doc_id: str) -> Document | None:
        return self._by_id.get(doc_id)


def _snippet(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 3].rsplit(" ", 1)[0] + "..."


def search_tools(
    index: SearchIndex, *, max_k: int = 10, snippet_chars: int = 160, max_open_chars: int = 3000
) -> tuple[Tool, Tool]:
    """`search(query, k)` lists matching documents with snippets; `open(doc_id)` reads one."""

    def search(query: str, k: int = 5) -> str:
        if not tokenize(query):
            raise ToolExecutionError("the query has no searchable words; use names or keywords")
        hits = index.search(query, int(k))
        if not hits:
            return f"No documents match {query!r}."
        return "\n".join(f"[{d.id}] {d.title}: {_snippet(d.text, snippet_chars)}" for d, _ in hits)

    def open_doc(doc_id: str) -> str:
        doc = index.get(doc_id.strip().strip("[]"))
        if doc is None:
            example = index.documents[0].id
            raise ToolExecutionError(
                f"no document with id {doc_id[:80]!r}; use an id from search results, "
                f"e.g. {example!r}"
            )
        text = doc.text if len(doc.text) <= max_open_chars else doc.text[:max_open_chars] + "..."
        return f"{doc.title}\n\n{text}"

    search_tool = Tool(
        "search",
        "Search the document collection (BM25 keyword search). Returns document ids, titles "
        "and snippets, best match first.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "k": {"type": "integer", "minimum": 1, "maximum": max_k},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        search,
    )
    open_tool = Tool(
        "open",
        "Open a document by its id (from search results) and read its full text.",
        {
            "type": "object",
            "properties": {"doc_id": {"type": "string", "minLength": 1, "maxLength": 100}},
            "required": ["doc_id"],
            "additionalProperties": False,
        },
        open_doc,
    )
    return search_tool, open_tool
