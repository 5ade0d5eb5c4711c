"""Episodes laid out as several rows (context rewrites): every estimator must give each
sampled token exactly the advantage and return of the unsplit, one-row episode.

The key test draws a random one-row batch, splits each episode at random turn
boundaries into 1-4 rows (each new row: some prefix, then its slice of turns, re-indexed,
with `turn_offset`; later rows carry a different prefix, as after a rewrite), shuffles
the rows, and compares token by token with the one-row results.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from agentic_rl import rl
from agentic_rl.rl.episodes import Episodes, final_turn_rows

from . import reference as ref

B, T, K = 8, 28, 4
ROWS, T_SPLIT = 4 * B, T + 4  # split batches are padded to a fixed shape: one compile
TOL = dict(rtol=1e-5, atol=1e-5)
GROUP = ("grpo", "dr_grpo", "rloo")


def configs():
    """(estimator, level, whiten weighting) for every registered estimator."""
    out = []
    for name in rl.ADVANTAGES.names():
        if name in GROUP:
            out += [(name, "outcome", "token"), (name, "turn", "token")]
        elif name.startswith("reinforce_pp"):
            out += [(name, "outcome", "token"), (name, "outcome", "rollout")]
        else:
            out.append((name, "outcome", "token"))
    return out


@functools.cache
def jitted(name):
    return jax.jit(rl.ADVANTAGES.get(name))


def draw(seed):
    rng = np.random.default_rng(seed)
    batch = ref.random_batch(rng, B, T, K)
    values = rng.normal(size=(B, T)).astype(np.float32)
    token_rewards = (0.1 * rng.normal(size=(B, T))).astype(np.float32)
    cfg = rl.AdvantageConfig(gamma=float(rng.uniform(0.8, 1.0)), lam=float(rng.uniform(0.5, 1.0)),
                             turn_gamma=float(rng.uniform(0.5, 1.0)),
                             turn_lam=float(rng.uniform(0.5, 1.0)))
    truncated = rng.random(B) < 0.5
    bootstrap = np.where(truncated, rng.normal(size=B), 0).astype(np.float32)
    return rng, batch, values, token_rewards, cfg, bootstrap


def split(rng, batch, values, token_rewards, bootstrap, shuffle=True):
    """Splits each row of `batch` into 1-4 rows at random turn boundaries.

    Returns (fields, values, token_rewards, bootstrap, episodes, where): `where[b, t]` is
    the (row, position) of original token (b, t) among the split rows. Positions the
    estimators must not read (non-action values and token rewards, non-final rows'
    bootstrap, the rewards of absent turns) are filled with garbage.
    """
    rows = []  # (orig b, seg start turn, seg end turn, positions, prefix len)
    for b in range(B):
        act = np.flatnonzero(batch.loss_mask[b])
        n_cuts = int(rng.integers(0, 4))
        cuts = sorted(set(rng.integers(1, K, n_cuts).tolist())) if K > 1 else []
        bounds = [0, *cuts, K]
        prompt_end = int(act[0]) if len(act) else 1

        def pos_of(j, act=act, ti=batch.turn_index[b]):
            """The first position of turn j (or a later one), or the row's end."""
            later = act[ti[act] >= j]
            return int(later[0]) if len(later) else T

        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            lo = prompt_end if i == 0 else pos_of(s)
            hi = pos_of(e)
            prefix = prompt_end if i == 0 else int(rng.integers(1, 4))
            rows.append((b, s, e, np.arange(lo, hi), prefix))
    assert len(rows) <= ROWS
    order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))
    rows = [rows[i] for i in order]

    f = dict(loss_mask=np.zeros((ROWS, T_SPLIT), bool),
             turn_index=np.full((ROWS, T_SPLIT), -1, np.int32),
             turn_end=np.full((ROWS, K), -1, np.int32),
             turn_rewards=rng.normal(size=(ROWS, K)).astype(np.float32),  # garbage
             group_id=np.arange(ROWS, dtype=np.int32) * 1000 + 999)  # padding: singletons
    v = rng.normal(size=(ROWS, T_SPLIT)).astype(np.float32)  # garbage off the actions
    tr = rng.normal(size=(ROWS, T_SPLIT)).astype(np.float32)
    boot = rng.normal(size=ROWS).astype(np.float32)
    ep_ids = rng.permutation(B + ROWS).astype(np.int32) * 3 + 5  # sparse episode ids
    episode_index = ep_ids[B:].copy()  # padding rows: their own ids
    turn_offset = np.zeros(ROWS, np.int32)
    where = {}
    for r, (b, s, e, pos, prefix) in enumerate(rows):
        episode_index[r] = ep_ids[b]  # shared by the rows of episode b
        turn_offset[r] = s
        f["group_id"][r] = batch.group_id[b]
        new = prefix + np.arange(len(pos))
        f["loss_mask"][r, new] = batch.loss_mask[b, pos]
        ti = batch.turn_index[b, pos]
        f["turn_index"][r, new] = np.where(ti >= 0, ti - s, -1)
        f["turn_index"][r, :prefix] = -1
        for k in range(s, e):
            if batch.turn_end[b, k] >= 0:
                f["turn_end"][r, k - s] = prefix + int(batch.turn_end[b, k]) - int(pos[0])
            f["turn_rewards"][r, k - s] = batch.turn_rewards[b, k]
        for t_new, t in zip(new, pos):
            if batch.loss_mask[b, t]:
                v[r, t_new] = values[b, t]
                tr[r, t_new] = token_rewards[b, t]
                where[b, t] = (r, t_new)
        last = ref.present(batch.turn_end[b])
        if last and s <= last[-1] < e:
            boot[r] = bootstrap[b]  # the final row holds the episode's bootstrap
    assert set(where) == {(b, t) for b, t in zip(*np.nonzero(batch.loss_mask))}
    return f, v, tr, boot, Episodes(episode_index, turn_offset), where


