"""scripts/schema.py writes the schema coglet needs for input validation (422) and SSE."""

from __future__ import annotations

import importlib.metadata
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import schema
from cog_server import CogServerError, stage_predictor, write_schema
from cog_static import StaticInput, StaticPredictor, check, check_source
from conftest import PREDICTORS, CogServers

REPO = Path(__file__).resolve().parent.parent


def schema_for(predictor: str, tmp_path: Path) -> Any:
    cwd = stage_predictor(PREDICTORS / predictor.partition(":")[0], tmp_path)
    return json.loads(write_schema(predictor, cwd).read_text())


def test_a_streaming_generator_predictor(tmp_path: Path) -> None:
    schema = schema_for("bridge.py:GeneratorPredictor", tmp_path)
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    inputs = schema["components"]["schemas"]["Input"]
    assert inputs["required"] == ["n", "tag"]
    assert inputs["properties"]["n"]["type"] == "integer"
    assert inputs["properties"]["tag"]["type"] == "string"
    output = schema["components"]["schemas"]["Output"]
    assert output["type"] == "array"
    assert output["x-cog-array-type"] == "iterator"


def test_a_predictor_without_cog_streaming_does_not_advertise_sse(tmp_path: Path) -> None:
    schema = schema_for("bridge.py:ThreadPredictor", tmp_path)
    assert "x-cog-streaming" not in schema["paths"]["/predictions"]["post"]
    assert schema["components"]["schemas"]["Output"]["type"] == "string"


@pytest.mark.timeout(60)
def test_the_written_bounds_are_the_ones_cog_build_writes(tmp_path: Path) -> None:
    # cog's introspection holds ge=0.0 as 0.0 and le=2**63-1 exactly; the CLI reads the text as
    # a float64 and writes it with Go's encoding/json: 0, 2 and 9223372036854776000.
    (tmp_path / "bounds.py").write_text(
        "from cog import BaseRunner, Input\n\n\nclass Predictor(BaseRunner):\n"
        "    def run(\n        self,\n"
        "        t: float = Input(default=0.5, ge=0.0, le=2.0),\n"
        "        s: str = Input(default='', max_length=65536),\n"
        "        seed: int | None = Input(default=None, ge=0, le=9223372036854775807),\n"
        "    ) -> str:\n        return s\n"
    )
    written = json.loads(write_schema("bounds.py:Predictor", tmp_path).read_text())
    props = written["components"]["schemas"]["Input"]["properties"]
    got = {
        name: {k: v for k, v in p.items() if k in schema.BOUND_KEYS} for name, p in props.items()
    }
    assert got == {
        "t": {"minimum": 0, "maximum": 2},
        "s": {"maxLength": 65536},
        "seed": {"minimum": 0, "maximum": 9223372036854776000},
    }
    assert all(type(v) is int for bounds in got.values() for v in bounds.values())


@pytest.mark.timeout(60)
def test_predict_py_schema_carries_the_clis_bounds_and_streaming(tmp_path: Path) -> None:
    cwd = stage_predictor(REPO / "predict.py", tmp_path)
    written = json.loads(write_schema("predict.py:Predictor", cwd).read_text())
    static = check("predict.py:Predictor", roots=[REPO])
    post = written["paths"]["/predictions"]["post"]
    assert post.get("x-cog-streaming", False) is static.streaming
    props = written["components"]["schemas"]["Input"]["properties"]
    for name, item in static.inputs.items():
        assert {k: props[name][k] for k in schema.BOUND_KEYS if k in props[name]} == item.bounds


def test_a_bound_that_differs_from_the_clis_is_refused() -> None:
    static = StaticPredictor(
        path="predict.py",
        name="Predictor",
        method="run",
        line=3,
        is_async=True,
        streaming=False,
        concurrency_max=None,
        inputs={"n": StaticInput("n", 5, {"maximum": 2048})},
        warnings=[],
    )
    document = {"components": {"schemas": {"Input": {"properties": {"n": {"maximum": 2048.0}}}}}}
    with pytest.raises(ValueError, match=r"^predict\.py:5: n: the schema has"):
        schema.verify_cli_bounds(document, static)
    document["components"]["schemas"]["Input"]["properties"]["n"]["maximum"] = 2048
    schema.verify_cli_bounds(document, static)


