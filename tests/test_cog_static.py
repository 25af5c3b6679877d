"""scripts/cog_static.py reads a predictor as `cog build` does (statically), and schema.py obeys it.

The vectors are taken from replicate/cog's own tests (cited per case): predictor source in, the
schema fragment or error the CLI gives out. Error cases are asserted on the CLI's message text.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import schema
import yaml
from cog_server import CogServerError, stage_predictor, write_schema
from cog_static import (
    MSG_CHOICES,
    MSG_CONCURRENT_ARGS,
    MSG_CONCURRENT_ASYNC,
    MSG_CONCURRENT_LITERAL,
    MSG_DEFAULT_FACTORY,
    MSG_STREAMING_OUTPUT,
    StaticCheckError,
    StaticPredictor,
    check,
    check_source,
    go_json_number,
    go_parse_float,
    re2_error,
)

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
PREDICTORS = REPO / "tests" / "predictors"


def static(source: str, name: str = "Predictor") -> StaticPredictor:
    return check_source(textwrap.dedent(source), name, roots=[REPO])


def problems(source: str, name: str = "Predictor") -> str:
    with pytest.raises(StaticCheckError) as info:
        static(source, name)
    return str(info.value)


def bounds(source: str, name: str = "Predictor") -> dict[str, dict[str, Any]]:
    return {k: v.bounds for k, v in static(source, name).inputs.items() if v.bounds}


# -- vectors from cog's tests: decorators ---------------------------------------------------------

# (source, concurrency max, async) from pkg/schema/python/parser_test.go
CONCURRENCY_VECTORS = [
    pytest.param(  # TestConcurrentDecoratorQualifiedMax
        """
        import cog

        class Predictor(cog.BasePredictor):
            @cog.concurrent(max=4)
            async def predict(self) -> str:
                return "hello"
        """,
        4,
        True,
        id="qualified",
    ),
    pytest.param(  # TestConcurrentDecoratorImportedMax
        """
        from cog import BasePredictor, concurrent

        class Predictor(BasePredictor):
            @concurrent(max=3)
            async def predict(self) -> str:
                return "hello"
        """,
        3,
        True,
        id="imported",
    ),
    pytest.param(  # TestConcurrentDecoratorBareDefaultsToOne
        """
        from cog import BasePredictor, concurrent

        class Predictor(BasePredictor):
            @concurrent
            def predict(self) -> str:
                return "hello"
        """,
        1,
        False,
        id="bare",
    ),
    pytest.param(  # TestConcurrentDecoratorCallDefaultsToOne
        """
        import cog

        class Predictor(cog.BasePredictor):
            @cog.concurrent()
            def predict(self) -> str:
                return "hello"
        """,
        1,
        False,
        id="empty-call",
    ),
    pytest.param(  # TestConcurrentDecoratorImportedAliasMax
        """
        from cog import BasePredictor, concurrent as concurrent_predictions

        class Predictor(BasePredictor):
            @concurrent_predictions(max=2)
            async def predict(self) -> str:
                return "hello"
        """,
        2,
        True,
        id="imported-alias",
    ),
    pytest.param(  # TestConcurrentDecoratorQualifiedAliasMax
        """
        import cog as c

        class Predictor(c.BasePredictor):
            @c.concurrent(max=4)
            async def predict(self) -> str:
                return "hello"
        """,
        4,
        True,
        id="qualified-alias",
    ),
    pytest.param(  # TestConcurrentDecoratorIgnoredWhenNotFromCog
        """
        from other import concurrent
        from cog import BasePredictor

        class Predictor(BasePredictor):
            @concurrent(max=4)
            async def predict(self) -> str:
                return "hello"
        """,
        None,
        True,
        id="not-from-cog",
    ),
    pytest.param(  # TestConcurrentDecoratorUndecoratedHasNoMax
        """
        from cog import BasePredictor

        class Predictor(BasePredictor):
            async def predict(self) -> str:
                return "hello"
        """,
        None,
        True,
        id="undecorated",
    ),
]


@pytest.mark.parametrize(("source", "expected", "is_async"), CONCURRENCY_VECTORS)
def test_concurrency_as_the_cli_reads_it(source: str, expected: int | None, is_async: bool) -> None:
    info = static(source)
    assert info.concurrency_max == expected
    assert info.is_async is is_async


# (source, the CLI's message, the line it names) from pkg/schema/python/parser_test.go
REJECTED_DECORATORS = [
    pytest.param(  # TestConcurrentDecoratorRequiresAsyncForMaxGreaterThanOne
        """
        from cog import BasePredictor, concurrent

        class Predictor(BasePredictor):
            @concurrent(max=2)
            def predict(self) -> str:
                return "hello"
        """,
        MSG_CONCURRENT_ASYNC,
        "def predict",
        id="sync-max-2",
    ),
    pytest.param(  # TestConcurrentDecoratorRejectsNonLiteralMax
        """
        from cog import BasePredictor, concurrent

        MAX_CONCURRENCY = 2

        class Predictor(BasePredictor):
            @concurrent(max=MAX_CONCURRENCY)
            async def predict(self) -> str:
                return "hello"
        """,
        MSG_CONCURRENT_LITERAL,
        "@concurrent",
        id="name",
    ),
    pytest.param(  # TestConcurrentDecoratorRejectsPositionalArgument
        """
        from cog import BasePredictor, concurrent

        class Predictor(BasePredictor):
            @concurrent(2)
            async def predict(self) -> str:
                return "hello"
        """,
        MSG_CONCURRENT_ARGS,
        "@concurrent",
        id="positional",
    ),
    pytest.param(  # TestConcurrentDecoratorRejectsStringMax
        """
        from cog import BasePredictor, concurrent

        class Predictor(BasePredictor):
            @concurrent(max="2")
            async def predict(self) -> str:
                return "hello"
        """,
        MSG_CONCURRENT_LITERAL,
        "@concurrent",
        id="string",
    ),
    pytest.param(  # TestStreamingDecoratorRequiresIteratorOutput
        """
        from cog import BasePredictor, streaming

        class Predictor(BasePredictor):
            @streaming
            def predict(self) -> str:
                return "hello"
        """,
        MSG_STREAMING_OUTPUT,
        "def predict",
        id="streaming-str",
    ),
]


@pytest.mark.parametrize(("source", "message", "line"), REJECTED_DECORATORS)
def test_decorators_the_cli_rejects(source: str, message: str, line: str) -> None:
    assert f"predict.py:{_line_of(source, line)}: {message}" in problems(source)


# (source, streaming) from pkg/schema/python/parser_test.go
STREAMING_VECTORS = [
    pytest.param(  # TestStreamingDecoratorQualifiedOptIn
        """
        import cog
        from typing import Iterator

        class Predictor(cog.BasePredictor):
            @cog.streaming
            def predict(self) -> Iterator[str]:
                yield "hello"
        """,
        True,
        id="qualified",
    ),
    pytest.param(  # TestStreamingDecoratorImportedAliasOptIn
        """
        from cog import BasePredictor, streaming as stream
        from typing import Iterator

        class Predictor(BasePredictor):
            @stream
            def predict(self) -> Iterator[str]:
                yield "hello"
        """,
        True,
        id="imported-alias",
    ),
    pytest.param(  # TestStreamingDecoratorImportedParameterizedFormOptIn
        """
        from cog import BasePredictor, streaming
        from typing import Iterator

        class Predictor(BasePredictor):
            @streaming()
            def predict(self) -> Iterator[str]:
                yield "hello"
        """,
        True,
        id="called",
    ),
    pytest.param(  # TestStreamingDecoratorIgnoredWhenNotFromCog
        """
        from other import streaming
        from typing import Iterator
        from cog import BasePredictor

        class Predictor(BasePredictor):
            @streaming
            def predict(self) -> Iterator[str]:
                yield "hello"
        """,
        False,
        id="not-from-cog",
    ),
    pytest.param(  # TestStreamingDecoratorClassLevelIgnored
        """
        import cog
        from typing import Iterator

        @cog.streaming
        class Predictor(cog.BasePredictor):
            def predict(self) -> Iterator[str]:
                yield "hello"
        """,
        False,
        id="on-the-class",
    ),
]


@pytest.mark.parametrize(("source", "expected"), STREAMING_VECTORS)
def test_streaming_as_the_cli_reads_it(source: str, expected: bool) -> None:
    assert static(source).streaming is expected


# -- vectors from cog's tests: Input() -------------------------------------------------------------

# (source, the bounds the CLI writes, per input)
BOUNDS_VECTORS = [
    pytest.param(  # pkg/schema/python/parser_test.go TestMultipleInputsWithDefaults
        """
        from cog import BasePredictor, Input, Path

        class Predictor(BasePredictor):
            def predict(
                self,
                image: Path = Input(description="Grayscale input image"),
                scale: float = Input(
                    description="Factor to scale image by", ge=0, le=10, default=1.5
                ),
            ) -> Path:
                pass
        """,
        {"scale": {"minimum": 0, "maximum": 10}},
        id="ge-le",
    ),
    pytest.param(  # pkg/schema/python/parser_test.go TestInputConstraints
        """
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                text: str = Input(
                    description="Input text",
                    min_length=1,
                    max_length=100,
                    regex="^[a-z]+$",
                ),
            ) -> str:
                pass
        """,
        {"text": {"minLength": 1, "maxLength": 100}},
        id="lengths",
    ),
    pytest.param(  # pkg/schema/python/parser_test.go TestInputRegistryMethod
        """
        from dataclasses import dataclass
        from cog import BasePredictor, Input

        @dataclass(frozen=True)
        class Inputs:
            @staticmethod
            def guidance(default: float) -> Input:
                return Input(description="Guidance scale", ge=0.0, le=20.0, default=default)

        class Predictor(BasePredictor):
            def predict(self, guidance_scale: float = Inputs.guidance(7.5)) -> str:
                pass
        """,
        {"guidance_scale": {"minimum": 0, "maximum": 20}},
        id="registry-method",
    ),
    pytest.param(  # integration-tests/tests/static_schema_gen.txtar
        """
        from cog import BasePredictor, Input, Path

        class Predictor(BasePredictor):
            def predict(
                self,
                text: str,
                image: Path,
                count: int = Input(description="Number of iterations", default=5, ge=1, le=100),
                mode: str = Input(
                    description="Quality mode",
                    default="fast",
                    choices=["fast", "balanced", "quality"],
                ),
            ) -> str:
                ext = str(image).split(".")[-1]
                return f"{text}-{count}-{mode}-{ext}"
        """,
        {"count": {"minimum": 1, "maximum": 100}},
        id="static-schema-gen",
    ),
    pytest.param(  # integration-tests/tests/input_validation_before_build.txtar (predict.py)
        """
        from typing import Optional

        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str,
                count: int = Input(default=5, ge=1, le=10),
                size: str = Input(default="small", choices=["small", "medium", "large"]),
                title: str = Input(default="ok", max_length=5),
                slug: str = Input(default="ok", regex="^[a-z]+$"),
                note: Optional[str] = Input(default=None),
            ) -> str:
                return prompt
        """,
        {"count": {"minimum": 1, "maximum": 10}, "title": {"maxLength": 5}},
        id="input-validation-before-build",
    ),
    pytest.param(  # integration-tests/tests/many_inputs.txtar
        """
        from cog import BasePredictor, Input, Path

        class Predictor(BasePredictor):
            def predict(
                self,
                no_default: str,
                default_without_input: str = "default",
                input_with_default: int = Input(default=10),
                path: Path = Input(description="Some path"),
                image: Path = Input(description="Some path"),
                choices: str = Input(choices=["foo", "bar"]),
                int_choices: int = Input(description="hello", choices=[3, 4, 5]),
            ) -> str:
                return no_default
        """,
        {},
        id="many-inputs",
    ),
]


@pytest.mark.parametrize(("source", "expected"), BOUNDS_VECTORS)
def test_bounds_the_cli_writes(source: str, expected: dict[str, dict[str, Any]]) -> None:
    info = static(source)
    assert bounds(source) == expected
    assert all("deprecated" in w.message for w in info.warnings)  # cog's tests use predict()
    for name, values in expected.items():  # the JSON types too: ge=0.0 is written as 0
        assert all(type(v) is type(info.inputs[name].bounds[k]) for k, v in values.items())


def test_train_function_target_from_cog_tests() -> None:
    # integration-tests/tests/input_validation_before_build.txtar (train.py: a function target)
    source = """
    from cog import BaseModel, Input


    class TrainingOutput(BaseModel):
        weights: str


    def train(epochs: int = Input(ge=1)) -> TrainingOutput:
        return TrainingOutput(weights="ok")
    """
    assert bounds(source, "train") == {"epochs": {"minimum": 1}}


def test_bounds_are_written_as_go_prints_them_from_cog_tests() -> None:
    # integration-tests/tests/build_openapi_schema_complex.txtar: ge=0, le=2 on a float input
    # appear in the image's schema label as "minimum":0 and "maximum":2.
    source = """
    from typing import Optional

    from cog import BaseModel, BasePredictor, Input, Path, Secret


    class Output(BaseModel):
        text: str
        score: float


    class Predictor(BasePredictor):
        def predict(
            self,
            prompt: str = Input(description="The prompt", default="hello"),
            temperature: float = Input(description="Sampling temp", ge=0, le=2, default=0.7),
            style: str = Input(
                description="Style", choices=["fast", "balanced", "quality"], default="balanced"
            ),
            api_key: Secret = Input(description="API key"),
            image: Optional[Path] = Input(description="Optional image", default=None),
        ) -> Output:
            return Output(text=f"generated from {prompt}", score=temperature)
    """
    label = json.dumps(bounds(source), separators=(",", ":"))
    assert '"minimum":0' in label
    assert '"maximum":2' in label


# (source, parameter) from pkg/schema/python/parser_test.go: choices the CLI resolves
RESOLVED_CHOICES = [
    pytest.param(  # TestChoicesModuleLevelListVar
        'MY_CHOICES = ["x", "y", "z"]\n', "Input(choices=MY_CHOICES)", id="module-list"
    ),
    pytest.param(  # TestChoicesListDictKeys
        'ASPECT_RATIOS = {\n    "1:1": (1024, 1024),\n    "16:9": (1344, 768),\n}\n',
        'Input(choices=list(ASPECT_RATIOS.keys()), default="1:1")',
        id="dict-keys",
    ),
    pytest.param(  # TestChoicesListDictValues
        'LABELS = {"fast": "Fast Mode", "slow": "Slow Mode"}\n',
        "Input(choices=list(LABELS.values()))",
        id="dict-values",
    ),
    pytest.param(  # TestChoicesDictKeysPlusLiteral
        'SIZES = {"small": 256, "large": 1024}\n',
        'Input(choices=list(SIZES.keys()) + ["custom"])',
        id="keys-plus-literal",
    ),
    pytest.param(  # TestChoicesConcatTwoVars
        'BASE = ["a", "b"]\nEXTRA = ["c"]\n', "Input(choices=BASE + EXTRA)", id="concat"
    ),
    pytest.param(  # TestDefaultModuleLevelIntInInput
        "DEFAULT_STEPS = 50\n", "Input(default=DEFAULT_STEPS)", id="module-default"
    ),
    pytest.param(  # TestDescriptionFromModuleLevelVar
        'STEP_DESC = "Number of denoising steps. 4 is recommended."\n',
        "Input(default=4, description=STEP_DESC)",
        id="module-description",
    ),
]


def _predictor_with(preamble: str, default: str) -> str:
    return (
        "from cog import BasePredictor, Input\n\n"
        + preamble
        + f"\nclass Predictor(BasePredictor):\n    def predict(self, x: str = {default}) -> str:\n"
        "        pass\n"
    )


@pytest.mark.parametrize(("preamble", "default"), RESOLVED_CHOICES)
def test_module_constants_the_cli_resolves(preamble: str, default: str) -> None:
    info = check_source(_predictor_with(preamble, default), "Predictor")
    assert "x" in info.inputs
    assert all("deprecated" in w.message for w in info.warnings)


# (source preamble, default, the CLI's message) from pkg/schema/python/parser_test.go
REJECTED_INPUTS = [
    pytest.param(  # TestChoicesVarNotAListErrors
        'NOT_A_LIST = "oops"\n', "Input(choices=NOT_A_LIST)", MSG_CHOICES.format("x"), id="str"
    ),
    pytest.param(  # TestChoicesUndefinedVarErrors
        "", "Input(choices=DOES_NOT_EXIST)", MSG_CHOICES.format("x"), id="undefined"
    ),
    pytest.param(  # TestChoicesArbitraryCallErrors
        "", "Input(choices=get_choices())", MSG_CHOICES.format("x"), id="call"
    ),
    pytest.param(  # TestChoicesListComprehensionErrors
        "",
        'Input(choices=[f"{i}x" for i in range(5)])',
        MSG_CHOICES.format("x"),
        id="comprehension",
    ),
    pytest.param(  # TestChoicesNestedVarNotInScope
        'def helper():\n    NESTED = ["a", "b"]\n',
        "Input(choices=NESTED)",
        MSG_CHOICES.format("x"),
        id="nested",
    ),
    pytest.param(  # TestDefaultFactoryError
        "", "Input(default_factory=list)", MSG_DEFAULT_FACTORY.format("x"), id="default-factory"
    ),
    pytest.param(  # TestDefaultUndefinedVarPlainErrors
        "", "UNDEFINED_VAR", "cannot be statically resolved", id="plain-default"
    ),
]


@pytest.mark.parametrize(("preamble", "default", "message"), REJECTED_INPUTS)
def test_inputs_the_cli_rejects(preamble: str, default: str, message: str) -> None:
    source = _predictor_with(preamble, default)
    with pytest.raises(StaticCheckError) as info:
        check_source(source, "Predictor")
    line = source.splitlines().index(f"    def predict(self, x: str = {default}) -> str:") + 1
    assert f"predict.py:{line}: " in str(info.value)
    assert message in str(info.value)


def test_choices_error_names_the_parameter_from_cog_tests() -> None:
    # pkg/schema/python/parser_test.go TestChoicesErrorIncludesParamName
    text = problems(
        """
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(self, my_param: str = Input(choices=some_func())) -> str:
                pass
        """
    )
    assert "my_param" in text


def test_a_default_outside_the_bounds_fails_make_schema_from_cog_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # integration-tests/tests/invalid_int_validation.txtar: default=1 violates ge=2, so the
    # build fails, its message saying 'invalid' and 'minimum'.
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor, Input\n\n\nclass Predictor(BasePredictor):\n"
        "    def predict(\n"
        '        self, num: int = Input(description="Number of things", default=1, ge=2, le=10)\n'
        "    ) -> int:\n        return num * 2\n"
    )
    monkeypatch.chdir(tmp_path)
    assert schema.main(["predict.py:Predictor", "-o", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err
    assert "invalid" in err
    assert "minimum" in err
    assert not (tmp_path / "out.json").exists()


# -- one test per rule -----------------------------------------------------------------------------

NAMED_CONCURRENCY = """\
from collections.abc import Iterator

