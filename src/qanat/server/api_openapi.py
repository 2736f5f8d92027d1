"""``/api/openapi.json``: the OpenAPI 3.1 document of the HTTP API, generated from the
route table (``Operation``) and the pydantic models that validate the requests and shape
the answers (``qanat.server.api_models``). Nothing here is written by hand per route: a
route added to the table, or a field added to a model, shows up in the document.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from qanat.server.api_models import ErrorBody

__all__ = ["ERRORS", "Operation", "Typed", "openapi_document"]

REF = "#/components/schemas/{model}"

#: What each error status means, for every route that can answer it.
ERRORS: dict[int, str] = {
    400: "The body is not JSON, or not the shape this route takes (the error names the field).",
    401: "The server has a token and the request did not carry it (Authorization: Bearer).",
    403: "A cross-origin request from a browser (a state change must come from this origin).",
    404: "Unknown job, pipe or execution id (the error names it).",
    409: "The execution's status does not allow this action.",
    413: "A payload above the queue's max_payload.",
    415: "A body sent with a Content-Type other than application/json.",
    422: "Input that fails the job's or the pipe's validation (the error names the field).",
    503: "Storage does not answer.",
}


@dataclass(frozen=True)
class Operation:
    """One route of the API: what it takes and answers, for the router and the document."""

    method: Literal["GET", "POST"]
    path: str
    name: str
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    params: tuple[tuple[str, str], ...] = ()
    """Path parameters: (name, description)."""
    errors: tuple[int, ...] = ()


def _models(ops: Sequence[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in ops:
        if op.body is not None:
            seen[(op.body, "validation")] = None
        seen[(op.response, "serialization")] = None
    seen[(ErrorBody, "serialization")] = None
    return list(seen)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        if any(s.get("type") == "array" for s in prop.get("anyOf", [prop])):
            param["style"], param["explode"] = "form", True
        out.append(param)
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


#: Schemas of one job's input or one pipe's data: ``schema(ref_template)``.
SchemaOf = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Typed:
    """Concrete paths for each registered job (or pipe) beside a templated route, whose
    body field ``field`` has that job's (or pipe's) own schema: ``/jobs/add/start`` with
    ``input`` as ``add``'s arguments. Generated clients and readers see every input."""

    path: str
    """The templated route (``/jobs/{job}/start``)."""
    param: str
    field: str
    schemas: Mapping[str, SchemaOf]


def _typed_paths(
    paths: dict[str, dict[str, Any]], components: dict[str, Any], typed: Typed
) -> None:
    [(method, generic)] = paths[typed.path].items()
    for name, schema_of in sorted(typed.schemas.items()):
        prefix = f"{typed.param}.{re.sub(r'[^A-Za-z0-9._-]', '_', name)}."
        schema = schema_of(f"#/components/schemas/{prefix}{{model}}")
        for def_name, sub in schema.pop("$defs", {}).items():
            components[prefix + def_name] = sub
        item = copy.deepcopy(generic)
        item["operationId"] = f"{generic['operationId']}_{prefix.strip('.').replace('.', '_')}"
        item["summary"] = f"{generic['summary']} ({typed.param} {name!r})"
        item["parameters"] = [p for p in item.get("parameters", []) if p["name"] != typed.param]
        if not item["parameters"]:
            del item["parameters"]
        body = item["requestBody"]["content"]["application/json"]
        body["schema"] = {
            "allOf": [body["schema"], {"type": "object", "properties": {typed.field: schema}}]
        }
        concrete = typed.path.replace("{" + typed.param + "}", quote(name, safe=""))
        paths[concrete] = {method: item}


def openapi_document(
    ops: Sequence[Operation],
    *,
    title: str,
    version: str,
    server_url: str,
    typed: Sequence[Typed] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``ops``, served at ``server_url`` (its mount point),
    with the concrete paths of ``typed``."""
    refs, top = models_json_schema(_models(ops), ref_template=REF)
    error_ref = refs[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        item: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "responses": {
                str(op.status): {
                    "description": op.response.__doc__.strip().splitlines()[0]
                    if op.response.__doc__
                    else "OK",
                    "content": _json(refs[(op.response, "serialization")]),
                }
            },
        }
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"},
             "description": d}
            for n, d in op.params
        ]  # fmt: skip
        if op.query is not None:
            params.extend(_query_parameters(op.query))
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": op.body_required,
                "content": _json(refs[(op.body, "validation")]),
            }
        for code in sorted({*op.errors, 401}):
            item["responses"][str(code)] = {
                "description": ERRORS[code],
                "content": _json(error_ref),
            }
        paths.setdefault(op.path, {})[op.method.lower()] = item
    components = dict(top.get("$defs", {}))
    for t in typed:
        _typed_paths(paths, components, t)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The qanat HTTP API (SPEC §13): start and steer executions, send "
            'events, read history. Errors are {"error": "<sentence>"}.',
        },
        "servers": [{"url": server_url or "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # A server started with a token requires it on every route; without one, none.
        "security": [{"bearer": []}, {}],
    }
