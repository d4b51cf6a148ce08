"""The kernel mixer: kernelspecs, kernels and sessions of every backend as one."""

from .core import Mixer

__all__ = ["Mixer"]
