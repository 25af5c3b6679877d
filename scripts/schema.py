"""Write the OpenAPI schema that the Cog server (coglet) reads from `.cog/openapi_schema.json`.

`cog build` normally generates this file with the cog CLI. Without it coglet accepts any input
(no 422 validation) and refuses `Accept: text/event-stream` (406). This script builds the same
document from the cog package's own introspection (`cog._inspector.create_predictor`), so local
runs and tests get validation and SSE streaming without the CLI:

    python scripts/schema.py predict.py:Predictor [-o .cog/openapi_schema.json]

The CLI does not import the predictor: it reads predict.py's source text (see cog_static.py). So
the predictor is first checked the way the CLI reads it, and this script fails, naming file:line,
on anything `cog build` would reject or silently drop or change. The two readers split the work:
cog's introspection gives the inputs, their types and the output type; cog_static.py gives every
value the source spells (defaults, descriptions, bounds, regex, choices, accept, output-model
defaults) as the CLI reads it, so the written schema is the CLI's (pkg/schema/openapi_spec.go).
Last, what the build's validation of the schema rejects (kin-openapi) fails here first.
One output cog's introspection refuses is written as the CLI writes it: `Iterator[Model]` or
`AsyncIterator[Model]` of a BaseModel ("unsupported Cog type Model" in cog 0.23.1), which coglet
streams as one JSON object per item. What is checked: docs/schema.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import inspect
import json
import re
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cog_static import (
    Problem,
    StaticCheckError,
    StaticPredictor,
    check,
    go_format_g,
    re2_error,
    split_ref,
)

DEFAULT_OUTPUT = Path(".cog") / "openapi_schema.json"

JsonDict = dict[str, Any]
BOUND_KEYS = ("minimum", "maximum", "minLength", "maxLength")


def _cog() -> ModuleType:
    return importlib.import_module("cog")


def _inspector() -> ModuleType:
    return importlib.import_module("cog._inspector")


def _adt() -> ModuleType:
    return importlib.import_module("cog._adt")


def import_predictor_module(path: Path) -> str:
    """Make `path`'s module importable by name (as coglet does) and return that name."""
    directory = str(path.resolve().parent)
    for entry in (directory, str(Path.cwd())):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)  # first, so that `path` wins over a same-named module elsewhere
    return path.stem


def _title(name: str) -> str:
    """TitleCase (pkg/schema/types.go): each "_"-separated part capitalized, joined by spaces."""
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _input_schema(
    inputs: dict[str, Any], static: StaticPredictor
) -> tuple[JsonDict, dict[str, JsonDict]]:
    """buildInputSchema (openapi_spec.go): types from cog's introspection, every value the
    source spells (default, description, bounds, pattern, choices, accept) as the CLI reads it.
    """
    adt = _adt()
    optional = {adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED}
    if set(inputs) != set(static.inputs):
        raise ValueError(
            f"{static.path}:{static.line}: the inputs cog introspects {sorted(inputs)} are not"
            f" the ones the cog CLI reads {sorted(static.inputs)}"
        )
    properties: JsonDict = {}
    required: list[str] = []
    enums: dict[str, JsonDict] = {}
    for name, field in sorted(inputs.items(), key=lambda item: item[1].order):
        cli = static.inputs[name]
        prop: JsonDict = {"x-order": field.order}
        if "enum" in cli.values:
            enum_type = field.type.primitive.json_type().get("type", "string")
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": cli.values["enum"],
                "type": enum_type,
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(field.type.json_type())
        nullable = field.type.repetition in optional
        none_default = "default" in cli.values and cli.values["default"] is None
        if (
            none_default
            and field.type.primitive is adt.PrimitiveType.SECRET
            and field.type.repetition is adt.Repetition.REQUIRED
        ):
            nullable = True  # `api_key: Secret = Input(default=None)` is optional
        has_default = "default" in cli.values and not (none_default and not nullable)
        if not has_default and not nullable:
            required.append(name)
        if has_default:
            prop["default"] = cli.values["default"]
        if nullable:
            prop["nullable"] = True
        if "description" in cli.values:
            prop["description"] = cli.values["description"]
        prop.update(cli.bounds)
        if "pattern" in cli.values:
            prop["pattern"] = cli.values["pattern"]
        if cli.values.get("deprecated"):
            prop["deprecated"] = True
        if "x-cog-accept" in cli.values:
            if field.type.primitive not in (adt.PrimitiveType.PATH, adt.PrimitiveType.FILE):
                raise ValueError(
                    f"{static.path}:{cli.line}: accept is only valid on Path or File inputs"
                    f" (parameter '{name}')"
                )
            prop["x-cog-accept"] = cli.values["x-cog-accept"]
        properties[name] = prop
    schema: JsonDict = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _output_schema(output: Any, static: StaticPredictor) -> JsonDict:
    """The output's schema; a BaseModel's fields titled and required as the CLI has them
    (schema_type.go coreSchema: a field with a literal default is not required), also where
    the model is an iterator's item."""
    schema: JsonDict = output.json_type()
    model = schema["items"] if isinstance(output, _ModelIterator) else schema
    if model.get("type") == "object" and "properties" in model:
        for name, prop in model["properties"].items():
            prop["title"] = _title(name)
        required = [n for n in model.get("required", []) if n not in static.output_defaults]
        model.pop("required", None)
        if required:
            model["required"] = required
    return schema


