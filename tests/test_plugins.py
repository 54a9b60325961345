"""Bring your own solver: ex.solvers.register (a plug-in runs like a built-in, its options and
declaration are checked), ex.plugins.load / load_configured (files, modules, EXPLORER_PLUGINS,
entry points; a broken plug-in breaks only itself), the example plug-in examples/my_solver.py
(measured order, exact identities) and the stability of plug-in solvers."""

from __future__ import annotations

import importlib
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import explorer as ex
from explorer import stability as S
from apptest import app_plugins, charts, open_page_from_url
from fakes import TorchModel, smooth_mixture
from test_core_solvers import measured_order

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_solver.py"


@pytest.fixture(autouse=True)
def clean_registry():
    """Every solver and plug-in module a test adds is removed afterwards: tests do not leak."""
    names, modules = set(ex.solvers.names()), set(sys.modules)
    yield
    for name in set(ex.solvers.names()) - names:
        ex.solvers.unregister(name)
    for module in set(sys.modules) - modules:
        if module.startswith(("explorer_plugin_", "plug_")):
            del sys.modules[module]
    assert set(ex.solvers.names()) == names


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()  # a module written during the run must be found by the next import
    return path


def my_ddim(model, x, ts, rng, record, eta=0.0):
    """DDIM written out from the paper, eq. 12: x' = alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z,
    c = eta sigma' sqrt(1 - e^{-2 (lambda' - lambda)})."""
    s = model.schedule
    for i in range(len(ts) - 1):
        t, t1 = ts[i], ts[i + 1]
        a, sg, a1, s1 = (float(f(u)) for f, u in ((s.alpha, t), (s.sigma, t), (s.alpha, t1), (s.sigma, t1)))
        d = model.denoise(x, t)
        eps = (x - a * d) / sg
        c = eta * s1 * math.sqrt(1.0 - (a * s1 / (a1 * sg)) ** 2)  # e^{-2h} = (alpha sigma' / (alpha' sigma))^2
        x_next = a1 * d + math.sqrt(max(s1 * s1 - c * c, 0.0)) * eps
        if c > 0:
            x_next = x_next + c * rng.standard_normal(x.shape)
        x = record(i, x_next, d)


def _register_ddim(name="my-ddim", **overrides):
    declaration = dict(
        order=1, reference="Denoising Diffusion Implicit Models", summary="DDIM written in a test.",
        stochastic=lambda o: o["eta"] > 0,
        options={"eta": {"type": "float", "default": 0.0, "range": (0.0, 1.0), "help": "fresh noise"}},
    )
    declaration.update(overrides)
    return ex.solvers.register(name, my_ddim, **declaration)


def _problem(schedule="vp-linear", n=40, steps=12, spacing="karras"):
    model = ex.AnalyticModel(smooth_mixture(), ex.schedules.get(schedule))
    return model, model.prior_sample(n, np.random.default_rng(3)), ex.timesteps(model.schedule, steps, spacing)


# ex.solvers.register


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_a_registered_ddim_runs_like_the_built_in(eta):
    assert _register_ddim() == "my-ddim"
    assert "my-ddim" in ex.solvers.names()
    model, x, ts = _problem()
    mine = ex.sample(model, x, ts, "my-ddim", rng=7, eta=eta)
    native = ex.sample(model, x, ts, "ddim", rng=7, eta=eta)
    np.testing.assert_allclose(mine.x, native.x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mine.denoised, native.denoised, rtol=1e-12, atol=1e-13)
    assert mine.nfe == native.nfe == 12 and mine.solver == "my-ddim" and mine.options == {"eta": eta}
    assert np.abs(mine.x[-1] - ex.sample(model, x, ts, "ddim", rng=7, eta=0.3).x[-1]).max() > 1e-3  # eta matters


def test_a_registered_solver_declares_itself_like_a_built_in():
    _register_ddim()
    info = ex.solvers.info("my-ddim")
    assert info["order"] == 1 and info["stochastic"] is False and info["nfe_per_step"] == 1
    assert info["options"] == {"eta": {"type": "float", "default": 0.0, "help": "fresh noise", "range": (0.0, 1.0)}}
    assert info["source"] == __name__  # the module that declared it
    assert ex.solvers.order("my-ddim", eta=0.5) == 1
    assert ex.solvers.spec("my-ddim").draws_noise({"eta": 0.5})
    with pytest.raises(ValueError, match="draws noise: pass rng"):  # stochastic with these options: rng required
        ex.sample(*_problem(), "my-ddim", eta=0.5)


