"""explorer is a real package: importable from any directory (the editable install the two
commands make), built into a wheel that carries the shipped weights, and its command lines and
benchmarks start from anywhere. Each check runs a fresh interpreter in a directory that is not
the project root, so nothing is found through the working directory."""

from __future__ import annotations

import json
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


def test_explorer_imports_and_loads_its_weights_from_any_directory(elsewhere):
    done = elsewhere["load_everything.py"]  # the first script of the interpreter: nothing imported before it
    assert done["returncode"] == 0, done["stderr"][-2000:]
    assert done["stdout"].splitlines()[0] == str(ROOT / "explorer" / "__init__.py")  # the editable install
    assert done["stdout"].splitlines()[-1] == "loaded 4"


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


# LOAD_EVERYTHING and every benchmark's `--help` in one interpreter started in an empty directory (each
# started its own: 0.1-4 s apiece, most of it the same imports of numpy, torch and explorer), each run as
# `python <path> --help` runs it: as __main__, sys.argv[0] the path, sys.path[0] the script's folder and not
# the working directory. Between scripts, sys.path, os.environ, the warning filters and the modules imported
# from the project outside explorer (tests/peers.py, ...) are put back, so that no script passes on what one
# before it set up: only installed packages (explorer among them) stay imported.
HELP_EACH = r"""
import contextlib, io, json, os, runpy, sys, traceback, warnings
root, paths = sys.argv[1], sys.argv[2:]
base_path, base_env, base_filters = list(sys.path), dict(os.environ), list(warnings.filters)
def ours(module):
    file = getattr(module, "__file__", None) or ""
    return (file.startswith(root + os.sep) and not file.startswith(os.path.join(root, "explorer", ""))
            and not file.startswith(os.path.join(sys.prefix, "")))  # the venv may sit in the project
results = {}
for path in paths:
    before = {name for name, m in sys.modules.items() if ours(m)}
    sys.argv, sys.path[:] = [path, "--help"], [os.path.dirname(path)] + base_path[1:]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[os.path.basename(path)] = {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    sys.path[:] = base_path
    os.environ.clear()
    os.environ.update(base_env)
    warnings.filters[:] = base_filters
    for name in [name for name, m in sys.modules.items() if ours(m) and name not in before]:
        del sys.modules[name]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """{file name: its returncode, stdout and stderr} for load_everything.py (LOAD_EVERYTHING), then every
    benchmark with `--help`, run by HELP_EACH from an empty directory."""
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "scripts").mkdir()
    (folder / "scripts" / "load_everything.py").write_text(LOAD_EVERYTHING)
    done = _run([sys.executable, "-c", HELP_EACH, str(ROOT), str(folder / "scripts" / "load_everything.py"),
                 *map(str, BENCHMARKS)], cwd=folder, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_benchmark_help_from_another_directory(path, elsewhere):
    done = elsewhere[path.name]
    assert done["returncode"] == 0, done["stderr"][-2000:]
    assert done["stdout"].startswith("usage:"), done["stdout"][:500]


def test_each_benchmark_help_runs_apart(tmp_path):
    """The shared interpreter of benchmark_help hides nothing: a script that imports tests/peers.py without
    putting tests/ on sys.path itself fails there, after one that does."""
    (tmp_path / "a.py").write_text("import sys\nsys.path.insert(0, %r)\nimport peers\nprint('usage: a')\n" % str(ROOT / "tests"))
    (tmp_path / "b.py").write_text("import os\nos.environ['HELP_EACH_LEAK'] = '1'\nimport peers\nprint('usage: b')\n")
    (tmp_path / "c.py").write_text("import os, sys\nprint('usage: c', os.environ.get('HELP_EACH_LEAK'), 'peers' in sys.modules)\n")
    done = _run([sys.executable, "-c", HELP_EACH, str(ROOT), *(str(tmp_path / f) for f in ("a.py", "b.py", "c.py"))],
                cwd=tmp_path / "..", timeout=120)
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["a.py"]["returncode"] == 0 and out["a.py"]["stdout"] == "usage: a\n", out["a.py"]
    assert out["b.py"]["returncode"] == 1 and "No module named 'peers'" in out["b.py"]["stderr"], out["b.py"]
    assert out["c.py"]["stdout"] == "usage: c None False\n", out["c.py"]
