"""jupyter-relay: one local Jupyter endpoint in front of any number of Jupyter backends."""

__version__ = "0.1.0"
