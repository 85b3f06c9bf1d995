"""The service a team would write instead of running keyart: Flask, VW's predict_one, and one
INSERT + COMMIT per request. benchmarks/serve.py runs it beside keyart, under the same
gunicorn settings, over a copy of the same catalog, with the same features and VW arguments
(keyart's own featuriser, so VW does the same work per prediction in both).

    PEER_DATABASE_URL=sqlite:///path.db gunicorn ... 'peer:create_app()'
"""

import json
import os
import random
import sqlite3
import threading
import time
import uuid

import psycopg
import vowpal_wabbit_next as vw
from flask import Flask, jsonify, request

from bandit.config import DEFAULT_VW_ARGS
from bandit.features import Candidate, example_lines

SCHEMA = """CREATE TABLE IF NOT EXISTS peer_decisions (event_id VARCHAR(36) PRIMARY KEY,
 created_at DOUBLE PRECISION, user_id VARCHAR(200), title VARCHAR(200), context TEXT,
 actions TEXT, chosen VARCHAR(64), probability DOUBLE PRECISION)"""


def create_app() -> Flask:
    url = os.environ["PEER_DATABASE_URL"]
    postgres = url.startswith("postgresql")
    local = threading.local()

    def connection():  # one per thread, kept
        if not hasattr(local, "db"):
            if postgres:
                local.db = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
            else:
                local.db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
                local.db.execute("PRAGMA journal_mode=WAL")
        return local.db

    db = connection()
    try:
        db.execute(SCHEMA)
    except psycopg.errors.UniqueViolation:
        # The other worker created it at the same moment: PostgreSQL's IF NOT EXISTS is no
        # guard against that, and a benchmark run died of it once.
        db.rollback()
    titles: dict[str, list[Candidate]] = {}
    genres: dict[str, list[str]] = {}
    images: dict[str, str] = {}
    for title_id, genre_json in db.execute("SELECT id, genres FROM titles").fetchall():
        genres[title_id] = json.loads(genre_json) if isinstance(genre_json, str) else genre_json
        titles[title_id] = []
    rows = db.execute(
        "SELECT id, title_id, tags, features FROM artworks WHERE status = 'active'"
        " ORDER BY created_at, id"
    ).fetchall()
    for art_id, title_id, tags, features in rows:
        tags, features = (json.loads(v) if isinstance(v, str) else v for v in (tags, features))
        titles[title_id].append(Candidate(art_id, {"tag": list(tags), **features}))
    for art_id, key in db.execute("SELECT artwork_id, key FROM renditions").fetchall():
        images[art_id] = f"/media/{key}"
    db.commit()
    model = vw.Workspace([*DEFAULT_VW_ARGS.split(), "--quiet"])
    parser = vw.TextFormatParser(model)
    lock = threading.Lock()  # VW is not thread-safe
    insert = "INSERT INTO peer_decisions VALUES " + (
        "(%s,%s,%s,%s,%s,%s,%s,%s)" if postgres else "(?,?,?,?,?,?,?,?)"
    )
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/api/v1/decisions")
    def decisions():
        body = request.get_json()
        context, user = body.get("context", {}), body.get("user")
        answers, rows = [], []
        for title_id in body["titles"]:
            candidates = titles.get(title_id)
            if not candidates:
                answers.append({"title": title_id, "error": "unknown title"})
                continue
            features = {"title": title_id, "genre": genres[title_id]}
            lines = example_lines(context, features, candidates)
            with lock:
                scores = model.predict_one([parser.parse_line(line) for line in lines])
            probabilities = [0.0] * len(candidates)
            for index, probability in scores:
                probabilities[index] = probability
            chosen = random.choices(range(len(candidates)), probabilities)[0]
            event_id = str(uuid.uuid4())
            art_id = candidates[chosen].id
            rows.append(
                (
                    event_id,
                    time.time(),
                    user,
                    title_id,
                    json.dumps(context),
                    json.dumps([c.id for c in candidates]),
                    art_id,
                    probabilities[chosen],
                )
            )
            answers.append(
                {
                    "title": title_id,
                    "event_id": event_id,
                    "artwork_id": art_id,
                    "image": images.get(art_id),
                    "probability": probabilities[chosen],
                }
            )
        db = connection()
        db.cursor().executemany(insert, rows)
        db.commit()
        return jsonify({"decisions": answers})

    return app
