"""Make PyPI's CUDA-built torchvision importable beside a CPU-only torch.

PyPI's torchvision wheel is compiled against CUDA torch. Beside the CPU build of torch its C++
extension fails to load, and ``import torchvision`` (and so timm, diffusers' VAE and
torch-fidelity) then dies with ``operator torchvision::nms does not exist``: the Python side
registers fake kernels for operators whose schemas the extension would have defined. Defining
the two schemas ourselves, before torchvision is first imported, lets it import; transforms,
models and datasets then work (``torchvision.io`` and ``torchvision.ops`` do not).

On a normal install the extension loads and defines the schemas itself; we detect that and do
nothing. The fix is applied the moment torchvision is first imported, by the finder that
``_dlc_startup`` (a top-level module shipped beside the package) puts on ``sys.meta_path``: importing
``dlc`` installs it, and so does the ``dlc_startup.pth`` that pip installs with the wheel, for
programs that import torchvision before dlc (the ``accelerate`` command).
"""

from __future__ import annotations

import importlib.util
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive: dropping it unregisters the schemas


def _extension_loads() -> bool:
    """True when torchvision's compiled extension loads (then it defines the schemas)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to fix
    import glob
    import os

    import torch

    for location in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(location, "_C*.so")):
            try:
                torch.ops.load_library(path)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def applied() -> bool:
    """True when this process runs with the schemas registered by ``patch_torchvision``."""
    return _library is not None


def patch_torchvision() -> bool:
    """Register the torchvision operator schemas if its extension cannot load.

    Returns True when the fix was applied. Safe to call many times.
    """
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    if _extension_loads():
        return False
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _library.define(schema)
    return True
