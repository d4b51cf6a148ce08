"""What a kernel start on a gateway carries: the `env` Jupyter's GatewayClient sends.

GatewayClient (jupyter_server/gateway/managers.py) puts an `env` in each `POST
/api/kernels`: the variables of its environment whose names start with `KERNEL_`, plus
those listed in `JUPYTER_GATEWAY_ALLOWED_ENVS` (comma-separated; the older
`JUPYTER_GATEWAY_ENV_WHITELIST` too). Enterprise Gateway reads `KERNEL_USERNAME` from it
to authorize the start (it refuses `root` by default) and hands the `KERNEL_*` variables
to the kernel. The relay sends the same, for starts it makes for sessions as well, with
`KERNEL_USERNAME` defaulting to the relay's user. A client's own `env` is kept, and wins
name by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOWED_ENVS = "JUPYTER_GATEWAY_ALLOWED_ENVS"
OLD_ALLOWED_ENVS = "JUPYTER_GATEWAY_ENV_WHITELIST"
USER = "KERNEL_USERNAME"


def relay_env(environ: Mapping[str, str], user: str) -> dict[str, str]:
    """The `env` of the relay's starts: `KERNEL_*` and the allowed variables of `environ`."""
    listed = environ.get(ALLOWED_ENVS, environ.get(OLD_ALLOWED_ENVS, ""))
    allowed = {name.strip() for name in listed.split(",") if name.strip()}
    env = {k: v for k, v in environ.items() if k.startswith("KERNEL_") or k in allowed}
    if not env.get(USER):
        env[USER] = user
    return env


def start_body(body: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """A start's body with `env`: the relay's, under the client's own (which wins)."""
    out = dict(body)
    given = body.get("env")
    if given is None:
        out["env"] = dict(env)
    elif isinstance(given, dict):
        out["env"] = {**env, **given}
    # Anything else is the client's to have refused by the gateway, as it would be.
    return out


def sent_user(body: Mapping[str, Any]) -> str | None:
    """The `KERNEL_USERNAME` a start's body carries, if any."""
    env = body.get("env")
    user = env.get(USER) if isinstance(env, dict) else None
    return str(user) if user is not None else None


def refusal(error: Mapping[str, Any], user: str | None) -> dict[str, Any]:
    """A gateway's 403 to a start, in Jupyter's shape, with what to change on the relay's side."""
    message = str(error.get("message") or error.get("reason") or "the gateway refused the start")
    sent = f"the relay sent KERNEL_USERNAME={user!r}" if user else "no KERNEL_USERNAME was sent"
    hint = (
        f" ({sent}; set KERNEL_USERNAME in the relay's environment, or in the start "
        "request's env, to a user the gateway authorizes)"
    )
    # EG words its refusal in `reason` and leaves `message` empty: Jupyter's shape has
    # the sentence in `message` and the kind in `reason`.
    reason = error.get("reason") if error.get("message") else None
    return {**error, "message": message + hint, "reason": reason or "Forbidden"}
