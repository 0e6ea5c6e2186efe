"""The layout's rules, checked on the source: the library never imports its command line; inference
code imports no training module; nothing refers to files outside the repository."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "dlc"
INFERENCE = ["pipeline.py", "compose.py", "encoder/model.py", "encoder/sem.py", "dit/model.py", "dit/diffusion.py",
             "dit/latents.py", "dit/config.py", "prior/model.py", "prior/sampling.py", "text/model.py", "text/hf.py",
             "text/tokenizers.py"]
TRAINING = ("dlc.training", "dlc.stages", "dlc.dit.vae", "dlc.cli")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def is_training(name: str) -> bool:
    return name.startswith(TRAINING) or name.endswith(".training") or ".training." in name


def test_the_library_never_imports_the_command_line():
    offenders = [f"{p.relative_to(ROOT)}: {n}" for p in LIBRARY.rglob("*.py") if "cli" not in p.parts
                 and p.name != "__main__.py" for n in imported_modules(p) if n == "dlc.cli" or n.startswith("dlc.cli.")]
    assert offenders == []


@pytest.mark.parametrize("module", INFERENCE)
def test_inference_code_imports_no_training_module(module):
    assert [n for n in imported_modules(LIBRARY / module) if is_training(n)] == []


def test_the_checker_sees_a_training_import(tmp_path):
    # the rule above can fail: a relative import of the loop from inside the package is caught
    probe = LIBRARY / "dit" / "_probe_layout.py"
    probe.write_text("from ..training import fit\nfrom .training import train\n")
    try:
        assert {"dlc.training.fit", "dlc.dit.training.train"} <= {n for n in imported_modules(probe) if is_training(n)}
    finally:
        probe.unlink()


def test_nothing_refers_to_files_outside_the_repository():
    files = [*LIBRARY.rglob("*.py"), *LIBRARY.rglob("*.yaml"), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    offenders = [str(f.relative_to(ROOT)) for f in files if "shared/" in f.read_text()]
    assert offenders == []


def test_dlc_compose_stays_the_function_after_importing_its_module():
    code = "import dlc.compose; from dlc.compose import interpolate; import dlc; print(callable(dlc.compose))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