def compare(orig, got, where, **tol):
    for (b, t), (r, t_new) in where.items():
        np.testing.assert_allclose(got[r, t_new], orig[b, t], err_msg=str((b, t)), **(tol or TOL))


@pytest.mark.parametrize("bootstrapped", [False, True])
@pytest.mark.parametrize("with_token_rewards", [False, True])
@pytest.mark.parametrize("name,level,weighting", configs())
def test_split_episodes_get_the_advantages_of_the_unsplit_ones(
        name, level, weighting, with_token_rewards, bootstrapped):
    for seed in range(4):
        rng, batch, values, token_rewards, cfg, bootstrap = draw(seed)
        cfg = cfg.replace(level=level, whiten_weighting=weighting)
        if not with_token_rewards:
            token_rewards = np.zeros_like(token_rewards)
        if not bootstrapped:
            bootstrap = np.zeros_like(bootstrap)
        adv, ret = jitted(name)(**ref.fields(batch), cfg=cfg, values=values,
                                token_rewards=token_rewards, bootstrap=bootstrap)
        f, v, tr, boot, episodes, where = split(rng, batch, values, token_rewards, bootstrap)
        if not with_token_rewards:
            tr = np.zeros_like(tr)
        adv_s, ret_s = jitted(name)(**f, cfg=cfg, values=v, token_rewards=tr, bootstrap=boot,
                                    episodes=episodes)
        adv_s, ret_s = np.asarray(adv_s), np.asarray(ret_s)
        compare(np.asarray(adv), adv_s, where)
        compare(np.asarray(ret), ret_s, where)
        assert np.all(adv_s[~f["loss_mask"]] == 0)


def test_the_key_test_splits_episodes_and_sees_the_difference():
    """The split really changes the layout: without `episodes`, a row-wise estimator gets
    other numbers (so the test above is not vacuous)."""
    rng, batch, values, tr, cfg, bootstrap = draw(0)
    adv, _ = jitted("gae")(**ref.fields(batch), cfg=cfg, values=values, token_rewards=tr,
                           bootstrap=bootstrap)
    f, v, tr_s, boot, episodes, where = split(rng, batch, values, tr, bootstrap)
    multi = np.unique(episodes.episode_index, return_counts=True)[1].max()
    assert multi > 1
    adv_rows, _ = jitted("gae")(**f, cfg=cfg, values=v, token_rewards=tr_s, bootstrap=boot)
    diffs = [abs(float(adv_rows[r, tn]) - float(adv[b, t])) for (b, t), (r, tn) in where.items()]
    assert max(diffs) > 1e-3


