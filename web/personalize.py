"""Where the catalog meets the bandit: the decision service answers a page of titles, and this
module says which rendition of each chosen variant to show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from artwork.models import Artwork
from bandit.decision_log import DecisionLogError
from bandit.decisions import (
    CandidatesUnavailable,
    CatalogChanging,
    DecisionRecord,
    Slot,
)
from web.db import ReadUnavailable
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


def artwork_features(artwork: Artwork) -> dict[str, Any]:
    """What the policy knows of a variant besides its id: the editor's tags and the image
    features computed at upload."""
    return {"tag": list(artwork.tags), **artwork.features}


def choose_artwork(runtime: Runtime, page: PageRequest) -> list[dict[str, Any]]:
    """One decision object per requested title, in the request's order; a title that cannot
    be served gets an `error` of its own and does not fail the others. The decisions are
    durable (group-committed) before this returns; a decision is answered if and only if it
    was logged (`bandit.decisions.DecisionService`)."""

    def images(decisions: list[DecisionRecord]) -> dict[str, dict[str, Any] | None]:
        # Read before the decisions are logged: once they are, nothing may fail.
        return runtime.catalog.image(
            runtime.engine, [d.chosen_id for d in decisions], page.rendition, page.format
        )

    try:
        decided = runtime.decisions.decide(
            page.titles, page.context, user=page.user, deferred=page.deferred, prepare=images
        )
    except (CandidatesUnavailable, ReadUnavailable) as error:
        return _fallback(runtime, page, ApiError(503, "catalog_unavailable", str(error)))
    except CatalogChanging as error:
        # The database answers; it is the catalog that moves: not an outage.
        raise ApiError(503, "catalog_changing", str(error)) from None
    except DecisionLogError as error:
        return _fallback(runtime, page, ApiError(503, "log_unavailable", str(error)))
    runtime.fallback.ended()
    return _answers(runtime, page, decided.slots, decided.decisions, decided.prepared)


def _fallback(runtime: Runtime, page: PageRequest, error: ApiError) -> list[dict[str, Any]]:
    """The page answered from the process's last catalog snapshot, because the database
    could not be read or the decisions could not be logged in time: each title's editor
    default (or first active variant), marked `fallback`, with no event id or probability.
    Nothing is logged, so nothing of it is learned or evaluated. With no title of the page
    in the snapshot there is nothing to show, and `error` is raised (503)."""
    known = runtime.catalog.last_known(page.titles)
    if not known:
        raise error
    runtime.fallback.started(str(error))
    shown = {t: slot.fallback_id for t, slot in known.items()}
    images = runtime.catalog.image(
        runtime.engine,
        [a for a in shown.values() if a is not None],
        page.rendition,
        page.format,
        cached_only=True,
    )
    out: list[dict[str, Any]] = []
    for title_id in page.titles:
        artwork_id = shown.get(title_id)
        if artwork_id is None:
            error = _missing(title_id, title_id in known)
            if title_id not in known:  # it may exist: only the snapshot does not hold it
                error["message"] += " in this process's catalog snapshot (the database is out)"
            out.append({"title": title_id, "error": error})
            continue
        out.append(
            {
                "title": title_id,
                "event_id": None,
                "artwork_id": artwork_id,
                "image": images[artwork_id],
                "placeholder": runtime.catalog.placeholder(artwork_id, page.rendition),
                "probability": None,
                "policy_version": None,
                "mode": "fallback",
            }
        )
    return out


def _missing(title_id: str, known: bool) -> dict[str, str]:
    if not known:
        return {"code": "unknown_title", "message": f"no title {title_id!r}"}
    return {"code": "no_artwork", "message": f"title {title_id!r} has no active artwork"}


def _answers(
    runtime: Runtime,
    page: PageRequest,
    catalog: dict[str, Slot],
    decisions: list[DecisionRecord],
    images: dict[str, dict[str, Any] | None],
) -> list[dict[str, Any]]:
    by_title = {d.slot: d for d in decisions}
    out = []
    for title_id in page.titles:
        decision = by_title.get(title_id)
        if decision is None:
            out.append({"title": title_id, "error": _missing(title_id, title_id in catalog)})
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
