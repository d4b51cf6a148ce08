"""The results as text: the terminal table, and the Markdown table for the README."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .paths import ALL_PATHS, CHP, DIRECT, LABELS, RELAY, SSH_L

SHORT = {
    "direct": "direct",
    "relay": "relay",
    "portproxy": "r/proxy",
    "chp": "chp",
    "jsp": "jsp",
    "nginx": "nginx",
    "ssh_l": "ssh -L",
}
# The relay's figures over these paths' get a column of their own (when in the run).
RATIO_COLUMNS = (DIRECT, CHP, SSH_L)


def columns(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The paths some scenario of `results` measured, and the relay's ratio columns among them."""
    measured = {p for info in results["scenario_info"].values() for p in info["paths"]}
    paths = [p for p in ALL_PATHS if p in measured]
    return paths, [p for p in RATIO_COLUMNS if p in measured and RELAY in measured]


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None:
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if abs(value) >= 0.01 else f"{value:.2g}x"


def target_value(value: float | None) -> str:
    """A target's figure, precise enough that a value just under its bound does not look equal."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return number(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _cell(results: dict[str, Any], scenario: str, path: str, metric: dict[str, Any]) -> str:
    figures = results["scenarios"].get(scenario, {})
    if path not in results["scenario_info"][scenario]["paths"]:
        return ""
    if metric["proxy_only"] and path == DIRECT:
        return ""
    value = figures.get(path, {}).get(metric["key"])
    if value is None and path in results["errors"].get(scenario, {}):
        return "failed"
    return number(value)


def _ratio_cell(results: dict[str, Any], scenario: str, metric: str, other: str) -> str:
    value = results["ratios"].get(scenario, {}).get(metric, {}).get(f"relay/{other}")
    return ratio(value)


def _target_mark(met: bool | None) -> str:
    return {True: "MET   ", False: "MISSED", None: "NO FIGURE"}[met]


def table(results: dict[str, Any]) -> str:
    """Every figure: a block per scenario, a column per path, then the relay's ratios."""
    width = 44
    paths, ratio_columns = columns(results)
    head = f"{'':{width}}" + "".join(f"{SHORT[p]:>10}" for p in paths)
    head += "".join(f"{'relay/' + SHORT[o]:>14}" for o in ratio_columns)
    lines = [head]
    for name, described in results["scenario_info"].items():
        if name not in results["scenarios"]:
            continue
        lines.append(f"{described['title']} ({described['seconds']:.0f} s)")
        for metric in described["metrics"]:
            label = f"  {metric['label']} ({metric['unit']})"
            row = f"{label[:width]:{width}}"
            row += "".join(f"{_cell(results, name, p, metric):>10}" for p in paths)
            row += "".join(
                f"{_ratio_cell(results, name, metric['key'], o):>14}" for o in ratio_columns
            )
            lines.append(row)
    lines.append("")
    lines.append("Targets (the relay's figures from this run)")
    for target in results["targets"]:
        shown = target_value(target["value"])
        lines.append(
            f"  {_target_mark(target['met']):9} {target['description']:68} "
            f"{shown:>8} (target {target['target']})"
        )
    errors = [
        f"  {scenario} / {LABELS[path]}: {message}"
        for scenario, by_path in results["errors"].items()
        for path, message in by_path.items()
    ]
    if errors:
        lines += ["", "Failures", *errors]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The headline figures and the targets, as Markdown for the README."""
    paths, ratio_columns = columns(results)
    heads = [LABELS[p] for p in paths] + [f"relay/{SHORT[o]}" for o in ratio_columns]
    lines = [
        f"| scenario | figure | {' | '.join(heads)} |",
        "|---|---|" + "---:|" * len(heads),
    ]
    for name, described in results["scenario_info"].items():
        if name not in results["scenarios"]:
            continue
        for metric in described["metrics"]:
            if not metric["headline"]:
                continue
            cells = [_cell(results, name, p, metric) for p in paths]
            ratios = [_ratio_cell(results, name, metric["key"], o) for o in ratio_columns]
            lines.append(
                f"| {described['title']} | {metric['label']} ({metric['unit']}) | "
                + " | ".join(cells + ratios)
                + " |"
            )
    lines += ["", "| target | relay | met |", "|---|---:|---|"]
    for target in results["targets"]:
        value = target_value(target["value"])
        met = {True: "yes", False: "**no**", None: "no figure"}[target["met"]]
        lines.append(f"| {target['description']} | {value} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report RESULTS.json`: print the table, write RESULTS.md again."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    source = Path(args[0])
    results = json.loads(source.read_text())
    source.with_suffix(".md").write_text(markdown(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
