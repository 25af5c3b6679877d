"""A fault injected into the output streams of whatever predictor imports this module.

tests/test_contract.py serves `FailingStreams`, a subclass of the predictor under contract test
(the class tests/contract.py names) whose module imports this one first. It is unchanged but for
this: every second output stream it opens through `threading_utils` (`generator_from_thread`,
`generator_from_callback`, `Channel.stream`, and their async forms) raises
`RuntimeError("injected failure after N items")` once it has delivered `FAIL_AFTER` items. The
consumer side raises, so the producer behind it — whatever model the fork serves — is stopped
by the bridge as for any consumer that leaves.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncGenerator, Generator
from typing import Any

from threading_utils import _stream

_FAIL_AFTER = int(os.environ.get("FAIL_AFTER", "3"))
_opened = itertools.count()
_consume_sync = _stream._consume_sync
_consume_async = _stream._consume_async


def _fails(stream: Any) -> bool:
    return next(_opened) % 2 == 1


def _failing_sync(stream: Any) -> Generator[Any, None, None]:
    inner = _consume_sync(stream)
    if not _fails(stream):
        return (yield from inner)
    with contextlib.closing(inner):  # closing it on the way out stops the producer
        for n, item in enumerate(inner):
            if n == _FAIL_AFTER:
                raise RuntimeError(f"injected failure after {n} items")
            yield item
    return None


async def _failing_async(stream: Any) -> AsyncGenerator[Any, None]:
    inner = _consume_async(stream)
    fails = _fails(stream)
    try:
        n = 0
        async for item in inner:
            if fails and n == _FAIL_AFTER:
                raise RuntimeError(f"injected failure after {n} items")
            n += 1
            yield item
    finally:
        await inner.aclose()


_stream._consume_sync = _failing_sync  # type: ignore[assignment]
_stream._consume_async = _failing_async  # type: ignore[assignment]
