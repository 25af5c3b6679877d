"""Read a predictor the way `cog build` does: statically, from the source text, running nothing.

Since cog 0.19 the cog CLI writes `.cog/openapi_schema.json` at build time with a tree-sitter
parser (replicate/cog, `pkg/schema/python/`); the server (coglet) then validates inputs only
against that file. This module follows the parser's rules for what a predictor of this template
writes, so that `make schema` fails where `cog build` would, and knows the bounds it would write:

- `@concurrent(max=...)` takes one keyword argument, an integer literal (annotations.go);
- `Input(ge=, le=, min_length=, max_length=)` survive only when the value's *text* parses as a
  number (Go's `strconv.ParseFloat`, inputs.go `parseNumberLiteral`): a name or an expression is
  dropped without a word, and so is the validation it stood for. ge/le are read as 64-bit floats
  and written by Go's `encoding/json`; lengths are converted to unsigned integers;
- `default=` and `description=` may name a module-level constant assigned a literal;
  `choices=` must resolve statically or the build fails (module_scope.go);
- only `Input`'s keyword arguments are read; `default_factory` fails the build.

    python scripts/cog_static.py predict.py:Predictor

Messages for what `cog build` rejects carry the CLI's own text, after `file:line:`.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import math
import operator
import os
import re
import sys
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

JsonNumber: TypeAlias = int | float

# Input() keyword -> the schema keyword the CLI writes it as (openapi_spec.go)
BOUNDS = {"ge": "minimum", "le": "maximum", "min_length": "minLength", "max_length": "maxLength"}
EXAMPLE = {
    "ge": "ge=0",
    "le": "le=2048",
    "min_length": "min_length=1",
    "max_length": "max_length=65536",
}
MAX_INT64 = 2**63 - 1
MAX_UINT64 = 2**64 - 1
# The return types @streaming accepts (schema_type.go, parser.go).
STREAMING_OUTPUTS = ("Iterator", "AsyncIterator", "ConcatenateIterator", "AsyncConcatenateIterator")
# The iterators whose item may be a BaseModel (schema_type.go resolveGenericSchemaType).
MODEL_ITERATORS = ("Iterator", "AsyncIterator")
# Modules the CLI never reads a parent class from (models.go isKnownExternalModule).
EXTERNAL_MODULES = frozenset(
    {
        *("builtins", "typing", "typing_extensions", "collections", "abc", "enum"),
        *("dataclasses", "os", "sys", "io", "json", "re", "math", "pathlib", "functools"),
        *("itertools", "contextlib", "concurrent", "asyncio", "multiprocessing", "threading"),
        *("logging", "warnings", "unittest", "pytest", "numpy", "torch", "tensorflow", "jax"),
        *("scipy", "sklearn", "transformers", "diffusers", "accelerate", "safetensors", "PIL"),
        *("cv2", "skimage", "requests", "httpx", "aiohttp", "fastapi", "flask", "pydantic"),
        "cog",
    }
)

# The cog CLI's messages, as in its Go source (pkg/schema/python/*.go).
MSG_CONCURRENT_ARGS = "@concurrent only supports literal integer max=... arguments"
MSG_CONCURRENT_LITERAL = "@concurrent max must be an integer literal"
MSG_CONCURRENT_MIN = "@concurrent max must be at least 1"
MSG_CONCURRENT_LARGE = "@concurrent max is too large"
MSG_CONCURRENT_ASYNC = "@concurrent(max > 1) requires an async run() or predict() method"
MSG_STREAMING_OUTPUT = (
    "@streaming requires Iterator[...], AsyncIterator[...], ConcatenateIterator[...] or"
    " AsyncConcatenateIterator[...] return type"
)
MSG_CHOICES = "parameter '{}': choices expression cannot be statically resolved"
MSG_DEFAULT_FACTORY = "parameter '{}': default_factory is not supported in static schema generation"
MSG_DEFAULT_UNRESOLVED = "parameter '{}': default `{}` cannot be statically resolved"
MSG_NO_ANNOTATION = "parameter '{}' on {} has no type annotation"
MSG_UNION_CONSTRAINTS = (
    "unsupported type: constraints and choices are not supported on union inputs"
)
MSG_NO_METHOD = "{} must define run() or predict()"
MSG_LEGACY_PREDICT = "{}.predict() is deprecated; use run() instead"  # after "cog: warning: "


# -- Go's number syntax and JSON rendering -------------------------------------------------------


def _underscore_ok(s: str) -> bool:
    """strconv's underscoreOK: underscores only between digits (or after a base prefix)."""
    saw, i = "^", 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexadecimal = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexadecimal = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if c.isascii() and (c.isdigit() or (hexadecimal and c.lower() in "abcdef")):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_parse_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64): None where Go reports an error."""
    if not text:
        return None
    sign, body = (-1, text[1:]) if text[0] == "-" else (1, text[1:] if text[0] == "+" else text)
    if not body:
        return None
    base, digits = 10, body
    if body[0] == "0":
        prefix = body[1:2].lower()
        if len(body) >= 3 and prefix in ("b", "o", "x"):
            base, digits = {"b": 2, "o": 8, "x": 16}[prefix], body[2:]
        else:
            base, digits = 8, body[1:]
    value = 0
    for c in digits:
        if c == "_":
            continue
        try:
            d = int(c, 36)
        except ValueError:
            return None
        if d >= base:
            return None
        value = value * base + d
    if "_" in body and not _underscore_ok(body):
        return None
    value *= sign
    return value if -(2**63) <= value <= MAX_INT64 else None


def _special(s: str) -> tuple[float, int] | None:
    """strconv's special(): inf, infinity (signed) and nan, ignoring case."""
    if not s:
        return None
    sign, nsign, rest = 1.0, 0, s
    if s[0] in "+-":
        sign, nsign, rest = (-1.0 if s[0] == "-" else 1.0), 1, s[1:]
    elif s[0] in "nN":
        return (math.nan, 3) if s[:3].lower() == "nan" else None
    elif s[0] not in "iI":
        return None
    n = 0
    for a, b in zip(rest.lower(), "infinity", strict=False):
        if a != b:
            break
        n += 1
    if 3 < n < 8:
        n = 3
    return (math.copysign(math.inf, sign), nsign + n) if n in (3, 8) else None


