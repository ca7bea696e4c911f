"""Every docstring example in the product runs: each ``driftline.*`` module's doctests.

pytest's ``--doctest-modules`` would import the root folders under their folder names
(``schemas.codec``), not under the installed namespace; this walks ``driftline`` instead.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import driftline


def _module_names() -> list[str]:
    names = ["driftline"]
    for info in pkgutil.walk_packages(driftline.__path__, "driftline."):
        names.append(info.name)
    for sub in ("schemas", "detectors", "streams", "sinks"):
        package = importlib.import_module(f"driftline.{sub}")
        names += [info.name for info in pkgutil.walk_packages(package.__path__, f"driftline.{sub}.")]
    return sorted(set(names))


MODULES = _module_names()


def test_every_package_is_walked() -> None:
    for sub in ("schemas", "detectors", "streams", "sinks"):
        assert any(name.startswith(f"driftline.{sub}.") for name in MODULES), sub


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name}"