@pytest.mark.parametrize("name,level,weighting", configs())
def test_default_episode_fields_reproduce_the_one_row_results(name, level, weighting):
    """Each row its own episode (the EpisodeBatch defaults): bit for bit the one-row code
    when the fields are concrete (`compute_advantages` sees that every episode is one
    row); under jit, with traced fields, the episode code agrees to float rounding."""
    rng, batch, values, tr, cfg, bootstrap = draw(3)
    cfg = cfg.replace(estimator=name, level=level, whiten_weighting=weighting, whiten=True)
    truncated = bootstrap != 0
    plain = {**ref.fields(batch), "truncated": truncated}
    with_eps = {**plain, "episode_index": np.arange(B, dtype=np.int32) * 5 + 2,
                "turn_offset": np.zeros(B, np.int32)}
    kw = dict(values=values, token_rewards=tr, cut_values=bootstrap)
    a0, r0 = rl.compute_advantages(plain, cfg, **kw)
    a1, r1 = rl.compute_advantages(with_eps, cfg, **kw)
    np.testing.assert_array_equal(a0, a1)
    np.testing.assert_array_equal(r0, r1)
    a2, r2 = jax.jit(rl.compute_advantages)(with_eps, cfg, **kw)
    np.testing.assert_allclose(a2, a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r2, r0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["grpo", "reinforce_pp", "turn_gae"])
def test_compute_advantages_reads_the_episode_fields_and_whitens_by_episode(name):
    """Through `compute_advantages` (a dict and a namespace), with `truncated` +
    `cut_values` and whitening that weighs every episode the same."""
    rng, batch, values, tr, cfg, bootstrap = draw(1)
    cfg = cfg.replace(estimator=name, whiten=True, whiten_weighting="rollout")
    truncated = bootstrap != 0
    cut = np.where(truncated, bootstrap, rng.normal(size=B)).astype(np.float32)
    adv, ret = rl.compute_advantages({**ref.fields(batch), "truncated": truncated}, cfg,
                                     values=values, token_rewards=tr, cut_values=cut)
    f, v, tr_s, boot, episodes, where = split(rng, batch, values, tr, bootstrap)
    trunc_s = np.zeros(ROWS, bool)
    # the final row of each truncated episode is truncated, with the episode's cut value
    final = np.asarray(final_turn_rows(np.asarray(f["turn_end"]) >= 0, episodes))
    for r in np.flatnonzero(final):
        b = next(b for (b, _), (rr, _) in where.items() if rr == r)
        trunc_s[r] = truncated[b]
    cut_s = np.where(trunc_s, boot, rng.normal(size=ROWS)).astype(np.float32)
    ns = SimpleNamespace(**f, truncated=trunc_s, episode_index=episodes.episode_index,
                         turn_offset=episodes.turn_offset)
    adv_s, ret_s = rl.compute_advantages(ns, cfg, values=v, token_rewards=tr_s,
                                         cut_values=cut_s)
    compare(np.asarray(adv), np.asarray(adv_s), where, rtol=1e-4, atol=1e-4)
    compare(np.asarray(ret), np.asarray(ret_s), where)