@pytest.mark.server
@pytest.mark.timeout(60)
def test_coglet_validates_and_streams_only_with_the_schema(cog_servers: CogServers) -> None:
    with_schema = cog_servers.start("bridge.py:GeneratorPredictor")
    without = cog_servers.start("bridge.py:GeneratorPredictor", schema=False)

    code, body = with_schema.predict({"n": "three", "tag": "t"})
    assert code == 422
    assert body["detail"][0]["loc"] == ["body", "input", "n"]
    assert with_schema.predict({"tag": "t"})[0] == 422
    assert [e.event for e in with_schema.predict_stream({"n": 1, "tag": "t"})][-1] == "completed"

    code, body = without.predict({"n": "three", "tag": "t"})
    assert (code, body["status"]) == (200, "failed")  # reaches run() and fails there
    assert without.openapi()[1] == {"error": "OpenAPI schema not available"}
    with pytest.raises(RuntimeError, match="406"):
        list(without.predict_stream({"n": 1, "tag": "t"}))


# -- vectors from cog's tests: what the CLI writes where Python's introspection differs ----------


def cli_schema(tmp_path: Path, source: str) -> Any:
    (tmp_path / "vector.py").write_text(textwrap.dedent(source))
    return json.loads(write_schema("vector.py:Predictor", tmp_path).read_text())


def make_schema_error(tmp_path: Path, source: str) -> str:
    (tmp_path / "vector.py").write_text(textwrap.dedent(source))
    with pytest.raises(CogServerError) as info:
        write_schema("vector.py:Predictor", tmp_path)
    return str(info.value)


@pytest.mark.timeout(60)
def test_none_defaults_as_the_cli_writes_them(tmp_path: Path) -> None:
    # pkg/schema/openapi_spec_test.go TestNoneDefaultOnOptionalTypeEmitsNull and
    # TestNoneDefaultOnRequiredTypeIsRequired; typeddict_input.txtar ("default":null beside
    # "nullable":true).
    written = cli_schema(
        tmp_path,
        """
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str,
                seed: int = Input(default=None),
                image: str | None = Input(default=None),
                items: list[int] | None = None,
            ) -> str:
                return prompt
        """,
    )
    inputs = written["components"]["schemas"]["Input"]
    assert inputs["required"] == ["prompt", "seed"]
    assert "default" not in inputs["properties"]["seed"]
    for name in ("image", "items"):
        assert inputs["properties"][name]["default"] is None
        assert inputs["properties"][name]["nullable"] is True


@pytest.mark.timeout(60)
def test_a_secret_with_a_none_default_is_optional(tmp_path: Path) -> None:
    # integration-tests/tests/static_schema_secret_optional.txtar (its predict.py, comments cut)
    written = cli_schema(
        tmp_path,
        """
        from cog import BasePredictor, Input, Secret


        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str = Input(description="Text prompt"),
                api_key: Secret = Input(
                    description="Your API key (optional — uses proxy if omitted)",
                    default=None,
                ),
                api_key_required: Secret = Input(description="Required API key"),
                seed: int = Input(description="Random seed", default=None),
            ) -> str:
                return prompt
        """,
    )
    inputs = written["components"]["schemas"]["Input"]
    assert inputs["required"] == ["prompt", "api_key_required", "seed"]
    api_key = inputs["properties"]["api_key"]
    assert (api_key["format"], api_key["x-cog-secret"]) == ("password", True)
    assert api_key["nullable"] is True
    assert api_key["default"] is None


@pytest.mark.timeout(60)
def test_accept_is_written_as_x_cog_accept(tmp_path: Path) -> None:
    # integration-tests/tests/accept_mime_type.txtar (its predict.py)
    written = cli_schema(
        tmp_path,
        """
        from typing import Optional

        from cog import BasePredictor, Input, Path


        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str = Input(description="Text prompt", default="test"),
                image: Path = Input(description="Input image", accept="image/*"),
                audio: Optional[Path] = Input(
                    description="Audio clip", accept="audio/wav,audio/mp3", default=None
                ),
                weights: Optional[Path] = Input(
                    description="Model weights", accept=".safetensors,.bin", default=None
                ),
            ) -> str:
                return prompt
        """,
    )
    props = written["components"]["schemas"]["Input"]["properties"]
    accepts = {name: p.get("x-cog-accept") for name, p in props.items()}
    assert accepts == {
        "prompt": None,
        "image": "image/*",
        "audio": "audio/wav,audio/mp3",
        "weights": ".safetensors,.bin",
    }
    assert props["image"]["format"] == "uri"


@pytest.mark.timeout(60)
def test_accept_on_a_non_file_input_fails(tmp_path: Path) -> None:
    # pkg/schema/python/parser_test.go TestAcceptOnNonFileTypeErrors
    message = make_schema_error(
        tmp_path,
        """
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(self, name: str = Input(accept="image/*")) -> str:
                pass
        """,
    )
    assert "accept is only valid on Path or File inputs (parameter 'name')" in message


@pytest.mark.timeout(60)
def test_an_output_field_with_a_default_is_not_required(tmp_path: Path) -> None:
    # pkg/schema/python/parser_test.go TestBaseModelOutputWithDefaults
    written = cli_schema(
        tmp_path,
        """
        from cog import BasePredictor, BaseModel

        class Result(BaseModel):
            text: str
            confidence: float = 0.0

        class Predictor(BasePredictor):
            def predict(self, s: str) -> Result:
                pass
        """,
    )
    output = written["components"]["schemas"]["Output"]
    assert output["required"] == ["text"]
    assert output["properties"]["confidence"]["title"] == "Confidence"


@pytest.mark.timeout(60)
def test_info_version_is_the_cog_version(tmp_path: Path) -> None:
    # integration-tests/tests/build_openapi_schema.txtar: info.version equals the image's cog
    # version (global.Version in pkg/schema/openapi_spec.go)
    written = schema_for("bridge.py:ThreadPredictor", tmp_path)
    assert written["info"]["version"] == importlib.metadata.version("cog") == "0.23.1"


@pytest.mark.timeout(60)
def test_a_raw_string_pattern_is_written_as_written(tmp_path: Path) -> None:
    # pkg/schema/python/literals_test.go TestParseDefaultValueHandlesScalarLiterals ("raw
    # string": r"^a+$" -> ^a+$) and TestDescriptionFromModuleLevelVar (parser_test.go)
    written = cli_schema(
        tmp_path,
        """
        from cog import BasePredictor, Input

        STEP_DESC = "Number of denoising steps. 4 is recommended."

        class Predictor(BasePredictor):
            def predict(
                self,
                s: str = Input(default="aa", regex=r"^a+$"),
                num_steps: int = Input(default=4, description=STEP_DESC),
            ) -> str:
                pass
        """,
    )
    props = written["components"]["schemas"]["Input"]["properties"]
    assert props["s"]["pattern"] == "^a+$"
    assert props["num_steps"]["description"] == "Number of denoising steps. 4 is recommended."


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("argument", "message"),
    [
        # literals.go parseStringLiteral: the text between the quotes, escapes undecoded
        (
            r'default="\n\n"',
            'x: cog build writes default\'s "\\n\\n" as "\\\\n\\\\n", not the "\\n\\n"'
            " Python reads",
        ),
        # adjacent literals: one concatenated_string node, inner quotes kept
        ('default="a" "b"', 'x: cog build writes default\'s "a" "b" as "a\\" \\"b"'),
        ('default="a", regex="\\\\d+"', 'write r"\\d+" instead of "\\\\d+"'),
    ],
)
def test_a_string_the_cli_reads_other_than_python_fails(
    tmp_path: Path, argument: str, message: str
) -> None:
    source = f"""
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(self, x: str = Input({argument})) -> str:
                pass
        """
    assert message in make_schema_error(tmp_path, source)


