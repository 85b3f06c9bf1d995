"""A small simulated audience for the demo: viewers in a few segments ask a running server's
public API for artwork and click what appeals to their segment, so that a newcomer's
`make run` shows the policy learning. It speaks only HTTP, as any UI would."""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SEGMENTS = ("teen-scifi", "family", "drama-fans", "night-owls")
DEVICES = ("tv", "phone", "web")
# Viewers come back: 400 of them, so sticky draws and repeat visits happen as in life.
VIEWERS = 400


def appeal(segment: str, device: str, artwork_id: str) -> float:
    """This audience's click probability for a variant: fixed per (segment, artwork), a
    little higher on TVs, from 2% to 40%. Unknown to keyart, which has to learn it."""
    digest = hashlib.sha256(f"{segment}|{artwork_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return min(0.02 + 0.34 * u**2 + (0.04 if device == "tv" else 0.0), 1.0)


@dataclass(frozen=True)
class Audience:
    """Where to send traffic, for which titles, how fast (pages per second)."""

    base_url: str
    titles: tuple[str, ...]
    pages_per_second: float = 4.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the server's address must be http(s)://, got {self.base_url!r}")
        if not self.titles:
            raise ValueError("the audience needs at least one title")
        if not 0 < self.pages_per_second <= 1000:
            raise ValueError("pages per second must be over 0 and at most 1000")


def _post(base_url: str, path: str, body: Any) -> Any:
    # `Audience` admits only http(s) addresses.
    request = urllib.request.Request(  # noqa: S310
        base_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return json.load(answer)


def visit(audience: Audience, rng: random.Random) -> tuple[int, int]:
    """One page view: a viewer asks for artwork for a few titles and clicks (sometimes
    plays) what appeals. Answers how many decisions and events it made."""
    segment = rng.choice(SEGMENTS)
    device = rng.choice(DEVICES)
    titles = rng.sample(audience.titles, k=min(len(audience.titles), rng.randint(1, 4)))
    answer = _post(
        audience.base_url,
        "/api/v1/decisions",
        {
            "user": f"demo-viewer-{rng.randrange(VIEWERS)}",
            "context": {"segment": segment, "device": device, "hour": time.gmtime().tm_hour},
            "titles": titles,
        },
    )
    events = []
    for decision in answer["decisions"]:
        if decision.get("event_id") is None:
            continue  # an unknown title, or the fallback when the database is down
        if rng.random() < appeal(segment, device, decision["artwork_id"]):
            events.append({"event_id": decision["event_id"], "type": "click"})
            if rng.random() < 0.4:
                events.append({"event_id": decision["event_id"], "type": "play"})
    if events:
        _post(audience.base_url, "/api/v1/events", {"events": events})
    return len(answer["decisions"]), len(events)


def run(
    audience: Audience,
    stopping: Callable[[], bool],
    rng: random.Random | None = None,
    report: Callable[[str], None] = print,
) -> int:
    """Visit until `stopping()`, at the audience's pace; a server that is not up yet or
    answers an error is waited for, not given up on. Answers the decisions made."""
    rng = rng or random.Random()
    decisions = 0
    failing = False
    while not stopping():
        started = time.monotonic()
        try:
            made, _ = visit(audience, rng)
            decisions += made
            if failing:
                report("demo traffic: the server answers again")
            failing = False
        except (OSError, ValueError, KeyError) as error:
            # URLError and HTTPError are OSErrors; a body that is not the API's is ValueError.
            if not failing:
                report(f"demo traffic: waiting for the server ({error})")
            failing = True
            _sleep(1.0, stopping)
            continue
        _sleep(1 / audience.pages_per_second - (time.monotonic() - started), stopping)
    return decisions


def _sleep(seconds: float, stopping: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stopping() and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def demo_titles(ids: Sequence[str] | None = None) -> tuple[str, ...]:
    """The demo catalog's title ids (or `ids`, as given)."""
    if ids:
        return tuple(ids)
    from artwork.demo import TITLES

    return tuple(title_id for title_id, _, _ in TITLES)
