"""dlc: image generation with Discrete Latent Codes.

    import dlc
    ds = dlc.data.load("emoji", size=32)
    enc = dlc.DLCEncoder.from_pretrained("runs/demo/encoder")
    codes = dlc.compose([code_a, code_b], n=8, seed=0)
    pipe = dlc.DLCPipeline.from_pretrained("runs/demo")

The layout: ``data`` (datasets, the shard reader and writer), ``codes`` (code storage and the
sources every stage resolves its codes through), one subpackage per stage (``encoder``, ``dit``,
``prior``, ``text``), ``compose``, ``pipeline``, ``eval``, ``training`` (the one loop), ``stages``
(the registry of training jobs) and ``cli`` (the command line, which nothing here imports).
"""

import _dlc_startup  # noqa: F401  the torchvision fix, before anything imports torchvision (timm, diffusers)

from . import config, data  # noqa: E402
from .compose import compose  # noqa: E402  (the function: binding it here keeps ``dlc.compose`` callable)
from .errors import CheckpointError, CodeError, ConfigError, DataError, DLCError  # noqa: E402

__version__ = "0.1.0"

# heavier parts load on first use: ``dlc.DLCEncoder`` imports timm only when asked for
_LAZY = {
    "DLCEncoder": ("dlc.encoder", "DLCEncoder"),
    "DLCPipeline": ("dlc.pipeline", "DLCPipeline"),
    "eval": ("dlc.eval", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dlc' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


__all__ = ["config", "data", "DLCError", "ConfigError", "DataError", "CheckpointError", "CodeError",
           "DLCEncoder", "DLCPipeline", "compose", "eval"]
