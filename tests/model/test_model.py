"""The model package's engine: KV cache, batched decode, sampling, window, stopping, threads.

Everything here uses a tiny randomly initialised model (block_size 16), so it runs in seconds;
the committed weights are tested in test_model_weights.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from model import GPT, Engine, GPTConfig, KVCache, SamplingParams, SequenceState
from model.gpt import KVPool
from model.sampling import sample, sample_batch

TINY = GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32)
CPU = torch.device("cpu")


def tiny_model(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    """Random weights, scaled up so the next-token distributions are far from uniform."""
    torch.manual_seed(seed)
    model = GPT(config)
    for p in model.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(tiny_model(), device=CPU, dtype=torch.float32)


def run_alone(engine: Engine, prompt: str, params: SamplingParams, steps: int) -> list[int]:
    seq = engine.prefill(prompt, params)
    for _ in range(steps):
        engine.decode([seq])
    return seq.generated


# ---- KV cache ------------------------------------------------------------------------------


def test_kv_cache_decode_matches_full_forward() -> None:
    model = tiny_model(1)
    torch.manual_seed(5)
    tokens = torch.randint(0, 256, (TINY.block_size,))
    with torch.inference_mode():
        full = model(tokens[None])[0]  # (T, V)
        cache = KVCache(TINY, device=CPU, dtype=torch.float32)
        got = [model.prefill(tokens[:5], cache)]
        for t in range(5, TINY.block_size):
            got.append(model.decode(tokens[t : t + 1], [cache])[0])
    assert cache.length == TINY.block_size
    torch.testing.assert_close(torch.stack(got), full[4:], rtol=1e-4, atol=1e-4)


def test_batched_decode_of_different_lengths_matches_full_forward() -> None:
    model = tiny_model(2)
    torch.manual_seed(6)
    lengths = [1, 4, 9, 15]
    seqs = [torch.randint(0, 256, (n + 1,)) for n in lengths]
    with torch.inference_mode():
        caches = [KVCache(TINY, device=CPU, dtype=torch.float32) for _ in seqs]
        for s, c in zip(seqs, caches, strict=True):
            model.prefill(s[:-1], c)
        batched = model.decode(torch.stack([s[-1] for s in seqs]), caches)  # (B, V)
        for row, s in enumerate(seqs):
            expected = model(s[None])[0, -1]
            torch.testing.assert_close(batched[row], expected, rtol=1e-4, atol=1e-4)
    assert [c.length for c in caches] == [n + 1 for n in lengths]


def test_pooled_caches_in_any_slot_order_match_full_forward_and_slots_are_reused() -> None:
    """Caches sharing a KVPool: one attention call over their slots, rows in any order, a slot
    in between not in the batch; the pool grows, and freed slots are reused."""
    model = tiny_model(3)
    torch.manual_seed(7)
    pool = KVPool(TINY, device=CPU, dtype=torch.float32, slots=2)
    lengths = [6, 2, 11, 3, 7]
    seqs = [torch.randint(0, 256, (n + 1,)) for n in lengths]
    with torch.inference_mode():
        caches = [KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool) for _ in seqs]
        assert [c.slot for c in caches] == [0, 1, 2, 3, 4]
        assert pool.capacity == 8  # doubled twice
        for s, c in zip(seqs, caches, strict=True):
            model.prefill(s[:-1], c)
        order = [3, 0, 4, 1]  # slot 2 is skipped (a paused sequence), rows out of slot order
        batched = model.decode(
            torch.stack([seqs[i][-1] for i in order]), [caches[i] for i in order]
        )
        for row, i in enumerate(order):
            expected = model(seqs[i][None])[0, -1]
            torch.testing.assert_close(batched[row], expected, rtol=1e-4, atol=1e-4)
        assert caches[2].length == lengths[2]  # untouched
    caches[1].release()
    caches[1].release()  # idempotent
    with pytest.raises(ValueError, match="released"):
        _ = caches[1].k
    assert pool.num_used == 4
    del caches[3]  # garbage collected: its slot goes back too
    assert pool.num_used == 3
    assert KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool).slot == 1  # lowest free


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_pooled_decode_matches_full_forward_through_any_join_leave_and_reuse(
    data: st.DataObject,
) -> None:
    """Property: whatever sequences join (a prefill of any length or none, into a reused slot or
    a new one), leave, re-prefill a shorter window, or sit out steps, every batched decode row
    equals the full forward pass of that row's own tokens. Catches a key or a mask left valid from a
    slot's previous sequence, or a mask not following a write."""
    model = _PROPERTY_MODEL
    pool = KVPool(TINY, device=CPU, dtype=torch.float32, slots=1)
    live: dict[int, tuple[KVCache, list[int]]] = {}  # id -> (cache, its tokens so far)
    ids = iter(range(10**6))
    token = st.integers(0, 255)
    with torch.inference_mode():
        for _ in range(data.draw(st.integers(1, 12), label="steps")):
            action = data.draw(st.sampled_from(["join", "leave", "slide", "decode"]))
            if action == "join" or not live:
                n = data.draw(st.just(0) | st.integers(1, TINY.block_size - 1), label="prompt")
                tokens = data.draw(st.lists(token, min_size=n, max_size=n), label="tokens")
                cache = KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool)
                if tokens:  # else decoded from position 0 without a prefill
                    model.prefill(torch.tensor(tokens), cache)
                live[next(ids)] = (cache, tokens)
            elif action == "leave":
                key = data.draw(st.sampled_from(sorted(live)), label="leaver")
                live.pop(key)[0].release()
            elif action == "slide":  # the engine's window slide: re-prefill the last tokens
                key = data.draw(st.sampled_from(sorted(live)), label="slider")
                cache, tokens = live[key]
                if not tokens:
                    continue
                keep = tokens[-data.draw(st.integers(1, len(tokens)), label="keep") :]
                model.prefill(torch.tensor(keep), cache)
                live[key] = (cache, keep)
            else:
                room = [k for k, (c, _) in live.items() if c.length < TINY.block_size]
                if not room:
                    continue
                rows = data.draw(st.permutations(room), label="order")
                rows = rows[: data.draw(st.integers(1, len(rows)), label="batch size")]
                new = [data.draw(token, label="token") for _ in rows]
                logits = model.decode(torch.tensor(new), [live[k][0] for k in rows])
                for row, (k, t) in enumerate(zip(rows, new, strict=True)):
                    cache, tokens = live[k]
                    live[k] = (cache, [*tokens, t])
                    expected = model(torch.tensor([[*tokens, t]]))[0, -1]
                    torch.testing.assert_close(logits[row], expected, rtol=1e-4, atol=1e-4)


