"""memaudit: is a uniform-state discrete diffusion language model memorizing or generalizing?

Implements the conditional-entropy probe and the token-recovery test of "Language Diffusion
Models are Associative Memories Capable of Retrieving Unseen Data" (arXiv 2604.26841).

The public names load only when first used (PEP 562), so that `import memaudit` costs nothing
until it is needed and the console script can hold Ctrl-C while torch loads
(memaudit.entrypoint).
"""
__version__ = "0.1.0"

__all__ = ["__version__", "load", "scan", "recover", "infill", "LoadError", "UnsupportedCheckpoint"]

_LAZY = {
    "load": ("adapters", "load"),                      # memaudit.load: any checkpoint → Denoiser
    "LoadError": ("adapters", "LoadError"),
    "UnsupportedCheckpoint": ("adapters", "UnsupportedCheckpoint"),
    "scan": ("probe", "scan"),                         # memaudit.scan: the data-free probe
    "recover": ("recovery", "recover"),                # memaudit.recover: token-recovery ground truth
    "infill": ("sampling", "infill"),                  # memaudit.infill: regenerate positions, the rest clamped
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'memaudit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
