"""`voucherd upload` as a real command against voucherd as a real process."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import ServerProcess, free_port, list_body

from voucherd.settings import hash_key

KEY = "vd_test-admin-key"


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def run_upload(*args: str) -> Outcome:
    # The command's own defaults come from the environment; start it from a clean one.
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCHERD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voucherd", "upload", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode())


async def request(
    method: str, url: str, key: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, **kwargs) as response,
    ):
        reply: dict[str, Any] = await response.json()
        return response.status, reply


_PARTNERS = itertools.count()


async def new_list(server: ServerProcess, key: str | None = None) -> int:
    """A list of a partner of its own for each test: they share one server."""
    body = list_body(partner=f"Partner {next(_PARTNERS)}")
    status, reply = await request("POST", f"{server.url}/v1/lists", key, json=body)
    assert status == 201, reply
    return int(reply["id"])


async def upload_history(server: ServerProcess, list_id: int, key: str | None = None) -> list[Any]:
    status, reply = await request("GET", f"{server.url}/v1/lists/{list_id}/uploads", key)
    assert status == 200, reply
    uploads: list[Any] = reply["uploads"]
    return uploads


@dataclass
class Server(ServerProcess):
    """voucherd as a process, with `--config` when given (the only way to give it API keys).

    Unlike `ServerProcess.start`, this closes its handle on the log file once the child has
    it, so no ResourceWarning fails the test.
    """

    config: Path | None = None

    def start(self) -> None:
        self.log_path = self.data_dir.with_suffix(f".{self.port}.log")
        command = [sys.executable, "-m", "voucherd", "serve", "--port", str(self.port),
                   "--data-dir", str(self.data_dir)]  # fmt: skip
        if self.config is not None:
            command += ["--config", str(self.config)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )


def running(process: Server) -> Iterator[Server]:
    try:
        process.start()
        # A fixture outside the tests' event loops: wait on a loop of its own.
        asyncio.run(process.wait_ready())
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (starting one costs a second); each test makes its own list."""
    yield from running(Server(tmp_path_factory.mktemp("upload-command") / "data"))


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("upload-command-keyed")
    config = directory / "voucherd.toml"
    config.write_text(f'[keys.operator]\nsha256 = "{hash_key(KEY)}"\nscopes = ["admin", "read"]\n')
    yield from running(Server(directory / "data", config=config))


def write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


async def test_a_clean_upload_prints_its_summary_and_exits_0(
    server: Server, tmp_path: Path
) -> None:
    list_id = await new_list(server)
    csv_file = write(tmp_path / "puma.csv", b"code\nA1\nA2\nA3\n")
    outcome = await run_upload(str(list_id), str(csv_file), "--url", server.url)
    assert outcome.code == 0, outcome
    [upload] = await upload_history(server, list_id)
    assert upload["filename"] == "puma.csv"
    assert f"upload {upload['id']} to list {list_id}: completed" in outcome.out
    assert "rows 3, accepted 3, rejected 0" in outcome.out
    assert "error file" not in outcome.out
    assert ": 0" not in outcome.out  # reasons that did not happen are not listed


async def test_rejected_rows_are_summed_up_with_the_error_file(
    server: Server, tmp_path: Path
) -> None:
    list_id = await new_list(server)
    csv_file = write(tmp_path / "mixed.csv", b"A1\nA1\nbad code\nA2\n")
    outcome = await run_upload(str(list_id), str(csv_file), "--url", server.url)
    assert outcome.code == 0, outcome
    [upload] = await upload_history(server, list_id)
    assert "rows 4, accepted 2, rejected 2" in outcome.out
    assert "duplicate_in_file: 1" in outcome.out
    assert "invalid_code: 1" in outcome.out
    errors_url = f"{server.url}/v1/lists/{list_id}/uploads/{upload['id']}/errors"
    assert f"error file: {errors_url}" in outcome.out
    async with aiohttp.ClientSession() as session, session.get(errors_url) as response:
        assert response.status == 200
        text = await response.text()
    assert text.splitlines() == [
        "line,code,reason", "2,A1,duplicate_in_file", "3,bad code,invalid_code"
    ]  # fmt: skip


async def test_a_large_file_is_streamed_whole(server: Server, tmp_path: Path) -> None:
    list_id = await new_list(server)
    codes = [f"C{index:011d}" for index in range(60_000)]
    csv_file = write(tmp_path / "big.csv", "".join(f"{code}\n" for code in codes).encode())
    outcome = await run_upload(str(list_id), str(csv_file), "--url", server.url + "/")
    assert outcome.code == 0, outcome
    assert "rows 60000, accepted 60000, rejected 0" in outcome.out


