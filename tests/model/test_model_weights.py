"""Loading weights: the committed ones, path resolution, COG_WEIGHTS, and clear errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model import GPT, Engine, GPTConfig, WeightsError, load_model, resolve_weights_path
from model.engine import default_weights_dir
from model.train import evaluate, save_weights, val_windows, validation_stream

WEIGHTS = default_weights_dir()
TINY = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(autouse=True)
def no_env_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COG_WEIGHTS", raising=False)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    out = tmp_path / "tiny"
    save_weights(GPT(TINY), out)
    return out


@pytest.fixture(scope="module")
def committed() -> Engine:
    return load_model(device="cpu")


# ---- the committed weights -----------------------------------------------------------------


def readme_value(pattern: str) -> str:
    text = (WEIGHTS / "README.md").read_text()
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in weights/README.md"
    return match.group(1)


def test_committed_weights_load_with_their_config(committed: Engine) -> None:
    config = json.loads((WEIGHTS / "config.json").read_text())
    assert committed.config == GPTConfig(**config)
    assert committed.device == torch.device("cpu")
    assert committed.dtype == torch.float32
    assert (WEIGHTS / "model.safetensors").stat().st_size < 20 * 2**20


def test_committed_weights_reach_the_stated_validation_loss(committed: Engine) -> None:
    stated = float(readme_value(r"validation loss: (\d+\.\d+)"))
    trained_on = readme_value(r"Python (\d+\.\d+)\.\d+ standard library")
    if trained_on != f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"weights were trained on the Python {trained_on} stdlib, not this one's")
    windows = val_windows(validation_stream(), committed.config.block_size)
    measured = evaluate(committed.model, windows)
    assert measured == pytest.approx(stated, rel=0.02)
    assert measured < 1.5  # far below uniform guessing (ln 256 = 5.55 nats/byte)


def test_committed_weights_write_python(committed: Engine) -> None:
    prompt = "def fibonacci(n):"
    greedy = "".join(committed.generate(prompt, max_new_tokens=60, temperature=0.0))
    assert greedy.lstrip(" \n").startswith('"""')  # a docstring first
    text = "".join(committed.generate(prompt, max_new_tokens=300, temperature=0.7, seed=0))
    assert text.startswith("\n    ")  # an indented body
    keywords = set(re.findall(r"\b(return|if|for|while|def|self|None|import|try|in|not)\b", text))
    assert len(keywords) >= 4, text
    assert "\ufffd" not in text


# ---- path resolution -----------------------------------------------------------------------


def test_default_path_is_the_repository_weights_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config_file, weights_file = resolve_weights_path()
    assert weights_file == Path(__file__).resolve().parents[2] / "weights" / "model.safetensors"
    assert config_file == weights_file.parent / "config.json"


def test_cog_weights_env_is_honoured_and_the_argument_wins(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COG_WEIGHTS", str(tiny_dir))
    assert load_model(device="cpu").config == TINY
    assert load_model(WEIGHTS, device="cpu").config != TINY
    monkeypatch.setenv("COG_WEIGHTS", str(tiny_dir / "nowhere"))
    with pytest.raises(WeightsError, match="nowhere"):
        load_model(device="cpu")


def test_path_may_be_the_safetensors_file(tiny_dir: Path) -> None:
    engine = load_model(tiny_dir / "model.safetensors", device="cpu")
    assert engine.config == TINY
    assert list(engine.generate("ab", max_new_tokens=3, temperature=0.0))


def test_loaded_weights_equal_the_saved_ones_in_fp16(tiny_dir: Path) -> None:
    torch.manual_seed(0)
    original = GPT(TINY)
    engine = load_model(tiny_dir, device="cpu")
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(
            engine.model.state_dict()[name], tensor.half().float(), rtol=0, atol=0
        )


# ---- errors --------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"weights not found: .*missing.*config\.json"):
        load_model(tmp_path / "missing")


def test_missing_config_or_weights_file(tiny_dir: Path) -> None:
    (tiny_dir / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"config\.json does not exist"):
        load_model(tiny_dir / "model.safetensors")
    (tiny_dir / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors does not exist"):
        load_model(tiny_dir)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "cannot read model config"),
        ('["a list"]', "expected a JSON object"),
        ('{"block_size": 16}', "missing keys"),
        (json.dumps({**TINY.to_dict(), "dropout": 0.1}), r"unknown keys \['dropout'\]"),
        (json.dumps({**TINY.to_dict(), "n_head": 3}), "divisible"),
        (json.dumps({**TINY.to_dict(), "n_layer": "2"}), "positive int"),
        (json.dumps({**TINY.to_dict(), "n_layer": 0}), "positive int"),
    ],
)
def test_bad_config(tiny_dir: Path, config: str, message: str) -> None:
    (tiny_dir / "config.json").write_text(config)
    with pytest.raises(WeightsError, match=message) as info:
        load_model(tiny_dir)
    assert str(tiny_dir / "config.json") in str(info.value)


def test_config_that_does_not_match_the_tensors(tiny_dir: Path) -> None:
    (tiny_dir / "config.json").write_text(json.dumps({**TINY.to_dict(), "n_embd": 32}))
    with pytest.raises(WeightsError) as info:
        load_model(tiny_dir)
    message = str(info.value)
    assert str(tiny_dir / "model.safetensors") in message
    assert "wte.weight has shape (256, 16), expected (256, 32)" in message


def test_missing_and_unexpected_tensors(tiny_dir: Path) -> None:
    torch.manual_seed(0)
    tensors = {k: v.contiguous() for k, v in GPT(TINY).state_dict().items()}
    del tensors["lm_head.weight"]
    tensors["extra.bias"] = torch.zeros(3)
    save_file(tensors, str(tiny_dir / "model.safetensors"))
    with pytest.raises(WeightsError) as info:
        load_model(tiny_dir)
    assert "missing tensors ['lm_head.weight']" in str(info.value)
    assert "unexpected tensors ['extra.bias']" in str(info.value)


def test_corrupt_safetensors_file(tiny_dir: Path) -> None:
    (tiny_dir / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match=r"cannot read safetensors file .*model\.safetensors"):
        load_model(tiny_dir)


def test_weights_error_is_a_value_error() -> None:
    assert issubclass(WeightsError, ValueError)
