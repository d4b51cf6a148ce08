"""The held-session store (sqlite, shared by relays on one host) and the orphan rules."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from jupyter_relay.mixer import held, orphans
from jupyter_relay.mixer.orphans import Pending, Seen, Verdict

EG = "gateway+http://127.0.0.1:8888/"


def record(session_id: str, path: str = "a.ipynb", url: str = EG) -> held.Record:
    return {
        "id": session_id,
        "backend": "eg",
        "url": url,
        "path": path,
        "name": path,
        "type": "notebook",
        "kernel_id": f"k-{session_id}",
    }


def pending(kernel_id: str = "k1", *, change: bool = False, deadline: float = 100.0) -> Pending:
    return Pending(
        kernel_id=kernel_id,
        url=held.gateway_key(EG),
        backend="eg",
        session_id="s1",
        path="a.ipynb",
        name="a.ipynb",
        type="notebook",
        change=change,
        owner="host:1",
        deadline=deadline,
    )


def test_a_gateway_is_known_by_its_url_however_it_is_spelled() -> None:
    same = {
        "gateway+http://127.0.0.1:8888/",
        "gateway+http://127.0.0.1:8888",
        "gateway+HTTP://127.0.0.1:8888/",
        "gateway+http://127.0.0.1:8888/?token=x",
    }
    assert {held.gateway_key(u) for u in same} == {"gateway+http://127.0.0.1:8888"}
    assert held.gateway_key("gateway+http://eg:80/base/") == held.gateway_key(
        "gateway+http://EG/base"
    )
    assert held.gateway_key("gateway+http://127.0.0.1:8889/") != held.gateway_key(EG)


def test_records_are_shared_by_stores_on_one_file_and_matched_by_url(tmp_path: Path) -> None:
    one, two = held.Store(tmp_path), held.Store(tmp_path)
    one.put(record("s1"))
    one.put({**record("s2"), "backend": "gw"})  # another relay's name for the same gateway
    two.put(record("s3", url="gateway+http://127.0.0.1:9999/"))
    assert {r["id"] for r in two.of("gateway+http://127.0.0.1:8888")} == {"s1", "s2"}
    assert two.get("s1") == {**record("s1"), "url": held.gateway_key(EG)}
    two.drop("s1")
    assert one.get("s1") is None
    assert one.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_relays_json_file_is_imported_once(tmp_path: Path) -> None:
    old = tmp_path / held.JSON_NAME
    old.write_text(json.dumps({"sessions": [record("s1"), record("s2", "b.ipynb")]}))
    store = held.Store(tmp_path)
    assert {r["id"] for r in store.of(EG)} == {"s1", "s2"}
    assert not old.exists() and (tmp_path / f"{held.JSON_NAME}.imported").exists()
    store.drop("s1")  # a session ended since is not brought back by the next relay
    assert {r["id"] for r in held.Store(tmp_path).of(EG)} == {"s2"}


def test_files_that_are_not_ours_are_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for n, junk in enumerate((b"{not json", b"[" * 100_000, b"\xff\xfe")):
        state = tmp_path / f"json-{n}"
        state.mkdir()
        (state / held.JSON_NAME).write_bytes(junk)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jupyter_relay.mixer"):
            store = held.Store(state)
        assert store.of(EG) == []
        assert str(state / held.JSON_NAME) in caplog.text, caplog.text
        assert (state / f"{held.JSON_NAME}.corrupt").read_bytes() == junk
    state = tmp_path / "db"
    state.mkdir()
    (state / held.DB_NAME).write_bytes(b"not a database, not at all" * 100)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jupyter_relay.mixer"):
        store = held.Store(state)
    assert str(state / held.DB_NAME) in caplog.text, caplog.text
    assert (state / f"{held.DB_NAME}.corrupt").exists()
    store.put(record("x"))
    assert held.Store(state).get("x") is not None


def test_only_one_store_takes_a_pending_record(tmp_path: Path) -> None:
    one, two = held.Store(tmp_path), held.Store(tmp_path)
    one.add_pending(pending())
    assert two.all_pending() == [pending()]
    assert two.settle("k1", record("s1")) is True
    assert one.settle("k1", None) is False
    assert one.all_pending() == []
    assert one.get("s1") is not None


def test_owner_alive_reads_this_hosts_processes() -> None:
    host = socket.gethostname()
    assert held.owner_alive(held.this_owner())
    assert held.owner_alive(f"{host}:{os.getpid()}")
    assert not held.owner_alive(f"{host}:{2**22 + 12345}")  # above Linux's pid_max
    assert held.owner_alive("another-host:1")  # only its deadline ends it


def seen(**kw: object) -> Seen:
    values: dict[str, object] = {
        "now": 200.0,
        "owner_alive": False,
        "kernel": {"id": "k1", "execution_state": "idle"},
        "session_kernel": None,
        "path_taken": False,
    }
    values.update(kw)
    return Seen(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("p", "s", "expected"),
    [
        (pending(), seen(owner_alive=True, now=50.0), Verdict.WAIT),
        (pending(), seen(owner_alive=True, now=150.0), Verdict.REBIND),  # past its deadline
        (pending(), seen(), Verdict.REBIND),
        (pending(), seen(kernel=None, now=50.0), Verdict.WAIT),  # may still be launching
        (pending(), seen(kernel=None), Verdict.FORGET),
        (pending(), seen(session_kernel="k1"), Verdict.FORGET),
        (pending(change=True), seen(session_kernel="k0"), Verdict.SHUT_DOWN),
        (pending(change=True), seen(), Verdict.SHUT_DOWN),
        (pending(), seen(path_taken=True), Verdict.SHUT_DOWN),
        (pending(), seen(session_kernel="k0"), Verdict.SHUT_DOWN),
        (pending(), seen(kernel={"id": "k1", "execution_state": "dead"}), Verdict.SHUT_DOWN),
    ],
)
def test_what_becomes_of_a_kernel_whose_session_was_never_saved(
    p: Pending, s: Seen, expected: Verdict
) -> None:
    verdict, why = orphans.verdict(p, s)
    assert verdict is expected, why
    assert why


def test_a_pending_record_becomes_its_session() -> None:
    assert pending().record("gw") == {
        "id": "s1",
        "backend": "gw",
        "url": held.gateway_key(EG),
        "path": "a.ipynb",
        "name": "a.ipynb",
        "type": "notebook",
        "kernel_id": "k1",
    }
