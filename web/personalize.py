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
        raise ApiError(503, "catalog_unavailable", str(error)) from None
    except CatalogChanging as error:
        raise ApiError(503, "catalog_changing", str(error)) from None
    except DecisionLogError as error:
        raise ApiError(503, "log_unavailable", str(error)) from None
    return _answers(runtime, page, decided.slots, decided.decisions, decided.prepared)


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
