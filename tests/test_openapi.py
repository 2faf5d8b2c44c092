"""The OpenAPI document: valid 3.1, served as built, and in step with the routes the app serves."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pytest_aiohttp import AiohttpClient

from voucherd.server.app import create_app
from voucherd.server.openapi import openapi_document
from voucherd.settings import Settings

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
UNAUTHENTICATED = {("get", "/healthz"), ("get", "/readyz"), ("get", "/v1/openapi.json")}
ERROR_REF = "#/components/schemas/Error"

LIST = {
    "id": 1837,
    "partner": "Puma",
    "tag": "holi2025",
    "name": "Holi 2025 Sale",
    "description": "Orders above $100",
    "expires_at": "2026-12-31T23:59:59Z",
    "status": "active",
    "duplicate_scope": "partner",
    "low_stock_threshold": 1000,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "codes": {"uploaded": 1000000, "available": 400000, "distributed": 600000, "withdrawn": 0},
    "campaigns": [],
    # Added to the contract's example: fields voucherd adds.
    "expiry_warning": "P3D",
    "utilization": 0.6,
    "claim_rate": 120.5,
    "estimated_exhaustion_at": "2026-12-01T00:00:00Z",
}
LIST_CREATE = {
    "partner": "Puma",
    "tag": "holi2025",
    "name": "Holi 2025 Sale",
    "expires_at": "2026-12-31T23:59:59Z",
}
CLAIM = {
    "id": 99,
    "list_id": 1837,
    "user_id": "u-42",
    "idempotency_key": "",
    "code": "PM500FF",
    "claimed_at": "2026-03-01T10:00:00Z",
    "expires_at": "2026-12-31T23:59:59Z",
    "source": "API",
    "campaign_id": None,
    "metadata": {},
}
UPLOAD = {
    "id": 7,
    "list_id": 1837,
    "filename": "puma.csv",
    "status": "completed",
    "rows": 1000,
    "accepted": 990,
    "rejected": 10,
    "withdrawn": 0,
    "errors": {
        "duplicate_in_file": 4,
        "duplicate_in_list": 3,
        "duplicate_in_partner": 2,
        "invalid_code": 0,
    },
    "error": None,
    "started_at": "2026-03-01T10:00:00Z",
    "finished_at": "2026-03-01T10:00:05Z",
    "uploaded_by": "admin-key-name",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method, path, op


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        parts = node["$ref"].removeprefix("#/").split("/")
        target: dict[str, Any] = document
        for part in parts:
            target = target[part]
        node = target
    return node


def refers_to(node: Any, target: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == target or any(refers_to(v, target) for v in node.values())
    if isinstance(node, list):
        return any(refers_to(v, target) for v in node)
    return False


def schema_validator(document: dict[str, Any], name: str) -> OAS31Validator:
    # Refs are "#/components/...", so the components ride along at the schema's root.
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER)


async def served_routes(aiohttp_client: AiohttpClient, tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path))
    await aiohttp_client(app)  # started, so every route registered on startup is there too
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "*") and route.resource is not None
    }


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)


def test_each_call_returns_a_fresh_copy() -> None:
    first = openapi_document()
    first["components"]["schemas"]["List"]["properties"].clear()
    assert openapi_document()["components"]["schemas"]["List"]["properties"]


def test_every_operation_has_an_id_a_summary_and_a_scope(document: dict[str, Any]) -> None:
    ids = []
    for method, path, op in operations(document):
        ids.append(op["operationId"])
        assert op["summary"], (method, path)
        if (method, path) in UNAUTHENTICATED:
            assert op["security"] == [], (method, path)
            assert "x-scope" not in op, (method, path)
        else:
            scope = op["x-scope"]
            assert scope in ("admin", "issue", "read"), (method, path)
            assert f"`{scope}`" in op["description"], (method, path)
    assert len(ids) == len(set(ids)), "operationIds repeat"


def test_every_operation_taking_input_answers_4xx_with_the_error_schema(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        if not op.get("parameters") and "requestBody" not in op:
            continue
        responses = op["responses"]
        if "requestBody" in op:
            assert {"400", "413", "415"} <= responses.keys(), (method, path)
        assert any(
            status.startswith("4") and refers_to(resolve(document, response), ERROR_REF)
            for status, response in responses.items()
        ), (method, path)


def test_every_error_status_uses_the_error_schema(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if "x-scope" in op:
            assert {"401", "403"} <= op["responses"].keys(), (method, path)
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert refers_to(resolve(document, response), ERROR_REF), (method, path, status)


def test_overloaded_replies_carry_retry_after(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        if "503" in op["responses"]:
            response = resolve(document, op["responses"]["503"])
            assert response["headers"]["Retry-After"]["required"], (method, path)


def test_the_contract_examples_fit_the_schemas(document: dict[str, Any]) -> None:
    fits = {
        "List": LIST,
        "ListCreate": LIST_CREATE,
        "ListPatch": {"expires_at": "2027-01-01T00:00:00Z"},
        "Upload": UPLOAD,
        "Claim": CLAIM,
        "ClaimRequest": {"user_id": "u-42", "idempotency_key": "", "metadata": {"a": 1}},
        "BatchClaimRequest": {"user_ids": ["u-42", "u-42"]},
        "BatchClaimResponse": {
            "claims": [CLAIM],
            "failed": [{"user_id": "u-7", "error": {"code": "list_exhausted", "message": "…"}}],
        },
        "Error": {"error": {"code": "not_found", "message": "No list 7.", "details": {}}},
    }
    for name, instance in fits.items():
        schema_validator(document, name).validate(instance)


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("ListCreate", LIST_CREATE | {"tag": "holi 2025"}),
        ("ListCreate", LIST_CREATE | {"tag": ""}),
        ("ListCreate", LIST_CREATE | {"partner": "P" * 101}),
        ("ListCreate", LIST_CREATE | {"description": "d" * 2001}),
        ("ListCreate", LIST_CREATE | {"duplicate_scope": "global"}),
        ("ListCreate", LIST_CREATE | {"low_stock_threshold": -1}),
        ("ListCreate", LIST_CREATE | {"expires_at": "next tuesday"}),
        ("ListCreate", {k: v for k, v in LIST_CREATE.items() if k != "tag"}),
        ("ListPatch", {}),
        ("ListPatch", {"status": "active"}),
        ("ListPatch", {"name": None}),
        ("ListCreate", LIST_CREATE | {"name": "a\x00b"}),
        ("ClaimRequest", {"user_id": ""}),
        ("ClaimRequest", {"user_id": "u\n42"}),
        ("ClaimRequest", {"user_id": "u" * 257}),
        ("ClaimRequest", {"user_id": "u-42", "idempotency_key": "k" * 257}),
        ("ClaimRequest", {"user_id": "u-42", "metadata": []}),
        ("BatchClaimRequest", {"user_ids": []}),
        ("BatchClaimRequest", {"user_ids": [""]}),
        ("Claim", CLAIM | {"code": "PM,500"}),
        ("Claim", CLAIM | {"source": "Other"}),
        ("Upload", UPLOAD | {"status": "done"}),
        ("Error", {"error": {"code": "Not Found", "message": "x"}}),
    ],
)
def test_the_schemas_refuse_what_the_contract_refuses(
    document: dict[str, Any], name: str, instance: dict[str, Any]
) -> None:
    assert not schema_validator(document, name).is_valid(instance)


def test_the_tag_pattern_refuses_exactly_whitespace_and_control_characters(
    document: dict[str, Any],
) -> None:
    pattern = re.compile(
        document["components"]["schemas"]["ListCreate"]["properties"]["tag"]["pattern"]
    )
    refused = [c for c in range(sys.maxunicode + 1) if not pattern.match(f"a{chr(c)}b")]
    control = {*range(0x20), *range(0x7F, 0xA0)}
    assert refused == [c for c in range(sys.maxunicode + 1) if chr(c).isspace() or c in control]


async def test_the_app_serves_the_document(
    aiohttp_client: AiohttpClient, tmp_path: Path, document: dict[str, Any]
) -> None:
    client = await aiohttp_client(create_app(Settings(data_dir=tmp_path)))
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document


async def test_the_document_and_the_routes_agree(
    aiohttp_client: AiohttpClient, tmp_path: Path, document: dict[str, Any]
) -> None:
    served = await served_routes(aiohttp_client, tmp_path)
    documented = {(method, path) for method, path, _ in operations(document)}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
