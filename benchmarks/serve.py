"""Decision-serving throughput, latency, CPU and memory, over loopback, under gunicorn, on
SQLite and PostgreSQL: keyart beside a hand-written peer (benchmarks/peer.py), each against
the HTTP floor of its own server, in one run.

For each database: build a 40-title catalog (real uploads, one rendition preset), copy it
for the peer, start keyart and the peer under the same gunicorn settings (gthread workers,
so concurrent requests share group commits), and drive each with wrk (Debian's `wrk`
package: `apt-get install wrk`) at three endpoints:

    floor    GET  /healthz                        a trivial JSON answer
    single   POST /api/v1/decisions, 1 title      one decision per request
    page     POST /api/v1/decisions, 40 titles    a page: 40 decisions per request

The runs are interleaved (per round: for each connection count, each server's floor, single
and page), so that the ratios compare runs seconds apart: on a machine shared with other
work, runs minutes apart are not comparable. Each ratio is taken within a round, and the
median over the rounds printed. CPU per decision is the gunicorn workers' (user + system,
from /proc) and, on PostgreSQL, the database server's beside it: on this machine it shares
the workers' cores. Idle % is the machine's share of CPU time idle (or waiting on the disk)
during the run: the cores that neither the workers, the database nor wrk could use, because
every request was waiting. Then each server gets page load until its workers have served
100,000 decisions each, and the largest worker's resident memory is printed, and each server's
garbage collections over all its runs (counted and timed in every worker by
benchmarks/gc_probe.py, a gunicorn configuration).

`--profile DIR` writes a py-spy summary of a keyart worker under page load (by function,
self and inclusive share of samples); `--perf DIR`, Linux perf's (CPU samples of every
thread of the workers, native code and the kernel included: µs a decision by library, and
the top functions; with `--breakdown`, for the handed-off and unlogged pages too).
`--breakdown` adds runs, for one title and for a page, against routes only this benchmark's
keyart app has (none is something keyart serves), each beside a floor run of its own at the
lowest concurrency:

    validate    POST /bench/validate     the decision request parsed and validated, no more
    unlogged    POST /bench/unlogged     the decisions made and answered, not logged
    handed-off  POST /bench/handed-off   as unlogged, with the rows handed to a group-commit
                                         writer thread that writes nothing

A page's `unlogged` ÷ floor is the most any decision log could let a page reach; its
`validate` ÷ floor, the most any decision engine could. Between `unlogged` and
`handed-off` is what the group commit's threads cost; between `handed-off` and a logged
decision, what the database's writes cost.

    python benchmarks/serve.py [--seconds 5] [--repeats 3] [--connections 8,32]
                               [--workers 2] [--threads 8] [--only sqlite|postgres]
                               [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
                               [--profile DIR] [--perf DIR] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
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

import gc_probe  # noqa: E402  (benchmarks/, beside this script)

from artwork import catalog  # noqa: E402
from artwork.demo import poster  # noqa: E402
from artwork.models import Artwork, Rendition, Title  # noqa: E402
from artwork.renditions import Preset  # noqa: E402
from artwork.store import LocalBlobStore  # noqa: E402
from web.db import make_engine, make_sessionmaker, scratch_database, upgrade  # noqa: E402

TITLES = 40
WARMUP_SECONDS = 1
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
    """keyart's app plus the `--breakdown` routes. `unlogged` runs the same steps as
    `web.personalize.choose_artwork` minus the decision log's write: a ceiling for what
    any logging design could reach, never a way to serve. `handed-off` adds the group
    commit's hand-off back, without its SQL."""
    from flask import jsonify

    from bandit.decision_log import GroupCommitLog
    from bandit.decisions import DecisionService
    from web import create_app, make_decision_log
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

    class HandedOff(GroupCommitLog):
        """The group commit with its SQL left out: each request's rows are queued and the
        writer thread wakes and answers, but writes nothing."""

        def _insert(self, connection, taken, sets):  # type: ignore[no-untyped-def]
            return []

    handed_off = make_decision_log(app.extensions["keyart"].settings, HandedOff)

    @app.post("/bench/unlogged")
    def unlogged():  # type: ignore[no-untyped-def]
        return decide_without(Unlogged())

    @app.post("/bench/handed-off")
    def handed_off_route():  # type: ignore[no-untyped-def]
        return decide_without(handed_off)

    def decide_without(log):  # type: ignore[no-untyped-def]
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
            log,
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
    env: dict[str, str], port: int, workers: int, threads: int, app: str, gc_dir: Path
):
    """`app` under gunicorn, as `keyart serve` runs keyart: gthread workers, a listening
    socket per worker (one shared socket let one worker take most of wrk's connections).
    Each worker's garbage collections are timed into `gc_dir` (benchmarks/gc_probe.py)."""
    gc_dir.mkdir(parents=True, exist_ok=True)
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
            "--reuse-port",
            "--log-level",
            "warning",
            "--config",
            str(ROOT / "benchmarks" / "gc_probe.py"),
            "--pythonpath",
            f"{ROOT},{ROOT / 'benchmarks'}",
            app,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GC_PROBE_DIR": str(gc_dir), **env},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{app} did not become ready under gunicorn")


