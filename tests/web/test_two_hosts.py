"""Two hosts in one test: two `keyart serve` processes, each in its own process group on
its own port, sharing what two machines behind a load balancer share (one PostgreSQL
database, one S3-compatible bucket on moto's standalone server over HTTP, one secret key)
and nothing else (each has its own var and media directories). Everything is checked over
HTTP against the live servers: an upload through one is served by the other, a viewer keeps
their variant whichever host answers, one learner leads and learns, and when its host is
killed outright the other host's learner takes over within the takeover time."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from click.testing import CliRunner

from artwork.store import S3Location
from tests.helpers import poster_bytes
from tests.live import LiveServer
from web.cli import main

pytestmark = pytest.mark.postgres

TAKEOVER = 3.0
# A small page: three titles of three variants each.
TITLES = ("harbour-lights", "night-shift", "salt-road")
VARIANTS = (("landscape", "dark"), ("typographic", "bright"), ("group", "warm"))
VIEWERS = [f"viewer-{n}" for n in range(6)]
# The learner that leads, as /metrics shows it (`web.metrics.LearnerCollector`): its pid.
LEADER_SAMPLE = re.compile(r'^keyart_learner_leader\{host="[^"]*",pid="(\d+)"\} 1\.0$', re.M)
CONTEXT = {"segment": "night-owls", "country": "NZ", "device": "tv", "hour": 23}


def _until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def _page(host: LiveServer, user: str) -> list[dict[str, Any]]:
    answer = requests.post(
        f"{host.base}/api/v1/decisions",
        json={"user": user, "context": CONTEXT, "titles": list(TITLES)},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["decisions"]


def _policy(host: LiveServer, token: str) -> dict[str, Any]:
    answer = requests.get(
        f"{host.base}/api/v1/policy", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _leaders_in_metrics(host: LiveServer) -> list[str]:
    scraped = requests.get(f"{host.base}/metrics", timeout=30)
    assert scraped.status_code == 200
    return re.findall(
        r'^keyart_learner_leader\{host="[^"]*",pid="(\d+)"\} 1\.0$', scraped.text, re.M
    )


def _click(host: LiveServer, event_ids: list[str]) -> None:
    answer = requests.post(
        f"{host.base}/api/v1/events",
        json={"events": [{"event_id": e, "type": "click"} for e in event_ids]},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    assert {e["status"] for e in answer.json()["events"]} == {"accepted"}, answer.text


def _passes(host: LiveServer, pid: int | None = None) -> list[dict[str, Any]]:
    """The host's learning passes (`bandit.leadership.lead_and_learn`'s lines), by `pid`."""
    return [
        line
        for line in host.lines()
        if str(line.get("message", "")).startswith("learning pass:")
        and (pid is None or line.get("pid") == pid)
    ]


def _leads(host: LiveServer) -> list[int]:
    """The processes of `host` that logged taking the lead."""
    return [line["pid"] for line in host.lines() if line.get("message") == "learner leads"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_hosts_share_media_viewers_and_one_learner_that_fails_over(
    database_url: str, s3_media_url: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    shared = {
        **s3_env,
        "KEYART_DATABASE_URL": database_url,
        "KEYART_MEDIA_URL": s3_media_url,
        "KEYART_SECRET_KEY": "two-hosts-share-this-secret-0123456789",
        "KEYART_PRESETS": "boxart=2:3@342",
        "KEYART_REWARD_WAIT": "2",
        "KEYART_REWARD_SETTLE": "0",
        "KEYART_LEARN_INTERVAL": "0.5",
        "KEYART_POLICY_POLL": "0.2",
        "KEYART_LEARNER_TAKEOVER": str(TAKEOVER),
        # The policy decides from the first request (not the editor's default), so viewers'
        # draws differ and a host that drew its own would be caught.
        "KEYART_APPRENTICE_EXAMPLES": "0",
        "KEYART_LOG_LEVEL": "INFO",
    }

    def host_env(name: str) -> dict[str, str]:
        return {
            **shared,
            "KEYART_VAR_DIR": str(tmp_path / name / "var"),
            "KEYART_MEDIA_DIR": str(tmp_path / name / "media"),
        }

    created = CliRunner().invoke(
        main, ["editor", "create", "hosts@example.com"], env=host_env("one")
    )
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    editor = {"Authorization": f"Bearer {token}"}

    with contextlib.ExitStack() as stack:
        # Both start at once, as a deployment's hosts would; whichever host's learner wins
        # the lock is A (it takes the uploads, then is lost), the other is B.
        hosts = []
        for name in ("one", "two"):
            host = LiveServer(host_env(name), tmp_path / f"{name}.log", ("--workers", "1"))
            stack.callback(host.stop)
            host.launch()
            hosts.append(host)
        for host in hosts:
            host.wait_ready()
        first = _until(lambda: _policy(hosts[0], token)["leader"], 30, "a learner leads")
        a, b = hosts if hosts[0].owns(first["pid"]) else hosts[::-1]
        assert a.owns(first["pid"]) and not b.owns(first["pid"]), first

        # A viewer reaches B before the titles exist...
        assert {d["error"]["code"] for d in _page(b, "early-viewer")} == {"unknown_title"}

        # ...then an editor makes them through A, with real images.
        uploads = []
        for title in TITLES:
            made = requests.post(
                f"{a.base}/api/v1/titles",
                json={"id": title, "name": title.replace("-", " ").title()},
                headers=editor,
                timeout=30,
            )
            assert made.status_code == 201, made.text
            for n, (composition, palette) in enumerate(VARIANTS):
                image = poster_bytes(title, composition, palette, seed=n)
                uploaded = requests.post(
                    f"{a.base}/api/v1/titles/{title}/artworks",
                    files={"file": (f"{title}-{n}.jpg", image, "image/jpeg")},
                    data={"label": composition},
                    headers=editor,
                    timeout=120,
                )
                assert uploaded.status_code == 201, uploaded.text
                uploads.append(uploaded.json())

        # 1. Every rendition uploaded through A is served by B, the bytes in the bucket.
        bucket = S3Location.parse(s3_media_url)
        s3 = boto3.client("s3")
        keys = [r["url"].removeprefix("/media/") for u in uploads for r in u["renditions"]]
        assert len(keys) >= len(uploads) and all("/" not in key for key in keys)
        for key in keys:
            from_b = requests.get(f"{b.base}/media/{key}", timeout=30)
            from_a = requests.get(f"{a.base}/media/{key}", timeout=30)
            stored = s3.get_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/media/{key}")
            assert from_b.status_code == 200 and from_a.status_code == 200
            assert from_b.content == from_a.content == stored["Body"].read()
            assert from_b.headers["ETag"] == from_a.headers["ETag"]
        # Neither host keeps media on its own disk.
        assert not [p for p in tmp_path.glob("*/media/**/*") if p.is_file()]

        # B serves the titles A made, though it had answered them unknown (and cached that).
        served = _page(b, "early-viewer")
        assert all(d.get("artwork_id") for d in served), served

        # 2. A sticky viewer gets the same variant from either host, for every title: the
        # draw is seeded by the viewer, the title and the shared secret, and made from the
        # same snapshot (compared where both answers carry the same policy version; the
        # learner may publish one between the two requests).
        event_ids = [d["event_id"] for d in served]
        drawn: dict[str, set[str]] = {title: set() for title in TITLES}
        for viewer in VIEWERS:
            for _ in range(20):
                from_a, from_b = _page(a, viewer), _page(b, viewer)
                event_ids += [d["event_id"] for d in from_a + from_b]
                # Clicks within the reward window, each on the host that did not decide.
                _click(b, [from_a[0]["event_id"]])
                _click(a, [from_b[1]["event_id"]])
                if [d["policy_version"] for d in from_a] == [d["policy_version"] for d in from_b]:
                    break
            else:
                raise AssertionError(f"the hosts never served {viewer} from one policy version")
            assert [d["title"] for d in from_b] == list(TITLES)
            for mine, theirs in zip(from_a, from_b, strict=True):
                assert mine["mode"] == theirs["mode"] == "policy", (mine, theirs)
                assert mine["artwork_id"] == theirs["artwork_id"], (viewer, mine, theirs)
                assert mine["image"] == theirs["image"]
                drawn[mine["title"]].add(mine["artwork_id"])
        # Viewers do differ: the agreement above is not every host serving one variant.
        assert any(len(ids) > 1 for ids in drawn.values()), drawn

        # 3. One learner leads, A's, as both hosts report; it learns, B's learner stands by.
        learned = _until(
            lambda: (
                (p := _policy(b, token))["examples_learned"] >= len(event_ids)
                and p["decisions_not_learned"] == 0
                and p
            ),
            30,
            "the leader learns every decision",
        )
        assert learned["version"] > 0
        leader = first["pid"]
        for host in (a, b):
            assert _policy(host, token)["leader"]["pid"] == leader
            assert _leaders_in_metrics(host) == [str(leader)]
        assert not b.owns(leader)
        assert _leads(a) == [leader] and _leads(b) == []
        # Each pass's line follows its commit: wait for the last one too.
        _until(
            lambda: sum(p["learned"] for p in _passes(a, leader)) == len(event_ids),
            10,
            "A's learner logs the passes it learned every decision in",
        )
        assert _passes(b) == []

        # 4. Host A is lost (its whole process group, SIGKILL): B's learner takes over.
        a.kill()
        killed = time.monotonic()
        taken = _until(
            lambda: (found := _policy(b, token)["leader"]) and b.owns(found["pid"]) and found,
            TAKEOVER * 3,
            "host B's learner leads",
        )
        # Within the takeover time; a loaded test machine's scheduler gets as much again.
        assert time.monotonic() - killed <= TAKEOVER * 2
        assert _leaders_in_metrics(b) == [str(taken["pid"])]
        _until(lambda: _leads(b) == [taken["pid"]], 10, "B's learner logs that it leads")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{a.base}/healthz", timeout=5)

        # B keeps answering, and its learner learns what it answers.
        before = _policy(b, token)["examples_learned"]
        later = []
        for viewer in VIEWERS:
            page = _page(b, viewer)
            assert all(d["event_id"] and d["artwork_id"] for d in page), page
            later += [d["event_id"] for d in page]
            _click(b, [page[2]["event_id"]])
        _until(
            lambda: (
                (p := _policy(b, token))["examples_learned"] >= before + len(later)
                and p["decisions_not_learned"] == 0
            ),
            30,
            "B's learner learns the decisions B made after A was lost",
        )
        _until(
            lambda: sum(p["learned"] for p in _passes(b, taken["pid"])) == len(later),
            10,
            "B's learner logs the passes it learned them in",
        )
