"""Where the relay differs from jupyter-server-proxy on purpose: the one place where
jupyter-server-proxy's own tests are adapted to it.

    python proxy_differences.py SDIST_DIR OUT_DIR

copies the sdist's `tests/` (and pytest settings) to OUT_DIR and rewrites, line by line, the
expectations of `tests/test_proxies.py` that the relay meets otherwise, by the rules
below. Nothing else changes: every other line, test and fixture runs as written
(line numbers stay, so tracebacks point into the sdist's file). Each rule must
change as many lines as it says; if it does not, the sdist changed and this fails
loudly instead of running tests half adapted. The rewritten lines are printed.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    within: str  # the test function (a prefix of its name) whose lines it may change; "" all
    pattern: str  # on assertion lines
    replacement: str
    lines: int  # how many lines it must change


RULES = (
    Rule(
        "token",
        "The relay takes its own token off every request before it forwards it: neither "
        "the Jupyter server behind it nor an app on a port ever sees it. "
        "jupyter-server-proxy passes the client's query on as it is, so its tests expect "
        "`token=` in the request the app received, or in a redirect the app built from "
        "it; through the relay the expectation is the same request without it.",
        "",
        r'[?&]token="',  # the end of an expected request line: the query's end there
        ' "',
        12,
    ),
    Rule(
        "token",
        "(the same) Where the expected request line is a parameter of the test, it is "
        "adapted where it is compared, so that the test ids stay those of the sdist.",
        "test_server_proxy_mappath_",
        r'"GET " \+ expected\)',
        '"GET " + expected.replace("?token=", " ").replace("&token=", " "))',
        2,
    ),
    Rule(
        "token",
        "(the same) A redirect the app built from a request without the token has none.",
        "",
        r"\?token=\{TOKEN\}",
        "",
        4,
    ),
    Rule(
        "token",
        "(the same) The reference case of the `#` test sends the token as its only query: "
        "the app receives none.",
        "test_server_proxy_hash_sign_encoding",
        r'f"GET /\{path\} "',
        '"GET / "',
        1,
    ),
    Rule(
        "wrong token",
        "A request with a wrong token is refused with 403 and a message that says so: the "
        "relay has no login page (Jupyter redirects such a request to its own with 302).",
        "test_server_proxy_hash_sign_encoding",
        r"r\.code == 302",
        "r.code == 403",
        1,
    ),
    Rule(
        "wrong token",
        "(the same) Its message.",
        "test_server_proxy_hash_sign_encoding",
        r'^(\s*assert )s == ""',
        r'\1"token" in s',
        1,
    ),
    Rule(
        "invalid host",
        "`/proxy/<invalid>:<port>/` is not an address of the relay's port proxy: 404, "
        "with a message naming the address forms (jupyter-server-proxy: 403 'Host ... is "
        "not allowed').",
        "test_server_proxy_host_invalid",
        r"r\.code == 403",
        "r.code == 404",
        1,
    ),
    Rule(
        "invalid host",
        "(the same) Its message.",
        "test_server_proxy_host_invalid",
        r'"Host &#39;&lt;invalid&gt;&#39; is not allowed\." in s',
        '"is not a port-proxy address" in s',
        1,
    ),
)

# Tests that cannot apply to the relay, with why: deselected in the relay pass
# (proxy_plugin), and named as such in the comparison (compare.py).
NOT_APPLICABLE = {
    "test_server_proxy_port_non_service_rewrite_response": (
        "tests a hook of jupyter-server-proxy's own configuration "
        "(ServerProxy.non_service_rewrite_response), which runs inside that server; the "
        "relay answers /proxy/<port>/ itself"
    ),
}

CHECKED = re.compile(r"^\s*assert\b")
TEST = re.compile(r"^(?:async )?def (test_\w+)")


def rewrite(source: str) -> tuple[str, list[str]]:
    """The adapted test module, and a line for each change made."""
    counts = dict.fromkeys(range(len(RULES)), 0)
    changes: list[str] = []
    out: list[str] = []
    test = ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        started = TEST.match(line)
        if started:
            test = started.group(1)
        elif line.strip() and not line[0].isspace() and not line.startswith(("@", ")")):
            test = ""
        new = line
        if CHECKED.match(line):
            for index, rule in enumerate(RULES):
                if rule.within and not test.startswith(rule.within):
                    continue
                changed = re.sub(rule.pattern, rule.replacement, new)
                if changed != new:
                    counts[index] += 1
                    new = changed
        if new != line:
            changes.append(f"{number}: {line.strip()}  ->  {new.strip()}")
        out.append(new)
    wrong = [
        f"rule '{RULES[i].name}' ({RULES[i].pattern}) changed {n} lines, not {RULES[i].lines}"
        for i, n in counts.items()
        if n != RULES[i].lines
    ]
    if wrong:
        raise SystemExit("the sdist's tests changed; adapt tests/peers/proxy_differences.py:\n"
                         + "\n".join(wrong))  # fmt: skip
    return "".join(out), changes


def main(argv: list[str]) -> int:
    sdist, out = Path(argv[1]), Path(argv[2])
    if (out / "tests").exists():
        shutil.rmtree(out / "tests")
    shutil.copytree(sdist / "tests", out / "tests")
    shutil.copy(sdist / "pyproject.toml", out / "pyproject.toml")  # its pytest settings
    target = out / "tests" / "test_proxies.py"
    text, changes = rewrite(target.read_text(encoding="utf-8"))
    target.write_text(text, encoding="utf-8")
    print(f"{target}: {len(changes)} expectations adapted (tests/peers/proxy_differences.py)")
    for change in changes:
        print(f"    {change}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