def _read_float(s: str) -> tuple[int, bool] | None:
    """strconv's readFloat syntax: (characters consumed, hexadecimal) or None."""
    i, n, underscores = 0, len(s), False
    if i < n and s[i] in "+-":
        i += 1
    hexadecimal = i + 2 < n and s[i] == "0" and s[i + 1].lower() == "x"
    if hexadecimal:
        i += 2
    exp_char = "p" if hexadecimal else "e"
    saw_dot = saw_digits = False
    while i < n:
        c = s[i]
        if c == "_":
            underscores = True
        elif c == ".":
            if saw_dot:
                break
            saw_dot = True
        elif "0" <= c <= "9" or (hexadecimal and c.lower() in "abcdef"):
            saw_digits = True
        else:
            break
        i += 1
    if not saw_digits:
        return None
    if i < n and s[i].lower() == exp_char:
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        if i >= n or not "0" <= s[i] <= "9":
            return None
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            underscores = underscores or s[i] == "_"
            i += 1
    elif hexadecimal:
        return None  # a hexadecimal mantissa must have a 'p' exponent
    if underscores and not _underscore_ok(s[:i]):
        return None
    return i, hexadecimal


def go_parse_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64): the float64 Go reads, or None where Go reports an error."""
    special = _special(text)
    if special is not None:
        return special[0] if special[1] == len(text) else None
    read = _read_float(text)
    if read is None or read[0] != len(text):
        return None
    clean = text.replace("_", "")
    try:
        value = float.fromhex(clean) if read[1] else float(clean)
    except (OverflowError, ValueError):
        return None
    return None if math.isinf(value) else value  # out of range: ErrRange


def _shortest_digits(value: float) -> tuple[str, str, int]:
    """(sign, digits, point) of a finite nonzero float64's shortest round-trip decimal form.

    The value is `sign` 0.`digits` x 10**`point`: the decimal point sits after `point` digits.
    """
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    return sign, "".join(map(str, digit_tuple)), len(digit_tuple) + exponent


def go_json_number(value: float) -> str:
    """The text Go's encoding/json writes for a float64 (ES6 number formatting)."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {_go_g(value)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, point = _shortest_digits(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = point - 1
        return f"{sign}{mantissa}e{'-' if e < 0 else '+'}{abs(e):d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_g(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def go_format_g(value: float) -> str:
    """fmt's %v / %g for a float64: shortest digits, exponent form below 1e-4 or from 1e6."""
    if not math.isfinite(value):
        return _go_g(value)
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, point = _shortest_digits(value)
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return sign + go_json_number(abs(value))


def cli_number(value: float) -> JsonNumber:
    """The JSON value the CLI writes for a float64 bound (an int when Go prints no point)."""
    number: JsonNumber = json.loads(go_json_number(value))
    return number


def exact_bound(value: Decimal, keyword: str) -> str:
    """The number nearest `value` (below for le, above for ge) the CLI writes without change."""
    if not math.isfinite(float(value)):
        return str(value)
    f = float(value)
    toward = -math.inf if keyword == "le" else math.inf
    while True:
        text = go_json_number(f)
        written = Decimal(text)
        if written == value or (written < value if keyword == "le" else written > value):
            return text
        f = math.nextafter(f, toward)


# -- Go's regexp syntax (RE2), as kin-openapi compiles a schema's pattern ------------------------

_RE2_FLAGS = frozenset("imsU")
_RE2_LETTER_ESCAPES = frozenset("afnrtvdDsSwWbBAzpPQEx")
_MAX_REPEAT = 1000


def re2_error(pattern: str) -> str | None:
    """The error Go's regexp.Compile gives for `pattern` (regexp/syntax parse.go), or None.

    Covers what Python's `re` accepts and RE2 does not: lookaround, backreferences, atomic and
    conditional groups, comments, flags other than imsU, possessive or stacked repetition,
    escapes RE2 lacks (\\Z, \\G, lowercase \\u...), repeat counts over 1000; and unbalanced
    parentheses and brackets. kin-openapi first rewrites \\uXXXX (uppercase hex) to \\x{XXXX}
    (schema_pattern.go intoGoRegexp).
    """
    p = re.sub(r"\\u([0-9A-F]{4})", r"\\x{\1}", pattern)

    def err(code: str, expr: str) -> str:
        return f"error parsing regexp: {code}: `{expr}`"

    i, n, depth = 0, len(p), 0
    can_repeat = False  # whether the last item can take a repetition operator
    last_repeat = -1  # start of the repetition operator just read, if any
    while i < n:
        c = p[i]
        if c == "\\":
            bad = _re2_escape(p, i)
            if bad is not None:
                return bad
            i, can_repeat, last_repeat = _re2_escape_end(p, i), True, -1
            continue
        if c == "[":
            end = _re2_class_end(p, i)
            if isinstance(end, str):
                return end
            i, can_repeat, last_repeat = end, True, -1
            continue
        if c == "(":
            if p.startswith("(?", i):
                if p.startswith(("(?P<", "(?<"), i):
                    close = p.find(">", i)
                    name = p[p.index("<", i) + 1 : close] if close >= 0 else ""
                    if close < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                        return err("invalid named capture", p[i : close + 1 if close >= 0 else n])
                    i = close + 1
                else:
                    j = i + 2
                    while j < n and (p[j] in _RE2_FLAGS or p[j] == "-"):
                        j += 1
                    if j >= n or p[j] not in ":)":
                        return err("invalid or unsupported Perl syntax", p[i : j + 1])
                    if p[j] == ")":
                        i, can_repeat, last_repeat = j + 1, False, -1
                        continue
                    i = j + 1
            else:
                i += 1
            depth += 1
            can_repeat, last_repeat = False, -1
            continue
        if c == ")":
            if depth == 0:
                return err("unexpected )", p)
            depth -= 1
            i, can_repeat, last_repeat = i + 1, True, -1
            continue
        if c in "*+?" or (c == "{" and re.match(r"\{(\d+)(,(\d*))?\}", p[i:])):
            m = re.match(r"\{(\d+)(,(\d*))?\}", p[i:]) if c == "{" else None
            end = i + (m.end() if m else 1)
            if end < n and p[end] == "?":
                end += 1  # non-greedy
            if last_repeat >= 0:
                return err("invalid nested repetition operator", p[last_repeat:end])
            if not can_repeat:
                return err("missing argument to repetition operator", p[i:end])
            if m:
                low, high = int(m.group(1)), m.group(3)
                top = low if m.group(2) is None else (int(high) if high else -1)
                if low > _MAX_REPEAT or top > _MAX_REPEAT or (top >= 0 and top < low):
                    return err("invalid repeat count", p[i : i + m.end()])
            last_repeat, i = i, end
            continue
        can_repeat = c not in "|^$"
        last_repeat = -1
        i += 1
    return err("missing closing )", p) if depth else None