@pytest.mark.parametrize("options, word", [
    ({"eta": 1.5}, r"option 'eta' must lie in \[0.0, 1.0\], got 1.5"),
    ({"eta": -0.1}, r"option 'eta' must lie in"),
    ({"eta": "a lot"}, r"option 'eta' must be a number"),
    ({"eta": float("nan")}, r"option 'eta' must lie in"),
    ({"etta": 0.1}, r"'my-ddim' has no option 'etta'; its options: \['eta'\]"),
    ({"steps": 3}, r"has no option 'steps'"),
])
def test_options_of_a_registered_solver_are_checked(options, word):
    _register_ddim()
    with pytest.raises(ValueError, match=word):
        ex.sample(*_problem(), "my-ddim", rng=0, **options)


def test_every_option_kind_is_checked():
    def fn(model, x, ts, rng, record, k=2, flag=False, mode="a"):
        for i in range(len(ts) - 1):
            x = record(i, x, model.denoise(x, ts[i]))

    ex.solvers.register("kinds", fn, order=1, options={
        "k": {"type": "int", "default": 2, "range": (1, 4)},
        "flag": {"type": "bool", "default": False},
        "mode": {"type": "choice", "default": "a", "choices": ("a", "b")},
    })
    assert ex.sample(*_problem(), "kinds", k=3.0, flag=True, mode="b").options == {"k": 3, "flag": True, "mode": "b"}
    for bad, word in [({"k": 2.5}, "'k' must be an integer"), ({"k": 5}, r"'k' must lie in \[1, 4\]"),
                      ({"flag": 1}, "'flag' must be True or False"), ({"mode": "c"}, r"'mode' must be one of \['a', 'b'\]")]:
        with pytest.raises(ValueError, match=word):
            ex.sample(*_problem(), "kinds", **bad)


def _noop(model, x, ts, rng, record):
    for i in range(len(ts) - 1):
        x = record(i, x, model.denoise(x, ts[i]))


@pytest.mark.parametrize("name, fn, declaration, word", [
    ("ddim", _noop, {"order": 1}, r"'ddim' is already registered \(explorer.solvers.basic\)"),
    ("", _noop, {"order": 1}, "solver name must be a non-empty string"),
    (None, _noop, {"order": 1}, "solver name must be a non-empty string"),
    ("x", "not a function", {"order": 1}, "fn must be callable"),
    ("x", _noop, {"order": 0}, "order must be a positive integer"),
    ("x", _noop, {"order": 1.5}, "order must be a positive integer"),
    ("x", _noop, {"order": True}, "order must be a positive integer"),
    ("x", _noop, {"order": 1, "nfe_per_step": 0}, "nfe_per_step must be a positive integer or None"),
    ("x", _noop, {"order": 1, "options": {"eta": 0.5}}, "option 'eta' must be an Option or a dict"),
    ("x", _noop, {"order": 1, "options": {"eta": {"type": "complex", "default": 1}}}, "option 'eta': 'type' must be one of"),
    ("x", _noop, {"order": 1, "options": {"eta": {"type": "float"}}}, "option 'eta' needs a 'default'"),
    ("x", _noop, {"order": 1, "options": {"eta": {"type": "float", "default": 2.0, "range": (0.0, 1.0)}}},
     r"option 'eta' must lie in \[0.0, 1.0\], got 2.0"),
    ("x", _noop, {"order": 1, "options": {"mode": {"type": "choice", "default": "c", "choices": ("a", "b")}}},
     "option 'mode' must be one of"),
])
def test_bad_declarations_name_the_argument(name, fn, declaration, word):
    before = ex.solvers.names()
    with pytest.raises(ValueError, match=word):
        ex.solvers.register(name, fn, **declaration)
    assert ex.solvers.names() == before  # nothing half-registered
    assert ex.solvers.spec("ddim").source == "explorer.solvers.basic"


