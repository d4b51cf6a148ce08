"""The benchmark still runs: `scripts/bench --quick` produces a complete results file.

No figure is judged here (no timed assertions in the test suite): only that
every scenario measured every path it applies to, with numbers, and drew its
chart. The figures themselves are for `scripts/bench` and the README.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_PATHS = {
    "small_http": {"direct", "relay", "portproxy", "chp", "jsp", "nginx"},
    "websocket": {"direct", "relay", "portproxy", "chp", "jsp", "nginx"},
    "kernel_execute": {"direct", "relay"},
    "large_transfer": {"direct", "relay", "portproxy", "chp", "jsp", "nginx"},
    "idle_websockets": {"relay", "chp", "jsp", "nginx"},
    "page_load": {"direct", "relay"},
    "ssh": {"direct", "ssh_l", "relay"},
}
TIMEOUT = 540  # the first run also installs the peers


@pytest.mark.timeout(TIMEOUT + 60)
def test_quick_benchmark_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    detail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, detail
    files = sorted(p.name for p in tmp_path.iterdir())
    jsons = [tmp_path / n for n in files if n.endswith("-quick.json")]
    assert len(jsons) == 1, f"{files}\n{detail}"
    results = json.loads(jsons[0].read_text())
    assert jsons[0].with_suffix(".png").stat().st_size > 10_000, detail
    assert jsons[0].with_suffix(".md").is_file(), detail

    assert results["quick"] is True
    for key in ("cpu", "cores", "memory_gib", "kernel", "python", "aiohttp", "relay"):
        assert results["machine"][key], f"machine description lacks {key}"
    assert results["errors"] == {}, results["errors"]
    assert set(results["scenarios"]) == set(EXPECTED_PATHS)
    for scenario, paths in EXPECTED_PATHS.items():
        figures = results["scenarios"][scenario]
        assert set(figures) == paths, f"{scenario}: {sorted(figures)}"
        metrics = results["scenario_info"][scenario]["metrics"]
        for path in paths:
            for metric in metrics:
                if metric["proxy_only"] and path == "direct":
                    continue
                value = figures[path].get(metric["key"])
                assert isinstance(value, (int, float)) and math.isfinite(value), (
                    f"{scenario}/{path}/{metric['key']} = {value!r}"
                )
    # Every target has a figure and a verdict (met or not is not judged here).
    assert len(results["targets"]) == 18
    for target in results["targets"]:
        assert isinstance(target["value"], float), target
        assert isinstance(target["met"], bool), target
    assert results["ratios"]["small_http"]["requests_per_s"]["relay/chp"] > 0
    assert results["ratios"]["ssh"]["v1_median_ms"]["relay/ssh_l"] > 0