def _re2_escape(p: str, i: int) -> str | None:
    """The error for the escape at p[i] ("\\"), or None (parse.go parseEscape)."""
    if i + 1 >= len(p):
        return "error parsing regexp: trailing backslash at end of expression: ``"
    c = p[i + 1]
    if not c.isascii() or not c.isalnum():
        return None
    if c in "01234567":
        if c != "0" and not (i + 2 < len(p) and p[i + 2] in "01234567"):
            return f"error parsing regexp: invalid escape sequence: `\\{c}`"  # backreference
        return None
    if c == "x":
        if re.match(r"\\x(\{[0-9A-Fa-f]+\}|[0-9A-Fa-f]{2})", p[i:]):
            return None
        return f"error parsing regexp: invalid escape sequence: `{p[i : i + 4]}`"
    if c in _RE2_LETTER_ESCAPES:
        return None
    return f"error parsing regexp: invalid escape sequence: `\\{c}`"


def _re2_escape_end(p: str, i: int) -> int:
    c = p[i + 1]
    if c == "Q":
        end = p.find("\\E", i + 2)
        return len(p) if end < 0 else end + 2
    if c in "pP" and i + 2 < len(p) and p[i + 2] == "{":
        end = p.find("}", i)
        return len(p) if end < 0 else end + 1
    if c == "x":
        m = re.match(r"\\x(\{[0-9A-Fa-f]+\}|[0-9A-Fa-f]{2})", p[i:])
        return i + (m.end() if m else 2)
    if c in "01234567":
        m = re.match(r"\\[0-7]{1,3}", p[i:])
        return i + (m.end() if m else 2)
    return i + (3 if c in "pP" else 2)


def _re2_class_end(p: str, i: int) -> int | str:
    """The end of the character class at p[i] ("["), or the error (parse.go parseClass)."""
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1  # a leading ] is a literal
    while j < len(p) and p[j] != "]":
        if p.startswith("[:", j):
            close = p.find(":]", j + 2)
            if close >= 0:
                j = close + 2
                continue
        if p[j] == "\\":
            bad = _re2_escape(p, j)
            if bad is not None:
                return bad
            j = _re2_escape_end(p, j)
            continue
        j += 1
    if j >= len(p):
        return f"error parsing regexp: missing closing ]: `{p[i:]}`"
    return j + 1


# -- the source as tree-sitter sees it -------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing `cog build` rejects, drops or warns about, at a line of a file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class StaticCheckError(ValueError):
    """`cog build` would fail on this predictor, or write a schema that drops something."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.path, p.line)))
        super().__init__("\n".join(map(str, self.problems)))


class _Source:
    """A parsed file with byte offsets, comment positions and tree-sitter-like node texts."""

    def __init__(self, text: str, display: str, rel: str) -> None:
        self.display = display  # the path in messages
        self.rel = rel  # relative to the project root, for relative imports
        self.data = text.encode()
        self.tree = ast.parse(text, filename=display)
        self.line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        lines = text.splitlines(keepends=True)
        self.comment = bytearray(len(self.data))
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                start = self.line_starts[row - 1] + len(lines[row - 1][:col].encode())
                end = start + len(tok.string.encode())
                self.comment[start:end] = b"\x01" * (end - start)
        self.comments = [
            i
            for i in range(len(self.data))
            if self.comment[i] and not (i > 0 and self.comment[i - 1])
        ]

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def span(self, node: ast.expr | ast.keyword | ast.stmt | ast.arg) -> tuple[int, int]:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode()

    def _skip(self, i: int, step: int) -> int:
        """From byte i, skip whitespace, comments and line continuations in direction step."""
        n = len(self.data)
        while 0 <= i < n:
            c = self.data[i]
            if self.comment[i] or c in b" \t\r\n\f\\":
                i += step
            else:
                return i
        return i

    def outer(self, node: ast.expr, own_paren: int | None = None) -> tuple[int, int]:
        """The span of `node` with the parentheses around it (tree-sitter keeps them).

        `own_paren` is the offset of an enclosing construct's own "(" (a call's argument list,
        a parenthesized tuple), which does not wrap the node.
        """
        start, end = self.span(node)
        while True:
            before, after = self._skip(start - 1, -1), self._skip(end, 1)
            if (
                before < 0
                or after >= len(self.data)
                or before == own_paren
                or self.data[before] != ord("(")
                or self.data[after] != ord(")")
            ):
                return start, end
            start, end = before, after + 1

    def node_text(self, node: ast.expr, own_paren: int | None = None) -> str:
        return self.text(*self.outer(node, own_paren))

    def wrapped(self, node: ast.expr, own_paren: int | None = None) -> bool:
        return self.outer(node, own_paren) != self.span(node)

    def bare_comments(self, start: int, end: int, parts: Sequence[tuple[int, int]]) -> bool:
        """True if a comment lies in [start, end) outside every span in `parts`."""
        return any(
            start <= c < end and not any(a <= c < b for a, b in parts) for c in self.comments
        )

    def first_paren_before(self, node: ast.expr) -> int | None:
        """The outermost of the "(" right before `node` (an argument list's own, if any)."""
        found, i = None, self._skip(self.span(node)[0] - 1, -1)
        while i >= 0 and self.data[i] == ord("("):
            found, i = i, self._skip(i - 1, -1)
        return found

    def call_paren(self, call: ast.Call) -> int:
        """The offset of a call's own "(" (after its function expression)."""
        return self._skip(self.span(call.func)[1], 1)


@dataclass(frozen=True)
class _Value:
    """A schema.DefaultValue: what parseDefaultValue reads from a literal."""

    kind: str  # none, bool, int, float, str, list, dict, set
    value: object = None
    items: tuple[_Value, ...] = ()
    keys: tuple[_Value, ...] = ()

    def to_json(self) -> Any:
        """DefaultValue.ToJSON (pkg/schema/types.go): the value the CLI writes."""
        if self.kind == "float":
            assert isinstance(self.value, float)
            return cli_number(self.value)
        if self.kind in ("list", "set"):
            return [item.to_json() for item in self.items]
        if self.kind == "dict":
            return {_go_key(k): v.to_json() for k, v in zip(self.keys, self.items, strict=True)}
        return None if self.kind == "none" else self.value


def _go_key(key: _Value) -> str:
    """A dict key as ToJSON spells it: a string as is, anything else through fmt's %v."""
    if key.kind == "str":
        assert isinstance(key.value, str)
        return key.value
    if key.kind == "bool":
        return "true" if key.value else "false"
    if key.kind == "float":
        assert isinstance(key.value, float)
        return go_format_g(key.value)
    return "<nil>" if key.kind == "none" else str(key.value)


def _default_value(src: _Source, node: ast.expr, own_paren: int | None = None) -> _Value | None:
    """parseDefaultValue (literals.go) on the node's tree-sitter text and type."""
    if src.wrapped(node, own_paren):
        return None  # a parenthesized_expression: no case for it
    text = src.text(*src.span(node))
    if isinstance(node, ast.Constant):
        if node.value is None:
            return _Value("none")
        if isinstance(node.value, bool):
            return _Value("bool", node.value)
        if isinstance(node.value, int):
            parsed = go_parse_int(text)
            return None if parsed is None else _Value("int", parsed)
        if isinstance(node.value, float):
            number = go_parse_float(text)
            return None if number is None else _Value("float", number)
        if isinstance(node.value, str):
            s = _string_literal(text)
            return None if s is None else _Value("str", s)
        return None
    if isinstance(node, ast.JoinedStr):
        return None
    if isinstance(node, ast.List | ast.Set):
        items = _all_items(src, node, node.elts)
        if items is None:
            return None
        return _Value("list" if isinstance(node, ast.List) else "set", items=items)
    if isinstance(node, ast.Dict):
        keys: list[_Value] = []
        values: list[_Value] = []
        for k, v in zip(node.keys, node.values, strict=True):
            key = None if k is None else _default_value(src, k)
            value = _default_value(src, v)
            if key is not None and value is not None:  # pairs that do not parse are skipped
                keys.append(key)
                values.append(value)
        return _Value("dict", items=tuple(values), keys=tuple(keys))
    if isinstance(node, ast.Tuple):
        start = src.span(node)[0]
        if src.data[start] != ord("("):
            return None  # an expression_list, not a tuple
        elements = (_default_value(src, e, own_paren=start) for e in node.elts)
        return _Value("list", items=tuple(v for v in elements if v is not None))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Invert):
        stripped = text.strip()
        integer = go_parse_int(stripped)
        if integer is not None:
            return _Value("int", integer)
        number = go_parse_float(stripped)
        return None if number is None else _Value("float", number)
    return None


