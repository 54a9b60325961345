"""Bring your own model: ex.models.wrap turns a torch module predicting eps, x0, v or the velocity
under a named or tabulated schedule, fed any of the time-input conventions, into a model that samples
exactly like the model it computes; the shipped learned models re-wrapped equal themselves; wrong
shapes, NaN and bad declarations are named; weights load with weights_only=True; models register
from plug-ins (files, EXPLORER_PLUGINS, the diffusion_explorer.models entry points) and run on the
Trajectories and Images pages."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import explorer as ex
from explorer import wrapped
from explorer.learned import EpsMLP
from apptest import app_plugins, charts, open_page_from_url
from fakes import smooth_mixture

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_model.py"
SHIPPED_1D = ROOT / "data" / "gmm-1d-3modes.pt"


@pytest.fixture(autouse=True)
def clean_registries():
    """Every model, solver and plug-in module a test adds is removed afterwards: tests do not leak."""
    models, solvers, modules = set(ex.models.registered()), set(ex.solvers.names()), set(sys.modules)
    yield
    for name in set(ex.models.registered()) - models:
        ex.models.unregister(name)
    for name in set(ex.solvers.names()) - solvers:
        ex.solvers.unregister(name)
    for module in set(sys.modules) - modules:
        if module.startswith(("explorer_plugin_", "plug_")):
            del sys.modules[module]


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()
    return path


# A network that computes the exact answer: the AnalyticModel's prediction, from its time input.


def _t_of_sigma_vp(schedule, sigma):
    """t from sigma on a variance-preserving schedule: alpha = sqrt((1 - sigma)(1 + sigma)), then t(lambda)."""
    return schedule.t_of_lambda(0.5 * np.log((1 - sigma) * (1 + sigma)) - np.log(sigma))


def _flow_table():
    """Rectified flow written as a table (alpha = 1 - t, sigma = t at 41 times): interpolants.tabulated."""
    t = np.linspace(0.0, 1.0, 41)
    return ex.interpolants.tabulated(t, 1 - t, t, t_min=1e-3, t_max=0.999)


# name -> (schedule, t as a function of sigma): the network inverts its time input with it
SCHEDULES = {
    "edm": (lambda: ex.schedules.get("edm"), lambda sched, s: s),
    "vp-cosine": (lambda: ex.schedules.get("vp-cosine"), _t_of_sigma_vp),
    "ddpm-table": (lambda: ex.learned.ddpm_schedule(), _t_of_sigma_vp),  # from_alphas_cumprod of DDPM's betas
    "flow-table": (_flow_table, lambda sched, s: s),
}
# name -> t as a function of the time input c, for a schedule (the inverse of each convention)
INVERSES = {
    "t": lambda sched, inv, c: c,
    "index": lambda sched, inv, c: c,
    "sigma": lambda sched, inv, c: inv(sched, c),
    "log-sigma": lambda sched, inv, c: inv(sched, np.exp(c)),
    "c-noise": lambda sched, inv, c: inv(sched, np.exp(4 * c)),
    "lambda": lambda sched, inv, c: sched.t_of_lambda(c),
    "callable": lambda sched, inv, c: (c - 1.0) / 3.0,
}
CALLABLE = lambda t: 3.0 * t + 1.0  # noqa: E731  (a made-up convention: the network sees 3 t + 1)


class ExactNet(torch.nn.Module):
    """The exact eps, x0, v or velocity of a mixture as a torch module fed time input c: it recovers t
    from c (the convention's inverse) and asks the AnalyticModel. Records the inputs it was given."""

    def __init__(self, model, prediction, t_of_input):
        super().__init__()
        self.model, self.prediction, self.t_of_input = model, prediction, t_of_input
        self.seen = []

    def forward(self, x, c):
        self.seen.append((x.dtype, c.dtype, tuple(c.shape)))
        xn, t = x.detach().numpy().astype(np.float64), self.t_of_input(c.detach().numpy().astype(np.float64))
        m, s = self.model, self.model.schedule
        if np.ptp(t) == 0:  # one time for all rows, as solvers call
            x0 = m.denoise(xn, float(t[0]))
            a, sg, da, ds = (float(f(t[0])) for f in (s.alpha, s.sigma, s.d_alpha, s.d_sigma))
        else:
            x0 = np.stack([m.denoise(xn[i:i + 1], float(t[i]))[0] for i in range(len(t))])
            a, sg, da, ds = (np.asarray(f(t))[:, None] for f in (s.alpha, s.sigma, s.d_alpha, s.d_sigma))
        eps = (xn - a * x0) / sg
        out = {"x0": x0, "eps": eps, "v": a * eps - sg * x0, "velocity": da * x0 + ds * eps}[self.prediction]
        return torch.from_numpy(out).to(x.dtype)


def _exact_net(schedule_name, time_input, prediction, target=None):
    make, inv = SCHEDULES[schedule_name]
    schedule = make()
    model = ex.AnalyticModel(target or smooth_mixture(), schedule)
    inverse = INVERSES[time_input]
    net = ExactNet(model, prediction, lambda c: inverse(schedule, inv, c))
    return model, net, (CALLABLE if time_input == "callable" else time_input)


CASES = [(s, c) for s in SCHEDULES for c in INVERSES if c != "index" or s == "ddpm-table"]


@pytest.mark.parametrize("prediction", wrapped.PREDICTIONS)
@pytest.mark.parametrize("schedule_name, time_input", CASES)
def test_a_wrapped_exact_network_samples_as_the_exact_model(prediction, schedule_name, time_input):
    model, net, convention = _exact_net(schedule_name, time_input, prediction)
    mine = ex.models.wrap(net, model.schedule, prediction, time_input=convention, target=model.target)
    ts = ex.timesteps(model.schedule, 8, "karras")
    x = model.prior_sample(32, np.random.default_rng(0), t=ts[0])
    for solver in ("dpmpp-2m", "heun"):
        ours, exact = ex.sample(mine, x, ts, solver), ex.sample(model, x, ts, solver)
        assert not exact.diverged
        scale = np.abs(exact.x).max()
        # measured: at most 5e-15 of the largest state over all 100 cases (median 5e-16)
        assert np.abs(ours.x - exact.x).max() <= 1e-13 * scale, (solver, np.abs(ours.x - exact.x).max(), scale)
    # the four methods at a grid time: the exact ones
    t = float(ts[3])
    for method in ("denoise", "eps", "score", "velocity"):
        np.testing.assert_allclose(getattr(mine, method)(x, t), getattr(model, method)(x, t), rtol=1e-9, atol=1e-9,
                                   err_msg=method)
    assert net.seen[-1] == (torch.float64, torch.float64, (32,))  # no parameters: float64, one time per row


def test_the_time_input_convention_matters():
    # the network expects sigma; declared as "t" (or log-sigma), it samples something else
    model, net, _ = _exact_net("vp-cosine", "sigma", "eps")
    ts = ex.timesteps(model.schedule, 8)
    x = model.prior_sample(32, np.random.default_rng(0), t=ts[0])
    exact = ex.sample(model, x, ts, "dpmpp-2m").x[-1]
    outcomes = {}
    for wrong in ("t", "log-sigma", "lambda"):
        try:
            traj = ex.sample(ex.models.wrap(net, model.schedule, "eps", time_input=wrong, target=model.target), x, ts,
                             "dpmpp-2m")
            outcomes[wrong] = "diverged" if traj.diverged else float(np.abs(traj.x[-1] - exact).max())
        except ValueError as err:  # the network fed a time outside its domain returned NaN: named
            assert "model 'ExactNet' at t = " in str(err)
            outcomes[wrong] = "NaN"
    assert all(v in ("diverged", "NaN") or v > 1e-2 for v in outcomes.values()), outcomes


@pytest.mark.parametrize("wrong", ["eps", "x0", "v"])
def test_the_prediction_matters(wrong):
    # a velocity network declared as another prediction samples something else (on vp-cosine: under edm,
    # alpha' = 0 and sigma' = 1 make the velocity eps itself)
    model, net, _ = _exact_net("vp-cosine", "lambda", "velocity")
    ts = ex.timesteps(model.schedule, 8)
    x = model.prior_sample(32, np.random.default_rng(0), t=ts[0])
    traj = ex.sample(ex.models.wrap(net, model.schedule, wrong, time_input="lambda", target=model.target), x, ts, "euler")
    assert traj.diverged or np.abs(traj.x[-1] - ex.sample(model, x, ts, "euler").x[-1]).max() > 1e-2


def test_per_particle_times_and_torch_states():
    model, net, _ = _exact_net("vp-cosine", "lambda", "v")
    mine = ex.models.wrap(net, model.schedule, "v", time_input="lambda", target=model.target)
    x = model.prior_sample(6, np.random.default_rng(1), t=0.5)
    t = np.linspace(0.2, 0.7, 6)
    np.testing.assert_allclose(mine.denoise(x, t), np.stack([model.denoise(x[i:i + 1], t[i])[0] for i in range(6)]),
                               rtol=1e-10, atol=1e-12)
    # torch in, torch out: the state's dtype kept (the network runs in x's dtype when it has no parameters)
    xt = torch.from_numpy(x).to(torch.float32)
    out = mine.denoise(xt, 0.4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), model.denoise(xt.numpy().astype(np.float64), 0.4), rtol=1e-5, atol=1e-5)
    assert net.seen[-1][:2] == (torch.float32, torch.float32)
    # numpy in, float64 numpy out
    assert isinstance(mine.eps(x, 0.4), np.ndarray) and mine.eps(x, 0.4).dtype == np.float64


