"""Compare junit-xml results of a peer's tests: alone (the baseline) and through the relay.

    python compare.py [--check] RESULTS_DIR BASELINE PASS...
    python compare.py --failing RESULTS_DIR BASELINE PASS

prints the counts of each pass, then every test that passes alone but not in a relay
pass, with the first line of its failure and the passes it fails in.

A test that failed in PASS but passed when run again (`PASS-rerun.xml`, which
`scripts/peers --check` writes for exactly those tests) is listed as flaky, and does
not count as a failure. Tests of `proxy_differences.NOT_APPLICABLE`, left out of the
relay passes, are listed with the reason.

With --check it exits 1 when any test that passes alone fails in a relay pass (or a
pass has no results), and ends with one line: `peers: N passed, M failed`.
With --failing it prints the node ids of the tests that pass alone but not in PASS,
one a line (what `scripts/peers` runs again).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from proxy_differences import NOT_APPLICABLE  # type: ignore[import-not-found]

Outcome = tuple[str, str]  # (passed|failed|error|skipped, first line of the message)


def read(path: Path) -> dict[str, Outcome]:
    """Each test's outcome, by node id (`tests/x/test_api.py::test_name[param]`)."""
    results: dict[str, Outcome] = {}
    for case in ET.parse(path).iter("testcase"):  # noqa: S314 (our own pytest wrote it)
        module = case.get("classname", "").replace(".", "/")
        test_id = f"{module}.py::{case.get('name', '')}"
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


def _function(test_id: str) -> str:
    return test_id.split("::", 1)[1].split("[", 1)[0]


def worse_in(base: dict[str, Outcome], results: dict[str, Outcome]) -> list[str]:
    """Tests that pass alone but not here (those not applicable left aside)."""
    return sorted(
        t
        for t, (o, _) in base.items()
        if o == "passed"
        and results.get(t, ("missing", ""))[0] != "passed"
        and not (t not in results and _function(t) in NOT_APPLICABLE)
    )


def main(argv: list[str]) -> int:
    check = "--check" in argv
    failing = "--failing" in argv
    argv = [a for a in argv if a not in ("--check", "--failing")]
    directory, baseline, names = Path(argv[1]), argv[2], argv[3:]
    if not (directory / f"{baseline}.xml").exists():
        print(f"no results of the pass {baseline}", file=sys.stderr)
        return 2
    base = read(directory / f"{baseline}.xml")
    passes = {n: read(directory / f"{n}.xml") for n in names if (directory / f"{n}.xml").exists()}
    if failing:
        for name in passes:
            for test_id in worse_in(base, passes[name]):
                print(test_id)
        return 0
    if check and len(passes) < len(names):
        missing = ", ".join(n for n in names if n not in passes)
        print(f"no results of the passes {missing}", file=sys.stderr)
        return 2
    print(f"{'pass':<16}{'tests':>7}{'passed':>8}{'failed':>8}{'error':>7}{'skipped':>9}")
    for name, results in {baseline: base, **passes}.items():
        counts = {
            k: sum(1 for o, _ in results.values() if o == k)
            for k in ("passed", "failed", "error", "skipped")
        }
        print(
            f"{name:<16}{len(results):>7}{counts['passed']:>8}{counts['failed']:>8}"
            f"{counts['error']:>7}{counts['skipped']:>9}"
        )
    failures: dict[str, list[str]] = {}
    flaky: dict[str, list[str]] = {}
    for name, results in passes.items():
        rerun_file = directory / f"{name}-rerun.xml"
        rerun = read(rerun_file) if rerun_file.exists() else {}
        for test_id in worse_in(base, results):
            passed_again = rerun.get(test_id, ("missing", ""))[0] == "passed"
            (flaky if passed_again else failures).setdefault(test_id, []).append(name)
    left_out = sorted({_function(t) for t in base} & NOT_APPLICABLE.keys())
    if left_out:
        print(f"\nnot applicable to a proxy, left out of the relay passes ({len(left_out)}):")
        for function in left_out:
            print(f"    {function}: {NOT_APPLICABLE[function]}")
    if flaky:
        print(f"\n{len(flaky)} tests failed once through the relay and passed when run again:")
        for test_id, where in sorted(flaky.items()):
            outcome, message = passes[where[0]][test_id]
            print(f"{test_id}\n    [{', '.join(where)}] {outcome}: {message}")
    print(f"\n{len(failures)} tests pass alone but not in every relay pass:")
    for test_id, where in sorted(failures.items()):
        by_message: dict[str, list[str]] = {}
        for n in where:
            outcome, message = passes[n].get(test_id, ("missing", ""))
            by_message.setdefault(f"{outcome}: {message}", []).append(n)
        print(test_id)
        for message, names_ in by_message.items():
            print(f"    [{', '.join(names_)}] {message}")
    if not check:
        return 0
    relay_results = [o for results in passes.values() for o, _ in results.values()]
    passed = sum(1 for o in relay_results if o == "passed")
    print(f"peers ({baseline}): {passed} passed, {len(failures)} failed, {len(flaky)} flaky")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