def _all_items(src: _Source, node: ast.expr, elts: Sequence[ast.expr]) -> tuple[_Value, ...] | None:
    """A list's or set's items, or None if one does not parse (a comment counts as one)."""
    start, end = src.span(node)
    if src.bare_comments(start, end, [src.outer(e) for e in elts]):
        return None
    items = []
    for e in elts:
        value = _default_value(src, e)
        if value is None:
            return None
        items.append(value)
    return tuple(items)


def _string_literal(text: str) -> str | None:
    """parseStringLiteral (literals.go): quotes stripped, escapes left as written."""
    if text.startswith(('"""', "'''")):
        return text[3:-3] if len(text) >= 6 else None
    if text.startswith(('"', "'")):
        return text[1:-1] if len(text) >= 2 else None
    if text.startswith(('r"', "r'")):
        return text[2:-1] if len(text) >= 3 else None
    return None


def _number_literal(src: _Source, node: ast.expr, own_paren: int | None = None) -> float | None:
    """parseNumberLiteral (literals.go): the node's text through strconv.ParseFloat."""
    return go_parse_float(src.node_text(node, own_paren).strip())


@dataclass
class _Module:
    """One file as the CLI reads it: imports, module scope, classes and Input() registry."""

    src: _Source
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local -> (module, name)
    scope: dict[str, _Value] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)

    @classmethod
    def read(cls, src: _Source) -> _Module:
        module = cls(src)
        for stmt in src.tree.body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    module.imports[alias.asname or alias.name] = (alias.name, alias.name)
            elif isinstance(stmt, ast.ImportFrom):
                name = "." * stmt.level + (stmt.module or "")
                for alias in stmt.names:
                    module.imports[alias.asname or alias.name] = (name, alias.name)
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
                single = not isinstance(stmt, ast.Assign) or len(stmt.targets) == 1
                if single and isinstance(target, ast.Name) and stmt.value is not None:
                    value = _default_value(src, stmt.value)
                    if value is not None:
                        module.scope[target.id] = value
            elif isinstance(stmt, ast.ClassDef):
                module.classes.setdefault(stmt.name, stmt)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions.setdefault(stmt.name, stmt)
        for builtin in ("str", "int", "float", "bool", "list", "dict", "set", "None"):
            module.imports.setdefault(builtin, ("builtins", builtin))
        return module

    def is_cog(self, node: ast.expr, name: str) -> bool:
        """`name` from cog: `from cog import name [as x]` or `import cog [as c]` + `c.name`."""
        text = self.src.node_text(node)
        if isinstance(node, ast.Name):
            return self.imports.get(text) == ("cog", name)
        if isinstance(node, ast.Attribute):
            base, _, attr = text.partition(".")
            return attr == name and self.imports.get(base) == ("cog", "cog")
        return False

    def is_input_call(self, node: ast.expr) -> bool:
        """isInputCall (inputs.go): a call of `Input` or of cog's Input under another name."""
        if not isinstance(node, ast.Call) or self.src.wrapped(node):
            return False
        name = self.src.node_text(node.func)
        return name == "Input" or self.imports.get(name) == ("cog", "Input")


_Function: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef
_Target: TypeAlias = tuple[_Module, _Function]  # the file and its run()/predict()


# -- the checker ----------------------------------------------------------------------------------


@dataclass
class StaticInput:
    """One input as the CLI reads it."""

    name: str
    line: int
    bounds: dict[str, JsonNumber] = field(default_factory=dict)  # schema keyword -> value
    # The other keywords the CLI writes from the source: default (None: Python's None),
    # description, pattern, enum (choices), deprecated, x-cog-accept (openapi_spec.go).
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class StaticPredictor:
    """What `cog build` reads from the predictor: the values it writes into the image."""

    path: str  # the file holding the run()/predict() it reads
    name: str
    method: str
    line: int
    is_async: bool
    streaming: bool
    concurrency_max: int | None
    inputs: dict[str, StaticInput]
    warnings: list[Problem]
    # Fields of the output BaseModel with a literal default: not required (schema_type.go).
    output_defaults: frozenset[str] = frozenset()


