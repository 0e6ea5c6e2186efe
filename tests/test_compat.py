import subprocess
import sys


def test_torchvision_and_its_dependents_import_after_dlc():
    code = "import dlc, torchvision, timm, torch_fidelity; from diffusers import AutoencoderKL; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_startup_hook_lets_torchvision_import_without_dlc(tmp_path):
    # what the `accelerate` command needs: torchvision imported before any `import dlc`
    from dlc._compat import write_startup_hook

    site = tmp_path / "site"
    site.mkdir()
    write_startup_hook(str(site))
    code = f"import site; site.addsitedir({str(site)!r}); import torchvision; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
