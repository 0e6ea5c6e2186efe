"""dlc: image generation with Discrete Latent Codes.

    import dlc
    ds = dlc.data.load("emoji", size=32)
    enc = dlc.DLCEncoder.from_pretrained("runs/demo/encoder/model")
    codes = dlc.compose([code_a, code_b], n=8, seed=0)
    pipe = dlc.DLCPipeline.from_pretrained("runs/demo")
"""

from ._compat import install_import_hook

install_import_hook()  # before anything imports torchvision (timm, diffusers, torch-fidelity)

from . import config, data  # noqa: E402
from .errors import CheckpointError, CodeError, ConfigError, DataError, DLCError  # noqa: E402

__version__ = "0.1.0"

# heavier parts load on first use: ``dlc.DLCEncoder`` imports timm only when asked for
_LAZY = {
    "DLCEncoder": ("dlc.encoder", "DLCEncoder"),
    "DLCPipeline": ("dlc.pipeline", "DLCPipeline"),
    "compose": ("dlc.compose", "compose"),
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