async def test_a_multi_column_file_fails_with_exit_1(server: Server, tmp_path: Path) -> None:
    list_id = await new_list(server)
    csv_file = write(tmp_path / "wide.csv", b"code,amount\nA1,5\n")
    outcome = await run_upload(str(list_id), str(csv_file), "--url", server.url)
    assert outcome.code == 1, outcome
    assert "failed" in outcome.out
    assert "multiple_columns" in outcome.out
    [upload] = await upload_history(server, list_id)
    assert (upload["status"], upload["accepted"]) == ("failed", 0)


async def test_a_binary_file_fails_with_the_servers_message(server: Server, tmp_path: Path) -> None:
    list_id = await new_list(server)
    csv_file = write(tmp_path / "codes.zip", b"PK\x03\x04\x00\x00")
    outcome = await run_upload(str(list_id), str(csv_file), "--url", server.url)
    assert outcome.code == 1, outcome
    assert "400 invalid_request" in outcome.err
    assert "NUL" in outcome.err


async def test_a_missing_file_exits_2(server: Server, tmp_path: Path) -> None:
    list_id = await new_list(server)
    missing = tmp_path / "nowhere.csv"
    outcome = await run_upload(str(list_id), str(missing), "--url", server.url)
    assert outcome.code == 2, outcome
    assert "nowhere.csv" in outcome.err
    assert await upload_history(server, list_id) == []


async def test_a_folder_or_a_url_without_its_scheme_exits_2_saying_so(
    server: Server, tmp_path: Path
) -> None:
    list_id = await new_list(server)
    outcome = await run_upload(str(list_id), str(tmp_path), "--url", server.url)
    assert (outcome.code, f"{tmp_path} is not a file" in outcome.err) == (2, True), outcome
    csv_file = write(tmp_path / "codes.csv", b"A1\n")
    bare = server.url.removeprefix("http://")
    outcome = await run_upload(str(list_id), str(csv_file), "--url", bare)
    assert (outcome.code, "give http://HOST:PORT" in outcome.err) == (2, True), outcome
    assert "Traceback" not in outcome.err
    assert await upload_history(server, list_id) == []


async def test_an_unknown_list_exits_1_with_the_404(server: Server, tmp_path: Path) -> None:
    csv_file = write(tmp_path / "codes.csv", b"A1\n")
    outcome = await run_upload("9999", str(csv_file), "--url", server.url)
    assert outcome.code == 1, outcome
    assert "404 not_found" in outcome.err
    assert "9999" in outcome.err
    assert outcome.out == ""


async def test_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "codes.csv", b"A1\n")
    outcome = await run_upload("1", str(csv_file), "--url", f"http://127.0.0.1:{free_port()}")
    assert outcome.code == 1, outcome
    assert "upload failed" in outcome.err


async def test_the_key_is_sent_when_keys_are_configured(
    keyed_server: Server, tmp_path: Path
) -> None:
    list_id = await new_list(keyed_server, KEY)
    csv_file = write(tmp_path / "codes.csv", b"A1\nA2\n")

    refused, wrong = await asyncio.gather(
        run_upload(str(list_id), str(csv_file), "--url", keyed_server.url),
        run_upload(
            str(list_id), str(csv_file), "--url", keyed_server.url, "--key", "vd_not-the-key"
        ),
    )
    assert refused.code == 1, refused
    assert "401 unauthorized" in refused.err
    assert wrong.code == 1, wrong
    assert "401 unauthorized" in wrong.err

    outcome = await run_upload(str(list_id), str(csv_file), "--url", keyed_server.url, "--key", KEY)
    assert outcome.code == 0, outcome
    assert "rows 2, accepted 2, rejected 0" in outcome.out
    [upload] = await upload_history(keyed_server, list_id, KEY)
    assert upload["uploaded_by"] == "operator"


async def test_ctrl_c_stops_the_upload_with_a_line_and_adds_no_code(
    server: Server, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCHERD_")}
    # The signal must come while the upload runs: if the upload is seen only once it has
    # finished (a slow start of the command, a busy machine), it is tried again, larger.
    for codes in (4_000_000, 8_000_000, 16_000_000):
        list_id = await new_list(server)
        csv_file = write(
            tmp_path / "huge.csv", b"".join(b"H%011d\n" % index for index in range(codes))
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voucherd", "upload", str(list_id), str(csv_file),
            "--url", server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        seen: list[Any] = []
        while not seen and process.returncode is None:
            seen = await upload_history(server, list_id)
            await asyncio.sleep(0.02)
        if seen and seen[0]["status"] == "in_progress":
            break
        await asyncio.wait_for(process.communicate(), 60)
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, (seen, out, err)
    assert "upload interrupted" in err.decode()
    assert "Traceback" not in err.decode(), err
    for _ in range(100):
        [upload] = await upload_history(server, list_id)
        if upload["status"] != "in_progress":
            break
        await asyncio.sleep(0.1)
    assert (upload["status"], upload["accepted"]) == ("failed", 0), upload
    status, listing = await request("GET", f"{server.url}/v1/lists/{list_id}")
    assert (status, listing["codes"]["uploaded"]) == (200, 0)