_PROPERTY_MODEL = tiny_model(4)


def test_a_reused_slot_keeps_nothing_of_its_last_sequence() -> None:
    """A cache handed a freed slot and decoded from position 0 (no prefill) beside a longer
    row sees only its own key, not the keys its slot held for the previous sequence."""
    model = _PROPERTY_MODEL
    pool = KVPool(TINY, device=CPU, dtype=torch.float32, slots=1)
    with torch.inference_mode():
        old = KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool)
        model.prefill(torch.arange(10), old)
        other = KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool)
        model.prefill(torch.arange(5), other)
        old.release()
        fresh = KVCache(TINY, device=CPU, dtype=torch.float32, pool=pool)
        assert fresh.slot == old.slot
        logits = model.decode(torch.tensor([7, 3]), [fresh, other])
        torch.testing.assert_close(logits[0], model(torch.tensor([[7]]))[0, -1])
        torch.testing.assert_close(logits[1], model(torch.tensor([[0, 1, 2, 3, 4, 3]]))[0, -1])


def test_decode_refuses_a_full_cache() -> None:
    model = tiny_model()
    with torch.inference_mode():
        cache = KVCache(TINY, device=CPU, dtype=torch.float32)
        model.prefill(torch.zeros(TINY.block_size, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="full"):
            model.decode(torch.zeros(1, dtype=torch.long), [cache])


# ---- batching: a sequence gets the same tokens alone or in a batch ---------------------------

BATCH_CASES = [
    ("def f(x):", SamplingParams(temperature=0.0)),
    ("import os\n", SamplingParams(temperature=1.0, seed=1)),
    ("class A:", SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=2)),
    ("x = [", SamplingParams(temperature=1.3, top_p=0.8, seed=3)),
]


def test_batched_decode_matches_alone_with_join_and_leave(engine: Engine) -> None:
    steps = 40  # > 2 windows of 16: every sequence slides, at different steps
    alone = [run_alone(engine, p, params, steps) for p, params in BATCH_CASES]
    # Sequences join at different steps and the first one leaves early.
    join_at = [0, 0, 3, 7]
    leave_after = [25, steps, steps, steps]
    seqs: list[SequenceState | None] = [None] * len(BATCH_CASES)
    done = [0] * len(BATCH_CASES)
    for step in range(steps + max(join_at)):
        for i, (prompt, params) in enumerate(BATCH_CASES):
            if join_at[i] == step:
                seqs[i] = engine.prefill(prompt, params)
        batch = [s for i, s in enumerate(seqs) if s is not None and done[i] < leave_after[i]]
        if not batch:
            break
        engine.decode(batch)
        for i, s in enumerate(seqs):
            if s is not None and s in batch:
                done[i] += 1
    for i, s in enumerate(seqs):
        assert s is not None
        n = leave_after[i]
        assert len(s.generated) == n + 1
        assert s.generated == alone[i][: n + 1], f"sequence {i} differs in a batch"
    # the sampled ones really are random: different from greedy
    assert alone[1] != alone[0]


