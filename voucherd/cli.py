"""The `voucherd` command: serve, upload a CSV to a running server, follow the event stream,
create API keys."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import uvloop

from voucherd import __version__, logs
from voucherd.settings import Settings, hash_key

log = logging.getLogger("voucherd")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voucherd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voucherd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--data-dir", type=Path, help="where the journal lives (./voucherd-data)")
    serve.add_argument("--config", type=Path, help="a TOML file of settings and API keys")

    upload = commands.add_parser("upload", help="stream a CSV of codes to a running server")
    upload.add_argument("list_id", type=int, help="the id of the list the codes go to")
    upload.add_argument("file", type=Path, help="a CSV: one code a line, an optional code header")
    _url_option(upload)
    upload.add_argument(
        "--key", default=os.environ.get("VOUCHERD_KEY"), help="an admin API key (env VOUCHERD_KEY)"
    )

    follow = commands.add_parser(
        "events", help="print a running server's events as JSON lines, resuming after drops"
    )
    follow.add_argument("--since", type=int, help="start after this seq (default: new events)")
    follow.add_argument("--types", help="comma-separated event types, e.g. voucher.rewarded")
    follow.add_argument("--count", type=int, help="stop after this many events")
    _url_option(follow)
    follow.add_argument(
        "--key", default=os.environ.get("VOUCHERD_KEY"), help="a read API key (env VOUCHERD_KEY)"
    )

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="print a new key and its config lines")
    create.add_argument("name")
    create.add_argument(
        "--scope", action="append", choices=["admin", "issue", "read"], required=True
    )

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "upload":
        try:
            size = args.file.stat().st_size
        except OSError as exc:
            print(f"voucherd: {exc}", file=sys.stderr)
            return 2
        if not args.file.is_file():
            print(f"voucherd: {args.file} is not a file", file=sys.stderr)
            return 2
        try:
            return asyncio.run(upload_command(args.list_id, args.file, size, args.url, args.key))
        except KeyboardInterrupt:
            # The server sees the body cut off: the upload fails and keeps none of its codes.
            print("\nvoucherd: upload interrupted; none of its codes were added", file=sys.stderr)
            return 130
    if args.command == "events":
        try:
            return asyncio.run(
                events_command(args.url, args.key, args.since, args.types, args.count)
            )
        except KeyboardInterrupt:
            return 0
    return keys_command(args.name, args.scope)


def _url_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--url",
        type=_server_url,
        default=os.environ.get("VOUCHERD_URL", "http://127.0.0.1:8080"),
        help="the server, e.g. http://127.0.0.1:8080 (env VOUCHERD_URL)",
    )


def _server_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a URL: give http://HOST:PORT")
    return value


def serve_command(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(
            args.config, host=args.host, port=args.port, data_dir=args.data_dir
        )
    except (OSError, ValueError) as exc:
        print(f"voucherd: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    # The keys are left out of the settings' repr.
    log.debug("settings: %r", settings)
    if settings.open_mode and not _is_loopback(settings.host):
        print(
            f"voucherd: refusing to listen on {settings.host} with no API keys configured;"
            " add keys to the config file (voucherd keys create) or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    from voucherd.server.app import serve

    log.info(
        "voucherd %s on http://%s:%d, data in %s, synchronous=%s, %s",
        __version__,
        settings.host,
        settings.port,
        settings.data_dir,
        settings.synchronous,
        "open (no API keys)" if settings.open_mode else f"{len(settings.keys)} API keys",
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keys_command(name: str, scopes: list[str]) -> int:
    key = "vd_" + secrets.token_urlsafe(32)
    print(f"API key (shown once, keep it secret): {key}\n")
    print("Add these lines to the config file:\n")
    print(f"[keys.{json.dumps(name)}]")
    print(f'sha256 = "{hash_key(key)}"')
    print(f"scopes = {json.dumps(sorted(set(scopes)))}")
    return 0


async def upload_command(list_id: int, path: Path, size: int, url: str, key: str | None) -> int:
    progress = _Progress(size)

    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as file:
            while data := file.read(256 * 1024):
                progress.advance(len(data))
                yield data

    headers = {"Content-Type": "text/csv"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    endpoint = f"{url.rstrip('/')}/v1/lists/{list_id}/uploads"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                endpoint, params={"filename": path.name}, data=body(), headers=headers
            ) as response,
        ):
            progress.done()
            reply = await response.json(content_type=None)
    except (aiohttp.ClientError, json.JSONDecodeError) as exc:
        progress.done()
        print(f"voucherd: upload failed: {exc}", file=sys.stderr)
        return 1
    if response.status >= 400:
        error = reply.get("error", {}) if isinstance(reply, dict) else {}
        print(f"voucherd: {response.status} {error.get('code')}: {error.get('message')}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(_summary(reply, f"{endpoint}/{reply['id']}/errors"))
    return 0 if reply["status"] == "completed" else 1


# Close codes after which following again cannot help.
_FINAL_CLOSES = {4010: "the events asked for are past retention"}


async def events_command(
    url: str, key: str | None, since: int | None, types: str | None, count: int | None
) -> int:
    """Follow the stream: print each event as one JSON line; after a drop (the server
    restarting, or closing a subscriber that fell behind), resume after the last one printed."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    endpoint = f"{url.rstrip('/')}/v1/events"
    printed = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        while count is None or printed < count:
            params = {"types": types} if types else {}
            if since is not None:
                params["since"] = str(since)
            try:
                async with session.ws_connect(endpoint, params=params) as ws:
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        print(message.data, flush=True)
                        since = json.loads(message.data)["seq"]
                        printed += 1
                        if count is not None and printed >= count:
                            return 0
                    if ws.close_code in _FINAL_CLOSES:
                        print(f"voucherd: {_FINAL_CLOSES[ws.close_code]}", file=sys.stderr)
                        return 1
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 503:
                    # Recovering, shutting down, or serving as many subscribers as it may.
                    wait = _retry_after(exc.headers)
                    print(f"voucherd: the server is busy (503); retrying in {wait:g} s",
                          file=sys.stderr)  # fmt: skip
                    await asyncio.sleep(wait)
                    continue
                print(
                    f"voucherd: {await _refusal(session, endpoint, params, exc)}", file=sys.stderr
                )
                return 1
            except aiohttp.ClientError as exc:
                print(f"voucherd: {exc}; reconnecting", file=sys.stderr)
            await asyncio.sleep(1)
    return 0


