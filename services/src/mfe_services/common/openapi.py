"""Each service's OpenAPI 3.1 document, generated from its routes: an endpoint carries what it reads and
answers (`@operation`), the route table gives the path and method, and what every service shares (/health,
/version, JSON errors, the bearer token, the body checks of `json_body`) is added here once. Served at
/openapi.json; the suite fuzzes each document against the running service."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from starlette.routing import BaseRoute, Route

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "The body is not a JSON object, or holds what cannot be stored (NUL, a lone surrogate, deep nesting)",
    401: "No bearer token, or one that is invalid or expired",
    403: "The token's role may not do this",
    404: "Not found",
    409: "Conflicts with what exists",
    413: "The body is larger than the service accepts",
    422: "A field breaks its rule (the error names it)",
    502: "The service behind the gateway failed to answer",
    503: "A dependency is down, or the stack is in maintenance",
    504: "The service behind the gateway did not answer in time",
}


def obj(properties: Mapping[str, Any], required: Sequence[str] = (), *, closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def operation(
    summary: str,
    *,
    responses: Mapping[int, dict[str, Any] | None],
    body: dict[str, Any] | None = None,
    auth: bool = False,
    parameters: Sequence[dict[str, Any]] = (),
    links: Mapping[int, Mapping[str, dict[str, Any]]] | None = None,
) -> Callable[[Endpoint], Endpoint]:
    """What an endpoint reads and answers: `responses` maps a status to its JSON body's schema (None: no
    body, or the shared error body for a 4xx/5xx); `links`, by status, the operations an answer leads to
    (OpenAPI links: what a client, and the fuzzer's stateful runs, call next with values from it)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.openapi = {  # type: ignore[attr-defined]
            "summary": summary,
            "responses": dict(responses),
            "body": body,
            "auth": auth,
            "parameters": list(parameters),
            "links": {int(s): dict(v) for s, v in (links or {}).items()},
        }
        return endpoint

    return mark


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _response(status: int, schema: dict[str, Any] | None, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": REASONS.get(status, str(status))}
    if schema is None and status >= 400:
        schema = ERROR
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    if headers:
        answer["headers"] = dict(headers)
    return answer


def _shared(service: str, version_path: str) -> dict[str, Any]:
    checks = obj({"status": {"type": "string"}}, ["status"])
    health = obj(
        {"status": {"enum": ["healthy", "unhealthy"]}, "checks": {"type": "object", "additionalProperties": checks}},
        ["status"],
    )
    version = obj({"service": {"const": service}, "version": {"type": "string"}}, ["service", "version"], closed=True)
    live = obj({"status": {"const": "alive"}, "service": {"const": service}, "version": {"type": "string"}})
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Every dependency checked: healthy (200) or not (503)",
                "responses": {"200": _response(200, health), "503": _response(503, health)},
            }
        },
        "/health/live": {
            "get": {"operationId": "live", "summary": "The process answers", "responses": {"200": _response(200, live)}}
        },
        version_path: {
            "get": {
                "operationId": "version",
                "summary": "The release this instance runs (public through the gateway)",
                "responses": {"200": _response(200, version)},
            }
        },
    }


def document(service: str, version: str, routes: Sequence[BaseRoute], version_path: str) -> dict[str, Any]:
    """The service's document: its shared routes, then every route whose endpoint is an `@operation`."""
    paths = _shared(service, version_path)
    for route in routes:
        spec = getattr(route, "endpoint", None) and getattr(route.endpoint, "openapi", None)  # type: ignore[attr-defined]
        if not isinstance(route, Route) or spec is None:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            responses = {int(s): schema for s, schema in spec["responses"].items()}
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in route.param_convertors
            ] + spec["parameters"]
            op: dict[str, Any] = {"operationId": f"{method.lower()}_{route.name}", "summary": spec["summary"]}
            if parameters:
                op["parameters"] = parameters
            if spec["body"] is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec["body"]}}}
                responses.setdefault(400, None)
                responses.setdefault(413, None)
            if spec["auth"]:
                op["security"] = [{"bearer": []}]
                responses.setdefault(401, None)
            op["responses"] = {str(s): _response(s, schema) for s, schema in sorted(responses.items())}
            for status, named in spec["links"].items():
                op["responses"][str(status)]["links"] = copy.deepcopy(named)
            paths.setdefault(route.path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": f"mfe {service}", "version": version},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


def gateway_document(
    service: str,
    version: str,
    documents: Mapping[str, dict[str, Any] | None],
    prefixes: Mapping[str, str],
    public: frozenset[tuple[str, str]],
) -> dict[str, Any]:
    """The gateway's document: its own /health routes, then each service's operations under that service's
    prefix (the service's /health stays behind the gateway), as the gateway answers them: a bearer token
    on every operation it does not declare public, and 502, 503 (maintenance, an upstream away) and 504."""
    shared = _shared(service, "/unused")
    paths: dict[str, Any] = {"/health": shared["/health"], "/health/live": shared["/health/live"]}
    missing = sorted(name for name, doc in documents.items() if doc is None)
    for name, doc in sorted(documents.items()):
        prefix = prefixes[name]
        for path, operations in (doc or {}).get("paths", {}).items():
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            for method, given in operations.items():
                op = copy.deepcopy(given)
                op["operationId"] = f"{name}.{op.get('operationId', method)}"
                op["tags"] = [name]
                responses = op.setdefault("responses", {})
                for answer in responses.values():  # a link names an operation of the same service
                    for link in answer.get("links", {}).values():
                        link["operationId"] = f"{name}.{link['operationId']}"
                if (method.upper(), path) not in public and path != f"{prefix}/version":
                    op["security"] = [{"bearer": []}]
                    responses.setdefault("401", _response(401, None))
                for status in (502, 503, 504):
                    responses.setdefault(str(status), _response(status, None))
                paths.setdefault(path, {})[method] = op
    info: dict[str, Any] = {"title": f"mfe {service}", "version": version}
    if missing:
        info["description"] = f"No document from: {', '.join(missing)} (its /openapi.json did not answer)."
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }
