"""Package discovery; everything else is configured in pyproject.toml.

Every package under coherence_diag/ is found, so a new subpackage cannot be missing from the
wheel. rules/ (top level) installs as coherence_diag.builtin_rules (pyproject.toml maps the
directory), which discovery cannot find by itself.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["coherence_diag", "coherence_diag.*"]), "coherence_diag.builtin_rules"])
