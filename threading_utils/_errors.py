"""The exception both the streams and the context-carrying threads know about."""

from __future__ import annotations

__all__ = ["StreamClosed"]


class StreamClosed(BaseException):
    """Raised by a callback producer's ``emit`` once the stream's consumer has gone away.

    It derives from :class:`BaseException`, like :class:`GeneratorExit`, so that a library's
    ``except Exception`` between ``emit`` and the producer function (a ``generate()`` loop that
    logs and retries, say) does not swallow it: the function unwinds and the worker is free.
    The bridge catches it when it leaves the producer function, and a
    :class:`~threading_utils.ContextThread` whose target it ends exits quietly; it reaches a
    consumer only if the function lets it escape while that consumer is still there (then it is
    the stream's error: ``emit`` was called after the stream had ended).
    """
