"""Plain NumPy / Python loop references for agentic_rl.rl, and random ragged batches.

Written from the definitions (papers / docstrings), one episode and one token at a
time in float64, independently of the vectorised JAX code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- batches


@dataclass
class Batch:
    tokens: np.ndarray
    loss_mask: np.ndarray
    sample_logprobs: np.ndarray
    turn_index: np.ndarray
    turn_end: np.ndarray
    turn_rewards: np.ndarray
    group_id: np.ndarray


def random_batch(rng: np.random.Generator, B: int = 8, T: int = 28, K: int = 4) -> Batch:
    """Ragged multi-turn rows: a prompt, then per turn 0-3 sampled tokens (0 = an empty
    turn, turn_end -1) and 0-2 observation tokens, then padding. Some rows have no
    turn at all (fully masked). Absent turns carry garbage rewards, which every
    estimator must ignore. Group ids are sparse, non-dense integers."""
    loss_mask = np.zeros((B, T), bool)
    turn_index = np.full((B, T), -1, np.int32)
    turn_end = np.full((B, K), -1, np.int32)
    for b in range(B):
        pos = int(rng.integers(1, 4))
        n_turns = 0 if rng.random() < 0.15 else int(rng.integers(1, K + 1))
        for k in range(n_turns):
            a = min(int(rng.integers(0, 4)), T - pos)
            if a > 0:
                loss_mask[b, pos : pos + a] = True
                turn_index[b, pos : pos + a] = k
                turn_end[b, k] = pos + a - 1
                pos += a
            o = min(int(rng.integers(0, 3)), T - pos)
            # observation tokens: loss_mask 0; their turn_index may be k or -1
            turn_index[b, pos : pos + o] = k if rng.random() < 0.5 else -1
            pos += o
    sample_lp = np.where(loss_mask, -rng.exponential(1.0, (B, T)), 0.0).astype(np.float32)
    return Batch(
        tokens=rng.integers(0, 100, (B, T)).astype(np.int32),
        loss_mask=loss_mask,
        sample_logprobs=sample_lp,
        turn_index=turn_index,
        turn_end=turn_end,
        turn_rewards=rng.normal(size=(B, K)).astype(np.float32),
        group_id=(rng.integers(0, max(B // 3, 1), B) * 7 + 3).astype(np.int32),
    )


def fields(batch: Batch) -> dict:
    return dict(
        turn_rewards=batch.turn_rewards,
        turn_end=batch.turn_end,
        turn_index=batch.turn_index,
        loss_mask=batch.loss_mask,
        group_id=batch.group_id,
    )


# ----------------------------------------------------------------------------- episode views


def present(batch_turn_end_row) -> list[int]:
    return [k for k, e in enumerate(batch_turn_end_row) if e >= 0]


def action_positions(mask_row) -> list[int]:
    return [t for t, m in enumerate(mask_row) if m]


def turn_tokens(mask_row, ti_row, k) -> list[int]:
    return [t for t in range(len(mask_row)) if mask_row[t] and ti_row[t] == k]


def turn_reward_list(b, batch: Batch, token_rewards=None) -> dict[int, float]:
    """Effective reward of each present turn of episode b."""
    out = {}
    for k in present(batch.turn_end[b]):
        r = float(batch.turn_rewards[b, k])
        if token_rewards is not None:
            r += sum(
                float(token_rewards[b, t])
                for t in turn_tokens(batch.loss_mask[b], batch.turn_index[b], k)
            )
        out[k] = r
    return out


def token_reward_row(b, batch: Batch, token_rewards=None) -> np.ndarray:
    T = batch.loss_mask.shape[1]
    r = np.zeros(T)
    for k in present(batch.turn_end[b]):
        r[batch.turn_end[b, k]] += batch.turn_rewards[b, k]
    if token_rewards is not None:
        for t in action_positions(batch.loss_mask[b]):
            r[t] += token_rewards[b, t]
    return r


# ----------------------------------------------------------------------------- critic-based


def _bootstrap(b, bootstrap) -> float:
    """The value after episode b's last action: 0 if it terminated (or none is given)."""
    return 0.0 if bootstrap is None else float(bootstrap[b])