def test_estimator_without_the_episodes_keyword():
    """A user's estimator from before `episodes`: fine on one-row episodes, a clear error
    for a batch with a multi-row episode (eagerly, and under jit)."""
    calls = []

    def old_style(*, turn_rewards, turn_end, turn_index, loss_mask, group_id, cfg,
                  values=None, token_rewards=None, bootstrap=None):
        calls.append(1)
        return rl.ADVANTAGES.get("grpo")(
            turn_rewards=turn_rewards, turn_end=turn_end, turn_index=turn_index,
            loss_mask=loss_mask, group_id=group_id, cfg=cfg)

    rl.ADVANTAGES.register("test_old_style", old_style, overwrite=True)
    try:
        _, batch, _, _, cfg, _ = draw(0)
        cfg = cfg.replace(estimator="test_old_style")
        one = {**ref.fields(batch), "episode_index": np.arange(B) * 2, "turn_offset":
               np.zeros(B, np.int32)}
        a, _ = rl.compute_advantages(one, cfg)
        a_ref, _ = rl.compute_advantages(ref.fields(batch), cfg.replace(estimator="grpo"))
        np.testing.assert_array_equal(a, a_ref)
        np.testing.assert_array_equal(jax.jit(rl.compute_advantages)(one, cfg)[0], a_ref)
        multi = {**one, "episode_index": np.arange(B) // 2}
        with pytest.raises(ValueError, match="takes no `episodes` keyword"):
            rl.compute_advantages(multi, cfg)
        with pytest.raises(Exception, match="takes no `episodes` keyword"):
            jax.block_until_ready(jax.jit(rl.compute_advantages)(multi, cfg))
    finally:
        rl.ADVANTAGES._fns.pop("test_old_style")
        rl.ADVANTAGES._meta.pop("test_old_style")


def test_by_agent_passes_the_episodes_along():
    rng, batch, values, tr, cfg, bootstrap = draw(2)
    cfg = cfg.replace(estimator="rloo")
    adv, _ = rl.compute_advantages(ref.fields(batch), cfg)
    f, v, tr_s, boot, episodes, where = split(rng, batch, values, tr, bootstrap)
    row_agent = np.zeros(ROWS, np.int32)
    adv_s, _ = rl.compute_advantages_by_agent(
        {**f, "episode_index": episodes.episode_index, "turn_offset": episodes.turn_offset},
        cfg, ((0, cfg.replace(estimator="grpo")),), row_agent)
    adv_grpo, _ = rl.compute_advantages(ref.fields(batch), cfg.replace(estimator="grpo"))
    compare(np.asarray(adv_grpo), np.asarray(adv_s), where, rtol=1e-4, atol=1e-4)
    assert not np.allclose(adv, adv_grpo)


def test_episode_space_round_trip_and_chained_gae_by_hand():
    """Two rows of one episode (turns 0-1, then 2) and a row of its own; chained GAE equals
    masked GAE on the concatenated row."""
    present = np.array([[True, True, False], [True, False, False], [True, False, False]])
    eps = Episodes(np.array([7, 7, 2]), np.array([0, 2, 0]))
    x = np.array([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [4.0, 9.0, 9.0]], np.float32)
    space = np.asarray(rl.to_episode_turns(x, present, eps))
    np.testing.assert_array_equal(space[1], [1, 2, 3])  # episode 7 = rank 1
    np.testing.assert_array_equal(space[0], [4, 0, 0])
    np.testing.assert_array_equal(rl.from_episode_turns(space, present, eps),
                                  np.where(present, x, 0))
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 6)).astype(np.float32), rng.normal(size=(2, 6)).astype(np.float32)
    m = np.array([[0, 1, 1, 0, 1, 0], [1, 0, 1, 1, 0, 0]], bool)
    whole_r, whole_v = np.concatenate([r[0], r[1]])[None], np.concatenate([v[0], v[1]])[None]
    whole = np.asarray(rl.masked_gae(whole_r, whole_v, np.concatenate([m[0], m[1]])[None],
                                     0.9, 0.8, last_value=np.array([0.5])))[0]
    got = np.asarray(rl.chained_gae(r, v, m, 0.9, 0.8, Episodes(np.array([1, 1]),
                                    np.array([0, 1])), last_value=np.array([-3.0, 0.5])))
    np.testing.assert_allclose(np.concatenate([got[0], got[1]]), whole, rtol=1e-6)


# ----------------------------------------------------------------------------- the data contract


