"""memaudit: is a uniform-state discrete diffusion language model memorizing or generalizing?

Implements the conditional-entropy probe and the token-recovery test of "Language Diffusion
Models are Associative Memories Capable of Retrieving Unseen Data" (arXiv 2604.26841).
"""
__version__ = "0.1.0"

from .adapters import LoadError, UnsupportedCheckpoint, load  # noqa: E402
from .recovery import recover  # noqa: E402,F401  (memaudit.recover: token-recovery ground truth)
from .probe import scan  # noqa: E402,F401  (memaudit.scan: the data-free probe)

__all__ = ["__version__", "load", "LoadError", "UnsupportedCheckpoint"]
