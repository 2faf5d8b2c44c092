"""Table rows for the peers: voucherd's single and batch claims beside PostgreSQL's and Redis's."""

from __future__ import annotations

from bench import wrk
from bench.peer_scenarios import POSTGRES, REDIS_ALWAYS, REDIS_EVERYSEC, PeerFigures
from bench.report import MISSING, Row, rate, verdict

# voucherd's claims/s as a multiple of the peer's; None: shown, no target.
TARGET_TIMES = {POSTGRES: 3.5, REDIS_ALWAYS: 2.0, REDIS_EVERYSEC: None}
TARGET_BATCH_TIMES_POSTGRES = 5.0
_SETTINGS = {
    POSTGRES: "synchronous_commit=on",
    REDIS_ALWAYS: "AOF, appendfsync always",
    REDIS_EVERYSEC: "AOF, appendfsync everysec",
}


def single(vd: wrk.WrkResult | None, seconds: int, peers: PeerFigures) -> list[Row]:
    """Scenario a: one row a peer, its best run of the same sweep as voucherd's."""
    rows: list[Row] = []
    for name, times in TARGET_TIMES.items():
        peer = peers.claims[name].best if name in peers.claims else None
        ratio = vd.rps / peer.rps if vd and peer else None
        conns = f"c={vd.connections}" if vd else "c=?"
        rows.append(
            Row(
                "a. single claims",
                f"requests/s, wrk -t1 {conns}, {seconds} s",
                f"{vd.rps:,.0f}" if vd else MISSING,
                f"{name} ({_SETTINGS[name]})" + (f" c={peer.connections}" if peer else ""),
                f"{peer.rps:,.0f}" if peer else MISSING,
                f"{ratio:.2f}x" if ratio is not None else "",
                f">= {times:g}x {name}" if times else "",
                verdict(None if ratio is None or not times else ratio >= times),
            )
        )
    return rows


def batch(vd_per_second: float | None, peers: PeerFigures) -> list[Row]:
    """Scenario b: PostgreSQL's batch claims with the same bodies as voucherd's."""
    pg = peers.postgres_batch.per_second if peers.postgres_batch else None
    ratio = vd_per_second / pg if vd_per_second is not None and pg else None
    times = TARGET_BATCH_TIMES_POSTGRES
    return [
        Row(
            "b. batch claims",
            "claims/s, same bodies as above",
            rate(vd_per_second) if vd_per_second is not None else MISSING,
            f"{POSTGRES}, one UPDATE … FROM unnest a request",
            rate(pg) if pg is not None else MISSING,
            f"{ratio:.2f}x" if ratio is not None else "",
            f">= {times:g}x {POSTGRES}",
            verdict(None if ratio is None else ratio >= times),
        )
    ]