def keyart_env(url: str, var: Path, media: Path) -> dict[str, str]:
    metrics = var / "prometheus"
    metrics.mkdir(parents=True, exist_ok=True)
    return {
        "KEYART_DATABASE_URL": url,
        "KEYART_VAR_DIR": str(var),
        "KEYART_MEDIA_DIR": str(media),
        "KEYART_SECRET_KEY": "benchmark-secret-key-0123456789",
        # Every decision goes through VW (no apprentice shortcut).
        "KEYART_APPRENTICE_EXAMPLES": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def stop_server(server: subprocess.Popen) -> None:  # type: ignore[type-arg]
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


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


def workers_of(server: subprocess.Popen) -> list[int]:  # type: ignore[type-arg]
    out = subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid in out.split()]


def worker_usage(server: subprocess.Popen) -> float:  # type: ignore[type-arg]
    """CPU seconds (user + system) so far of the gunicorn workers, all their threads, from
    /proc: what a request costs the server, whatever wrk costs. The process's own line, which
    keeps what its ended threads used: summed over the live threads instead, a run in which
    the log's writer thread ended (it does after 5 s without a write) lost all that thread
    had ever used, and came out cheaper than it was."""
    ticks = 0
    for pid in workers_of(server):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # a worker that ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """This machine's idle (and I/O wait) clock ticks so far, and all ticks, from /proc/stat:
    a run in which every thread of the workers waits (on a commit, a lock, the disk) while
    wrk waits on them leaves the cores idle, which its CPU per decision does not show."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def postgres_usage() -> float | None:
    """CPU seconds (user + system) so far of this machine's PostgreSQL server: every
    process named `postgres`, with what the postmaster's exited children used (a backend
    whose connection closed). On this machine the server shares the workers' cores, and
    what a decision costs it depends on how the service writes it (keyart: one statement
    of arrays per commit, three more indexes; the peer: an INSERT a row), so the workers'
    CPU alone would not compare the two. None when no server runs here."""
    ticks, found = 0, False
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:  # a process that ended meanwhile
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
        found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def worker_rss_mb(server: subprocess.Popen) -> float:  # type: ignore[type-arg]
    """The largest resident set of the server's workers, in MB."""
    largest = 0
    for pid in workers_of(server):
        status = Path(f"/proc/{pid}/status").read_text()
        largest = max(largest, int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)))  # type: ignore[union-attr]
    return largest / 1024


