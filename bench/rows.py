"""The table's rows: each figure beside its baseline and target, from the scenarios' raw figures."""

from __future__ import annotations

from bench import peer_rows
from bench.baselines import BaselineFigures
from bench.peer_scenarios import PeerFigures
from bench.report import MISSING, Row, rate, shown, verdict
from bench.scenarios import ClaimFigures, FloorFigures, Profile, StateFigures
from voucherd.settings import Settings

# The code index's chunk, which the random-insert baseline writes per transaction too.
CHUNK = Settings().upload_chunk_codes

TARGET_SHARE_OF_FLOOR = 0.85
TARGET_BATCH = 500_000.0
TARGET_UPLOAD = 300_000.0
TARGET_BYTES_PER_CODE = 24.0
TARGET_READY_S = 5.0


def _ratio(a: float | None, b: float | None, pct: bool = False) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{100 * a / b:.0f}% of baseline" if pct else f"{a / b:.2f}x"


def _n(count: int) -> str:
    return f"{count / 1e6:g}M" if count >= 1_000_000 else f"{count / 1e3:g}k"


def build(
    profile: Profile,
    floor: FloorFigures,
    base: BaselineFigures,
    claims: ClaimFigures,
    state: StateFigures,
    peers: PeerFigures | None = None,
) -> list[Row]:
    rows: list[Row] = []

    # a. single claims
    vd = claims.claims.best if claims.claims else None
    fl = floor.claims.best if floor.claims else None
    conns = f"c={vd.connections}" if vd else "c=?"
    fl_conns = f"floor c={fl.connections}" if fl else "floor"
    share = vd.rps / fl.rps if vd and fl else None
    rows.append(
        Row(
            "a. single claims",
            f"requests/s, wrk -t1 {conns}, {profile.wrk_seconds} s",
            f"{vd.rps:,.0f}" if vd else MISSING,
            fl_conns,
            f"{fl.rps:,.0f}" if fl else MISSING,
            f"{100 * share:.0f}% of floor" if share is not None else "",
            f">= {100 * TARGET_SHARE_OF_FLOOR:.0f}% of floor",
            verdict(None if share is None else share >= TARGET_SHARE_OF_FLOOR),
        )
    )
    bare = floor.bare.best if floor.bare else None
    rows.append(
        Row(
            "a. single claims",
            "requests/s, against the bare design: codes in memory, group commit",
            f"{vd.rps:,.0f}" if vd else MISSING,
            f"bench/prototype.py c={bare.connections}" if bare else "bench/prototype.py",
            f"{bare.rps:,.0f}" if bare else MISSING,
            _ratio(vd.rps if vd else None, bare.rps if bare else None, pct=True)
            + (f"; bare design {100 * bare.rps / fl.rps:.0f}% of floor" if bare and fl else ""),
        )
    )
    for label, attr in (("p50", "p50_ms"), ("p99", "p99_ms")):
        v = getattr(vd, attr) if vd else None
        f = getattr(fl, attr) if fl else None
        rows.append(
            Row(
                "a. single claims",
                f"{label} latency (closed loop)",
                shown(v, "{:.2f} ms"),
                fl_conns,
                shown(f, "{:.2f} ms"),
                _ratio(v, f),
            )
        )
    rows.append(
        Row(
            "a. single claims",
            "non-2xx / socket errors",
            f"{vd.non_2xx} / {vd.socket_errors}" if vd else MISSING,
            fl_conns,
            f"{fl.non_2xx} / {fl.socket_errors}" if fl else MISSING,
            "",
            "0 / 0",
            verdict(None if vd is None else vd.non_2xx == 0 and vd.socket_errors == 0),
        )
    )

    if peers is not None:  # PostgreSQL and Redis, the same wrk sweep
        rows += peer_rows.single(vd, profile.wrk_seconds, peers)

    # b. batch claims
    vb = state.batch.per_second if state.batch else None
    fb = floor.batch.per_second if floor.batch else None
    rows.append(
        Row(
            "b. batch claims",
            f"claims/s, {_n(profile.batch_users)} users, {_n(profile.batch_size)}/request, "
            f"{profile.batch_in_flight} in flight",
            rate(vb) if vb is not None else MISSING,
            "floor, same bodies",
            rate(fb) if fb is not None else MISSING,
            _ratio(vb, fb, pct=True),
            f">= {rate(TARGET_BATCH)}",
            verdict(None if vb is None else vb >= TARGET_BATCH),
        )
    )
    if peers is not None:
        rows += peer_rows.batch(vb, peers)

    # c. upload: sequential codes against the floor and SQLite, random codes against SQLite
    target = f">= {rate(TARGET_UPLOAD)}"
    vu = state.upload.count / state.upload.seconds if state.upload else None
    fu = floor.upload.count / floor.upload.seconds if floor.upload else None
    su = base.count / base.sqlite_s if base.sqlite_s else None
    vr = state.random_upload.count / state.random_upload.seconds if state.random_upload else None
    sr = base.random_count / base.sqlite_random_s if base.sqlite_random_s else None
    sequential = f"codes/s, {_n(profile.upload_codes)} sequential codes streamed"
    randomly = f"codes/s, {_n(profile.random_upload_codes)} random codes streamed"
    for metric, value, name, baseline in (
        (sequential, vu, "floor, read+discard", fu),
        (sequential, vu, "SQLite executemany, indexed, 1 transaction", su),
        (randomly, vr, f"SQLite, same codes, indexed, {CHUNK // 1000}k/transaction, sync=FULL", sr),
    ):
        rows.append(
            Row(
                "c. upload",
                metric,
                rate(value) if value is not None else MISSING,
                name,
                rate(baseline) if baseline else MISSING,
                _ratio(value, baseline, pct=True),
                target,
                verdict(None if value is None else value >= TARGET_UPLOAD),
            )
        )

    # d. memory
    bpc = None
    if state.upload and state.rss_empty is not None and state.rss_loaded is not None:
        bpc = (state.rss_loaded - state.rss_empty) / state.upload.count
    target = f"<= {TARGET_BYTES_PER_CODE:.0f} B"
    for name, value in (("deque of str", base.deque_bpc), ("packed bytes", base.packed_bpc)):
        rows.append(
            Row(
                "d. memory",
                f"RSS bytes per available code, {_n(profile.upload_codes)} codes",
                shown(bpc, "{:.1f} B"),
                name,
                shown(value, "{:.1f} B"),
                _ratio(bpc, value),
                target,
                verdict(None if bpc is None else bpc <= TARGET_BYTES_PER_CODE),
            )
        )

    # e. restart
    held = (
        f"{_n(profile.upload_codes)} + {_n(profile.random_upload_codes)} codes, "
        f"{_n(profile.batch_users)} claims"
    )
    for how, value in (
        ("SIGKILL", state.ready_after_kill_s),
        ("SIGTERM", state.ready_after_term_s),
    ):
        rows.append(
            Row(
                "e. restart",
                f"spawn to /readyz 200 after {how}, {held}",
                shown(value, "{:.2f} s"),
                "empty data dir",
                shown(state.ready_empty_s, "{:.2f} s"),
                _ratio(value, state.ready_empty_s),
                f"<= {TARGET_READY_S:.0f} s",
                verdict(None if value is None else value <= TARGET_READY_S),
            )
        )
    return rows