# -- Iterator[Model] ---------------------------------------------------------------------------
# cog 0.23.1's introspection reads an iterator's item with FieldType.from_type, which knows no
# BaseModel ("unsupported Cog type Model", cog/_adt.py). The CLI resolves the item recursively
# (pkg/schema/schema_type.go resolveGenericSchemaType, "Cog iterators"; parser_test.go
# TestIteratorOfBaseModelOutput) and writes SchemaIterator's coreSchema: an array with
# x-cog-array-type "iterator" whose items are the model's object schema without a title
# (jsonSchema(false)). coglet streams each item as a JSON object (tests/test_structured_outputs.py).
_ITERATORS = (Iterator, AsyncIterator)  # typing.get_origin of typing's and collections.abc's


@dataclass(frozen=True)
class _ModelIterator:
    """The output `Iterator[Model]` / `AsyncIterator[Model]`; `item` is cog's OutputType of
    `Model` (kind OBJECT)."""

    item: Any

    def json_type(self) -> JsonDict:
        item: JsonDict = self.item.json_type()
        item.pop("title", None)
        return {"title": "Output", "type": "array", "items": item, "x-cog-array-type": "iterator"}


@contextlib.contextmanager
def _model_iterators() -> Iterator[None]:
    """While inside, cog's introspection reads `Iterator[Model]` outputs as `_ModelIterator`."""
    inspector = _inspector()
    original: Callable[[Any], Any] = inspector._create_output_type
    adt = _adt()

    def create_output_type(tpe: Any) -> Any:
        args = typing.get_args(tpe)
        if typing.get_origin(tpe) in _ITERATORS and len(args) == 1 and inspect.isclass(args[0]):
            item = original(args[0])  # a cog or pydantic BaseModel: kind OBJECT
            if item.kind is adt.OutputKind.OBJECT:
                return _ModelIterator(item)
        return original(tpe)

    setattr(inspector, "_create_output_type", create_output_type)  # noqa: B010
    try:
        yield
    finally:
        setattr(inspector, "_create_output_type", original)  # noqa: B010


def _json_response(schema: JsonDict) -> JsonDict:
    return {"content": {"application/json": {"schema": schema}}}