def test_a_float32_network_gets_float32_and_gives_float64_back():
    seen = []

    class Halve(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, c):
            seen.append((x.dtype, c.dtype))
            return self.w * x

    mine = ex.models.wrap(Halve(), "edm", "x0", dim=2)
    x = np.array([[1.0, 3.0], [1 / 3, 2.0]])
    out = mine.denoise(x, 1.0)
    assert seen == [(torch.float32, torch.float32)] and out.dtype == np.float64
    np.testing.assert_array_equal(out, (x.astype(np.float32) * np.float32(0.5)).astype(np.float64))
    assert mine.prior_sample(5, 0).shape == (5, 2)


# The shipped learned models, re-wrapped: the same numbers.


def test_the_shipped_mlp_rewrapped_is_the_learned_model():
    learned = ex.models.load_pretrained("gmm-1d-3modes")
    mine = ex.models.wrap(learned.net, learned.schedule, "eps", time_input="index", target=learned.target)
    ts = ex.timesteps(learned.schedule, 20, "uniform-t", 363.0, 0.0)
    x = learned.prior_sample(500, 0, t=ts[0])
    for solver in ("dpmpp-2m", "ddpm"):
        a = ex.sample(learned, x, ts, solver, rng=np.random.default_rng(1))
        b = ex.sample(mine, x, ts, solver, rng=np.random.default_rng(1))
        assert not a.diverged and np.array_equal(a.x, b.x), solver
    xt = torch.randn(7, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method in ("denoise", "eps", "score", "velocity"):
        for t in (5.0, 120.5):
            assert torch.equal(getattr(mine, method)(xt, t), getattr(learned, method)(xt, t)), method
    # a fresh network from the weights file (weights_only=True) is the same network
    fresh = ex.models.wrap(EpsMLP(1), learned.schedule, "eps", time_input="index", target=learned.target,
                           weights=SHIPPED_1D)
    assert np.array_equal(ex.sample(fresh, x, ts, "dpmpp-2m").x, ex.sample(learned, x, ts, "dpmpp-2m").x)
    assert np.array_equal(mine.prior_sample(9, 4), learned.prior_sample(9, 4))


def test_the_shipped_unet_rewrapped_is_the_image_model():
    unet = ex.models.load_pretrained("digits")
    mine = ex.models.wrap(unet.net, unet.schedule, "v", time_input="index", image_shape=unet.image_shape,
                          dataset="digits")
    ts = ex.timesteps(unet.schedule, 6)
    x = unet.prior_sample(8, 0)
    assert torch.equal(x, mine.prior_sample(8, 0)) and x.dtype == torch.float32
    with torch.no_grad():
        a, b = ex.sample(unet, x, ts, "dpmpp-2m"), ex.sample(mine, x, ts, "dpmpp-2m")
    assert isinstance(b.x, torch.Tensor) and b.x.dtype == torch.float32
    assert torch.equal(a.x, b.x)  # v / (alpha^2 + sigma^2): that 1 + 1e-16 is 1 in float32


# Errors: named, with the model and the time.


class Broken(torch.nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x, c):
        if self.how == "shape":
            return x[:, :1]
        if self.how == "nan":
            return torch.where(c[:, None] < 1.0, x * float("nan"), x)  # NaN below t = 1 only
        if self.how == "tuple":
            return x, c
        return x


@pytest.mark.parametrize("how, words", [
    ("shape", ["'bad-net'", "t = 0.5", "shape (4, 1)", "input of shape (4, 2)"]),
    ("nan", ["'bad-net'", "t = 0.5", "NaN or inf in 8 of 8 values", "finite input"]),
    ("tuple", ["'bad-net'", "t = 0.5", "returned a tuple"]),
])
def test_wrong_outputs_name_the_model_and_the_time(how, words):
    mine = ex.models.wrap(Broken(how), "edm", "x0", name="bad-net", dim=2)
    x = np.ones((4, 2))
    for method in ("denoise", "eps", "score", "velocity"):
        with pytest.raises(ValueError) as caught:
            getattr(mine, method)(x, 0.5)
        for word in words:
            assert word in str(caught.value), (method, str(caught.value))
    if how == "nan":
        assert np.array_equal(mine.denoise(x, 2.0), x)  # fine where the network is
        with pytest.raises(ValueError, match=r"'bad-net' at t in \[0\.2, 3\]"):
            mine.denoise(x, np.array([0.2, 1.5, 2.0, 3.0]))
        # ex.sample passes the model's message on
        ts = ex.timesteps(mine.schedule, 6, t_start=4.0, t_end=0.1)
        with pytest.raises(ValueError, match=r"model 'bad-net' at t = 0\.\d+"):
            ex.sample(mine, mine.prior_sample(4, 0, t=4.0), ts, "euler")


def test_a_diverging_run_is_marked_not_raised():
    # a run blowing up to states whose square overflows the network's float32: the NaN the network then
    # returns is the run's divergence (ex.sample marks it), as for the learned model itself
    learned = ex.models.load_pretrained("gmm-1d-3modes")
    mine = ex.models.wrap(learned.net, learned.schedule, "eps", time_input="index", target=learned.target)
    ts = ex.timesteps(learned.schedule, 20)  # from t = 999, where alpha = 3e-24: eps errors / alpha blow up
    x = learned.prior_sample(500, 0)
    a, b = ex.sample(learned, x, ts, "dpmpp-2m"), ex.sample(mine, x, ts, "dpmpp-2m")
    assert a.diverged_at == b.diverged_at == 18 and b.diverged_reason == a.diverged_reason


def test_the_time_input_must_give_one_value_per_row():
    mine = ex.models.wrap(Broken("ok"), "edm", "x0", name="scalar-time", dim=2, time_input=lambda t: t[:1])
    with pytest.raises(ValueError, match=r"'scalar-time': time_input returned shape \(1,\) for 4 times"):
        mine.denoise(np.ones((4, 2)), 0.5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(prediction="score"), "prediction must be one of ['eps', 'x0', 'v', 'velocity'], got 'score'"),
    (dict(time_input="sigmas"), "time_input must be one of"),
    (dict(time_input=3), "time_input must be one of"),
    (dict(time_input="index"), "time_input='index' needs a table schedule"),
    (dict(schedule="nope"), "unknown schedule 'nope'"),
    (dict(schedule=3), "schedule must be a Schedule"),
    (dict(net=3), "net must be a torch module or a callable"),
    (dict(target=np.zeros(2)), "target must be a GaussianMixture"),
    (dict(dim=0), "dim must be a positive integer"),
    (dict(target=smooth_mixture(), dim=3), "dim = 3 disagrees with the target's dimension 2"),
    (dict(image_shape=(8, 8)), "image_shape must be (C, H, W)"),
    (dict(image_shape=(1, 8, 8), dim=2), "image_shape is for image models"),
    (dict(dataset="digits"), "pass image_shape= as well"),
    (dict(dtype="float32"), "dtype must be a torch.dtype"),
])
def test_bad_declarations_name_the_argument(kwargs, word):
    args = dict(net=Broken("ok"), schedule="edm", prediction="x0")
    args.update(kwargs)
    with pytest.raises(ValueError) as caught:
        ex.models.wrap(args.pop("net"), args.pop("schedule"), args.pop("prediction"), **args)
    assert word in str(caught.value), str(caught.value)


