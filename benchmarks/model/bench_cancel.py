"""Soak benchmark: cancels and dropped SSE clients on the real server, with and without the hook.

Run ``python -m benchmarks.model.bench_cancel`` from the repository root (``--quick``: a smoke
run).
It starts two ``python -m cog.server.http`` servers with the harness in scripts/cog_server.py,
each with ``min(MAX_CONCURRENCY, 8)`` slots:

- **with the hook**: predict.py as shipped (its ``setup()`` installs ``coglet_cancel``);
- **without it**: ``tests/model/predictors/cancel_probes.py:UnhookedProbe`` — the same predictor,
  whose ``setup()`` removes the hook again (its model probe is inert without ``PROBE_FILE``).

Each server gets the same bounded mix, from as many client threads as it has slots, each client
sending its requests one after another (a fixed, seeded sequence):

- **normal** (half): a synchronous prediction of 32 to 160 tokens;
- **cancel** (a quarter): a ``LONG``-token prediction over SSE, cancelled (``POST .../cancel``)
  once its first output arrived; the client reads on until the ``completed`` event;
- **drop** (a quarter): a ``LONG``-token prediction over SSE whose client closes the connection
  after three output events (coglet then cancels it the same way).

A request answered 409 ("at capacity") is retried every 20 ms; every attempt counts. Reported per
server: cancel → ``canceled`` as the client sees it (the ``completed`` event), p50 and max; how
long the slot stayed held after a cancel or a drop (from the client's cancel / close to the
server log's "Prediction worker completed" for that prediction: the worker let the slot go); the
share of attempts answered 409; and the wall time of the mix. The servers run one after the other,
in two alternating rounds (the machine is shared: treat single numbers as noisy). Exit status 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from cog_server import CogServer, CogServerError, stage_predictor  # noqa: E402

from predict import MAX_CONCURRENCY  # noqa: E402

PROMPT = "def fibonacci(n):"
SLOTS = min(MAX_CONCURRENCY, 8)
LONG = 768  # tokens of a prediction that is cancelled or dropped
DROP_AFTER = 3  # output events a dropping client reads
RETRY_EVERY = 0.02  # seconds between attempts after a 409
GIVE_UP = 120.0  # seconds a client keeps retrying one request


@dataclass
class Tally:
    """What one server's clients saw."""

    attempts: int = 0
    busy: int = 0  # attempts answered 409
    requests: int = 0
    turned_away: int = 0  # requests answered 409 at least once
    normal_ok: int = 0
    normal_failed: list[str] = field(default_factory=list)
    cancel_to_canceled: list[float] = field(default_factory=list)
    cancel_statuses: dict[str, int] = field(default_factory=dict)
    cancelled_at: dict[str, float] = field(default_factory=dict)  # id -> wall time
    dropped_at: dict[str, float] = field(default_factory=dict)  # id -> wall time
    slot_after_cancel: list[float] = field(default_factory=list)
    slot_after_drop: list[float] = field(default_factory=list)
    wall: float = 0.0

    def add(self, other: Tally) -> None:
        self.attempts += other.attempts
        self.busy += other.busy
        self.requests += other.requests
        self.turned_away += other.turned_away
        self.normal_ok += other.normal_ok
        self.normal_failed += other.normal_failed
        self.cancel_to_canceled += other.cancel_to_canceled
        for status, n in other.cancel_statuses.items():
            self.cancel_statuses[status] = self.cancel_statuses.get(status, 0) + n
        self.slot_after_cancel += other.slot_after_cancel
        self.slot_after_drop += other.slot_after_drop
        self.wall += other.wall


def plan(clients: int, per_client: int, seed: int) -> list[list[tuple[str, int, int]]]:
    """Each client's requests: (kind, max_new_tokens, seed); the same for both servers."""
    rng = random.Random(seed)
    kinds = ["normal", "normal", "cancel", "drop"]
    return [
        [
            (kind, LONG if kind != "normal" else rng.randint(32, 160), rng.randrange(1_000_000))
            for kind in (rng.choice(kinds) for _ in range(per_client))
        ]
        for _ in range(clients)
    ]


# ── one client ─────────────────────────────────────────────────────────────────────────────────


