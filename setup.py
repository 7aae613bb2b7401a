"""Build hook: the wheel carries the shipped files (example config, systemd unit, Vault policy) as
package data under regwarden/data/, copied from their one source in the checkout at build time.
Everything else about the distribution is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# keep in step with regwarden.shipped.SHIPPED (tests/unit/core/test_shipped.py checks it)
SHIPPED = ("config.example.toml", "systemd/regwarden.service", "contrib/vault/regwarden-policy.hcl")


class BuildPyWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        target = Path(self.build_lib) / "regwarden" / "data"
        target.mkdir(parents=True, exist_ok=True)
        for source in SHIPPED:
            shutil.copyfile(source, target / Path(source).name)


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