def _retry_after(headers: Mapping[str, str] | None) -> float:
    """Seconds a 503 asks to wait: its Retry-After, within 1 to 60 s."""
    raw = (headers or {}).get("Retry-After", "")
    return float(min(max(int(raw), 1), 60)) if raw.isdigit() else 1.0


async def _refusal(
    session: aiohttp.ClientSession,
    endpoint: str,
    params: dict[str, str],
    refused: aiohttp.WSServerHandshakeError,
) -> str:
    """Why the server refused the stream. A refused handshake keeps only the status, so the
    same request is made over plain HTTP for the server's own error."""
    try:
        async with session.get(endpoint, params={**params, "limit": "1"}) as response:
            error = (await response.json(content_type=None))["error"]
            return f"{response.status} {error['code']}: {error['message']}"
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        return f"{refused.status} {refused.message}"


def _summary(upload: dict[str, object], errors_url: str) -> str:
    lines = [
        f"upload {upload['id']} to list {upload['list_id']}: {upload['status']}",
        f"  rows {upload['rows']}, accepted {upload['accepted']}, rejected {upload['rejected']}",
    ]
    errors = upload.get("errors") or {}
    assert isinstance(errors, dict)
    for reason, count in sorted(errors.items()):
        if count:
            lines.append(f"    {reason}: {count}")
    error = upload.get("error")
    if isinstance(error, dict):
        lines.append(f"  failed: {error.get('code')}: {error.get('message')}")
    if upload["rejected"]:
        lines.append(f"  error file: {errors_url}")
    return "\n".join(lines)


class _Progress:
    """A progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.sent = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self.visible = sys.stderr.isatty()

    def advance(self, size: int) -> None:
        self.sent += size
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.sent >= self.total:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.visible:
            return
        share = min(self.sent / self.total, 1.0)
        rate = self.sent / max(now - self.started, 1e-6) / 1e6
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r[{bar:<30}] {share:6.1%} {self.sent / 1e6:,.1f} MB {rate:,.1f} MB/s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.visible:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
