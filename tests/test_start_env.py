"""The `env` of kernel starts on gateways: what Jupyter's GatewayClient sends, and refusals."""

from __future__ import annotations

from jupyter_relay.mixer.api import Answer, error_body
from jupyter_relay.mixer.start_env import refusal, relay_env, sent_user, start_body


def test_relay_env_is_kernel_variables_and_the_user() -> None:
    environ = {"KERNEL_LAUNCH_TIMEOUT": "90", "PATH": "/bin", "HOME": "/root", "KERNELX": "no"}
    assert relay_env(environ, "alice") == {
        "KERNEL_LAUNCH_TIMEOUT": "90",
        "KERNEL_USERNAME": "alice",
    }


def test_relay_env_keeps_a_kernel_username_of_the_environment() -> None:
    assert relay_env({"KERNEL_USERNAME": "bob"}, "alice") == {"KERNEL_USERNAME": "bob"}
    assert relay_env({"KERNEL_USERNAME": ""}, "alice") == {"KERNEL_USERNAME": "alice"}


def test_relay_env_adds_the_allowed_variables_as_gateway_client_does() -> None:
    environ = {"JUPYTER_GATEWAY_ALLOWED_ENVS": "SPARK_HOME, TEAM", "SPARK_HOME": "/s", "TEAM": "ml"}
    environ["OTHER"] = "x"
    assert relay_env(environ, "u") == {"SPARK_HOME": "/s", "TEAM": "ml", "KERNEL_USERNAME": "u"}
    old = {"JUPYTER_GATEWAY_ENV_WHITELIST": "TEAM", "TEAM": "ml"}
    assert relay_env(old, "u") == {"TEAM": "ml", "KERNEL_USERNAME": "u"}


def test_start_body_adds_the_env_under_the_clients_own() -> None:
    env = {"KERNEL_USERNAME": "relay-user", "KERNEL_TEAM": "ml"}
    assert start_body({"name": "py"}, env) == {"name": "py", "env": env}
    given = {"name": "py", "env": {"KERNEL_USERNAME": "bob", "FOO": "1"}}
    assert start_body(given, env)["env"] == {
        "KERNEL_USERNAME": "bob",
        "KERNEL_TEAM": "ml",
        "FOO": "1",
    }
    assert given["env"] == {
        "KERNEL_USERNAME": "bob",
        "FOO": "1",
    }  # the client's body is not changed
    assert start_body({"env": "garbage"}, env) == {"env": "garbage"}


def test_sent_user() -> None:
    assert sent_user({"env": {"KERNEL_USERNAME": "bob"}}) == "bob"
    assert sent_user({"env": {}}) is None
    assert sent_user({}) is None


def test_refusal_moves_egs_reason_into_the_message_with_a_hint() -> None:
    eg = {"reason": "User 'root' is not authorized to start kernel 'Py'.", "message": ""}
    answer = refusal(eg, "root")
    assert answer["reason"] == "Forbidden"
    assert answer["message"].startswith("User 'root' is not authorized to start kernel 'Py'.")
    assert "the relay sent KERNEL_USERNAME='root'" in answer["message"]
    assert "set KERNEL_USERNAME in the relay's environment" in answer["message"]
    jupyter_shaped = refusal({"message": "no", "reason": "Nope"}, None)
    assert jupyter_shaped["reason"] == "Nope"
    assert "no KERNEL_USERNAME was sent" in jupyter_shaped["message"]


def test_a_gateways_sentence_in_reason_becomes_the_message() -> None:
    """Tornado's HTTPError(500, reason=...) of EG: `message` empty, the words in `reason`."""
    eg = {"reason": "KernelID: 'k' launch timeout due to: Waited too long (2s)", "message": ""}
    assert error_body("eg", Answer(500, eg)) == {
        "reason": "Internal Server Error",
        "message": "KernelID: 'k' launch timeout due to: Waited too long (2s)",
    }
    jupyter = {"message": "Kernel does not exist: k", "reason": None}
    assert error_body("lab", Answer(404, jupyter)) == jupyter
    assert error_body("eg", Answer(599, {"message": "", "reason": "odd"}))["reason"] == (
        "Backend Error"
    )
