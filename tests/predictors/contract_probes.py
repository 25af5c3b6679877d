"""A fault injected into the output streams of whatever predictor imports this module.

tests/test_contract.py serves `FailingStreams`, a subclass of the predictor under contract test
(the class tests/contract.py names) whose module imports this one first. It is unchanged but for
this: every second output stream it opens through `threading_utils` (`generator_from_thread`,
`generator_from_callback`, `Channel.stream`, and their async forms) raises
`RuntimeError("injected failure after N items")` once it has delivered `FAIL_AFTER` items. The
consumer side raises, so the producer behind it — whatever model the fork serves — is stopped
by the bridge as for any consumer that leaves.

A predictor that returns its output at the end has no stream to break: `fail_results(cls)`
(called on `FailingStreams`) makes every second call of its `run()` (or `predict()`) that
returns no stream raise `RuntimeError("injected failure after the model ran")` once the model
has run. It wraps the method on the instance after `setup()`, as coglet_inputs does, so
coglet's reading of the signature and defaults is unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
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


_calls = itertools.count()
_RESULT_FAILURE = "injected failure after the model ran"


def _failing_result(result: Any) -> Any:
    if isinstance(result, _stream._Stream | Generator | AsyncGenerator):
        return result  # a stream: the injection above breaks it
    if next(_calls) % 2 == 1:
        raise RuntimeError(_RESULT_FAILURE)
    return result


def _wrap_run(predictor: Any) -> None:
    name = "run" if callable(getattr(type(predictor), "run", None)) else "predict"
    method = getattr(predictor, name)
    if inspect.isasyncgenfunction(method):
        return  # yields: a stream of its own, never a result at the end
    if inspect.iscoroutinefunction(method):

        async def async_run(*args: Any, **kwargs: Any) -> Any:
            return _failing_result(await method(*args, **kwargs))

        setattr(predictor, name, functools.wraps(method)(async_run))
        return

    def sync_run(*args: Any, **kwargs: Any) -> Any:
        return _failing_result(method(*args, **kwargs))

    setattr(predictor, name, functools.wraps(method)(sync_run))


def fail_results(cls: type) -> None:
    """Make every second result of `cls`'s run() that is not a stream fail (see above)."""
    setup = cls.__dict__.get("setup") or getattr(cls, "setup", None)
    if setup is None:

        def plain_setup(self: Any) -> None:
            _wrap_run(self)

        cls.setup = plain_setup  # type: ignore[attr-defined]
    elif inspect.iscoroutinefunction(setup):

        async def async_setup(self: Any, *args: Any, **kwargs: Any) -> None:
            await setup(self, *args, **kwargs)
            _wrap_run(self)

        cls.setup = functools.wraps(setup)(async_setup)  # type: ignore[attr-defined]
    else:

        def sync_setup(self: Any, *args: Any, **kwargs: Any) -> None:
            setup(self, *args, **kwargs)
            _wrap_run(self)

        cls.setup = functools.wraps(setup)(sync_setup)  # type: ignore[attr-defined]
