"""Decision-serving throughput and latency, over loopback, under gunicorn, on SQLite and
PostgreSQL, against the HTTP floor of the same server.

For each database: build a 40-title catalog (real uploads, one rendition preset), start
keyart under gunicorn (gthread workers, so concurrent requests share group commits), and
drive it with wrk (Debian's `wrk` package: `apt-get install wrk`) at three endpoints:

    floor    GET  /healthz                        a trivial JSON answer
    single   POST /api/v1/decisions, 1 title      one decision per request
    page     POST /api/v1/decisions, 40 titles    a page: 40 decisions per request

and print requests/s, decisions/s, p50/p99 latency, the workers' CPU time and context
switches per request (from /proc), and the ratios the issue sets targets for (single ≥ 0.6
× floor requests/s; page ≥ 15,000 decisions/s). Each measured run follows a 2-second
unmeasured one; the floor is measured first and last, and the higher of the two is the
reference.

`--breakdown` adds two single-title runs against routes only this benchmark's app has, to
show where a decision's cost goes (neither is something keyart serves):

    validate  POST /bench/validate     the decision request parsed and validated, no more
    unlogged  POST /bench/unlogged     the decision made and answered, not logged

    python benchmarks/serve.py [--seconds 10] [--connections 32] [--workers 2] [--threads 8]
                               [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
                               [--only sqlite|postgres] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from artwork import catalog  # noqa: E402
from artwork.demo import poster  # noqa: E402
from artwork.models import Artwork, Rendition, Title  # noqa: E402
from artwork.renditions import Preset  # noqa: E402
from artwork.store import LocalBlobStore  # noqa: E402
from web.db import make_engine, make_sessionmaker, scratch_database, upgrade  # noqa: E402

TITLES = 40
WARMUP_SECONDS = 2
PRESETS = (Preset("boxart-342", 342, 513),)
LOOKS = (("portrait", "dark"), ("landscape", "bright"), ("group", "cool"))
SEGMENTS = ["teen-scifi", "family", "crime-buffs", "romance", "documentary"]


def build_catalog(url: str, media: Path) -> None:
    """40 titles × 3 variants through the artwork room's real ingest."""
    import io

    engine = make_engine(url)
    upgrade(engine)
    store = LocalBlobStore(media)
    rng = random.Random(7)
    with make_sessionmaker(engine)() as session:
        for n in range(TITLES):
            catalog.create_title(
                session, f"title-{n}", f"Title {n}", [rng.choice(["drama", "sci-fi"])]
            )
            for composition, palette in LOOKS:
                buffer = io.BytesIO()
                poster(f"Title {n}", composition, palette, rng.randrange(1 << 30)).save(
                    buffer, "JPEG", quality=85
                )
                catalog.add_artwork(
                    session,
                    store,
                    f"title-{n}",
                    catalog.Upload(buffer.getvalue(), composition, (composition, palette)),
                    presets=PRESETS,
                )
            session.commit()
    engine.dispose()