class _Checker:
    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._modules: dict[Path, _Module] = {}

    # -- reporting --

    def fail(self, src: _Source, line: int, message: str) -> None:
        self.problems.append(Problem(src.display, line, message))

    def warn(self, src: _Source, line: int, message: str) -> None:
        self.warnings.append(Problem(src.display, line, message))

    # -- files --

    def load(self, path: Path, display: str, rel: str) -> _Module:
        key = path.resolve()
        if key not in self._modules:
            self._modules[key] = _Module.read(_Source(path.read_text(), display, rel))
        return self._modules[key]

    def load_module(self, module: str, importer: _Module) -> _Module | None:
        """loadPythonFileContext (target.go): a project file for a module name, if any."""
        top = module.split(".")[0].lstrip(".")
        if top in EXTERNAL_MODULES:
            return None
        level = len(module) - len(module.lstrip("."))
        parts = module.lstrip(".").split(".")
        if not parts[0]:
            return None
        if level:
            base = Path(importer.src.rel).parent
            for _ in range(level - 1):
                base = base.parent
            rel = base.joinpath(*parts).with_suffix(".py")
        else:
            rel = Path(*parts).with_suffix(".py")
        for root in self.roots:
            candidate = root / rel
            if candidate.is_file():
                return self.load(candidate, _display(candidate), str(rel))
        return None

    # -- the target --

    def find_target(self, module: _Module, name: str) -> _Target | None:
        """findTargetCallableNode (target.go): run() before predict(), inherited ones too."""
        cls = module.classes.get(name)
        if cls is not None:
            run, predict = self._methods(module, cls, set())
            if run is not None:
                return run
            if predict is not None:
                self.warn(module.src, predict[1].lineno, MSG_LEGACY_PREDICT.format(name))
                return predict
            self.fail(module.src, cls.lineno, MSG_NO_METHOD.format(name))
            return None
        for candidate in (name, "predict"):
            if candidate in module.functions:
                return module, module.functions[candidate]
        self.fail(module.src, 1, f"predictor not found: {name}")
        return None

    def _methods(
        self, module: _Module, cls: ast.ClassDef, seen: set[tuple[int, str]]
    ) -> tuple[_Target | None, _Target | None]:
        key = (id(module), cls.name)
        if key in seen:
            return None, None
        seen.add(key)
        run: _Target | None = None
        predict: _Target | None = None
        for stmt in cls.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                if stmt.name == "run":
                    run = (module, stmt)
                elif stmt.name == "predict":
                    predict = (module, stmt)
        src = module.src
        for base in cls.bases:  # classParentNames: identifiers and attributes, unparenthesized
            if not isinstance(base, ast.Name | ast.Attribute):
                continue
            if src.wrapped(base, src.first_paren_before(base)):
                continue
            parent = self._parent(module, src.text(*src.span(base)))
            if parent is None:
                continue
            parent_run, parent_predict = self._methods(*parent, seen)
            run = run or parent_run
            predict = predict or parent_predict
        return run, predict

    def _parent(self, module: _Module, text: str) -> tuple[_Module, ast.ClassDef] | None:
        if text in module.classes:
            return module, module.classes[text]
        head, dot, tail = text.partition(".")
        entry = module.imports.get(head)
        if entry is None:
            return None
        imported, original = entry
        class_name = tail if dot else original
        loaded = self.load_module(imported, module)
        if loaded is None:
            nested = "." + original if imported == "." else f"{imported}.{original}"
            loaded = self.load_module(nested, module)
        if loaded is None or class_name not in loaded.classes:
            return None
        return loaded, loaded.classes[class_name]

    # -- decorators --

    def concurrency(self, module: _Module, fn: _Function) -> int | None:
        """functionConcurrencyMax (annotations.go), reporting the CLI's errors."""
        src = module.src
        for decorator in fn.decorator_list:
            expr = decorator.func if isinstance(decorator, ast.Call) else decorator
            if not module.is_cog(expr, "concurrent"):
                continue
            if not isinstance(decorator, ast.Call):
                return 1
            args: list[ast.expr | ast.keyword] = [*decorator.args, *decorator.keywords]
            end = src.span(decorator)[1]
            parts = [src.outer(a) if isinstance(a, ast.expr) else src.span(a) for a in args]
            commented = src.bare_comments(src.call_paren(decorator), end, parts)
            if not args and not commented:
                return 1
            keyword = decorator.keywords[0] if decorator.keywords else None
            if len(args) != 1 or commented or keyword is None or keyword.arg != "max":
                self.fail(src, decorator.lineno, MSG_CONCURRENT_ARGS)
                return None
            value = _default_value(src, keyword.value)
            if value is None or value.kind != "int":
                hint = self._literal_hint(module, keyword.value, "@concurrent(max={})")
                self.fail(src, decorator.lineno, MSG_CONCURRENT_LITERAL + hint)
                return None
            assert isinstance(value.value, int)
            if value.value < 1:
                self.fail(src, decorator.lineno, MSG_CONCURRENT_MIN)
                return None
            if value.value > MAX_INT64:
                self.fail(src, decorator.lineno, MSG_CONCURRENT_LARGE)
                return None
            return value.value
        return None

    def _literal_hint(self, module: _Module, node: ast.expr, pattern: str) -> str:
        value = _evaluate(module, node)
        if value is not None and value == value.to_integral_value():
            return f"; write the number itself, e.g. {pattern.format(int(value))}"
        return ""

    def streaming(self, module: _Module, fn: _Function) -> bool:
        """functionSupportsStreaming (annotations.go) and its output-type check (parser.go)."""
        marked = any(
            module.is_cog(d.func if isinstance(d, ast.Call) else d, "streaming")
            for d in fn.decorator_list
        )
        if marked and not _is_streaming_output(module, fn.returns):
            self.fail(module.src, fn.lineno, MSG_STREAMING_OUTPUT)
        return marked

    def output_defaults(self, module: _Module, fn: _Function) -> frozenset[str]:
        """The output BaseModel's fields with a literal default (models.go
        parseAnnotatedAssignment): resolveModelToSchemaType (schema_type.go) leaves them out of
        `required`. The model is the return type or an `Iterator[...]`/`AsyncIterator[...]`'s
        item (resolveGenericSchemaType resolves it the same way)."""
        returns = fn.returns
        if isinstance(returns, ast.Subscript) and _outer_name(module, returns) in MODEL_ITERATORS:
            returns = returns.slice
        if not isinstance(returns, ast.Name | ast.Attribute) or module.src.wrapped(returns):
            return frozenset()
        found = self._parent(module, module.src.node_text(returns))
        if found is None:
            return frozenset()
        owner, cls = found
        return frozenset(
            stmt.target.id
            for stmt in cls.body
            if isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
            and _default_value(owner.src, stmt.value) is not None
        )

    # -- inputs --

    def inputs(self, module: _Module, fn: _Function) -> dict[str, StaticInput]:
        """extractInputs (inputs.go): typed parameters; Input() keywords as the CLI reads them."""
        src = module.src
        inputs: dict[str, StaticInput] = {}
        a = fn.args
        positional = [*a.posonlyargs, *a.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
        params = [
            *zip(positional, [*defaults, *a.defaults], strict=True),
            *zip(a.kwonlyargs, a.kw_defaults, strict=True),
        ]
        for arg, default in params:
            if arg.annotation is None:
                if default is not None:
                    self.fail(src, arg.lineno, MSG_NO_ANNOTATION.format(arg.arg, fn.name))
                continue  # an untyped parameter without a default is not an input
            item = StaticInput(arg.arg, arg.lineno)
            inputs[arg.arg] = item
            if default is None:
                continue
            if module.is_input_call(default):
                assert isinstance(default, ast.Call)
                keywords = self.input_call(module, default, arg.arg)
            else:
                keywords = self.input_reference(module, default, arg.arg)
                if keywords is None:
                    plain = self._default_expr(module, default)
                    if plain is None:
                        text = src.node_text(default)
                        self.fail(src, arg.lineno, MSG_DEFAULT_UNRESOLVED.format(arg.arg, text))
                    else:
                        self._check_text(module, default, "default", arg.arg)
                        keywords = {"default": plain.to_json()}
            keywords = keywords or {}
            bound_keys = BOUNDS.values()
            item.bounds = {k: v for k, v in keywords.items() if k in bound_keys}
            item.values = {k: v for k, v in keywords.items() if k not in bound_keys}
            constrained = item.bounds or {"enum", "pattern"} & item.values.keys()
            if constrained and _is_union(arg.annotation):
                self.fail(src, arg.lineno, MSG_UNION_CONSTRAINTS)
        return inputs

    def _default_expr(self, module: _Module, node: ast.expr) -> _Value | None:
        """resolveDefaultExpr (module_scope.go): a literal, or a module constant's literal."""
        value = _default_value(module.src, node)
        if value is None and isinstance(node, ast.Name) and not module.src.wrapped(node):
            value = module.scope.get(node.id)
        return value

    def input_call(
        self,
        module: _Module,
        call: ast.Call,
        param: str,
        overridden: frozenset[str] = frozenset(),
    ) -> dict[str, Any] | None:
        """parseInputCall (inputs.go): the schema keywords it writes (bounds as schema keywords,
        default, description, pattern, enum, deprecated, x-cog-accept); what it drops, rejects
        or writes other than Python reads it reported.

        None where the CLI's error ends the build. Keywords in `overridden` are set at the call
        site of an Input()-returning method instead (see input_reference).
        """
        src = module.src
        bounds: dict[str, Any] = {}
        for positional in call.args:
            text = src.node_text(positional, src.call_paren(call))
            self.fail(
                src,
                positional.lineno,
                f"{param}: cog build drops the positional argument {text} of Input() (it reads"
                f" keyword arguments only); write default={text}",
            )
        for keyword in call.keywords:
            kw, value, line = keyword.arg, keyword.value, keyword.lineno
            if kw is None or kw in overridden:
                continue  # **kwargs is not a keyword_argument
            text = src.node_text(value).strip()
            if kw == "default":
                default = self._default_expr(module, value)
                if default is None:
                    self._drop_default(module, value, param)
                else:
                    self._check_text(module, value, kw, param)
                    bounds["default"] = default.to_json()
            elif kw == "default_factory":
                self.fail(src, line, MSG_DEFAULT_FACTORY.format(param))
                return None
            elif kw == "description":
                description = self._string_expr(module, value)
                if description is None:
                    self.warn(src, line, f"{param}: cog build drops description={text}")
                else:
                    self._check_text(module, value, kw, param, fatal=False)
                    bounds["description"] = description
            elif kw in BOUNDS:
                number = self._bound(module, value, kw, param)
                if number is not None:
                    bounds[BOUNDS[kw]] = number
            elif kw in ("regex", "accept"):
                literal = _string_literal(text)
                if literal is None:
                    self.fail(
                        src,
                        line,
                        f"{param}: cog build drops {kw}={text} (only string literals survive in"
                        " the schema); write the string itself",
                    )
                else:
                    self._check_text(module, value, kw, param)
                    bounds["pattern" if kw == "regex" else "x-cog-accept"] = literal
            elif kw == "choices":
                choices = self._choices(module, value)
                if choices is None:
                    self.fail(src, line, MSG_CHOICES.format(param))
                    return None
                self._check_text(module, value, kw, param)
                if choices:  # an empty list writes no enum (len(field.Choices) > 0)
                    bounds["enum"] = [choice.to_json() for choice in choices]
            elif kw == "deprecated":
                if text in ("True", "False"):
                    bounds["deprecated"] = text == "True"
                else:
                    self.warn(src, line, f"{param}: cog build drops deprecated={text}")
        return bounds

    def _string_expr(self, module: _Module, node: ast.expr) -> str | None:
        """resolveStringExpr (module_scope.go): a string literal's text, or a module constant's.

        An f-string is neither: the CLI drops it.
        """
        src = module.src
        literal = _string_literal(src.node_text(node).strip())
        if literal is not None:
            return literal
        if isinstance(node, ast.Name) and not src.wrapped(node):
            value = module.scope.get(node.id)
            if value is not None and value.kind == "str":
                assert isinstance(value.value, str)
                return value.value
        return None

    def _check_text(
        self, module: _Module, node: ast.expr, kw: str, param: str, *, fatal: bool = True
    ) -> None:
        """Report each string literal in `node` whose text the CLI keeps other than Python reads.

        parseStringLiteral (literals.go) strips the quotes and nothing else: escapes stay as
        written, adjacent literals keep the quotes between them, r'''...''' keeps two quotes.
        """
        report = self.fail if fatal else self.warn
        for literal, cli, python in _text_mismatches(module, node):
            src = module.src
            written = src.text(*src.span(literal))
            instead = _literal_for(python)
            hint = (
                f"write {instead} instead of {written}"
                if instead is not None
                else "write it without escapes or adjacent literals"
            )
            report(
                src,
                literal.lineno,
                f"{param}: cog build writes {kw}'s {written} as {json.dumps(cli)}, not the"
                f" {json.dumps(python)} Python reads (it keeps a string literal's text as"
                f" written); {hint}",
            )

    def _drop_default(self, module: _Module, value: ast.expr, param: str) -> None:
        self.fail(
            module.src,
            value.lineno,
            f"{param}: cog build drops default={module.src.node_text(value).strip()} (only"
            " literals and module-level constants assigned a literal survive in the schema);"
            " write the value itself" + _example(_evaluate(module, value), "default"),
        )

    def _bound(
        self, module: _Module, node: ast.expr, kw: str, param: str, own_paren: int | None = None
    ) -> JsonNumber | None:
        """One ge/le/min_length/max_length: the value the CLI writes, or a reported problem."""
        src = module.src
        text, line = src.node_text(node, own_paren).strip(), node.lineno
        number = _number_literal(src, node, own_paren)
        if number is None:
            self.fail(
                src,
                line,
                f"{param}: cog build drops {kw}={text} (only number literals survive in the"
                " schema); write the number itself" + _example(_evaluate(module, node), kw),
            )
            return None
        if kw in ("min_length", "max_length"):
            if not (number.is_integer() and 0 <= number <= MAX_UINT64):
                self.fail(
                    src,
                    line,
                    f"{param}: cog build writes {kw}={text} as an unsigned 64-bit integer, which"
                    " this is not; write a whole number from 0 up",
                )
                return None
            return int(number)
        if not math.isfinite(number):
            self.fail(src, line, f"json: unsupported value: {_go_g(number)}")
            return None
        written = go_json_number(number)
        exact = _exact_decimal(text)
        if exact is not None and Decimal(written) != exact:
            self.warn(
                src,
                line,
                f"{param}: cog build writes {kw}={text} as {written} (it reads bounds as 64-bit"
                f" floats); write {kw}={exact_bound(exact, kw)} to keep the bound exact",
            )
        return cli_number(number)

    def _choices(self, module: _Module, node: ast.expr) -> tuple[_Value, ...] | None:
        """parseListLiteral, then resolveChoicesExpr (module_scope.go)."""
        src = module.src
        if src.wrapped(node):
            return None
        if isinstance(node, ast.List):
            return _all_items(src, node, node.elts)
        if isinstance(node, ast.Name):
            value = module.scope.get(node.id)
            return value.items if value is not None and value.kind == "list" else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._choices(module, node.left), self._choices(module, node.right)
            return None if left is None or right is None else left + right
        if isinstance(node, ast.Call) and src.node_text(node.func) == "list" and node.args:
            inner = node.args[0]
            if (
                isinstance(inner, ast.Call)
                and not src.wrapped(inner, src.call_paren(node))
                and isinstance(inner.func, ast.Attribute)
                and isinstance(inner.func.value, ast.Name)
                and inner.func.attr in ("keys", "values")
            ):
                value = module.scope.get(inner.func.value.id)
                if value is not None and value.kind == "dict":
                    return value.keys if inner.func.attr == "keys" else value.items
        return None

    def input_reference(self, module: _Module, node: ast.expr, param: str) -> dict[str, Any] | None:
        """resolveInputReference (inputs.go): `Class.attr` or `Class.method(...)` of Input()s.

        A method's call site overrides default, description, ge and le, by parameter name.
        """
        src = module.src
        if src.wrapped(node):
            return None
        func = node.func if isinstance(node, ast.Call) else node
        if not isinstance(func, ast.Attribute):
            return None
        head, _, attr = src.node_text(func).partition(".")
        found = self._registered(module, head, attr)
        if isinstance(found, ast.Call):
            return None if isinstance(node, ast.Call) else self._registry_call(module, found, param)
        if found is None or not isinstance(node, ast.Call):
            return None
        method, call = found
        names = [
            a.arg
            for a in (*method.args.posonlyargs, *method.args.args, *method.args.kwonlyargs)
            if a.arg not in ("self", "cls")
        ]
        paren = src.call_paren(node)
        values = {
            **dict(zip(names, node.args, strict=False)),
            **{k.arg: k.value for k in node.keywords if k.arg is not None},
        }
        overrides = {k: v for k, v in values.items() if k in ("default", "description", "ge", "le")}
        bounds = self._registry_call(module, call, param, frozenset(overrides))
        if bounds is None:
            return None
        for name, value in overrides.items():
            if name in ("ge", "le"):
                number = self._bound(module, value, name, param, paren)
                if number is not None:
                    bounds[BOUNDS[name]] = number
            elif name == "default":
                default = _default_value(src, value, paren)
                if default is None:
                    self._drop_default(module, value, param)
                else:
                    self._check_text(module, value, name, param)
                    bounds["default"] = default.to_json()
            elif name == "description":
                text = src.node_text(value, paren).strip()
                description = _string_literal(text)
                if description is None:
                    self.warn(src, value.lineno, f"{param}: cog build drops description={text}")
                else:
                    self._check_text(module, value, name, param, fatal=False)
                    bounds["description"] = description
        return bounds

    def _registered(
        self, module: _Module, cls_name: str, attr: str
    ) -> ast.Call | tuple[_Function, ast.Call] | None:
        """collectInputRegistry (inputs.go): a class attribute = Input(...), or a method whose
        body returns Input(...)."""
        cls = module.classes.get(cls_name)
        if cls is None or "." in attr:
            return None
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign):
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
                value = stmt.value
                single = not isinstance(stmt, ast.Assign) or len(stmt.targets) == 1
                named = single and isinstance(target, ast.Name) and target.id == attr
                if named and isinstance(value, ast.Call) and module.is_input_call(value):
                    return value
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == attr:
                for s in stmt.body:
                    returned = s.value if isinstance(s, ast.Return) else None
                    if isinstance(returned, ast.Call) and module.is_input_call(returned):
                        return stmt, returned
        return None

    def _registry_call(
        self,
        module: _Module,
        call: ast.Call,
        param: str,
        overridden: frozenset[str] = frozenset(),
    ) -> dict[str, Any] | None:
        before = len(self.problems)
        bounds = self.input_call(module, call, param, overridden)
        if bounds is None:  # the CLI skips an Input() it cannot read: the reference fails
            del self.problems[before:]
        return bounds