def gae(batch: Batch, values, gamma, lam, token_rewards=None, bootstrap=None):
    """``bootstrap[b]``: the value of the state after row b's last action (the critic's
    value at the cut of a truncated episode; 0 for one that terminated)."""
    values = np.asarray(values, np.float64)
    B, T = batch.loss_mask.shape
    adv = np.zeros((B, T))
    for b in range(B):
        r = token_reward_row(b, batch, token_rewards)
        running, next_v = 0.0, _bootstrap(b, bootstrap)
        for t in reversed(action_positions(batch.loss_mask[b])):
            delta = r[t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            next_v = values[b, t]
    return adv, np.where(batch.loss_mask, adv + values, 0)


def _turn_gae(b, batch, values, turn_gamma, turn_lam, token_rewards, bootstrap=None):
    rewards = turn_reward_list(b, batch, token_rewards)
    ks = list(rewards)
    a_turn, v_turn = {}, {}
    running, next_v = 0.0, _bootstrap(b, bootstrap)
    for k in reversed(ks):
        v = float(values[b, turn_tokens(batch.loss_mask[b], batch.turn_index[b], k)[0]])
        delta = rewards[k] + turn_gamma * next_v - v
        running = delta + turn_gamma * turn_lam * running
        a_turn[k], v_turn[k] = running, v
        next_v = v
    return a_turn, v_turn


def turn_gae(batch, values, turn_gamma, turn_lam, token_rewards=None, bootstrap=None):
    B, T = batch.loss_mask.shape
    adv, ret = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        a_turn, v_turn = _turn_gae(b, batch, values, turn_gamma, turn_lam, token_rewards,
                                   bootstrap)
        for k in a_turn:
            for t in turn_tokens(batch.loss_mask[b], batch.turn_index[b], k):
                adv[b, t] = a_turn[k]
                ret[b, t] = a_turn[k] + v_turn[k]
    return adv, ret


def bilevel_gae(batch, values, gamma, lam, turn_gamma, turn_lam, token_rewards=None,
                bootstrap=None):
    B, T = batch.loss_mask.shape
    adv = np.zeros((B, T))
    for b in range(B):
        a_turn, v_turn = _turn_gae(b, batch, values, turn_gamma, turn_lam, token_rewards,
                                   bootstrap)
        for k in a_turn:
            toks = turn_tokens(batch.loss_mask[b], batch.turn_index[b], k)
            assert toks[-1] == batch.turn_end[b, k]
            target = a_turn[k] + v_turn[k]
            running = 0.0
            for i in reversed(range(len(toks))):
                t = toks[i]
                if i == len(toks) - 1:
                    delta = target - values[b, t]
                    running = delta
                else:
                    delta = gamma * values[b, toks[i + 1]] - values[b, t]
                    running = delta + gamma * lam * running
                adv[b, t] = running
    return adv, np.where(batch.loss_mask, adv + values, 0)


# ----------------------------------------------------------------------------- critic-free


def turn_returns_to_go(b, batch, turn_gamma, token_rewards=None) -> dict[int, float]:
    rewards = turn_reward_list(b, batch, token_rewards)
    g, out = 0.0, {}
    for k in reversed(list(rewards)):
        g = rewards[k] + turn_gamma * g
        out[k] = g
    return out


def mc_returns(batch, turn_gamma, token_rewards=None):
    B, T = batch.loss_mask.shape
    out = np.zeros((B, T))
    for b in range(B):
        for k, g in turn_returns_to_go(b, batch, turn_gamma, token_rewards).items():
            for t in turn_tokens(batch.loss_mask[b], batch.turn_index[b], k):
                out[b, t] = g
    return out


def _normalise_group(xs: list[float], kind: str, eps: float) -> list[float]:
    n = len(xs)
    if n < 2 or max(xs) == min(xs):
        return [0.0] * n
    mean = sum(xs) / n
    if kind == "grpo":
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        return [(x - mean) / (std + eps) for x in xs]
    if kind == "dr_grpo":
        return [x - mean for x in xs]
    if kind == "rloo":
        return [x - (sum(xs) - x) / (n - 1) for x in xs]
    raise ValueError(kind)


def group_advantages(batch, kind, level, turn_gamma, eps, token_rewards=None):
    """Returns (advantages [B, T], raw returns [B, T])."""
    B, T = batch.loss_mask.shape
    K = batch.turn_end.shape[1]
    adv, raw = np.zeros((B, T)), np.zeros((B, T))
    rtg = [turn_returns_to_go(b, batch, turn_gamma, token_rewards) for b in range(B)]
    if level == "outcome":
        score = {}
        for b in range(B):
            if rtg[b]:
                score[b] = rtg[b][min(rtg[b])]  # return from the first present turn
        groups: dict[int, list[int]] = {}
        for b in score:
            groups.setdefault(int(batch.group_id[b]), []).append(b)
        for members in groups.values():
            norm = _normalise_group([score[b] for b in members], kind, eps)
            for b, a in zip(members, norm):
                for t in action_positions(batch.loss_mask[b]):
                    adv[b, t], raw[b, t] = a, score[b]
        return adv, raw
    for k in range(K):
        groups = {}
        for b in range(B):
            if k in rtg[b]:
                groups.setdefault(int(batch.group_id[b]), []).append(b)
        for members in groups.values():
            norm = _normalise_group([rtg[b][k] for b in members], kind, eps)
            for b, a in zip(members, norm):
                for t in turn_tokens(batch.loss_mask[b], batch.turn_index[b], k):
                    adv[b, t], raw[b, t] = a, rtg[b][k]
    return adv, raw


def whiten(x, mask, weighting, eps):
    vals, weights = [], []
    for b in range(mask.shape[0]):
        pos = action_positions(mask[b])
        for t in pos:
            vals.append(float(x[b, t]))
            weights.append(1.0 if weighting == "token" else 1.0 / len(pos))
    out = np.zeros(x.shape)
    if not vals or max(vals) == min(vals):
        return out
    w = np.array(weights)
    v = np.array(vals)
    mu = float((w * v).sum() / w.sum())
    sd = math.sqrt(float((w * (v - mu) ** 2).sum() / w.sum()))
    for b in range(mask.shape[0]):
        for t in action_positions(mask[b]):
            out[b, t] = (x[b, t] - mu) / (sd + eps)
    return out


def reinforce_pp(batch, gamma, eps, weighting, baseline, token_rewards=None):
    B, T = batch.loss_mask.shape
    g = np.zeros((B, T))
    for b in range(B):
        r = token_reward_row(b, batch, token_rewards)
        running = 0.0
        for t in reversed(action_positions(batch.loss_mask[b])):
            running = r[t] + gamma * running
            g[b, t] = running
    adv = g.copy()
    if baseline:
        first = {
            b: g[b, action_positions(batch.loss_mask[b])[0]]
            for b in range(B)
            if batch.loss_mask[b].any()
        }
        groups: dict[int, list[int]] = {}
        for b in first:
            groups.setdefault(int(batch.group_id[b]), []).append(b)
        for members in groups.values():
            xs = [first[b] for b in members]
            for b in members:
                base = first[b] if max(xs) == min(xs) else sum(xs) / len(xs)
                adv[b] = np.where(batch.loss_mask[b], g[b] - base, 0)
    return whiten(adv, batch.loss_mask, weighting, eps), g


# ----------------------------------------------------------------------------- losses


def aggregate(per_token, mask, mode, norm_const=1.0):
    B = mask.shape[0]
    if mode == "token_mean":
        return sum(per_token[b, t] for b in range(B) for t in action_positions(mask[b])), float(
            mask.sum()
        )
    rows = [b for b in range(B) if mask[b].any()]
    if mode == "seq_mean_token_mean":
        s = sum(
            sum(per_token[b, t] for t in action_positions(mask[b])) / mask[b].sum() for b in rows
        )
        return s, float(len(rows))
    if mode == "seq_mean_token_sum":
        s = sum(sum(per_token[b, t] for t in action_positions(mask[b])) for b in rows)
        return s, float(len(rows))
    if mode == "seq_sum_const":
        s = sum(sum(per_token[b, t] for t in action_positions(mask[b])) for b in range(B))
        return s, B * norm_const
    raise ValueError(mode)


def per_token_policy_loss(name, lp, old, adv, mask, p, turn_index=None, gspo_level="sequence"):
    """Per-token loss values of each policy loss (float64, loops)."""
    # float64 throughout: NumPy 2 keeps float32 * python float in float32
    lp, old, adv = (np.asarray(a, np.float64) for a in (lp, old, adv))
    B, T = lp.shape
    out = np.zeros((B, T))
    seq_ratio = {}
    if name == "gspo":
        for b in range(B):
            segs: dict[int, list[int]] = {}
            for t in action_positions(mask[b]):
                key = 0 if gspo_level == "sequence" else int(turn_index[b, t])
                segs.setdefault(key, []).append(t)
            for ts in segs.values():
                s = math.exp(sum(lp[b, t] - old[b, t] for t in ts) / len(ts))
                for t in ts:
                    seq_ratio[b, t] = s
    for b in range(B):
        for t in action_positions(mask[b]):
            r = math.exp(lp[b, t] - old[b, t])
            a = adv[b, t]
            if name == "ppo":
                lo, hi = 1 - p["clip_eps"], 1 + p["clip_eps"]
                out[b, t] = -min(r * a, min(max(r, lo), hi) * a)
            elif name == "asym_clip":
                lo, hi = 1 - p["clip_eps_low"], 1 + p["clip_eps_high"]
                out[b, t] = -min(r * a, min(max(r, lo), hi) * a)
            elif name == "dual_clip":
                lo, hi = 1 - p["clip_eps"], 1 + p["clip_eps"]
                obj = min(r * a, min(max(r, lo), hi) * a)
                if a < 0:
                    obj = max(obj, p["dual_clip_c"] * a)
                out[b, t] = -obj
            elif name == "gspo":
                s = seq_ratio[b, t]
                lo, hi = 1 - p["gspo_eps_low"], 1 + p["gspo_eps_high"]
                out[b, t] = -min(s * a, min(max(s, lo), hi) * a)
            elif name == "cispo":
                w = min(max(r, 1 - p["cispo_eps_low"]), 1 + p["cispo_eps_high"])
                out[b, t] = -w * a * lp[b, t]
            elif name == "truncated_is":
                out[b, t] = -min(r, p["tis_cap"]) * a * lp[b, t]
            elif name == "pg":
                out[b, t] = -a * lp[b, t]
            else:
                raise ValueError(name)
    return out



def offpolicy_weights(name, old, behaviour, mask, p):
    """Per-token weights of the off-policy corrections and their metrics (loops, float64).

    rho_t = pi_old(y_t) / pi_behaviour(y_t): the proximal (recomputed) policy over the one
    that sampled. tis: min(rho_t, cap); mis: the sequence ratio prod_t rho_t if it lies in
    [low, high], else 0 for the whole sequence; decoupled: rho_t; none: 1.
    """
    old, behaviour = np.asarray(old, np.float64), np.asarray(behaviour, np.float64)
    B, T = mask.shape
    w = np.ones((B, T))
    rhos, ws, clipped, masked, rows = [], [], 0, 0, 0
    for b in range(B):
        ts = action_positions(mask[b])
        if ts:
            rows += 1
        seq = math.exp(sum(old[b, t] - behaviour[b, t] for t in ts))
        keep = p["off_policy_mis_low"] <= seq <= p["off_policy_mis_high"]
        masked += bool(ts) and not keep
        for t in ts:
            rho = math.exp(old[b, t] - behaviour[b, t])
            rhos.append(rho)
            if name == "tis":
                w[b, t] = min(rho, p["off_policy_tis_cap"])
                clipped += rho > p["off_policy_tis_cap"]
            elif name == "mis":
                w[b, t] = seq if keep else 0.0
            elif name == "decoupled":
                w[b, t] = rho
            elif name != "none":
                raise ValueError(name)
            ws.append(w[b, t])
    r = np.array(rhos)
    metrics = {
        "behav_ratio_mean": r.mean(),
        "behav_ratio_max": r.max(),
        "behav_ratio_min": r.min(),
        "behav_kl": np.mean(r - 1 - np.log(r)),
        "behav_weight_mean": np.mean(ws),
    }
    if name == "tis":
        metrics["behav_clip_frac"] = clipped / len(rhos)
    if name == "mis":
        metrics["behav_mask_frac"] = masked / rows
    return w, metrics

def kl(est, lp, ref):
    if est == "k1":
        return lp - ref
    if est == "k2":
        return 0.5 * (lp - ref) ** 2
    if est == "k3":
        return math.exp(ref - lp) - 1 - (ref - lp)
    raise ValueError(est)


def value_loss_per_token(v, old, ret, eps):
    vc = old + min(max(v - old, -eps), eps)
    return 0.5 * max((v - ret) ** 2, (vc - ret) ** 2)


def dpo(c, r, rc, rr, beta, ls):
    def logsig(z):
        return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))

    h = (c - rc) - (r - rr)
    return -(1 - ls) * logsig(beta * h) - ls * logsig(-beta * h)


def preference_pairs(rewards, group_id):
    """{group id: (best index, worst index)} for groups with a strict preference."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_id):
        groups.setdefault(int(g), []).append(i)
    out = {}
    for g, members in groups.items():
        best = max(members, key=lambda i: (rewards[i], -i))
        worst = min(members, key=lambda i: (rewards[i], i))
        if rewards[best] > rewards[worst]:
            out[g] = (best, worst)
    return out
