"""The shipped monitoring (monitoring/), tested with the real tools: promtool checks the alert
rules and runs their unit tests, a real Prometheus scrapes a running voucherd through the example
scrape config and answers queries about it, and the dashboard and the rules reference only
metrics voucherd exports.

promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it). Without
them these tests are skipped, except in CI (CI set), where a missing tool fails them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from support import ServerProcess, codes_csv, free_port, list_body, make_codes

from voucherd.settings import hash_key

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "voucherd.json"

# Long enough that only something broken reaches it; nothing here measures how fast anything is.
WAIT = 30.0

METRIC_NAME = re.compile(r"\bvoucherd_[a-z_]+")
ALERT_NAME = re.compile(r"^\s*- alert: (\w+)\s*$", re.MULTILINE)
CHARGED = {"event": "Charged", "where": [{"property": "amount", "op": "gte", "value": 100}]}

T = TypeVar("T")


# -- helpers -----------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a tool from the `prometheus` package; in CI its absence is a failure."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


async def poll(condition: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Wait until `condition()` returns something other than None, and return it."""
    deadline = time.monotonic() + WAIT
    while True:
        found = await condition()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {WAIT} s for {what}")
        await asyncio.sleep(0.2)


def alert_names() -> list[str]:
    return ALERT_NAME.findall(ALERTS.read_text())