def _text_mismatches(
    module: _Module, node: ast.expr, depth: int = 0
) -> list[tuple[ast.Constant, str, str]]:
    """(literal, the CLI's text, Python's value) for each string literal in a default-like
    expression where the two differ; a module constant is followed to its assignment."""
    if depth > 20:
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        cli = _string_literal(module.src.text(*module.src.span(node)))
        return [] if cli is None or cli == node.value else [(node, cli, node.value)]
    children: list[ast.expr | None] = []
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        children = list(node.elts)
    elif isinstance(node, ast.Dict):
        children = [*node.keys, *node.values]
    elif isinstance(node, ast.Name):
        children = [_assigned(module, node.id)]
    elif isinstance(node, ast.BinOp):  # choices=A + B
        children = [node.left, node.right]
    found = []
    for child in children:
        if child is not None:
            found += _text_mismatches(module, child, depth + 1)
    return found


def _literal_for(text: str) -> str | None:
    """A string literal that both the CLI and Python read as `text` (described in words where it
    needs line breaks), or None if there is none."""
    if "\r" in text:
        return None
    if "\\" in text:
        return None if '"' in text or "\n" in text or text.endswith("\\") else f'r"{text}"'
    if "\n" in text:
        if '"""' in text or text.endswith('"'):
            return None
        return "a triple-quoted string with the line breaks typed in it"
    if '"' not in text:
        return f'"{text}"'
    return f"'{text}'" if "'" not in text else None


