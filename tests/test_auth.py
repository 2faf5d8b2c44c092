"""API keys: 401 without a valid key, 403 without the scope, the config file, and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from support import Client, ServerProcess, codes_csv, free_port, list_body, make_codes

from voucherd.cli import main
from voucherd.server.app import ROUTES
from voucherd.settings import ApiKey, Scope, Settings, hash_key

ClientFactory = Callable[[Settings], Awaitable[Client]]

ADMIN, ISSUE, READ = Scope.ADMIN, Scope.ISSUE, Scope.READ
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/openapi.json")}
Route = tuple[str, str, Scope]
SCOPED: list[Route] = [
    (method, path, scope) for method, path, _, scope in ROUTES if scope is not None
]


def key_for(scopes: frozenset[Scope]) -> str:
    return "vd_test_" + "_".join(sorted(scopes)) if scopes else "vd_test_none"


# Every key a test may need: each scope alone, each pair, all three.
SCOPE_SETS = [
    frozenset({ADMIN}),
    frozenset({ISSUE}),
    frozenset({READ}),
    frozenset({ADMIN, ISSUE}),
    frozenset({ADMIN, READ}),
    frozenset({ISSUE, READ}),
    frozenset({ADMIN, ISSUE, READ}),
]
KEYS = tuple(
    ApiKey(name=f"key-{'-'.join(sorted(scopes))}", sha256=hash_key(key_for(scopes)), scopes=scopes)
    for scopes in SCOPE_SETS
)
ALL = key_for(frozenset(Scope))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def lacking(scope: Scope) -> frozenset[Scope]:
    """Every other scope that does not imply `scope` (admin implies read)."""
    others = set(Scope) - {scope}
    if scope is READ:
        others.discard(ADMIN)
    return frozenset(others)


@pytest.fixture
async def keyed(start_client: ClientFactory, tmp_path: Path) -> Client:
    return await start_client(Settings(data_dir=tmp_path / "data", keys=KEYS))


SEEDS = itertools.count()


async def seed(client: Client) -> tuple[int, int]:
    """A list with codes, made with a key holding every scope: (list id, upload id)."""
    body = list_body(tag=f"seed-{next(SEEDS)}")
    response = await client.post("/v1/lists", json=body, headers=bearer(ALL))
    assert response.status == 201, await response.text()
    list_id: int = (await response.json())["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(make_codes(20)),
        headers={**bearer(ALL), "Content-Type": "text/csv"},
    )
    assert response.status == 201, await response.text()
    upload_id: int = (await response.json())["id"]
    response = await client.post(
        "/v1/campaigns", json={"name": "seed", "lists": [list_id]}, headers=bearer(ALL)
    )
    assert response.status == 201, await response.text()
    return list_id, upload_id


def fill(path: str, list_id: int, upload_id: int) -> str:
    # A fresh server's first seed makes campaign 1.
    return (
        path.replace("{list_id}", str(list_id))
        .replace("{upload_id}", str(upload_id))
        .replace("{campaign_id}", "1")
        .replace("{user_id}", "u-1")
    )


async def assert_error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body


def test_the_route_table_has_a_scope_for_everything_but_the_probes_and_the_document() -> None:
    unscoped = {(method, path) for method, path, _, scope in ROUTES if scope is None}
    assert unscoped == OPEN_ROUTES
    assert {scope for *_, scope in SCOPED} == set(Scope)


async def test_a_keyed_request_is_served_without_warnings(keyed: Client) -> None:
    # The first request made with a key stores the caller on the request; with warnings as
    # errors, a warning there (a str key instead of a web.RequestKey) turns it into a 500.
    response = await keyed.get("/v1/lists", headers=bearer(ALL))
    assert response.status == 200, await response.text()


async def problems_of(
    client: Client, headers: dict[str, str], status: int, code: str, routes: list[Route]
) -> list[str]:
    """Send a request to each route; return a line for each one not answered as expected."""
    list_id, upload_id = await seed(client)
    problems = []
    for method, path, _ in routes:
        response = await client.request(method, fill(path, list_id, upload_id), headers=headers)
        body = await response.text()
        if response.status != status or response.content_type != "application/json":
            problems.append(f"{method} {path} with {headers}: {response.status} {body[:200]}")
        elif json.loads(body)["error"]["code"] != code:
            problems.append(f"{method} {path} with {headers}: {body[:200]}")
    return problems


# -- 401 ---------------------------------------------------------------------------------------


async def test_a_request_without_a_key_is_unauthorized(keyed: Client) -> None:
    problems = await problems_of(keyed, {}, 401, "unauthorized", SCOPED)
    assert not problems, "\n".join(problems)


BAD_HEADERS = [
    "Bearer vd_wrong",
    f"Bearer {ALL}x",
    f"Bearer {ALL[:-1]}",
    f"Bearer {ALL.upper()}",
    "Bearer",
    "Bearer ",
    ALL,
    f"Basic {ALL}",
    f"Token {ALL}",
    f"Bearer{ALL}",
    f"Bearer: {ALL}",
    "",
]


async def test_a_wrong_or_malformed_key_is_unauthorized(keyed: Client) -> None:
    problems = []
    for header in BAD_HEADERS:
        headers = {"Authorization": header}
        problems += await problems_of(keyed, headers, 401, "unauthorized", SCOPED)
    assert not problems, "\n".join(problems)


async def test_a_refused_request_changes_nothing(keyed: Client) -> None:
    list_id, _ = await seed(keyed)
    for path in (f"/v1/lists/{list_id}/pause", f"/v1/lists/{list_id}/archive"):
        response = await keyed.post(path)
        await assert_error(response, 401, "unauthorized")
        response = await keyed.post(path, headers=bearer(key_for(frozenset({ISSUE, READ}))))
        await assert_error(response, 403, "forbidden")
    response = await keyed.post(
        f"/v1/lists/{list_id}/claims", json={"user_id": "u-1"}, headers=bearer("vd_wrong")
    )
    await assert_error(response, 401, "unauthorized")
    response = await keyed.get(f"/v1/lists/{list_id}", headers=bearer(ALL))
    listing = await response.json()
    assert listing["status"] == "active"
    assert listing["codes"]["distributed"] == 0


async def test_the_bearer_scheme_is_case_insensitive(keyed: Client) -> None:
    response = await keyed.get("/v1/lists", headers={"Authorization": f"bearer {ALL}"})
    assert response.status == 200


# -- 403: each scope reaches its own routes and no other ---------------------------------------


@pytest.mark.parametrize("scope", list(Scope))
async def test_a_key_without_the_scope_is_forbidden(keyed: Client, scope: Scope) -> None:
    routes = [route for route in SCOPED if route[2] is scope]
    headers = bearer(key_for(lacking(scope)))
    problems = await problems_of(keyed, headers, 403, "forbidden", routes)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scope", list(Scope))
async def test_a_key_with_the_scope_gets_through(keyed: Client, scope: Scope) -> None:
    list_id, upload_id = await seed(keyed)
    holders = [scopes for scopes in SCOPE_SETS if scope in scopes]
    if scope is READ:
        holders += [scopes for scopes in SCOPE_SETS if ADMIN in scopes and READ not in scopes]
    problems = []
    for method, path, _ in [route for route in SCOPED if route[2] is scope]:
        for scopes in holders:
            response = await keyed.request(
                method,
                fill(path, list_id, upload_id),
                json={"user_id": "u-1"},
                headers=bearer(key_for(scopes)),
            )
            if response.status in (401, 403):
                problems.append(f"{method} {path} with {sorted(scopes)}: {await response.text()}")
    assert not problems, "\n".join(problems)


async def test_admin_implies_read_but_nothing_else_implies_anything(keyed: Client) -> None:
    list_id, _ = await seed(keyed)
    admin = bearer(key_for(frozenset({ADMIN})))
    assert (await keyed.get("/v1/lists", headers=admin)).status == 200
    assert (await keyed.get("/metrics", headers=admin)).status == 200
    claim = await keyed.post(f"/v1/lists/{list_id}/claims", json={"user_id": "u"}, headers=admin)
    await assert_error(claim, 403, "forbidden")
    issue = bearer(key_for(frozenset({ISSUE})))
    await assert_error(await keyed.get("/v1/lists", headers=issue), 403, "forbidden")
    read = bearer(key_for(frozenset({READ})))
    create = await keyed.post("/v1/lists", json=list_body(tag="x"), headers=read)
    await assert_error(create, 403, "forbidden")


@pytest.mark.parametrize(("method", "path"), sorted(OPEN_ROUTES))
async def test_probes_and_the_document_need_no_key(keyed: Client, method: str, path: str) -> None:
    response = await keyed.request(method, path)
    assert response.status == 200, await response.text()
    response = await keyed.request(method, path, headers={"Authorization": "Bearer vd_wrong"})
    assert response.status == 200, await response.text()


async def test_an_unknown_route_is_not_found_without_a_key(keyed: Client) -> None:
    await assert_error(await keyed.get("/v1/nothing"), 404, "not_found")


async def test_an_upload_records_the_name_of_its_key(keyed: Client) -> None:
    list_id, upload_id = await seed(keyed)
    admin = key_for(frozenset({ADMIN}))
    response = await keyed.post(
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv(make_codes(3, "B")),
        headers={**bearer(admin), "Content-Type": "text/csv"},
    )
    assert response.status == 201
    assert (await response.json())["uploaded_by"] == "key-admin"
    response = await keyed.get(f"/v1/lists/{list_id}/uploads", headers=bearer(admin))
    uploads = (await response.json())["uploads"]
    assert [u["uploaded_by"] for u in uploads] == ["key-admin-issue-read", "key-admin"]
    assert uploads[0]["id"] == upload_id


async def test_an_upload_in_open_mode_has_no_uploader(client: Client) -> None:
    response = await client.post("/v1/lists", json=list_body())
    list_id = (await response.json())["id"]
    response = await client.post(
        f"/v1/lists/{list_id}/uploads", data="A1\n", headers={"Content-Type": "text/csv"}
    )
    assert response.status == 201
    assert (await response.json())["uploaded_by"] is None


# -- the config file ---------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voucherd.toml"
    path.write_text(text)
    return path


def test_keys_load_from_the_config_file(tmp_path: Path) -> None:
    ops, reader = hash_key("ops-key"), hash_key("reader-key")
    config = write_config(
        tmp_path,
        f"""
