"""jupyter-relay: one local Jupyter endpoint in front of any number of Jupyter backends."""

import warnings

# cryptography 51 deprecates its DSA classes, and asyncssh (2.24.1, the newest) names
# them at import time, which printed ten lines of CryptographyDeprecationWarning
# before every command's output. The relay never offers or accepts DSA keys, so the
# warning says nothing to its users; it is silenced for asyncssh's modules only.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")

__version__ = "0.1.0"
