"""scripts/attack.py: the harness classifies outcomes, and the real attack list is all blocked."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def harness():
    path = REPO / "scripts" / "attack.py"
    spec = importlib.util.spec_from_file_location("attack_harness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_outcome_is_classified(harness):
    attacks = {a.name: a for a in harness.load_attacks("tests.scripts.fake_attacks")}
    got = {name: harness.classify("tests.scripts.fake_attacks", a) for name, a in attacks.items()}
    assert {n: r["status"] for n, r in got.items()} == {
        "blocked": "blocked", "escaped": "escaped", "raises": "escaped",
        "segfault": "crashed", "hangs": "hung"}
    assert got["escaped"]["detail"] == "read /etc/shadow"
    assert "ValueError" in got["raises"]["detail"]
    assert "SIGSEGV" in got["segfault"]["detail"]
    assert got["hangs"]["seconds"] < 30


def test_hung_attack_leaves_no_process(harness):
    """The hung attack's child (same process group) is killed with it."""
    attack = {a.name: a for a in harness.load_attacks("tests.scripts.fake_attacks")}["hangs"]
    harness.classify("tests.scripts.fake_attacks", attack)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "time.sleep(600)" not in ps


def test_exit_status_and_table(harness, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = harness.main(["--area", "tests.scripts.fake_attacks", "--name", "blocked",
                       "--json", str(out)])
    assert rc == 0
    assert [r["status"] for r in json.loads(out.read_text())] == ["blocked"]
    rc = harness.main(["--area", "tests.scripts.fake_attacks", "--name", "blocked",
                       "--name", "escaped"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "escaped  tests.scripts.fake_attacks:escaped (item t): read /etc/shadow" in text


@pytest.mark.slow
def test_whole_attack_list_is_blocked(tmp_path):
    """Acceptance: every attack in scripts/attacks/ is blocked (0 escapes, crashes, hangs)."""
    out = tmp_path / "attacks.json"
    proc = subprocess.run([sys.executable, "scripts/attack.py", "--jobs", "2", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    results = json.loads(out.read_text())
    bad = [r for r in results if r["status"] != "blocked"]
    assert not bad, proc.stdout[-6000:]
    assert proc.returncode == 0
    assert len(results) >= 80
