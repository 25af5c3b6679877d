"""Train the byte-level GPT on the Python standard library's own sources.

    .venv/bin/python -m model.train            # what `make weights` runs (~8-12 min on 2 CPU cores)
    .venv/bin/python -m model.train --steps 50 --out /tmp/w   # a quick smoke run elsewhere

Corpus: every ``.py`` file under ``sysconfig.get_paths()["stdlib"]``, in sorted order, except
``site-packages``, test directories (``test``, ``tests``, ``idle_test``) and two packages that
are generated data rather than code (``encodings``: codec tables; ``pydoc_data``: the docs as one
string). A file goes to the validation split when the SHA-256 of its relative path is 0 mod 20
(about 5% of files), so the split is deterministic and does not depend on which other files exist.
Training windows are random: half start anywhere, half at the start of a line.

Writes ``config.json``, ``model.safetensors`` (fp16 storage) and ``README.md`` into ``--out``
(default: the repository's ``weights/``). The reported validation loss (nats per byte) is measured
after saving, on the saved weights loaded back in fp32 on the CPU, over a fixed sample of
validation windows (``val_windows``); ``tests/test_model*.py`` recomputes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from .engine import CONFIG_NAME, WEIGHTS_NAME, default_weights_dir, load_model
from .gpt import GPT, GPTConfig

EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
DATA_PACKAGES = frozenset({"encodings", "pydoc_data"})  # generated tables and prose, not code
VAL_MODULUS = 20
SAMPLE_TOKENS = 300
EVAL_WINDOWS = 128  # the fixed validation sample: 128 windows x block_size bytes


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: Path | None = None) -> list[Path]:
    """Sorted relative paths of the corpus' .py files."""
    root = root or stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        dirs = rel.parts[:-1]
        if EXCLUDED_DIRS.intersection(dirs) or (dirs and dirs[0] in DATA_PACKAGES):
            continue
        files.append(rel)
    return sorted(files)


