"""explorer is a real package: importable from any directory (the editable install the two
commands make), built into a wheel that carries the shipped weights, and its command lines and
benchmarks start from anywhere. Each check runs a fresh interpreter in a directory that is not
the project root, so nothing is found through the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
SHIPPED = ["gmm-1d-3modes", "gmm-2d-grid25", "digits", "shapes"]

LOAD_EVERYTHING = f"""
import explorer as ex
from explorer import image_quality
print(ex.__file__)
for name in {SHIPPED!r}:
    model = ex.models.load_pretrained(name)
    assert model.schedule is not None, name
for dataset in ("digits", "shapes"):
    image_quality.classifier(dataset)
print("loaded", len({SHIPPED!r}))
"""


def _run(args, cwd, env=None, timeout=60):
    """args run in cwd, with no inherited PYTHONPATH (plus env)."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    return subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def test_explorer_imports_and_loads_its_weights_from_any_directory(tmp_path):
    done = _run([sys.executable, "-c", LOAD_EVERYTHING], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == str(ROOT / "explorer" / "__init__.py")  # the editable install
    assert done.stdout.splitlines()[-1] == "loaded 4"


def test_the_wheel_carries_the_package_and_its_data(tmp_path):
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  str(ROOT), "-w", str(tmp_path / "dist")], cwd=tmp_path, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("diffusion_explorer-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in SHIPPED:
        assert f"explorer/data/{name}.pt" in names
    assert {"explorer/data/classifiers/digits.pt", "explorer/data/classifiers/shapes.pt"} <= names
    assert not any(n.startswith(("tests/", "app_pages/", "benchmarks/")) or "__pycache__" in n for n in names)

    # Unpacked on its own (no source tree on the path): the weights come from inside the package.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    done = _run([sys.executable, "-c", LOAD_EVERYTHING], cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == str(site / "explorer" / "__init__.py")
    assert done.stdout.splitlines()[-1] == "loaded 4"


def test_data_dir_can_be_overridden(tmp_path):
    # One interpreter (each costs the imports): the overridden directory is read, holds no model, and
    # loading one then fails naming it, uncaught.
    code = ("from explorer import data_files, learned; print(data_files.DATA_DIR); print(learned.available(), flush=True)\n"
            "import explorer as ex; ex.models.load_pretrained('gmm-1d-3modes')")
    done = _run([sys.executable, "-c", code], cwd=tmp_path, env={"EXPLORER_DATA_DIR": str(tmp_path)})
    assert done.stdout.splitlines() == [str(tmp_path), "[]"], done.stderr[-2000:]
    assert done.returncode != 0 and "no pretrained model 'gmm-1d-3modes'" in done.stderr


def test_python_m_explorer_help_from_another_directory(tmp_path):
    done = _run([sys.executable, "-m", "explorer", "train", "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--dataset" in done.stdout and "--target" in done.stdout
    script = Path(sys.executable).parent / "diffusion-explorer"
    done = _run([str(script), "--help"], cwd=tmp_path)
    assert done.returncode == 0 and "train" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_benchmark_help_from_another_directory(path, tmp_path):
    done = _run([sys.executable, str(path), "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
