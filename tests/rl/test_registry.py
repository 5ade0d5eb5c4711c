"""The name registry and the built-in registries' contents."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from agentic_rl import rl


def test_register_get_names_and_errors():
    reg = rl.Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a", lambda: "a")
    assert reg.names() == ("a", "b") and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.get("b") is b and "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid names: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", lambda: "again")
    reg.register("a", lambda: "new", overwrite=True)
    assert reg.get("a")() == "new"
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", lambda: None)
    with pytest.raises(ValueError, match=r"valid names: \(none registered\)"):
        rl.Registry("empty").get("x")


def test_builtin_registries():
    assert set(rl.ADVANTAGES.names()) == {
        "gae",
        "turn_gae",
        "bilevel_gae",
        "mc_returns",
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce_pp",
        "reinforce_pp_baseline",
    }
    assert set(rl.POLICY_LOSSES.names()) == {
        "ppo",
        "asym_clip",
        "dual_clip",
        "gspo",
        "cispo",
        "truncated_is",
        "pg",
    }
    assert rl.KL_ESTIMATORS.names() == ("k1", "k2", "k3")
    assert set(rl.AGGREGATIONS.names()) == {
        "token_mean",
        "seq_mean_token_mean",
        "seq_mean_token_sum",
        "seq_sum_const",
    }
    assert set(rl.OFF_POLICY.names()) == {"none", "tis", "mis", "decoupled"}
    for reg in (rl.ADVANTAGES, rl.POLICY_LOSSES, rl.KL_ESTIMATORS, rl.AGGREGATIONS,
                rl.OFF_POLICY):
        for name in reg:
            assert reg.get(name).__doc__, f"{reg.kind} {name} has no docstring"


def test_metadata_declares_what_a_variant_needs():
    reg = rl.Registry("estimator", defaults={"needs_values": False})
    reg.register("plain", lambda: None)
    reg.register("critic", lambda: None, needs_values=True)
    assert reg.meta("plain")["needs_values"] is False and reg.meta("critic")["needs_values"]
    assert reg.where(needs_values=True) == ("critic",)
    with pytest.raises(ValueError, match="unknown metadata need_values; valid keys: needs_values"):
        reg.register("typo", lambda: None, need_values=True)
    with pytest.raises(TypeError):
        reg.meta("plain")["needs_values"] = True  # read-only
    with pytest.raises(ValueError, match="unknown estimator 'x'"):
        reg.meta("x")
    # the built-ins: the trainer asks these instead of keeping its own lists
    assert rl.ADVANTAGES.where(needs_values=True) == ("bilevel_gae", "gae", "turn_gae")
    assert rl.POLICY_LOSSES.meta("gspo")["reads"] == ("turn_index",)
    assert rl.POLICY_LOSSES.meta("gspo")["aggregation"] == "seq_mean_token_mean"
    assert all(set(rl.POLICY_LOSSES.meta(n)["reads"]) <= set(rl.LOSS_INPUTS)
               for n in rl.POLICY_LOSSES)


def test_one_registry_class_for_every_layer():
    from agentic_rl.envs import ENVS
    from agentic_rl.registry import Registry

    for reg in (rl.ADVANTAGES, rl.POLICY_LOSSES, rl.KL_ESTIMATORS, rl.AGGREGATIONS,
                rl.OFF_POLICY, ENVS):
        assert type(reg) is Registry
    assert rl.Registry is Registry
    with pytest.raises(ValueError, match="unknown environment 'nope'; valid names: .*calculator"):
        ENVS.get("nope")


def test_rl_imports_without_models_or_other_layers():
    """rl/ sits below train/ and never needs a model: importing it loads no other layer
    (only the dependency-free `agentic_rl.registry` that every layer shares)."""
    code = (
        "import sys, agentic_rl.rl; "
        "bad = sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('agentic_rl.') and m.split('.')[1] not in ('rl', 'registry')}); "
        "assert not bad, bad"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
