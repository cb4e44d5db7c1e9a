"""The sampler: greedy parity with transformers.generate, log-probs vs a full forward, seeds, top-k/top-p.

Tests marked `exercise` also grade walkthrough/exercises/ (sequence_logprobs, top_p_filter) through
tests/adapters.py.
"""
import math
import types

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import adapters
from checkpoints import tiny_qwen_dir
from minigrpo import generate, load_policy
from minigrpo.sampler import draw, filter_logits, sample_tokens, sequence_logprobs

VOCAB = 300


MODELS = {"qwen2-gqa": dict(arch="qwen2", heads=4, kv_heads=2),
          "qwen3-kv1-tied": dict(arch="qwen3", heads=4, kv_heads=1, tie=True, head_dim=24),
          "qwen2-mha": dict(arch="qwen2", heads=4, kv_heads=4)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def ckpt(request, tmp_path_factory):
    path, hf = tiny_qwen_dir(tmp_path_factory.mktemp(request.param) / "m", seed=11, **MODELS[request.param])
    model, tok = load_policy(path)
    return model, tok, hf


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def _pad(prompts):
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    return ids, mask


def _eos_mid_way(model, tok, prompts, C):
    """An EOS id that makes some rows stop early: the token row 1 emits greedily at step 3."""
    ro = generate(model, tok, prompts, max_new_tokens=C, temperature=0, eos_token_ids=[])
    return int(ro.completion_ids[1, 3])


def test_greedy_matches_transformers(ckpt):
    """Greedy tokens equal transformers' generate(do_sample=False) on a left-padded batch, EOS included."""
    model, tok, hf = ckpt
    prompts = _prompts([5, 11, 2, 8])
    C = 14
    eos = _eos_mid_way(model, tok, prompts, C)
    ro = generate(model, tok, prompts, max_new_tokens=C, temperature=0, eos_token_ids=[eos], pad_token_id=0)
    ids, mask = _pad(prompts)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=C, eos_token_id=eos, pad_token_id=0)
    theirs = out[:, ids.shape[1]:]
    assert ro.finished[1] and not ro.finished.all()  # rows stop at different times
    assert ro.completion_ids.shape == theirs.shape and torch.equal(ro.completion_ids, theirs)
    assert torch.equal(ro.prompt_ids, ids) and torch.equal(ro.prompt_mask, mask)
    for i in range(len(prompts)):  # EOS kept, everything after it masked and padded
        n = int(ro.completion_mask[i].sum())
        assert ro.completion_mask[i, :n].all() and not ro.completion_mask[i, n:].any()
        assert bool(ro.finished[i]) == (ro.completion_ids[i, n - 1].item() == eos)
        assert (ro.completion_ids[i, n:] == 0).all()


