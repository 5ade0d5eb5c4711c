"""Task sources: GSM8K-format files (any file, clear errors), seeded generators, splits."""

from __future__ import annotations

import json

import pytest

from agentic_rl.envs import (
    GSM8K_DIR_ENV,
    Task,
    TaskSet,
    evaluate_expression,
    format_number,
    generate_arithmetic_tasks,
    load_gsm8k_jsonl,
    parse_gsm8k_answer,
    parse_number,
    resolve_gsm8k_dir,
)
from agentic_rl.envs.tasks import repo_root


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_parse_gsm8k_answer():
    assert parse_gsm8k_answer("work <<2*3=6>>\n#### 1,200") == "1200"
    assert parse_gsm8k_answer("a #### 1 #### -3.5") == "-3.5"
    for bad in ("no marker", "#### ", 3):
        with pytest.raises(ValueError):
            parse_gsm8k_answer(bad)


def test_load_any_gsm8k_format_file(tmp_path):
    f = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"question": "1+1?", "answer": "1+1=2\n#### 2"},
            "",
            {"question": "big?", "answer": "#### 1,000", "extra": 1},
        ],
    )
    tasks = load_gsm8k_jsonl(f)
    assert [(t.id, t.prompt, t.answer) for t in tasks] == [
        ("mine-0", "1+1?", "2"),
        ("mine-2", "big?", "1000"),
    ]
    assert load_gsm8k_jsonl(f, limit=1, id_prefix="x")[0].id == "x-0"


@pytest.mark.parametrize(
    "row, fragment",
    [
        ("{not json", "property name"),
        ([1, 2], "not a JSON object"),
        ({"question": "q"}, '"answer"'),
        ({"question": "q", "answer": "no final"}, "####"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, row, fragment):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "#### 1"}, row])
    with pytest.raises(ValueError, match="bad.jsonl:2") as info:
        load_gsm8k_jsonl(f)
    assert fragment in str(info.value)


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="task file not found"):
        load_gsm8k_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no tasks"):
        load_gsm8k_jsonl(write_jsonl(tmp_path / "empty.jsonl", [""]))


def test_arithmetic_generator_is_seeded_and_correct():
    a = generate_arithmetic_tasks(50, seed=3)
    assert a == generate_arithmetic_tasks(50, seed=3)
    assert a != generate_arithmetic_tasks(50, seed=4)
    for t in a:
        expr = t.data["expression"]
        assert t.prompt == f"What is {expr}?"
        assert format_number(evaluate_expression(expr)) == t.answer
        assert 2 <= sum(expr.count(f" {op} ") for op in "+-*/") <= 4
    with pytest.raises(ValueError, match="bad generator"):
        generate_arithmetic_tasks(1, 0, min_ops=3, max_ops=2)


def test_task_set_splits_and_seeded_epochs():
    tasks = [Task(str(i), "p") for i in range(5)]
    ts = TaskSet({"train": tasks, "eval": tasks[:2]})
    with pytest.raises(ValueError, match="available: train, eval"):
        ts.split("test")
    it = ts.batches("train", 2, seed=0)
    first = [next(it) for _ in range(5)]  # 10 tasks = exactly two epochs
    ids = [t.id for b in first for t in b]
    assert sorted(ids[:5]) == sorted(ids[5:]) == [str(i) for i in range(5)]
    again = ts.batches("train", 2, seed=0)
    assert [next(again) for _ in range(5)] == first
    with pytest.raises(ValueError, match="duplicate"):
        TaskSet({"train": tasks + tasks[:1]})


def test_gsm8k_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(GSM8K_DIR_ENV, raising=False)
    assert resolve_gsm8k_dir() == (repo_root().parent / "shared" / "data" / "gsm8k").resolve()
    monkeypatch.setenv(GSM8K_DIR_ENV, str(tmp_path))
    assert resolve_gsm8k_dir() == tmp_path.resolve()
    assert resolve_gsm8k_dir(tmp_path / "x") == (tmp_path / "x").resolve()


def test_real_gsm8k_files_parse():
    root = resolve_gsm8k_dir()
    if not (root / "train.jsonl").is_file():
        pytest.skip(f"GSM8K data not present at {root}")
    train, test = load_gsm8k_jsonl(root / "train.jsonl"), load_gsm8k_jsonl(root / "test.jsonl")
    assert (len(train), len(test)) == (7473, 1000)
    assert all(parse_number(t.answer) is not None for t in train + test)
    assert test[0].answer == "18"