def count_rows(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(count)


ENDPOINTS = (("floor", 0), ("single", 1), ("page", TITLES))
NAMES = ("keyart", "peer")


class Server:
    """One running service (keyart or the peer) and what the benchmark knows of it."""

    def __init__(
        self,
        name: str,
        process: subprocess.Popen,  # type: ignore[type-arg]
        port: int,
        url: str,
        table: str,
    ) -> None:
        self.name, self.process, self.port, self.url, self.table = name, process, port, url, table
        self.scripts = {
            "floor": lua_script("GET", "/healthz", []),
            "single": lua_script("POST", "/api/v1/decisions", bodies(1)),
            "page": lua_script("POST", "/api/v1/decisions", bodies(TITLES)),
        }
        self.titles = dict(ENDPOINTS)

    def measure(
        self, endpoint: str, seconds: int, connections: int, work: Path
    ) -> dict[str, float]:
        # A short unmeasured run first: every worker has booted and warmed up by the time
        # the measured run opens its connections (wrk keeps them for the run, so one that
        # opens while a worker is still starting would load the other alone).
        script = self.scripts[endpoint]
        run_wrk(self.port, script, WARMUP_SECONDS, connections, work)
        server = postgres_usage() if self.url.startswith("postgresql") else None
        cpu = worker_usage(self.process)
        idle, ticks = machine_ticks()
        result = run_wrk(self.port, script, seconds, connections, work)
        idle_after, ticks_after = machine_ticks()
        result["idle"] = 100 * (idle_after - idle) / max(1, ticks_after - ticks)
        per = self.titles[endpoint] or 1
        result["dps"] = result["rps"] * per
        millions = result["dps"] * seconds / 1e6  # CPU seconds per million: µs a decision
        result["cpu_us"] = (worker_usage(self.process) - cpu) / millions
        if server is not None and (after := postgres_usage()) is not None:
            result["db_us"] = (after - server) / millions
            result["all_us"] = result["cpu_us"] + result["db_us"]
        return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def profile(server: Server, args: argparse.Namespace, work: Path, out: Path) -> None:
    """A py-spy sampling profile of one worker under page load at the lowest concurrency
    (the thread holding the GIL, 250 times a second), summarised by function (self and
    inclusive share of samples), written to `out`."""
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("--profile needs py-spy: pip install 'py-spy>=0.4,<0.5'")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = work / f"profile-{server.name}.txt"
    seconds = max(args.seconds, 10)
    pid = workers_of(server.process)[0]
    load = subprocess.Popen(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(min(args.connections)),
            "-d",
            f"{seconds + 4}s",
            "-s",
            str(_script_file(server.scripts["page"], work)),
            f"http://127.0.0.1:{server.port}",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(2)
    try:
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
                # Only the thread holding the GIL: where the worker's Python time goes
                # (threads waiting for a lock, a socket or the GIL are not counted).
                "--gil",
            ],
            check=True,
            capture_output=True,
        )
    finally:
        load.wait()
    summary = summarise_profile(raw.read_text())
    out.write_text(summary)
    shutil.copy(raw, out.with_suffix(".raw"))
    print(f"\nprofile of a {server.name} worker under page load ({out}):\n{summary}")