def test_decode_rejects_duplicate_sequence(engine: Engine) -> None:
    seq = engine.prefill("a", SamplingParams())
    with pytest.raises(ValueError, match="twice"):
        engine.decode([seq, seq])
    assert engine.decode([]) == []


# ---- sampling ------------------------------------------------------------------------------


def test_seed_reproducible_and_different_seeds_differ(engine: Engine) -> None:
    def tokens(seed: int) -> list[int]:
        return list(engine.generate_tokens("def ", max_new_tokens=30, temperature=1.0, seed=seed))

    assert tokens(7) == tokens(7)
    assert tokens(7) != tokens(8)


def test_greedy_is_argmax_and_top_k_1_is_greedy(engine: Engine) -> None:
    greedy = list(engine.generate_tokens("abc", max_new_tokens=20, temperature=0.0))
    top1 = list(engine.generate_tokens("abc", max_new_tokens=20, temperature=1.5, top_k=1, seed=9))
    assert greedy == top1
    with torch.inference_mode():
        first = engine.model(torch.tensor([list(b"abc")]))[0, -1]
    assert greedy[0] == int(first.argmax())


def test_top_k_and_top_p_restrict_the_draws() -> None:
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    probs = torch.softmax(logits, -1)
    gen = torch.Generator().manual_seed(0)
    draws_k = {sample(logits, SamplingParams(temperature=1.0, top_k=3), gen) for _ in range(300)}
    assert draws_k == {0, 1, 2}
    # top_p: the smallest set of top tokens whose mass reaches p (0.64 + 0.24 >= 0.8).
    assert float(probs[:2].sum()) >= 0.8 > float(probs[0])
    draws_p = {sample(logits, SamplingParams(temperature=1.0, top_p=0.8), gen) for _ in range(300)}
    assert draws_p == {0, 1}
    draws_all = {sample(logits, SamplingParams(temperature=5.0), gen) for _ in range(300)}
    assert draws_all == set(range(6))