max_json_bytes = 2048

[keys.ops]
sha256 = "{ops.upper()}"
scopes = ["admin", "issue"]

[keys."read only"]
sha256 = "{reader}"
scopes = ["read"]
""",
    )
    settings = Settings.load(config=config, env={})
    assert settings.max_json_bytes == 2048
    assert not settings.open_mode
    assert set(settings.keys) == {
        ApiKey("ops", ops, frozenset({ADMIN, ISSUE})),
        ApiKey("read only", reader, frozenset({READ})),
    }


def test_keys_under_the_voucherd_table_are_read_too_and_never_left_behind(tmp_path: Path) -> None:
    digest = hash_key("ops-key")
    entry = f'sha256 = "{digest}"\nscopes = ["admin"]\n'
    nested = write_config(tmp_path, f"[voucherd]\nport = 8190\n\n[voucherd.keys.ops]\n{entry}")
    settings = Settings.load(config=nested, env={})
    assert not settings.open_mode
    assert settings.keys == (ApiKey("ops", digest, frozenset({ADMIN})),)
    both = write_config(tmp_path, f"[voucherd.keys.ops]\n{entry}\n[keys.other]\n{entry}")
    with pytest.raises(ValueError, match="both"):
        Settings.load(config=both, env={})


def test_keys_are_hidden_from_the_settings_repr(tmp_path: Path) -> None:
    digest = hash_key("ops-key")
    config = write_config(tmp_path, f'[keys.ops]\nsha256 = "{digest}"\nscopes = ["admin"]\n')
    settings = Settings.load(config=config, env={})
    assert digest not in repr(settings)
    assert digest not in repr(settings.keys)


@pytest.mark.parametrize(
    "entry",
    [
        'sha256 = "abc"\nscopes = ["admin"]',
        f'sha256 = "{"g" * 64}"\nscopes = ["admin"]',
        f'sha256 = "{hash_key("k")}0"\nscopes = ["admin"]',
        'scopes = ["admin"]',
        f'sha256 = "{hash_key("k")}"\nscopes = ["root"]',
        f'sha256 = "{hash_key("k")}"\nscopes = ["admin", "Admin"]',
        f'sha256 = "{hash_key("k")}"\nscopes = []',
        f'sha256 = "{hash_key("k")}"',
        f'sha256 = "{hash_key("k")}"\nscopes = "admin"',
    ],
    ids=[
        "short-digest",
        "not-hex",
        "long-digest",
        "no-digest",
        "unknown-scope",
        "scope-case",
        "no-scopes",
        "scopes-missing",
        "scopes-a-string",
    ],
)
def test_a_bad_key_entry_is_a_value_error(tmp_path: Path, entry: str) -> None:
    config = write_config(tmp_path, f"[keys.ops]\n{entry}\n")
    with pytest.raises(ValueError, match="ops"):
        Settings.load(config=config, env={})


async def test_keys_from_the_config_file_authenticate(
    start_client: ClientFactory, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        f'[keys.ops]\nsha256 = "{hash_key("ops-secret")}"\nscopes = ["admin"]\n',
    )
    settings = Settings.load(config=config, env={}, data_dir=tmp_path / "data")
    client = await start_client(settings)
    assert (await client.get("/v1/lists", headers=bearer("ops-secret"))).status == 200
    await assert_error(await client.get("/v1/lists"), 401, "unauthorized")


# -- the command line --------------------------------------------------------------------------


def run_voucherd(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCHERD_")}
    return subprocess.run(
        [sys.executable, "-m", "voucherd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def created_key(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run `voucherd keys create ARGS`: (the key, the config lines it prints)."""
    assert main(["keys", "create", *args]) == 0
    printed = capsys.readouterr().out
    key = re.search(r"API key[^:]*: (\S+)", printed)
    assert key is not None, printed
    return key.group(1), printed[printed.index("[keys.") :]