def perf_profile(server: Server, args: argparse.Namespace, work: Path, out: Path) -> None:
    """Linux perf's CPU samples of the workers (every thread, on the CPU only, native frames
    and the kernel included: what py-spy's Python stacks leave out) under page load at the
    lowest concurrency, written to `out`: each library's share turned into µs a decision
    (its share of the samples times the workers' CPU a decision over the same seconds), and
    the top functions by share. With `--breakdown`, the same for the handed-off and the
    unlogged page, side by side: what the log adds, library by library."""
    labels = ["page"] + (["handed-off page", "unlogged page"] if args.breakdown else [])
    seconds, connections = max(args.seconds, 10), min(args.connections)
    by_dso: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    top = ""
    for label in labels:
        script = server.scripts[label]
        run_wrk(server.port, script, WARMUP_SECONDS, connections, work)
        data = work / f"perf-{server.name}.data"
        cpu = worker_usage(server.process)
        # 999 a second, off the beat of the kernel's timer; every thread of every worker,
        # for as long as the measured wrk run.
        pids = ",".join(str(pid) for pid in workers_of(server.process))
        recorder = subprocess.Popen(
            [
                *("perf", "record", "-F", "999", "-p", pids, "-o", str(data)),
                *("--", "sleep", str(seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = run_wrk(server.port, script, seconds, connections, work)
        if recorder.wait() != 0:
            raise SystemExit(f"perf record failed (exit {recorder.returncode})")
        decisions = result["rps"] * seconds * server.titles[label]
        totals[label] = (worker_usage(server.process) - cpu) / decisions * 1e6
        for dso, share in _perf_shares(data, "dso").items():
            by_dso.setdefault(dso, {})[label] = share * totals[label]
        if label == "page":
            rows = list(_perf_shares(data, "dso,sym").items())[:30]
            top = "\n".join(f"  {100 * share:5.1f}%  {name}" for name, share in rows)
    width = max(len(label) for label in labels) + 2
    lines = [
        f"the workers' CPU a decision (µs) under {connections} connections, by library:",
        f"{'':34}" + "".join(f"{label:>{width}}" for label in labels),
        f"{'all':34}" + "".join(f"{totals[label]:>{width}.1f}" for label in labels),
    ]
    ranked = sorted(by_dso.items(), key=lambda item: -item[1].get("page", 0.0))
    for dso, costs in ranked[:10]:
        lines.append(
            f"{dso[:34]:34}" + "".join(f"{costs.get(label, 0.0):>{width}.1f}" for label in labels)
        )
    lines += ["", "share of the workers' CPU samples, by function (page):", top]
    summary = "\n".join(lines) + "\n"
    out.write_text(summary)
    print(f"\nperf profile of the {server.name} workers ({out}):\n{summary}")


def _perf_shares(data: Path, sort: str) -> dict[str, float]:
    """`perf report`'s rows for `sort` (by library, or library and function), each as its
    share of the samples, largest first."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio", "-n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    counts: dict[str, int] = {}
    for line in report.splitlines():
        row = re.match(r"\s*[\d.]+%\s+(\d+)\s+(.+?)\s*$", line)
        if row and not line.startswith("#"):
            name = re.sub(r"\s+", " ", row.group(2))
            counts[name] = counts.get(name, 0) + int(row.group(1))
    total = sum(counts.values()) or 1
    return {name: count / total for name, count in sorted(counts.items(), key=lambda i: -i[1])}


def summarise_profile(raw: str, top: int = 30) -> str:
    """py-spy's raw (collapsed) stacks → each function's self and inclusive share."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        name = _frame(frames[-1])
        own[name] = own.get(name, 0) + count
        for frame in {_frame(f) for f in frames}:
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples of the thread holding the GIL", "", "where the time goes:"]
    for label, share in profile_groups(raw).items():
        lines.append(f"{share:6.1f}%  {label}")
    lines += ["", "  self%   incl%  function"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:6.1f}  {100 * inclusive[name] / total:6.1f}  {name}")
    lines += ["", "  incl%  function (inclusive, top)"]
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:6.1f}  {name}")
    return "\n".join(lines) + "\n"


# Each sampled stack goes to the first group one of its frames names.
GROUPS = (
    ("VW: parsing and predicting", ("Policy._predict", "TextFormatParser.parse_line")),
    ("the decision log: encoding rows, the writer thread, commits", ("GroupCommitLog.",)),
    ("drawing decisions (choose, less VW)", ("choose (",)),
    ("the rest of a decision: catalog, images, answers", ("choose_artwork (",)),
    ("HTTP: Flask, validation, JSON", ("Flask.__call__",)),
)


def profile_groups(raw: str) -> dict[str, float]:
    """The share of samples in each of `GROUPS`, and the rest (gunicorn's own work)."""
    counts = dict.fromkeys([label for label, _ in GROUPS], 0)
    rest, total = 0, 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        total += int(count_text)
        for label, names in GROUPS:
            if any(name in stack for name in names):
                counts[label] += int(count_text)
                break
        else:
            rest += int(count_text)
    counts["gunicorn's worker: connections, threads, queues"] = rest
    return {label: 100 * n / max(total, 1) for label, n in counts.items()}


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" → "function (file.py)": one entry per function.
    match = re.fullmatch(r"(.*) \((.*?):\d+\)", frame)
    if match is None:
        return frame
    return f"{match.group(1)} ({'/'.join(Path(match.group(2)).parts[-2:])})"


def _script_file(script: str, work: Path) -> Path:
    path = work / f"script-{uuid.uuid4().hex}.lua"
    path.write_text(script)
    return path


def top_up(server: Server, decisions: int, work: Path) -> int:
    """Page load until the server has logged at least `decisions`; how many it has."""
    while (logged := count_rows(server.url, server.table)) < decisions:
        run_wrk(server.port, server.scripts["page"], 5, 8, work)
    return logged


def bench_database(
    name: str,
    urls: dict[str, str],
    var: Path,
    media: Path,
    args: argparse.Namespace,
) -> None:
    """keyart and the peer side by side on one database: both servers up, their runs
    interleaved (floor, single, page for each, at every concurrency, repeated)."""
    servers: list[Server] = []
    gc_dirs = {server: var / f"gc-{server}-{name.split()[0].lower()}" for server in NAMES}
    try:
        port = free_port()
        app = "serve:breakdown_app()" if args.breakdown else "web:create_app()"
        process = start_server(
            keyart_env(urls["keyart"], var, media),
            port,
            args.workers,
            args.threads,
            app,
            gc_dirs["keyart"],
        )
        servers.append(Server("keyart", process, port, urls["keyart"], "decisions"))
        port = free_port()
        process = start_server(
            {"PEER_DATABASE_URL": urls["peer"]},
            port,
            args.workers,
            args.threads,
            "peer:create_app()",
            gc_dirs["peer"],
        )
        servers.append(Server("peer", process, port, urls["peer"], "peer_decisions"))
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for rep in range(args.repeats):
            for connections in args.connections:
                # Alternate which goes first, so neither always runs on a warmer machine.
                for server in servers if rep % 2 == 0 else servers[::-1]:
                    for endpoint, _ in ENDPOINTS:
                        result = server.measure(endpoint, args.seconds, connections, var)
                        results.setdefault((server.name, connections, endpoint), []).append(result)
            print(f"  {name}: round {rep + 1} of {args.repeats} done", flush=True)
        extra = []
        if args.breakdown:
            keyart = servers[0]
            for label, path, titles in BREAKDOWN:
                keyart.scripts[label] = lua_script("POST", path, bodies(titles))
                keyart.titles[label] = titles
                # Each beside a floor run of its own, for a ratio from runs seconds apart.
                floor = keyart.measure("floor", args.seconds, args.connections[0], var)
                result = keyart.measure(label, args.seconds, args.connections[0], var)
                result["floor"] = floor["rps"]
                extra.append((label, result))
        memory = {}
        for server in servers:
            # Each worker has then served at least 100,000 decisions (the kernel spreads
            # connections over workers about evenly; the logged total is twice that).
            logged = top_up(server, RSS_AFTER * args.workers, var)
            memory[server.name] = (worker_rss_mb(server.process), logged)
        if args.profile:
            profile(servers[0], args, var, args.profile / f"profile-{name.split()[0].lower()}.txt")
        if args.perf:
            perf_profile(servers[0], args, var, args.perf / f"perf-{name.split()[0].lower()}.txt")
        fallbacks = fallback_answers(servers[0].port)
    finally:
        for server in servers:
            stop_server(server.process)
    report(name, results, memory, extra, args)
    for server, directory in gc_dirs.items():
        # Written by each worker as it exits, so read once the servers are stopped.
        print(f"  {server} workers' garbage collections, all runs: {gc_probe.summary(directory)}")
    # A fallback answer is not logged: were there any, decisions/s would count them too.
    print(f"  keyart fallback answers (not logged) in all runs: {fallbacks:.0f}")


RSS_AFTER = 100_000

# `--breakdown`'s runs: a request only parsed and validated, and a decision made and
# answered but not logged, for one title and for a page.
BREAKDOWN = (
    ("validate single", "/bench/validate", 1),
    ("unlogged single", "/bench/unlogged", 1),
    ("handed-off single", "/bench/handed-off", 1),
    ("validate page", "/bench/validate", TITLES),
    ("unlogged page", "/bench/unlogged", TITLES),
    ("handed-off page", "/bench/handed-off", TITLES),
)


def fallback_answers(port: int) -> float:
    """keyart's `keyart_fallback_answers_total`, summed over its workers by `/metrics`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("keyart_fallback_answers_total "):
                return float(line.split()[1])
    return 0.0


def report(
    name: str,
    results: dict[tuple[str, int, str], list[dict[str, float]]],
    memory: dict[str, tuple[float, int]],
    extra: list[tuple[str, dict[str, float]]],
    args: argparse.Namespace,
) -> None:
    """Medians over the repeats; each ratio is taken within one round (runs minutes apart
    on a shared machine are not comparable), then its median over the rounds."""
    print(
        f"\n{name}: {args.workers} gunicorn gthread workers × {args.threads} threads, "
        f"{args.seconds} s runs, median of {args.repeats} interleaved rounds, "
        f"{os.cpu_count()} cores"
    )
    # PostgreSQL's own CPU per decision beside the workers' (SQLite's is the workers').
    server_cpu = "db_us" in next(iter(results.values()))[0]

    def db_cpu(runs: list[dict[str, float]]) -> str:
        return f" {median([r['db_us'] for r in runs]):11.0f}" if server_cpu else ""

    print(
        f"  {'':16} {'req/s':>8} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/dec':>11}"
        + (f" {'DB CPU µs':>11}" if server_cpu else "")
        + f" {'idle %':>7}"
    )
    for connections in args.connections:
        for server in ("keyart", "peer"):
            for endpoint, per in ENDPOINTS:
                runs = results[(server, connections, endpoint)]
                label = f"{server} {endpoint} c{connections}"
                dps = f"{median([r['dps'] for r in runs]):12.0f}" if per else f"{'':>12}"
                print(
                    f"  {label:16} {median([r['rps'] for r in runs]):8.0f} {dps}"
                    f" {median([r['p50'] for r in runs]):8.2f}"
                    f" {median([r['p99'] for r in runs]):8.2f}"
                    f" {median([r['cpu_us'] for r in runs]):11.0f}{db_cpu(runs)}"
                    f" {median([r['idle'] for r in runs]):7.1f}"
                )
    if extra:
        print(
            f"\n  breakdown, c{args.connections[0]}, each beside a floor run of its own:"
            f" decisions/s ÷ floor req/s"
        )
    for label, result in extra:
        print(
            f"  {label:16} {result['rps']:8.0f} {result['dps']:12.0f} {result['p50']:8.2f}"
            f" {result['p99']:8.2f} {result['cpu_us']:11.0f}{db_cpu([result])}"
            f" {result['idle']:7.1f}   ÷ floor {result['dps'] / result['floor']:.2f}"
        )

    def ratio(server: str, connections: int, top: str, bottom: str, key: str, key2: str) -> float:
        ups = results[(server, connections, top)]
        downs = results[(server, connections, bottom)]
        return median([u[key] / d[key2] for u, d in zip(ups, downs, strict=True)])

    def versus(connections: int, endpoint: str, key: str) -> float:
        ours = results[("keyart", connections, endpoint)]
        theirs = results[("peer", connections, endpoint)]
        return median([o[key] / t[key] for o, t in zip(ours, theirs, strict=True)])

    print(
        f"\n  {'ratios (per round, median)':27} {'page÷floor':>10} {'single÷floor':>12}"
        f" {'single p99÷floor p99':>20}"
    )
    for connections in args.connections:
        for server in ("keyart", "peer"):
            print(
                f"  {server + f' c{connections}':27}"
                f" {ratio(server, connections, 'page', 'floor', 'dps', 'rps'):10.2f}"
                f" {ratio(server, connections, 'single', 'floor', 'rps', 'rps'):12.2f}"
                f" {ratio(server, connections, 'single', 'floor', 'p99', 'p99'):20.2f}"
            )
    print(
        f"\n  {'keyart ÷ peer':27} {'pages':>10} {'singles':>12} {'page p99':>10}"
        f" {'single p99':>11}" + (f" {'page CPU, with DB':>18}" if server_cpu else "")
    )
    for connections in args.connections:
        print(
            f"  {f'c{connections}':27} {versus(connections, 'page', 'dps'):10.2f}"
            f" {versus(connections, 'single', 'rps'):12.2f}"
            f" {versus(connections, 'page', 'p99'):10.2f}"
            f" {versus(connections, 'single', 'p99'):11.2f}"
            + (f" {versus(connections, 'page', 'all_us'):18.2f}" if server_cpu else "")
        )
    for server, (rss, logged) in memory.items():
        print(
            f"  {server} worker RSS after {logged:,} decisions over {args.workers} workers:"
            f" {rss:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--connections",
        type=lambda v: [int(c) for c in v.split(",")],
        default=[8, 32],
        help="comma-separated wrk connection counts (default 8,32)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server URL; the benchmark creates and drops its own databases",
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure a validate-only route and an unlogged decision (see above)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write a py-spy profile summary of a keyart worker under page load to DIR",
    )
    parser.add_argument(
        "--perf",
        type=Path,
        metavar="DIR",
        help="write a Linux perf summary (CPU a decision by library, top functions) of the"
        " keyart workers under page load to DIR (with --breakdown: handed-off and unlogged"
        " pages too)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.perf:
        if shutil.which("perf") is None:
            raise SystemExit("--perf needs Linux perf: apt-get install linux-perf")
        args.perf.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="keyart-bench-") as tmp:
        work = Path(tmp)
        media = work / "media"
        (work / "sqlite").mkdir()
        sqlite_url = f"sqlite:///{work / 'sqlite' / 'keyart.db'}"
        peer_url = f"sqlite:///{work / 'sqlite' / 'peer.db'}"
        print("building a 40-title catalog (3 variants each)...", flush=True)
        build_catalog(sqlite_url, media)
        copy_catalog(sqlite_url, peer_url)
        if args.only in (None, "sqlite"):
            urls = {"keyart": sqlite_url, "peer": peer_url}
            bench_database("SQLite (WAL)", urls, work / "sqlite", media, args)
        if args.only in (None, "postgres"):
            with (
                scratch_database(args.postgres, "keyart_bench") as pg_url,
                scratch_database(args.postgres, "peer_bench") as pg_peer,
            ):
                copy_catalog(sqlite_url, pg_url)
                copy_catalog(sqlite_url, pg_peer)
                (work / "postgres").mkdir()
                urls = {"keyart": pg_url, "peer": pg_peer}
                bench_database("PostgreSQL", urls, work / "postgres", media, args)


if __name__ == "__main__":
    main()