def build_schema(ref: str, static: StaticPredictor | None = None) -> JsonDict:
    """The OpenAPI 3.0.2 document for the predictor named by `ref`, as the cog CLI writes it.

    Raises StaticCheckError if `cog build` would reject the predictor or drop part of it.
    """
    static = check(ref) if static is None else static
    path, name = split_ref(ref)
    module_name = import_predictor_module(path)
    before = sys.modules.get(module_name)
    if getattr(before, "__file__", None) not in (None, str(path.resolve())):
        del sys.modules[module_name]  # another file of that name was imported first (tests)
    try:
        with _model_iterators():
            info = _inspector().create_predictor(module_name, name)
    finally:
        if before is not None:  # leave a same-named module imported earlier as it was
            sys.modules[module_name] = before

    input_schema, enums = _input_schema(info.inputs, static)
    validation_error = {
        "description": "Validation Error",
        **_json_response({"$ref": "#/components/schemas/HTTPValidationError"}),
    }
    ok_any = {"description": "Successful Response", **_json_response({})}
    predict_op: JsonDict = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": _json_response({"$ref": "#/components/schemas/PredictionRequest"}),
        "responses": {
            "200": {
                "description": "Successful Response",
                **_json_response({"$ref": "#/components/schemas/PredictionResponse"}),
            },
            "422": validation_error,
        },
    }
    if static.streaming:
        predict_op["x-cog-streaming"] = True

    def string(title: str, **extra: str) -> JsonDict:
        return {"title": title, "type": "string", **extra}

    components: JsonDict = {
        "Input": input_schema,
        "Output": _output_schema(info.output, static),
        **enums,
        "PredictionRequest": {
            "title": "PredictionRequest",
            "type": "object",
            "properties": {"id": string("Id"), "input": {"$ref": "#/components/schemas/Input"}},
        },
        "PredictionResponse": {
            "title": "PredictionResponse",
            "type": "object",
            "properties": {
                "input": {"$ref": "#/components/schemas/Input"},
                "output": {"$ref": "#/components/schemas/Output"},
                "id": string("Id"),
                "version": string("Version"),
                "created_at": string("Created At", format="date-time"),
                "started_at": string("Started At", format="date-time"),
                "completed_at": string("Completed At", format="date-time"),
                "status": string("Status"),
                "error": string("Error"),
                "logs": string("Logs"),
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
        "Status": {
            "title": "Status",
            "description": "An enumeration.",
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
        },
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {
                    "title": "Detail",
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ValidationError"},
                }
            },
        },
        "ValidationError": {
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "type": "object",
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": string("Message"),
                "type": string("Error Type"),
            },
        },
    }
    document: JsonDict = {
        "openapi": "3.0.2",
        # global.Version: the CLI's own; the build wants it equal to the image's cog version.
        "info": {"title": "Cog", "version": importlib.metadata.version("cog")},
        "paths": {
            "/": {
                "get": {"summary": "Root", "operationId": "root__get", "responses": {"200": ok_any}}
            },
            "/health-check": {
                "get": {
                    "summary": "Healthcheck",
                    "operationId": "healthcheck_health_check_get",
                    "responses": {"200": ok_any},
                }
            },
            "/predictions": {"post": predict_op},
            "/predictions/{prediction_id}/cancel": {
                "post": {
                    "summary": "Cancel",
                    "operationId": "cancel_predictions__prediction_id__cancel_post",
                    "parameters": [
                        {
                            "required": True,
                            "schema": string("Prediction Id"),
                            "name": "prediction_id",
                            "in": "path",
                        }
                    ],
                    "responses": {"200": ok_any, "422": validation_error},
                }
            },
        },
        "components": {"schemas": components},
    }
    problems = validation_problems(document, static)
    if problems:
        raise StaticCheckError(problems)
    return document


# -- the build's validation step -------------------------------------------------------------------
# pkg/image/build.go writeAndValidateSchema loads the document with kin-openapi and fails the build
# on doc.Validate's error ("Model schema is invalid: ..."). On the schemas the CLI writes, what can
# fail is in openapi3/schema.go Schema.validate: a pattern Go's regexp cannot compile
# (schema_pattern.go compilePattern) and a default that the property's own schema rejects
# (validateExampleValue -> VisitJSON, with MultiErrors: the reasons joined by " | "). Messages
# below are those errors' first lines (kin-openapi adds a dump of the schema and value).

INVALID = 'Model schema is invalid: invalid components: schema "Input": '


def validation_problems(document: JsonDict, static: StaticPredictor) -> list[Problem]:
    """What kin-openapi's validation rejects in the Input schema, at the input's line."""
    schemas: JsonDict = document["components"]["schemas"]
    problems = []
    for name in sorted(schemas["Input"]["properties"]):  # componentNames: sorted
        prop = schemas["Input"]["properties"][name]
        line = static.inputs[name].line if name in static.inputs else static.line
        message = None
        if "pattern" in prop and "string" in _types(prop):
            message = re2_error(prop["pattern"])
        # A null default is never validated: kin-openapi reads it as Go's nil, and Schema.validate
        # checks `if v := schema.Default; v != nil` (openapi3/schema.go). So `str | None =
        # Input(default=None, choices=[...])` builds, its enum without null (openapi_spec.go).
        if message is None and prop.get("default") is not None:
            reasons = _visit(prop["default"], prop, schemas)
            if reasons:
                message = "invalid default: " + " | ".join(reasons)
        if message is not None:
            text = f"{name}: cog build fails: {INVALID}{message}"
            problems.append(Problem(static.path, line, text))
    return problems


