"""Learning quality: run the default simulated world through keyart's real loop with several
VW argument sets, print how each does against the baselines on the same traffic, and write the
regret curve of the best one.

    python benchmarks/quality.py [--decisions 100000] [--png docs/regret.png] [--args "..."]...

Each arg set gets its own temporary SQLite database. The winner is the arg set with the
highest expected click-through over the last 20% of the run; the acceptance bar is keyart at
>= 90% of the oracle and above every other baseline there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bandit.simulator import SimulationConfig, format_table, plot_regret, simulate
from bandit.world import load_world
from web.db import make_engine, make_sessionmaker, upgrade

ARG_SETS = (
    "--cb_explore_adf --epsilon 0.1 -q ua -q ta",
    "--cb_explore_adf --epsilon 0.05 -q ua -q ta",
    "--cb_explore_adf --epsilon 0.02 -q ua -q ta",
    "--cb_explore_adf --epsilon 0.05 --cb_type ips -q ua -q ta",
    "--cb_explore_adf --epsilon 0.05 --cb_type dr -q ua -q ta",
    "--cb_explore_adf --squarecb -q ua -q ta",
    "--cb_explore_adf --epsilon 0.02 -q ua -q ta -q ut",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--world", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=Path("docs/regret.png"))
    parser.add_argument("--args", action="append", default=None, help="VW args to compare")
    options = parser.parse_args()
    world = load_world(options.world)
    comparison = []
    best = None
    for vw_args in options.args or ARG_SETS:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{tmp}/simulate.db")
            upgrade(engine)
            started = time.perf_counter()
            result = simulate(
                world,
                make_sessionmaker(engine),
                SimulationConfig(decisions=options.decisions, vw_args=f"{vw_args} --quiet"),
            )
            engine.dispose()
        rows = {row["policy"]: row for row in result.summary()}
        others = max(
            rows[name]["expected_ctr_tail"] for name in rows if name not in ("keyart", "oracle")
        )
        keyart = rows["keyart"]
        comparison.append((vw_args, keyart, others, time.perf_counter() - started))
        print(
            f"{vw_args:<60} CTR tail {keyart['expected_ctr_tail']:.4f}  "
            f"vs oracle {keyart['vs_oracle']:.1%}  regret {keyart['cumulative_regret']:.0f}  "
            f"keyart loop {keyart['seconds']:.1f}s",
            flush=True,
        )
        if best is None or keyart["expected_ctr_tail"] > best[1]["expected_ctr_tail"]:
            best = (vw_args, keyart, result)
    assert best is not None
    vw_args, keyart, result = best
    print(f"\nVW argument sets over {options.decisions} decisions (expected CTR, last 20%):\n")
    print("| VW arguments | CTR, last 20% | vs oracle | cumulative regret | seconds |")
    print("|---|---:|---:|---:|---:|")
    for args, row, _, _ in comparison:
        print(
            f"| `{args}` | {row['expected_ctr_tail']:.4f} | {row['vs_oracle']:.1%} "
            f"| {row['cumulative_regret']:.0f} | {row['seconds']:.1f} |"
        )
    print(f"\nwinner: {vw_args}\n")
    print(format_table(result.summary()))
    rows = {row["policy"]: row for row in result.summary()}
    best_other = max(
        (row for name, row in rows.items() if name not in ("keyart", "oracle")),
        key=lambda row: row["expected_ctr_tail"],
    )
    print(
        f"\nkeyart / oracle = {keyart['vs_oracle']:.3f} (bar 0.90); keyart / best baseline "
        f"({best_other['policy']}) = "
        f"{keyart['expected_ctr_tail'] / best_other['expected_ctr_tail']:.3f} (bar > 1)"
    )
    options.png.parent.mkdir(parents=True, exist_ok=True)
    plot_regret(result, options.png)
    print(f"regret curve: {options.png}")


if __name__ == "__main__":
    main()
