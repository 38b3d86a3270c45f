"""openapi.yaml tells the truth about the REST API.

Three checks keep the description honest as the handlers change:

1. Every (path, method) that ``default_handlers`` serves is in the spec, and nothing else is.
2. The document is OpenAPI 3.0 as far as can be checked without an OpenAPI validator: its
   structure (a compact JSON schema of the OpenAPI 3.0 objects it may use), every ``$ref``, path
   templates against their parameters, and every Schema Object (OpenAPI 3.0's keywords only, a
   single ``type``, ``required`` names that exist, and JSON Schema draft 4 meta-validation).
3. Real responses of a real server (real engine, static and NVML-double GPUs) carry status codes
   the spec lists for the operation, and JSON bodies that validate against its schemas.

``nullable``: the spec uses OpenAPI 3.0's ``nullable: true``, which JSON Schema does not know.
:func:`json_schema` turns each ``{"type": T, "nullable": true}`` into ``{"type": [T, "null"]}``
(adding ``None`` to an ``enum``) before jsonschema sees a schema; so that this conversion is
exact, check 2 requires ``nullable`` to stand beside a ``type``, as OpenAPI 3.0.3 defines it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import jsonschema
import nvml_double
import pytest
import yaml
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    TEST_IMAGE_LABEL,
    TEST_LABEL,
    TEST_RUN,
    kernel_name,
)
from jupyter_server.base.handlers import APIHandler
from jupyter_server.serverapp import ServerApp
from ledger_records import record_booking
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from tornado import web

import jupyter_gpu_containers
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.safefiles import owner_name
from jupyter_gpu_containers.host.user_packages import packages_key
from jupyter_gpu_containers.routes.base import NotFoundHandler
from jupyter_gpu_containers.routes.handlers import default_handlers
from jupyter_gpu_containers.services import services_for

SPEC_PATH = Path(jupyter_gpu_containers.__file__).parent / "openapi.yaml"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
BASE = "/gpu-containers"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
HANDLER_METHODS = ("get", "post", "put", "delete", "patch")
SPEC_URI = "urn:jupyter-gpu-containers:openapi"
NO_PULL = "0" * 32


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise accept silently: a key given
    twice in one mapping (the last would win, e.g. one of two `get:` operations lost) and
    keys that are not strings (an unquoted `200:` is an int)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for key, (key_node, _) in zip(keys, node.value):
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is not a string", key_node.start_mark
                )
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.load(f, Loader=_StrictLoader)  # a SafeLoader
    return loaded


# --------------------------------------------------------------------------- helpers


def json_schema(node: Any) -> Any:
    """A deep copy of ``node`` with OpenAPI 3.0's ``nullable`` written as JSON Schema."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and "type" in node:
        out["type"] = [node["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def pointer_get(document: Any, pointer: str) -> Any:
    """Resolve a JSON pointer ("/components/schemas/Pull") in ``document``; KeyError if absent."""
    node = document
    for token in pointer.lstrip("/").split("/") if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise KeyError(pointer)
    return node


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def deref(spec: dict[str, Any], node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """Follow a Reference Object (to its target and the target's pointer)."""
    while "$ref" in node:
        pointer = node["$ref"][1:]
        node = pointer_get(spec, pointer)
    return node, pointer


def walk(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) in ``node``, depth first."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{escape(str(key))}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


def served_routes() -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every route the extension serves: tornado's named groups
    become path templates; a handler's methods are those defined on it or on its bases below
    jupyter_server's APIHandler (and so below tornado's RequestHandler)."""
    routes = set()
    for pattern, handler in default_handlers(BASE):
        if handler is NotFoundHandler:
            continue  # any other path: the 404 the description's introduction speaks of
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
        assert re.fullmatch(r"[\w/{}.-]+", path), f"{pattern!r} is not a plain path template"
        own = [
            klass
            for klass in handler.__mro__
            if not (
                klass is object
                or issubclass(APIHandler, klass)  # APIHandler and its bases
                or issubclass(web.RequestHandler, klass)
            )
        ]
        methods = {name for klass in own for name in HANDLER_METHODS if name in vars(klass)}
        assert methods, f"{handler.__name__} implements no HTTP method"
        routes |= {(path, method) for method in methods}
    return routes


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


# --------------------------------------------------------------------------- 1. routes


def test_spec_version_is_the_package_version(spec: dict[str, Any]) -> None:
    declared = re.search(r'(?m)^version = "([^"]+)"', PYPROJECT.read_text(encoding="utf-8"))
    assert declared is not None, "no static version in pyproject.toml"
    assert (
        spec["info"]["version"]
        == jupyter_gpu_containers.__version__
        == declared.group(1)
        == installed_version("jupyter_gpu_containers")
    )


def test_every_route_and_method_is_described(spec: dict[str, Any]) -> None:
    described = {(path, method) for path, method, _ in operations(spec)}
    served = served_routes()
    assert not served - described, f"served but not in openapi.yaml: {sorted(served - described)}"
    assert not described - served, f"in openapi.yaml but not served: {sorted(described - served)}"


def test_module_docstring_points_at_the_spec() -> None:
    from jupyter_gpu_containers.routes import handlers

    assert "openapi.yaml" in (handlers.__doc__ or "")
    assert SPEC_PATH.is_file()


# --------------------------------------------------------------------------- 2. the document


def _or_ref(name: str) -> dict[str, Any]:
    # anyOf, not oneOf: a Reference Object is also an object, which is all "Schema" asks here.
    return {"anyOf": [{"$ref": "#/definitions/Reference"}, {"$ref": f"#/definitions/{name}"}]}


def _map(of: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": of}


def _strict(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI object: these fields, plus x- extensions, and nothing else."""
    strict: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "patternProperties": {"^x-": {}},
        "additionalProperties": False,
    }
    if required:  # draft 4 wants a non-empty list
        strict["required"] = required
    return strict


_STR: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_ANY_OBJECT: dict[str, Any] = {"type": "object"}  # Schema Objects: checked on their own below
_OPERATION_KEYS = {m: {"$ref": "#/definitions/Operation"} for m in HTTP_METHODS}

# The OpenAPI 3.0 objects this project's spec may use (the structure of the official schema for
# them, https://spec.openapis.org/oas/3.0/schema/2021-09-28, without callbacks, links,
# encodings and OAuth flows, which it does not use and so may not contain unchecked).
OPENAPI_30_STRUCTURE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    **_strict(
        ["openapi", "info", "paths"],
        {
            "openapi": {"type": "string", "pattern": r"^3\.0\.\d+$"},
            "info": {"$ref": "#/definitions/Info"},
            "servers": {"type": "array", "items": {"$ref": "#/definitions/Server"}},
            "paths": {"$ref": "#/definitions/Paths"},
            "components": {"$ref": "#/definitions/Components"},
            "security": {"type": "array", "items": {"$ref": "#/definitions/Requirement"}},
            "tags": {"type": "array", "items": {"$ref": "#/definitions/Tag"}},
            "externalDocs": {"$ref": "#/definitions/ExternalDocs"},
        },
    ),
    "definitions": {
        "Reference": {
            "type": "object",
            "required": ["$ref"],
            "properties": {"$ref": {"type": "string", "pattern": "^#/"}},
            "additionalProperties": False,
        },
        "ExternalDocs": _strict(["url"], {"url": _STR, "description": _STR}),
        "Info": _strict(
            ["title", "version"],
            {
                "title": _STR,
                "description": _STR,
                "termsOfService": _STR,
                "contact": _strict([], {"name": _STR, "url": _STR, "email": _STR}),
                "license": _strict(["name"], {"name": _STR, "url": _STR}),
                "version": _STR,
            },
        ),
        "Server": _strict(
            ["url"],
            {
                "url": _STR,
                "description": _STR,
                "variables": _map(
                    _strict(
                        ["default"],
                        {
                            "default": _STR,
                            "description": _STR,
                            "enum": {"type": "array", "items": _STR, "minItems": 1},
                        },
                    )
                ),
            },
        ),
        "Tag": _strict(
            ["name"],
            {
                "name": _STR,
                "description": _STR,
                "externalDocs": {"$ref": "#/definitions/ExternalDocs"},
            },
        ),
        "Requirement": _map({"type": "array", "items": _STR}),
        "Paths": {
            "type": "object",
            "patternProperties": {"^/": {"$ref": "#/definitions/PathItem"}, "^x-": {}},
            "additionalProperties": False,
        },
        "PathItem": _strict(
            [],
            {
                "summary": _STR,
                "description": _STR,
                "parameters": {"type": "array", "items": _or_ref("Parameter")},
                **_OPERATION_KEYS,
            },
        ),
        "Operation": _strict(
            ["responses"],
            {
                "tags": {"type": "array", "items": _STR},
                "summary": _STR,
                "description": _STR,
                "externalDocs": {"$ref": "#/definitions/ExternalDocs"},
                "operationId": _STR,
                "parameters": {"type": "array", "items": _or_ref("Parameter")},
                "requestBody": _or_ref("RequestBody"),
                "responses": {"$ref": "#/definitions/Responses"},
                "deprecated": _BOOL,
                "security": {"type": "array", "items": {"$ref": "#/definitions/Requirement"}},
            },
        ),
        "Parameter": {
            "allOf": [
                _strict(
                    ["name", "in", "schema"],
                    {
                        "name": _STR,
                        "in": {"enum": ["query", "header", "path", "cookie"]},
                        "description": _STR,
                        "required": _BOOL,
                        "deprecated": _BOOL,
                        "allowEmptyValue": _BOOL,
                        "style": _STR,
                        "explode": _BOOL,
                        "schema": _or_ref("Schema"),
                        "example": {},
                    },
                ),
                {  # path parameters must say required: true
                    "oneOf": [
                        {
                            "properties": {"in": {"enum": ["path"]}, "required": {"enum": [True]}},
                            "required": ["required"],
                        },
                        {"properties": {"in": {"enum": ["query", "header", "cookie"]}}},
                    ]
                },
            ]
        },
        "RequestBody": _strict(
            ["content"],
            {
                "description": _STR,
                "required": _BOOL,
                "content": {"$ref": "#/definitions/Content"},
            },
        ),
        "Content": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _strict([], {"schema": _or_ref("Schema"), "example": {}}),
        },
        "Responses": {
            "type": "object",
            "minProperties": 1,
            "patternProperties": {
                r"^([1-5]\d\d|[1-5]XX|default)$": _or_ref("Response"),
                "^x-": {},
            },
            "additionalProperties": False,
        },
        "Response": _strict(
            ["description"],
            {
                "description": _STR,
                "headers": _map(_or_ref("Header")),
                "content": {"$ref": "#/definitions/Content"},
            },
        ),
        "Header": _strict(
            ["schema"],
            {
                "description": _STR,
                "required": _BOOL,
                "deprecated": _BOOL,
                "schema": _or_ref("Schema"),
                "example": {},
            },
        ),
        "Schema": _ANY_OBJECT,
        "SecurityScheme": {
            "oneOf": [
                _strict(
                    ["type", "name", "in"],
                    {
                        "type": {"enum": ["apiKey"]},
                        "name": _STR,
                        "in": {"enum": ["query", "header", "cookie"]},
                        "description": _STR,
                    },
                ),
                _strict(
                    ["type", "scheme"],
                    {
                        "type": {"enum": ["http"]},
                        "scheme": _STR,
                        "bearerFormat": _STR,
                        "description": _STR,
                    },
                ),
            ]
        },
        "Components": _strict(
            [],
            {
                "schemas": _map(_or_ref("Schema")),
                "responses": _map(_or_ref("Response")),
                "parameters": _map(_or_ref("Parameter")),
                "requestBodies": _map(_or_ref("RequestBody")),
                "headers": _map(_or_ref("Header")),
                "securitySchemes": _map(_or_ref("SecurityScheme")),
            },
        ),
    },
}

