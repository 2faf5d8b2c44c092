"""schemathesis against a live voucherd: every operation of /v1/openapi.json, a few thousand
generated requests; no 5xx, every status documented, every response as the document says.

The server is a real process with an API key, seeded with lists, uploads, claims and
campaigns. Hooks steer generated path ids (and campaign list ids) to those existing objects most
of the time, so operations reach their success paths rather than only 404; operations that
change status for good (archive, end, withdraw) get objects of their own, so the objects the
rest of the run claims and rewards from stay active.

Generation is seeded and derandomized: a failure replays with the same cases. CI runs about
60 fuzzed cases per operation (plus schemathesis's examples and coverage cases, some 2,500
requests in all, a minute on two cores); for a long run set SCHEMATHESIS_MAX_EXAMPLES (say
1000). SCHEMATHESIS_STRICT=1 adds the `positive_data_acceptance` check: every request the
document calls valid must be accepted, which finds where the document is looser than the
server's validation.

Not exercised:
the WebSocket upgrade of GET /v1/events (schemathesis sends plain GETs, so the page of events is
tested, not the 101 stream; tests/test_events.py covers the stream), and multipart uploads only
as schemathesis builds them from `UploadForm`. CSV bodies are schemathesis's strings half the
time and, the other half, lines of codes with duplicates, invalid codes, headers and commas.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from support import FUTURE, ServerProcess

from voucherd.server.openapi import openapi_document
from voucherd.settings import hash_key

KEY = "vd_schemathesis_every_scope_0123456789"
# Cases per operation in the fuzzing phase; the examples and coverage phases add their own.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "60"))
SEED = 20260601
# Reached by the run as a whole, so a change that makes schemathesis skip most cases shows.
MIN_CASES = 2000

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
]
if os.environ.get("SCHEMATHESIS_STRICT"):
    CHECKS.append("positive_data_acceptance")


def call(url: str, method: str, path: str, body: Any = None, csv: str | None = None) -> Any:
    """One request with the key; the JSON reply. Seeding only: anything but 2xx fails."""
    headers = {"Authorization": f"Bearer {KEY}"}
    data = None
    if csv is not None:
        data, headers["Content-Type"] = csv.encode(), "text/csv"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None


@dataclass
class Seeded:
    """Ids of the objects made before the run, by what the run may do to them."""

    url: str
    server: ServerProcess
    # Lists that stay active: claimed from, rewarded from, uploaded to, read.
    claim_lists: list[int] = field(default_factory=list)
    read_lists: list[int] = field(default_factory=list)
    # Lists paused, activated and edited at will; and lists to archive.
    edit_lists: list[int] = field(default_factory=list)
    archive_lists: list[int] = field(default_factory=list)
    # (list id, upload id) pairs: to read, and to withdraw.
    read_uploads: list[tuple[int, int]] = field(default_factory=list)
    withdraw_uploads: list[tuple[int, int]] = field(default_factory=list)
    reward_campaigns: list[int] = field(default_factory=list)
    edit_campaigns: list[int] = field(default_factory=list)
    end_campaigns: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)


def codes(prefix: str, count: int) -> str:
    return "".join(f"{prefix}{index:08d}\n" for index in range(count))


def seed(url: str, server: ServerProcess) -> Seeded:
    seeded = Seeded(url, server)

    def new_list(tag: str, partner: str = "Puma", **extra: Any) -> int:
        body = {"partner": partner, "tag": tag, "name": f"List {tag}", "expires_at": FUTURE}
        list_id: int = call(url, "POST", "/v1/lists", body | extra)["id"]
        return list_id

    def upload(list_id: int, csv: str) -> int:
        reply = call(url, "POST", f"/v1/lists/{list_id}/uploads?filename=seed.csv", csv=csv)
        assert reply["status"] == "completed", reply
        upload_id: int = reply["id"]
        return upload_id

    # First the objects to archive and end, so the lowest ids, which the coverage phase sends
    # as boundary values whatever the hooks do, name them rather than the lists claimed from.
    for index in range(3):
        seeded.archive_lists.append(new_list(f"archive-{index}", partner="Reebok"))
    for index in range(2):
        list_id = new_list(f"claims-{index}", duplicate_scope="list")
        upload(list_id, codes(f"CL{index}-", 4000))
        seeded.claim_lists.append(list_id)
    for index in range(2):
        list_id = new_list(f"reads-{index}", partner="Adidas")
        first = upload(list_id, codes(f"RD{index}-", 300))
        # Rejected rows of every kind, so the error file has rows.
        rejects = "X\nX\n" + "é\n" + "R" * 65 + "\n"
        second = upload(list_id, "code\n" + codes(f"RD{index}-", 3) + rejects)
        seeded.read_lists.append(list_id)
        seeded.read_uploads += [(list_id, first), (list_id, second)]
    for index in range(3):
        list_id = new_list(f"edit-{index}", partner="Nike")
        for part in range(3):
            upload_id = upload(list_id, codes(f"ED{index}-{part}-", 50))
            seeded.withdraw_uploads.append((list_id, upload_id))
        seeded.edit_lists.append(list_id)

    campaign = {"lists": seeded.claim_lists, "max_codes_per_user": 3}
    template = {"message_template": "Hi {{ Profile.user_id }}: {{ Event.voucherCode }}"}
    for index in range(2):
        body = campaign | {"name": f"end-{index}"}
        seeded.end_campaigns.append(call(url, "POST", "/v1/campaigns", body)["id"])
    for index in range(2):
        body = campaign | template | {"name": f"rewards-{index}"}
        seeded.reward_campaigns.append(call(url, "POST", "/v1/campaigns", body)["id"])
    for index in range(2):
        body = campaign | {"name": f"edit-{index}", "qualification": {"event": "Charged"}}
        seeded.edit_campaigns.append(call(url, "POST", "/v1/campaigns", body)["id"])

    for user in ("u-1", "u-2", "user 3"):
        for list_id in seeded.read_lists:
            call(url, "POST", f"/v1/lists/{list_id}/claims", {"user_id": user})
        path = f"/v1/campaigns/{seeded.reward_campaigns[0]}/rewards"
        assert call(url, "POST", path, {"user_id": user})["rewarded"] is True
        seeded.users.append(user)
    return seeded


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    base = tmp_path_factory.mktemp("schemathesis")
    config = base / "voucherd.toml"
    config.write_text(
        f'[keys.fuzzer]\nsha256 = "{hash_key(KEY)}"\nscopes = ["admin", "issue", "read"]\n'
    )
    # NORMAL: a claim survives a crash of the process, not of the machine; durability is not
    # what this test is about, and it saves an fsync per write.
    server = ServerProcess(base / "data", config=config, env={"VOUCHERD_SYNCHRONOUS": "NORMAL"})
    try:
        server.start()
        asyncio.run(server.wait_ready())
        served = urllib.request.urlopen(f"{server.url}/v1/openapi.json", timeout=30).read()
        assert json.loads(served) == openapi_document()
        live = seed(server.url, server)
        LIVE[:] = [live]
        yield live
    finally:
        server.stop()


def pick(generated: Any, known: list[Any]) -> st.SearchStrategy[Any]:
    """A known id most of the time, else the generated one (usually a 404).

    Only a well-formed generated id (a positive integer, or a string) is swapped: an invalid
    one belongs to a negative case, whose point is the invalid value.
    """
    if not known or isinstance(generated, bool):
        return st.just(generated)
    if isinstance(generated, int) and generated < 1:
        return st.just(generated)
    return st.sampled_from([*known, *known, *known, generated])


def path_pools(seeded: Seeded, method: str, path: str) -> dict[str, list[Any]]:
    """Which existing objects an operation's path parameters may name."""
    if path.startswith("/v1/lists/{list_id}/uploads/{upload_id}"):
        pairs = seeded.withdraw_uploads if method == "DELETE" else seeded.read_uploads
        return {"pair": pairs}
    if path.startswith("/v1/lists/{list_id}"):
        if path.endswith("/archive"):
            return {"list_id": seeded.archive_lists}
        if path.endswith(("/pause", "/activate")) or method == "PATCH":
            return {"list_id": seeded.edit_lists}
        if path.endswith(("/claims", "/claims/batch")):
            return {"list_id": seeded.claim_lists}
        return {"list_id": seeded.read_lists + seeded.claim_lists}
    if path.startswith("/v1/campaigns/{campaign_id}"):
        if path.endswith("/end"):
            return {"campaign_id": seeded.end_campaigns}
        if path.endswith(("/pause", "/resume")) or method == "PATCH":
            return {"campaign_id": seeded.edit_campaigns}
        return {"campaign_id": seeded.reward_campaigns}
    if path.startswith("/v1/users/{user_id}"):
        return {"user_id": seeded.users}
    return {}


