"""Interpreter start-up hook of dlc, installed by pip as ``dlc_startup.pth`` beside this file.

Programs that import torchvision before they import dlc (the ``accelerate`` command imports timm
when it starts) need dlc's CPU-torch fix for torchvision applied first. This hook imports nothing
but the standard library: it puts a finder on ``sys.meta_path`` that, the first time anything
imports ``torchvision``, applies ``dlc._compat.patch_torchvision`` (which does nothing on a normal
install, where torchvision's compiled extension loads). ``pip uninstall dlc`` removes both files.
"""

import sys


class _BeforeTorchvision:
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            from dlc._compat import patch_torchvision

            patch_torchvision()
        return None


def install() -> None:
    if not any(type(f).__name__ == "_BeforeTorchvision" for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