def _record(turns, group=0, episode=None, offset=0, truncated=False):
    from agentic_rl.rollout import EpisodeRecord

    r = EpisodeRecord(group_id=group, episode=episode, turn_offset=offset, truncated=truncated)
    r.append([1, 2], sampled=False, turn=-1, agent=-1)
    for k in range(turns):
        r.append([10 + k] * 2, sampled=True, turn=k, agent=0, logprobs=[-0.5] * 2)
        r.turn_ends.append(len(r) - 1)
        r.turn_rewards.append(float(offset + k))
        r.append([20], sampled=False, turn=k, agent=-1)
    return r


def test_collate_builds_the_episode_fields_from_records():
    from agentic_rl.rollout import collate, pad_rows

    recs = [_record(2, group=4, episode="a"), _record(1),
            _record(3, group=4, episode="a", offset=2, truncated=True), _record(1),
            _record(1, group=1, episode=("b", 1))]
    b = collate(recs, length_bucket=8)
    np.testing.assert_array_equal(b.episode_index, [0, 1, 0, 2, 3])  # None: own ids
    np.testing.assert_array_equal(b.turn_offset, [0, 0, 2, 0, 0])
    assert b.episode_index.dtype == np.int32 and b.turn_offset.dtype == np.int32
    assert b.num_turns == 5  # K: the most turns of an episode (2 + 3), not of a row
    padded = pad_rows(b, 7)
    padded.validate()
    np.testing.assert_array_equal(padded.episode_index, [0, 1, 0, 2, 3, 4, 5])
    np.testing.assert_array_equal(padded.turn_offset[5:], [0, 0])
    # every existing caller: defaults are each row its own episode, offset 0
    plain = collate([_record(2), _record(1)], length_bucket=8)
    np.testing.assert_array_equal(plain.episode_index, [0, 1])
    np.testing.assert_array_equal(plain.turn_offset, [0, 0])
    with pytest.raises(ValueError, match="turns > num_turns"):
        collate(recs, length_bucket=8, num_turns=4)


def test_episode_batch_defaults_the_episode_fields():
    from agentic_rl.rollout import collate

    b = collate([_record(2), _record(1)], length_bucket=8)
    fields = {k: getattr(b, k) for k in b.__dataclass_fields__
              if k not in ("episode_index", "turn_offset")}
    again = type(b)(**fields)
    np.testing.assert_array_equal(again.episode_index, [0, 1])
    np.testing.assert_array_equal(again.turn_offset, [0, 0])
    again.validate()


@pytest.mark.parametrize("case,match", [
    ("group", "EpisodeBatch.group_id: rows .* of episode 0 differ"),
    ("overlap", "EpisodeBatch.turn_offset: rows .* overlap"),
    ("past_k", "EpisodeBatch.turn_offset: row 1 .* past the turn axis K=4"),
    ("truncated", "EpisodeBatch.truncated: row 0 of episode 0 is not its final row"),
    ("negative", "EpisodeBatch.turn_offset must be >= 0"),
    ("index", r"EpisodeBatch.episode_index must be dense ids in \[0, B=2\)"),
    ("shape", r"EpisodeBatch.episode_index must have shape \[B\]"),
])
def test_validation_names_each_broken_episode_invariant(case, match):
    from agentic_rl.rollout import collate

    b = collate([_record(2, episode="e"), _record(2, episode="e", offset=2)], length_bucket=8,
                num_turns=4)
    b.validate()
    bad = {
        "group": dict(group_id=np.array([0, 1], np.int32)),
        "overlap": dict(turn_offset=np.array([0, 1], np.int32)),
        "past_k": dict(turn_offset=np.array([0, 3], np.int32)),
        "truncated": dict(truncated=np.array([True, False])),
        "negative": dict(turn_offset=np.array([-1, 2], np.int32)),
        "index": dict(episode_index=np.array([0, 2], np.int32)),
        "shape": dict(episode_index=np.zeros((2, 1), np.int32)),
    }[case]
    with pytest.raises(ValueError, match=match):
        b.replace(**bad).validate()
    # the final row may be truncated
    b.replace(truncated=np.array([False, True])).validate()