@pytest.mark.exercise("sequence_logprobs")
def test_logprobs_equal_full_forward(ckpt):
    """Returned log-probs equal sequence_logprobs' recomputation (≤ 1e-4), which equals a per-row naive loop."""
    model, tok, _ = ckpt
    prompts = _prompts([3, 9, 6])
    T = 0.7
    eos = _eos_mid_way(model, tok, prompts, 10)
    ro = generate(model, tok, prompts, num_samples=3, max_new_tokens=10, temperature=T, top_k=40, top_p=0.9,
                  seed=5, eos_token_ids=[eos])
    with torch.no_grad():
        lp = adapters.sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask, T)
    assert lp.shape == ro.logprobs.shape == (9, ro.completion_ids.shape[1])
    assert (lp - ro.logprobs).abs().max() <= 1e-4
    assert (ro.logprobs[ro.completion_mask == 0] == 0).all() and (ro.logprobs[ro.completion_mask == 1] < 0).all()
    for i in range(9):  # naive: the row's real tokens alone, no padding, no cache, one position at a time
        prompt = prompts[i // 3]
        comp = ro.completion_ids[i, :int(ro.completion_mask[i].sum())].tolist()
        with torch.no_grad():
            logits = model(torch.tensor([prompt + comp]))[0]  # (T, V)
        for j, t in enumerate(comp):
            row = logits[len(prompt) - 1 + j] / T
            want = row[t] - math.log(sum(math.exp(x) for x in row.tolist()))
            assert abs(lp[i, j].item() - want) <= 1e-4


@pytest.mark.exercise("sequence_logprobs")
def test_logprobs_have_gradients(ckpt):
    """sequence_logprobs is differentiable (the GRPO loss backpropagates through it)."""
    model, tok, _ = ckpt
    ro = generate(model, tok, _prompts([4, 6]), num_samples=2, max_new_tokens=5, seed=0)
    emb = model.model.embed_tokens.weight
    emb.requires_grad_(True)
    try:
        lp = adapters.sequence_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
        lp.sum().backward()
        assert emb.grad is not None and emb.grad.abs().sum() > 0
    finally:
        emb.requires_grad_(False)
        emb.grad = None


@pytest.mark.parametrize("T", [1.0, 0.7])
def test_logprob_paths_agree_with_gradients(ckpt, T):
    """The three ways sequence_logprobs computes the head: plain (the logits fit), vocabulary blocks
    (`VocabBlockedLogprobs`: a frozen fp32 head, with its hand-written backward) and checkpointed token
    chunks (a trainable head) give the same log-probs and the same gradient of a loss on them."""
    model, tok, _ = ckpt
    ro = generate(model, tok, _prompts([4, 7, 5]), num_samples=2, max_new_tokens=6, seed=3, eos_token_ids=[])
    batch = (ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    V = model.config.vocab_size
    small = 4 * V * 5  # 5 tokens of logits at a time: several chunks, and blocks of ~V/7 rows
    weights = torch.randn(ro.completion_ids.shape, generator=torch.Generator().manual_seed(0))
    norm, head = model.model.norm.weight, model.lm_head.weight
    results = {}
    try:
        norm.requires_grad_(True)  # a body parameter upstream of the head: its gradient goes through every path
        for name, max_bytes, train_head in (("plain", 2**30, False), ("blocks", small, False), ("chunks", small, True)):
            head.requires_grad_(train_head)
            lp = sequence_logprobs(model, *batch, temperature=T, max_logits_bytes=max_bytes)
            (lp * weights).sum().backward()
            results[name] = (lp.detach(), norm.grad.clone())
            norm.grad = None
            head.grad = None
    finally:
        norm.requires_grad_(False)
        head.requires_grad_(False)
    for name in ("blocks", "chunks"):
        assert (results[name][0] - results["plain"][0]).abs().max() <= 1e-5, name
        torch.testing.assert_close(results[name][1], results["plain"][1], rtol=1e-4, atol=1e-6, msg=name)


class Bigram:
    """A model whose logits at a position depend only on that position's token: table (V, V).

    It offers Qwen's interface both ways: `model(ids, mask, logits_to_keep)` → logits, and
    `model.hidden(ids, mask, keep)` → hidden states (one-hot tokens) that `model.lm_head` maps to them.
    """

    def __init__(self, table):
        self.table = table
        self.config = types.SimpleNamespace(vocab_size=table.shape[0])

    def hidden(self, input_ids, attention_mask=None, keep=0):
        h = torch.nn.functional.one_hot(input_ids, self.table.shape[0]).to(self.table.dtype)  # (N, T, V)
        return h[:, -keep:] if keep else h

    def lm_head(self, h):
        return h @ self.table  # (N, T, V): row `token` of the table

    def __call__(self, input_ids, attention_mask=None, logits_to_keep=0):
        return self.lm_head(self.hidden(input_ids, attention_mask, logits_to_keep))  # (N, T, V)


@st.composite
def bigram_batches(draw):
    """A Bigram model over V ≤ 6 tokens, left-padded prompts (N, P) and completions (N, C) with EOS-style masks."""
    V, N, C = draw(st.integers(2, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    table = torch.tensor(draw(st.lists(st.floats(-5, 5), min_size=V * V, max_size=V * V)), dtype=torch.float64)
    prompts = [draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=4)) for _ in range(N)]
    ids, mask = _pad(prompts)
    completion = torch.tensor(draw(st.lists(st.integers(0, V - 1), min_size=N * C, max_size=N * C))).view(N, C)
    lengths = draw(st.lists(st.integers(0, C), min_size=N, max_size=N))
    cmask = torch.tensor([[int(t < n) for t in range(C)] for n in lengths])  # (N, C)
    return Bigram(table.view(V, V)), prompts, ids, mask, completion, cmask


@pytest.mark.exercise("sequence_logprobs")
@given(bigram_batches(), st.sampled_from([1.0, 0.5, 2.0, 0.0]))
def test_logprobs_are_the_next_token_terms(batch, T):
    """logp[i, j] = log softmax(logits of the token before completion token j / T)[token j]; 0 where masked."""
    model, prompts, ids, mask, completion, cmask = batch
    lp = adapters.sequence_logprobs(model, ids, mask, completion, cmask, T)
    assert lp.shape == completion.shape
    for i, prompt in enumerate(prompts):
        row = prompt + completion[i].tolist()
        for j in range(completion.shape[1]):
            if not cmask[i, j]:
                assert lp[i, j] == 0
                continue
            z = [x / (T or 1.0) for x in model.table[row[len(prompt) + j - 1]].tolist()]
            want = z[row[len(prompt) + j]] - math.log(sum(math.exp(x) for x in z))
            assert lp[i, j].item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_same_seed_same_samples(ckpt):
    """The same seed gives identical rollouts; another seed gives other samples."""
    model, tok, _ = ckpt
    prompts = _prompts([4, 7])
    a = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=3)
    b = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=3)
    c = generate(model, tok, prompts, num_samples=4, max_new_tokens=8, seed=4)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    assert not torch.equal(a.completion_ids[0], a.completion_ids[1])  # the G samples of a prompt differ


