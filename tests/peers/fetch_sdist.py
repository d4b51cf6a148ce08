"""Download a package's sdist from PyPI's simple index (PEP 691 JSON), checking its sha256.

    python fetch_sdist.py NAME VERSION DIR

For sdists pip cannot download: `pip download --no-binary` builds the package's
metadata first, which for jupyter-server-proxy needs its whole frontend toolchain.
Prints the path of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

INDEX = os.environ.get("PEERS_INDEX", "https://pypi.org/simple/")


def main(argv: list[str]) -> int:
    name, version, directory = argv[1], argv[2], Path(argv[3])
    project = re.sub(r"[-_.]+", "-", name).lower()
    page = urllib.parse.urljoin(INDEX, f"{project}/")
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        files = json.load(resp)["files"]
    stem = re.sub(r"[-_.]+", "_", name).lower()
    wanted = {f"{stem}-{version}.tar.gz", f"{project}-{version}.tar.gz"}
    sdists = [f for f in files if f["filename"].lower() in wanted]
    if not sdists:
        print(f"{name} {version}: no sdist on {page}", file=sys.stderr)
        return 1
    sdist = sdists[0]
    target = directory / sdist["filename"]
    if not target.exists():
        url = urllib.parse.urljoin(page, sdist["url"])  # an index may give it relative
        with urllib.request.urlopen(url, timeout=120) as resp:
            data = resp.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sdist["hashes"]["sha256"]:
            print(f"{sdist['filename']}: sha256 {digest} is not PyPI's", file=sys.stderr)
            return 1
        directory.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
