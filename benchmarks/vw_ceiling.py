"""A ceiling for learning quality: plain VW on a simulated world, learning online from every
decision, with none of keyart's loop (no floor, no apprentice phase, no batches, no log).
Not a way to serve: it says how much of a world's headroom VW itself finds from this many
decisions, so that what `benchmarks/quality.py` reports for keyart can be read against it.

    python benchmarks/vw_ceiling.py [--decisions 40000] [--args "--cb_explore_adf ..."]...
        [--world NAME_OR_PATH]...

Same traffic and click draws as the simulator (`bandit.simulator.make_traffic`), the same
features (`bandit.features`), share of the oracle's expected click rate over the last 20%.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import vowpal_wabbit_next as vw

from bandit.config import DEFAULT_VW_ARGS
from bandit.features import CONTEXT_NS, SLOT_NS, Candidate, context_text
from bandit.simulator import _context, make_traffic, request_click_rates
from bandit.world import World, load_world

WORLDS = ("default", "segments", "devices", "one_best", "noise_features", "drift")


def ceiling(world: World, decisions: int, vw_args: str) -> float:
    rng = np.random.default_rng(world.seed)
    traffic = make_traffic(world, decisions, rng)
    rates = request_click_rates(world, traffic)
    workspace = vw.Workspace([*vw_args.split(), "--quiet"])
    parser = vw.TextFormatParser(workspace)
    candidates = [[Candidate(v.id, dict(v.traits)) for v in t.variants] for t in world.titles]
    titles = [context_text({"title": t.id, "genre": list(t.genres)}) for t in world.titles]
    draw = random.Random(world.seed)
    expected = np.zeros(decisions)
    for i in range(decisions):
        t = traffic.title[i]
        shared = f"shared |{CONTEXT_NS} {context_text(_context(world, traffic, i))}"
        shared += f" |{SLOT_NS} {titles[t]}"
        lines = [c.line for c in candidates[t]]
        example = [parser.parse_line(shared), *(parser.parse_line(line) for line in lines)]
        distribution = dict(workspace.predict_one(example))
        chosen = draw.choices(list(distribution), weights=list(distribution.values()))[0]
        expected[i] = rates[i, chosen]
        cost = -1.0 if traffic.click_u[i] < rates[i, chosen] else 0.0
        lines[chosen] = f"0:{cost}:{distribution[chosen]} {lines[chosen]}"
        workspace.learn_one([parser.parse_line(shared), *(parser.parse_line(x) for x in lines)])
    tail = slice(decisions - decisions // 5, decisions)
    return float(expected[tail].mean() / np.nanmax(rates, axis=1)[tail].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument("--args", action="append", help="VW arguments (repeatable)")
    parser.add_argument("--world", action="append", help=f"one of {', '.join(WORLDS)} or a file")
    options = parser.parse_args()
    root = Path(__file__).resolve().parent.parent / "bandit" / "worlds"
    arg_sets = options.args or [
        DEFAULT_VW_ARGS.replace("--quiet ", ""),
        DEFAULT_VW_ARGS.replace("--squarecb", "--squarecb --coin").replace("--quiet ", ""),
    ]
    print("| world | VW arguments | share of the oracle, last 20% |")
    print("|---|---|---:|")
    for name in options.world or WORLDS:
        path = None if name == "default" else root / f"{name}.json" if name in WORLDS else name
        world = load_world(path)
        for args in arg_sets:
            share = ceiling(world, options.decisions, args)
            print(f"| {name} | `{args}` | {share:.1%} |", flush=True)


if __name__ == "__main__":
    main()