def test_batch_composition_does_not_change_a_prompts_samples(ckpt):
    """In fp64, prompt b's samples are the same alone or beside other prompts (other lengths, other EOS times)."""
    model, tok, _ = ckpt
    model64 = model.double()
    try:
        first = _prompts([6])[0]
        # a fifth of the vocabulary stops a row, so rows stop at many different steps
        kw = dict(num_samples=3, max_new_tokens=12, temperature=1.0, seed=8, eos_token_ids=list(range(3, 63)))
        alone = generate(model64, tok, [first], **kw)
        mixes = [[first] + _prompts([13, 2], seed=1), [first] + _prompts([3, 9, 5], seed=2)]
        for others in mixes:
            for compact in (True, False):
                ro = generate(model64, tok, others, compact=compact, **kw)
                C = alone.completion_ids.shape[1]
                assert torch.equal(ro.completion_ids[:3, :C], alone.completion_ids)
                assert not ro.completion_mask[:3, C:].any()
                lengths = ro.completion_mask.sum(1)
                assert ro.finished.any() and len(set(lengths.tolist())) > 2  # stopping times do vary
    finally:
        model.float()


def test_prefill_once_and_compaction(ckpt):
    """Each prompt is prefilled once (B rows, not B·G); rows that stopped leave the batch."""
    model, tok, _ = ckpt
    prompts = _prompts([5, 11, 2, 8])
    eos = _eos_mid_way(model, tok, prompts, 12)
    prefills, rows = [], []  # forward's input shapes; the batch size of each decode step
    hook = model.register_forward_pre_hook(lambda m, args: prefills.append(tuple(args[0].shape)))
    step = model.step
    model.step = lambda tokens, live, cache: rows.append(len(tokens)) or step(tokens, live, cache)
    try:
        ro = generate(model, tok, prompts, num_samples=2, max_new_tokens=12, temperature=0, eos_token_ids=[eos])
        kept = generate(model, tok, prompts, num_samples=2, max_new_tokens=12, temperature=0, eos_token_ids=[eos],
                        compact=False)
    finally:
        hook.remove()
        del model.step
    n_steps = ro.completion_ids.shape[1] - 1
    assert prefills == [(4, 11), (4, 11)] and len(rows) == n_steps + kept.completion_ids.shape[1] - 1
    rows, rows_kept = rows[:n_steps], rows[n_steps:]
    assert set(rows_kept) == {8}  # compact=False: stopped rows ride along
    lengths = ro.completion_mask.sum(1)  # (N,)
    for k, n in enumerate(rows):  # decode call k feeds step k's tokens: every running row, few stopped ones
        running = int((lengths > k + 1).sum())
        assert running <= n and n - running < 0.25 * n
    assert rows == sorted(rows, reverse=True) and rows[-1] < 8
    assert torch.equal(ro.completion_ids, kept.completion_ids) and torch.equal(ro.completion_ids[2], ro.completion_ids[3])