def test_sample_batch_rows_match_each_row_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 40) * 3
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.9, top_k=5, seed=1),
        SamplingParams(temperature=1.2, top_p=0.7, seed=2),
        SamplingParams(temperature=1.0, top_k=1, seed=3),
        SamplingParams(temperature=2.0, top_k=8, top_p=0.5, seed=4),
    ]
    batch_gens = [p.make_generator() for p in params]
    alone_gens = [p.make_generator() for p in params]
    for _ in range(50):
        batched = sample_batch(logits, params, batch_gens)
        alone = [
            sample(logits[b], p, g) for b, (p, g) in enumerate(zip(params, alone_gens, strict=True))
        ]
        assert batched == alone
        assert batched[0] == int(logits[0].argmax())  # greedy
        assert batched[3] == int(logits[3].argmax())  # top_k 1


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -0.1}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": -1}],
)
def test_bad_sampling_arguments_raise_when_generate_is_called(engine: Engine, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        engine.generate("x", max_new_tokens=3, **kwargs)  # no next(): raised at call time


def test_resolve_seed(engine: Engine) -> None:
    assert engine.resolve_seed(123) == 123
    seeds = {engine.resolve_seed(None) for _ in range(4)}
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(seeds) > 1


# ---- context window ------------------------------------------------------------------------


def test_prompt_longer_than_window_keeps_its_last_tokens(engine: Engine) -> None:
    bs = engine.config.block_size
    long_prompt = "".join(chr(ord("a") + i % 26) for i in range(3 * bs + 5))
    assert engine.count_prompt_tokens(long_prompt) == bs
    assert engine.count_prompt_tokens("abc") == 3
    assert engine.count_prompt_tokens("é") == 2  # bytes, not characters
    assert engine.count_prompt_tokens("") == 1  # fed as a single newline
    seq = engine.prefill(long_prompt, SamplingParams(temperature=0.0))
    assert seq.context == list(long_prompt.encode()[-bs:])
    tail = long_prompt[-bs:]
    kw = {"max_new_tokens": 10, "temperature": 0.0}
    assert list(engine.generate_tokens(long_prompt, **kw)) == list(
        engine.generate_tokens(tail, **kw)
    )


def reference_sliding_greedy(model: GPT, prompt: bytes, n: int, keep: int) -> list[int]:
    """Full recomputation with the documented rule: past the window, keep the last `keep`."""
    bs = model.config.block_size
    ctx = list(prompt[-bs:])
    out = []
    with torch.inference_mode():
        for _ in range(n):
            token = int(model(torch.tensor([ctx]))[0, -1].argmax())
            out.append(token)
            ctx.append(token)
            if len(ctx) > bs:
                ctx = ctx[-keep:]
    return out


@pytest.mark.parametrize("keep", [None, 1, 16])
def test_generation_past_the_window_slides(keep: int | None) -> None:
    engine = Engine(tiny_model(3), device=CPU, dtype=torch.float32, window_keep=keep)
    n = 5 * engine.config.block_size
    got = list(engine.generate_tokens("while True:", max_new_tokens=n, temperature=0.0))
    assert len(got) == n  # generation does not stop at the window
    expected = reference_sliding_greedy(engine.model, b"while True:", n, engine.window_keep)
    assert got == expected
    assert engine.window_keep == (12 if keep is None else keep)


def test_sequence_cache_never_exceeds_window(engine: Engine) -> None:
    seq = engine.prefill("x" * 100, SamplingParams(temperature=0.0))
    lengths = {seq.cache.length}
    for _ in range(40):
        engine.decode([seq])
        lengths.add(seq.cache.length)
        assert len(seq.context) == seq.cache.length <= engine.config.block_size
    assert max(lengths) == engine.config.block_size
    assert min(lengths) == engine.window_keep


# ---- streaming text and stopping -----------------------------------------------------------


def test_generate_yields_one_piece_per_token(engine: Engine) -> None:
    kw = {"max_new_tokens": 50, "temperature": 1.0, "seed": 11}
    tokens = list(engine.generate_tokens("s = '", **kw))
    pieces = list(engine.generate("s = '", **kw))
    assert len(pieces) == len(tokens) == 50
    assert "".join(pieces) == bytes(tokens).decode("utf-8", errors="replace")


def _fixed_tokens(tokens: list[int]):  # stands in for generate_tokens
    def fake(prompt: str, **kwargs: object) -> Iterator[int]:
        return iter(tokens)

    return fake


def test_generate_flushes_incomplete_character_in_last_piece(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    euro = list("€".encode())  # 3 bytes
    monkeypatch.setattr(engine, "generate_tokens", _fixed_tokens([0x61, *euro, *euro[:2]]))
    pieces = list(engine.generate("p", max_new_tokens=6))
    assert pieces == ["a", "", "", "€", "", "\ufffd"]


def test_should_stop_is_checked_before_every_step(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def stop_after_5() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    pieces = list(engine.generate("x", max_new_tokens=100, should_stop=stop_after_5))
    assert len(pieces) == 5
    assert calls == 6

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model ran although should_stop was already true")

    monkeypatch.setattr(engine, "prefill", no_model)
    assert list(engine.generate("x", max_new_tokens=10, should_stop=lambda: True)) == []
    assert list(engine.generate("x", max_new_tokens=0)) == []


def test_should_stop_set_between_steps_stops_at_once(engine: Engine) -> None:
    stop = threading.Event()
    gen = engine.generate("y", max_new_tokens=100, should_stop=stop.is_set)
    got = [next(gen), next(gen)]
    stop.set()
    got.extend(gen)
    assert len(got) == 2


# ---- threads and torch's thread-local state ------------------------------------------------


def test_generator_runs_on_other_threads_without_leaking_inference_mode(engine: Engine) -> None:
    kw = {"max_new_tokens": 12, "temperature": 1.0, "seed": 4}
    expected = list(engine.generate("abc", **kw))
    gen = engine.generate("abc", **kw)
    got = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(12):
            if i % 2:
                got.append(next(gen))
                assert not torch.is_inference_mode_enabled()
            else:
                piece, leaked = pool.submit(
                    lambda: (next(gen), torch.is_inference_mode_enabled())
                ).result()
                got.append(piece)
                assert not leaked
    assert got == expected
    assert torch.is_grad_enabled()


def test_warmup_and_public_attributes(engine: Engine) -> None:
    engine.warmup()
    assert engine.device == CPU
    assert engine.dtype == torch.float32
    assert engine.config == TINY
    assert next(engine.model.parameters()).dtype == torch.float32


@given(
    temperature=st.floats(min_value=0.0, max_value=1e-5, allow_subnormal=True),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=50, deadline=None)
def test_a_tiny_temperature_samples_a_valid_token_greedily_below_the_floor(
    temperature: float, seed: int
) -> None:
    """A subnormal temperature (the schema fuzzer sent 5e-324) once overflowed logits / T into
    an index error; below MIN_TEMPERATURE sampling is greedy, its limit."""
    logits = torch.randn(3, 256, generator=torch.Generator().manual_seed(seed))  # (B, V)
    params = [SamplingParams(temperature=temperature, seed=seed)] * 3
    generators = [torch.Generator().manual_seed(seed + b) for b in range(3)]
    tokens = sample_batch(logits, params, generators)
    assert all(0 <= t < 256 for t in tokens)
    if temperature < 1e-6:
        assert tokens == torch.argmax(logits, dim=-1).tolist()
