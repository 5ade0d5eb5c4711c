"""`ENVS` entries for the real-tool environments: text2sql, search_qa, search_calc, python_code.

Importing this module registers them (the package `__init__` does so). Each factory's
keyword arguments are the environment's config, as for the calculator suite; generated
splits use `seed` for train and `seed + 1` for eval. Heavy backends start lazily: the
search index is built when the suite is made (once, shared by its episodes), SQLite
files are generated when the suite is made, sandboxes start on an episode's first call.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from agentic_rl.envs.code_env import generate_code_tasks, make_code_env
from agentic_rl.envs.code_sandbox import SandboxLimits, resolve_isolation
from agentic_rl.envs.math_env import MathToolEnv
from agentic_rl.envs.mixed_env import generate_mixed_tasks, make_mixed_env_factory
from agentic_rl.envs.registry import ENVS, EnvSuite
from agentic_rl.envs.rewards import CompositeReward, format_reward, string_answer_reward
from agentic_rl.envs.search_env import (
    SearchIndex,
    generate_search_tasks,
    generate_world,
    load_corpus_jsonl,
    load_qa_jsonl,
    search_tools,
)
from agentic_rl.envs.sql_data import generate_sql_tasks, load_spider_tasks
from agentic_rl.envs.sql_env import SqlEnv, SqlLimits
from agentic_rl.envs.tasks import TaskSet

SEARCH_INSTRUCTIONS = (
    "You answer questions about a document collection. Use search to find documents and open "
    "to read them; questions may need several searches (find one fact, then search for "
    "the next). When you know the answer, reply with <answer>ANSWER</answer> and no tool call."
)


def _temporary_dir(prefix: str) -> Path:
    """A fresh directory removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


@ENVS.register("text2sql")
def text2sql_suite(
    *,
    spider_dir: str | os.PathLike | None = None,
    train_file: str = "train_spider.json",
    eval_file: str = "dev.json",
    schema_in_prompt: bool = False,
    limit: int | None = None,
    db_dir: str | os.PathLike | None = None,
    num_train_dbs: int = 8,
    num_eval_dbs: int = 4,
    questions_per_db: int = 40,
    seed: int = 0,
    timeout_s: float = 2.0,
    max_rows: int = 50,
    valid_weight: float = 0.0,
    gamma: float = 1.0,
) -> EnvSuite:
    """Multi-turn text-to-SQL with execution-match reward.

    With `spider_dir` the splits are Spider-format files there (`train_file`, `eval_file`,
    `tables.json`, `database/`); otherwise databases are generated into `db_dir` (default: a
    temporary directory), and the eval databases are distinct from the training ones.
    """
    if spider_dir is not None:
        load = partial(load_spider_tasks, spider_dir, schema_in_prompt=schema_in_prompt,
                       limit=limit)  # fmt: skip
        splits = {"train": load(train_file), "eval": load(eval_file)}
    else:
        root = Path(db_dir) if db_dir is not None else _temporary_dir("agentic_rl_sql_")
        splits = {
            "train": generate_sql_tasks(root, num_dbs=num_train_dbs,
                                        questions_per_db=questions_per_db, seed=seed,
                                        id_prefix="sql-train"),
            "eval": generate_sql_tasks(root, num_dbs=num_eval_dbs,
                                       questions_per_db=questions_per_db, seed=seed + 1,
                                       id_prefix="sql-eval"),
        }  # fmt: skip
    limits = SqlLimits(timeout_s=timeout_s, max_rows=max_rows)
    make = partial(SqlEnv, limits=limits, valid_weight=valid_weight)
    return EnvSuite("text2sql", make, TaskSet(splits), gamma)


def _search_reward(format_weight: float) -> CompositeReward:
    return CompositeReward(
        {"correct": (string_answer_reward(), 1.0), "format": (format_reward(), format_weight)}
    )


