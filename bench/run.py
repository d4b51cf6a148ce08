"""One benchmark run: start everything once, measure every scenario on every path, report.

Usage: python -m bench [--quick] [--only SCENARIO,...] [--paths PATH,...] [--out DIR]

Writes `<out>/<date>.json` (every figure, the ratios, the targets, the
machine), `<out>/<date>.png` (a bar chart per figure) and `<out>/<date>.md`
(the README's table); a `--quick` run writes `<date>-quick.*`. Exits 1 if a
figure of `direct` or of the relay is missing; a peer that cannot do a
scenario (jupyter-server-proxy buffers whole bodies) is reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import chart, machine, report, targets
from .backends import start_backends
from .paths import ALL_PATHS, DIRECT, LABELS, RELAY, start_paths
from .procs import Processes, base_env, raise_open_files_limit
from .scenarios import NAMES, RUN_ORDER, all_scenarios
from .scenarios.base import Context, PartialResult, Scenario
from .settings import settings

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark jupyter-relay against direct access and its peers.",
        epilog="paths: "
        + ", ".join(f"{p} ({LABELS[p]})" for p in ALL_PATHS if p != LABELS[p])
        + "; results: DIR/<date>.json, .png and .md (<date>-quick.* with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (about two and a half minutes in all)"
    )
    parser.add_argument(
        "--only",
        type=lambda t: _names(t, NAMES, "scenario"),
        default=list(NAMES),
        metavar="SCENARIO[,...]",
        help=f"scenarios to run (default all: {', '.join(NAMES)})",
    )
    parser.add_argument(
        "--paths",
        type=lambda t: _names(t, ALL_PATHS, "path"),
        default=list(ALL_PATHS),
        metavar="PATH[,...]",
        help=f"paths to measure (default all: {', '.join(ALL_PATHS)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="results directory (default bench/results)",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the servers' logs and state"
    )
    return parser.parse_args(argv)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _measure_scenario(
    ctx: Context, scenario: Scenario, paths: Sequence[str]
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    figures: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    async with scenario.prepared(ctx):
        for name in scenario.paths:
            if name not in paths:
                continue
            started = time.monotonic()
            try:
                figures[name] = await asyncio.wait_for(
                    scenario.measure(ctx, scenario.path(ctx, name)), scenario.timeout(ctx)
                )
            except PartialResult as exc:
                figures[name] = exc.metrics
                errors[name] = str(exc)
            except TimeoutError:
                errors[name] = f"did not finish in {scenario.timeout(ctx):.0f} s"
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
            shown = ", ".join(
                f"{m.key}={report.number(figures.get(name, {}).get(m.key))}"
                for m in scenario.metrics_for(name)
                if m.headline
            )
            took = time.monotonic() - started
            _say(f"    {LABELS[name]:24} {took:5.1f} s  {shown}")
            if name in errors:
                _say(f"    {'':24} FAILED: {errors[name]}")
    return figures, errors


async def measure(
    ctx: Context, scenarios: Sequence[Scenario], paths: Sequence[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {"scenarios": {}, "errors": {}, "scenario_info": {}}
    for scenario in scenarios:
        _say(f"==> {scenario.title}")
        started = time.monotonic()
        try:
            figures, errors = await _measure_scenario(ctx, scenario, paths)
        except Exception as exc:  # its setup failed: every path is without figures
            _say(f"    FAILED: {type(exc).__name__}: {exc}")
            figures = {}
            errors = {p: f"setup: {type(exc).__name__}: {exc}" for p in scenario.paths}
        results["scenarios"][scenario.name] = figures
        if errors:
            results["errors"][scenario.name] = errors
        results["scenario_info"][scenario.name] = {
            "title": scenario.title,
            "seconds": round(time.monotonic() - started, 1),
            "paths": [p for p in scenario.paths if p in paths],
            "metrics": [dataclasses.asdict(m) for m in scenario.metrics],
        }
    return results


def _missing_subject(results: dict[str, Any]) -> list[str]:
    """Figures of `direct` or the relay that a run should have and does not."""
    missing = []
    for name, info in results["scenario_info"].items():
        for path in (DIRECT, RELAY):
            if path not in info["paths"]:
                continue
            have = results["scenarios"][name].get(path, {})
            for metric in info["metrics"]:
                if not (metric["proxy_only"] and path == DIRECT) and metric["key"] not in have:
                    missing.append(f"{name}/{path}/{metric['key']}")
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = settings(args.quick)
    began = time.monotonic()
    date = datetime.datetime.now().astimezone()
    stem = date.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    scenarios = sorted(
        (s for s in all_scenarios() if s.name in args.only), key=lambda s: RUN_ORDER.index(s.name)
    )
    raise_open_files_limit()
    describe = machine.describe(args.quick)
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    token = secrets.token_hex(24)
    procs = Processes(workdir, base_env())
    _say(f"==> starting the backends and the paths (work directory {workdir})")
    try:
        backends = start_backends(procs, token, chosen.download_bytes)
        paths = start_paths(procs, backends)
        _say(f"    started in {time.monotonic() - began:.1f} s")
        ctx = Context(chosen, token, backends, paths, workdir)
        results = asyncio.run(measure(ctx, scenarios, args.paths))
    finally:
        procs.stop_all()
        if args.keep_workdir:
            _say(f"    logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    for key in ("scenarios", "errors", "scenario_info"):  # the order
        results[key] = {n: results[key][n] for n in NAMES if n in results[key]}
    figures = results["scenarios"]
    results = {
        "date": date.isoformat(timespec="seconds"),
        "command": shlex.join(["scripts/bench", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "duration_s": round(time.monotonic() - began, 1),
        "machine": describe,
        "settings": dataclasses.asdict(chosen),
        "paths": {p: LABELS[p] for p in args.paths},
        **results,
        "ratios": targets.ratios(figures),
        "targets": targets.evaluate(figures),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (args.out / f"{stem}.md").write_text(report.markdown(results))
    png_path = args.out / f"{stem}.png"
    chart.draw(results, png_path)
    print(report.table(results))
    print(f"\nwrote {json_path}, {png_path} and {stem}.md in {results['duration_s']:.0f} s")
    missing = _missing_subject(results)
    if missing:
        _say(f"missing figures of direct or the relay: {', '.join(missing)}")
        return 1
    return 0
