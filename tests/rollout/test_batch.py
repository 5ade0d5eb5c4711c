"""EpisodeBatch: collate pads and buckets; validate() catches each broken invariant;
host metadata never causes a jit retrace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentic_rl.rollout import EpisodeBatch, EpisodeRecord, HostMetadata, collate


def record(
    turns: int = 2, group: int = 0, prompt: int = 3, obs: int = 2, gen: int = 2
) -> EpisodeRecord:
    r = EpisodeRecord(group_id=group, metadata={"episode": f"{group}-{turns}"})
    r.append(range(prompt), sampled=False, turn=-1, agent=-1)
    for k in range(turns):
        r.append([10 + k] * gen, sampled=True, turn=k, agent=0, logprobs=[-0.5] * gen)
        r.turn_ends.append(len(r) - 1)
        r.turn_rewards.append(float(k))
        if k < turns - 1:
            r.append([20] * obs, sampled=False, turn=k, agent=-1)
    return r


def test_collate_pads_and_lays_out_fields():
    b = collate([record(2, group=0), record(1, group=1)], length_bucket=8, num_turns=3)
    assert b.tokens.shape == (2, 16) and b.turn_end.shape == (2, 3)
    assert (b.batch_size, b.seq_len, b.num_turns) == (2, 16, 3)
    assert b.tokens.dtype == np.int32 and b.sample_logprobs.dtype == np.float32
    np.testing.assert_array_equal(b.attention_mask.sum(1), [9, 5])
    np.testing.assert_array_equal(b.loss_mask[0, :9], [0, 0, 0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(b.turn_index[0, :10], [-1, -1, -1, 0, 0, 0, 0, 1, 1, -1])
    np.testing.assert_array_equal(b.agent_id[0, :10], [-1, -1, -1, 0, 0, -1, -1, 0, 0, -1])
    np.testing.assert_array_equal(b.turn_end, [[4, 8, -1], [4, -1, -1]])
    np.testing.assert_array_equal(b.turn_rewards, [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b.group_id, [0, 1])
    assert b.sample_logprobs[0, 3] == -0.5 and b.sample_logprobs[0, 5] == 0
    assert [m["episode"] for m in b.metadata] == ["0-2", "1-1"]


def test_collate_errors():
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(ValueError, match="tokens > length=4"):
        collate([record()], length=4)
    with pytest.raises(ValueError, match="turns > num_turns=1"):
        collate([record(2)], num_turns=1)
    r = record()
    r.turn_rewards.pop()
    with pytest.raises(ValueError, match="2 turn ends but 1 rewards"):
        collate([r])
    with pytest.raises(ValueError, match="one log-prob per token"):
        EpisodeRecord().append([1, 2], sampled=True, turn=0, agent=0, logprobs=[0.0])


def test_collate_carries_the_truncated_flag():
    """`truncated` [B] says which episodes were cut by a limit (max_turns / max_tokens) rather
    than ended by the environment: critic-based advantages bootstrap those."""
    cut = record(2)
    cut.truncated = True
    b = collate([record(1), cut, record(2, group=1)], length_bucket=8, num_turns=3)
    assert b.truncated.dtype == np.bool_ and b.truncated.shape == (3,)
    np.testing.assert_array_equal(b.truncated, [False, True, False])
    assert EpisodeRecord().truncated is False


def test_rollout_marks_episodes_cut_by_a_limit_as_truncated(char_tokenizer):
    from agentic_rl.agents import run_episodes
    from agentic_rl.rollout import RolloutConfig, ScriptedPolicy, make_chat_format
    from tests.rollout.scripts import ToyEnv, toy_task

    fmt = make_chat_format("chatml", char_tokenizer)
    policy = ScriptedPolicy(char_tokenizer, lambda req, hist: "go")
    tasks = [toy_task(0, turns=2), toy_task(1, turns=100)]
    res = run_episodes(policy, fmt, ToyEnv, tasks, config=RolloutConfig(max_turns=3))
    assert [m["termination"] for m in res.batch.metadata] == ["done", "max_turns"]
    np.testing.assert_array_equal(res.batch.truncated, [False, True])
    prompt_len = len(fmt.encode_prompt(ToyEnv().reset(toy_task(0), 0)))
    cfg = RolloutConfig(max_episode_tokens=prompt_len + 30, max_turns=50)
    res = run_episodes(policy, fmt, ToyEnv, [toy_task(0, turns=100)], config=cfg)
    assert res.batch.metadata[0]["termination"] == "max_tokens"
    np.testing.assert_array_equal(res.batch.truncated, [True])


def _set(field, index, value):
    def mutate(b):
        arr = np.array(getattr(b, field))
        arr[index] = value
        return b.replace(**{field: arr})

    return mutate


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda b: b.replace(tokens=b.tokens[:, :-1]), "but EpisodeBatch.tokens has T=15"),
        (lambda b: b.replace(loss_mask=b.loss_mask.astype(np.int32)), "loss_mask has dtype"),
        (lambda b: b.replace(group_id=b.group_id[None]), "group_id must have shape"),
        (lambda b: b.replace(metadata=HostMetadata()), "metadata has 0 rows"),
        (_set("attention_mask", (0, 12), True), "right-padded"),
        (_set("loss_mask", (1, 15), True), "loss_mask is set on padding"),
        (_set("sample_logprobs", (0, 0), -1.0), "0 where loss_mask is 0"),
        (_set("sample_logprobs", (0, 3), 0.5), "<= 0"),
        (_set("sample_logprobs", (0, 3), np.nan), "non-finite"),
        (_set("turn_index", (0, 15), 0), "-1 on padding"),
        (_set("agent_id", (0, 15), 0), "-1 on padding"),
        (_set("turn_index", (0, 3), -1), ">= 0 on sampled"),
        (_set("turn_end", (0, 0), 2), "point at sampled tokens"),
        (_set("turn_end", (0, 0), 8), "token of turn k"),
        (_set("turn_end", (0, 0), 99), "position in [0, T)"),
        (_set("turn_end", (0, 0), -1), "no gaps"),
        (_set("turn_rewards", (1, 2), 1.0), "0 for absent turns"),
        (_set("turn_rewards", (0, 0), np.inf), "non-finite"),
        (lambda b: b.replace(truncated=b.truncated.astype(np.int32)), "truncated has dtype"),
        (lambda b: b.replace(truncated=b.truncated[:1]), "truncated has B=1"),
    ],
)
def test_validate_names_the_broken_invariant(mutate, fragment):
    b = collate([record(2), record(1, group=1)], length_bucket=8, num_turns=3)
    with pytest.raises(ValueError, match="EpisodeBatch") as info:
        mutate(b).validate()
    assert fragment in str(info.value)


def test_turn_ends_must_increase():
    r = record(2)
    r.turn_ends.reverse()
    r.turn_index = [
        k if k < 0 else (1 - k if r.loss_mask[i] else k) for i, k in enumerate(r.turn_index)
    ]
    with pytest.raises(ValueError, match="increase with k"):
        collate([r])


def test_host_metadata_never_retraces_jit():
    traces = []

    @jax.jit
    def total_reward(batch: EpisodeBatch):
        traces.append(1)
        return jnp.sum(batch.turn_rewards)

    b1 = collate([record(2)], length_bucket=16, num_turns=2)
    b2 = collate([record(2, group=5)], length_bucket=16, num_turns=2)
    assert b1.metadata.rows != b2.metadata.rows and b1.metadata == b2.metadata
    assert float(total_reward(b1)) == float(total_reward(b2)) == 1.0
    assert len(traces) == 1
    mapped = jax.tree_util.tree_map(lambda x: x, b1)
    assert mapped.metadata.rows == b1.metadata.rows
    assert len(jax.tree_util.tree_leaves(b1)) == 12  # the 12 array fields; metadata is static


def test_pad_rows_appends_empty_rows_that_no_group_sees():
    from agentic_rl.rollout import pad_rows

    batch = collate([record(turns=2, group=0), record(turns=1, group=0)], length_bucket=8,
                    num_turns=2)
    padded = pad_rows(batch, 5)
    padded.validate()
    assert padded.batch_size == 5 and len(padded.metadata) == 5
    assert [m.get("padding", False) for m in padded.metadata] == [False, False, True, True, True]
    assert not padded.attention_mask[2:].any() and not padded.loss_mask[2:].any()
    assert (padded.turn_index[2:] == -1).all() and (padded.turn_end[2:] == -1).all()
    assert (padded.agent_id[2:] == -1).all() and not padded.truncated[2:].any()
    gids = np.asarray(padded.group_id)
    assert len(set(gids[2:])) == 3 and (gids[2:] < 0).all()  # each its own group
    np.testing.assert_array_equal(padded.tokens[:2], batch.tokens)
    assert pad_rows(batch, 2) is batch