def open_stream(
    server: CogServer, inputs: dict[str, Any], tally: Tally
) -> Generator[Any, None, None]:
    """An SSE stream whose first event has arrived (a 409 retried); its events, that one first."""
    deadline = time.monotonic() + GIVE_UP
    tally.requests += 1
    busy = False
    while True:
        tally.attempts += 1
        events = server.predict_stream(inputs, timeout=GIVE_UP, busy_retry=0)
        try:
            first = next(events)
        except CogServerError as exc:
            if "answered 409" not in str(exc) or time.monotonic() > deadline:
                raise
            tally.busy += 1
            tally.turned_away += not busy
            busy = True
            time.sleep(RETRY_EVERY)
            continue
        return _chain(first, events)


def _chain(first: Any, rest: Iterator[Any]) -> Generator[Any, None, None]:
    try:
        yield first
        yield from rest
    finally:
        getattr(rest, "close", lambda: None)()  # the harness's stream: closes the connection


def run_normal(server: CogServer, inputs: dict[str, Any], tally: Tally) -> None:
    deadline = time.monotonic() + GIVE_UP
    tally.requests += 1
    busy = False
    while True:
        tally.attempts += 1
        code, body = server.predict(inputs, timeout=GIVE_UP, busy_retry=0)
        if code != 409 or time.monotonic() > deadline:
            break
        tally.busy += 1
        tally.turned_away += not busy
        busy = True
        time.sleep(RETRY_EVERY)
    if code == 200 and body.get("status") == "succeeded":
        tally.normal_ok += 1
    else:
        tally.normal_failed.append(f"{code} {str(body)[:200]}")


def run_cancel(server: CogServer, inputs: dict[str, Any], tally: Tally) -> None:
    events = open_stream(server, inputs, tally)
    prediction_id: str | None = None
    sent: float | None = None
    try:
        for event in events:
            if event.event == "start":
                prediction_id = event.data["id"]
            elif event.event == "output" and sent is None and prediction_id is not None:
                tally.cancelled_at[prediction_id] = time.time()
                sent = time.monotonic()
                server.cancel(prediction_id)
            elif event.event == "completed":
                status = event.data.get("status", "?")
                tally.cancel_statuses[status] = tally.cancel_statuses.get(status, 0) + 1
                if sent is not None:
                    tally.cancel_to_canceled.append(event.time - sent)
                return
    finally:
        events.close()


def run_drop(server: CogServer, inputs: dict[str, Any], tally: Tally) -> None:
    events = open_stream(server, inputs, tally)
    outputs = 0
    prediction_id: str | None = None
    for event in events:
        if event.event == "start":
            prediction_id = event.data["id"]
        elif event.event == "output":
            outputs += 1
            if outputs == DROP_AFTER:
                break
    if prediction_id is not None:
        tally.dropped_at[prediction_id] = time.time()
    events.close()  # the connection goes: coglet cancels the prediction


def run_client(server: CogServer, requests: list[tuple[str, int, int]]) -> Tally:
    tally = Tally()
    for n, (kind, tokens, seed) in enumerate(requests):
        inputs = {"prompt": f"# request {n}\n{PROMPT}", "max_new_tokens": tokens, "seed": seed}
        {"normal": run_normal, "cancel": run_cancel, "drop": run_drop}[kind](server, inputs, tally)
    return tally


# ── one round on one server ───────────────────────────────────────────────────────────────────


def worker_completed(server: CogServer) -> dict[str, float]:
    """Prediction id -> wall time of the server log's "Prediction worker completed"."""
    done: dict[str, float] = {}
    for line in server.log_text().splitlines():
        if "Prediction worker completed" not in line:
            continue
        try:
            record = json.loads(line)
            stamp = record["timestamp"].replace("Z", "+00:00")
            done[record["fields"]["prediction_id"]] = datetime.fromisoformat(stamp).timestamp()
        except (ValueError, KeyError):
            continue
    return done


def wait_completed(server: CogServer, ids: set[str], timeout: float = GIVE_UP) -> dict[str, float]:
    """Until the server log shows every one of `ids` completed; returns worker_completed()."""
    deadline = time.monotonic() + timeout
    while True:
        completed = worker_completed(server)
        if ids <= completed.keys() or time.monotonic() > deadline:
            return completed
        time.sleep(0.05)


