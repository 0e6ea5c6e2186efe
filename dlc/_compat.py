"""Make PyPI's CUDA-built torchvision importable beside a CPU-only torch.

PyPI's torchvision wheel is compiled against CUDA torch. Beside the CPU build of torch its C++
extension fails to load, and ``import torchvision`` (and so timm, diffusers' VAE and
torch-fidelity) then dies with ``operator torchvision::nms does not exist``: the Python side
registers fake kernels for operators whose schemas the extension would have defined. Defining
the two schemas ourselves, before torchvision is first imported, lets it import; transforms,
models and datasets then work (``torchvision.io`` and ``torchvision.ops`` do not).

On a normal install the extension loads and defines the schemas itself; we detect that and do
nothing.
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


class _PatchBeforeTorchvision:
    """A meta-path finder that applies the fix the moment ``torchvision`` is first imported.

    It finds nothing itself; it only runs ``patch_torchvision`` once, so that importing
    ``dlc`` (or starting the interpreter, through the ``.pth`` file below) stays cheap.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            patch_torchvision()
        return None


def install_import_hook() -> None:
    """Apply the fix lazily, when torchvision is first imported (or now, if it already was)."""
    if any(isinstance(f, _PatchBeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PatchBeforeTorchvision())


PTH_NAME = "dlc_torchvision_cpu_fix.pth"


def write_startup_hook(site_packages: str) -> str:
    """Write a ``.pth`` file that installs the hook at interpreter start.

    Needed for programs that import torchvision before they import dlc, such as the
    ``accelerate`` command (it imports timm at start-up).
    """
    import os

    path = os.path.join(site_packages, PTH_NAME)
    with open(path, "w") as f:
        f.write("import dlc._compat as _c; _c.install_import_hook()\n")
    return path