def copy_catalog(source: str, target: str) -> None:
    """The same catalog rows into another (migrated) database; media is shared."""
    src, dst = make_engine(source), make_engine(target)
    upgrade(dst)
    with src.connect() as read, dst.begin() as write:
        for model in (Title, Artwork, Rendition):
            rows = [dict(row._mapping) for row in read.execute(select(model.__table__))]
            write.execute(insert(model.__table__), rows)
    src.dispose()
    dst.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def breakdown_app():  # type: ignore[no-untyped-def]
    """keyart's app plus the two `--breakdown` routes. `unlogged` runs the same steps as
    `web.personalize.choose_artwork` minus the decision log's write: a ceiling for what
    any logging design could reach, never a way to serve."""
    from flask import jsonify

    from bandit.decisions import DecisionService
    from web import create_app
    from web.api import _check_rendition, _negotiate
    from web.personalize import PageRequest, _answers
    from web.schemas import DecisionsRequest, json_body
    from web.serving_catalog import CatalogReader
    from web.state import runtime

    app = create_app()

    @app.post("/bench/validate")
    def validate():  # type: ignore[no-untyped-def]
        json_body(DecisionsRequest)
        return jsonify({"decisions": []})

    class Unlogged:
        """A decision writer that writes nothing: the service's steps minus the log."""

        guarded = None

        def write(self, records, expect=None):  # type: ignore[no-untyped-def]
            pass

    @app.post("/bench/unlogged")
    def unlogged():  # type: ignore[no-untyped-def]
        body = json_body(DecisionsRequest)
        page = PageRequest(
            titles=body.titles,
            context=body.context,
            user=body.user,
            rendition=_check_rendition(body.rendition),
            format=_negotiate(body.format)[0],
        )
        state = runtime()
        service = DecisionService(
            CatalogReader(state.catalog, state.engine),
            state.policy,
            Unlogged(),
            state.exploration,
            state.rng,
        )
        decided = service.decide(
            page.titles,
            page.context,
            user=page.user,
            prepare=lambda decisions: state.catalog.image(
                state.engine, [d.chosen_id for d in decisions], page.rendition, page.format
            ),
        )
        answers = _answers(state, page, decided.slots, decided.decisions, decided.prepared)
        return jsonify({"decisions": answers})

    return app


def start_server(  # type: ignore[no-untyped-def]
    url: str, var: Path, media: Path, port: int, workers: int, threads: int, app: str
):
    metrics = var / "prometheus"
    metrics.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KEYART_DATABASE_URL": url,
        "KEYART_VAR_DIR": str(var),
        "KEYART_MEDIA_DIR": str(media),
        "KEYART_SECRET_KEY": "benchmark-secret-key-0123456789",
        # Every decision goes through VW (no apprentice shortcut).
        "KEYART_APPRENTICE_EXAMPLES": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            # As `keyart serve` does: a listening socket per worker, connections spread by
            # the kernel (one shared socket let one worker take most of wrk's 32).
            "--reuse-port",
            "--log-level",
            "warning",
            "--pythonpath",
            str(ROOT / "benchmarks"),
            app,
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("keyart did not become ready under gunicorn")


