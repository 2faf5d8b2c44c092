"""The OpenAPI 3.1 document of voucherd's v1 API, built in code and served at /v1/openapi.json.

The contract is the API page; this module states it as the server enforces it — types, limits,
every status an operation can answer — so a schema-driven tester exercises the real limits.
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
# The server also takes application/csv; it is left out as schema tools cannot send it.
CSV_TYPES = ("text/csv", "text/plain")

# SQLite's integer ceiling: no stored id or count goes above it.
INT64_MAX = 2**63 - 1
# The largest integer a JSON number carries exactly; the server refuses counts above it.
JSON_INT_MAX = 2**53
USER_ID_MAX = 256
IDEMPOTENCY_KEY_MAX = 256
FILENAME_MAX = 255
BATCH_MAX = 100_000
METADATA_MAX_BYTES = 4096
DEFAULT_LOW_STOCK = 1000

# Patterns are written for both ECMA-262 (what JSON Schema names) and Python's `re`.
NO_NUL = "^[^\\x00]*$"
# What Python's str.isspace() calls whitespace, spelt out: ECMA-262's `\s` is a different set.
WHITESPACE = (
    "\\x09-\\x0d\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)
TAG = f"^[^\\x00-\\x1f\\x7f-\\x9f{WHITESPACE}]+$"
NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
CODE_PATTERN = "^[\\x21\\x23-\\x2b\\x2d-\\x7e]+$"
ERROR_CODE_PATTERN = "^[a-z][a-z0-9_]*$"

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
WITHDRAW_CONFLICTS = ["conflict", "list_archived"]
CLAIM_CONFLICTS = ["list_paused", "list_expired", "list_archived", "list_exhausted"]

CAMPAIGN_NAME_MAX = 200
CAMPAIGN_LISTS_MAX = 50
CONDITIONS_MAX = 50
EVENT_NAME_MAX = 200
TEMPLATE_MAX = 10_000
EVENT_PROPERTIES_MAX_BYTES = 16 * 1024
EVENTS_PAGE_DEFAULT = 100
# `since`, `after` and `limit` are read as at most 18 digits.
SEQ_MAX = 10**18 - 1
# The most items a page holds, events or a collection's.
PAGE_MAX = 10_000
CAMPAIGN_STATUSES = ["scheduled", "running", "paused", "ended"]
REWARD_REASONS = [
    "not_qualified",
    "user_limit_reached",
    "campaign_limit_reached",
    "out_of_codes",
    "campaign_not_running",
]
OPERATORS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists"]
EVENT_TYPES = [
    "voucher.rewarded",
    "list.status_changed",
    "upload.completed",
    "upload.failed",
    "campaign.status_changed",
    "list.low_stock",
    "list.exhausted",
    "list.expiring",
]
TEMPLATE_ERRORS = ["invalid_request", "invalid_template"]


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


def text(min_length: int, max_length: int, description: str, pattern: str = NO_CONTROL) -> Json:
    """A free-text request field: the server counts characters and refuses control
    characters."""
    return string(min_length, max_length, pattern=pattern, description=description)


def identity_text(min_length: int, max_length: int, description: str) -> Json:
    return text(
        min_length,
        max_length,
        f"{description} No control characters (C0, DEL, C1).",
        pattern=NO_CONTROL,
    )


def integer(minimum: int = 0, maximum: int = INT64_MAX, **extra: Any) -> Json:
    return {"type": "integer", "minimum": minimum, "maximum": maximum} | extra


def number(minimum: float, maximum: float | None, description: str) -> Json:
    schema: Json = {"type": "number", "minimum": minimum, "description": description}
    return schema if maximum is None else schema | {"maximum": maximum}


def identifier(what: str) -> Json:
    return integer(1, format="int64", description=f"The {what}'s id.")


def timestamp(description: str, **extra: Any) -> Json:
    schema: Json = {"type": "string", "format": "date-time"}
    return schema | {"description": f"{description} (RFC 3339, UTC)."} | extra


def nullable(schema: Json) -> Json:
    """The schema with `null` allowed too (3.1 style: a type list, not `nullable`)."""
    if isinstance(schema["type"], list):
        return schema
    return schema | {"type": [schema["type"], "null"]}


def optional(schema: Json) -> Json:
    """An optional request field, where the server reads `null` as leaving it out."""
    described = schema.get("description", "")
    return nullable(schema) | {"description": f"{described} `null` is the same as absent.".strip()}


def nullable_ref(name: str, description: str) -> Json:
    """A component schema with `null` allowed too."""
    return {"anyOf": [ref(name), {"type": "null"}], "description": description}


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
    """A response object whose listed properties are all present (more may be added later)."""
    return obj(properties, required=properties, **extra)


def request(properties: Json, required: Iterable[str] = (), **extra: Any) -> Json:
    """A request body: unknown fields are ignored, so they are allowed."""
    return obj(properties, required, additionalProperties=True, **extra)


def strict_request(properties: Json, required: Iterable[str] = (), **extra: Any) -> Json:
    """A request body whose unknown fields the server refuses with 400."""
    return obj(properties, required, additionalProperties=False, **extra)


def array_of(items: Json, **extra: Any) -> Json:
    return {"type": "array", "items": items} | extra


def error_schema(codes: Sequence[str] | None = None, details: Json | None = None) -> Json:
    """The Error schema, narrowed to `codes` when the status has a closed set of them."""
    if not codes and details is None:
        return ref("Error")
    error: Json = {"properties": {}}
    if codes:
        code = {"const": codes[0]} if len(codes) == 1 else {"enum": list(codes)}
        error["properties"]["code"] = code
    if details is not None:
        error["properties"]["details"] = details
    return {"allOf": [ref("Error"), {"properties": {"error": error}}]}


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


def error_response(
    description: str, codes: Sequence[str] | None = None, details: Json | None = None
) -> Json:
    return json_response(description, error_schema(codes, details))


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


def unavailable(description: str, codes: Sequence[str]) -> Json:
    return json_response(description, error_schema(codes), headers=RETRY_AFTER)


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
    "NotFound": error_response(
        "No such list, upload or campaign (an id that is not a positive integer names none).",
        ["not_found"],
    ),
    "PayloadTooLarge": error_response(
        "The request body is larger than the server accepts.", ["payload_too_large"]
    ),
    "UnsupportedMediaType": error_response(
        "The request body's Content-Type is not one this operation accepts (or, for an "
        "upload, its multipart file part is encoded).",
        ["unsupported_media_type"],
    ),
    "NotReady": unavailable(
        "The server is still recovering its state, or shutting down (`not_ready`), or holds as "
        "many connections as it may (`overloaded`, the first reply of a new connection, which "
        "is then closed). Retry after `Retry-After`.",
        ["not_ready", "overloaded"],
    ),
    "Busy": unavailable(
        "Nothing was done: the server is recovering or shutting down (`not_ready`), or bodies "
        "still arriving hold all the memory they may, or every connection it may hold is open "
        "(`overloaded`). Retry after `Retry-After`.",
        ["not_ready", "overloaded"],
    ),
    "Overloaded": unavailable(
        "Nothing was done: the server is recovering or shutting down (`not_ready`), too busy "
        "(`overloaded`: a list's mailbox or the journal's queue is full, or requests in flight "
        "hold all the bodies, batch users, uploads or connections they may), or could not write "
        "the journal (`storage_unavailable`). Retry after `Retry-After`.",
        ["not_ready", "overloaded", "storage_unavailable"],
    ),
}


def path_param(name: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def page_params(what: str) -> list[Json]:
    """`after` and `limit`: a page of a collection ordered by id."""
    return [
        query_param(
            "after",
            integer(0, SEQ_MAX, format="int64", default=0),
            f"Only {what} after this id: the last id of the page before.",
        ),
        query_param(
            "limit",
            integer(1, PAGE_MAX),
            f"The most {what} in the page. Absent: every one after `after`.",
        ),
    ]


HAS_MORE = {
    "type": "boolean",
    "description": "Whether more follow the page: ask again with `after` set to its last id.",
}


def query_param(name: str, schema: Json, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def json_body(schema_name: str, example: Json) -> Json:
    return {"required": True, "content": {JSON: {"schema": ref(schema_name), "example": example}}}


LIST_ID = path_param("list_id", identifier("list"))
UPLOAD_ID = path_param("upload_id", identifier("upload"))
CAMPAIGN_ID = path_param("campaign_id", identifier("campaign"))
USER_ID = path_param("user_id", identity_text(1, USER_ID_MAX, "The end user's id."))


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
    writes: bool = False,
) -> Json:
    """One operation; the statuses that follow from its scope and its body are added here.

    A `writes` operation goes through a list actor or the journal, so besides `not_ready` it
    can meet a full mailbox or queue, or a failed write; a body still arriving can meet the
    budget of such bodies (`overloaded`).
    """
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
        busy = "Overloaded" if writes else "Busy" if body is not None else "NotReady"
        all_responses.setdefault("503", shared_response(busy))
    if body is not None:
        all_responses.setdefault("400", shared_response("InvalidRequest"))
        all_responses.setdefault("413", shared_response("PayloadTooLarge"))
        all_responses.setdefault("415", shared_response("UnsupportedMediaType"))
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = dict(sorted(all_responses.items()))
    return op


# --- component schemas ------------------------------------------------------------------------

PARTNER = text(1, 100, "The brand partner, case-sensitive.")
TAG_FIELD = text(
    1,
    100,
    "Unique per partner among non-archived lists; stored lowercased. No whitespace.",
    pattern=TAG,
)
LIST_NAME = text(1, 200, "The list's name, used in messages to users.")
LIST_DESCRIPTION = text(0, 2000, "Usage conditions shown to users.")
EXPIRES_AT = timestamp(
    "When the list expires; past it the list reads `expired`", minLength=20, maxLength=40
)
LOW_STOCK_THRESHOLD = integer(
    0,
    JSON_INT_MAX,
    description="`list.low_stock` fires when the available codes fall to this count, or when "
    "an edit raises it to or past them.",
)
EXPIRY_WARNING = nullable(
    string(
        2,
        40,
        pattern="^[Pp](?=[0-9Tt])([0-9]+[Ww])?([0-9]+[Dd])?([Tt](?=[0-9])([0-9]+[Hh])?([0-9]+[Mm])?"
        "([0-9]+[Ss])?)?$",
        description="How long before `expires_at` to write `list.expiring`: an ISO 8601 "
        "duration of weeks, days and time, such as `P3D` or `PT12H`. `null` for no warning; "
        "absent on create: the server's default (`P3D` unless configured).",
    )
)
METADATA: Json = {
    "type": "object",
    "additionalProperties": True,
    "description": f"Free-form data kept with the claim; at most {METADATA_MAX_BYTES} bytes "
    "once serialized as compact JSON (UTF-8).",
}
CODE = string(
    1,
    64,
    pattern=CODE_PATTERN,
    description='A voucher code: printable ASCII (`!` to `~`) other than `,` and `"`.',
)
ERROR_FIELDS: Json = {
    "code": string(1, pattern=ERROR_CODE_PATTERN, description="snake_case."),
    "message": string(description="A human sentence."),
}
PATCHABLE: Json = {
    "name": LIST_NAME,
    "description": LIST_DESCRIPTION,
    "expires_at": EXPIRES_AT,
    "low_stock_threshold": LOW_STOCK_THRESHOLD,
    "expiry_warning": EXPIRY_WARNING,
}
STARTS_AT = timestamp(
    "Before it the campaign reads `scheduled`; `null` starts it at once", minLength=20, maxLength=40
)
ENDS_AT = timestamp(
    "From it the campaign reads `ended`; later than `starts_at`; `null` for no end",
    minLength=20,
    maxLength=40,
)
# A campaign's fields, as created and as edited: `null` clears the nullable ones.
CAMPAIGN_FIELDS: Json = {
    "name": identity_text(1, CAMPAIGN_NAME_MAX, "The campaign's name."),
    "lists": array_of(
        integer(1, format="int64"),
        minItems=1,
        maxItems=CAMPAIGN_LISTS_MAX,
        uniqueItems=True,
        description="The lists codes come from, in fallback order: a list that is exhausted, "
        "paused, expired or archived passes the reward on to the next. A newly mapped list "
        "must be active.",
    ),
    "max_codes_per_user": integer(
        1,
        JSON_INT_MAX,
        description="Rewards one user may get, over distinct idempotency keys.",
        default=1,
    ),
    "max_codes_per_campaign": nullable(
        integer(
            1, JSON_INT_MAX, description="Rewards the campaign gives in all; `null` for no cap."
        )
    ),
    "starts_at": nullable(STARTS_AT),
    "ends_at": nullable(ENDS_AT),
    "qualification": nullable_ref(
        "Qualification", "Who qualifies; `null` qualifies everyone asked for."
    ),
    "message_template": nullable(
        string(
            0,
            TEMPLATE_MAX,
            description="A Liquid template of the message to the user; it sees `Event` (the "
            "reward event's `data`), `Profile.user_id` and `Trigger` (`name`, `properties`). "
            "`null` for no message.",
        )
    ),
}
CAMPAIGN_STATUS = enum(
    CAMPAIGN_STATUSES,
    "`scheduled` before `starts_at`, `ended` by `end` or from `ends_at`.",
)
REWARD_REASON = enum(REWARD_REASONS, "Why no code was given.")
REWARD_USER_ID = identity_text(1, USER_ID_MAX, "The end user's id.")

STATS_FIELDS: Json = {
    "lists": closed(
        {"total": integer(0)} | {status: integer(0) for status in LIST_STATUSES},
        description="Lists by status.",
    ),
    "codes": closed(
        {state: integer(0) for state in ("uploaded", "available", "distributed", "withdrawn")}
    ),
    "utilization": number(0, 1, "Codes distributed ÷ codes uploaded."),
    "claim_rate": number(0, None, "Codes handed out per minute over the last 15 minutes."),
}

SCHEMAS: Json = {
    "Error": obj(
        {
            "error": obj(
                ERROR_FIELDS | {"details": {"type": "object", "description": "More about it."}},
                required=["code", "message"],
            )
        },
        required=["error"],
    ),
    "ListCreate": request(
        {
            "partner": PARTNER,
            "tag": TAG_FIELD,
            "name": LIST_NAME,
            "description": optional(LIST_DESCRIPTION),
            "expires_at": EXPIRES_AT,
            "low_stock_threshold": optional(LOW_STOCK_THRESHOLD | {"default": DEFAULT_LOW_STOCK}),
            "expiry_warning": EXPIRY_WARNING,
            "duplicate_scope": enum(
                ["partner", "list"],
                "Which codes an upload is checked against: every non-archived list of the "
                "partner (the default), or this list only.",
            )
            | {"default": "partner"},
        },
        required=["partner", "tag", "name", "expires_at"],
    ),
    "ListPatch": request(
        {name: optional(schema) for name, schema in PATCHABLE.items()},
        # At least one field given, and not null.
        anyOf=[
            {"required": [name], "properties": {name: schema}} for name, schema in PATCHABLE.items()
        ],
    ),
    "List": closed(
        {
            "id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100, description="Lowercased."),
            "name": string(1, 200),
            "description": string(0, 2000),
            "expires_at": timestamp("When the list expires"),
            "status": enum(LIST_STATUSES, "`expired` once `expires_at` has passed."),
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
            "expiry_warning": EXPIRY_WARNING,
            "utilization": number(0, 1, "Codes distributed ÷ codes uploaded (0 before any)."),
            "claim_rate": number(0, None, "Codes handed out per minute over the last 15 minutes."),
            "estimated_exhaustion_at": nullable(
                timestamp(
                    "When the list runs out at that rate; `null` while nothing is claimed, "
                    "when nothing is left, or while the list is not active"
                )
            ),
        }
    ),
    "ListPage": closed({"lists": array_of(ref("List")), "has_more": HAS_MORE}),
    "Stats": closed(
        STATS_FIELDS
        | {
            "partners": array_of(
                closed({"partner": string(1, 100)} | STATS_FIELDS),
                description="The same totals per partner, by partner name.",
            )
        },
        description="Totals across every list, archived ones included.",
    ),
    "Upload": closed(
        {
            "id": identifier("upload"),
            "list_id": identifier("list"),
            "filename": nullable(string(0, FILENAME_MAX)),
            "status": enum(UPLOAD_STATUSES),
            "rows": integer(0, description="Non-blank lines read, a header excluded."),
            "accepted": integer(0),
            "rejected": integer(0),
            "withdrawn": integer(0, description="Codes taken out of the pool by a withdrawal."),
            "errors": {
                "type": "object",
                "description": "Rejected rows by reason: "
                + ", ".join(f"`{reason}`" for reason in UPLOAD_REJECT_REASONS)
                + "; the first four always, 0 when none, `list_full` only when some were.",
                "properties": {reason: integer(0) for reason in UPLOAD_REJECT_REASONS},
                "required": UPLOAD_REJECT_REASONS[:4],
                "additionalProperties": integer(0),
            },
            "error": nullable(
                closed(
                    ERROR_FIELDS,
                    description="Why a failed upload failed, e.g. `multiple_columns`, "
                    "`empty_file`, `payload_too_large`, `binary_content`, `line_too_long`, "
                    "`truncated_body`, `interrupted`.",
                )
            ),
            "started_at": timestamp("When the upload started"),
            "finished_at": nullable(timestamp("When the upload finished; null while running")),
            "uploaded_by": nullable(string(description="The name of the key that uploaded.")),
        }
    ),
    "UploadPage": closed({"uploads": array_of(ref("Upload")), "has_more": HAS_MORE}),
    "UploadForm": request(
        {"file": {"type": "string", "contentMediaType": "text/csv", "description": "The CSV."}},
        required=["file"],
    ),
    "Withdrawal": closed(
        {"withdrawn": integer(0, description="Codes still available that left the pool.")}
    ),
    "ClaimRequest": request(
        {
            "user_id": identity_text(1, USER_ID_MAX, "The end user's id."),
            "idempotency_key": optional(
                identity_text(
                    0,
                    IDEMPOTENCY_KEY_MAX,
                    "Tells apart claims of one user on one list; absent means empty.",
                )
            ),
            "metadata": optional(METADATA),
        },
        required=["user_id"],
    ),
    "Claim": closed(
        {
            "id": identifier("claim"),
            "list_id": identifier("list"),
            "user_id": string(1, USER_ID_MAX),
            "idempotency_key": string(0, IDEMPOTENCY_KEY_MAX),
            "code": CODE,
            "claimed_at": timestamp("When the code was handed out"),
            "expires_at": timestamp("When the code's list expires"),
            "source": enum(["API", "Campaign"]),
            "campaign_id": nullable(integer(1)),
            "metadata": METADATA | {"description": "The claim's metadata; `{}` when none."},
        }
    ),
    "ClaimResponse": closed({"claim": ref("Claim")}),
    "BatchClaimRequest": request(
        {
            "user_ids": array_of(
                identity_text(1, USER_ID_MAX, "An end user's id."),
                minItems=1,
                maxItems=BATCH_MAX,
                description="A user id repeated within the batch gets one claim, listed once.",
            )
        },
        required=["user_ids"],
    ),
    "BatchClaimResponse": closed(
        {
            "claims": array_of(ref("Claim"), description="Fresh claims and repeats alike."),
            "failed": array_of(
                closed({"user_id": string(1, USER_ID_MAX), "error": closed(ERROR_FIELDS)}),
                description="Users who got no code, each with the error a single claim gets.",
            ),
        }
    ),
    "UserVoucher": closed(
        {
            "claim_id": identifier("claim"),
            "code": CODE,
            "list_id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100),
            "name": string(1, 200),
            "description": string(0, 2000),
            "expires_at": timestamp("When the code's list expires"),
            "claimed_at": timestamp("When the user got the code"),
            "campaign_id": nullable(integer(1)),
        }
    ),
    "UserVoucherPage": closed({"vouchers": array_of(ref("UserVoucher")), "has_more": HAS_MORE}),
    "Condition": obj(
        {
            "property": identity_text(1, EVENT_NAME_MAX, "An event property's name."),
            "op": enum(OPERATORS),
            "value": {
                "description": "What the property is compared with: any JSON value for `eq`, "
                "`ne` and `contains`, a list for `in`, a number or a string for `gt`, `gte`, "
                "`lt` and `lte`, and for `exists` `true` (the default) or `false` (absent)."
            },
        },
        required=["property", "op"],
        anyOf=[
            {"properties": {"op": {"const": "exists"}, "value": {"type": ["boolean", "null"]}}},
            {"properties": {"op": {"enum": ["eq", "ne", "contains"]}}, "required": ["value"]},
            {
                "properties": {"op": {"const": "in"}, "value": {"type": "array"}},
                "required": ["value"],
            },
            {
                "properties": {
                    "op": {"enum": ["gt", "gte", "lt", "lte"]},
                    "value": {"type": ["number", "string"]},
                },
                "required": ["value"],
            },
        ],
        additionalProperties=True,
        description="A condition on one property of the triggering event.",
    ),
    "Qualification": obj(
        {
            "event": identity_text(1, EVENT_NAME_MAX, "The event's name."),
            "where": array_of(
                ref("Condition"),
                maxItems=CONDITIONS_MAX,
                default=[],
                description="Conditions the event's properties must all meet.",
            ),
        },
        required=["event"],
        additionalProperties=True,
        description="A reward request qualifies when its `event` has this name and meets every "
        "condition.",
    ),
    "CampaignCreate": strict_request(CAMPAIGN_FIELDS, required=["name", "lists"]),
    "CampaignPatch": strict_request(CAMPAIGN_FIELDS, minProperties=1),
    "Campaign": closed(
        {
            "id": identifier("campaign"),
            "name": string(1, CAMPAIGN_NAME_MAX),
            "lists": array_of(integer(1, format="int64"), description="In fallback order."),
            "max_codes_per_user": integer(1, JSON_INT_MAX),
            "max_codes_per_campaign": nullable(integer(1, JSON_INT_MAX)),
            "starts_at": nullable(timestamp("When the campaign starts")),
            "ends_at": nullable(timestamp("When the campaign ends")),
            "qualification": nullable_ref("Qualification", "`null` qualifies everyone."),
            "message_template": nullable(string(0, TEMPLATE_MAX)),
            "status": CAMPAIGN_STATUS,
            "rewards": closed({"issued": integer(0, description="Rewards given so far.")}),
            "created_at": timestamp("When the campaign was created"),
            "updated_at": timestamp("When the campaign last changed"),
        }
    ),
    "CampaignPage": closed({"campaigns": array_of(ref("Campaign"))}),
    "TriggerEvent": request(
        {
            "name": identity_text(1, EVENT_NAME_MAX, "The event's name."),
            "properties": {
                "type": "object",
                "additionalProperties": True,
                "default": {},
                "description": f"The event's properties; at most {EVENT_PROPERTIES_MAX_BYTES} "
                "bytes once serialized (as JSON).",
            },
        },
        required=["name"],
        description="The event that triggered the request; templates see it as `Trigger`.",
    ),
    "RewardRequest": request(
        {
            "user_id": REWARD_USER_ID,
            "idempotency_key": optional(
                identity_text(
                    0,
                    IDEMPOTENCY_KEY_MAX,
                    "Tells apart rewards of one user in one campaign; absent means empty.",
                )
            ),
            "event": nullable_ref(
                "TriggerEvent",
                "Checked against the campaign's qualification. `null` is the same as absent.",
            ),
        },
        required=["user_id"],
    ),
    "Reward": closed(
        {
            "id": integer(1, format="int64", description="The reward's id: its claim's id."),
            "code": CODE,
            "list_id": identifier("list"),
            "campaign_id": identifier("campaign"),
            "user_id": string(1, USER_ID_MAX),
            "message": nullable(
                string(
                    description="The message template rendered for this reward: `null` without "
                    "a template, empty when it failed to render."
                )
            ),
            "rewarded_at": timestamp("When the code was handed out"),
            "expires_at": timestamp("When the code's list expires"),
        }
    ),
    "Rewarded": closed(
        {"rewarded": {"type": "boolean", "const": True}, "reward": ref("Reward")},
    ),
    "NotRewarded": closed(
        {"rewarded": {"type": "boolean", "const": False}, "reason": REWARD_REASON},
        description="No code was given; the refusal is not remembered.",
    ),
    "RewardOutcome": {"oneOf": [ref("Rewarded"), ref("NotRewarded")]},
    "BatchRewardRequest": request(
        {
            "user_ids": array_of(
                REWARD_USER_ID,
                minItems=1,
                maxItems=BATCH_MAX,
                description="A user id repeated within the batch gets one result.",
            )
        },
        required=["user_ids"],
    ),
    "BatchRewardResponse": closed(
        {
            "results": array_of(
                {
                    "oneOf": [
                        closed(
                            {
                                "user_id": string(1, USER_ID_MAX),
                                "rewarded": {"type": "boolean", "const": True},
                                "reward": ref("Reward"),
                            },
                            description="Rewarded, now or before.",
                        ),
                        closed(
                            {
                                "user_id": string(1, USER_ID_MAX),
                                "rewarded": {"type": "boolean", "const": False},
                                "reason": REWARD_REASON,
                            },
                            description="Not rewarded.",
                        ),
                        closed(
                            {
                                "user_id": string(1, USER_ID_MAX),
                                "rewarded": {"type": "boolean", "const": False},
                                "error": closed(ERROR_FIELDS),
                            },
                            description="Failed, e.g. `conflict` while a reward for the user "
                            "is in progress, or `overloaded`; retry it.",
                        ),
                    ]
                },
                description="One per user: rewards first, then refusals, then failures.",
            )
        }
    ),
    "TemplateRender": request(
        {
            "template": string(0, TEMPLATE_MAX, description="The Liquid template."),
            "event": {
                "type": "object",
                "additionalProperties": True,
                "default": {},
                "description": "What the template sees as `Event`: a reward event's `data`.",
            },
            "profile": optional(
                {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "What the template sees as `Profile`; absent, "
                    '`{"user_id": Event.userId}`.',
                }
            ),
            "trigger": nullable_ref(
                "TriggerEvent", "What the template sees as `Trigger`. `null` is the same as absent."
            ),
        },
        required=["template"],
    ),
    "RenderedMessage": closed({"message": string(description="The rendered message.")}),
    "Event": closed(
        {
            "seq": integer(1, format="int64", description="Grows by one per event, with no gaps."),
            "type": enum(EVENT_TYPES),
            "name": string(
                1,
                description="`CT Partner Voucher Rewarded` for `voucher.rewarded`; the type "
                "otherwise.",
            ),
            "time": timestamp("When it happened"),
            "data": {
                "type": "object",
                "description": "What happened; its fields depend on `type`.",
            },
        },
        allOf=[
            {
                "if": {"properties": {"type": {"const": event_type}}},
                "then": {"properties": {"data": ref(data)}},
            }
            for event_type, data in [
                ("voucher.rewarded", "RewardEventData"),
                ("list.status_changed", "ListStatusChangedData"),
                ("campaign.status_changed", "CampaignStatusChangedData"),
                ("upload.completed", "UploadCompletedData"),
                ("upload.failed", "UploadFailedData"),
                ("list.low_stock", "StockData"),
                ("list.exhausted", "StockData"),
                ("list.expiring", "ListExpiringData"),
            ]
        ],
    ),
    "EventPage": closed(
        {
            "events": array_of(ref("Event"), description="Oldest first."),
            "last_seq": integer(
                0,
                format="int64",
                description="The seq of the last event returned; when none, `since` (when "
                "absent, the seq before the oldest event kept).",
            ),
        }
    ),
    "RewardEventData": closed(
        {
            "CT Source": {"type": "string", "const": "Promo Module"},
            "campaignId": nullable(integer(1, description="`null` for a direct claim.")),
            "eventTimestamp": integer(0, description="Unix time, in seconds."),
            "listDescription": string(0, 2000),
            "listExpiry": timestamp("When the list expires"),
            "listTag": string(1, 100),
            "partner": string(1, 100),
            "source": enum(["API", "Campaign"], "`API` for a direct claim."),
            "voucherCode": CODE,
            "voucherListId": identifier("list"),
            "userId": string(1, USER_ID_MAX),
            "message": nullable(
                string(description="The campaign's rendered message; `null` without one.")
            ),
        },
        description="The data of `voucher.rewarded`: one per code handed out.",
    ),
    "ListStatusChangedData": closed(
        {
            "list_id": identifier("list"),
            "previous_status": enum(LIST_STATUSES),
            "status": enum(LIST_STATUSES),
        }
    ),
    "CampaignStatusChangedData": closed(
        {
            "campaign_id": identifier("campaign"),
            "previous_status": enum(CAMPAIGN_STATUSES),
            "status": enum(CAMPAIGN_STATUSES),
        }
    ),
    "UploadCompletedData": closed(
        {
            "list_id": identifier("list"),
            "upload_id": identifier("upload"),
            "filename": nullable(string(0, FILENAME_MAX)),
            "accepted": integer(0),
            "rejected": integer(0),
        }
    ),
    "ListExpiringData": closed(
        {
            "list_id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100),
            "expires_at": timestamp("When the list expires"),
            "expiry_warning": string(2, 40),
            "available": integer(0),
        },
        description="The data of `list.expiring`: once per expiry date, when the list's "
        "`expiry_warning` comes due.",
    ),
    "StockData": closed(
        {
            "list_id": identifier("list"),
            "partner": string(1, 100),
            "tag": string(1, 100),
            "available": integer(0),
            "low_stock_threshold": integer(0),
        },
        description="The data of `list.low_stock` (the available codes fell to the threshold) "
        "and `list.exhausted` (none left): each once, again only after a top-up lifts the list "
        "back above.",
    ),
    "UploadFailedData": closed(
        {
            "list_id": identifier("list"),
            "upload_id": identifier("upload"),
            "filename": nullable(string(0, FILENAME_MAX)),
            "error": string(
                1,
                pattern=ERROR_CODE_PATTERN,
                description="Why it failed, e.g. `multiple_columns`, `interrupted`.",
            ),
        }
    ),
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
                responses={"200": json_response("Alive.", closed({"status": {"const": "ok"}}))},
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
                    "503": shared_response("NotReady"),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "getMetrics",
                "Prometheus metrics",
                "The Prometheus text exposition format.",
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
            writes=True,
            responses={
                "200": json_response("The list after the transition.", ref("List")),
                "404": shared_response("NotFound"),
                "409": conflict("The list's status does not allow this.", TRANSITION_CONFLICTS),
            },
        )
    }


def lists_paths() -> Json:
    return {
        "/v1/lists": {
            "post": operation(
                "createList",
                "Create a list",
                "The tag is stored lowercased; a (partner, tag) pair already used by a "
                "non-archived list is 409 `tag_taken`.",
                tag="Lists",
                scope="admin",
                writes=True,
                body=json_body(
                    "ListCreate",
                    {
                        "partner": "Puma",
                        "tag": "holi2025",
                        "name": "Holi 2025 Sale",
                        "description": "Orders above $100",
                        "expires_at": "2026-12-31T23:59:59Z",
                    },
                ),
                responses={
                    "201": json_response("The new list.", ref("List")),
                    "409": conflict("The tag is taken.", ["tag_taken"]),
                },
            ),
            "get": operation(
                "listLists",
                "Find lists",
                "Every list, narrowed by the query parameters given, in id order; a page of "
                "them with `limit`.",
                tag="Lists",
                scope="read",
                parameters=[
                    query_param("partner", string(), "Only this partner's lists."),
                    query_param("status", enum(LIST_STATUSES), "Only lists in this status."),
                    query_param("tag", string(), "Only lists with this tag (any case)."),
                    *page_params("lists"),
                ],
                responses={
                    "200": json_response("The lists.", ref("ListPage")),
                    "400": error_response(
                        "An unknown `status`, or a bad `after` or `limit`.", ["invalid_request"]
                    ),
                },
            ),
        },
        "/v1/stats": {
            "get": operation(
                "getStats",
                "Totals across lists",
                "Lists by status, codes by state, utilization and claim rate, in all and per "
                "partner.",
                tag="Lists",
                scope="read",
                responses={"200": json_response("The totals.", ref("Stats"))},
            )
        },
        "/v1/lists/{list_id}": {
            "get": operation(
                "getList",
                "Get a list",
                "The list with its code counts and mapped campaigns.",
                tag="Lists",
                scope="read",
                parameters=[LIST_ID],
                responses={
                    "200": json_response("The list.", ref("List")),
                    "404": shared_response("NotFound"),
                },
            ),
            "patch": operation(
                "updateList",
                "Edit a list",
                "Changes any of name, description, expiry, low-stock threshold and expiry "
                "warning; at least one must be given. Moving an expired list's `expires_at` "
                "into the future makes it active.",
                tag="Lists",
                scope="admin",
                parameters=[LIST_ID],
                writes=True,
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
    csv: Json = {"schema": {"type": "string"}, "example": "code\nPM500FF\nPM500FG\n"}
    body: Json = {
        "required": True,
        "description": "The CSV itself, or a multipart form whose `file` field holds it. One "
        "code per line, surrounding whitespace trimmed, blank lines skipped, a first line "
        "`code` (any case) is a header. A line holding a comma fails the upload whole.",
        "content": {media_type: csv for media_type in CSV_TYPES}
        | {
            "multipart/form-data": {
                "schema": ref("UploadForm"),
                "encoding": {"file": {"contentType": ", ".join(CSV_TYPES)}},
            }
        },
    }
    failed_upload: Json = obj({"upload": ref("Upload")}, description="The upload, failed.")
    upload_path = [LIST_ID, UPLOAD_ID]
    return {
        "/v1/lists/{list_id}/uploads": {
            "post": operation(
                "createUpload",
                "Upload codes",
                "Adds codes to an active or paused list. Replies once the upload has finished "
                "with its final counts: `completed`, its codes available from then on, or "
                "`failed` (`multiple_columns`, `empty_file`) with none of them added.",
                tag="Uploads",
                scope="admin",
                parameters=[
                    LIST_ID,
                    query_param(
                        "filename",
                        text(0, FILENAME_MAX, "The file's name, kept in the upload history."),
                        "The file's name, kept in the upload history; for a multipart body "
                        "the part's filename is used when this is absent.",
                    ),
                ],
                body=body,
                writes=True,
                responses={
                    "201": json_response("The finished upload.", ref("Upload")),
                    "400": error_response(
                        "A bad `filename`, a multipart body without `file`, or a file that is "
                        "not a CSV (`details.upload` then holds the failed upload): binary "
                        "content, a line over 4096 bytes, or a multipart body that ends before "
                        "the file part's closing boundary.",
                        ["invalid_request"],
                        failed_upload,
                    ),
                    "404": shared_response("NotFound"),
                    "409": conflict("The list does not take uploads now.", UPLOAD_CONFLICTS),
                    "413": error_response(
                        "The file is larger than the server accepts; when it was cut off "
                        "midway, `details.upload` holds the failed upload.",
                        ["payload_too_large"],
                        failed_upload,
                    ),
                },
            ),
            "get": operation(
                "listUploads",
                "List a list's uploads",
                "The upload history of the list, oldest first; a page of it with `limit`.",
                tag="Uploads",
                scope="read",
                parameters=[LIST_ID, *page_params("uploads")],
                responses={
                    "200": json_response("The uploads.", ref("UploadPage")),
                    "400": error_response("A bad `after` or `limit`.", ["invalid_request"]),
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
                writes=True,
                responses={
                    "200": json_response("How many codes left the pool.", ref("Withdrawal")),
                    "404": shared_response("NotFound"),
                    "409": conflict(
                        "The upload did not complete or is already withdrawn (`conflict`), or "
                        "the list is archived.",
                        WITHDRAW_CONFLICTS,
                    ),
                },
            ),
        },
        "/v1/lists/{list_id}/uploads/{upload_id}/errors": {
            "get": operation(
                "getUploadErrors",
                "Download an upload's rejected rows",
                "A CSV with header `line,code,reason`, one row per rejected line, the first "
                "`max_error_rows` (100,000 by default) of them; the upload's `errors` counts "
                "all. Admin only, since it holds codes.",
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
                writes=True,
                body=json_body("ClaimRequest", {"user_id": "u-42"}),
                responses={
                    "200": json_response("A repeat: the claim made before.", ref("ClaimResponse")),
                    "201": json_response("A fresh claim.", ref("ClaimResponse")),
                    "404": shared_response("NotFound"),
                    "409": conflict("The list cannot hand out a code now.", CLAIM_CONFLICTS),
                },
            )
        },
        "/v1/lists/{list_id}/claims/batch": {
            "post": operation(
                "createClaimBatch",
                "Claim codes for many users",
                f"At most {BATCH_MAX:,} user ids, each claimed as by `createClaim` with no "
                "idempotency key; a refusal is listed per user in `failed`, with the code a "
                "single claim would get. When some were refused for overload or storage "
                "(`overloaded`, `storage_unavailable`), the reply carries `Retry-After`.",
                tag="Claims",
                scope="issue",
                parameters=[LIST_ID],
                writes=True,
                body=json_body("BatchClaimRequest", {"user_ids": ["u-42", "u-43"]}),
                responses={
                    "200": json_response("Claims and refusals.", ref("BatchClaimResponse")),
                    "404": shared_response("NotFound"),
                },
            )
        },
        "/v1/users/{user_id}/vouchers": {
            "get": operation(
                "listUserVouchers",
                "A user's vouchers",
                "Every code the user holds, with its list's details, oldest first (in claim id "
                "order); a page of them with `limit`.",
                tag="Users",
                scope="issue",
                parameters=[USER_ID, *page_params("vouchers (by claim id)")],
                responses={
                    "200": json_response("The vouchers.", ref("UserVoucherPage")),
                    "400": error_response(
                        "A user id that is too long or holds control characters, or a bad "
                        "`after` or `limit`.",
                        ["invalid_request"],
                    ),
                },
            )
        },
    }


def campaign_transition(verb: str, rule: str) -> Json:
    return {
        "post": operation(
            f"{verb}Campaign",
            f"{verb.capitalize()} a campaign",
            f"{rule} Writes a `campaign.status_changed` event. A transition the status table "
            "does not allow is 409 `conflict`.",
            tag="Campaigns",
            scope="admin",
            parameters=[CAMPAIGN_ID],
            writes=True,
            responses={
                "200": json_response("The campaign after the transition.", ref("Campaign")),
                "404": shared_response("NotFound"),
                "409": conflict("The campaign's status does not allow this.", ["conflict"]),
            },
        )
    }


def campaigns_paths() -> Json:
    bad_campaign = error_response(
        "The request is malformed (`invalid_request`): bad JSON, an unknown, missing or "
        "ill-typed field, a value out of range, `ends_at` not after `starts_at`; or the "
        "`message_template` is not valid Liquid or fails to render a sample reward "
        "(`invalid_template`).",
        TEMPLATE_ERRORS,
    )
    return {
        "/v1/campaigns": {
            "post": operation(
                "createCampaign",
                "Create a campaign",
                "Every list mapped must be active (409 `list_not_active`).",
                tag="Campaigns",
                scope="admin",
                writes=True,
                body=json_body(
                    "CampaignCreate",
                    {
                        "name": "Holi cashback",
                        "lists": [1837, 1840],
                        "max_codes_per_user": 1,
                        "max_codes_per_campaign": 5000,
                        "starts_at": None,
                        "ends_at": None,
                        "qualification": {
                            "event": "Charged",
                            "where": [{"property": "amount", "op": "gte", "value": 100}],
                        },
                        "message_template": "Hi {{ Profile.user_id }}, your code is "
                        "{{ Event.voucherCode }}",
                    },
                ),
                responses={
                    "201": json_response("The new campaign.", ref("Campaign")),
                    "400": bad_campaign,
                    "404": error_response("A mapped list does not exist.", ["not_found"]),
                    "409": conflict("A mapped list is not active.", ["list_not_active"]),
                },
            ),
            "get": operation(
                "listCampaigns",
                "Find campaigns",
                "Every campaign, narrowed by status when given.",
                tag="Campaigns",
                scope="read",
                parameters=[
                    query_param(
                        "status", enum(CAMPAIGN_STATUSES), "Only campaigns in this status."
                    ),
                ],
                responses={
                    "200": json_response("The campaigns.", ref("CampaignPage")),
                    "400": error_response("An unknown `status`.", ["invalid_request"]),
                },
            ),
        },
        "/v1/campaigns/{campaign_id}": {
            "get": operation(
                "getCampaign",
                "Get a campaign",
                "The campaign with its status and rewards issued.",
                tag="Campaigns",
                scope="read",
                parameters=[CAMPAIGN_ID],
                responses={
                    "200": json_response("The campaign.", ref("Campaign")),
                    "404": shared_response("NotFound"),
                },
            ),
            "patch": operation(
                "updateCampaign",
                "Edit a campaign",
                "Changes any of the fields a campaign is created with; at least one must be "
                "given, and `null` clears a nullable one. Lists mapped before may stay whatever "
                "their status; a newly mapped list must be active.",
                tag="Campaigns",
                scope="admin",
                parameters=[CAMPAIGN_ID],
                writes=True,
                body=json_body("CampaignPatch", {"max_codes_per_campaign": 10000}),
                responses={
                    "200": json_response("The campaign after the edit.", ref("Campaign")),
                    "400": bad_campaign,
                    "404": error_response(
                        "No such campaign, or a newly mapped list does not exist.", ["not_found"]
                    ),
                    "409": conflict(
                        "The campaign has ended (`conflict`), or a newly mapped list is not "
                        "active.",
                        ["conflict", "list_not_active"],
                    ),
                },
            ),
        },
        "/v1/campaigns/{campaign_id}/pause": campaign_transition(
            "pause", "Scheduled or running → paused."
        ),
        "/v1/campaigns/{campaign_id}/resume": campaign_transition(
            "resume", "Paused → running (`scheduled` before `starts_at`)."
        ),
        "/v1/campaigns/{campaign_id}/end": campaign_transition(
            "end", "Any status but ended → ended, for good."
        ),
        "/v1/campaigns/{campaign_id}/rewards": {
            "post": operation(
                "createReward",
                "Reward a user",
                "A reward is identified by (campaign, user_id, idempotency_key — empty when "
                "absent): the first reward is 201, any repeat returns it with 200 whatever the "
                "campaign's status now. A refusal is 200 with `rewarded: false` and a reason, "
                "and is not remembered. The code comes from the campaign's lists in fallback "
                "order; the reply is sent once the reward is durable.",
                tag="Rewards",
                scope="issue",
                parameters=[CAMPAIGN_ID],
                writes=True,
                body=json_body(
                    "RewardRequest",
                    {
                        "user_id": "u-42",
                        "event": {"name": "Charged", "properties": {"amount": 150}},
                    },
                ),
                responses={
                    "200": json_response(
                        "A repeat: the reward given before; or no reward, with the reason.",
                        ref("RewardOutcome"),
                    ),
                    "201": json_response("A fresh reward.", ref("Rewarded")),
                    "404": shared_response("NotFound"),
                },
            )
        },
        "/v1/campaigns/{campaign_id}/rewards/batch": {
            "post": operation(
                "createRewardBatch",
                "Reward many users",
                f"At most {BATCH_MAX:,} user ids, each rewarded as by `createReward` with no "
                "idempotency key and no event: a segment's users qualify by belonging to it, "
                "so the qualification is not asked.",
                tag="Rewards",
                scope="issue",
                parameters=[CAMPAIGN_ID],
                writes=True,
                body=json_body("BatchRewardRequest", {"user_ids": ["u-42", "u-43"]}),
                responses={
                    "200": json_response("One result per user.", ref("BatchRewardResponse")),
                    "404": shared_response("NotFound"),
                },
            )
        },
        "/v1/templates/render": {
            "post": operation(
                "renderTemplate",
                "Preview a message template",
                "Renders a template as a reward would. A template that fails here is 400 "
                "`invalid_template`; at a reward it gives an empty message.",
                tag="Campaigns",
                scope="admin",
                body=json_body(
                    "TemplateRender",
                    {
                        "template": "Hi {{ Profile.user_id }}, your code is "
                        "{{ Event.voucherCode }}",
                        "event": {"voucherCode": "PM500FF", "userId": "u-42"},
                    },
                ),
                responses={
                    "200": json_response("The message.", ref("RenderedMessage")),
                    "400": error_response(
                        "The request is malformed (`invalid_request`), or the template is not "
                        "valid Liquid or fails to render (`invalid_template`).",
                        TEMPLATE_ERRORS,
                    ),
                },
            )
        },
    }


def events_paths() -> Json:
    types = ", ".join(f"`{event_type}`" for event_type in EVENT_TYPES)
    return {
        "/v1/events": {
            "get": operation(
                "listEvents",
                "Read the event stream",
                "Codes handed out, status changes made through the API, finished uploads and "
                "stock alerts, as events in order of `seq`. With a WebSocket upgrade the events "
                "stream as frames, one `Event` each: those after `since` (absent: only new "
                "ones), then live. A subscriber with more events waiting than the server "
                "buffers (10,000 by default) is closed with code 4008, the reason naming the "
                "`since` to resume with; a `since` past retention is closed with 4010; on "
                "shutdown, subscribers are closed with 1001, the reason naming the `since` to "
                "resume with. Without an upgrade, one page of the events after `since` (absent: "
                "from the oldest kept).",
                tag="Events",
                scope="read",
                parameters=[
                    query_param(
                        "since",
                        integer(0, SEQ_MAX, format="int64"),
                        "Only events after this seq; not after the last event. Absent: from the "
                        "oldest kept (a page), or only new ones (WebSocket).",
                    ),
                    query_param(
                        "limit",
                        integer(1, PAGE_MAX, default=EVENTS_PAGE_DEFAULT),
                        "The most events in a page; not read by the WebSocket.",
                    ),
                    query_param(
                        "types",
                        array_of(enum(EVENT_TYPES)),
                        f"Only events of these types, comma-separated: {types}.",
                    )
                    | {"style": "form", "explode": False},
                    query_param(
                        "format",
                        enum(["json", "msgpack"]) | {"default": "json"},
                        "The WebSocket's frames: JSON text frames or MessagePack binary frames.",
                    ),
                ],
                responses={
                    "101": {"description": "Upgraded: the events stream as WebSocket frames."},
                    "200": json_response("A page of events.", ref("EventPage")),
                    "400": error_response(
                        "A bad `since` (or one after the last event), `limit` or `format`, or "
                        "an unknown type in `types`.",
                        ["invalid_request"],
                    ),
                    "410": error_response(
                        "Events after `since` are past retention: the oldest kept is later.",
                        ["events_expired"],
                    ),
                    "503": unavailable(
                        "Not upgraded: the server is recovering or shutting down (`not_ready`), "
                        "or already serves as many subscribers as it may (`overloaded`, "
                        "`max_subscribers`). Retry after `Retry-After`.",
                        ["not_ready", "overloaded"],
                    ),
                },
            )
        }
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
            {
                "name": "Campaigns",
                "description": "Promo campaigns: who qualifies, from which lists, how many codes.",
            },
            {"name": "Rewards", "description": "Handing codes to users through a campaign."},
            {"name": "Events", "description": "What happened, in order: WebSocket or pages."},
            {"name": "Operations", "description": "Health, readiness, metrics, this document."},
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": operations_paths()
        | lists_paths()
        | uploads_paths()
        | claims_paths()
        | campaigns_paths()
        | events_paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": SHARED_RESPONSES,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`; each key has scopes "
                    "`admin`, `issue` and/or `read` (`admin` may also read).",
                }
            },
        },
    }
    return copy.deepcopy(document)
