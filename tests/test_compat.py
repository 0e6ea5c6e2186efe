"""The CPU-torch fix for PyPI's CUDA-built torchvision: applied by ``import dlc`` and, for programs
that import torchvision first (the ``accelerate`` command), by the start-up hook pip installs.
Each child interpreter runs isolated (-I: no PYTHONPATH, no user site, no current folder), so
nothing but the mechanism under test can apply the fix."""

import subprocess
import sys
from pathlib import Path

import pytest

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

    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    assert {"dlc_startup.pth", "_dlc_startup.py", "dlc/configs/emoji/dit.yaml",
            "dlc/configs/imagenet/dit_xl2_dlc512.yaml"} <= set(names)


def build_wheel(folder: Path) -> Path:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(folder), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    return next(folder.glob("dlc-*.whl"))


@pytest.mark.slow
def test_a_fresh_venv_with_the_wheel_imports_trains_two_steps_and_samples(tmp_path):
    """A non-editable install in a new venv (its dependencies: this environment's, through a .pth
    line; no network) works from another folder: import, two training steps, sampling."""
    import site
    import venv

    wheel = build_wheel(tmp_path / "wheel")
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        out = subprocess.run([str(python), *args], capture_output=True, text=True, cwd=work, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    assert run("-c", "import dlc; print(dlc.__file__)").strip().startswith(purelib)  # the wheel, not this checkout
    run("-m", "dlc", "train", "dit", "--config", "emoji", "train.steps=2", "model.arch=DiT-N/8",
        "condition.kind=random", "condition.code_length=4", "condition.random_vocab=8", "train.batch_size=4",
        "sample.num=2", "sample.steps=2", "train.log_with=none", f"run_dir={work / 'dit'}")
    run("-m", "dlc", "sample", str(work / "dit"), "-n", "2", "--steps", "2", "--codes", str(codes(work)),
        "--out", str(work / "samples"))
    assert len(list((work / "samples" / "images").glob("*.png"))) == 2


def codes(folder: Path) -> Path:
    import numpy as np

    path = folder / "codes.npy"
    np.save(path, np.array([[0, 1, 2, 3], [7, 6, 5, 4]], dtype=np.uint16))
    return path
