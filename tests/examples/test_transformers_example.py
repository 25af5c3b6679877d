"""examples/transformers_predict.py on the real Cog server: `generate(streamer=...)` via emit.

The example's predictions are compared with the same generation run here, in the test process,
through the same function: same text, same token counts, and each prediction's own logs and
metrics with 8 at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers, probe_records, setup_printed, succeeded, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

CONCURRENCY = 8
FIB = "def fibonacci(n):"
FIB_SEED = 2  # a seed whose 300 tokens do not end early (asserted below)
STEP_SECONDS = "0.01"  # the probed server's model: 10 ms a token, never ending early
LONG = 1024  # tokens: over 10 s with the probe, still running when the test leaves
Reference = Callable[[str, int, float, int], tuple[str, int]]


@pytest.fixture(scope="module")
def example(module_cog_servers: CogServers) -> CogServer:
    """The example as shipped: the async shape, 8 slots."""
    return module_cog_servers.shared(
        "examples/transformers_predict.py:Predictor", source_dir=REPO_ROOT, concurrency=CONCURRENCY
    )


@pytest.fixture(scope="module")
def reference() -> Iterator[Reference]:
    """(text, output_token_count) of a generation run here, as the server runs it."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from examples import transformers_predict

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server does on this machine
    # Loaded as the example's setup() loads them: from_pretrained on its weights folder.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(transformers_predict.WEIGHTS)
    model = AutoModelForCausalLM.from_pretrained(transformers_predict.WEIGHTS).eval()

    def generate(prompt: str, max_new_tokens: int, temperature: float, seed: int) -> tuple:
        stream = transformers_predict.generate_text(
            model, tokenizer, prompt, max_new_tokens, temperature, seed, time.perf_counter()
        )
        text = "".join(stream)
        # One token a byte (it generates ASCII only), plus end-of-text when it ended early.
        return text, len(text) + (len(text) < max_new_tokens)

    yield generate
    torch.set_num_threads(threads)


def test_the_streamer_emits_whole_characters_and_counts_tokens() -> None:
    """A character split over several tokens (bytes) is emitted once complete, not as U+FFFD."""
    import torch

    from examples import transformers_predict, transformers_weights

    tokenizer = transformers_weights.build_tokenizer()
    emitted: list[str] = []
    streamer = transformers_predict.TextEmitter(tokenizer, emitted.append, time.perf_counter())
    streamer.put(torch.tensor([[256, 65]]))  # the prompt: skipped
    for byte in "aé👩\n".encode():
        streamer.put(torch.tensor([byte]))
    streamer.put(torch.tensor([0xE2, 0x82]))  # the first 2 bytes of "€" ...
    streamer.put(torch.tensor([256]))  # ... then end-of-text: nothing, and not U+FFFD yet
    assert emitted == ["a", "é", "👩", "\n"]
    streamer.end()  # the incomplete character is flushed as U+FFFD
    assert emitted == ["a", "é", "👩", "\n", "\ufffd"]
    assert streamer.tokens == len("aé👩\n".encode()) + 3