@ENVS.register("search_qa")
def search_qa_suite(
    *,
    corpus_path: str | os.PathLike | None = None,
    train_path: str | os.PathLike | None = None,
    eval_path: str | os.PathLike | None = None,
    num_train: int = 800,
    num_eval: int = 200,
    world_seed: int = 0,
    seed: int = 0,
    num_people: int = 400,
    num_companies: int = 100,
    num_cities: int = 60,
    max_k: int = 10,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Multi-hop QA with `search`/`open` over a BM25 index.

    Default: a generated fictional world (corpus + two-hop questions, eval questions
    disjoint from train). With `corpus_path` (JSONL {"id","title","text"}) the questions
    come from `train_path`/`eval_path` (JSONL {"question","answer"}).
    """
    if corpus_path is not None:
        if train_path is None or eval_path is None:
            raise ValueError("search_qa with corpus_path also needs train_path and eval_path")
        index = SearchIndex(load_corpus_jsonl(corpus_path))
        splits = {"train": load_qa_jsonl(train_path), "eval": load_qa_jsonl(eval_path)}
    else:
        world = generate_world(world_seed, num_people=num_people, num_companies=num_companies,
                               num_cities=num_cities)  # fmt: skip
        index = SearchIndex(world.documents)
        train = generate_search_tasks(world, num_train, seed, id_prefix="search-train")
        exclude = {t.prompt for t in train}
        evals = generate_search_tasks(world, num_eval, seed + 1, id_prefix="search-eval",
                                      exclude=exclude)  # fmt: skip
        splits = {"train": train, "eval": evals}
    make = partial(
        MathToolEnv,
        tools=search_tools(index, max_k=max_k),
        reward=_search_reward(format_weight),
        instructions=SEARCH_INSTRUCTIONS,
    )
    return EnvSuite("search_qa", make, TaskSet(splits), gamma)


@ENVS.register("search_calc")
def search_calc_suite(
    *,
    num_train: int = 1000,
    num_eval: int = 200,
    world_seed: int = 0,
    seed: int = 0,
    num_people: int = 160,
    num_companies: int = 50,
    num_cities: int = 40,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Questions that need search (facts) and the calculator (arithmetic on them)."""
    world = generate_world(world_seed, num_people=num_people, num_companies=num_companies,
                           num_cities=num_cities)  # fmt: skip
    train = generate_mixed_tasks(world, num_train, seed, id_prefix="mixed-train")
    evals = generate_mixed_tasks(world, num_eval, seed + 1, id_prefix="mixed-eval",
                                 exclude={t.prompt for t in train})  # fmt: skip
    make = make_mixed_env_factory(SearchIndex(world.documents), format_weight)
    return EnvSuite("search_calc", make, TaskSet({"train": train, "eval": evals}), gamma)


@ENVS.register("python_code")
def python_code_suite(
    *,
    num_train: int = 1000,
    num_eval: int = 200,
    seed: int = 0,
    isolation: str = "auto",
    wall_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    format_weight: float = 0.1,
    gamma: float = 1.0,
) -> EnvSuite:
    """Computation problems solved with a sandboxed, stateful Python interpreter.

    `isolation`: "auto" (namespaces when available, else resource limits with a warning),
    "namespaces" (required) or "rlimits"; see `agentic_rl.envs.code_sandbox`.
    """
    limits = SandboxLimits(wall_s=wall_s, cpu_s=wall_s, memory_mb=memory_mb,
                           max_processes=max_processes)  # fmt: skip
    train = generate_code_tasks(num_train, seed, id_prefix="code-train")
    evals = generate_code_tasks(num_eval, seed + 1, id_prefix="code-eval",
                                exclude={t.prompt for t in train})  # fmt: skip
    isolation = resolve_isolation(isolation)  # once per suite: one warning, not one per episode
    make = partial(make_code_env, limits, isolation=isolation, format_weight=format_weight)
    return EnvSuite("python_code", make, TaskSet({"train": train, "eval": evals}), gamma)