# OpenAPI 3.0's Schema Object keywords (its JSON Schema subset and its own additions).
SCHEMA_KEYWORDS = {
    "title",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "type",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "items",
    "properties",
    "additionalProperties",
    "description",
    "format",
    "default",
    "nullable",
    "discriminator",
    "readOnly",
    "writeOnly",
    "example",
    "externalDocs",
    "deprecated",
}
SCHEMA_TYPES = {"integer", "number", "string", "boolean", "array", "object"}


def schema_problems(schema: Any, where: str) -> Iterator[str]:
    """What makes ``schema`` not an OpenAPI 3.0 Schema Object (recursively)."""
    if not isinstance(schema, dict):
        yield f"{where}: not an object"
        return
    if "$ref" in schema:
        if set(schema) != {"$ref"}:
            yield f"{where}: $ref with siblings {sorted(set(schema) - {'$ref'})} (ignored in 3.0)"
        return
    for key in set(schema) - SCHEMA_KEYWORDS:
        if not key.startswith("x-"):
            yield f"{where}: {key!r} is not an OpenAPI 3.0 schema keyword"
    kind = schema.get("type")
    if kind is not None and kind not in SCHEMA_TYPES:
        yield f"{where}: type {kind!r} (OpenAPI 3.0 takes one of {sorted(SCHEMA_TYPES)})"
    if kind == "array" and "items" not in schema:
        yield f"{where}: an array needs items"
    if "nullable" in schema and "type" not in schema:
        yield f"{where}: nullable without a type has no effect in OpenAPI 3.0.3"
    properties = schema.get("properties", {})
    missing = set(schema.get("required", [])) - set(properties)
    if missing and ("properties" in schema or schema.get("additionalProperties") is False):
        yield f"{where}: required but not among properties: {sorted(missing)}"
    for name, sub in properties.items():
        yield from schema_problems(sub, f"{where}/properties/{name}")
    for key in ("items", "not"):
        if key in schema:
            yield from schema_problems(schema[key], f"{where}/{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from schema_problems(schema["additionalProperties"], f"{where}/additionalProperties")
    for key in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from schema_problems(sub, f"{where}/{key}/{i}")


def schema_objects(spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every top-level Schema Object: components' schemas and each `schema` of a parameter,
    header or media type (found under paths and components, never inside schemas)."""
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        yield f"/components/schemas/{name}", schema
    sections = {key: value for key, value in spec.get("components", {}).items() if key != "schemas"}
    for where, node in [*walk(spec["paths"], "/paths"), *walk(sections, "/components")]:
        if isinstance(node, dict) and "schema" in node and "/x-" not in where:
            yield f"{where}/schema", node["schema"]


def test_structure_is_openapi_30(spec: dict[str, Any]) -> None:
    jsonschema.Draft4Validator.check_schema(OPENAPI_30_STRUCTURE)
    errors = sorted(
        jsonschema.Draft4Validator(OPENAPI_30_STRUCTURE).iter_errors(spec),
        key=lambda e: list(e.absolute_path),
    )
    assert not errors, "\n".join(
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors
    )


def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    refs = [
        (where, node["$ref"])
        for where, node in walk(spec)
        if isinstance(node, dict) and "$ref" in node
    ]
    assert all(isinstance(ref, str) for _, ref in refs)
    assert refs
    broken = []
    for where, ref in refs:
        try:
            assert ref.startswith("#/")
            pointer_get(spec, ref[1:])
        except (AssertionError, KeyError, IndexError, ValueError):
            broken.append(f"{where}: {ref}")
    assert not broken, broken


def test_schemas_are_openapi_30_schema_objects(spec: dict[str, Any]) -> None:
    found = list(schema_objects(spec))
    assert len(found) > 20
    problems = [p for where, schema in found for p in schema_problems(schema, where)]
    assert not problems, "\n".join(problems)
    for where, schema in found:
        try:
            jsonschema.Draft4Validator.check_schema(json_schema(schema))
        except jsonschema.SchemaError as e:
            pytest.fail(f"{where}: {e.message}")


def test_operations_are_complete(spec: dict[str, Any]) -> None:
    """Path templates match their parameters, every operation is authenticated (403 listed), a
    2xx answer has a body schema unless it is a 204, and examples fit their schemas."""
    schemes = set(spec["components"]["securitySchemes"])
    assert spec["security"] and all(set(req) <= schemes for req in spec["security"])
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, method, op in operations(spec):
        item = spec["paths"][path]
        params = [
            deref(spec, p, "")[0] for p in [*item.get("parameters", []), *op.get("parameters", [])]
        ]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), (path, method)
        for p in params:
            if "example" in p:
                jsonschema.Draft4Validator(json_schema(p["schema"])).validate(p["example"])
        responses = op["responses"]
        assert "403" in responses, f"{method.upper()} {path} is authenticated: list 403"
        successes = [code for code in responses if code.startswith("2")]
        assert successes, (path, method)
        for code in successes:
            response, _ = deref(spec, responses[code], "")
            assert (code == "204") == ("content" not in response), (path, method, code)
        if method in ("post", "put"):
            assert "requestBody" in op, (path, method)
        for code, response in responses.items():
            response, _ = deref(spec, response, "")
            if code[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, code)


# --------------------------------------------------------------------------- 3. real responses


KEEP = "/gpu-containers/kernels/{kernel_id}/keep"
# Operations whose success needs what this test's server lacks, each checked against the spec
# elsewhere: a keep needs a kernel the idle-GPU policy warned (test_reclaim.py).
SUCCEEDED_ELSEWHERE = {(KEEP, "post")}


class Conformance:
    """Checks a real response against the spec: its status is listed for the operation, and
    a JSON body validates against that response's schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(json_schema(spec), default_specification=DRAFT4)
        )
        self.checked: set[tuple[str, str, str]] = set()

    def check(self, response: Any, path: str, method: str) -> Any:
        """The body (parsed JSON, raw text for event streams, None when empty)."""
        code = str(response.code)
        op = self.spec["paths"][path][method]
        assert code in op["responses"], (
            f"{method.upper()} {path} answered {code}, which openapi.yaml does not list: "
            f"{response.body[:300]!r}"
        )
        described, pointer = deref(
            self.spec, op["responses"][code], f"/paths/{escape(path)}/{method}/responses/{code}"
        )
        self.checked.add((path, method, code))
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        if "content" not in described:
            assert not response.body, f"{method.upper()} {path} {code} should have no body"
            return None
        assert media in described["content"], (path, method, code, media)
        if media != "application/json":
            return response.body.decode()
        body = json.loads(response.body)
        ref = f"{SPEC_URI}#{pointer}/content/{escape(media)}/schema"
        validator = jsonschema.Draft4Validator({"$ref": ref}, registry=self.registry)
        errors = list(validator.iter_errors(body))
        assert not errors, f"{method.upper()} {path} {code}:\n" + "\n".join(
            f"  /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors
        )
        return body


async def call(
    jp_fetch: Any,
    conformance: Conformance,
    path: str,
    method: str = "get",
    *,
    values: dict[str, str] | None = None,
    body: Any = None,
    **kwargs: Any,
) -> tuple[int, Any, Any]:
    """Request ``path`` (a spec path template, filled from ``values``); check the answer."""
    url = path.format(**(values or {}))
    response = await jp_fetch(
        *url.strip("/").split("/"),
        method=method.upper(),
        body=None if body is None else json.dumps(body),
        raise_error=False,
        **kwargs,
    )
    return response.code, conformance.check(response, path, method), response


@pytest.fixture
def conformance(spec: dict[str, Any]) -> Conformance:
    return Conformance(spec)


@pytest.fixture
def holders(docker_client: Any, tmp_path: Path) -> Iterator[None]:
    """Two kernels' GPU bookings in the shared ledger, from another host's view of the engine
    (so their servers cannot be judged dead): another user's on GPU 3, the caller's on GPU 2."""
    containers = []
    for kernel_id, gpu, uid, user in [
        ("alice-kernel-id", "GPU-test-3", "4242", "alice"),
        ("openapi-kernel-id", "GPU-test-2", str(os.getuid()), "me"),
    ]:
        containers.append(
            docker_client.containers.create(
                DEBIAN_IMAGE,
                "sleep 300",
                labels={
                    TEST_LABEL: TEST_RUN,
                    L.MANAGED: "true",
                    L.KERNEL_ID: kernel_id,
                    L.GPUS: gpu,
                    L.UID: uid,
                    L.USER: user,
                    L.NOTEBOOK: f"{user}/work.ipynb",
                    L.IMAGE: NGC_IMAGE,
                    L.SERVER_ID: f"{user}-server",
                    L.OWNER_PROCESS: "another-host/boot/1/1",
                },
            )
        )
        # The record its server wrote: the ledger believes no labels without it.
        record_booking(tmp_path / "state", containers[-1].id, gpu, uid, kernel_id)
    yield
    for container in containers:
        container.remove(force=True)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


# A pull that fails at once without leaving the host: nothing listens on port 1.
UNREACHABLE = "127.0.0.1:1/jgc-openapi/absent:1"


@pytest.mark.server_config(
    lambda _: {
        "ContainerPolicy": {
            "allowed_images": [
                "jgc/*",
                "jgc-test/*",
                "127.0.0.1:1/*",
                "localhost/jupyter-gpu-containers/saved/*",
            ]
        },
        "PullManager": {"progress_interval": 0.0},
        "ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}},
        # This server's account administers GPU sharing: the admin view answers it.
        "GPUAdmin": {"admin_users": [owner_name(os.getuid())]},
    }
)
async def test_real_responses_match_the_spec(
    holders: None, jp_fetch: Any, jp_root_dir: Path, conformance: Conformance
) -> None:
    # The catalog first: waiting for the readiness probes also means that no probe container
    # the server started on its own is still running when the test ends.
    code, catalog, _ = await call(
        jp_fetch, conformance, "/gpu-containers/images", params={"wait": "1"}, request_timeout=180
    )
    assert code == 200, catalog
    rows = {row["reference"]: row for row in catalog["images"]}
    assert rows[DEBIAN_IMAGE]["kernel_ready"] is True
    # What a reference names now, as a notebook's stamp is checked (issue 31).
    code, content, _ = await call(
        jp_fetch, conformance, "/gpu-containers/images/content", params={"ref": DEBIAN_IMAGE}
    )
    assert code == 200 and content["digest"] == rows[DEBIAN_IMAGE]["id"], content
    assert any(not row["pulled"] for row in rows.values())
    assert any(not row["allowed"] for row in rows.values())

    code, status, _ = await call(jp_fetch, conformance, "/gpu-containers/status")
    assert code == 200 and status["engine"]["ok"], status

    code, report, _ = await call(jp_fetch, conformance, "/gpu-containers/gpus")
    assert code == 200, report
    held = {g["uuid"]: [h["mine"] for h in g["holders"]] for g in report["gpus"]}
    assert held["GPU-test-2"] == [True] and held["GPU-test-3"] == [False]

    code, mine, _ = await call(jp_fetch, conformance, "/gpu-containers/allocations")
    assert code == 200, mine
    assert [a["kernel_id"] for a in mine["allocations"]] == ["openapi-kernel-id"]

    # Docker: no cluster view (tests/test_k8s_cluster_view.py checks Kubernetes' answers).
    code, cluster, _ = await call(jp_fetch, conformance, "/gpu-containers/cluster")
    assert (code, cluster) == (200, {"backend": "docker", "pools": [], "engine_error": ""})

    # Pulls: a refused one, a malformed one, and one that fails at the registry.
    assert (await call(jp_fetch, conformance, "/gpu-containers/pulls"))[0] == 200
    for body, expected in [
        ({}, 400),
        ({"image": "not a reference"}, 400),
        ({"image": "ubuntu:24.04", "auth": {"username": ""}}, 400),
        ({"image": "forbidden.example/x:1"}, 403),
    ]:
        code, error, _ = await call(
            jp_fetch, conformance, "/gpu-containers/pulls", "post", body=body
        )
        assert code == expected, (body, error)
    code, pull, response = await call(
        jp_fetch, conformance, "/gpu-containers/pulls", "post", body={"image": UNREACHABLE}
    )
    assert code == 202, pull
    assert response.headers["Location"].endswith(f"/gpu-containers/pulls/{pull['id']}")
    ids = {"pull_id": pull["id"]}
    code, stream, _ = await call(
        jp_fetch,
        conformance,
        "/gpu-containers/pulls/{pull_id}/events",
        values=ids,
        request_timeout=120,
    )
    assert code == 200, stream
    events = sse_events(stream)
    assert events and events[-1][0] == "error" == events[-1][1]["state"]
    pull_schema = {"$ref": f"{SPEC_URI}#/components/schemas/Pull"}
    validator = jsonschema.Draft4Validator(pull_schema, registry=conformance.registry)
    for name, data in events:
        assert name in ("progress", "done", "error", "cancelled")
        validator.validate(data)
    code, pull, _ = await call(jp_fetch, conformance, "/gpu-containers/pulls/{pull_id}", values=ids)
    assert code == 200 and pull["state"] == "error" and pull["error_status"] >= 400, pull
    code, listing, _ = await call(jp_fetch, conformance, "/gpu-containers/pulls")
    assert [p["id"] for p in listing["pulls"]] == [pull["id"]]
    code, cancelled, _ = await call(
        jp_fetch, conformance, "/gpu-containers/pulls/{pull_id}", "delete", values=ids
    )
    assert code == 200 and cancelled["state"] == "error", cancelled  # ended before the cancel
    for path, method in [
        ("/gpu-containers/pulls/{pull_id}", "get"),
        ("/gpu-containers/pulls/{pull_id}", "delete"),
        ("/gpu-containers/pulls/{pull_id}/events", "get"),
    ]:
        code, error, _ = await call(
            jp_fetch, conformance, path, method, values={"pull_id": NO_PULL}
        )
        assert code == 404 and "no pull" in error["message"]

    # Registry logins: set, list, forget, forget again; a bad body.
    login = "/gpu-containers/registries/{registry}/credentials"
    where = {"registry": "registry.example"}
    code, _, _ = await call(
        jp_fetch, conformance, login, "put", values=where, body={"username": "me", "password": "x"}
    )
    assert code == 204
    code, registries, _ = await call(jp_fetch, conformance, "/gpu-containers/registries")
    assert registries == {
        "registries": [{"registry": "registry.example", "username": "me", "source": "user"}]
    }
    assert (await call(jp_fetch, conformance, login, "delete", values=where))[0] == 204
    assert (await call(jp_fetch, conformance, login, "delete", values=where))[0] == 404
    code, _, _ = await call(jp_fetch, conformance, login, "put", values=where, body={"user": 1})
    assert code == 400

    # The caller's packages, kept per image in the workspace: none yet (no kernel started
    # since the workspace was made), one folder, its reset, and keys that name none.
    code, packages, _ = await call(jp_fetch, conformance, "/gpu-containers/packages")
    assert code == 200 and packages["enabled"] and packages["folders"] == [], packages
    key = packages_key(DEBIAN_IMAGE)
    info = jp_root_dir / ".jupyter-gpu-containers/packages" / key / "lib/python3/site-packages"
    (info / "tiny-1.0.dist-info").mkdir(parents=True)
    code, packages, _ = await call(jp_fetch, conformance, "/gpu-containers/packages")
    assert [(f["key"], f["image"], f["packages"]) for f in packages["folders"]] == [
        (key, DEBIAN_IMAGE, 1)
    ]
    folder = "/gpu-containers/packages/{key}"
    assert (await call(jp_fetch, conformance, folder, "delete", values={"key": key}))[0] == 204
    assert (await call(jp_fetch, conformance, folder, "delete", values={"key": key}))[0] == 404
    code, error, _ = await call(jp_fetch, conformance, folder, "delete", values={"key": "x..y"})
    assert code == 400 and "does not name" in error["message"]

    # A notebook's kernel: the refusals that come before any kernel starts.
    for body, expected in [
        ({}, 400),
        ({"path": "x.ipynb", "gpus": 1}, 400),
        ({"path": "x.ipynb", "gpus": -1, "kernel_name": "x"}, 400),
        ({"path": "x.ipynb", "gpus": 1, "kernel_name": "no-such-spec"}, 404),
    ]:
        code, _, _ = await call(
            jp_fetch, conformance, "/gpu-containers/notebooks/kernel", "post", body=body
        )
        assert code == expected, body

    # A notebook's kernel, read: a bad path, then a notebook without a session.
    state_path = "/gpu-containers/notebooks/kernel"
    code, error, _ = await call(jp_fetch, conformance, state_path, params={"path": "x.py"})
    assert code == 400 and "notebook's path" in error["message"]
    code, state, _ = await call(jp_fetch, conformance, state_path, params={"path": "openapi.ipynb"})
    assert code == 200 and state["kernel"] is None and state["request"] is None, state

    # No login: 403, as a JSON error.
    code, error, _ = await call(
        jp_fetch,
        conformance,
        "/gpu-containers/status",
        headers={"Authorization": "token not-the-token"},
    )
    assert code == 403 and error["message"]

    # A notebook's kernel, started with one GPU: the reply, then the caller's holding.
    (jp_root_dir / "openapi.ipynb").write_text("{}")
    request = {"path": "openapi.ipynb", "kernel_name": kernel_name(DEBIAN_IMAGE), "gpus": 1}
    code, started, _ = await call(
        jp_fetch, conformance, "/gpu-containers/notebooks/kernel", "post", body=request
    )
    assert code == 200 and started["gpus"] == 1, started
    kernel_id = started["session"]["kernel"]["id"]
    code, report, _ = await call(jp_fetch, conformance, "/gpu-containers/gpus")
    assert [h["kernel_id"] for h in report["gpus"][0]["holders"]] == [kernel_id]
    # The page saves the request in the notebook (its metadata); the state reads it there.
    saved = {"cells": [], "metadata": {"gpu_containers": {"gpus": 1}}, "nbformat": 4}
    (jp_root_dir / "openapi.ipynb").write_text(json.dumps({**saved, "nbformat_minor": 5}))
    code, state, _ = await call(jp_fetch, conformance, state_path, params={"path": "openapi.ipynb"})
    assert code == 200 and (state["request"], state["default"]) == (1, 0), state
    assert state["kernel"]["id"] == kernel_id and state["kernel"]["image"] == DEBIAN_IMAGE
    assert [g["uuid"] for g in state["kernel"]["gpus"]] == ["GPU-test-0"]

    # The kernel's own view: the list, the details, its log (the tail alone, which ends).
    code, kernels, _ = await call(jp_fetch, conformance, "/gpu-containers/kernels")
    assert code == 200 and [k["kernel_id"] for k in kernels["kernels"]] == [kernel_id]
    one = {"kernel_id": kernel_id}
    code, view, _ = await call(
        jp_fetch, conformance, "/gpu-containers/kernels/{kernel_id}", values=one
    )
    assert code == 200 and view["kernel_id"] == kernel_id
    code, log, _ = await call(
        jp_fetch,
        conformance,
        "/gpu-containers/kernels/{kernel_id}/log",
        values=one,
        params={"follow": "0"},
    )
    assert code == 200 and log.startswith("event: container\n"), log

    # Its environment saved as an image: nothing to save yet, then (a package's record in its
    # packages folder) the save, read, ended, and the saved image removed, once.
    save_path = "/gpu-containers/kernels/{kernel_id}/save"
    code, refused, _ = await call(jp_fetch, conformance, save_path, "post", values=one, body={})
    assert code == 409 and "no packages of yours" in refused["message"], refused
    (info / "tiny-1.0.dist-info").mkdir(parents=True, exist_ok=True)
    code, started, _ = await call(
        jp_fetch, conformance, save_path, "post", values=one, body={"name": "openapi"}
    )
    assert code == 202, started
    code, listing, _ = await call(jp_fetch, conformance, "/gpu-containers/saves")
    assert code == 200 and [s["id"] for s in listing["saves"]] == [started["id"]], listing
    services = services_for(ServerApp.instance())
    assert services is not None
    saves = services.saves
    underway = saves.get(started["id"])
    assert underway is not None
    await asyncio.wait_for(saves.wait(underway), 300)
    one_save = {"save_id": started["id"]}
    save_path = "/gpu-containers/saves/{save_id}"
    code, ended, _ = await call(jp_fetch, conformance, save_path, values=one_save)
    assert code == 200 and ended["state"] == "done", ended
    code, ended, _ = await call(jp_fetch, conformance, save_path, "delete", values=one_save)
    assert code == 200 and ended["state"] == "done", ended  # ended: a cancel changes nothing
    saved = {"image": started["image"]}
    for expected in (204, 404):
        code, _, _ = await call(
            jp_fetch, conformance, "/gpu-containers/saved-images", "delete", params=saved
        )
        assert code == expected
    code, refused, _ = await call(
        jp_fetch, conformance, "/gpu-containers/saved-images", "delete", params={"image": "x"}
    )
    assert code == 403 and "not an image you saved" in refused["message"], refused

    # An image built from the workspace: a recipe refused, then one built, followed as a save.
    code, refused, _ = await call(
        jp_fetch, conformance, "/gpu-containers/builds", "post", body={"path": "x/notes.txt"}
    )
    assert code == 400 and "not a recipe" in refused["message"], refused
    (jp_root_dir / "openapi-env").mkdir()
    (jp_root_dir / "openapi-env" / "Dockerfile").write_text(f"FROM {DEBIAN_IMAGE}\n")
    code, started, _ = await call(
        jp_fetch,
        conformance,
        "/gpu-containers/builds",
        "post",
        body={"path": "openapi-env/Dockerfile", "name": "openapi-build"},
    )
    assert code == 202 and started["kind"] == "build", started
    underway = saves.get(started["id"])
    assert underway is not None
    await asyncio.wait_for(saves.wait(underway), 300)
    code, ended, _ = await call(jp_fetch, conformance, save_path, values={"save_id": started["id"]})
    assert code == 200 and ended["state"] == "done", ended
    code, _, _ = await call(
        jp_fetch,
        conformance,
        "/gpu-containers/saved-images",
        "delete",
        params={"image": started["image"]},
    )
    assert code == 204

    # The same kernel, restarted in place without GPUs, then again with one.
    for gpus, held in ((0, []), (1, ["GPU-test-0"])):
        code, restarted, _ = await call(
            jp_fetch,
            conformance,
            "/gpu-containers/kernels/{kernel_id}/restart",
            "post",
            values=one,
            body={"gpus": gpus},
        )
        assert code == 200 and restarted == {"kernel_id": kernel_id, "gpus": gpus}, restarted
        code, report, _ = await call(jp_fetch, conformance, "/gpu-containers/gpus")
        holding = [
            g["uuid"]
            for g in report["gpus"]
            if any(h["kernel_id"] == kernel_id for h in g["holders"])
        ]
        assert holding == held, report

    # Its GPUs are not warned (reclaim is off here): nothing to keep. (A keep that succeeds
    # needs a warned kernel, on GPUs whose use can be read: test_reclaim.py checks its answer
    # against this spec.)
    code, refused, _ = await call(
        jp_fetch, conformance, KEEP, "post", values=one, body={"minutes": 30}
    )
    assert code == 409 and "nothing to keep" in refused["message"], refused

    # The queue: a start that needs two GPUs while one is free waits; its owner cancels it.
    (jp_root_dir / "queued.ipynb").write_text("{}")
    queued = asyncio.ensure_future(
        call(
            jp_fetch,
            conformance,
            "/gpu-containers/notebooks/kernel",
            "post",
            body={
                "path": "queued.ipynb",
                "kernel_name": kernel_name(DEBIAN_IMAGE),
                "gpus": 2,
                "wait": True,
            },
            request_timeout=120,
        )
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            code, waiting, _ = await call(jp_fetch, conformance, "/gpu-containers/queue")
            assert code == 200, waiting
            mine = [t for t in waiting["queue"] if t["yours"]]
            if mine:
                break
            assert not queued.done(), queued.result()
            assert time.monotonic() < deadline, waiting
            await asyncio.sleep(0.2)
        [ticket] = mine
        assert ticket["gpus"] and ticket["position"] >= 1, ticket
        where = {"kernel_id": ticket["kernel_id"]}
        # An administrator's release of it: it holds no GPUs yet (a shutdown would cancel it).
        code, refused, _ = await call(
            jp_fetch,
            conformance,
            "/gpu-containers/admin/kernels/{kernel_id}",
            "post",
            values=where,
            body={"action": "release"},
        )
        assert code == 409 and "holds none yet" in refused["message"], refused
        code, _, _ = await call(
            jp_fetch, conformance, "/gpu-containers/queue/{kernel_id}", "delete", values=where
        )
        assert code == 204
        code, ended, _ = await queued
        assert code == 409 and "cancelled" in ended["message"], ended
    finally:
        if not queued.done():
            queued.cancel()
    for gone_id in (ticket["kernel_id"], str(uuid.uuid4())):
        code, error, _ = await call(
            jp_fetch,
            conformance,
            "/gpu-containers/queue/{kernel_id}",
            "delete",
            values={"kernel_id": gone_id},
        )
        assert code == 404 and error["message"], error

    # GPU-hours (no quota configured here), the pre-pull schedule (none).
    code, quota, _ = await call(jp_fetch, conformance, "/gpu-containers/quota")
    assert code == 200 and quota["enabled"] is False and quota["used_hours"] >= 0, quota
    code, prepull, _ = await call(jp_fetch, conformance, "/gpu-containers/prepull")
    assert code == 200 and prepull["schedule"] == [], prepull

    # The admin view (this server's account is an administrator here), the metrics.
    code, view, _ = await call(jp_fetch, conformance, "/gpu-containers/admin")
    assert code == 200, view
    assert kernel_id in {h["kernel_id"] for h in view["holders"]}, view
    code, metrics, _ = await call(jp_fetch, conformance, "/gpu-containers/metrics")
    assert code == 200 and "jupyter_gpu_containers_gpus_held" in metrics, metrics
    assert "jupyter_gpu_containers_gpu_hours_used" in metrics

    # An admin action: releasing the kernel's GPUs restarts it without them, and says why.
    action = "/gpu-containers/admin/kernels/{kernel_id}"
    code, done, _ = await call(
        jp_fetch,
        conformance,
        action,
        "post",
        values=one,
        body={"action": "release", "reason": "The spec test."},
    )
    assert code == 200 and done["state"] == "done" and done["action"] == "release", done
    code, again, _ = await call(
        jp_fetch, conformance, action, "post", values=one, body={"action": "release"}
    )
    assert code == 409 and "holds no GPUs" in again["message"], again
    code, error, _ = await call(
        jp_fetch,
        conformance,
        action,
        "post",
        values={"kernel_id": str(uuid.uuid4())},
        body={"action": "shutdown"},
    )
    assert code == 404, error
    code, notices, _ = await call(jp_fetch, conformance, "/gpu-containers/admin/notices")
    assert code == 200 and [n["action"] for n in notices["notices"]] == ["release"], notices

    # Every operation the spec describes was answered with a success at least once.
    succeeded = {(path, method) for path, method, code in conformance.checked if code[0] == "2"}
    succeeded |= SUCCEEDED_ELSEWHERE
    assert succeeded == {(path, method) for path, method, _ in operations(conformance.spec)}


@pytest.fixture
def mig_box() -> Iterator[nvml_double.Box]:
    """The NVML double as eight A100s, the first with MIG enabled; restored afterwards."""
    nvml_double.BOX = nvml_double.eight_a100(mig_on=0)
    yield nvml_double.BOX
    nvml_double.BOX = nvml_double.eight_a100()


@pytest.mark.server_config(lambda _: NVML_DOUBLE_CONFIG)
async def test_nvml_gpu_report_matches_the_spec(
    mig_box: nvml_double.Box, jp_fetch: Any, conformance: Conformance, docker_client: Any
) -> None:
    """Live NVML facts (memory, utilisation, MIG instances) fit the same schemas."""
    code, report, _ = await call(jp_fetch, conformance, "/gpu-containers/gpus")
    assert code == 200 and report["source"] == "nvml", report
    assert any(g["parent_uuid"] for g in report["gpus"])  # MIG instances are listed
    # wait=1 also lets the probes the server started on its own finish before the test ends.
    code, catalog, _ = await call(
        jp_fetch, conformance, "/gpu-containers/images", params={"wait": "1"}, request_timeout=180
    )
    assert code == 200 and catalog["host"]["source"] == "nvml", catalog


def test_openapi_yaml_is_package_data() -> None:
    """The wheel ships the spec next to the handlers (hatchling's own file selection for the
    wheel target, without running a build)."""
    wheel = pytest.importorskip("hatchling.builders.wheel")
    builder = wheel.WheelBuilder(str(PYPROJECT.parent))
    shipped = {f.distribution_path for f in builder.recurse_included_files()}
    assert "jupyter_gpu_containers/openapi.yaml" in shipped