def test_an_f_string_description_is_dropped_with_a_warning() -> None:
    # module_scope.go resolveStringExpr: an f-string is no string literal; the CLI drops it
    info = check_source(
        "from cog import BasePredictor, Input\nN = 4\n\nclass Predictor(BasePredictor):\n"
        '    def predict(self, x: int = Input(default=1, description=f"up to {N}")) -> str:\n'
        "        pass\n",
        "Predictor",
    )
    assert "description" not in info.inputs["x"].values
    assert [w.message for w in info.warnings if "description" in w.message] == [
        'x: cog build drops description=f"up to {N}"'
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("argument", "message"),
    [
        # pkg/image/build.go writeAndValidateSchema: kin-openapi validates each default against
        # its property (openapi3/schema.go Schema.validate -> validateExampleValue)
        (
            'default="c", choices=["a", "b"]',
            "invalid default: doesn't match schema due to: value is not one of the allowed"
            ' values ["a","b"]',
        ),
        # openapi3/schema_pattern.go compilePattern: Go's regexp (RE2) has no lookahead
        (
            'default="a", regex="a(?!b)"',
            "error parsing regexp: invalid or unsupported Perl syntax: `(?!`",
        ),
    ],
)
def test_what_the_builds_schema_validation_rejects_fails_make_schema(
    tmp_path: Path, argument: str, message: str
) -> None:
    source = f"""
        from cog import BasePredictor, Input

        class Predictor(BasePredictor):
            def predict(self, x: str = Input({argument})) -> str:
                pass
        """
    error = make_schema_error(tmp_path, source)
    assert (
        'x: cog build fails: Model schema is invalid: invalid components: schema "Input": ' in error
    )
    assert message in error


OPTIONAL_CHOICE = """
    from cog import BasePredictor, Input

    class Predictor(BasePredictor):
        def predict(self, style: str | None = Input(default=None, choices=["a", "b"])) -> str:
            return repr(style)
    """


@pytest.mark.server
@pytest.mark.timeout(90)
def test_choices_on_an_optional_str_with_a_none_default_build_as_the_cli_writes_them(
    tmp_path: Path, cog_servers: CogServers
) -> None:
    # openapi_spec.go buildInputSchema: the enum component from the choices (no null in it),
    # the property `allOf` its $ref, `"default": null`, `"nullable": true`; the build's
    # validation skips a null default (kin-openapi openapi3/schema.go Schema.validate validates
    # `schema.Default` only when it is not nil).
    (tmp_path / "schema").mkdir()
    written = cli_schema(tmp_path / "schema", OPTIONAL_CHOICE)
    components = written["components"]["schemas"]
    assert components["Input"]["properties"]["style"] == {
        "x-order": 0,
        "allOf": [{"$ref": "#/components/schemas/style"}],
        "default": None,
        "nullable": True,
    }
    assert "required" not in components["Input"]
    assert components["style"] == {
        "title": "style",
        "description": "An enumeration.",
        "enum": ["a", "b"],
        "type": "string",
    }
    # coglet serves it: left out is None, a choice passes, anything else is a 422.
    source = tmp_path / "server"
    source.mkdir()
    (source / "choice.py").write_text(textwrap.dedent(OPTIONAL_CHOICE))
    server = cog_servers.start("choice.py:Predictor", source_dir=source)
    assert server.predict({})[1]["output"] == "None"
    assert server.predict({"style": "b"})[1]["output"] == "'b'"
    assert server.predict({"style": "c"})[0] == 422


def test_int_bounds_check_a_default_as_kin_openapi_does() -> None:
    # kin-openapi schema.go visitJSONNumber: "number must be at most %g"
    document = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {"n": {"type": "integer", "maximum": 1000000, "default": 2e6}}
                }
            }
        }
    }
    static = StaticPredictor("p.py", "P", "run", 1, False, False, None, {}, [])
    [problem] = schema.validation_problems(document, static)
    assert problem.message.endswith("invalid default: number must be at most 1e+06")
