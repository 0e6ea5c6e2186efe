"""Ships ``dlc_startup.pth`` at the top of site-packages (pip installs and removes it with dlc);
everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStartupHook(build_py):
    def run(self):
        super().run()
        self.copy_file(str(Path(__file__).parent / "dlc_startup.pth"), str(Path(self.build_lib) / "dlc_startup.pth"))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / "dlc_startup.pth")]


setup(cmdclass={"build_py": BuildWithStartupHook})