CSV_CODES = st.sampled_from(["PM500FF", "PM500FG", "A1", "code", "x" * 64, "y" * 65, "é", "a,b"])


@st.composite
def csv_files(draw: st.DrawFn) -> str:
    """Lines of codes: valid, duplicate, too long, non-ASCII, a header, now and then a comma."""
    lines = draw(st.lists(st.one_of(CSV_CODES, st.from_regex(r"[!#-+\--~]{1,64}", fullmatch=True))))
    endings = draw(st.sampled_from(["\n", "\r\n"]))
    return endings.join(lines) + draw(st.sampled_from(["", endings, endings * 2]))


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": ["all"],
        "auth": {"openapi": {"bearerAuth": {"bearer": KEY}}},
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "checks": {"enabled": False} | {name: {"enabled": True} for name in CHECKS},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "request-timeout": 30,
    }
)
# The document as the code builds it, so pytest knows the operations before any server runs;
# the `seeded` fixture checks that the live server serves this very document.
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)

# The objects the hooks steer ids to, set by the `seeded` fixture before any case is generated.
LIVE: list[Seeded] = []
# Statuses answered, by operation: the run's coverage, checked after it.
STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)


@schema.hook
def flatmap_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    operation = context.operation
    if not path_parameters or operation is None or not LIVE:
        return st.just(path_parameters)
    pools = path_pools(LIVE[0], operation.method.upper(), operation.path)
    if "pair" in pools:
        generated = (path_parameters.get("list_id"), path_parameters.get("upload_id"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in generated):
            return st.just(path_parameters)
        return pick(generated, pools["pair"]).map(
            lambda pair: path_parameters | {"list_id": pair[0], "upload_id": pair[1]}
        )
    for name, known in pools.items():
        if name in path_parameters:
            return pick(path_parameters[name], known).map(partial(replaced, path_parameters, name))
    return st.just(path_parameters)


def replaced(params: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return params | {name: value}


@schema.hook
def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    if operation is None or not LIVE:
        return st.just(body)
    label = f"{operation.method.upper()} {operation.path}"
    if label == "POST /v1/lists/{list_id}/uploads" and isinstance(body, str):
        return st.one_of(st.just(body), csv_files())
    if label in ("POST /v1/campaigns", "PATCH /v1/campaigns/{campaign_id}"):
        lists = body.get("lists") if isinstance(body, dict) else None
        if isinstance(lists, list) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in lists
        ):
            # Existing active lists, so a campaign gets made (or edited), not only 404.
            known = LIVE[0].claim_lists + LIVE[0].read_lists
            mapped = st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True)
            return st.one_of(st.just(body), mapped.map(lambda ids: body | {"lists": ids}))
    return st.just(body)


@schema.hook
def after_call(context: HookContext, case: Case[Any], response: schemathesis.Response) -> None:
    STATUSES[case.operation.label][response.status_code] += 1


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Case[Any], seeded: Seeded) -> None:
    case.call_and_validate(base_url=seeded.url)


def test_the_run_reached_every_operation_and_its_success_path() -> None:
    if not STATUSES:
        pytest.skip("runs after test_every_operation_answers_as_documented")
    operations = {
        f"{method.upper()} {path}"
        for path, methods in openapi_document()["paths"].items()
        for method in methods
    }
    assert set(STATUSES) == operations
    total = sum(sum(counts.values()) for counts in STATUSES.values())
    assert total >= MIN_CASES, dict(STATUSES)
    unreached = sorted(
        label for label, counts in STATUSES.items() if not any(200 <= s < 300 for s in counts)
    )
    assert not unreached, {label: dict(STATUSES[label]) for label in unreached}


def test_the_server_logged_no_unexpected_error(seeded: Seeded) -> None:
    log = seeded.server.log()
    assert "Traceback" not in log, log[-5000:]
    assert "unexpected error" not in log, log[-5000:]
    assert seeded.server.process is not None
    assert seeded.server.process.poll() is None, log[-5000:]
