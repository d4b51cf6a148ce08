"""The mixer's pure rules: names, model rewriting, merging, the moved-session mark."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_relay.mixer import names
from jupyter_relay.mixer.names import Naming

NAMING = Naming("lab", ("lab", "gpu", "my_eg"))
SID = "0b7f2d1e-3c4a-4f5b-8a6d-7e8f9a0b1c2d"


@pytest.mark.parametrize(
    ("backend", "name", "mixed"),
    [
        ("lab", "python3", "python3"),
        ("gpu", "python3", "gpu--python3"),
        ("my_eg", "julia-1.9", "my_eg--julia-1.9"),
        ("gpu", "conda-env-x--y", "gpu--conda-env-x--y"),
    ],
)
def test_names_round_trip(backend: str, name: str, mixed: str) -> None:
    assert NAMING.mixed(backend, name) == mixed
    assert NAMING.parse(mixed) == (backend, name)
    assert names.ID_RE.pattern  # the module's patterns compile


@pytest.mark.parametrize(
    ("mixed", "parsed", "unknown"),
    [
        ("python3", ("lab", "python3"), None),
        ("lab--python3", ("lab", "python3"), None),  # the primary by its prefixed name too
        ("nosuch--python3", ("lab", "nosuch--python3"), "nosuch"),  # primary asked, then 404
        ("Conda--x", ("lab", "Conda--x"), None),  # not a backend name: the primary's own
        ("gpu--", ("lab", "gpu--"), None),
    ],
)
def test_parse_and_unknown_prefix(mixed: str, parsed: tuple[str, str], unknown: str | None) -> None:
    assert NAMING.parse(mixed) == parsed
    assert NAMING.unknown_prefix(mixed) == unknown


def test_without_primary_every_name_is_prefixed() -> None:
    naming = Naming(None, ("eg",))
    assert naming.mixed("eg", "python3") == "eg--python3"
    assert naming.parse("eg--python3") == ("eg", "python3")
    assert naming.parse("python3") is None


def spec(name: str, display: str, base: str = "/") -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"display_name": display, "language": "python", "x_vendor": {"k": 1}},
        "resources": {
            "logo-64x64": f"{base}kernelspecs/{name}/logo-64x64.png",
            "kernel.js": f"{base}kernelspecs/{name}/kernel.js",
            "elsewhere": "https://cdn.example.org/logo.png",
        },
        "x_extra": True,
    }


def test_spec_model_renames_labels_and_rebases_resources_keeping_unknown_fields() -> None:
    out = names.spec_model(spec("python3", "Python 3", "/base/"), "gpu", NAMING)
    assert out["name"] == "gpu--python3"
    assert out["spec"]["display_name"] == "Python 3 (gpu)"
    assert out["spec"]["x_vendor"] == {"k": 1} and out["x_extra"] is True
    assert out["resources"] == {
        "logo-64x64": "/kernelspecs/gpu--python3/logo-64x64.png",
        "kernel.js": "/kernelspecs/gpu--python3/kernel.js",
        "elsewhere": "https://cdn.example.org/logo.png",
    }
    primary = names.spec_model(spec("python3", "Python 3", "/base/"), "lab", NAMING)
    assert primary["name"] == "python3" and primary["spec"]["display_name"] == "Python 3"
    assert primary["resources"]["logo-64x64"] == "/kernelspecs/python3/logo-64x64.png"


def test_merge_specs_primary_default_and_primary_wins_a_clash() -> None:
    answers = [
        ("gpu", {"default": "python3", "kernelspecs": {"python3": spec("python3", "P")}}),
        (
            "lab",
            {
                "default": "ir",
                "kernelspecs": {"ir": spec("ir", "R"), "gpu--python3": spec("gpu--python3", "own")},
            },
        ),
    ]
    merged = names.merge_specs(answers, NAMING)
    assert merged["default"] == "ir"
    assert set(merged["kernelspecs"]) == {"ir", "gpu--python3"}
    assert merged["kernelspecs"]["gpu--python3"]["spec"]["display_name"] == "own"
    only_gpu = names.merge_specs(answers[:1], Naming(None, ("gpu",)))
    assert only_gpu["default"] == "gpu--python3"


def test_kernel_model_keeps_every_field() -> None:
    model = {"id": "k", "name": "python3", "execution_state": "idle", "x": [1]}
    assert names.kernel_model(model, "gpu", NAMING) == {**model, "name": "gpu--python3"}


def test_mark_round_trip_and_session_model() -> None:
    stored = names.mark("notebook", SID)
    assert stored == f"notebook; jupyter-relay-session={SID}"
    assert names.read_mark(stored) == ("notebook", SID)
    assert names.mark(stored, SID) == stored  # marking twice does not stack
    assert names.read_mark("notebook") == ("notebook", None)
    assert names.read_mark("x; jupyter-relay-session=not-an-id") == (
        "x; jupyter-relay-session=not-an-id",
        None,
    )
    raw = {
        "id": "1a2b3c4d-0000-4000-8000-000000000000",
        "path": "n.ipynb",
        "name": "n.ipynb",
        "type": stored,
        "kernel": {"id": "k", "name": "python3"},
    }
    model = names.session_model(raw, "gpu", NAMING)
    assert model["id"] == SID and model["type"] == "notebook"
    assert model["notebook"] == {"path": "n.ipynb", "name": "n.ipynb"}
    assert model["kernel"]["name"] == "gpu--python3"


def test_merge_kernels_lists_each_id_once() -> None:
    merged = names.merge_kernels([("a", [{"id": "k1"}, {"id": "k2"}]), ("b", [{"id": "k2"}])])
    assert [k["id"] for k in merged] == ["k1", "k2"]


def test_merge_sessions_prefers_the_moved_record() -> None:
    old = {"id": SID, "type": "notebook"}
    moved = {"id": "99999999-0000-4000-8000-000000000000", "type": names.mark("notebook", SID)}
    for order in ([("a", [old]), ("b", [moved])], [("b", [moved]), ("a", [old])]):
        merged = names.merge_sessions(order)
        assert [(b, own) for b, own, _ in merged] == [("b", moved["id"])]
