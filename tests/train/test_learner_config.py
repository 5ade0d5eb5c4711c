"""Config validation of the learner options: GSPO's aggregation, sampling truncation vs
the scored distribution, the off-policy correction keys, and their defaults."""

from __future__ import annotations

import pytest

from agentic_rl import rl
from agentic_rl.train import builders
from agentic_rl.train.config import ConfigError, default_config, validate
from agentic_rl.train.config_files import apply_overrides


def test_defaults_keep_the_on_policy_losses():
    c = default_config().rl.loss
    assert c.off_policy == "none"
    loss = builders.loss_config(default_config())
    assert loss.off_policy == "none" and loss == rl.LossConfig()


def test_gspo_needs_its_sequence_level_aggregation(tiny_config):
    cfg = apply_overrides(tiny_config(), {"rl.loss.policy_loss": "gspo"})
    with pytest.raises(ConfigError, match="gspo.*rl.loss.aggregation='seq_mean_token_mean'"):
        validate(cfg)
    validate(apply_overrides(cfg, {"rl.loss.aggregation": "seq_mean_token_mean"}))


@pytest.mark.parametrize("key,value", [("rollout.top_p", "0.9"), ("rollout.top_k", "20")])
def test_truncated_sampling_is_rejected_with_the_reason(tiny_config, key, value):
    cfg = apply_overrides(tiny_config(), {key: value})
    with pytest.raises(ConfigError, match=f"{key}.*truncat.*full vocabulary"):
        validate(cfg)


def test_temperature_must_be_positive_and_is_allowed_with_reuse(tiny_config):
    with pytest.raises(ConfigError, match="rollout.temperature must be > 0"):
        validate(apply_overrides(tiny_config(), {"rollout.temperature": "0"}))
    validate(apply_overrides(tiny_config(), {"rollout.temperature": "0.7",
                                             "train.reuse_sample_logprobs": "true"}))


@pytest.mark.parametrize("overrides,fragment", [
    ({"rl.loss.off_policy": "is"}, "rl.loss.off_policy='is' is not valid; choose one of "
                                   "decoupled, mis, none, tis"),
    ({"rl.loss.off_policy": "tis", "rl.loss.off_policy_tis_cap": "0.5"},
     "off_policy_tis_cap must be >= 1"),
    ({"rl.loss.off_policy": "mis", "rl.loss.off_policy_mis_low": "1.2"},
     r"band \[off_policy_mis_low, off_policy_mis_high\] must contain 1"),
    ({"rl.loss.off_policy": "mis", "rl.loss.off_policy_mis_high": "0.9"},
     r"band \[off_policy_mis_low, off_policy_mis_high\] must contain 1"),
    ({"rl.loss.off_policy": "decoupled", "train.reuse_sample_logprobs": "true"},
     "off_policy.*reuse_sample_logprobs"),
])
def test_off_policy_keys_are_validated(tiny_config, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(apply_overrides(tiny_config(), overrides))


@pytest.mark.parametrize("correction", ["tis", "mis", "decoupled"])
def test_off_policy_corrections_validate_and_reach_the_loss_config(tiny_config, correction):
    cfg = validate(apply_overrides(tiny_config(), {"rl.loss.off_policy": correction,
                                                   "rl.loss.off_policy_tis_cap": "3"}))
    loss = builders.loss_config(cfg)
    assert loss.off_policy == correction and loss.off_policy_tis_cap == 3.0