def run_round(server: CogServer, plans: list[list[tuple[str, int, int]]]) -> Tally:
    started = time.monotonic()
    with ThreadPoolExecutor(len(plans)) as pool:
        tallies = list(pool.map(lambda p: run_client(server, p), plans))
    total = Tally()
    for tally in tallies:
        total.add(tally)
    total.wall = time.monotonic() - started
    ids = {pid for t in tallies for pid in (*t.cancelled_at, *t.dropped_at)}
    completed = wait_completed(server, ids)  # the slots held past the mix are free again
    for tally in tallies:
        for pid, at in tally.cancelled_at.items():
            if pid in completed:
                total.slot_after_cancel.append(completed[pid] - at)
        for pid, at in tally.dropped_at.items():
            if pid in completed:
                total.slot_after_drop.append(completed[pid] - at)
    return total


# ── report ────────────────────────────────────────────────────────────────────────────────────


def p50_max(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.3f} / {max(values):.3f} s (n={len(values)})"


def report(results: dict[str, Tally], clients: int, per_client: int) -> None:
    names = list(results)
    rows: list[tuple[str, Callable[[Tally], str]]] = [
        ("cancel → canceled, p50 / max", lambda t: p50_max(t.cancel_to_canceled)),
        ("slot held after a cancel, p50 / max", lambda t: p50_max(t.slot_after_cancel)),
        ("slot held after an SSE drop, p50 / max", lambda t: p50_max(t.slot_after_drop)),
        (
            "requests answered 409 at least once",
            lambda t: (
                f"{t.turned_away}/{t.requests} ({100 * t.turned_away / max(1, t.requests):.1f}%)"
            ),
        ),
        (
            "attempts answered 409 (retried every 20 ms)",
            lambda t: f"{t.busy}/{t.attempts} ({100 * t.busy / max(1, t.attempts):.1f}%)",
        ),
        ("cancelled predictions' status", lambda t: str(dict(sorted(t.cancel_statuses.items())))),
        ("normal predictions succeeded", lambda t: f"{t.normal_ok} ({len(t.normal_failed)} not)"),
        ("wall time of the mix", lambda t: f"{t.wall:.1f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    col = max(34, *(len(n) for n in names))
    print()
    print(f"{'':<{width}}  " + "  ".join(f"{n:<{col}}" for n in names))
    for label, cell in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{cell(results[n]):<{col}}" for n in names))
    for name, tally in results.items():
        for failure in tally.normal_failed[:3]:
            print(f"  {name}: a normal prediction failed: {failure}")
    print()
    print(
        f"{clients} clients x {per_client} requests per server and round (normal : cancel : drop"
        f" = 2 : 1 : 1, cancelled/dropped ones {LONG} tokens), {SLOTS} slots per server."
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model.bench_cancel")
    ap.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    args = ap.parse_args()
    per_client = 2 if args.quick else 4
    rounds = 1 if args.quick else 2
    clients = SLOTS
    print(
        f"bench_cancel: python {platform.python_version()}, {SLOTS} slots, {clients} clients, "
        f"{per_client} requests each, {rounds} round(s) per server"
    )
    servers: dict[str, CogServer] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as tmp:
        try:
            servers["with the hook (predict.py)"] = CogServer(
                "predict.py:Predictor",
                cwd=stage_predictor(REPO_ROOT / "predict.py", Path(tmp) / "hooked"),
                concurrency=SLOTS,
            ).start()
            servers["without it (UnhookedProbe)"] = CogServer(
                "cancel_probes.py:UnhookedProbe",
                cwd=stage_predictor(
                    REPO_ROOT / "tests" / "model" / "predictors" / "cancel_probes.py",
                    Path(tmp) / "unhooked",
                ),
                concurrency=SLOTS,
            ).start()
            results = {name: Tally() for name in servers}
            order = list(servers)
            for r in range(rounds):
                plans = plan(clients, per_client, seed=1000 + r)
                for name in order if r % 2 == 0 else reversed(order):
                    print(f"round {r + 1}: {name} ...", flush=True)
                    results[name].add(run_round(servers[name], plans))
            report(results, clients, per_client)
        finally:
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