def test_a_model_without_shape_says_so_when_asked_for_starting_points():
    with pytest.raises(ValueError, match="'Broken' has no shape: pass dim=, target= or image_shape="):
        ex.models.wrap(Broken("ok"), "edm", "x0").prior_sample(3, 0)


# load_weights: torch.load(weights_only=True), clear messages.


def test_load_weights_round_trip_and_explorer_files(tmp_path):
    net = torch.nn.Linear(2, 2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    other = torch.nn.Linear(2, 2)
    assert ex.models.load_weights(other, tmp_path / "w.pt") is other
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    # explorer's own files: {"state_dict", "config", "history"}, float16 weights cast to the network's float32
    learned = ex.models.load_pretrained("gmm-1d-3modes")
    fresh = ex.models.load_weights(EpsMLP(1), SHIPPED_1D)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), learned.net.state_dict().values()))
    assert not fresh.training


def _touch(path):
    Path(path).touch()


class Payload:
    """Unpickling it would call _touch: the code a weights file must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def test_a_file_with_a_pickled_object_is_refused(tmp_path):
    net = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    marker = tmp_path / "code-ran"
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "extra": Payload(str(marker))}, bad)
    with pytest.raises(ValueError) as caught:
        ex.models.load_weights(net, bad)
    message = str(caught.value)
    assert str(bad) in message and "pickled Python object" in message and "_touch" in message, message
    assert "torch.save(net.state_dict(), path)" in message
    assert not marker.exists()  # refused before anything ran
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # and nothing loaded
    with pytest.raises(ValueError, match="pickled Python object"):
        ex.models.wrap(net, "edm", "x0", dim=2, weights=bad)


@pytest.mark.parametrize("make, word", [
    (lambda tmp: tmp / "missing.pt", "no such file"),
    (lambda tmp: _bytes(tmp / "garbage.pt", b"not a torch file"), "is not a torch weights file"),
    (lambda tmp: _saved(tmp / "list.pt", [torch.zeros(2)]), "holds no state dict"),
    (lambda tmp: _saved(tmp / "other.pt", torch.nn.Linear(3, 2).state_dict()), "does not fit Linear"),
    (lambda tmp: _saved(tmp / "keys.pt", {"w": torch.zeros(2)}), "does not fit Linear"),
])
def test_bad_weights_files_are_named(tmp_path, make, word):
    path = make(tmp_path)
    with pytest.raises(ValueError) as caught:
        ex.models.load_weights(torch.nn.Linear(2, 2), path)
    assert word in str(caught.value) and str(path) in str(caught.value), str(caught.value)


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _saved(path, obj):
    torch.save(obj, path)
    return path


# The registry: ex.models.register, registered, get.


def _flow_factory(calls=None):
    def build():
        if calls is not None:
            calls.append(1)
        model, net, _ = _exact_net("edm", "sigma", "x0")
        return ex.models.wrap(net, model.schedule, "x0", time_input="sigma", target=model.target)

    return build


def test_a_registered_model_is_built_once_on_first_use():
    calls = []
    assert ex.models.register("tmp-exact", _flow_factory(calls), kind="mixture", summary="exact") == "tmp-exact"
    assert calls == [] and "tmp-exact" in ex.models.registered() and "tmp-exact" in ex.models.registered("mixture")
    assert "tmp-exact" not in ex.models.registered("image")
    model = ex.models.get("tmp-exact")
    assert ex.models.get("tmp-exact") is model and calls == [1]
    assert model.name == "tmp-exact"  # messages name it as it is listed
    assert ex.models.info("tmp-exact") == {"name": "tmp-exact", "kind": "mixture", "summary": "exact",
                                           "source": __name__}
    ex.models.register("tmp-exact", _flow_factory(calls), kind="mixture", replace=True)
    assert ex.models.get("tmp-exact") is not model and calls == [1, 1]  # a new factory builds anew
    ex.models.unregister("tmp-exact")
    assert "tmp-exact" not in ex.models.registered()
    with pytest.raises(ValueError, match="unknown model 'tmp-exact'"):
        ex.models.get("tmp-exact")


@pytest.mark.parametrize("name, factory, kwargs, word", [
    ("", print, dict(kind="mixture"), "model name must be a non-empty string"),
    ("tmp-m", 3, dict(kind="mixture"), "factory must be callable"),
    ("tmp-m", print, dict(kind="audio"), "kind must be one of ['mixture', 'image']"),
])
def test_bad_registrations_name_the_argument(name, factory, kwargs, word):
    with pytest.raises(ValueError) as caught:
        ex.models.register(name, factory, **kwargs)
    assert word in str(caught.value)


def test_registering_a_name_twice_needs_replace():
    ex.models.register("tmp-twice", _flow_factory(), kind="mixture")
    with pytest.raises(ValueError, match="'tmp-twice' is already registered"):
        ex.models.register("tmp-twice", _flow_factory(), kind="mixture")


def _raises():
    raise RuntimeError("no weights here")


@pytest.mark.parametrize("factory, kind, words", [
    (_raises, "mixture", ["'tmp-bad' failed to build", "RuntimeError: no weights here"]),
    (lambda: 3, "mixture", ["'tmp-bad'", "is not a model"]),
    (lambda: ex.models.wrap(Broken("ok"), "edm", "x0", dim=2), "mixture", ["kind='mixture'", "no GaussianMixture .target"]),
    (lambda: ex.models.wrap(Broken("ok"), "edm", "x0", dim=2), "image", ["kind='image'", "no .image_shape"]),
])
def test_a_factory_that_fails_is_named(factory, kind, words):
    ex.models.register("tmp-bad", factory, kind=kind)
    for _ in range(2):  # not cached: every call says so
        with pytest.raises(ValueError) as caught:
            ex.models.get("tmp-bad")
        for word in words:
            assert word in str(caught.value), str(caught.value)


# Plug-ins that declare models: the same loader as solvers.

MODEL_PLUGIN = """\
import numpy as np
import explorer as ex
from pathlib import Path

