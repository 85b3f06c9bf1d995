"""Where the catalog meets the bandit: choose an artwork variant for each requested title
and say which rendition of it to show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from artwork.models import Artwork
from bandit.decision_log import DecisionLogError
from bandit.log import DecisionRequest, choose
from web.db import ReadUnavailable
from web.errors import ApiError
from web.serving_catalog import ServingCatalog
from web.state import Runtime

DEFAULT_RENDITION = "boxart-342"
# One cache per process serves every app in it (renditions are re-read every 30 s).
SERVING_CATALOG = ServingCatalog()


@dataclass(frozen=True)
class PageRequest:
    titles: Sequence[str]
    context: Mapping[str, Any]
    user: str | None = None
    rendition: str = DEFAULT_RENDITION
    format: str = "jpg"
    deferred: bool = False


def artwork_features(artwork: Artwork) -> dict[str, Any]:
    """What the policy knows of a variant besides its id: the editor's tags and the image
    features computed at upload."""
    return {"tag": list(artwork.tags), **artwork.features}


def choose_artwork(runtime: Runtime, page: PageRequest) -> list[dict[str, Any]]:
    """One decision object per requested title, in the request's order; a title that cannot
    be served gets an `error` of its own and does not fail the others. The decisions are
    durable (group-committed) before this returns."""
    try:
        catalog = SERVING_CATALOG.titles(runtime.engine, page.titles)
    except ReadUnavailable as error:
        raise ApiError(503, "catalog_unavailable", str(error)) from None
    requests: list[DecisionRequest] = []
    for title_id in dict.fromkeys(page.titles):
        found = catalog.get(title_id)
        if found is None or not found.variants:
            continue
        requests.append(
            DecisionRequest(
                slot=title_id,
                candidates=found.variants,
                context=page.context,
                slot_features=found.slot_features,
                user=page.user,
                deferred=page.deferred,
                default_id=found.default_id,
                slot_tokens=found.slot_tokens,
            )
        )
    policy = runtime.policy.current
    decisions = choose(policy, requests, runtime.rng, exploration=runtime.exploration)
    if runtime.decision_log is None:
        with runtime.sessions() as session:
            session.add_all([d.model() for d in decisions])
            session.commit()
    else:
        try:
            runtime.decision_log.write(decisions)
        except DecisionLogError as error:
            raise ApiError(503, "log_unavailable", str(error)) from None
    try:
        images = SERVING_CATALOG.image(
            runtime.engine, [d.chosen_id for d in decisions], page.rendition, page.format
        )
    except ReadUnavailable as error:
        raise ApiError(503, "catalog_unavailable", str(error)) from None

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
        out.append(
            {
                "title": title_id,
                "event_id": decision.event_id,
                "artwork_id": decision.chosen_id,
                "image": images[decision.chosen_id],
                "placeholder": SERVING_CATALOG.placeholder(decision.chosen_id, page.rendition),
                "probability": decision.probability,
                "policy_version": decision.policy_version,
                "mode": decision.mode,
            }
        )
    return out