from cog import BaseRunner, concurrent

MAX_CONCURRENCY = 8


class Predictor(BaseRunner):
    @concurrent(max=MAX_CONCURRENCY)
    async def run(self, n: int) -> Iterator[str]:
        return iter(["x"] * n)
"""


def _schema_main(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
) -> tuple[int, str]:
    (tmp_path / "predict.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    code = schema.main(["predict.py:Predictor", "-o", str(tmp_path / ".cog" / "schema.json")])
    return code, capsys.readouterr().err


def test_a_name_in_concurrent_max_fails_make_schema(tmp_path: Path) -> None:
    # through the script itself, as `make schema` and the test servers run it
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    (source_dir / "predict.py").write_text(NAMED_CONCURRENCY)
    cwd = stage_predictor(source_dir / "predict.py", tmp_path / "cwd")
    with pytest.raises(CogServerError) as info:
        write_schema("predict.py:Predictor", cwd)
    assert f"predict.py:9: {MSG_CONCURRENT_LITERAL}" in str(info.value)
    assert "e.g. @concurrent(max=8)" in str(info.value)
    assert not (cwd / ".cog" / "openapi_schema.json").exists()


def test_a_name_in_a_bound_fails_make_schema_saying_what_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "from cog import BaseRunner, Input\n\nMAX_NEW_TOKENS = 2048\n\n\n"
        "class Predictor(BaseRunner):\n"
        "    def run(self, n: int = Input(default=1, le=MAX_NEW_TOKENS)) -> str:\n"
        "        return str(n)\n"
    )
    code, err = _schema_main(tmp_path, monkeypatch, capsys, source)
    assert code == 1
    assert (
        "predict.py:7: n: cog build drops le=MAX_NEW_TOKENS (only number literals survive in the"
        " schema); write the number itself, e.g. le=2048"
    ) in err
    assert not (tmp_path / ".cog").exists()


def test_an_expression_in_a_bound_fails_make_schema_saying_what_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "from cog import BaseRunner, Input\n\n\nclass Predictor(BaseRunner):\n"
        "    def run(\n"
        "        self,\n"
        "        seed: int | None = Input(default=None, ge=0, le=2**63 - 1),\n"
        "    ) -> str:\n"
        "        return str(seed)\n"
    )
    code, err = _schema_main(tmp_path, monkeypatch, capsys, source)
    assert code == 1
    # 2**63 - 1 is no float64: the nearest below that the CLI writes unchanged is suggested
    assert (
        "predict.py:7: seed: cog build drops le=2**63 - 1 (only number literals survive in the"
        " schema); write the number itself, e.g. le=9223372036854775000"
    ) in err


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("max_length=(65536)", "drops max_length=(65536)"),  # a parenthesized_expression
        ("min_length=len('ab')", "drops min_length=len('ab')"),
        ("ge=-ZERO", "drops ge=-ZERO"),
        ("le=float('inf')", "drops le=float('inf')"),
    ],
)
def test_every_bound_that_is_not_a_number_literal_is_reported(keyword: str, expected: str) -> None:
    source = (
        "from cog import BaseRunner, Input\nZERO = 0\n\n\nclass Predictor(BaseRunner):\n"
        f"    def run(self, s: str = Input({keyword})) -> str:\n        return s\n"
    )
    with pytest.raises(StaticCheckError) as info:
        check_source(source, "Predictor")
    assert str(info.value).startswith(f"predict.py:6: s: cog build {expected} (")


def test_a_comment_inside_concurrent_parentheses_is_rejected_like_the_cli() -> None:
    # tree-sitter keeps the comment as a child of the argument list, which then has 2 children
    text = problems(
        """
        from cog import BaseRunner, concurrent

        class Predictor(BaseRunner):
            @concurrent(
                max=8,  # predictions at once
            )
            async def run(self) -> str:
                return ""
        """
    )
    assert f"predict.py:5: {MSG_CONCURRENT_ARGS}" in text


def test_a_comment_inside_a_choices_list_makes_it_unresolvable_like_the_cli() -> None:
    # tree-sitter keeps the comment as an element of the list, which then is no literal list
    text = problems(
        """
        from cog import BaseRunner, Input

        SIZES = [
            "small",  # the default
            "large",
        ]

        class Predictor(BaseRunner):
            def run(self, size: str = Input(default="small", choices=SIZES)) -> str:
                return size
        """
    )
    assert f"predict.py:10: {MSG_CHOICES.format('size')}" in text


def test_cog_dot_input_and_positional_defaults_are_not_read_by_the_cli() -> None:
    text = problems(
        """
        import cog

        class Predictor(cog.BaseRunner):
            def run(self, a: int = cog.Input(default=1), b: int = cog.Input(2)) -> str:
                return ""
        """
    )
    assert "parameter 'a': default `cog.Input(default=1)` cannot be statically resolved" in text
    text = problems(
        """
        from cog import BaseRunner, Input

        class Predictor(BaseRunner):
            def run(self, b: int = Input(2, ge=0)) -> str:
                return ""
        """
    )
    assert "predict.py:5: b: cog build drops the positional argument 2 of Input()" in text


def test_a_bound_a_float64_cannot_hold_is_written_as_the_cli_writes_it() -> None:
    info = static(
        """
        from cog import BaseRunner, Input

        class Predictor(BaseRunner):
            def run(self, seed: int = Input(ge=0, le=9223372036854775807)) -> str:
                return ""
        """
    )
    assert info.inputs["seed"].bounds == {"minimum": 0, "maximum": 9223372036854776000}
    assert [w.message for w in info.warnings] == [
        "seed: cog build writes le=9223372036854775807 as 9223372036854776000 (it reads bounds as"
        " 64-bit floats); write le=9223372036854775000 to keep the bound exact"
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2048", 2048.0),
        ("65_536", 65536.0),  # underscores between digits, as in Go
        ("-1", -1.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("0x1p4", 16.0),  # a hex float needs its p exponent
        ("0x10", None),
        ("0o17", None),
        ("1__0", None),
        ("- 1", None),
        ("1e999", None),  # out of range: an error, not +Inf
        ("Infinity", float("inf")),
        ("MAX", None),
    ],
)
def test_number_literals_parse_as_go_strconv_parsefloat(text: str, value: float | None) -> None:
    assert go_parse_float(text) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2"),
        (0.0, "0"),
        (0.01, "0.01"),
        (9223372036854775807.0, "9223372036854776000"),
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (123456.789, "123456.789"),
    ],
)
def test_bounds_render_as_go_encoding_json(value: float, text: str) -> None:
    assert go_json_number(value) == text


# -- the shipped predictors ------------------------------------------------------------------------


def predictor_classes(path: Path) -> list[str]:
    """The classes of a predictor file that cog could serve (tests/examples/ checks the
    examples' with it)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defines = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            bases = [ast.unparse(b) for b in node.bases]
            if defines & {"run", "predict"} or any("Predictor" in b for b in bases):
                found.append(node.name)
    return found


SHIPPED = [
    "predict.py:Predictor",
    *(
        f"tests/predictors/{path.name}:{name}"
        for path in sorted(PREDICTORS.glob("*.py"))
        for name in predictor_classes(path)
    ),
]


@pytest.mark.parametrize("ref", SHIPPED)
def test_the_shipped_predictors_pass(ref: str) -> None:
    info = check(ref, roots=[REPO])  # raises StaticCheckError on any problem
    assert info.method in ("run", "predict")


def test_the_sample_predictor_files_are_among_those_checked() -> None:
    checked = {ref.split(":")[0] for ref in SHIPPED}
    for name in ("bridge.py", "legacy.py", "ignores_cancel.py"):
        assert f"tests/predictors/{name}" in checked


# -- cog.yaml -------------------------------------------------------------------------------------

# The keys and types cog.yaml may use, from replicate/cog pkg/config/data/config_schema_v1.0.json
# (additionalProperties: false at the top level and in build; "not": {"required": [run, predict]}).
CONFIG_SCHEMA = {
    "build": dict,
    "image": str,
    "model": str,
    "run": str,
    "predict": str,
    "train": str,
    "concurrency": dict,
    "environment": (list, type(None)),
    "weights": (list, type(None)),
}
BUILD_SCHEMA = {
    "cuda": str,
    "cudnn": str,
    "gpu": bool,
    "python_version": (str, int, float),
    "python_packages": (list, type(None)),
    "pre_install": (list, type(None)),
    "python_requirements": str,
    "system_packages": (list, type(None)),
    "sdk_version": str,
    "run": (list, type(None)),
}
# CUDA versions the CLI has base images for (pkg/config/cuda_compatibility.json, major.minor)
CUDA_BASE_IMAGES = {f"11.{m}" for m in range(9)} | {f"12.{m}" for m in (0, 1, 2, 3, 4, 5, 6, 8, 9)}
CUDA_BASE_IMAGES |= {"13.0", "13.1", "13.2"}
# The CUDA of torch's Linux wheel on PyPI: torch 2.13.0 requires cuda-toolkit==13.0.3.
TORCH_WHEEL_CUDA = {"2.13.0": "13.0"}


def test_cog_yaml_is_valid_for_the_cli() -> None:
    config = yaml.safe_load((REPO / "cog.yaml").read_text())
    assert set(config) <= set(CONFIG_SCHEMA)
    assert not {"run", "predict"} <= set(config)
    for key, value in config.items():
        assert isinstance(value, CONFIG_SCHEMA[key]), key
    build = config["build"]
    assert set(build) <= set(BUILD_SCHEMA)
    assert "python_version" in build
    for key, value in build.items():
        assert isinstance(value, BUILD_SCHEMA[key]), key


def test_cog_yaml_names_the_cuda_of_the_pinned_torch() -> None:
    build = yaml.safe_load((REPO / "cog.yaml").read_text())["build"]
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert build["gpu"] is True
    assert build["cuda"] in CUDA_BASE_IMAGES
    assert build["cuda"] == TORCH_WHEEL_CUDA[pins["torch"]]


def test_cog_yaml_run_is_the_checked_predictor() -> None:
    ref = yaml.safe_load((REPO / "cog.yaml").read_text())["run"]
    assert check(ref, roots=[REPO]).name == "Predictor"


def _line_of(source: str, prefix: str) -> int:
    lines = textwrap.dedent(source).splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(prefix))


