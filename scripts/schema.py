"""Write the OpenAPI schema that the Cog server (coglet) reads from `.cog/openapi_schema.json`.

`cog build` normally generates this file with the cog CLI. Without it coglet accepts any input
(no 422 validation) and refuses `Accept: text/event-stream` (406). This script builds the same
document from the cog package's own introspection (`cog._inspector.create_predictor`), so local
runs and tests get validation and SSE streaming without the CLI:

    python scripts/schema.py predict.py:Predictor [-o .cog/openapi_schema.json]

The CLI does not import the predictor: it reads predict.py's source text (see cog_static.py). So
the predictor is first checked the way the CLI reads it, and this script fails, naming file:line,
on anything `cog build` would reject or silently drop (a name in `@concurrent(max=...)` or in an
Input() bound). The document then carries what the CLI writes where the two readers differ: the
bounds (ge/le as the CLI's 64-bit floats print) and `x-cog-streaming` (`@cog.streaming` on
run()/predict()); every bound of the written file is checked against the CLI's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import Field
from pathlib import Path
from types import ModuleType
from typing import Any

from cog_static import StaticCheckError, StaticPredictor, check, cli_number, split_ref

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
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _input_schema(inputs: dict[str, Any]) -> tuple[JsonDict, dict[str, JsonDict]]:
    adt = _adt()
    optional = {adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED}
    properties: JsonDict = {}
    required: list[str] = []
    enums: dict[str, JsonDict] = {}
    for name, field in sorted(inputs.items(), key=lambda item: item[1].order):
        prop: JsonDict = {"x-order": field.order}
        if field.choices:
            enum_type = field.type.primitive.json_type().get("type", "string")
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": enum_type,
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(field.type.json_type())
        nullable = field.type.repetition in optional
        default = field.default
        if isinstance(default, Field):
            has_default = True  # default_factory: filled in by the worker, never sent
        elif default is None:
            has_default = False
        else:
            has_default = True
            prop["default"] = field.type.json_encode(default)
        if not has_default and not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = field.ge
        if field.le is not None:
            prop["maximum"] = field.le
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
        if field.deprecated:
            prop["deprecated"] = True
        properties[name] = prop
    schema: JsonDict = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


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
        info = _inspector().create_predictor(module_name, name)
    finally:
        if before is not None:  # leave a same-named module imported earlier as it was
            sys.modules[module_name] = before

    input_schema, enums = _input_schema(info.inputs)
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
        "Output": info.output.json_type(),
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
        "info": {"title": "Cog", "version": "0.1.0"},
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
    apply_cli_bounds(document, static)
    return document


def apply_cli_bounds(document: JsonDict, static: StaticPredictor) -> None:
    """Put the CLI's bound values into `document`; fail where introspection disagrees."""
    properties: JsonDict = document["components"]["schemas"]["Input"]["properties"]
    if set(properties) != set(static.inputs):
        raise ValueError(
            f"{static.path}:{static.line}: the inputs cog introspects {sorted(properties)} are not"
            f" the ones the cog CLI reads {sorted(static.inputs)}"
        )
    for name, prop in properties.items():
        item = static.inputs[name]
        for key in BOUND_KEYS:
            introspected, cli = prop.get(key), item.bounds.get(key)
            if cli is None and introspected is None:
                continue
            if cli is None or introspected is None or _as_cli(key, introspected) != cli:
                raise ValueError(
                    f"{static.path}:{item.line}: {name}: cog's introspection gives {key}="
                    f"{introspected}, the cog CLI writes {key}={cli}"
                )
            prop[key] = cli


def _as_cli(key: str, value: Any) -> Any:
    """What the CLI writes for a bound the Python side holds as `value`."""
    if key in ("minLength", "maxLength"):
        return int(value)
    return cli_number(float(value))


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