def test_keys_create_prints_a_key_and_its_config_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, lines = created_key(capsys, "ops", "--scope", "admin", "--scope", "read")
    settings = Settings.load(config=write_config(tmp_path, lines), env={})
    assert settings.keys == (ApiKey("ops", hash_key(key), frozenset({ADMIN, READ})),)
    assert key not in lines


def test_keys_create_makes_a_new_key_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    keys = {created_key(capsys, "ops", "--scope", "read")[0] for _ in range(5)}
    assert len(keys) == 5
    assert all(len(key) >= 32 for key in keys)


def test_keys_create_quotes_an_unusual_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, lines = created_key(capsys, 'ops "night" shift', "--scope", "issue")
    settings = Settings.load(config=write_config(tmp_path, lines), env={})
    assert settings.keys == (ApiKey('ops "night" shift', hash_key(key), frozenset({ISSUE})),)


async def test_a_created_key_authenticates_against_a_real_server(tmp_path: Path) -> None:
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voucherd", "keys", "create", "ops", "--scope", "admin",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed = (await command.communicate())[0].decode()
    assert command.returncode == 0, printed
    match = re.search(r"API key[^:]*: (\S+)", printed)
    assert match is not None, printed
    key = match.group(1)
    config = write_config(tmp_path, printed[printed.index("[keys.") :])

    server = ServerProcess(tmp_path / "data", config=config)
    try:
        server.start()
        await server.wait_ready()
        url = server.url
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v1/lists", headers=bearer(key)) as response:
                assert response.status == 200, await response.text()
            async with session.post(
                f"{url}/v1/lists", json=list_body(), headers=bearer(key)
            ) as response:
                assert response.status == 201, await response.text()
            async with session.get(f"{url}/v1/lists") as response:
                assert response.status == 401
            async with session.get(f"{url}/v1/lists", headers=bearer(key + "x")) as response:
                assert response.status == 401
            async with session.post(
                f"{url}/v1/lists/1/claims", json={"user_id": "u"}, headers=bearer(key)
            ) as response:
                assert response.status == 403
        assert server.terminate() == 0, server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serving_beyond_loopback_without_keys_is_refused(tmp_path: Path, host: str) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    result = run_voucherd("serve", "--host", host, "--port", str(port),
                          "--data-dir", str(data_dir), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "refusing" in result.stderr
    assert not data_dir.exists()
    # It never listened: the port is still free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_key_that_is_not_a_table_is_a_value_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[keys]\nops = "vd_not_a_digest"\n')
    with pytest.raises(ValueError, match=r"\[keys\.ops\]"):
        Settings.load(config=config, env={})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("port = [8191]", "port must be a whole number, not list"),
        ("port = 8191.5", "port must be a whole number"),
        ("port = 'abc'", "port must be a whole number, not 'abc'"),
        ("port = 70000", "port must be at most 65535"),
        ("shutdown_timeout = true", "shutdown_timeout must be a number, not bool"),
        ("max_upload_bytes = {a = 1}", "max_upload_bytes must be a whole number, not dict"),
        ("data_dir = 7", "data_dir must be a path, not int"),
        ("log_level = 'verbose'", "log_level must be one of"),
        ("[voucherd", "voucherd.toml"),
    ],
)
def test_a_setting_of_the_wrong_kind_is_refused_by_name(
    tmp_path: Path, line: str, says: str
) -> None:
    config = write_config(tmp_path, line + "\n")
    with pytest.raises(ValueError, match=re.escape(says)):
        Settings.load(config=config, env={})


def test_serve_says_in_a_line_what_is_wrong_with_its_settings_or_data_folder(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path, "[voucherd]\nport = 8191.5\n")
    for args, status, says in (
        (["--config", str(config)], 2, "port must be a whole number"),
        (["--data-dir", str(blocker)], 1, "cannot use the data folder"),
    ):
        result = run_voucherd("serve", "--port", str(free_port()), *args, cwd=tmp_path)
        assert result.returncode == status, result.stderr
        assert says in result.stderr
        assert "Traceback" not in result.stderr, result.stderr
