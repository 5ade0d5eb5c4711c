"""Logits parity with transformers' PyTorch models on tiny random configs (fp32, 1e-4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from agentic_rl.models import init_cache, load_hf_model, token_logprobs
from tests.models.tiny import KINDS, save_tiny

TOL = 1e-4

# Jitted entry points: eager dispatch of a scanned model is slower than compiling once.
forward = nnx.jit(lambda m, t, mask=None: m(t, mask))
cached = nnx.jit(lambda m, t, c, mask=None: m.forward_cached(t, c, mask))
logits_of = nnx.jit(lambda m, h: m.logits(h))


@pytest.fixture(scope="module", params=KINDS)
def pair(request):
    d, hf = save_tiny(request.param)
    return request.param, hf, load_hf_model(d)


def _ref_logits(hf, toks, mask=None):
    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": torch.tensor(mask.astype(np.int64))}
        return hf(torch.tensor(toks), **kw).logits.numpy()


def test_config_features(pair):
    kind, _, ours = pair
    cfg = ours.cfg
    assert cfg.model_type == kind
    assert cfg.attention_bias == (kind == "qwen2")
    assert cfg.qk_norm == (kind == "qwen3")
    assert cfg.tie_word_embeddings == (kind == "qwen2")
    assert (cfg.rope_scaling is not None) == (kind == "llama")


def test_full_sequence_logits(pair):
    _, hf, ours = pair
    toks = np.random.RandomState(0).randint(0, 97, (3, 37))
    ref = _ref_logits(hf, toks)
    out = np.asarray(forward(ours, jnp.asarray(toks)))
    assert np.abs(out - ref).max() <= TOL


def test_right_padded_batch(pair):
    """Padding must not change the logits of real tokens."""
    _, hf, ours = pair
    rng = np.random.RandomState(1)
    toks = rng.randint(0, 97, (2, 20))
    mask = np.ones_like(toks, bool)
    mask[1, 12:] = False
    out = np.asarray(forward(ours, jnp.asarray(toks), jnp.asarray(mask)))
    ref_short = _ref_logits(hf, toks[1:, :12])
    assert np.abs(out[1, :12] - ref_short[0]).max() <= TOL


def test_cached_step_by_step_decoding(pair):
    _, hf, ours = pair
    toks = np.random.RandomState(2).randint(0, 97, (2, 24))
    ref = _ref_logits(hf, toks)
    cache = init_cache(ours.cfg, 2, 32)
    h, cache = cached(ours, jnp.asarray(toks[:, :7]), cache)
    outs = [np.asarray(logits_of(ours, h))]
    for t in range(7, 24):
        h, cache = cached(ours, jnp.asarray(toks[:, t : t + 1]), cache)
        outs.append(np.asarray(logits_of(ours, h)))
    assert np.abs(np.concatenate(outs, axis=1) - ref).max() <= TOL
    assert np.asarray(cache.length).tolist() == [24, 24]


def test_cached_ragged_prefill(pair):
    """Rows of different prompt lengths in one prefill, then decode steps."""
    _, hf, ours = pair
    rng = np.random.RandomState(3)
    a, b = rng.randint(0, 97, 9), rng.randint(0, 97, 4)
    toks = np.zeros((2, 9), np.int32)
    mask = np.zeros((2, 9), bool)
    toks[0], mask[0] = a, True
    toks[1, :4], mask[1, :4] = b, True
    cache = init_cache(ours.cfg, 2, 16)
    h, cache = cached(ours, jnp.asarray(toks), cache, jnp.asarray(mask))
    assert np.abs(np.asarray(logits_of(ours, h))[1, :4] - _ref_logits(hf, b[None])[0]).max() <= TOL
    nxt = np.array([[5], [6]])
    h, cache = cached(ours, jnp.asarray(nxt), cache)
    ref_a = _ref_logits(hf, np.concatenate([a, [5]])[None])[0, -1]
    ref_b = _ref_logits(hf, np.concatenate([b, [6]])[None])[0, -1]
    got = np.asarray(logits_of(ours, h))[:, 0]
    assert np.abs(got[0] - ref_a).max() <= TOL
    assert np.abs(got[1] - ref_b).max() <= TOL


def test_token_logprobs_match_log_softmax(pair):
    _, hf, ours = pair
    toks = np.random.RandomState(4).randint(0, 97, (2, 29))
    ref = torch.log_softmax(torch.tensor(_ref_logits(hf, toks)), -1).numpy()
    want = np.take_along_axis(ref[:, :-1], toks[:, 1:, None], -1)[..., 0]
    lp, ent = token_logprobs(ours, jnp.asarray(toks), chunk_size=8, with_entropy=True)
    lp, ent = np.asarray(lp), np.asarray(ent)
    assert lp.shape == toks.shape and np.all(lp[:, 0] == 0)
    assert np.abs(lp[:, 1:] - want).max() <= TOL
    p = np.exp(ref[:, :-1])
    want_ent = -(p * ref[:, :-1]).sum(-1)
    assert np.abs(ent[:, 1:] - want_ent).max() <= 1e-3


def test_bfloat16_compute_is_close(pair):
    kind, hf, _ = pair
    d, _ = save_tiny(kind)
    ours = load_hf_model(d, dtype="bfloat16", param_dtype="bfloat16")
    assert ours.layers.q_proj.value.dtype == jnp.bfloat16
    toks = np.random.RandomState(5).randint(0, 97, (2, 16))
    out = np.asarray(forward(ours, jnp.asarray(toks)))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    ref = _ref_logits(hf, toks)
    assert np.abs(out - ref).max() < 0.25 * np.abs(ref).max()


def test_remat_gives_same_gradients():
    import jax

    d, _ = save_tiny("llama")
    toks = jnp.asarray(np.random.RandomState(6).randint(0, 97, (2, 12)))

    @nnx.jit
    def grads(model):
        def loss(m):
            return token_logprobs(m, toks)[0].sum()

        return nnx.grad(loss)(model)

    g1 = grads(load_hf_model(d))
    g2 = grads(load_hf_model(d, remat=True))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