Path(__file__).with_suffix(".runs").open("a").write("run\\n")


def build():
    target = ex.targets.get("gmm-1d-3modes")
    exact = ex.AnalyticModel(target, ex.schedules.get("edm"))
    net = lambda x, sigma: __import__("torch").from_numpy(exact.denoise(x.numpy(), float(sigma[0])))
    return ex.models.wrap(net, "edm", "x0", time_input="sigma", target=target)


ex.models.register({name!r}, build, kind="mixture", summary="exact, through a plug-in")
"""


def _runs(path: Path) -> int:
    runs = path.with_suffix(".runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_a_plugin_file_registers_a_model(tmp_path):
    path = _write(tmp_path / "model_plugin.py", MODEL_PLUGIN.format(name="tmp-plug"))
    assert ex.plugins.load(path) == ["tmp-plug"]
    assert ex.models.info("tmp-plug")["source"] == "explorer_plugin_model_plugin"
    assert ex.plugins.load(path) == ["tmp-plug"] and _runs(path) == 1  # loaded once
    model = ex.models.get("tmp-plug")
    exact = ex.AnalyticModel(model.target, model.schedule)
    ts = ex.timesteps(model.schedule, 6)
    x = exact.prior_sample(20, 0)
    np.testing.assert_allclose(ex.sample(model, x, ts, "heun").x, ex.sample(exact, x, ts, "heun").x, rtol=1e-13, atol=1e-13)
    _write(path, MODEL_PLUGIN.format(name="tmp-plug") + "\nex.solvers.register('tmp-euler', ex.solvers.spec('euler').fn, order=1)\n")
    assert ex.plugins.load(path, reload=True) == ["tmp-euler", "tmp-plug"] and _runs(path) == 2  # solvers, then models
    assert ex.models.get("tmp-plug") is not model  # the new factory


def test_a_broken_model_plugin_leaves_nothing_behind(tmp_path):
    path = _write(tmp_path / "half.py", MODEL_PLUGIN.format(name="tmp-half") + "\nraise RuntimeError('later')\n")
    with pytest.raises(ex.plugins.PluginError, match="RuntimeError: later") as caught:
        ex.plugins.load(path)
    assert str(path) in str(caught.value)
    assert "tmp-half" not in ex.models.registered()
    with pytest.raises(ex.plugins.PluginError, match="registered no solver or model.*ex.models.register"):
        ex.plugins.load(_write(tmp_path / "empty.py", "x = 1\n"))


def test_environment_and_entry_points_load_models(tmp_path, monkeypatch):
    env_file = _write(tmp_path / "env_models.py", MODEL_PLUGIN.format(name="tmp-env"))
    _write(tmp_path / "plug_models.py", MODEL_PLUGIN.format(name="tmp-entry"))
    info = tmp_path / "plug_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[diffusion_explorer.models]\nmine = plug_models\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EXPLORER_PLUGINS", str(env_file))
    results = {r.source.split(" = ")[0]: r for r in ex.plugins.load_configured()}
    assert results[str(env_file)] == ex.plugins.Loaded(str(env_file), ("tmp-env",), None, ("tmp-env",))
    entry = results["entry point mine"]
    assert entry.names == entry.models == ("tmp-entry",) and entry.error is None and "(package plug-models)" in entry.source
    assert ex.models.info("tmp-entry")["source"] == "plug_models"
    assert {"tmp-env", "tmp-entry"} <= set(ex.models.registered("mixture"))


# The example plug-in, examples/my_model.py.


@pytest.fixture
def example():
    assert ex.plugins.load(EXAMPLE) == ["my-mlp-1d", "my-flow-2d"]


def test_example_mlp_is_the_shipped_model(example):
    mine, learned = ex.models.get("my-mlp-1d"), ex.models.load_pretrained("gmm-1d-3modes")
    assert mine.schedule.t_max == 363 and np.array_equal(mine.schedule.alphas_cumprod, learned.schedule.alphas_cumprod)
    ts = ex.timesteps(mine.schedule, 12)
    x = mine.prior_sample(300, 0)
    assert np.array_equal(ex.sample(mine, x, ts, "dpmpp-2m").x, ex.sample(learned, x, ts, "dpmpp-2m").x)


@pytest.mark.parametrize("solver", ["dpmpp-2m", "heun", "euler", "dpmpp-3m"])
def test_example_flow_is_the_exact_ring(example, solver):
    mine = ex.models.get("my-flow-2d")
    exact = ex.AnalyticModel(ex.targets.get("gmm-2d-ring8"), ex.schedules.get("rectified-flow"))
    assert mine.schedule == exact.schedule and mine.prediction == "velocity"
    ts = ex.timesteps(exact.schedule, 10)
    x = exact.prior_sample(400, 0)
    diff = np.abs(ex.sample(mine, x, ts, solver).x - ex.sample(exact, x, ts, solver).x).max()
    assert diff < 1e-12, diff  # measured 1e-14 to 3e-14
    np.testing.assert_allclose(mine.velocity(x, 0.5), exact.velocity(x, 0.5), rtol=1e-12, atol=1e-12)


# The app with model plug-ins: EXPLORER_PLUGINS names the example and a file of broken and image models.

APP_MODELS = """\
import torch
import explorer as ex


