"""Where the catalog meets the bandit: choose an artwork variant for each requested title
and say which rendition of it to show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from artwork.catalog import titles_with_active_artwork
from artwork.models import Artwork, Title
from artwork.renditions import FORMATS
from bandit.decision_log import DecisionLogError
from bandit.features import Candidate
from bandit.log import DecisionRequest, choose
from web.errors import ApiError
from web.state import Runtime

DEFAULT_RENDITION = "boxart-342"


@dataclass(frozen=True)
class PageRequest:
    titles: Sequence[str]
    context: Mapping[str, Any]
    user: str | None = None
    rendition: str = DEFAULT_RENDITION
    format: str = "jpg"
    deferred: bool = False


def title_features(title: Title) -> dict[str, Any]:
    return {"title": title.id, "genre": list(title.genres)}


def artwork_features(artwork: Artwork) -> dict[str, Any]:
    """What the policy knows of a variant besides its id: the editor's tags and the image
    features computed at upload."""
    return {"tag": list(artwork.tags), **artwork.features}


def image_of(artwork: Artwork, preset: str, fmt: str) -> dict[str, Any] | None:
    by_format = {r.format: r for r in artwork.renditions if r.preset == preset}
    # The asked-for format, else the next best we have.
    for candidate in (fmt, *FORMATS):
        rendition = by_format.get(candidate)
        if rendition is not None:
            return {
                "url": f"/media/{rendition.key}",
                "width": rendition.width,
                "height": rendition.height,
                "format": rendition.format,
            }
    return None


def choose_artwork(session: Session, runtime: Runtime, page: PageRequest) -> list[dict[str, Any]]:
    """One decision object per requested title, in the request's order; a title that cannot
    be served gets an `error` of its own and does not fail the others. Commits the log."""
    catalog = titles_with_active_artwork(session, page.titles)
    requests: list[DecisionRequest] = []
    artworks: dict[str, dict[str, Artwork]] = {}
    for title_id in dict.fromkeys(page.titles):
        found = catalog.get(title_id)
        if found is None or not found[1]:
            continue
        title, active = found
        artworks[title_id] = {a.id: a for a in active}
        requests.append(
            DecisionRequest(
                slot=title_id,
                candidates=[Candidate(a.id, artwork_features(a)) for a in active],
                context=page.context,
                slot_features=title_features(title),
                user=page.user,
                deferred=page.deferred,
                default_id=title.default_artwork_id,
            )
        )
    policy = runtime.policy.current
    decisions = choose(policy, requests, runtime.rng, exploration=runtime.exploration)
    if runtime.decision_log is None:
        session.add_all(decisions)
        session.commit()
    else:
        try:
            runtime.decision_log.write(decisions)
        except DecisionLogError as error:
            raise ApiError(503, "log_unavailable", str(error)) from None

    by_title = {d.slot: d for d in decisions}
    out = []
    for title_id in page.titles:
        decision = by_title.get(title_id)
        if decision is None:
            if title_id not in catalog:
                error = {"code": "unknown_title", "message": f"no title {title_id!r}"}
            else:
                error = {
                    "code": "no_artwork",
                    "message": f"title {title_id!r} has no active artwork",
                }
            out.append({"title": title_id, "error": error})
            continue
        artwork = artworks[title_id][decision.chosen_id]
        out.append(
            {
                "title": title_id,
                "event_id": decision.event_id,
                "artwork_id": decision.chosen_id,
                "image": image_of(artwork, page.rendition, page.format),
                "probability": decision.probability,
                "policy_version": decision.policy_version,
                "mode": decision.mode,
            }
        )
    return out
