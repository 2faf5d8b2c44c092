"""The OpenAPI 3.1 document of voucherd's v1 API, built in code and served at /v1/openapi.json.

The contract is /work/shared/API.md; this module states it precisely enough (types, limits,
every status an operation returns) that a schema-driven tester exercises the real limits.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from voucherd import __version__

Json = dict[str, Any]
Scope = Literal["admin", "issue", "read"]

JSON = "application/json"
SECURITY_SCHEME = "bearerAuth"

# SQLite's integer ceiling; an id or a threshold above it cannot be stored, so say so.
INT64_MAX = 2**63 - 1
USER_ID_MAX = 256
BATCH_MAX = 100_000

LIST_STATUSES = ["active", "paused", "expired", "archived"]
UPLOAD_STATUSES = ["in_progress", "completed", "failed", "withdrawn"]
UPLOAD_REJECT_REASONS = [
    "duplicate_in_file",
    "duplicate_in_list",
    "duplicate_in_partner",
    "invalid_code",
    "list_full",
]
# A refused status transition answers with the list's current status as the code.
TRANSITION_CONFLICTS = ["conflict", "list_paused", "list_expired", "list_archived"]
UPLOAD_CONFLICTS = ["list_expired", "list_archived"]
CLAIM_CONFLICTS = ["list_paused", "list_expired", "list_archived", "list_exhausted"]


# --- schema helpers ---------------------------------------------------------------------------


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def string(min_length: int = 0, max_length: int | None = None, **extra: Any) -> Json:
    schema: Json = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema | extra


def integer(minimum: int = 0, **extra: Any) -> Json:
    return {"type": "integer", "minimum": minimum, "maximum": INT64_MAX} | extra


def identifier(what: str) -> Json:
    return integer(1, format="int64", description=f"The {what}'s id.")


def timestamp(description: str) -> Json:
    return {
        "type": "string",
        "format": "date-time",
        "description": f"{description} (RFC 3339, UTC).",
    }


def nullable(schema: Json) -> Json:
    """The schema with `null` allowed too (3.1 style: a type list, not `nullable`)."""
    return schema | {"type": [schema["type"], "null"]}


def enum(values: Sequence[str], description: str | None = None) -> Json:
    schema: Json = {"type": "string", "enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def obj(properties: Json, required: Iterable[str] = (), **extra: Any) -> Json:
    schema: Json = {"type": "object", "properties": properties}
    names = list(required)
    if names:
        schema["required"] = names
    return schema | extra


def closed(properties: Json, **extra: Any) -> Json:
    """A response object whose listed properties are all present."""
    return obj(properties, required=properties, **extra)


def array_of(items: Json, **extra: Any) -> Json:
    return {"type": "array", "items": items} | extra


def error_schema(codes: Sequence[str] | None = None) -> Json:
    """The Error schema, narrowed to `codes` when the status has a closed set of them."""
    if not codes:
        return ref("Error")
    code: Json = {"const": codes[0]} if len(codes) == 1 else {"enum": list(codes)}
    return {"allOf": [ref("Error"), {"properties": {"error": {"properties": {"code": code}}}}]}


# --- response, parameter and body helpers -----------------------------------------------------


def json_response(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def text_response(description: str, media_type: str, example: str | None = None) -> Json:
    media: Json = {"schema": {"type": "string"}}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {media_type: media}}


def error_response(description: str, codes: Sequence[str] | None = None) -> Json:
    return json_response(description, error_schema(codes))


def conflict(description: str, codes: Sequence[str]) -> Json:
    listed = ", ".join(f"`{code}`" for code in codes)
    return error_response(f"{description} Codes: {listed}.", codes)


def shared_response(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


RETRY_AFTER: Json = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

# Statuses several operations share; each is a component response referenced by `$ref`.
SHARED_RESPONSES: Json = {
    "InvalidRequest": error_response(
        "The request is malformed: bad JSON, a missing or ill-typed field, a value out of range.",
        ["invalid_request"],
    ),
    "Unauthorized": error_response(
        "No `Authorization: Bearer <key>` header, or an unknown key.", ["unauthorized"]
    ),
    "Forbidden": error_response("The key lacks the scope this operation needs.", ["forbidden"]),
    "NotFound": error_response("No such list, upload or route.", ["not_found"]),
    "PayloadTooLarge": error_response(
        "The request body is larger than the server accepts.", ["payload_too_large"]
    ),
    "UnsupportedMediaType": error_response(
        "The request body's Content-Type is not one this operation accepts.",
        ["unsupported_media_type"],
    ),
    "Overloaded": json_response(
        "The server is too busy to take the request now; nothing was done. Retry after the "
        "`Retry-After` header's seconds.",
        error_schema(["overloaded", "storage_unavailable"]),
        headers=RETRY_AFTER,
    ),
}


def path_param(name: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: Json, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def json_body(schema_name: str, example: Json | None = None) -> Json:
    media: Json = {"schema": ref(schema_name)}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {JSON: media}}


LIST_ID = path_param("list_id", identifier("list"))
UPLOAD_ID = path_param("upload_id", identifier("upload"))
USER_ID = path_param("user_id", string(1, USER_ID_MAX, description="The end user's id."))


def operation(
    operation_id: str,
    summary: str,
    description: str,
    *,
    tag: str,
    scope: Scope | None,
    responses: Json,
    parameters: Sequence[Json] = (),
    body: Json | None = None,
) -> Json:
    """One operation; the statuses that follow from its scope and its input are added here."""
    op: Json = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    all_responses = dict(responses)
    if scope is None:
        op["description"] = f"No authentication. {description}"
        op["security"] = []
    else:
        op["description"] = f"Requires the `{scope}` scope. {description}"
        op["x-scope"] = scope
        all_responses.setdefault("401", shared_response("Unauthorized"))
        all_responses.setdefault("403", shared_response("Forbidden"))
    if parameters or body is not None:
        all_responses.setdefault("400", shared_response("InvalidRequest"))
    if body is not None:
        all_responses.setdefault("413", shared_response("PayloadTooLarge"))
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = dict(sorted(all_responses.items()))
    return op


# --- component schemas ------------------------------------------------------------------------

LIST_NAME = string(1, 200, description="The list's name, used in messages to users.")
LIST_DESCRIPTION = string(0, 2000, description="Usage conditions shown to users.")
EXPIRES_AT = timestamp("When the list expires; past it the list reads `expired`")
LOW_STOCK_THRESHOLD = integer(
    0, description="`list.low_stock` fires when the available codes fall to this count."
)
METADATA = {
    "type": "object",
    "additionalProperties": True,
    "description": "Free-form data kept with the claim; at most 4 KiB serialized as JSON.",
}
CODE = string(
    1,
    64,
    pattern=r"^[\x21\x23-\x2b\x2d-\x7e]+$",
    description='A voucher code: printable ASCII (`!` to `~`) other than `,` and `"`.',
)
ERROR_BODY = closed(
    {"code": string(1, pattern="^[a-z][a-z0-9_]*$"), "message": string()},
)

SCHEMAS: Json = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": string(1, pattern="^[a-z][a-z0-9_]*$", description="snake_case code."),
                    "message": string(description="A human sentence."),
                    "details": {"type": "object", "description": "More about the error."},
                },
                required=["code", "message"],
            )
        },
        required=["error"],
    ),
    "ListCreate": obj(
        {
            "partner": string(1, 100, description="The brand partner, case-sensitive."),
            "tag": string(
                1,
                100,
                pattern="^\\S+$",
                description="Unique per partner among non-archived lists; stored lowercased. "
                "No whitespace.",
            ),
            "name": LIST_NAME,
            "description": LIST_DESCRIPTION,
            "expires_at": EXPIRES_AT,
            "low_stock_threshold": LOW_STOCK_THRESHOLD,
            "duplicate_scope": enum(
                ["partner", "list"],
                "Which codes an upload is checked against: every non-archived list of the "
                "partner (default), or this list only.",
            )
            | {"default": "partner"},
        },
        required=["partner", "tag", "name", "expires_at"],
        additionalProperties=True,
    ),
    "ListPatch": obj(
        {
            "name": LIST_NAME,
            "description": LIST_DESCRIPTION,
            "expires_at": EXPIRES_AT,
            "low_stock_threshold": LOW_STOCK_THRESHOLD,
        },
        additionalProperties=True,
        # At least one editable field; moving an expired list's expiry forward reactivates it.
        anyOf=[
            {"required": [field]}
            for field in ("name", "description", "expires_at", "low_stock_threshold")
        ],
    ),
    "List": closed(
        {
            "id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100, description="Lowercased."),
            "name": string(1, 200),
            "description": string(0, 2000),
            "expires_at": EXPIRES_AT,
            "status": enum(LIST_STATUSES),
            "duplicate_scope": enum(["partner", "list"]),
            "low_stock_threshold": integer(0),
            "created_at": timestamp("When the list was created"),
            "updated_at": timestamp("When the list last changed"),
            "codes": closed(
                {
                    "uploaded": integer(0),
                    "available": integer(0),
                    "distributed": integer(0),
                    "withdrawn": integer(0),
                },
                description="uploaded = available + distributed + withdrawn.",
            ),
            "campaigns": array_of(
                integer(1), description="Ids of the campaigns mapped to this list."
            ),
        }
    ),
    "ListPage": closed({"lists": array_of(ref("List"))}),
    "Upload": closed(
        {
            "id": identifier("upload"),
            "list_id": identifier("list"),
            "filename": nullable(string(0, 255)),
            "status": enum(UPLOAD_STATUSES),
            "rows": integer(0, description="Non-blank lines read, header excluded."),
            "accepted": integer(0),
            "rejected": integer(0),
            "withdrawn": integer(0, description="Codes taken out of the pool by a withdrawal."),
            "errors": {
                "type": "object",
                "description": "Rejected rows by reason: "
                + ", ".join(f"`{reason}`" for reason in UPLOAD_REJECT_REASONS)
                + ".",
                "properties": {reason: integer(0) for reason in UPLOAD_REJECT_REASONS},
                "additionalProperties": integer(0),
            },
            "error": nullable(
                closed(
                    ERROR_BODY["properties"],
                    description="Why a failed upload failed, e.g. `multiple_columns`, "
                    "`empty_file`, `payload_too_large`, `binary_content`, `line_too_long`, "
                    "`interrupted`.",
                )
            ),
            "started_at": timestamp("When the upload started"),
            "finished_at": nullable(timestamp("When the upload finished; null while running")),
            "uploaded_by": nullable(string(description="The name of the key that uploaded.")),
        }
    ),
    "UploadPage": closed({"uploads": array_of(ref("Upload"))}),
    "UploadMultipart": obj(
        {"file": {"type": "string", "contentMediaType": "text/csv", "description": "The CSV."}},
        required=["file"],
        additionalProperties=True,
    ),
    "Withdrawal": closed(
        {"withdrawn": integer(0, description="Codes still available that left the pool.")}
    ),
    "ClaimRequest": obj(
        {
            "user_id": string(1, USER_ID_MAX),
            "idempotency_key": string(
                0, 256, description="Tells apart claims of one user on one list; default empty."
            ),
            "metadata": METADATA,
        },
        required=["user_id"],
        additionalProperties=True,
    ),
    "Claim": closed(
        {
            "id": identifier("claim"),
            "list_id": identifier("list"),
            "user_id": string(1, USER_ID_MAX),
            "idempotency_key": string(0, 256),
            "code": CODE,
            "claimed_at": timestamp("When the code was handed out"),
            "expires_at": timestamp("When the code's list expires"),
            "source": enum(["API", "Campaign"]),
            "campaign_id": nullable(integer(1)),
            "metadata": METADATA,
        }
    ),
    "ClaimResponse": closed({"claim": ref("Claim")}),
    "BatchClaimRequest": obj(
        {
            "user_ids": array_of(
                string(1, USER_ID_MAX),
                minItems=1,
                maxItems=BATCH_MAX,
                description="A user id repeated within the batch gets one claim, listed once.",
            )
        },
        required=["user_ids"],
        additionalProperties=True,
    ),
    "BatchClaimResponse": closed(
        {
            "claims": array_of(ref("Claim")),
            "failed": array_of(
                closed(
                    {"user_id": string(1, USER_ID_MAX), "error": closed(ERROR_BODY["properties"])}
                )
            ),
        }
    ),
    "UserVoucher": closed(
        {
            "code": CODE,
            "list_id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100),
            "name": string(1, 200),
            "description": string(0, 2000),
            "expires_at": EXPIRES_AT,
            "claimed_at": timestamp("When the user got the code"),
            "campaign_id": nullable(integer(1)),
        }
    ),
    "UserVoucherPage": closed({"vouchers": array_of(ref("UserVoucher"))}),
}

LIST_EXAMPLE: Json = {
    "partner": "Puma",
    "tag": "holi2025",
    "name": "Holi 2025 Sale",
    "description": "Orders above $100",
    "expires_at": "2026-12-31T23:59:59Z",
    "low_stock_threshold": 1000,
    "duplicate_scope": "partner",
}


# --- paths ------------------------------------------------------------------------------------


def operations_paths() -> Json:
    return {
        "/healthz": {
            "get": operation(
                "getHealth",
                "Liveness",
                "200 while the process runs.",
                tag="Operations",
                scope=None,
                responses={
                    "200": json_response("Alive.", closed({"status": {"const": "ok"}})),
                },
            )
        },
        "/readyz": {
            "get": operation(
                "getReadiness",
                "Readiness",
                "200 once recovery is done and the journal accepts writes, 503 before.",
                tag="Operations",
                scope=None,
                responses={
                    "200": json_response("Ready.", closed({"status": {"const": "ready"}})),
                    "503": json_response(
                        "Not ready yet.", error_schema(["not_ready"]), headers=RETRY_AFTER
                    ),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "getMetrics",
                "Prometheus metrics",
                "Prometheus text exposition format.",
                tag="Operations",
                scope="read",
                responses={"200": text_response("The metrics.", "text/plain")},
            )
        },
        "/v1/openapi.json": {
            "get": operation(
                "getOpenapiDocument",
                "This document",
                "The OpenAPI 3.1 document of the API.",
                tag="Operations",
                scope=None,
                responses={"200": json_response("The document.", {"type": "object"})},
            )
        },
    }


def list_transition(verb: str, rule: str) -> Json:
    return {
        "post": operation(
            f"{verb}List",
            f"{verb.capitalize()} a list",
            f"{rule} A transition the status table does not allow is 409 with the list's "
            "current status as the code (`conflict` when it is active).",
            tag="Lists",
            scope="admin",
            parameters=[LIST_ID],
            responses={
                "200": json_response("The list after the transition.", ref("List")),
                "404": shared_response("NotFound"),
                "409": conflict("The list's status does not allow this.", TRANSITION_CONFLICTS),
            },
        )
    }


def lists_paths() -> Json:
    list_ok = json_response("The list.", ref("List"))
    return {
        "/v1/lists": {
            "post": operation(
                "createList",
                "Create a list",
                "The tag is stored lowercased; a (partner, tag) pair already used by a "
                "non-archived list is 409 `tag_taken`.",
                tag="Lists",
                scope="admin",
                body=json_body("ListCreate", LIST_EXAMPLE),
                responses={
                    "201": json_response("The new list.", ref("List")),
                    "409": conflict("The tag is taken.", ["tag_taken"]),
                },
            ),
            "get": operation(
                "listLists",
                "List lists",
                "Every list, narrowed by the query parameters given.",
                tag="Lists",
                scope="read",
                parameters=[
                    query_param("partner", string(1, 100), "Only this partner's lists."),
                    query_param("status", enum(LIST_STATUSES), "Only lists in this status."),
                    query_param("tag", string(1, 100), "Only lists with this tag."),
                ],
                responses={"200": json_response("The lists.", ref("ListPage"))},
            ),
        },
        "/v1/lists/{list_id}": {
            "get": operation(
                "getList",
                "Get a list",
                "The list with its code counts and mapped campaigns.",
                tag="Lists",
                scope="read",
                parameters=[LIST_ID],
                responses={"200": list_ok, "404": shared_response("NotFound")},
            ),
            "patch": operation(
                "updateList",
                "Edit a list",
                "Changes any of name, description, expiry and low-stock threshold. Moving an "
                "expired list's `expires_at` into the future makes it active.",
                tag="Lists",
                scope="admin",
                parameters=[LIST_ID],
                body=json_body("ListPatch", {"name": "Holi 2025 Mega Sale"}),
                responses={
                    "200": json_response("The list after the edit.", ref("List")),
                    "404": shared_response("NotFound"),
                    "409": conflict("An archived list cannot be edited.", ["list_archived"]),
                },
            ),
        },
        "/v1/lists/{list_id}/pause": list_transition("pause", "Active → paused."),
        "/v1/lists/{list_id}/activate": list_transition("activate", "Paused → active."),
        "/v1/lists/{list_id}/archive": list_transition(
            "archive", "Any status but archived → archived, for good."
        ),
    }


def uploads_paths() -> Json:
    csv_body: Json = {"schema": {"type": "string"}, "example": "code\nPM500FF\nPM500FG\n"}
    upload_body: Json = {
        "required": True,
        "description": "The CSV itself, or a multipart form whose `file` field holds it. One "
        "code per line, surrounding whitespace trimmed, blank lines skipped, a first line "
        "`code` (any case) is a header. A line holding a comma fails the upload whole.",
        "content": {
            "text/csv": csv_body,
            "text/plain": csv_body,
            "multipart/form-data": {
                "schema": ref("UploadMultipart"),
                "encoding": {
                    "file": {"contentType": "text/csv, text/plain, application/octet-stream"}
                },
            },
        },
    }
    upload_path = [LIST_ID, UPLOAD_ID]
    return {
        "/v1/lists/{list_id}/uploads": {
            "post": operation(
                "createUpload",
                "Upload codes",
                "Adds codes to an active or paused list. Replies once the upload has finished "
                "(`completed` or `failed`) with its final counts; its codes are available from "
                "then on.",
                tag="Uploads",
                scope="admin",
                parameters=[
                    LIST_ID,
                    query_param("filename", string(0, 255), "The file's name, for the history."),
                ],
                body=upload_body,
                responses={
                    "201": json_response("The finished upload.", ref("Upload")),
                    "400": error_response(
                        "Not a usable CSV: binary content, a line over 4096 bytes, or a bad "
                        "query parameter.",
                        ["invalid_request"],
                    ),
                    "404": shared_response("NotFound"),
                    "409": conflict("The list no longer takes uploads.", UPLOAD_CONFLICTS),
                    "415": shared_response("UnsupportedMediaType"),
                },
            ),
            "get": operation(
                "listUploads",
                "List a list's uploads",
                "The upload history of the list.",
                tag="Uploads",
                scope="read",
                parameters=[LIST_ID],
                responses={
                    "200": json_response("The uploads.", ref("UploadPage")),
                    "404": shared_response("NotFound"),
                },
            ),
        },
        "/v1/lists/{list_id}/uploads/{upload_id}": {
            "get": operation(
                "getUpload",
                "Get an upload",
                "One upload of the list.",
                tag="Uploads",
                scope="read",
                parameters=upload_path,
                responses={
                    "200": json_response("The upload.", ref("Upload")),
                    "404": shared_response("NotFound"),
                },
            ),
            "delete": operation(
                "withdrawUpload",
                "Withdraw an upload",
                "The upload's codes still available leave the pool, counted as withdrawn; "
                "codes already distributed stay distributed.",
                tag="Uploads",
                scope="admin",
                parameters=upload_path,
                responses={
                    "200": json_response("How many codes left the pool.", ref("Withdrawal")),
                    "404": shared_response("NotFound"),
                    "409": conflict(
                        "The upload did not complete, or is already withdrawn.", ["conflict"]
                    ),
                },
            ),
        },
        "/v1/lists/{list_id}/uploads/{upload_id}/errors": {
            "get": operation(
                "getUploadErrors",
                "Download an upload's rejected rows",
                "A CSV with header `line,code,reason`, one row per rejected line. Admin only, "
                "since it holds codes.",
                tag="Uploads",
                scope="admin",
                parameters=upload_path,
                responses={
                    "200": text_response(
                        "The rejected rows.",
                        "text/csv",
                        example="line,code,reason\n3,PM500FF,duplicate_in_file\n",
                    ),
                    "404": shared_response("NotFound"),
                },
            )
        },
    }


def claims_paths() -> Json:
    return {
        "/v1/lists/{list_id}/claims": {
            "post": operation(
                "createClaim",
                "Claim a code",
                "A claim is identified by (list, user_id, idempotency_key — empty when absent): "
                "the first call hands out a fresh code (201), any repeat returns the same claim "
                "(200) whatever the list's status now. The reply is sent once the claim is "
                "durable.",
                tag="Claims",
                scope="issue",
                parameters=[LIST_ID],
                body=json_body("ClaimRequest", {"user_id": "u-42"}),
                responses={
                    "200": json_response("A repeat: the claim made before.", ref("ClaimResponse")),
                    "201": json_response("A fresh claim.", ref("ClaimResponse")),
                    "404": shared_response("NotFound"),
                    "409": conflict("The list cannot hand out a code now.", CLAIM_CONFLICTS),
                    "503": shared_response("Overloaded"),
                },
            )
        },
        "/v1/lists/{list_id}/claims/batch": {
            "post": operation(
                "createClaimBatch",
                "Claim codes for many users",
                f"At most {BATCH_MAX:,} user ids, each claimed as by `createClaim` with no "
                "idempotency key; refusals are listed per user in `failed`.",
                tag="Claims",
                scope="issue",
                parameters=[LIST_ID],
                body=json_body("BatchClaimRequest", {"user_ids": ["u-42", "u-43"]}),
                responses={
                    "200": json_response("Claims and refusals.", ref("BatchClaimResponse")),
                    "404": shared_response("NotFound"),
                    "503": shared_response("Overloaded"),
                },
            )
        },
        "/v1/users/{user_id}/vouchers": {
            "get": operation(
                "listUserVouchers",
                "A user's vouchers",
                "Every code the user holds, with its list's details.",
                tag="Users",
                scope="issue",
                parameters=[USER_ID],
                responses={"200": json_response("The vouchers.", ref("UserVoucherPage"))},
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    """The whole document, fresh on each call so a caller may change its copy."""
    document: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "voucherd",
            "version": __version__,
            "summary": "Hands each eligible user a unique voucher code, fast and exactly once.",
            "description": (
                "JSON in and out, UTF-8; times are RFC 3339 strings in UTC. Errors are the HTTP "
                'status plus `{"error": {"code", "message", "details"?}}`. Each operation names '
                "the key scope it needs in `x-scope`. With no keys configured the server runs "
                "open (loopback only) and no operation answers 401 or 403."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "Lists", "description": "Voucher lists: a partner's codes under one tag."},
            {"name": "Uploads", "description": "Adding, topping up and withdrawing codes."},
            {"name": "Claims", "description": "Handing codes to users."},
            {"name": "Users", "description": "What a user holds."},
            {"name": "Operations", "description": "Health, readiness, metrics, this document."},
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": operations_paths() | lists_paths() | uploads_paths() | claims_paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": SHARED_RESPONSES,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`; each key has scopes "
                    "`admin`, `issue` and/or `read`.",
                }
            },
        },
    }
    return copy.deepcopy(document)