def nan_net():
    return ex.models.wrap(lambda x, c: x * float("nan"), "edm", "x0", time_input="sigma",
                          target=ex.targets.get("gmm-1d-3modes"))


def no_weights():
    raise FileNotFoundError("weights.pt is not here")


def digits_again():
    unet = ex.models.load_pretrained("digits")
    return ex.models.wrap(unet.net, unet.schedule, "v", time_input="index", image_shape=unet.image_shape,
                          dataset="digits")


ex.models.register("nan-net", nan_net, kind="mixture")
ex.models.register("no-weights", no_weights, kind="mixture")
ex.models.register("digits-again", digits_again, kind="image", summary="The shipped digits U-Net, re-wrapped.")
"""


@pytest.fixture
def model_app(tmp_path, monkeypatch):
    """EXPLORER_PLUGINS = the example and a file of broken and image models; the app's cached load is
    cleared before and after, so that no other test sees them."""
    extra = _write(tmp_path / "app_models.py", APP_MODELS)
    with app_plugins(monkeypatch, EXAMPLE, extra):
        yield extra


def _shown(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _expected(model, exact, steps: int, n: int, spacing="uniform-lambda", solver="dpmpp-2m") -> dict:
    """The metrics the Trajectories page shows for `model` sampled on its own schedule from x_T drawn
    by the exact model of its target (seed 0), measured against that target and the exact DOP853 path."""
    ts = ex.timesteps(exact.schedule, steps, spacing)
    x_T = exact.prior_sample(n, np.random.default_rng(0), t=ts[0])
    traj = ex.sample(model, x_T, ts, solver, rng=np.random.default_rng([0, 1]))
    ref = ex.reference(exact, x_T, ts, method="DOP853")
    return {"NFE": str(traj.nfe), "Distance to target": f"{ex.metrics.distance_to_target(traj.sample, exact.target):.3f}",
            "Error vs reference": f"{ex.metrics.endpoint_error(traj.sample, ref.sample):.3g}",
            "Mode mass error": f"{ex.metrics.coverage_error(traj.sample, exact.target):.3f}"}


def _clean(at) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_app_samples_with_the_example_models(model_app):
    at = open_page_from_url(denoiser="my-flow-2d", steps="6", n="300")
    _clean(at)
    box = at.selectbox(key="denoiser")
    assert box.value == "my-flow-2d" and box.options == ["exact", "my-mlp-1d", "my-flow-2d", "nan-net", "no-weights"]
    assert any("Plug-in models:" in c.value and "my_model.py" in c.value for c in at.sidebar.caption)
    assert not [w for w in at.selectbox if w.key in ("target", "schedule")]  # the model brings its own
    ring = ex.targets.get("gmm-2d-ring8")
    exact = ex.AnalyticModel(ring, ex.schedules.get("rectified-flow"))
    shown, expected = _shown(at), _expected(exact, exact, 6, 300)
    assert {k: shown[k] for k in expected} == expected  # the exact flow, on the ring's exact answer
    assert len(charts(at)) == 3
    # chosen with the widget: the shipped MLP re-wrapped samples as the learned model itself
    at.selectbox(key="denoiser").set_value("my-mlp-1d").run()
    _clean(at)
    learned = ex.models.load_pretrained("gmm-1d-3modes")
    exact = ex.AnalyticModel(learned.target, ex.schedules.from_alphas_cumprod(learned.schedule.alphas_cumprod, t_max=363))
    shown, expected = _shown(at), _expected(learned, exact, 6, 300)
    assert {k: shown[k] for k in expected} == expected
    # and back to the exact denoiser: the target and schedule controls return
    at.selectbox(key="denoiser").set_value("exact").run()
    _clean(at)
    assert at.selectbox(key="target").value == "gmm-1d-3modes" and at.selectbox(key="schedule").value == "edm"


def test_the_default_view_is_unchanged_with_models_registered(model_app):
    from test_app import _core_metrics

    at = open_page_from_url()
    _clean(at)
    assert at.selectbox(key="denoiser").value == "exact"
    shown, expected = _shown(at), _core_metrics({})
    assert {k: shown[k] for k in expected if k != "floor"} == {k: v for k, v in expected.items() if k != "floor"}


@pytest.mark.parametrize("name, words", [
    ("nan-net", ["Can't run this set-up", "model 'nan-net' at t = ", "NaN or inf"]),
    ("no-weights", ["model 'no-weights' failed to build", "FileNotFoundError: weights.pt is not here"]),
])
def test_a_broken_model_shows_its_message(model_app, name, words):
    at = open_page_from_url(denoiser=name, steps="4", n="100")
    assert not at.exception, [e.message for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    for word in words:
        assert word in errors[0], errors[0]
    at.selectbox(key="denoiser").set_value("my-flow-2d").run()  # the page still works
    _clean(at)
    assert _shown(at)["NFE"] == "4"


def test_images_page_lists_and_runs_a_registered_image_model(model_app):
    query = dict(nfe="6", images="16", solver="dpmpp-2m", solver_b="euler")
    plugin = open_page_from_url("app_pages/images.py", dataset="digits-again", **query)
    _clean(plugin)
    box = plugin.selectbox(key="dataset")
    assert box.value == "digits-again" and box.options == ["digits", "shapes", "digits-again"]
    assert not plugin.radio  # the registered model replaces the learned / memoriser choice
    learned = open_page_from_url("app_pages/images.py", dataset="digits", model="learned", **query)
    _clean(learned)
    shown = _shown(plugin)
    assert shown["NFE spent"] == "6" and shown["Frechet distance"] != "—"
    for key in ("Frechet distance", "Nearest training image"):  # the re-wrapped U-Net is the U-Net
        assert shown[key] == _shown(learned)[key], key
