"""Which packages the agegender distribution installs (the rest is in pyproject.toml).

Code: every package under ``common/``, ``services/``, ``training/`` and ``bench/``.
Data: the shipped models, the top-level ``models/`` folder, installed as the package
``agegender_models`` (:mod:`common.models.registry` finds them there). A source tree
without ``models/`` (a container build stage that adds them later) installs the code only.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
packages = find_packages(include=["common*", "services*", "training*", "bench*"])
package_dir: dict = {}
package_data: dict = {}
if (HERE / "models").is_dir():
    packages.append("agegender_models")
    package_dir["agegender_models"] = "models"
    package_data["agegender_models"] = ["*/*"]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