def test_replace_overwrites_a_solver_of_that_name():
    _register_ddim(summary="first")
    with pytest.raises(ValueError, match=f"'my-ddim' is already registered \\({__name__}\\)"):
        _register_ddim(summary="second")
    _register_ddim(summary="second", replace=True)
    assert ex.solvers.info("my-ddim")["summary"] == "second"


def test_unregister_removes_plug_ins_and_refuses_built_ins():
    _register_ddim()
    ex.solvers.unregister("my-ddim")
    assert "my-ddim" not in ex.solvers.names()
    with pytest.raises(ValueError, match="unknown solver 'my-ddim'"):
        ex.sample(*_problem(), "my-ddim")
    with pytest.raises(ValueError, match="unknown solver"):
        ex.solvers.unregister("my-ddim")
    with pytest.raises(ValueError, match="'ddim' is a built-in solver"):
        ex.solvers.unregister("ddim")
    assert "ddim" in ex.solvers.names()


def test_a_built_in_function_registered_again_belongs_to_its_declarer():
    # The source is the module that called register, not the function's home: this alias is a
    # plug-in's and can be removed (with fn.__module__ it read explorer.solvers.basic, a built-in).
    ex.solvers.register("ddim-alias", ex.solvers.spec("ddim").fn, order=1)
    assert ex.solvers.info("ddim-alias")["source"] == __name__
    ex.solvers.unregister("ddim-alias")
    assert "ddim" in ex.solvers.names() and "ddim-alias" not in ex.solvers.names()


# ex.plugins.load


GOOD = '''
    import explorer as ex
    from pathlib import Path

    Path(__file__).with_suffix(".runs").open("a").write("run\\n")  # counts how often the file is executed


    def {fn}(model, x, ts, rng, record):
        for i in range(len(ts) - 1):
            d = model.denoise(x, ts[i])
            x = record(i, x + (ts[i + 1] - ts[i]) * ex.solvers.common.pf_drift(model.schedule, x, d, ts[i]), d)


    ex.solvers.register({name!r}, {fn}, order=1, summary={summary!r})
'''


def _good(path: Path, name="tmp-euler", summary="Euler, from a file") -> Path:
    return _write(path, GOOD.format(fn=name.replace("-", "_"), name=name, summary=summary))


