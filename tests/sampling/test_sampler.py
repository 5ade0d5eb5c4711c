"""Sampler correctness: greedy = argmax of the full forward, exact log-probs, multi-turn
continuation = fresh prefill, stop ids/strings, reproducible seeds, top-k/top-p."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentic_rl.models import ModelConfig, Transformer, add_lora, token_logprobs
from agentic_rl.rollout import CharTokenizer
from agentic_rl.sampling import BatchSampler, SamplingParams, generate
from agentic_rl.sampling.params import process_logits, sample_categorical

VOCAB = 3 + 128  # CharTokenizer: 3 special tokens + ASCII


def tiny_model(seed=0, dtype="float32", scale=0.35):
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2,
                      num_heads=4, num_kv_heads=2, dtype=dtype, param_dtype=dtype,
                      rope_theta=10000.0, model_type="llama")
    m = Transformer(cfg, rngs=nnx.Rngs(seed))
    # sharper than the default init, so greedy ties and near-uniform samples are unlikely
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    for _, var in nnx.iter_graph(m):
        if isinstance(var, nnx.Param) and var.value.ndim >= 2:
            var.value = (scale * jax.random.normal(next(keys), var.value.shape)).astype(
                var.value.dtype)
    return m


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer()


_logprobs = jax.jit(lambda gd, st, t: token_logprobs(nnx.merge(gd, st), t)[0],
                    static_argnums=0)
_logits = jax.jit(lambda gd, st, t: nnx.merge(gd, st)(t), static_argnums=0)


def _padded(seq, n=64):
    # right padding never changes earlier positions (causal), and one shape = one compile
    assert len(seq) <= n
    return jnp.asarray([list(seq) + [0] * (n - len(seq))])


def full_logprobs(m, seq):
    gd, st = nnx.split(m)
    return np.asarray(_logprobs(gd, st, _padded(seq)))[0, : len(seq)]


def full_logits(m, seq):
    gd, st = nnx.split(m)
    return np.asarray(_logits(gd, st, _padded(seq)))[0, : len(seq)]


PROMPTS = [[5, 70, 71, 72], [9, 80, 81, 82, 83, 84, 85, 86, 87, 88, 20], [40]]


def test_greedy_equals_argmax_of_full_forward(model):
    outs = generate(model, PROMPTS, max_new_tokens=12, params=SamplingParams(greedy=True))
    for prompt, out in zip(PROMPTS, outs):
        assert out.finish_reason == "length" and len(out.tokens) == 12
        seq = list(prompt)
        for _ in out.tokens:  # argmax decoding, one full forward per token
            seq.append(int(np.argmax(full_logits(model, seq)[-1])))
        assert out.tokens == seq[len(prompt):]


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0),
                                    SamplingParams(temperature=0.7, top_k=20, top_p=0.9)])
def test_logprobs_equal_full_forward(model, params):
    outs = generate(model, PROMPTS, max_new_tokens=10, params=params, seed=3)
    for prompt, out in zip(PROMPTS, outs):
        seq = prompt + out.tokens
        ref = full_logprobs(model, seq)[len(prompt):]
        np.testing.assert_allclose(out.logprobs_raw, ref, atol=1e-4)
        if params == SamplingParams(temperature=1.0):  # untempered: the same distribution
            np.testing.assert_allclose(out.logprobs, ref, atol=1e-4)
        else:
            logits = np.stack([full_logits(model, seq)[len(prompt) - 1 + i]
                               for i in range(len(out.tokens))])
            lp = np.asarray(process_logits(jnp.asarray(logits), params))
            want = lp[np.arange(len(out.tokens)), out.tokens]
            np.testing.assert_allclose(out.logprobs, want, atol=1e-4)
            assert np.all(np.isfinite(out.logprobs))


def test_continuation_equals_fresh_prefill(model):
    """Turn 2 after appending observation tokens == one prefill of the whole history."""
    s = BatchSampler(model, 3, capacity=16, seed=1)
    s.extend(dict(enumerate(PROMPTS)))
    t1 = s.sample([0, 1, 2], max_new_tokens={0: 5, 1: 9, 2: 2}, params=SamplingParams(greedy=True))
    obs = {0: [50, 51, 52], 1: [60], 2: [61, 62, 63, 64, 65, 66, 67]}
    s.extend(obs)  # only these are prefilled; the cache grows past its first capacity
    t2 = s.sample([0, 1, 2], max_new_tokens=6, params=SamplingParams(greedy=True))
    for r in range(3):
        history = PROMPTS[r] + t1[r].tokens + obs[r]
        assert s.history[r] == history + t2[r].tokens
        fresh = generate(model, [history], max_new_tokens=6, params=SamplingParams(greedy=True))
        assert t2[r].tokens == fresh[0].tokens
        ref = full_logprobs(model, history + t2[r].tokens)[len(history):]
        np.testing.assert_allclose(t2[r].logprobs_raw, ref, atol=1e-4)


def test_compaction_and_reset_keep_rows_exact(model):
    s = BatchSampler(model, 2, capacity=32, seed=0)
    g = SamplingParams(greedy=True)
    for episode in range(4):  # cycle episodes through row 1 while row 0 keeps going
        s.reset([1])
        s.extend({1: [7 + episode, 30, 31]} | ({0: [12, 13]} if episode == 0 else {0: [99]}))
        out = s.sample([0, 1], max_new_tokens=5, params=g)
    for r in range(2):
        hist = s.history[r]
        ref = full_logprobs(model, hist)[len(hist) - 5:]
        np.testing.assert_allclose(out[r].logprobs_raw, ref, atol=1e-4)
    assert s.cache.capacity <= 64  # holes were reclaimed instead of growing forever


def test_stop_token_ids_per_row(model):
    g = SamplingParams(greedy=True)
    free = generate(model, PROMPTS[:2], max_new_tokens=10, params=g)
    stop_a, stop_b = free[0].tokens[3], free[1].tokens[6]
    s = BatchSampler(model, 2, capacity=32)
    s.extend({0: PROMPTS[0], 1: PROMPTS[1]})
    out = s.sample([0, 1], max_new_tokens=10, params=g, stop_token_ids={0: [stop_a], 1: [stop_b]})
    k0 = free[0].tokens.index(stop_a) + 1
    k1 = free[1].tokens.index(stop_b) + 1
    assert out[0].tokens == free[0].tokens[:k0] and out[0].finish_reason == "stop"
    assert out[1].tokens == free[1].tokens[:k1] and out[1].stop == stop_b


def test_stop_string_spanning_tokens(model, tok):
    g = SamplingParams(greedy=True)
    free = generate(model, [PROMPTS[1]], max_new_tokens=40, params=g)[0]
    text = tok.decode(free.tokens)
    stop = text[9:12]  # three characters = three tokens, completed at token 12
    first = text.find(stop)
    s = BatchSampler(model, 1, capacity=16, tokenizer=tok, decode_chunk=8)
    s.extend({0: PROMPTS[1]})
    out = s.sample([0], max_new_tokens=40, params=g, stop_strings=[stop])[0]
    assert out.finish_reason == "stop" and out.stop == stop
    assert tok.decode(out.tokens) == text[: first + len(stop)]
    # the cache was rolled back to the cut: continuing equals a fresh prefill
    s.extend({0: [44, 45]})
    nxt = s.sample([0], max_new_tokens=4, params=g)[0]
    fresh = generate(model, [PROMPTS[1] + out.tokens + [44, 45]], max_new_tokens=4, params=g)
    assert nxt.tokens == fresh[0].tokens


def test_seeds_reproduce_and_rows_are_independent(model):
    p = SamplingParams(temperature=1.0)
    a = generate(model, PROMPTS, max_new_tokens=16, params=p, seed=7)
    b = generate(model, PROMPTS, max_new_tokens=16, params=p, seed=7)
    c = generate(model, PROMPTS, max_new_tokens=16, params=p, seed=8)
    assert [o.tokens for o in a] == [o.tokens for o in b]
    assert [o.tokens for o in a] != [o.tokens for o in c]
    # row 0's draws do not depend on which other rows share the batch
    solo = generate(model, PROMPTS[:1], max_new_tokens=16, params=p, seed=7)
    assert solo[0].tokens == a[0].tokens


def test_row_without_history_is_refused(model):
    s = BatchSampler(model, 2)
    with pytest.raises(ValueError, match="extend it"):
        s.sample([0])
    with pytest.raises(IndexError):
        s.extend({5: [1, 2]})
    with pytest.raises(ValueError, match="need a tokenizer"):
        s.extend({0: [1]})
        s.sample([0], stop_strings=["x"])


def _np_process(logits, temperature, top_k, top_p):
    x = logits / temperature
    if top_k:
        kth = np.sort(x)[-top_k]
        x = np.where(x >= kth, x, -np.inf)
    if top_p < 1:
        p = np.exp(x - x.max())
        p /= p.sum()
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, bool)
        keep[order[before < top_p]] = True
        x = np.where(keep, x, -np.inf)
    return x - np.logaddexp.reduce(x[np.isfinite(x)])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 7, 1.0),
                                                      (1.3, 0, 0.8), (0.9, 12, 0.6)])
def test_process_logits_matches_numpy(temperature, top_k, top_p):
    logits = np.random.RandomState(0).normal(0, 2, (4, 50)).astype(np.float32)
    got = np.asarray(process_logits(jnp.asarray(logits),
                                    SamplingParams(temperature=temperature, top_k=top_k,
                                                   top_p=top_p)))
    for row in range(4):
        want = _np_process(logits[row].astype(np.float64), temperature, top_k, top_p)
        kept = np.isfinite(want)
        assert np.array_equal(got[row] > -1e30, kept)
        np.testing.assert_allclose(got[row][kept], want[kept], atol=1e-5)


def test_inverse_cdf_sampling_matches_distribution():
    logp = jax.nn.log_softmax(jnp.asarray([[2.0, 0.0, -1.0, 1.0, -50.0] + [-1e30] * 700]))
    u = jax.random.uniform(jax.random.key(0), (20000,))
    toks = np.asarray(jax.vmap(lambda x: sample_categorical(logp, x[None])[0])(u))
    freq = np.bincount(toks, minlength=5)[:5] / len(toks)
    np.testing.assert_allclose(freq, np.exp(np.asarray(logp[0, :5])), atol=0.015)
    assert toks.max() < 5  # never a masked token


def test_lora_and_bf16(model):
    lora = tiny_model()
    add_lora(lora, rank=4, alpha=8.0, rngs=nnx.Rngs(0))
    g = SamplingParams(greedy=True)
    a = generate(model, PROMPTS, max_new_tokens=8, params=g)
    b = generate(lora, PROMPTS, max_new_tokens=8, params=g)
    assert [o.tokens for o in a] == [o.tokens for o in b]  # zero-init adapters
    bf = tiny_model(dtype="bfloat16")
    out = generate(bf, PROMPTS, max_new_tokens=8, params=SamplingParams(temperature=1.0))
    assert all(len(o.tokens) == 8 and np.all(np.isfinite(o.logprobs)) for o in out)


def test_shared_prefix_prefill_is_exact(model):
    """Fresh rows that share a long prompt prefix: prefilled once and copied, the same
    samples and log-probs as prefilling every row; rows mid-episode are unaffected."""
    rng = np.random.default_rng(0)
    common = [int(x) for x in rng.integers(3, VOCAB, 40)]
    prompts = {0: common + [5, 6, 7], 1: common + [9], 2: common + [11, 12]}
    g = SamplingParams(greedy=True)
    outs = []
    for share in (False, True):
        s = BatchSampler(model, 4, capacity=16, seed=3)
        s.extend({3: [20, 21, 22]})
        s.sample([3], max_new_tokens=3, params=g)
        s.extend(prompts | {3: [23]}, share_prefix=share)  # row 3 continues, not fresh
        outs.append((s.sample([0, 1, 2, 3], max_new_tokens=6, params=g),
                     [list(h) for h in s.history]))
    (plain, h_plain), (shared, h_shared) = outs
    assert h_plain == h_shared
    for r in range(4):
        assert shared[r].tokens == plain[r].tokens
        np.testing.assert_allclose(shared[r].logprobs_raw, plain[r].logprobs_raw, atol=1e-4)
        hist = h_shared[r]
        ref = full_logprobs(model, hist)[len(hist) - len(shared[r].tokens):]
        np.testing.assert_allclose(shared[r].logprobs_raw, ref, atol=1e-4)


def test_streamed_chunks_add_up_to_the_unstreamed_sample(model, tok):
    """on_chunk sees each row's kept tokens chunk by chunk; chunking changes nothing that
    is sampled (same tokens and log-probs as one whole-budget call), a stop string is cut
    before its pieces are reported, and returning False stops a row at a chunk end."""
    p = SamplingParams(temperature=1.0)

    def run(**kw):
        s = BatchSampler(model, 3, capacity=32, tokenizer=tok, seed=3)
        s.extend({r: PROMPTS[r] for r in range(3)})
        return s, s.sample([0, 1, 2], max_new_tokens=21, params=p, **kw)

    _, whole = run()
    pieces: dict[int, list] = {0: [], 1: [], 2: []}
    _, streamed = run(on_chunk=lambda r, ids, lps: pieces[r].append((ids, lps)), chunk=4)
    for r in range(3):
        assert streamed[r].tokens == whole[r].tokens
        np.testing.assert_allclose(streamed[r].logprobs, whole[r].logprobs, rtol=1e-5,
                                   atol=1e-6)
        assert [t for ids, _ in pieces[r] for t in ids] == whole[r].tokens
        assert [x for _, lps in pieces[r] for x in lps] == streamed[r].logprobs
        assert len(pieces[r]) == -(-len(whole[r].tokens) // 4)  # one piece per 4-token chunk
    # a stop string: the reported pieces stop exactly at the cut
    text = tok.decode(whole[0].tokens)
    stop = text[6:8]
    got: list[int] = []
    _, cut = run(on_chunk=lambda r, ids, lps: got.extend(ids) if r == 0 else None, chunk=4,
                 stop_strings={0: [stop]})
    assert cut[0].finish_reason == "stop" and got == cut[0].tokens
    assert tok.decode(got) == text[: text.find(stop) + len(stop)]
    # the client went away after its first chunk: row 1 stops there, the others go on
    s, early = run(on_chunk=lambda r, ids, lps: r != 1, chunk=4)
    assert early[1].tokens == whole[1].tokens[:4] and early[1].finish_reason == "length"
    assert early[0].tokens == whole[0].tokens and early[2].tokens == whole[2].tokens
    # its cache is consistent: continuing it equals a fresh prefill of what it holds
    g = SamplingParams(greedy=True)
    s.extend({1: [44]})
    nxt = s.sample([1], max_new_tokens=3, params=g)[1]
    fresh = generate(model, [PROMPTS[1] + early[1].tokens + [44]], max_new_tokens=3, params=g)
    assert nxt.tokens == fresh[0].tokens
