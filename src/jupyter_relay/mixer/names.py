"""The mixer's pure rules: kernelspec names, model rewriting, merging lists.

No I/O here. The primary's kernelspecs keep their names, so saved notebooks
keep opening with their kernel; another backend's spec `python3` is shown as
`gpu--python3`, "Python 3 (gpu)". Backend names (`[a-z][a-z0-9_]*`) cannot
contain `-`, so the first `--` splits a mixed name back unambiguously, and the
result is still a valid kernel name (`[a-z0-9._-]+`).

A session that moved to another backend keeps the id the client knows. The
backend gives the moved session an id of its own, so the client's id is
written into the session's `type` on that backend (`notebook` becomes
`notebook; jupyter-relay-session=<id>`) and read back from every listing: the
mapping lives with the session, not in the relay, and outlives a relay restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SEP = "--"
MOVED_MARK = "; jupyter-relay-session="
# jupyter_server's own patterns for kernel and session ids in URLs.
ID_RE = re.compile(r"\w+-\w+-\w+-\w+-\w+")
BACKEND_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")

Model = dict[str, Any]


@dataclass(frozen=True)
class Naming:
    """How kernelspec names of each backend appear to clients."""

    primary: str | None
    backends: tuple[str, ...]

    def mixed(self, backend: str, name: str) -> str:
        return name if backend == self.primary else f"{backend}{SEP}{name}"

    def parse(self, mixed: str) -> tuple[str, str] | None:
        """(backend, its own name) for a mixed name; None if no backend can have it."""
        head, sep, tail = mixed.partition(SEP)
        if sep and tail and head in self.backends:
            return head, tail
        if self.primary is None:
            return None
        return self.primary, mixed

    def unknown_prefix(self, mixed: str) -> str | None:
        """The backend a name asks for when no backend of that name exists."""
        head, sep, tail = mixed.partition(SEP)
        if sep and tail and BACKEND_NAME_RE.fullmatch(head) and head not in self.backends:
            return head
        return None

    def display(self, backend: str, display_name: str) -> str:
        return display_name if backend == self.primary else f"{display_name} ({backend})"


def spec_model(model: Mapping[str, Any], backend: str, naming: Naming) -> Model:
    """One kernelspec as clients see it: renamed, labelled, resources pointing at the relay."""
    out = dict(model)
    name = str(model.get("name", ""))
    mixed = naming.mixed(backend, name)
    out["name"] = mixed
    spec = model.get("spec")
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if isinstance(spec.get("display_name"), str):
            spec["display_name"] = naming.display(backend, spec["display_name"])
        out["spec"] = spec
    resources = model.get("resources")
    if isinstance(resources, Mapping):
        out["resources"] = {
            key: _resource_url(value, name, mixed) for key, value in resources.items()
        }
    return out


def _resource_url(value: Any, name: str, mixed: str) -> Any:
    """`/base/kernelspecs/python3/logo.png` on a backend -> `/kernelspecs/gpu--python3/logo.png`."""
    if not isinstance(value, str):
        return value
    marker = f"kernelspecs/{name}/"
    at = value.find(marker)
    if at < 0:
        return value
    return f"/kernelspecs/{mixed}/{value[at + len(marker) :]}"


def merge_specs(
    answers: Sequence[tuple[str, Mapping[str, Any]]],
    naming: Naming,
    owners: dict[str, tuple[str, str]] | None = None,
) -> Model:
    """The merged `/api/kernelspecs` answer from each backend's own.

    `default` is the primary's default; with no primary, the first backend's.
    A primary spec whose own name equals a mixed name wins over the other.
    `owners`, if given, is filled with (backend, its own name) for each listed
    name: the table routing must use, so a name goes where the list says.
    """
    specs: Model = {}
    default: str | None = None
    ordered = sorted(answers, key=lambda a: a[0] != naming.primary)
    for backend, body in ordered:
        found = body.get("kernelspecs")
        if not isinstance(found, Mapping):
            continue
        for model in found.values():
            if not isinstance(model, Mapping):
                continue
            mixed = spec_model(model, backend, naming)
            if mixed["name"] not in specs:
                specs[mixed["name"]] = mixed
                if owners is not None:
                    owners[mixed["name"]] = (backend, str(model.get("name", "")))
        own_default = body.get("default")
        if default is None and isinstance(own_default, str) and own_default:
            default = naming.mixed(backend, own_default)
    return {"default": default or "", "kernelspecs": specs}


def kernel_model(model: Mapping[str, Any], backend: str, naming: Naming) -> Model:
    out = dict(model)
    if isinstance(model.get("name"), str):
        out["name"] = naming.mixed(backend, model["name"])
    return out


def session_model(model: Mapping[str, Any], backend: str, naming: Naming) -> Model:
    """A backend's session as the client sees it: its client id, plain type, mixed kernel."""
    out = dict(model)
    kind, client_id = read_mark(model.get("type"))
    if client_id is not None:
        out["id"] = client_id
        out["type"] = kind
        if kind == "notebook":  # as Jupyter adds for notebooks; the mark hid the type
            out.setdefault("notebook", {"path": model.get("path"), "name": model.get("name")})
    kernel = model.get("kernel")
    if isinstance(kernel, Mapping):
        out["kernel"] = kernel_model(kernel, backend, naming)
    return out


def mark(kind: Any, client_id: str) -> str:
    """The `type` a moved session is stored with on its new backend."""
    plain, _ = read_mark(kind)
    return f"{plain or ''}{MOVED_MARK}{client_id}"


def read_mark(kind: Any) -> tuple[Any, str | None]:
    """(plain type, client id) from a stored `type`; the id is None if never moved."""
    if not isinstance(kind, str):
        return kind, None
    plain, sep, client_id = kind.rpartition(MOVED_MARK)
    if sep and ID_RE.fullmatch(client_id):
        return plain, client_id
    return kind, None


def merge_kernels(answers: Iterable[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[Model]:
    """Kernels of all backends, each id once (two names for one server list it twice)."""
    seen: set[str] = set()
    out: list[Model] = []
    for _backend, models in answers:
        for model in models:
            kernel_id = model.get("id")
            if isinstance(kernel_id, str) and kernel_id not in seen:
                seen.add(kernel_id)
                out.append(dict(model))
    return out


def merge_sessions(
    answers: Iterable[tuple[str, Sequence[Mapping[str, Any]]]],
) -> list[tuple[str, str, Model]]:
    """(backend, backend's session id, client model) for each client session id once.

    While a session moves, the old one and the moved one exist for an instant;
    the moved one (its backend id differs from the client's) is the newer.
    """
    chosen: dict[str, tuple[str, str, Model]] = {}
    for backend, models in answers:
        for model in models:
            own_id = model.get("id")
            if not isinstance(own_id, str):
                continue
            _, client_id = read_mark(model.get("type"))
            key = client_id or own_id
            entry = (backend, own_id, dict(model))
            if key not in chosen or client_id is not None:
                chosen[key] = entry
    return list(chosen.values())