def test_top_k_1_is_greedy(ckpt):
    """Sampling with top_k = 1 emits the greedy tokens, whatever the seed."""
    model, tok, _ = ckpt
    prompts = _prompts([4, 9])
    greedy = generate(model, tok, prompts, num_samples=2, max_new_tokens=8, temperature=0)
    for seed in (0, 1):
        ro = generate(model, tok, prompts, num_samples=2, max_new_tokens=8, temperature=1.3, top_k=1, seed=seed)
        assert torch.equal(ro.completion_ids, greedy.completion_ids)


def test_strings_chat_and_texts(ckpt):
    """String prompts are encoded (chat=True: as a user turn); texts decode the completion without EOS."""
    model, tok, _ = ckpt
    a = generate(model, tok, ["Please write a poem"], max_new_tokens=6, seed=1, chat=True)
    b = generate(model, tok, [tok.encode_chat([{"role": "user", "content": "Please write a poem"}])],
                 max_new_tokens=6, seed=1)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    n = int(a.completion_mask[0].sum()) - int(a.finished[0])
    assert a.texts[0] == tok.decode(a.completion_ids[0, :n].tolist())


def test_bad_prompts_are_named(ckpt):
    """Out-of-vocabulary ids, empty prompts and bad settings raise ValueError naming the prompt or field."""
    model, tok, _ = ckpt
    with pytest.raises(ValueError, match=r"prompt 1: token 300 is not an id in \[0, 300\)"):
        generate(model, tok, [[5, 6], [7, 300]])
    with pytest.raises(ValueError, match="prompt 0: empty"):
        generate(model, tok, [[]])
    with pytest.raises(ValueError, match="top_p = 0"):
        generate(model, tok, [[5]], top_p=0)


# ------------------------------------------------------------------------------------ top-k / top-p
def _naive_allowed(logits, T, top_k, top_p, slack=1e-5):
    """Token ids top-k then top-p may keep, from the definitions, with `slack` around ties and the top_p edge."""
    scaled = [x / T for x in logits]
    keep = set(range(len(scaled)))
    if 0 < top_k < len(scaled):
        kth = sorted(scaled, reverse=True)[top_k - 1]
        keep = {i for i in keep if scaled[i] >= kth}
    if top_p < 1:
        z = sum(math.exp(scaled[i]) for i in keep)
        prob = {i: math.exp(scaled[i]) / z for i in keep}
        keep = {i for i in keep if sum(q for j, q in prob.items() if j != i and q > prob[i] + slack) < top_p + slack}
    return keep


LOGITS = st.lists(st.floats(-4, 4, allow_nan=False).map(lambda x: round(x, 2)), min_size=2, max_size=12)


@given(LOGITS, st.floats(0.3, 2.0), st.integers(0, 12), st.floats(0.05, 1.0), st.floats(0, 1, exclude_max=True))
def test_never_emits_outside_top_k_top_p(logits, T, top_k, top_p, u):
    """A sampled token is always one that top-k and top-p allow, for any logits, T, k, p and uniform."""
    tok, lp = sample_tokens(torch.tensor([logits]), torch.tensor([u], dtype=torch.float64), T, top_k, top_p)
    assert tok.item() in _naive_allowed(logits, T, top_k, top_p)
    want = logits[tok.item()] / T - math.log(sum(math.exp(x / T) for x in logits))
    assert abs(lp.item() - want) <= 1e-5  # log-prob under the temperature-scaled, untruncated softmax


@pytest.mark.exercise("top_p_filter")
@given(LOGITS, st.floats(0.05, 1.0))
def test_top_p_keeps_exactly_the_nucleus(logits, top_p):
    """Away from ties and the top_p edge, top-p keeps exactly the tokens whose higher-ranked mass is < top_p."""
    assume(_naive_allowed(logits, 1.0, 0, top_p, 1e-4) == _naive_allowed(logits, 1.0, 0, top_p, -1e-4))
    kept = torch.isfinite(adapters.top_p_filter(torch.tensor([logits]), top_p))[0]
    assert set(kept.nonzero().flatten().tolist()) == _naive_allowed(logits, 1.0, 0, top_p, 0)


