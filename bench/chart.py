"""The PNG: one panel per headline figure, one bar per path, the relay's targets as lines.

A reader should see the ratios at a glance: every panel has the same colours
for the same paths, the relay in a colour of its own, the value on each bar,
the relay's ratios under the title, and each target of the issue as a dashed
line at the value the relay has to reach.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import StrMethodFormatter

from .paths import CHP, DIRECT, JSP, NGINX, PORTPROXY, RELAY, SSH_L
from .report import RATIO_COLUMNS, SHORT, number, ratio
from .targets import TARGETS

COLOURS = {
    DIRECT: "#9e9e9e",
    RELAY: "#e4572e",
    PORTPROXY: "#f4a261",
    CHP: "#4c78a8",
    JSP: "#54a24b",
    NGINX: "#8e6bb8",
    SSH_L: "#2a9d8f",
}
VERDICT_COLOURS = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}
COLUMNS = 3


def _panels(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    panels = []
    for name, info in results["scenario_info"].items():
        for metric in info["metrics"]:
            if metric["headline"]:
                panels.append((name, info, metric))
    return panels


@dataclass(frozen=True)
class TargetLine:
    """Where the relay's bar has to reach for one target, and whether it did."""

    y: float
    text: str
    met: bool | None


def _target_lines(results: dict[str, Any], scenario: str, metric: str) -> list[TargetLine]:
    figures = results["scenarios"].get(scenario, {})
    verdicts = {t["name"]: t["met"] for t in results["targets"]}
    lines = []
    for target in TARGETS:
        if target.scenario != scenario or target.metric != metric:
            continue
        sign = "≥" if target.at_least else "≤"
        met = verdicts.get(target.name)
        verdict = {True: "met", False: "MISSED", None: "no figure"}[met]
        if target.versus is None:
            text = f"target {sign} {target.bound:g}{target.unit}: {verdict}"
            lines.append(TargetLine(target.bound, text, met))
            continue
        base = figures.get(target.versus, {}).get(metric)
        if base is not None:
            text = f"target {sign} {target.bound:g}x {SHORT[target.versus]}: {verdict}"
            lines.append(TargetLine(base * target.bound, text, met))
    return lines


def _panel(
    ax: Axes, results: dict[str, Any], scenario: str, info: dict[str, Any], metric: dict[str, Any]
) -> None:
    figures: dict[str, dict[str, float]] = results["scenarios"].get(scenario, {})
    errors: dict[str, str] = results["errors"].get(scenario, {})
    paths = [p for p in info["paths"] if not (metric["proxy_only"] and p == DIRECT)]
    values = [figures.get(p, {}).get(metric["key"]) for p in paths]
    heights = [max(v, 0.0) if v is not None and math.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(
        [SHORT[p] for p in paths],
        heights,
        color=[COLOURS[p] for p in paths],
        edgecolor=["black" if p == RELAY else "none" for p in paths],
        linewidth=1.2,
    )
    lines = _target_lines(results, scenario, metric["key"])
    top = max([*heights, *(line.y for line in lines)]) or 1.0
    for bar, value, path in zip(bars, values, paths, strict=True):
        text = number(value) if value is not None else ("failed" if path in errors else "-")
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + top * 0.015,
            text,
            ha="center",
            va="bottom",
            fontsize=8,
            fontweight="bold" if path == RELAY else "normal",
        )
    for line in lines:
        ax.axhline(line.y, color=VERDICT_COLOURS[line.met], linestyle="--", linewidth=1.2)
    ax.set_ylim(0, top * 1.15)
    if top >= 1000:
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    better = "higher is better" if metric["higher_is_better"] else "lower is better"
    ax.set_title(f"{info['title']}\n{metric['label']} ({metric['unit']}), {better}", fontsize=9)
    ratios = results["ratios"].get(scenario, {}).get(metric["key"], {})
    shown = [f"{ratio(r)} {SHORT[o]}" for o in RATIO_COLUMNS if (r := ratios.get(f"relay/{o}"))]
    caption = ["relay = " + ", ".join(shown)] if shown else []
    caption += [line.text for line in lines]
    if caption:
        ax.set_xlabel("\n".join(caption), fontsize=8)
    ax.tick_params(axis="both", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def draw(results: dict[str, Any], out: Path) -> None:
    """Draw every headline figure of `results` into the PNG `out`."""
    panels = _panels(results)
    rows = max(1, math.ceil(len(panels) / COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(5 * COLUMNS, 3.6 * rows), squeeze=False)
    for ax, (scenario, info, metric) in zip(axes.flat, panels, strict=False):
        _panel(ax, results, scenario, info, metric)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    met = sum(1 for t in results["targets"] if t["met"])
    quick = ", --quick" if results["quick"] else ""
    described = results["machine"]
    fig.suptitle(
        f"jupyter-relay benchmark, {results['date'][:16]}{quick}: relay targets met "
        f"{met}/{len(results['targets'])}\n"
        f"{described['cpu']}, {described['cores']} cores, {described['memory_gib']} GiB, "
        f"Linux {described['kernel']}; relay {described['relay']} ({described['relay_commit']})\n"
        "chp = configurable-http-proxy, jsp = jupyter-server-proxy; dashed lines: where the "
        "relay's bar has to be (green: met, red: missed)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.chart RESULTS.json`: draw RESULTS.png again from the figures."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.chart RESULTS.json", file=sys.stderr)
        return 2
    source = Path(args[0])
    draw(json.loads(source.read_text()), source.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
