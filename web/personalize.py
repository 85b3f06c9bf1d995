"""Where the catalog meets the bandit: choose an artwork variant for each requested title
and say which rendition of it to show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from artwork.models import Artwork
from bandit.decision_log import DecisionLogError, StaleWrite
from bandit.log import DecisionRecord, DecisionRequest, choose, store_candidate_sets
from web.db import ReadUnavailable
from web.errors import ApiError
from web.serving_catalog import ServableTitle
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


def artwork_features(artwork: Artwork) -> dict[str, Any]:
    """What the policy knows of a variant besides its id: the editor's tags and the image
    features computed at upload."""
    return {"tag": list(artwork.tags), **artwork.features}


# Attempts at a page before giving up, when the catalog keeps changing under its decisions.
_ATTEMPTS = 3


def choose_artwork(runtime: Runtime, page: PageRequest) -> list[dict[str, Any]]:
    """One decision object per requested title, in the request's order; a title that cannot
    be served gets an `error` of its own and does not fail the others. The decisions are
    durable (group-committed) before this returns, and were made with the catalog as it
    was when they were committed (see `web.serving_catalog`). A decision is answered if and
    only if it was logged."""
    log = runtime.decision_log
    for attempt in range(_ATTEMPTS):
        # Read afresh when the last attempt was refused, or the log's writer has already
        # seen a newer catalog than the cache holds; without the log, always.
        fresh = (
            log is None
            or attempt > 0
            or (log.guarded is not None and log.guarded != runtime.catalog.version)
        )
        try:
            catalog, version = runtime.catalog.titles(runtime.engine, page.titles, fresh=fresh)
            decisions = _decide(runtime, page, catalog)
            # Read before the decisions are logged: once they are, nothing may fail, or a
            # logged decision would be answered as an error (and learned as never clicked).
            images = runtime.catalog.image(
                runtime.engine, [d.chosen_id for d in decisions], page.rendition, page.format
            )
        except ReadUnavailable as error:
            raise ApiError(503, "catalog_unavailable", str(error)) from None
        if log is None:
            with runtime.sessions() as session:
                store_candidate_sets(session, decisions)
                session.add_all([d.model() for d in decisions])
                session.commit()
            break
        try:
            log.write(decisions, expect=version)
            break
        except StaleWrite:
            continue  # the catalog changed since it was read: decide again
        except DecisionLogError as error:
            raise ApiError(503, "log_unavailable", str(error)) from None
    else:
        raise ApiError(
            503, "catalog_changing", "the catalog kept changing while deciding; try again"
        )
    return _answers(runtime, page, catalog, decisions, images)


def _decide(
    runtime: Runtime, page: PageRequest, catalog: dict[str, ServableTitle]
) -> list[DecisionRecord]:
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
                logged=found.logged,
            )
        )
    return choose(runtime.policy.current, requests, runtime.rng, exploration=runtime.exploration)


def _answers(
    runtime: Runtime,
    page: PageRequest,
    catalog: dict[str, ServableTitle],
    decisions: list[DecisionRecord],
    images: dict[str, dict[str, Any] | None],
) -> list[dict[str, Any]]:
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
                "placeholder": runtime.catalog.placeholder(decision.chosen_id, page.rendition),
                "probability": decision.probability,
                "policy_version": decision.policy_version,
                "mode": decision.mode,
            }
        )
    return out