@pytest.mark.exercise("top_p_filter")
@given(st.lists(LOGITS.filter(lambda x: len(x) == 5), min_size=1, max_size=4), st.floats(0.05, 1.0))
def test_top_p_keeps_values_and_the_top_token_row_by_row(rows, top_p):
    """Kept logits are unchanged, the rest −inf, the most probable token is always kept, and each row is filtered alone."""
    logits = torch.tensor(rows)  # (n, V)
    out = adapters.top_p_filter(logits, top_p)
    assert out.shape == logits.shape
    kept = torch.isfinite(out)
    assert torch.equal(out[kept], logits[kept]) and (out[~kept] == float("-inf")).all()
    assert kept.gather(1, logits.argmax(1, keepdim=True)).all()
    for i in range(len(rows)):
        assert torch.equal(adapters.top_p_filter(logits[i:i + 1], top_p), out[i:i + 1])


@pytest.mark.exercise("top_p_filter")
@given(LOGITS)
def test_top_p_one_keeps_everything(logits):
    """top_p = 1 keeps every token unchanged."""
    x = torch.tensor([logits])
    assert torch.equal(adapters.top_p_filter(x, 1.0), x)


@pytest.mark.package_only
@given(LOGITS, st.integers(0, 12), st.floats(0.05, 1.0))
def test_filter_keeps_exactly_the_nucleus(logits, top_k, top_p):
    """Away from ties and the top_p edge, filter_logits keeps exactly the naive top-k-then-top-p set."""
    assume(_naive_allowed(logits, 1.0, top_k, top_p, 1e-4) == _naive_allowed(logits, 1.0, top_k, top_p, -1e-4))
    kept = torch.isfinite(filter_logits(torch.tensor([logits]), top_k, top_p))[0]
    assert set(kept.nonzero().flatten().tolist()) == _naive_allowed(logits, 1.0, top_k, top_p, 0)


@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=8), st.integers(0, 8), st.floats(0.05, 1.0))
def test_draw_frequencies_are_the_truncated_probabilities(logits, top_k, top_p):
    """Inverse-CDF draws over an evenly spaced grid of u hit each token in proportion to its probability."""
    M = 2000
    filtered = filter_logits(torch.tensor([logits]), top_k, top_p)  # (1, V)
    probs = filtered.softmax(-1)[0].double()
    toks = draw(filtered.expand(M, -1), (torch.arange(M, dtype=torch.float64) + 0.5) / M)  # (M,)
    freq = torch.bincount(toks, minlength=len(logits)).double() / M
    assert (freq - probs).abs().max() <= 1.0 / M + 1e-6
    assert (probs[toks] > 0).all()


def test_draw_never_picks_a_zero_probability_token_at_the_edges():
    """u = 0, u just below 1, and u = 1 (what u·total rounding up would give) pick tokens of positive probability."""
    logits = torch.tensor([[float("-inf"), 0.0, 1.0, float("-inf")]])
    edges = torch.tensor([0.0, 1 - 2**-53, 1.0], dtype=torch.float64)
    assert draw(logits.expand(3, -1), edges).tolist() == [1, 2, 2]


def test_finite_check_survives_overflowing_sums_and_names_nan(ckpt, monkeypatch):
    """The sampler's non-finite check looks at each row's sum first; a sum that is not finite sends it to
    the elementwise check of the live rows. Huge finite logits (their sum overflows to inf) sample
    normally; a NaN in a live row stops with the named error."""
    model, tok, _ = ckpt
    step = model.step

    def huge(tokens, live, cache):  # every logit finite, the row sums overflow fp32
        logits = 3e36 + step(tokens, live, cache).clamp(-1, 1) * 1e36  # each in [2e36, 4e36]
        assert torch.isinf(logits.sum(-1)).all()  # the case under test: a finite row whose sum is inf
        return logits

    monkeypatch.setattr(model, "step", huge)
    ro = generate(model, tok, [[5, 6, 7]], num_samples=2, max_new_tokens=4, seed=0, eos_token_ids=[])
    assert ro.completion_ids.shape == (2, 4)

    def nan_live(tokens, live, cache):
        logits = step(tokens, live, cache)
        logits[0, 5] = float("nan")
        return logits

    monkeypatch.setattr(model, "step", nan_live)
    with pytest.raises(FloatingPointError, match="not finite at new token 2"):
        generate(model, tok, [[5, 6, 7]], num_samples=2, max_new_tokens=4, seed=0, eos_token_ids=[])
