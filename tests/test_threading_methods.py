"""The bridge's four decorators on methods and on functions.

A callback producer's `emit` goes first in a function (`def f(emit, ...)`) and after `self` in a
method (`def m(self, emit, ...)`), as Python binds methods; the generator decorators need
nothing special (`self` is the first argument either way). Static methods and class methods
bind as they do without the decorator.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import collect, request_id

from threading_utils import (
    Emit,
    _stream,
    async_generator_from_callback,
    async_generator_from_thread,
    generator_from_callback,
    generator_from_thread,
    stop_requested,
)


def run_sync_or_async(stream: Any) -> list[Any]:
    if hasattr(stream, "__anext__"):
        return asyncio.run(collect(stream))
    return list(stream)


CALLBACKS = [generator_from_callback, async_generator_from_callback]
GENERATORS = [generator_from_thread, async_generator_from_thread]


class Model:
    """A predictor-like class whose streaming helpers are methods."""

    def __init__(self, step: int) -> None:
        self._step = step

    @generator_from_callback(max_queue_size=2)
    def callback_stream(self, emit: Emit[int], n: int, *, offset: int = 0) -> None:
        for i in range(n):
            emit(offset + i * self._step)

    @async_generator_from_callback(max_queue_size=2)
    def async_callback_stream(self, emit: Emit[int], n: int, *, offset: int = 0) -> None:
        for i in range(n):
            emit(offset + i * self._step)

    @generator_from_thread(max_queue_size=2)
    def thread_stream(self, n: int, *, offset: int = 0) -> Iterator[int]:
        for i in range(n):
            yield offset + i * self._step

    @async_generator_from_thread(max_queue_size=2)
    def async_thread_stream(self, n: int, *, offset: int = 0) -> Iterator[int]:
        for i in range(n):
            yield offset + i * self._step

    @staticmethod
    @generator_from_callback()
    def static_stream(emit: Emit[str], word: str) -> None:
        emit(word)

    @classmethod
    @generator_from_callback()
    def class_stream(cls, emit: Emit[str], word: str) -> None:
        emit(f"{cls.__name__}:{word}")


METHODS = ["callback_stream", "async_callback_stream", "thread_stream", "async_thread_stream"]


@pytest.mark.parametrize("name", METHODS)
def test_a_decorated_method_binds_self_and_the_stream_runs_with_emit_after_it(name):
    model = Model(step=3)
    stream = getattr(model, name)(4, offset=1)
    assert run_sync_or_async(stream) == [1, 4, 7, 10]


@pytest.mark.parametrize("name", METHODS)
def test_a_decorated_method_called_through_its_class_takes_the_instance_first(name):
    stream = getattr(Model, name)(Model(step=2), 3)
    assert run_sync_or_async(stream) == [0, 2, 4]


@pytest.mark.parametrize("name", METHODS)
def test_each_instance_is_its_own_self(name):
    a, b = Model(step=1), Model(step=10)
    assert run_sync_or_async(getattr(a, name)(3)) == [0, 1, 2]
    assert run_sync_or_async(getattr(b, name)(3)) == [0, 10, 20]


def test_static_and_class_methods_bind_as_they_do_without_the_decorator():
    assert list(Model.static_stream("a")) == ["a"]
    assert list(Model(1).static_stream("b")) == ["b"]
    assert list(Model.class_stream("c")) == ["Model:c"]
    assert list(Model(1).class_stream("d")) == ["Model:d"]


@pytest.mark.parametrize("decorator", CALLBACKS)
def test_a_decorated_function_still_gets_emit_first(decorator):
    def count(emit: Emit[int], n: int, *, offset: int = 0) -> None:
        for i in range(n):
            emit(offset + i)

    assert run_sync_or_async(decorator()(count)(3, offset=5)) == [5, 6, 7]


@pytest.mark.parametrize("decorator", GENERATORS)
def test_a_decorated_generator_function_still_works(decorator):
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    assert run_sync_or_async(decorator()(count)(3)) == [0, 1, 2]


def test_a_decorated_function_stored_on_a_class_binds_like_a_plain_function_would():
    def as_method(self: Holder, emit: Emit[str]) -> None:
        emit(self.name)

    class Holder:
        name = "holder"
        stream = generator_from_callback()(as_method)

    assert list(Holder().stream()) == ["holder"]


def test_the_decorated_object_keeps_the_functions_name_and_doc():
    assert Model.callback_stream.__name__ == "callback_stream"
    assert Model.__dict__["callback_stream"].__wrapped__.__qualname__ == ("Model.callback_stream")


def test_a_method_producer_runs_in_the_worker_under_the_callers_context():
    class Reader:
        @generator_from_callback()
        def read(self, emit: Emit[tuple[str, bool]]) -> None:
            emit((request_id.get(), stop_requested()))

    request_id.set("caller")
    assert list(Reader().read()) == [("caller", False)]


def test_a_generator_method_is_refused_by_the_callback_decorators():
    with pytest.raises(TypeError, match="generator function"):

        class Wrong:
            @generator_from_callback()
            def stream(self, emit: Emit[int]) -> Iterator[int]:
                yield 1


# The fault item 3 of the issue reported: a decorator that returns a plain wrapper function.
def _plain_wrapper_decorator(fn: Any) -> Any:
    open_stream = _stream._opener(_stream._CallbackStream, None, 1024, 5.0)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _stream._sync_side(open_stream(fn, args, kwargs))

    return wrapper


def test_with_a_plain_wrapper_a_method_gets_emit_in_self_s_place():
    class Predictor:
        _step = 1

        @_plain_wrapper_decorator
        def stream(self, emit: Emit[int]) -> None:
            emit(self._step)

    with pytest.raises(AttributeError, match="'function' object has no attribute '_step'"):
        list(Predictor().stream())
