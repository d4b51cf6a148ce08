"""The benchmark of issue 3: jupyter-relay against direct access and its peers.

`scripts/bench` installs what is missing and runs `python -m bench`. One run
starts every backend and every path once (direct, the relay,
configurable-http-proxy, jupyter-server-proxy, nginx), measures each scenario
on every path it applies to, and writes a JSON file and a PNG chart.
"""