LUA = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{{bodies}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "{path}", nil, bodies[(n % #bodies) + 1])
end
"""


def lua_script(method: str, path: str, bodies: list[str]) -> str:
    quoted = ", ".join("[==[" + body + "]==]" for body in bodies) or '""'
    return LUA.format(method=method, path=path, bodies=quoted)


def bodies(titles_per_request: int, count: int = 200) -> list[str]:
    rng = random.Random(titles_per_request)
    out = []
    for _ in range(count):
        titles = (
            [f"title-{n}" for n in range(TITLES)]
            if titles_per_request == TITLES
            else [f"title-{rng.randrange(TITLES)}"]
        )
        out.append(
            json.dumps(
                {
                    "user": f"viewer-{rng.randrange(100000)}",
                    "context": {
                        "segment": rng.choice(SEGMENTS),
                        "device": rng.choice(["tv", "web", "phone"]),
                        "hour": rng.randrange(24),
                    },
                    "titles": titles,
                }
            )
        )
    return out


def _millis(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, script: str, seconds: int, connections: int, work: Path) -> dict[str, float]:
    path = work / f"script-{uuid.uuid4().hex}.lua"
    path.write_text(script)
    out = subprocess.run(
        [
            "wrk",
            "--latency",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-s",
            str(path),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _millis(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _millis(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99}


def worker_usage(server: subprocess.Popen) -> tuple[float, int]:  # type: ignore[type-arg]
    """CPU seconds (user + system) and context switches so far of the gunicorn workers, all
    their threads, from /proc: what a request costs the server, whatever wrk costs."""
    children = subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    ticks, switches = 0, 0
    for pid in children:
        tasks = Path(f"/proc/{pid}/task")
        for task in tasks.iterdir() if tasks.exists() else ():
            try:
                stat = (task / "stat").read_text()
                status = (task / "status").read_text()
            except OSError:  # a thread that ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            switches += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", status))
    return ticks / os.sysconf("SC_CLK_TCK"), switches


def count_decisions(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM decisions")).scalar_one()
    engine.dispose()
    return int(count)


def bench(name: str, url: str, var: Path, media: Path, args: argparse.Namespace) -> None:
    port = free_port()
    app = "serve:breakdown_app()" if args.breakdown else "web:create_app()"
    server = start_server(url, var, media, port, args.workers, args.threads, app)
    try:
        floor_script = lua_script("GET", "/healthz", [])
        single_script = lua_script("POST", "/api/v1/decisions", bodies(1))
        page_script = lua_script("POST", "/api/v1/decisions", bodies(TITLES))

        def measure(script: str) -> dict[str, float]:
            # A short unmeasured run first: every worker has booted and warmed up by the
            # time the measured run opens its connections (wrk keeps them for the run, so
            # one that opens while a worker is still starting would load the other alone).
            run_wrk(port, script, WARMUP_SECONDS, args.connections, var)
            cpu, switches = worker_usage(server)
            result = run_wrk(port, script, args.seconds, args.connections, var)
            cpu_after, switches_after = worker_usage(server)
            requests = result["rps"] * args.seconds
            result["cpu_ms"] = (cpu_after - cpu) / requests * 1000
            result["switches"] = (switches_after - switches) / requests
            return result

        before = count_decisions(url)
        floors = [measure(floor_script)]
        single = measure(single_script)
        page = measure(page_script)
        extra = []
        if args.breakdown:
            for label, path in (("validate", "/bench/validate"), ("unlogged", "/bench/unlogged")):
                extra.append((label, measure(lua_script("POST", path, bodies(1))), 0))
        # The floor again, after: the higher of the two is the reference (the stricter one).
        floors.append(measure(floor_script))
        floor = max(floors, key=lambda result: result["rps"])
        logged = count_decisions(url) - before
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(
        f"\n{name}  ({args.workers} gunicorn gthread workers × {args.threads} threads, "
        f"wrk {args.connections} connections, {args.seconds}s each)"
    )
    print(
        f"  {'':8} {'req/s':>9} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU ms/req':>11} {'switches/req':>13}"
    )
    for label, result, per in (
        ("floor", floor, 0),
        ("single", single, 1),
        ("page-40", page, TITLES),
        *extra,
    ):
        decisions = f"{result['rps'] * per:12.0f}" if per else f"{'':>12}"
        print(
            f"  {label:8} {result['rps']:9.0f} {decisions} "
            f"{result['p50']:8.2f} {result['p99']:8.2f}"
            f" {result['cpu_ms']:11.3f} {result['switches']:13.1f}"
        )
    for label, result, _per in extra:
        print(f"  {label} / floor throughput: {result['rps'] / floor['rps']:.2f}")
    print(
        f"  (floor measured before and after: {floors[0]['rps']:.0f} and "
        f"{floors[1]['rps']:.0f} req/s; the higher is the reference)"
    )
    print(f"  single / floor throughput: {single['rps'] / floor['rps']:.2f}   (target ≥ 0.6)")
    print(f"  page decisions/s:          {page['rps'] * TITLES:.0f}   (target ≥ 15000)")
    print(f"  decisions logged: {logged}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server URL; the benchmark creates and drops its own database",
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure a validate-only route and an unlogged decision (see above)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="keyart-bench-") as tmp:
        work = Path(tmp)
        media = work / "media"
        sqlite_url = f"sqlite:///{work / 'sqlite' / 'keyart.db'}"
        (work / "sqlite").mkdir()
        print("building a 40-title catalog (3 variants each)...", flush=True)
        build_catalog(sqlite_url, media)
        if args.only in (None, "sqlite"):
            bench("SQLite (WAL)", sqlite_url, work / "sqlite", media, args)
        if args.only in (None, "postgres"):
            with scratch_database(args.postgres, "keyart_bench") as pg_url:
                copy_catalog(sqlite_url, pg_url)
                (work / "postgres").mkdir()
                bench("PostgreSQL", pg_url, work / "postgres", media, args)


if __name__ == "__main__":
    main()