def _example(value: Decimal | None, keyword: str) -> str:
    if value is None:
        return f", e.g. {EXAMPLE.get(keyword, keyword + '=2048')}"
    if keyword in ("ge", "le"):
        return f", e.g. {keyword}={exact_bound(value, keyword)}"
    return f", e.g. {keyword}={value}"


def _exact_decimal(text: str) -> Decimal | None:
    """The exact number a decimal literal's text stands for (None for inf, nan, hex)."""
    clean = text.replace("_", "")
    try:
        value = Decimal(clean)
    except ArithmeticError:
        return None
    return value if value.is_finite() and "x" not in clean.lower() else None


def _evaluate(module: _Module, node: ast.expr) -> Decimal | None:
    """The number a constant expression stands for, for suggestions (names: module constants)."""
    try:
        value = _eval(module, node, depth=0)
    except (ArithmeticError, ValueError, TypeError, RecursionError):
        return None
    if value is None or isinstance(value, bool):
        return None
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _eval(module: _Module, node: ast.expr, depth: int) -> int | float | None:
    if depth > 20:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name):
        value = module.scope.get(node.id)
        if value is not None and value.kind in ("int", "float"):
            assert isinstance(value.value, int | float)
            return value.value
        assigned = _assigned(module, node.id)
        return None if assigned is None else _eval(module, assigned, depth + 1)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(module, node.operand, depth + 1)
        if operand is None:
            return None
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _eval(module, node.left, depth + 1), _eval(module, node.right, depth + 1)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow) and (abs(right) > 256 or abs(left) > 2**64):
            return None
        op = _OPERATORS.get(type(node.op))
        result = None if op is None else op(left, right)
        return result if isinstance(result, int | float) else None
    return None


