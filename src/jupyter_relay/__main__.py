"""`python -m jupyter_relay` runs the command-line interface."""

from .cli import main

raise SystemExit(main())
