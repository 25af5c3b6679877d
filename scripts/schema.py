"""Write the OpenAPI schema that the Cog server (coglet) reads from `.cog/openapi_schema.json`.

`cog build` normally generates this file with the cog CLI. Without it coglet accepts any input
(no 422 validation) and refuses `Accept: text/event-stream` (406). This script builds the same
document from the cog package's own introspection (`cog._inspector.create_predictor`), so local
runs and tests get validation and SSE streaming without the CLI:

    python scripts/schema.py predict.py:Predictor [-o .cog/openapi_schema.json]

Streaming (`x-cog-streaming: true`) is advertised when `run()`/`predict()` is decorated with
`@cog.streaming`, the marker the cog CLI looks for.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import Field
from pathlib import Path
from types import ModuleType
from typing import Any

DEFAULT_OUTPUT = Path(".cog") / "openapi_schema.json"

JsonDict = dict[str, Any]


def _cog() -> ModuleType:
    return importlib.import_module("cog")


def _inspector() -> ModuleType:
    return importlib.import_module("cog._inspector")


def _adt() -> ModuleType:
    return importlib.import_module("cog._adt")


def split_ref(ref: str) -> tuple[Path, str]:
    """Split `path/to/predict.py:Predictor` into the file and the attribute name."""
    file_part, sep, name = ref.rpartition(":")
    if not sep or not file_part or not name:
        raise ValueError(f"predictor reference must look like 'predict.py:Predictor', got {ref!r}")
    return Path(file_part), name


def import_predictor_module(path: Path) -> str:
    """Make `path`'s module importable by name (as coglet does) and return that name."""
    directory = str(path.resolve().parent)
    for entry in (directory, str(Path.cwd())):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return path.stem


def _title(name: str) -> str:
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _run_method(predictor: Any) -> Callable[..., Any] | None:
    if inspect.isfunction(predictor):
        return predictor
    for name in ("run", "predict"):
        method = getattr(predictor, name, None)
        if inspect.isfunction(method):
            return method
    return None


def supports_streaming(predictor: Any) -> bool:
    """True if the predictor's run()/predict() carries the `@cog.streaming` decorator."""
    fn = _run_method(predictor)
    if fn is None:
        return False
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return False
    tree = ast.parse(source)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    streaming = _cog().streaming
    namespace: dict[str, Any] = fn.__globals__
    for decorator in node.decorator_list:
        expr = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _resolve(expr, namespace) is streaming:
            return True
    return False


def _resolve(expr: ast.expr, namespace: dict[str, Any]) -> Any:
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id)
    if isinstance(expr, ast.Attribute):
        base = _resolve(expr.value, namespace)
        return None if base is None else getattr(base, expr.attr, None)
    return None


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


def build_schema(ref: str) -> JsonDict:
    """Introspect the predictor named by `ref` and return its OpenAPI 3.0.2 document."""
    path, name = split_ref(ref)
    module_name = import_predictor_module(path)
    info = _inspector().create_predictor(module_name, name)
    predictor = getattr(importlib.import_module(module_name), name)

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
    if supports_streaming(predictor):
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
    return {
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


def write_schema(ref: str, output: Path = DEFAULT_OUTPUT) -> Path:
    """Build the schema for `ref` and write it to `output` (parents created). Returns `output`."""
    document = build_schema(ref)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
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
        path = write_schema(args.predictor, args.output)
    except (ImportError, ValueError) as exc:
        print(f"schema: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
