"""The CPU-torch fix for PyPI's CUDA-built torchvision: applied by ``import dlc`` and, for programs
that import torchvision first (the ``accelerate`` command), by the start-up hook pip installs.
Each child interpreter runs isolated (-I: no PYTHONPATH, no user site, no current folder), so
nothing but the mechanism under test can apply the fix."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_FIX = ("import importlib.util, sys; sys.path.insert(0, {root!r}); "
             "import dlc._compat as c; print(int(not c._extension_loads()))")


def child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/")


def fix_needed() -> bool:
    """True where torchvision's compiled extension cannot load beside this torch (CPU torch)."""
    out = child(NEEDS_FIX.format(root=str(ROOT)))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "1"


def test_without_the_fix_torchvision_fails_where_it_is_needed():
    result = child("import torchvision")
    if fix_needed():
        assert result.returncode != 0 and "torchvision::nms does not exist" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_import_dlc_applies_the_fix_before_torchvision_and_its_dependents():
    code = ("import dlc, torchvision, timm, torch_fidelity; from diffusers import AutoencoderKL; "
            "import dlc._compat as c; print(int(c.applied()))")
    result = child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(int(fix_needed()))


def test_startup_hook_lets_torchvision_import_without_dlc_and_imports_nothing_heavy():
    # what pip installs with the wheel: dlc_startup.pth and _dlc_startup.py at the top of site-packages
    hook = f"import site, sys; site.addsitedir({str(ROOT)!r}); "
    light = child(hook + "print(sorted(m for m in ('torch', 'dlc', 'numpy') if m in sys.modules))")
    assert light.returncode == 0, light.stderr
    assert light.stdout.strip() == "[]"
    result = child(hook + "import torchvision; import dlc._compat as c; print(int(c.applied()))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(int(fix_needed()))


def test_the_wheel_ships_the_hook_and_the_presets(tmp_path):
    import zipfile

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("dlc-*.whl"))).namelist()
    assert {"dlc_startup.pth", "_dlc_startup.py", "dlc/configs/emoji/dit.yaml",
            "dlc/configs/imagenet/dit_xl2_dlc512.yaml"} <= set(names)
