"""Config schema, shell overrides and their error messages; the CLI's argument handling."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentic_rl.train.config import ConfigError, default_config, validate
from agentic_rl.train.config_files import apply_overrides, load_config_file, split_overrides
from tests.train.conftest import REPO, TINY


def test_overrides_are_parsed_to_the_type_of_the_key():
    cfg = apply_overrides(default_config(), {
        "rl.kl_coef": "0.01", "train.max_steps": "7", "eval.greedy": "false",
        "model.name": "tiny", "env.kwargs.high": "8"})
    assert cfg.rl.kl_coef == 0.01 and isinstance(cfg.rl.kl_coef, float)
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.eval.greedy is False
    assert cfg.model.name == "tiny"
    assert cfg.env.kwargs.high == 8


def test_misspelled_override_names_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        apply_overrides(default_config(), {"rl.kl_coeff": "0.1"})
    msg = str(e.value)
    assert "rl.kl_coeff" in msg and "Did you mean 'rl.kl_coef'" in msg
    assert "rl.entropy_coef" in msg  # lists the valid siblings


def test_unknown_group_names_the_top_level_keys():
    with pytest.raises(ConfigError, match="Valid keys: .*optim"):
        apply_overrides(default_config(), {"optimizer.lr": "1"})


def test_bad_value_type_is_rejected():
    with pytest.raises(ConfigError, match="expects a number"):
        apply_overrides(default_config(), {"optim.learning_rate": "fast"})


def test_config_files_are_locked_against_typos(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from agentic_rl.train.config import default_config\n"
        "def get_config(variant=None):\n"
        "    c = default_config()\n"
        "    c.rl.kl_cofe = 0.1\n"
        "    return c\n"
    )
    with pytest.raises(AttributeError, match="kl_coef"):
        load_config_file(str(bad))


def test_env_kwargs_are_checked_against_the_env_factory(tiny_config):
    cfg = tiny_config()
    cfg.env.kwargs["max_gueses"] = 3
    with pytest.raises(ConfigError, match="max_guesses"):
        validate(cfg)


def test_algo_and_estimator_must_agree(tiny_config):
    cfg = apply_overrides(tiny_config("grpo"), {"rl.advantage.estimator": "gae"})
    with pytest.raises(ConfigError, match="needs a critic"):
        validate(cfg)
    cfg = apply_overrides(tiny_config("ppo"), {"rl.advantage.estimator": "rloo"})
    with pytest.raises(ConfigError, match="trains a critic"):
        validate(cfg)


def test_registry_names_are_validated(tiny_config):
    cfg = apply_overrides(tiny_config(), {"rl.loss.policy_loss": "ppo2"})
    with pytest.raises(ConfigError, match="cispo"):
        validate(cfg)


@pytest.mark.parametrize("variant", ["grpo", "ppo", "grpo_kl_reward"])
def test_tiny_experiment_variants_validate(tiny_config, variant):
    validate(tiny_config(variant))


def test_experiment_configs_validate():
    for spec in ("smollm2_calculator_grpo.py", "smollm2_calculator_grpo.py:ppo",
                 "smollm2_calculator_grpo.py:full", "smollm2_calculator_grpo.py:judge"):
        validate(load_config_file(str(REPO / "experiments" / spec)))


@pytest.mark.parametrize("variant", ["both", "closer", "shared", "own", "counterfactual"])
def test_tiny_team_variants_validate(variant):
    cfg = load_config_file(str(REPO / "experiments" / f"tiny_team.py:{variant}"))
    validate(cfg)
    # agent.kwargs is open: a registered program's options, parsed as Python literals
    cfg = apply_overrides(cfg, {"agent.kwargs.own_weight": "0.5"})
    assert cfg.agent.kwargs.own_weight == 0.5


def test_split_overrides_accepts_both_shell_forms():
    rest, ov = split_overrides(["--config", "x.py", "--config.rl.kl_coef=0.1",
                                "--config.seed", "3", "--workdir", "w"])
    assert rest == ["--config", "x.py", "--workdir", "w"]
    assert ov == {"rl.kl_coef": "0.1", "seed": "3"}


def test_cli_rejects_unknown_key_with_exit_code_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "agentic_rl.train", "--config", f"{TINY}:grpo",
         "--workdir", str(tmp_path), "--config.train.max_step=3"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert "unknown config key 'train.max_step'" in out.stderr
    assert "train.max_steps" in out.stderr


def test_cli_prints_resolved_config(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "agentic_rl.train", "--config", f"{TINY}:ppo",
         "--workdir", str(tmp_path), "--config.rl.kl_coef=0.5", "--print-config"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"kl_coef": 0.5' in out.stdout and '"algo": "ppo"' in out.stdout


def test_every_knob_in_code_is_reachable_from_the_config():
    """Every field of LossConfig and RolloutConfig has a config key that reaches it (the
    rollout's agent_id and extra stop ids are set by the runtime and the chat format)."""
    import dataclasses

    from agentic_rl.rl import LossConfig
    from agentic_rl.rollout import RolloutConfig
    from agentic_rl.train import builders

    cfg = apply_overrides(default_config(), {
        "rl.loss.gspo_level": "turn", "rollout.stop_strings": '("</a>", "</b>")',
        "rollout.straggler_wait_s": "0.5", "rollout.max_workers": "3",
        "rollout.max_error_fraction": "0.5", "rollout.max_tool_calls": "2",
        "rollout.max_tool_call_chars": "100"})
    loss = builders.loss_config(cfg)
    assert {f.name for f in dataclasses.fields(LossConfig)} == set(cfg.rl.loss)
    assert loss.gspo_level == "turn"
    r = builders.rollout_config(cfg)
    assert (r.stop_strings, r.straggler_wait_s, r.max_workers, r.max_error_fraction) == (
        ("</a>", "</b>"), 0.5, 3, 0.5)
    assert (r.parser.max_calls, r.parser.max_call_chars) == (2, 100)
    runtime = {"agent_id", "extra_stop_token_ids", "parser"}
    keys = set(cfg.rollout) | {"parser"}
    missing = {f.name for f in dataclasses.fields(RolloutConfig)} - keys - runtime
    assert not missing, missing
    # a single string is one stop string; anything else is a clear error
    one = apply_overrides(default_config(), {"rollout.stop_strings": "</x>"})
    assert one.rollout.stop_strings == ("</x>",)
    with pytest.raises(ConfigError, match="tuple of strings"):
        apply_overrides(default_config(), {"rollout.stop_strings": "(1, 2)"})
    with pytest.raises(ConfigError, match="rollout: RolloutConfig.max_workers must be >= 1"):
        validate(apply_overrides(default_config(), {"rollout.max_workers": "0"}))
    with pytest.raises(ConfigError, match="gspo_level"):
        validate(apply_overrides(default_config(), {"rl.loss.gspo_level": "token"}))