def _assigned(module: _Module, name: str) -> ast.expr | None:
    """The expression last assigned to `name` at module level."""
    found: ast.expr | None = None
    for stmt in module.src.tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name:
            found = value
    return found


def _annotation_text(module: _Module, node: ast.expr | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip()
    return module.src.node_text(node)


def _is_streaming_output(module: _Module, returns: ast.expr | None) -> bool:
    """Whether the return annotation resolves to one of cog's iterator outputs."""
    return _outer_name(module, returns) in STREAMING_OUTPUTS


def _outer_name(module: _Module, annotation: ast.expr | None) -> str | None:
    """The generic's name of an annotation `Outer[...]` as the CLI resolves it, else None."""
    text = _annotation_text(module, annotation)
    outer, bracket, _ = text.partition("[")
    if not bracket:
        return None
    outer = outer.strip()
    if "." in outer:
        outer = outer.split(".", 1)[1]  # ResolveQualifiedName: what follows the first dot
    return outer


def _is_union(annotation: ast.expr) -> bool:
    """A union input of two or more non-None types (ValidateInputField, types.go)."""
    members = _union_members(annotation)
    return len([m for m in members if not _is_none(m)]) >= 2


def _union_members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_union_members(node.left), *_union_members(node.right)]
    if isinstance(node, ast.Subscript):
        outer = node.value.attr if isinstance(node.value, ast.Attribute) else None
        if isinstance(node.value, ast.Name):
            outer = node.value.id
        if outer == "Union":
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return list(items)
    return [node]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def split_ref(ref: str) -> tuple[Path, str]:
    """Split `path/to/predict.py:Predictor` into the file and the attribute name."""
    file_part, sep, name = ref.rpartition(":")
    if not sep or not file_part or not name:
        raise ValueError(f"predictor reference must look like 'predict.py:Predictor', got {ref!r}")
    return Path(file_part), name


def default_roots(root: Path | None = None) -> list[Path]:
    """Where parent classes' modules are looked up: the project root, then PYTHONPATH."""
    roots = [root or Path.cwd()]
    roots += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return roots


def check(ref: str, *, roots: Sequence[Path] | None = None) -> StaticPredictor:
    """Read `file.py:Name` as `cog build` does; raise StaticCheckError on what it rejects/drops.

    `roots` are the directories modules are looked up in (the project root first); the file is
    taken relative to the first root unless absolute.
    """
    path, name = split_ref(ref)
    search = list(roots) if roots is not None else default_roots()
    full = path if path.is_absolute() else search[0] / path
    try:
        rel = str(full.resolve().relative_to(search[0].resolve()))
    except ValueError:
        rel = full.name
    checker = _Checker(search)
    module = checker.load(full, str(path), rel)
    return _check(checker, module, name)


def check_source(
    source: str, name: str, *, path: str = "predict.py", roots: Sequence[Path] = ()
) -> StaticPredictor:
    """Like `check`, for source text (as the file `path` of a project whose root is roots[0])."""
    checker = _Checker(roots)
    module = _Module.read(_Source(source, path, path))
    return _check(checker, module, name)


def _check(checker: _Checker, module: _Module, name: str) -> StaticPredictor:
    target = checker.find_target(module, name)
    if target is None:
        raise StaticCheckError(checker.problems)
    owner, fn = target
    is_async = isinstance(fn, ast.AsyncFunctionDef)
    inputs = checker.inputs(owner, fn)
    streaming = checker.streaming(owner, fn)
    concurrency = checker.concurrency(owner, fn)
    if concurrency is not None and concurrency > 1 and not is_async:
        checker.fail(owner.src, fn.lineno, MSG_CONCURRENT_ASYNC)
    if checker.problems:
        raise StaticCheckError(checker.problems)
    return StaticPredictor(
        path=owner.src.display,
        name=name,
        method=fn.name,
        line=fn.lineno,
        is_async=is_async,
        streaming=streaming,
        concurrency_max=concurrency,
        inputs=inputs,
        warnings=checker.warnings,
        output_defaults=checker.output_defaults(owner, fn),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("predictor", help="predictor reference, e.g. predict.py:Predictor")
    args = parser.parse_args(argv)
    try:
        info = check(args.predictor)
    except StaticCheckError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (OSError, SyntaxError, ValueError) as exc:
        print(f"cog_static: {exc}", file=sys.stderr)
        return 1
    for warning in info.warnings:
        print(f"{warning.path}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    summary = {
        "method": f"{info.path}:{info.line} {info.method}",
        "async": info.is_async,
        "streaming": info.streaming,
        "concurrency_max": info.concurrency_max,
        "bounds": {name: item.bounds for name, item in info.inputs.items() if item.bounds},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