def build_encoder_decoder() -> Any:
    """A tiny T5 built in code: an encoder-decoder, whose generate() returns the decoder's ids."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=257,
        d_model=8,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        pad_token_id=256,
        eos_token_id=256,
        decoder_start_token_id=256,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config)
    return model.eval()


@pytest.mark.parametrize("prompt", ["hi", "x" * 100], ids=["short prompt", "long prompt"])
@pytest.mark.parametrize("kind", ["decoder-only", "encoder-decoder"])
def test_output_token_count_is_the_tokens_generated(
    monkeypatch: pytest.MonkeyPatch, kind: str, prompt: str
) -> None:
    """Not `len(output) - prompt tokens`: an encoder-decoder's output starts with the decoder's
    start token, not with the prompt (that gave 18 for 20 tokens here, and -80 for the long
    prompt)."""
    from examples import transformers_predict, transformers_weights

    metrics: dict[str, float] = {}

    class Scope:
        def record_metric(self, name: str, value: float, mode: str = "replace") -> None:
            metrics[name] = value

    monkeypatch.setattr(transformers_predict, "current_scope", Scope)
    tokenizer = transformers_weights.build_tokenizer()
    if kind == "decoder-only":
        model = transformers_weights.build_model("cpu")
    else:
        model = build_encoder_decoder()
    assert model.config.is_encoder_decoder == (kind == "encoder-decoder")
    stream = transformers_predict.generate_text(
        model, tokenizer, prompt, 20, 0.8, 3, time.perf_counter()
    )
    text = "".join(stream)
    assert metrics["input_token_count"] == len(prompt) + 1  # + the start token
    # One token a byte (it generates ASCII only), plus end-of-text when it ended early.
    assert text
    assert metrics["output_token_count"] == len(text) + (len(text) < 20)


def test_the_committed_weights_are_what_the_script_makes(tmp_path: Path) -> None:
    """examples/weights/tiny-llama is transformers_weights.py's output, byte for byte, and
    readable by any user (save_pretrained writes model.safetensors as 0600)."""
    from examples import transformers_predict, transformers_weights

    made = transformers_weights.save(tmp_path / "tiny-llama")
    committed = transformers_predict.WEIGHTS
    names = sorted(p.name for p in made.iterdir())
    assert names == sorted(p.name for p in committed.iterdir())
    assert "model.safetensors" in names
    for name in names:
        assert (made / name).read_bytes() == (committed / name).read_bytes(), name
        assert (committed / name).stat().st_mode & 0o444 == 0o444, name


# ── the example as shipped ────────────────────────────────────────────────────────────────────


def test_setup_builds_the_model_in_code_and_reports_the_device(example: CogServer) -> None:
    wait_until(
        lambda: setup_printed(example, "model ready on cpu"),
        timeout=10,
        what="setup's device line in /health-check",
    )


def test_output_streams_live_over_sse(example: CogServer, reference: Reference) -> None:
    expected, count = reference(FIB, 300, 0.8, FIB_SEED)
    assert count == 300
    sent = time.monotonic()
    events = list(example.predict_stream({"prompt": FIB, "max_new_tokens": 300, "seed": FIB_SEED}))
    outputs = [e for e in events if e.event == "output"]
    completed = events[-1]
    assert completed.event == "completed"
    assert completed.data["status"] == "succeeded"
    assert "".join(e.data["chunk"] for e in outputs) == expected
    assert completed.data["metrics"]["output_token_count"] == 300
    assert len(outputs) > 10  # piece by piece, not one final blob
    assert outputs[0].time - sent < 0.3 * (completed.time - sent)


def test_concurrent_predictions_keep_their_own_output_logs_and_metrics(
    example: CogServer, reference: Reference
) -> None:
    jobs = [
        {"prompt": f"# job {i}\nimport ", "max_new_tokens": 40 + 13 * i, "seed": i}
        for i in range(CONCURRENCY)
    ]
    expected = [reference(j["prompt"], j["max_new_tokens"], 0.8, j["seed"]) for j in jobs]
    # Some end early at end-of-text: their token count is not the length of their text.
    assert any(count < j["max_new_tokens"] for j, (_, count) in zip(jobs, expected, strict=True))
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        bodies = list(pool.map(lambda job: succeeded(example, **job), jobs))
    for job, (text, count), body in zip(jobs, expected, bodies, strict=True):
        assert "".join(body["output"]) == text
        metrics = body["metrics"]
        assert metrics["output_token_count"] == count
        assert metrics["input_token_count"] == len(job["prompt"].encode()) + 1  # + start token
        assert 0 < metrics["time_to_first_token"] < metrics["predict_time"]
        assert metrics["tokens_per_second"] > 0
        assert "seed" not in metrics  # given, not drawn
        lines = body["logs"].splitlines()
        assert len(lines) == 2, lines
        assert lines[0] == f"generating up to {job['max_new_tokens']} tokens (seed {job['seed']})"
        assert lines[1].startswith(f"generated {count} tokens in ")


def test_a_random_seed_is_reported_and_reproduces_the_text(
    example: CogServer, reference: Reference
) -> None:
    body = succeeded(example, prompt=FIB, max_new_tokens=20)
    seed = body["metrics"]["seed"]
    assert f"(seed {seed})" in body["logs"]
    assert "".join(body["output"]) == reference(FIB, 20, 0.8, seed)[0]


def test_a_long_prompt_is_cut_to_the_models_context(example: CogServer) -> None:
    body = succeeded(example, prompt="x" * 5000, max_new_tokens=3, seed=1)
    assert body["metrics"]["input_token_count"] == 512


BAD_INPUTS = {
    "zero tokens": {"prompt": FIB, "max_new_tokens": 0},
    "too many tokens": {"prompt": FIB, "max_new_tokens": 1025},
    "negative temperature": {"prompt": FIB, "temperature": -0.1},
    "seed too big": {"prompt": FIB, "seed": 2**32},
    "null prompt": {"prompt": None, "max_new_tokens": 5},
}


@pytest.mark.parametrize("inputs", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_a_422(example: CogServer, inputs: Any) -> None:
    code, body = example.predict(inputs)
    assert code == 422, body


# ── failures and cancellation ─────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def probed(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """The example with a probe on its model (tests/examples/predictors/transformers_probes.py)."""
    probe = tmp_path_factory.mktemp("transformers-probe") / "generate.jsonl"
    return module_cog_servers.shared(
        "transformers_probes.py:Probe",
        source_dir=Path(__file__).resolve().parent / "predictors",
        env={"PROBE_FILE": str(probe), "STEP_SECONDS": STEP_SECONDS},
    )


def test_generate_raising_fails_the_prediction_with_its_message(probed: CogServer) -> None:
    before = len(probe_records(probed))
    events = list(
        probed.predict_stream({"prompt": f"raise at 7: {FIB}", "max_new_tokens": 50, "seed": 2})
    )
    final = events[-1].data
    assert final["status"] == "failed"
    assert "model exploded at token 7" in final["error"]
    assert len("".join(e.data["chunk"] for e in events if e.event == "output")) <= 7
    wait_until(lambda: len(probe_records(probed)) > before, timeout=5, what="generate to end")
    assert probe_records(probed)[before]["error"] == "RuntimeError"
    wait_until(lambda: probed.health()["status"] == "READY", timeout=10, what="a free slot")
    succeeded(probed, prompt=FIB, max_new_tokens=5, seed=5)  # the next one is fine


def check_stopped_within_a_second(server: CogServer, before: int, left_at: float) -> None:
    wait_until(lambda: len(probe_records(server)) > before, timeout=5, what="generate to end")
    stopped = probe_records(server)[before]
    assert stopped["tokens"] < LONG
    assert stopped["ended"] - left_at < 1.0
    assert stopped["error"] in (None, "StreamClosed")  # stopped, not failed
    wait_until(lambda: server.health()["status"] == "READY", timeout=10, what="a free slot")
    after = succeeded(server, prompt=FIB, max_new_tokens=5, seed=5)  # nothing of it runs on
    lines = after["logs"].splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "generating up to 5 tokens (seed 5)"


def test_a_cancel_stops_generate_within_a_second(probed: CogServer) -> None:
    before = len(probe_records(probed))
    id_ = f"cancel-{uuid.uuid4().hex[:8]}"
    code, body = probed.predict_async(id_, {"prompt": FIB, "max_new_tokens": LONG, "seed": 111})
    assert code == 202, body
    wait_until(lambda: "generating" in ((probed.get(id_) or {}).get("logs") or ""), timeout=30)
    cancelled_at = time.time()
    assert probed.cancel(id_)[0] == 200
    assert probed.wait(id_, timeout=30)["status"] == "canceled"
    check_stopped_within_a_second(probed, before, cancelled_at)


def test_a_client_that_drops_its_sse_stream_stops_generate_within_a_second(
    probed: CogServer,
) -> None:
    before = len(probe_records(probed))
    events = probed.predict_stream({"prompt": FIB, "max_new_tokens": LONG, "seed": 112})
    outputs = 0
    for event in events:
        outputs += event.event == "output"
        if outputs == 5:
            break
    left_at = time.time()
    events.close()  # closes the connection: coglet turns that into a cancel
    check_stopped_within_a_second(probed, before, left_at)