def exprs(dashboard: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets (rows included) and variables."""
    if isinstance(dashboard, dict):
        for key, value in dashboard.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(dashboard, list):
        for item in dashboard:
            yield from exprs(item)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exported_names(exposition: str) -> set[str]:
    """The sample names a /metrics page can have, from its `# TYPE` lines: a family is exported
    even while it has no samples (a labelled counter nobody has touched yet)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif kind == "counter":
            base = name.removesuffix("_total")
            names |= {f"{base}_total", f"{base}_created"}
        else:
            names.add(name)
    return names


async def request(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, path, **kwargs) as response:
        return response.status, await response.json()


async def fill(session: aiohttp.ClientSession, codes: int, claims: int) -> int:
    """A list with `codes` codes (and one duplicate row, rejected) and `claims` claims from it;
    its id."""
    status, created = await request(session, "POST", "/v1/lists", json=list_body())
    assert status == 201, created
    list_id = int(created["id"])
    rows = make_codes(codes)
    status, uploaded = await request(
        session,
        "POST",
        f"/v1/lists/{list_id}/uploads",
        data=codes_csv([*rows, rows[0]]),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 201, uploaded
    assert (uploaded["status"], uploaded["accepted"]) == ("completed", codes), uploaded
    for user in range(claims):
        path = f"/v1/lists/{list_id}/claims"
        status, claimed = await request(session, "POST", path, json={"user_id": f"u-{user}"})
        assert status == 201, claimed
    return list_id


@dataclass
class Prometheus:
    """A real Prometheus on a free loopback port, its storage in a temporary directory."""

    url: str
    session: aiohttp.ClientSession

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The single sample of an instant query, or None while it has none."""
        result = await self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


def scrape_config(directory: Path, target: str, key: str) -> Path:
    """The shipped example scrape config, pointed at `target` with `key` in its key file,
    scraping and evaluating every second; its rule file copied beside it (rule_files are
    relative to the config)."""
    text = SCRAPE_CONFIG.read_text()
    key_file = directory / "voucherd.key"
    key_file.write_text(key + "\n")
    for old, new in [
        ("127.0.0.1:8080", target),
        ("/etc/prometheus/voucherd.key", str(key_file)),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
    ]:
        assert old in text, f"{SCRAPE_CONFIG} no longer has {old!r}"
        text = text.replace(old, new)
    config = directory / "prometheus.yml"
    config.write_text(text)
    shutil.copy(ALERTS, directory / ALERTS.name)
    return config


def start_prometheus(directory: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    with (directory / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


@asynccontextmanager
async def prometheus(directory: Path, config: Path) -> AsyncIterator[Prometheus]:
    port = free_port()
    log = directory / "prometheus.log"
    process = start_prometheus(directory, config, port)
    try:
        async with aiohttp.ClientSession() as session:
            server = Prometheus(f"http://127.0.0.1:{port}", session)

            async def ready() -> bool | None:
                if process.poll() is not None:
                    raise AssertionError(f"prometheus exited early:\n{log.read_text()}")
                try:
                    async with session.get(f"{server.url}/-/ready") as response:
                        return True if response.status == 200 else None
                except aiohttp.ClientError:
                    return None

            await poll(ready, "prometheus to be ready")
            try:
                yield server
            except BaseException:
                print(log.read_text())
                raise
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- the alert rules ---------------------------------------------------------------------------


def test_promtool_finds_the_alert_rules_valid() -> None:
    checked = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout, checked.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    tested = run(tool("promtool"), "test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout


def test_every_alert_rule_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    names = alert_names()
    assert len(names) == len(set(names)) >= 7, names
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", ALERTS_TEST.read_text())
    assert cases, "no alert_rule_test cases found"
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert set(names) <= firing, set(names) - firing
    # Healthy series beside a firing one are checked by their absence from exp_alerts; a case
    # with exp_alerts: [] also shows each rule silent on healthy input or before its `for`.
    assert set(names) <= quiet, set(names) - quiet
    assert {name for name, _ in cases} <= set(names), {name for name, _ in cases} - set(names)


def test_the_example_scrape_config_is_valid() -> None:
    # --syntax-only: the key file it names exists only where Prometheus really runs.
    checked = run(tool("promtool"), "check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- a real Prometheus scraping a real voucherd ------------------------------------------------


async def test_prometheus_scraping_voucherd_counts_a_lists_available_codes_after_claims(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    tool("prometheus")
    codes, claims = 50, 7
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await fill(session, codes, claims)

    # Without API keys voucherd ignores the example's Authorization header.
    config = scrape_config(tmp_path, f"127.0.0.1:{server_process.port}", "unused")
    async with prometheus(tmp_path, config) as server:
        available = f'voucherd_list_codes{{list_id="{list_id}",state="available"}}'

        async def counted() -> float | None:
            value = await server.value(available)
            return value if value == codes - claims else None

        assert await poll(counted, f"{available} == {codes - claims}") == codes - claims

        # The shipped rules are loaded and evaluate without error.
        async def healthy() -> list[dict[str, Any]] | None:
            groups = (await server.api("rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

        rules = await poll(healthy, "every rule to be evaluated")
        assert sorted(rule["name"] for rule in rules) == sorted(alert_names())
        assert all(rule["type"] == "alerting" and not rule.get("lastError") for rule in rules)

        # 43 codes is below the default threshold of 1000: the low-stock rule sees the list.
        async def low() -> dict[str, Any] | None:
            alerts = (await server.api("alerts"))["alerts"]
            return next(
                (a for a in alerts if a["labels"]["alertname"] == "VoucherdListLowOnStock"), None
            )

        alert = await poll(low, "VoucherdListLowOnStock to be pending")
        assert alert["state"] == "pending", alert
        assert alert["labels"]["list_id"] == str(list_id)
        assert (alert["labels"]["partner"], alert["labels"]["tag"]) == ("Puma", "holi2025")
        assert float(alert["value"]) == codes - claims

        # Every dashboard query is PromQL this Prometheus accepts.
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                promql = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*")
                    .replace("$partner", ".*")
                )
                await server.query(promql)


async def test_the_example_scrape_config_scrapes_a_voucherd_with_keys_using_a_read_key(
    tmp_path: Path,
) -> None:
    tool("prometheus")
    admin, reader = "vd_test_admin_issue", "vd_test_prometheus_read"
    settings = tmp_path / "voucherd.toml"
    settings.write_text(
        f'[keys.ops]\nsha256 = "{hash_key(admin)}"\nscopes = ["admin", "issue"]\n\n'
        f'[keys.prometheus]\nsha256 = "{hash_key(reader)}"\nscopes = ["read"]\n'
    )
    voucherd = ServerProcess(tmp_path / "data", config=settings)
    try:
        voucherd.start()
        await voucherd.wait_ready()
        async with aiohttp.ClientSession(
            base_url=voucherd.url, headers={"Authorization": f"Bearer {admin}"}
        ) as session:
            list_id = await fill(session, 30, 4)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{voucherd.url}/metrics") as response,
        ):
            assert response.status == 401

        config = scrape_config(tmp_path, f"127.0.0.1:{voucherd.port}", reader)
        async with prometheus(tmp_path, config) as server:

            async def scraped() -> float | None:
                return await server.value(
                    f'voucherd_list_codes{{job="voucherd",list_id="{list_id}",state="available"}}'
                )

            assert await poll(scraped, "the keyed server's list to be scraped") == 26
            assert await server.value('up{job="voucherd"}') == 1
    finally:
        voucherd.stop()


# -- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_is_grafana_json_with_a_datasource_and_a_partner_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "voucherd"
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["partner"]["type"] == "query"
    assert "partner" in variables["partner"]["definition"]

    found = list(panels(dashboard))
    ids = [panel["id"] for panel in found]
    assert len(ids) == len(set(ids)), ids
    rows = [panel["title"] for panel in found if panel["type"] == "row"]
    assert len(rows) >= 5, rows
    for panel in found:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert METRIC_NAME.search(target["expr"]), (panel["title"], target["expr"])
            if "voucherd_list_" in target["expr"]:
                assert 'partner=~"$partner"' in target["expr"], (panel["title"], target["expr"])


# -- names the dashboard and the rules use against names voucherd exports ----------------------


async def test_the_dashboard_and_the_alerts_reference_only_metrics_voucherd_exports(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        list_id = await fill(session, 20, 3)
        campaign = {"name": "Holi cashback", "lists": [list_id], "qualification": CHARGED}
        status, created = await request(session, "POST", "/v1/campaigns", json=campaign)
        assert status == 201, created
        event = {"name": "Charged", "properties": {"amount": 150}}
        status, rewarded = await request(
            session,
            "POST",
            f"/v1/campaigns/{created['id']}/rewards",
            json={"user_id": "u-reward", "event": event},
        )
        assert status == 201, rewarded
        async with session.get("/metrics") as response:
            assert response.status == 200
            exposition = await response.text()

    exported = exported_names(exposition)
    sources = {
        DASHBOARD.name: "\n".join(exprs(json.loads(DASHBOARD.read_text()))),
        ALERTS.name: ALERTS.read_text(),
        ALERTS_TEST.name: ALERTS_TEST.read_text(),
    }
    missing = {
        source: sorted(set(METRIC_NAME.findall(text)) - exported)
        for source, text in sources.items()
    }
    assert missing == {source: [] for source in sources}, f"exported: {sorted(exported)}"