def is_validation(rel: Path) -> bool:
    digest = hashlib.sha256(rel.as_posix().encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % VAL_MODULUS == 0


def split_files(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(train, validation), each in the order given."""
    train = [f for f in files if not is_validation(f)]
    val = [f for f in files if is_validation(f)]
    return train, val


def load_stream(files: Sequence[Path], root: Path | None = None) -> Tensor:
    """The files' bytes concatenated, each followed by a blank line, as a uint8 tensor (N,)."""
    root = root or stdlib_root()
    data = b"".join((root / f).read_bytes().rstrip(b"\n") + b"\n\n" for f in files)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def validation_stream(root: Path | None = None) -> Tensor:
    return load_stream(split_files(corpus_files(root))[1], root)


def val_windows(stream: Tensor, block_size: int, n: int = EVAL_WINDOWS) -> Tensor:
    """n evenly spaced windows (n, block_size + 1) of the stream: the fixed evaluation sample."""
    last = stream.numel() - block_size - 1
    if last < 0:
        raise ValueError(f"stream of {stream.numel()} bytes is shorter than one window")
    starts = [round(i * last / max(1, n - 1)) for i in range(n)]
    return torch.stack([stream[s : s + block_size + 1] for s in starts]).long()


def chunk_windows(stream: Tensor, block_size: int) -> Tensor:
    """The whole stream cut into non-overlapping windows (n, block_size + 1) (last one dropped)."""
    n = (stream.numel() - 1) // block_size
    return torch.stack(
        [stream[i * block_size : i * block_size + block_size + 1] for i in range(n)]
    ).long()


@torch.inference_mode()
def evaluate(model: GPT, windows: Tensor, batch_size: int = 16) -> float:
    """Mean cross-entropy (nats per byte) of predicting every next byte of every window."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        batch = windows[i : i + batch_size].to(device)  # (B, T+1)
        logits = model(batch[:, :-1]).float()  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    return total / count


def line_starts(stream: Tensor, block_size: int) -> Tensor:
    """Offsets (N,) where a line begins and a whole window (block_size + 1) still fits."""
    starts = torch.cat(
        [torch.zeros(1, dtype=torch.long), (stream == ord("\n")).nonzero()[:, 0] + 1]
    )
    return starts[starts < stream.numel() - block_size - 1]


def get_batch(
    stream: Tensor, lines: Tensor, batch_size: int, block_size: int, gen: torch.Generator
) -> Tensor:
    """Random windows (B, T+1) of the training stream.

    Half start anywhere, half at the start of a line (``lines``, from ``line_starts``): prompts
    usually begin a line at column 0, while truncated prompts and slid windows begin mid-line,
    and the model should know both.
    """
    anywhere = torch.randint(0, stream.numel() - block_size - 1, (batch_size,), generator=gen)
    at_line = lines[torch.randint(0, lines.numel(), (batch_size,), generator=gen)]
    aligned = torch.rand(batch_size, generator=gen) < 0.5
    starts = torch.where(aligned, at_line, anywhere)
    return torch.stack([stream[s : s + block_size + 1] for s in starts.tolist()]).long()


def lr_at(step: int, progress: float, lr: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to lr / 10 as progress reaches 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def save_weights(model: GPT, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=default_weights_dir(), help="output directory")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="CPU bf16")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=13.0,
        help="training time budget: the schedule ends at --steps or at this, whichever is first",
    )
    ap.add_argument("--no-full-val", action="store_true", help="skip the full-split loss")
    for name, default in GPTConfig().to_dict().items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python -m model.train", *(sys.argv[1:] if argv is None else argv)]
    )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = GPTConfig(
        **{name: getattr(args, name) for name in GPTConfig().to_dict()},
    )
    amp = args.amp == "on" or (args.amp == "auto" and bf16_supported())

    t0 = time.perf_counter()
    root = stdlib_root()
    files = corpus_files(root)
    train_files, val_files = split_files(files)
    train = load_stream(train_files, root)
    val = load_stream(val_files, root)
    py = platform.python_version()
    log(
        f"corpus: Python {py} stdlib, {len(train_files)} train files ({train.numel():,} bytes), "
        f"{len(val_files)} val files ({val.numel():,} bytes)"
    )

    model = GPT(config)
    log(f"model: {model.num_params():,} parameters, {config}; bf16 autocast: {amp}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    lines = line_starts(train, config.block_size)
    tokens_per_step = args.batch_size * config.block_size
    t_train = time.perf_counter()
    budget = args.max_minutes * 60
    steps_done = 0
    elapsed = 0.0
    smooth = float("nan")
    # Progress is the step count or the time budget, whichever is further along: on a machine
    # fast enough the run is exactly --steps steps; on a busy one the schedule still completes.
    while (progress := max(steps_done / args.steps, elapsed / budget)) < 1.0:
        step = steps_done
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, progress, args.lr, args.warmup)
        batch = get_batch(train, lines, args.batch_size, config.block_size, gen)  # (B, T+1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(batch[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        steps_done = step + 1
        value = loss.item()
        smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
        elapsed = time.perf_counter() - t_train
        if steps_done % 50 == 0 or steps_done in (1, args.steps):
            eta = min(elapsed / steps_done * (args.steps - steps_done), budget - elapsed)
            log(
                f"step {steps_done:5d}/{args.steps} loss {smooth:.3f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} "
                f"{tokens_per_step * steps_done / elapsed:,.0f} tok/s "
                f"elapsed {fmt_time(elapsed)} eta {fmt_time(max(0.0, eta))}"
            )
    train_time = time.perf_counter() - t_train
    if steps_done < args.steps:
        log(f"time budget (--max-minutes {args.max_minutes}) ended training at step {steps_done}")

    save_weights(model, args.out)
    engine = load_model(args.out, device="cpu")  # evaluate exactly what was saved, in fp32
    val_loss = evaluate(engine.model, val_windows(val, config.block_size))
    log(f"validation loss: {val_loss:.3f} nats/byte (fixed sample of {EVAL_WINDOWS} windows)")
    full_val = None
    if not args.no_full_val:
        full_val = evaluate(engine.model, chunk_windows(val, config.block_size))
        log(f"full validation split loss: {full_val:.3f} nats/byte")
    prompt = "def fibonacci(n):"
    samples = {
        f"greedy (temperature 0), {SAMPLE_TOKENS} bytes": "".join(
            engine.generate(prompt, max_new_tokens=SAMPLE_TOKENS, temperature=0.0)
        ),
        f"temperature 0.7, seed 0, {SAMPLE_TOKENS} bytes": "".join(
            engine.generate(prompt, max_new_tokens=SAMPLE_TOKENS, temperature=0.7, seed=0)
        ),
    }
    for title, text in samples.items():
        log(f"{title}:\n{prompt}{text}")
    wall = time.perf_counter() - t0
    write_readme(
        args.out,
        config=config,
        n_params=model.num_params(),
        python=py,
        n_train=len(train_files),
        n_val=len(val_files),
        train_bytes=train.numel(),
        val_bytes=val.numel(),
        steps=steps_done,
        args=args,
        amp=amp,
        val_loss=val_loss,
        full_val=full_val,
        train_time=train_time,
        wall=wall,
        command=command,
        samples={title: prompt + text for title, text in samples.items()},
    )
    log(f"wrote {args.out} in {fmt_time(wall)}")


def write_readme(
    out: Path,
    *,
    config: GPTConfig,
    n_params: int,
    python: str,
    n_train: int,
    n_val: int,
    train_bytes: int,
    val_bytes: int,
    steps: int,
    args: argparse.Namespace,
    amp: bool,
    val_loss: float,
    full_val: float | None,
    train_time: float,
    wall: float,
    command: str,
    samples: dict[str, str],
) -> None:
    tokens = steps * args.batch_size * config.block_size
    full = (
        f"- full validation split, non-overlapping {config.block_size}-byte windows: "
        f"{full_val:.3f} nats/byte\n"
        if full_val is not None
        else ""
    )
    fence = "`" * 3
    cut = (
        ""
        if steps >= args.steps
        else f" (of {args.steps}: the {args.max_minutes}-minute budget ended it)"
    )
    note = " (what `make weights` runs)" if command.endswith("model.train") else ""
    text = f"""# Trained weights

A byte-level GPT ({n_params:,} parameters) trained by `model/train.py`; see `model/README.md`.

validation loss: {val_loss:.3f}

That is nats per byte, on the fixed validation sample ({EVAL_WINDOWS} evenly spaced windows of
{config.block_size} bytes from the held-out files, every next byte predicted), computed from the
saved fp16 weights loaded in fp32 on the CPU. `tests/test_model_weights.py` recomputes it.

{full}- corpus: the Python {python} standard library's own `.py` files (no `site-packages`, no test
  directories, no `encodings` or `pydoc_data`), sorted; {n_train} train files
  ({train_bytes:,} bytes), {n_val} validation files ({val_bytes:,} bytes), split by a hash of
  each file's path
- config: `{json_config(config)}`
- steps: {steps}{cut}, batch: {args.batch_size} x {config.block_size} bytes ({tokens:,} bytes seen),
  AdamW lr {args.lr} (warmup {args.warmup} steps, then cosine to lr/10), weight decay 0.1,
  seed {args.seed}
- precision: {"bf16 autocast" if amp else "fp32"} training on CPU, {args.threads} threads;
  stored as fp16 safetensors
- wall time: {fmt_time(wall)} in all ({fmt_time(train_time)} of training)
- command: `{command}`{note}

Continuations of `def fibonacci(n):` written at the end of training:
"""
    for title, sample in samples.items():
        text += f"\n{title}:\n\n{fence}python\n{sample}\n{fence}\n"
    (out / "README.md").write_text(text)


def json_config(config: GPTConfig) -> str:
    return json.dumps(config.to_dict())


if __name__ == "__main__":
    main()