def _runs(path: Path) -> int:
    runs = path.with_suffix(".runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_load_a_file_and_run_its_solver(tmp_path):
    path = _good(tmp_path / "euler_plugin.py")
    assert ex.plugins.load(path) == ["tmp-euler"]
    assert ex.solvers.info("tmp-euler")["source"] == "explorer_plugin_euler_plugin"
    model, x, ts = _problem("edm")
    np.testing.assert_allclose(ex.sample(model, x, ts, "tmp-euler").x, ex.sample(model, x, ts, "euler").x, rtol=1e-13)


def test_loading_again_returns_its_names_and_reload_replaces_them(tmp_path):
    path = _good(tmp_path / "twice.py")
    assert ex.plugins.load(str(path)) == ["tmp-euler"]
    assert ex.plugins.load(str(path)) == ["tmp-euler"] and _runs(path) == 1  # not run again
    first = ex.solvers.spec("tmp-euler").fn
    _good(path, summary="edited")
    assert ex.plugins.load(path, reload=True) == ["tmp-euler"] and _runs(path) == 2
    assert ex.solvers.info("tmp-euler")["summary"] == "edited" and ex.solvers.spec("tmp-euler").fn is not first
    ex.solvers.unregister("tmp-euler")  # its solvers removed: the next load runs it again
    assert ex.plugins.load(path) == ["tmp-euler"] and _runs(path) == 3


def test_a_failed_reload_keeps_the_solvers_it_had(tmp_path):
    path = _good(tmp_path / "keep.py")
    ex.plugins.load(path)
    fn = ex.solvers.spec("tmp-euler").fn
    _write(path, path.read_text() + "\nraise RuntimeError('edited into a bug')\n")
    with pytest.raises(ex.plugins.PluginError, match="edited into a bug"):
        ex.plugins.load(path, reload=True)
    assert ex.solvers.spec("tmp-euler").fn is fn
    assert sys.modules[ex.solvers.info("tmp-euler")["source"]].tmp_euler is fn  # its module stays too


def test_two_files_with_one_stem_are_two_plug_ins(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert ex.plugins.load(_good(tmp_path / "a" / "same.py", "euler-a")) == ["euler-a"]
    assert ex.plugins.load(_good(tmp_path / "b" / "same.py", "euler-b")) == ["euler-b"]
    assert ex.solvers.info("euler-a")["source"] != ex.solvers.info("euler-b")["source"]


@pytest.mark.parametrize("text, words", [
    ("import explorer as ex\nraise RuntimeError('boom')\n", ["failed on import", "RuntimeError: boom"]),
    ("def broken(:\n", ["failed on import", "SyntaxError"]),
    ("import no_such_module_here\n", ["ModuleNotFoundError", "no_such_module_here"]),
    ("import sys\nsys.exit(3)\n", ["SystemExit: 3"]),
    ("x = 1\n", ["registered no solver", "ex.solvers.register"]),
    ("import explorer as ex\nex.solvers.register('ddim', print, order=1)\n", ["'ddim' is already registered"]),
    # a solver registered before the failure is removed again: a broken plug-in leaves nothing behind
    ("import explorer as ex\nex.solvers.register('half', print, order=1)\nraise ValueError('later')\n",
     ["ValueError: later"]),
])
def test_a_broken_file_raises_a_plugin_error_naming_it(tmp_path, text, words):
    path = _write(tmp_path / "broken.py", text)
    before = ex.solvers.names()
    with pytest.raises(ex.plugins.PluginError) as caught:
        ex.plugins.load(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and str(path) in message
    for word in words:
        assert word in message, message
    assert ex.solvers.names() == before
    assert not [m for m in sys.modules if m.startswith("explorer_plugin_broken")]


@pytest.mark.parametrize("make, word", [
    (lambda tmp: tmp / "missing.py", "no such file"),
    (lambda tmp: tmp, "a directory: name the .py file"),
    (lambda tmp: _write(tmp / "plugin.txt", "x = 1"), "not a Python file"),
])
def test_a_missing_or_wrong_file_is_named(tmp_path, make, word):
    path = make(tmp_path)
    with pytest.raises(ex.plugins.PluginError, match=word) as caught:
        ex.plugins.load(path)
    assert str(path) in str(caught.value)


def test_load_a_module_by_dotted_name(tmp_path, monkeypatch):
    (tmp_path / "plug_pkg").mkdir()
    _write(tmp_path / "plug_pkg" / "__init__.py", "")
    _good(tmp_path / "plug_pkg" / "solver.py", "pkg-euler")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ex.plugins.load("plug_pkg.solver") == ["pkg-euler"]
    assert ex.solvers.info("pkg-euler")["source"] == "plug_pkg.solver"
    assert ex.plugins.load("plug_pkg.solver") == ["pkg-euler"] and _runs(tmp_path / "plug_pkg" / "solver.py") == 1
    with pytest.raises(ex.plugins.PluginError, match="plug-in module 'plug_nowhere'.*No module named 'plug_nowhere'"):
        ex.plugins.load("plug_nowhere")
    with pytest.raises(ex.plugins.PluginError, match="expected a path to a .py file or a dotted module name"):
        ex.plugins.load("not a module")


def test_a_module_imported_before_is_not_run_again(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _good(tmp_path / "plug_early.py", "early-euler")
    _write(tmp_path / "plug_plain.py", "from pathlib import Path\nPath(__file__).with_suffix('.runs').open('a').write('run\\n')\n")
    import plug_early  # noqa: F401  (registers on import, before any load)
    import plug_plain  # noqa: F401  (a module that declares no solver)

    assert ex.plugins.load("plug_early") == ["early-euler"] and _runs(tmp_path / "plug_early.py") == 1
    with pytest.raises(ex.plugins.PluginError, match="registered no solver"):
        ex.plugins.load("plug_plain")
    assert _runs(tmp_path / "plug_plain.py") == 1  # never reloaded: it is not known to be a plug-in


# ex.plugins.load_configured


def test_environment_variable_with_a_good_and_a_broken_file(tmp_path, monkeypatch):
    good = _good(tmp_path / "good.py", "env-euler")
    broken = _write(tmp_path / "bad.py", "raise ImportError('needs a library that is not here')\n")
    monkeypatch.setenv("EXPLORER_PLUGINS", os.pathsep.join([str(good), str(broken), " "]))
    results = [r for r in ex.plugins.load_configured() if r.source in (str(good), str(broken))]
    assert [r.source for r in results] == [str(good), str(broken)]
    assert results[0] == ex.plugins.Loaded(str(good), ("env-euler",), None)
    assert results[1].names == () and str(broken) in results[1].error
    assert "ImportError: needs a library that is not here" in results[1].error
    assert "env-euler" in ex.solvers.names()
    again = [r for r in ex.plugins.load_configured() if r.source in (str(good), str(broken))]
    assert again == results and _runs(good) == 1  # a second call loads nothing twice


ENTRY_POINTS = """\
[diffusion_explorer.solvers]
tiny = plug_tiny
tiny-call = plug_tiny_call:setup
tiny-missing = plug_tiny_missing
"""


def test_entry_points_of_an_installed_package(tmp_path, monkeypatch):
    # A distribution as pip would install it: a module, and a .dist-info with METADATA and
    # entry_points.txt, on sys.path.
    _good(tmp_path / "plug_tiny.py", "tiny-euler")
    _write(tmp_path / "plug_tiny_call.py", """\
        import explorer as ex

        CALLS = []


        def setup():
            CALLS.append(1)
            ex.solvers.register("tiny-called", ex.solvers.spec("ddim").fn, order=1, summary="DDIM under another name")
        """)
    info = tmp_path / "plug_tiny-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-tiny\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("EXPLORER_PLUGINS", raising=False)

    results = {r.source.split(" = ")[0]: r for r in ex.plugins.load_configured()}
    assert results["entry point tiny"].names == ("tiny-euler",) and results["entry point tiny"].error is None
    assert "(package plug-tiny)" in results["entry point tiny"].source
    assert results["entry point tiny-call"].names == ("tiny-called",) and results["entry point tiny-call"].error is None
    missing = results["entry point tiny-missing"]
    assert missing.names == () and "plug_tiny_missing" in missing.error and "No module named" in missing.error
    model, x, ts = _problem()
    np.testing.assert_allclose(ex.sample(model, x, ts, "tiny-called").x, ex.sample(model, x, ts, "ddim").x, rtol=1e-13)

    again = {r.source.split(" = ")[0]: r for r in ex.plugins.load_configured()}
    assert again == results
    assert sys.modules["plug_tiny_call"].CALLS == [1] and _runs(tmp_path / "plug_tiny.py") == 1  # each loaded once


# The example plug-in, examples/my_solver.py: Heun in sigma/alpha.


@pytest.fixture
def example():
    assert ex.plugins.load(EXAMPLE) == ["heun-sigma"]
    return "heun-sigma"


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "edm", "rectified-flow"])
def test_example_measures_its_declared_order(example, schedule):
    s = ex.schedules.get(schedule)
    model = ex.AnalyticModel(smooth_mixture(), s)
    x = model.prior_sample(200, 1)
    ref = ex.reference(model, x, ex.timesteps(s, 4))
    measured, errors = measured_order(model, x, example, ref.x[-1])
    assert abs(measured - ex.solvers.order(example)) < 0.2, (measured, errors)  # measured 2.07-2.11


def test_example_is_edms_heun_on_any_schedule(example):
    # Under vp-linear, Heun in y = x / alpha, s = sigma / alpha is the built-in Heun run on the model
    # converted to edm's clock (alpha = 1, sigma = t) on the grid t' = sigma / alpha, mapped back by alpha.
    vp = ex.schedules.get("vp-linear")
    model = ex.AnalyticModel(smooth_mixture(), vp)
    ts = ex.timesteps(vp, 10, "karras", float(vp.t_of_lambda(-math.log(40.0))), float(vp.t_of_lambda(-math.log(0.05))))
    x = model.prior_sample(50, np.random.default_rng(0), t=ts[0])
    mine = ex.sample(model, x, ts, example)
    a = np.asarray(vp.alpha(ts))
    converted = ex.conversion.ConvertedModel(model, "edm")
    heun = ex.sample(converted, x / a[0], np.asarray(vp.sigma(ts)) / a, "heun")
    np.testing.assert_allclose(mine.x, heun.x * a[:, None, None], rtol=1e-10, atol=1e-12)
    assert mine.nfe == heun.nfe == 20
    assert np.abs(mine.x[-1] - ex.sample(model, x, ts, "heun").x[-1]).max() > 1e-3  # not Heun in vp's own t
    edm = ex.AnalyticModel(smooth_mixture(), ex.schedules.get("edm"))
    x, ts = edm.prior_sample(50, 0), ex.timesteps(edm.schedule, 8)
    np.testing.assert_allclose(ex.sample(edm, x, ts, example).x, ex.sample(edm, x, ts, "heun").x, rtol=1e-12)


def test_example_runs_on_torch_states(example):
    torch = pytest.importorskip("torch")
    model = ex.AnalyticModel(smooth_mixture(), ex.schedules.get("vp-cosine"))
    x, ts = model.prior_sample(20, 0), ex.timesteps(model.schedule, 6)
    traj = ex.sample(TorchModel(model), torch.from_numpy(x), ts, example)
    assert isinstance(traj.x, torch.Tensor)
    np.testing.assert_allclose(traj.x.numpy(), ex.sample(model, x, ts, example).x, rtol=1e-12)


# Stability of plug-in solvers: read off their own code like the built-ins'.


def test_stability_of_the_example_is_heuns(example):
    assert example in S.covered() and S.variable(example) == "sigma/alpha"
    np.testing.assert_allclose(S.recurrence(example), S.recurrence("heun"), atol=1e-12)  # 1 + z + z^2 / 2
    assert S.real_interval(example) == pytest.approx(-2.0, abs=1e-6)
    model, x, ts = _problem("vp-linear", steps=6)
    traj = ex.sample(model, x, ts, example)
    ev = S.step_eigenvalues(model, traj)  # in sigma/alpha, the plug-in's variable
    np.testing.assert_allclose(ev, S.step_eigenvalues(model, traj, var="sigma/alpha"))
    assert S.variable(example, variable="t") == "t"


def test_stability_of_an_exponential_integrator_plug_in():
    ex.solvers.register("my-2m", ex.solvers.spec("dpmpp-2m").fn, order=2, multistep=True)
    assert S.variable("my-2m") == "lambda"  # not a constant recurrence with equal steps in sigma/alpha
    np.testing.assert_allclose(S.recurrence("my-2m", h=0.9), S.recurrence("dpmpp-2m", h=0.9), atol=1e-12)


def test_a_solver_registered_again_gets_a_new_region():
    # The regions are cached; a plug-in replaced under the same name (a reload) is a new method.
    ex.solvers.register("my-method", ex.solvers.spec("ddim").fn, order=1)
    assert S.real_interval("my-method") == pytest.approx(-2.0, abs=1e-6)
    np.testing.assert_allclose(S.recurrence("my-method"), S.recurrence("ddim"), atol=1e-12)
    ex.solvers.register("my-method", ex.solvers.spec("heun").fn, order=2, nfe_per_step=2, replace=True)
    np.testing.assert_allclose(S.recurrence("my-method"), S.recurrence("heun"), atol=1e-12)  # 1 + z + z^2 / 2, not 1 + z


def test_plug_ins_whose_region_cannot_be_computed_say_why():
    _register_ddim("my-noisy", stochastic=True)

    def clipped(model, x, ts, rng, record):  # a step that is not linear in the model output
        for i in range(len(ts) - 1):
            d = model.denoise(x, ts[i])
            d = d / (1.0 + np.abs(d))
            x = record(i, x + (ts[i + 1] - ts[i]) * (x - d) / ts[i], d)

    ex.solvers.register("my-clipped", clipped, order=1)
    why = S.not_covered()
    assert "my-noisy" in why and "draws noise" in why["my-noisy"]
    assert "my-clipped" in why and "no linear recurrence" in why["my-clipped"]
    assert "my-noisy" not in S.covered() and "my-clipped" not in S.covered()
    with pytest.raises(ValueError, match="no linear recurrence"):
        S.region("my-clipped", np.zeros(3))
    _register_ddim("my-deterministic")  # eta = 0 by default: covered, DDIM's region
    assert "my-deterministic" in S.covered()
    np.testing.assert_allclose(S.recurrence("my-deterministic"), S.recurrence("ddim"), atol=1e-12)


# The app with plug-ins: EXPLORER_PLUGINS names the example and a broken file.

BROKEN_TEXT = "import explorer as ex\nraise RuntimeError('this plug-in is broken on purpose')\n"


@pytest.fixture
def plugin_app(tmp_path, monkeypatch):
    """EXPLORER_PLUGINS = the example and a broken file; the app's cached load is cleared before
    and after, so that no other test sees these plug-ins."""
    broken = _write(tmp_path / "broken_plugin.py", BROKEN_TEXT)
    with app_plugins(monkeypatch, EXAMPLE, broken):
        yield broken


def _only_the_broken_plugin_failed(at, broken: Path) -> None:
    assert not at.exception, [e.message for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and str(broken) in errors[0], errors
    assert "RuntimeError: this plug-in is broken on purpose" in errors[0]
    assert any("heun-sigma" in c.value and "my_solver.py" in c.value for c in at.sidebar.caption)


def test_app_runs_the_example_on_trajectories(plugin_app):
    at = open_page_from_url(solver="heun-sigma", steps="6", n="300")
    _only_the_broken_plugin_failed(at, plugin_app)
    box = at.selectbox(key="solver")
    assert box.value == "heun-sigma" and "heun-sigma" in box.options
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["NFE"] == "12"  # 6 Heun steps, 2 evaluations each
    assert len(charts(at)) == 3
    # chosen with the widget as well: from euler back to the plug-in
    at.selectbox(key="solver").set_value("euler").run()
    assert {m.label: m.value for m in at.metric}["NFE"] == "6"
    at.selectbox(key="solver").set_value("heun-sigma").run()
    _only_the_broken_plugin_failed(at, plugin_app)
    assert {m.label: m.value for m in at.metric}["NFE"] == "12"


@pytest.mark.parametrize("page, query, widgets", [
    ("app_pages/solver_lab.py", dict(solvers=["heun-sigma", "heun"], n="100", nfes="4, 8", a="heun-sigma", nfe="8"),
     {"multiselect": "solvers", "selectbox": "a"}),
    ("app_pages/stability.py", dict(methods=["heun-sigma", "heun"], run_solver="heun-sigma", run_n="50", run_steps="6",
                                    g_steps="6", toy_steps="26"),
     {"multiselect": "methods", "selectbox": "run_solver"}),
    ("app_pages/images.py", dict(model="empirical", solver="heun-sigma", nfe="6", images="8", solver_b="heun-sigma"),
     {"selectbox": "solver"}),
    ("app_pages/schedules.py", dict(path_solver="heun-sigma", path_steps="6", particles="100", sweep_nfes="6",
                                    grid_nfe="4"),
     {"selectbox": "path_solver"}),
    # 100 samples on a 100-step grid (the page's defaults: 1000 on every timestep, 6.7 against 2.5 CPU-s here)
    ("app_pages/mode_interpolation.py", dict(samples="100", sample_steps="100"), {}),
])
def test_every_page_lists_the_plugin_and_shows_the_broken_one(plugin_app, page, query, widgets):
    at = open_page_from_url(page, **query)
    _only_the_broken_plugin_failed(at, plugin_app)
    for kind, key in widgets.items():
        widget = getattr(at, kind)(key=key)
        assert "heun-sigma" in widget.options
        assert "heun-sigma" in (widget.value if kind == "multiselect" else [widget.value])
    text = " ".join(m.value for m in at.markdown)
    if page.endswith("solver_lab.py"):  # the table names the plug-in and where it came from
        assert "**heun-sigma** (plug-in: explorer_plugin_my_solver)" in text
    if page.endswith("stability.py"):  # its region is Heun's: the real interval [-2, 0]
        assert "| heun-sigma | sigma/alpha | [-2, 0] |" in text and "| heun | t | [-2, 0] |" in text
    if page.endswith("schedules.py"):  # Heun in sigma/alpha commutes with a change of clock (Heun in t does not)
        gap = float(next(m.value for m in at.metric if m.label == "heun-sigma under B vs the converted path"))
        assert gap < 1e-10, gap
    if page.endswith("images.py"):
        assert {m.label: m.value for m in at.metric}["NFE spent"] == "6"