# pkg/schema/python/literals.go parseStringLiteral keeps escapes; kin-openapi's
# openapi3/schema_pattern.go compiles a pattern with Go's regexp (RE2 syntax, parse.go).
@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        (r"^[a-z]+\d*$", None),
        (r"(?P<word>\w+)(?i:x)\x{41}\Qa.b\E[[:alpha:]]", None),
        (r"\u00E9", None),  # rewritten to \x{00E9} first (intoGoRegexp)
        (r"foo(?!bar)", "invalid or unsupported Perl syntax: `(?!`"),
        (r"(?<=a)b", "invalid named capture: `(?<=a)b`"),
        (r"(a)\1", r"invalid escape sequence: `\1`"),
        (r"a++", "invalid nested repetition operator: `++`"),
        (r"a{1001}", "invalid repeat count: `{1001}`"),
        (r"end\Z", r"invalid escape sequence: `\Z`"),
        (r"(?x) a", "invalid or unsupported Perl syntax: `(?x`"),
    ],
)
def test_patterns_as_go_regexp_compiles_them(pattern: str, error: str | None) -> None:
    expected = None if error is None else f"error parsing regexp: {error}"
    assert re2_error(pattern) == expected


def test_literal_values_are_the_clis() -> None:
    # literals_test.go TestParseDefaultValueHandlesCompoundLiterals: tuple as list, dict;
    # openapi_spec.go: deprecated and accept as written
    info = static(
        """
        from cog import BaseRunner, Input, Path

        class Predictor(BaseRunner):
            def run(
                self,
                t: list[str] = Input(default=('a', 2)),
                p: Path = Input(accept="image/*", deprecated=True, description='d'),
                c: str = Input(default="x", choices=["x", 'y']),
            ) -> str:
                return ""
        """
    )
    values = {name: item.values for name, item in info.inputs.items()}
    assert values == {
        "t": {"default": ["a", 2]},
        "p": {"x-cog-accept": "image/*", "deprecated": True, "description": "d"},
        "c": {"default": "x", "enum": ["x", "y"]},
    }
