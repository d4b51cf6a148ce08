"""The mixer's answers as aiohttp handlers: kernelspecs, kernels, sessions.

Each handler checks the method and the id's syntax (nothing malformed reaches
a backend), reads a bounded JSON body, calls the `Mixer`, and answers in
Jupyter's shape. Their paths are rows of `routes.TABLE`; kernel websockets
and kernelspec files are not here: the engine forwards those to the backend
that owns them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..responses import error_response
from .api import read_bounded
from .core import Passed, Result
from .names import ID_RE

if TYPE_CHECKING:
    from .core import Mixer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_LIMIT = 1024 * 1024
SPEC_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
NO_STORE = {"Cache-Control": "no-store"}


def answer(result: Result) -> web.Response:
    headers = dict(NO_STORE)
    if result.location:
        headers["Location"] = result.location
    if result.body is None:
        return web.Response(status=result.status, headers=headers)
    return web.json_response(result.body, status=result.status, headers=headers)


def not_allowed(request: web.Request, allowed: tuple[str, ...]) -> web.Response:
    return error_response(
        request,
        405,
        f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
        "Method Not Allowed",
        headers={"Allow": ", ".join(allowed)},
    )


def bad_id(request: web.Request, what: str, value: str) -> web.Response:
    return error_response(request, 404, f"no {what} {value!r}: not a Jupyter id", "Not Found")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (None if empty); 400 if too large or not JSON."""
    raw = await read_bounded(request.content, BODY_LIMIT)
    if len(raw) > BODY_LIMIT:
        raise BadBody(
            f"the request body is larger than {BODY_LIMIT} bytes, more than a Jupyter "
            "kernel or session request needs; send a smaller one",
            413,
        )
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise BadBody("the request body is JSON nested too deeply to read") from exc
    except ValueError as exc:
        raise BadBody(f"the request body is not JSON: {exc}") from exc


class BadBody(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def handlers(mixer: Mixer) -> dict[str, Handler]:
    """The handlers by the names `routes.TABLE` gives them."""

    def guarded(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Passed as passed:
                return answer(passed.result)
            except BadBody as exc:
                reason = "Request Entity Too Large" if exc.status == 413 else "Bad Request"
                return error_response(request, exc.status, str(exc), reason)

        return run

    async def specs(request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return not_allowed(request, ("GET",))
        return answer(await mixer.list_specs())

    async def spec(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.method != "GET":
            return not_allowed(request, ("GET",))
        if not SPEC_NAME_RE.fullmatch(name):
            return error_response(request, 404, f"no kernelspec {name!r}", "Not Found")
        return answer(await mixer.get_spec(name))

    async def kernels(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return answer(await mixer.list_kernels())
        if request.method == "POST":
            return answer(await mixer.start_kernel(await read_json(request)))
        return not_allowed(request, ("GET", "POST"))

    async def kernel(request: web.Request) -> web.StreamResponse:
        kernel_id = request.match_info["kernel_id"]
        if request.method not in ("GET", "DELETE"):
            return not_allowed(request, ("GET", "DELETE"))
        if not ID_RE.fullmatch(kernel_id):
            return bad_id(request, "kernel", kernel_id)
        if request.method == "GET":
            return answer(await mixer.kernel(kernel_id))
        return answer(await mixer.delete_kernel(kernel_id))

    async def kernel_action(request: web.Request) -> web.StreamResponse:
        kernel_id, action = request.match_info["kernel_id"], request.match_info["action"]
        if not ID_RE.fullmatch(kernel_id):
            return bad_id(request, "kernel", kernel_id)
        if request.method != "POST":
            return not_allowed(request, ("POST",))
        await read_json(request)
        return answer(await mixer.kernel(kernel_id, action))

    async def sessions(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return answer(await mixer.list_sessions())
        if request.method == "POST":
            return answer(await mixer.create_session(await read_json(request)))
        return not_allowed(request, ("GET", "POST"))

    async def session(request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        if request.method not in ("GET", "PATCH", "DELETE"):
            return not_allowed(request, ("GET", "PATCH", "DELETE"))
        if not ID_RE.fullmatch(session_id):
            return bad_id(request, "session", session_id)
        if request.method == "GET":
            return answer(await mixer.get_session(session_id))
        if request.method == "PATCH":
            return answer(await mixer.patch_session(session_id, await read_json(request)))
        return answer(await mixer.delete_session(session_id))

    return {
        "specs": guarded(specs),
        "spec": guarded(spec),
        "kernels": guarded(kernels),
        "kernel": guarded(kernel),
        "kernel_action": guarded(kernel_action),
        "sessions": guarded(sessions),
        "session": guarded(session),
    }
