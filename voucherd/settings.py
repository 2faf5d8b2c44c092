"""Settings: defaults that run on a laptop, then a TOML file, then `VOUCHERD_*` variables.

Keys live only in the TOML file, stored as SHA-256 digests, never as the keys themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from voucherd.lists import duration_seconds


class Scope(StrEnum):
    ADMIN = "admin"
    ISSUE = "issue"
    READ = "read"


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    sha256: str = field(repr=False)
    scopes: frozenset[Scope]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("voucherd-data")
    # SQLite's durability: FULL syncs the WAL on every commit, so an acknowledged claim survives
    # a power cut; NORMAL survives a process crash only.
    synchronous: str = "FULL"
    max_upload_bytes: int = 2 * 1024**3
    max_codes_per_list: int = 100_000_000
    max_line_bytes: int = 4096
    # Rejected rows an upload's error file keeps (the earliest lines); `errors` counts them
    # all. A wrong file of millions of bad rows must not grow the database by as many.
    max_error_rows: int = 100_000
    max_json_bytes: int = 32 * 1024**2
    max_batch_users: int = 100_000
    # What requests in flight may hold in all; past it a request gets 503 and Retry-After
    # (a 100,000-user batch holds about 30-40 MiB until its reply is written).
    max_body_bytes_in_flight: int = 256 * 1024**2
    max_batch_users_in_flight: int = 1_000_000
    max_uploads_in_flight: int = 16
    max_subscribers: int = 100
    # Connections open at once; past it a new connection's request gets 503 and Retry-After.
    # Each may hold up to `max_headers` lines of a request head (about 16 KiB of memory a line)
    # before any key is checked: 1,000 at 32 lines, about 0.5 GiB at worst.
    max_connections: int = 1000
    max_headers: int = 32
    # A connection that sends no whole request head for this long, after it opened or after
    # its last reply, is closed: idle ones, and ones dripping a head. Longer than the idle
    # timeout of a proxy in front (60 s for nginx's upstream keep-alive and most balancers),
    # so the proxy never sends a request on a connection voucherd is closing.
    idle_timeout: float = 75.0
    # Codes checked against the code index and stored at once: larger chunks write each page
    # of the index once for more codes, smaller ones hold less memory while they are checked.
    upload_chunk_codes: int = 100_000
    # Codes the code index gathers in a small table before merging them into its large one in
    # key order: random codes then rewrite each page of the large table once a merge rather
    # than once a chunk. A merge holds the index (not claims) for about 1 s at 10M codes.
    index_merge_codes: int = 1_000_000
    # While claims are being written, parsing an upload takes at most this share of the event
    # loop (it rests after each read), so a big upload cannot starve claims; 1 never rests.
    upload_share: float = 0.25
    mailbox_size: int = 10_000
    journal_queue_size: int = 200_000
    shutdown_timeout: float = 30.0
    # A request body that sends nothing for this long is refused with 408 (a JSON body must
    # arrive whole within it), so a client dripping bytes cannot hold a handler forever.
    body_timeout: float = 60.0
    # Events are kept this long (seconds; 7 days), so subscribers can resume after downtime.
    event_retention: float = 7 * 24 * 3600.0
    # A subscriber with more events than this waiting to be sent is closed (code 4008).
    event_buffer: int = 10_000
    websocket_heartbeat: float = 30.0
    # Defaults for new lists: warn when this few codes are left, and this long before expiry
    # (an ISO 8601 duration; empty for no warning).
    default_low_stock_threshold: int = 1000
    default_expiry_warning: str = "P3D"
    # How often lists are checked for expiry warnings due, in seconds.
    alert_check_interval: float = 10.0
    log_level: str = "INFO"
    keys: tuple[ApiKey, ...] = field(default=(), repr=False)

    @property
    def database(self) -> Path:
        return self.data_dir / "voucherd.sqlite3"

    @property
    def code_index(self) -> Path:
        return self.data_dir / "codes.sqlite3"

    @property
    def open_mode(self) -> bool:
        """No keys configured: every request is allowed, and only loopback is served."""
        return not self.keys

    @classmethod
    def load(
        cls,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        values: dict[str, Any] = {}
        if config is not None:
            values.update(_from_toml(config))
        values.update(_from_env(os.environ if env is None else env))
        values.update({name: value for name, value in overrides.items() if value is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        for name in (
            "port",
            "max_upload_bytes",
            "max_codes_per_list",
            "max_line_bytes",
            "max_error_rows",
            "max_json_bytes",
            "max_batch_users",
            "max_uploads_in_flight",
            "max_subscribers",
            "max_connections",
            "max_headers",
            "upload_chunk_codes",
            "index_merge_codes",
            "mailbox_size",
            "journal_queue_size",
            "event_buffer",
        ):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ValueError(f"{name} must be positive")
        for total, single in (
            ("max_body_bytes_in_flight", "max_json_bytes"),
            ("max_batch_users_in_flight", "max_batch_users"),
        ):
            if getattr(self, total) < getattr(self, single):
                raise ValueError(f"{total} must be at least {single}")
        if not self.port <= 65535:
            raise ValueError("port must be at most 65535")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 < self.upload_share <= 1:
            raise ValueError("upload_share must be more than 0 and at most 1")
        if self.default_low_stock_threshold < 0:
            raise ValueError("default_low_stock_threshold must be 0 or more")
        if self.default_expiry_warning:
            duration_seconds(self.default_expiry_warning)
        for name in (
            "shutdown_timeout",
            "body_timeout",
            "idle_timeout",
            "event_retention",
            "websocket_heartbeat",
            "alert_check_interval",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "keys"}


def _convert(name: str, value: Any) -> Any:
    """A setting's value from the environment (text) or a TOML file (typed); a value of
    another kind is refused rather than bent (`true` is not 1, `8080.5` is not a port)."""
    kind = str(_FIELDS[name].type)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} must be {_KINDS[kind]}, not {type(value).__name__}")
    try:
        if kind == "int":
            if isinstance(value, float):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise ValueError(f"{name} must be {_KINDS[kind]}, not {value!r}") from None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be {_KINDS[kind]}, not {type(value).__name__}")
    return Path(value) if kind == "Path" else value


_KINDS = {"int": "a whole number", "float": "a number", "str": "a string", "Path": "a path"}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = env.get(f"VOUCHERD_{name.upper()}")
        if raw is not None and raw != "":
            try:
                values[name] = _convert(name, raw)
            except ValueError as exc:
                raise ValueError(f"VOUCHERD_{name.upper()}: {exc}") from None
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        try:
            document = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    section = document.get("voucherd", document)
    if not isinstance(section, dict):
        raise ValueError(f"{path}: [voucherd] must be a table")
    values: dict[str, Any] = {}
    for name, raw in section.items():
        if name == "keys":
            continue
        if name not in _FIELDS:
            raise ValueError(f"{path}: unknown setting {name!r}")
        try:
            values[name] = _convert(name, raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    # Keys under [keys], or under [voucherd.keys]: a misplaced table must never leave the
    # server running open.
    top = document.get("keys")
    nested = section.get("keys") if section is not document else None
    if top and nested:
        raise ValueError(f"{path}: API keys under both [keys] and [voucherd.keys]; keep one")
    values["keys"] = tuple(_parse_keys(path, top or nested or {}))
    return values


def _parse_keys(path: Path, table: Mapping[str, Any]) -> list[ApiKey]:
    keys = []
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [keys] must be a table of keys, one [keys.NAME] each")
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: key {name!r} must be a table: [keys.{name}]")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{path}: key {name!r} needs sha256 = '<64 hex digits>'")
        listed = entry.get("scopes", [])
        if not isinstance(listed, list):
            raise ValueError(f"{path}: key {name!r}: scopes must be a list, e.g. ['admin']")
        try:
            scopes = frozenset(Scope(scope) for scope in listed)
        except ValueError as exc:
            raise ValueError(f"{path}: key {name!r}: {exc}") from None
        if not scopes:
            raise ValueError(f"{path}: key {name!r} needs scopes, e.g. ['admin', 'read']")
        keys.append(ApiKey(name=name, sha256=digest, scopes=scopes))
    return keys