def _types(schema: JsonDict) -> list[str]:
    kind = schema.get("type")
    return [] if kind is None else [kind] if isinstance(kind, str) else list(kind)


def _visit(value: Any, schema: JsonDict, schemas: JsonDict) -> list[str]:
    """openapi3 Schema.VisitJSON's reasons for `value` (kin-openapi schema.go), for the keywords
    the CLI writes: allOf/$ref, enum, nullable, type, minimum/maximum, lengths, pattern, items."""
    if "$ref" in schema:
        return _visit(value, schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
    for sub in schema.get("allOf", []):
        inner = _visit(value, sub, schemas)
        if inner:
            return ["doesn't match schema due to: " + " And ".join(inner)]
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        allowed = json.dumps(schema["enum"], separators=(",", ":"))
        return [f"value is not one of the allowed values {allowed}"]
    types = _types(schema)
    if value is None:
        return [] if schema.get("nullable") or not types else ["Value is not nullable"]
    names = {bool: "boolean", str: "string", list: "array", dict: "object"}
    expected = names.get(type(value), "number")
    if types and not (expected in types or (expected == "number" and "integer" in types)):
        kind = types[0]
        article = "an" if kind in ("array", "object", "integer") else "a"
        return [f"value must be {article} {kind}"]
    reasons = []
    if expected == "number":
        number = float(value)
        if types == ["integer"] and not number.is_integer():
            reasons.append("value must be an integer")
        if "minimum" in schema and number < schema["minimum"]:
            reasons.append(f"number must be at least {go_format_g(float(schema['minimum']))}")
        if "maximum" in schema and number > schema["maximum"]:
            reasons.append(f"number must be at most {go_format_g(float(schema['maximum']))}")
    elif expected == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            reasons.append(f"minimum string length is {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            reasons.append(f"maximum string length is {schema['maxLength']}")
        if "pattern" in schema and not _matches(schema["pattern"], value):
            reasons.append(f'string doesn\'t match the regular expression "{schema["pattern"]}"')
    elif expected == "array" and "items" in schema:
        for item in value:
            reasons += _visit(item, schema["items"], schemas)
    return reasons


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _matches(pattern: str, value: str) -> bool:
    """Go's MatchString (an unanchored search); Python's `re` stands in for an RE2-valid
    pattern, and a pattern it cannot read (\\z, [[:alpha:]]) is not judged here."""
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return True


def verify_cli_bounds(document: JsonDict, static: StaticPredictor) -> None:
    """Every bound in `document` equals, in value and JSON type, the one the CLI writes."""
    properties: JsonDict = document["components"]["schemas"]["Input"]["properties"]
    for name, item in static.inputs.items():
        prop = properties.get(name, {})
        written = {key: prop[key] for key in BOUND_KEYS if key in prop}
        same = written.keys() == item.bounds.keys() and all(
            type(written[key]) is type(item.bounds[key]) and written[key] == item.bounds[key]
            for key in written
        )
        if not same:
            raise ValueError(
                f"{static.path}:{item.line}: {name}: the schema has {written}, the cog CLI writes"
                f" {item.bounds}"
            )


def write_schema(
    ref: str, output: Path = DEFAULT_OUTPUT, *, static: StaticPredictor | None = None
) -> Path:
    """Build the schema for `ref` and write it to `output` (parents created). Returns `output`.

    Raises StaticCheckError (a ValueError) where `cog build` would reject or drop something.
    """
    static = check(ref) if static is None else static
    document = build_schema(ref, static)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    verify_cli_bounds(json.loads(tmp.read_text(encoding="utf-8")), static)
    tmp.replace(output)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("predictor", help="predictor reference, e.g. predict.py:Predictor")
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}"
    )
    args = parser.parse_args(argv)
    try:
        static = check(args.predictor)
    except StaticCheckError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"schema: cog build would reject or drop the above in {args.predictor}"
            " (it reads the source statically: write literals there)",
            file=sys.stderr,
        )
        return 1
    except (OSError, SyntaxError, ValueError) as exc:
        print(f"schema: {exc}", file=sys.stderr)
        return 1
    for warning in static.warnings:
        print(f"{warning.path}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    try:
        path = write_schema(args.predictor, args.output, static=static)
    except (ImportError, ValueError) as exc:
        print(f"schema: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
