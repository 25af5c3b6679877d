"""Makes the weights directory examples/transformers_predict.py loads with `from_pretrained`.

A stand-in for a real checkpoint: a tiny Llama with seeded random weights and a byte-level
tokenizer, built in code (nothing is downloaded) and written with `save_pretrained`, as a
Hugging Face model's directory is. The example loads it from `weights/tiny-llama` beside its own
file, the way a fork loads its model's folder from `weights/` beside predict.py:

    python examples/transformers_weights.py examples/weights/tiny-llama

Its output is committed (about 100 KB; the same bytes on every run): a real model's weights are
not (docs/deploying.md, "Weights that ship").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"  # id 256; also starts every prompt, as GPT-2's does
DEFAULT_DIR = Path(__file__).resolve().parent / "weights" / "tiny-llama"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (GPT-2's byte-to-character map, no merges): token id = byte."""
    shown = [*range(33, 127), *range(161, 173), *range(174, 256)]  # bytes that are themselves
    others = [b for b in range(256) if b not in shown]
    chars = {b: chr(b) for b in shown} | {b: chr(256 + i) for i, b in enumerate(others)}
    tokenizer = Tokenizer(
        models.BPE(vocab={chars[b]: b for b in range(256)} | {EOS: 256}, merges=[])
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", special_tokens=[(EOS, 256)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, truncation_side="left"
    )


def build_model(device: str) -> LlamaForCausalLM:
    """A 2-layer Llama of ~650 parameters a layer, its weights drawn from a fixed seed."""
    config = LlamaConfig(
        vocab_size=257,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.5,  # not 0.02: weights that large make the text depend on the prompt
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=256,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.to(device)  # type: ignore[arg-type]  # transformers annotates its `to` wrapper wrongly
    model.eval()  # type: ignore[no-untyped-call]
    return model


def save(directory: Path) -> Path:
    """Write the tokenizer and the model to `directory` with `save_pretrained`.

    `save_pretrained` writes model.safetensors readable by its owner only (mode 0600); `cog
    build` copies modes into the image as they are, where a server running as another user
    could not read it: every file is made world-readable (0644).
    """
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(directory)
    build_model("cpu").save_pretrained(directory)
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path, nargs="?", default=DEFAULT_DIR)
    print(f"wrote {save(ap.parse_args(argv).directory)}")


if __name__ == "__main__":
    main()
