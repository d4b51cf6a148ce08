"""Compare junit-xml results of jupyter_server's tests: alone (baseline) and through the relay.

    python compare.py [--check] RESULTS_DIR baseline relay relay-root relay-nofast

prints the counts of each pass, then every test that passes alone but not in a
relay pass, with the first line of its failure, and in which passes it fails.
With --check it exits 1 when there is any such test (or a pass has no results),
and ends with one line: `peers: N passed, M failed`.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

Outcome = tuple[str, str]  # (passed|failed|error|skipped, first line of the message)


def read(path: Path) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    for case in ET.parse(path).iter("testcase"):  # noqa: S314 (our own pytest wrote it)
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome: Outcome = ("passed", "")
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip()
                first = message.splitlines()[0] if message else ""
                outcome = ("failed" if kind == "failure" else kind, first[:200])
                if kind != "skipped":
                    break
        # A test's teardown error is a second <testcase> entry with the same id.
        if test_id not in results or outcome[0] in ("failed", "error"):
            results[test_id] = outcome
    return results


def main(argv: list[str]) -> int:
    check = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    directory, names = Path(argv[1]), argv[2:]
    passes = {
        name: read(directory / f"{name}.xml")
        for name in names
        if (directory / f"{name}.xml").exists()
    }
    if "baseline" not in passes or (check and len(passes) < len(names)):
        missing = ", ".join(n for n in names if n not in passes)
        print(f"no results of the passes {missing}", file=sys.stderr)
        return 2
    print(f"{'pass':<14}{'tests':>7}{'passed':>8}{'failed':>8}{'error':>7}{'skipped':>9}")
    for name, results in passes.items():
        counts = {
            k: sum(1 for o, _ in results.values() if o == k)
            for k in ("passed", "failed", "error", "skipped")
        }
        print(
            f"{name:<14}{len(results):>7}{counts['passed']:>8}{counts['failed']:>8}"
            f"{counts['error']:>7}{counts['skipped']:>9}"
        )
    base = passes["baseline"]
    relay_passes = [n for n in passes if n != "baseline"]
    worse = sorted(
        t
        for t, (o, _) in base.items()
        if o == "passed"
        and any(passes[n].get(t, ("missing", ""))[0] != "passed" for n in relay_passes)
    )
    print(f"\n{len(worse)} tests pass alone but not in every relay pass:")
    for test_id in worse:
        failing = [
            n for n in relay_passes if passes[n].get(test_id, ("missing", ""))[0] != "passed"
        ]
        by_message: dict[str, list[str]] = {}
        for n in failing:
            outcome, message = passes[n].get(test_id, ("missing", ""))
            by_message.setdefault(f"{outcome}: {message}", []).append(n)
        print(test_id)
        for message, where in by_message.items():
            print(f"    [{', '.join(where)}] {message}")
    if not check:
        return 0
    relay_results = [o for n in relay_passes for o, _ in passes[n].values()]
    failed = sum(1 for o in relay_results if o in ("failed", "error"))
    print(f"peers: {sum(1 for o in relay_results if o == 'passed')} passed, {failed} failed")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
