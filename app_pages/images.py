"""Images: every solver on small image models (8x8 digits, Simple Shapes), learned or the exact
memoriser of the training set, or a registered image model (a plug-in's network); sample grid,
film strip, two solvers from the same noise, quality against NFE, and the shapes the model puts
where the data never has them."""

from __future__ import annotations

import numpy as np
import streamlit as st

import explorer as ex
from app_pages import chart, controls, precomputed
from explorer import datasets, image_models, image_quality as Q, image_training, shapes_analysis as S
from explorer.figures import hallucination as FH
from explorer.figures import images as FI

URL = controls.URL
DATASETS = ("digits", "shapes")
MODELS = {"learned": "learned U-Net", "empirical": "empirical optimum (memoriser)"}
PLUGIN = "plug-in"  # the kind of a registered image model: `dataset` then holds its name
# The registry as it is on this run (a page file runs top to bottom on every rerun), plug-ins
# included; rk45 picks its own NFE.
SOLVERS = tuple(n for n in ex.solvers.names() if n != "rk45")
REFERENCE_SEED = 12345  # real images the samples are measured against: a draw the models never trained on
PREVIEW = 16  # a new run's first images, sampled and shown first (needs_preview)


@st.cache_resource(max_entries=4, show_spinner=False)
def learned(dataset: str):
    return ex.models.load_pretrained(dataset)


@st.cache_resource(max_entries=4, show_spinner=False)
def empirical(dataset: str):
    """The exact denoiser of the shipped U-Net's training set (the training preset's data) on the
    cosine table the U-Nets are trained on."""
    images = image_models.training_set(image_training.PRESETS[dataset]["data"])
    return image_models.EmpiricalModel(images, image_models.cosine_schedule(), dataset=dataset)


def model_for(dataset: str, kind: str):
    if kind == PLUGIN:
        return ex.models.get(dataset)
    return learned(dataset) if kind == "learned" else empirical(dataset)


def data_of(dataset: str, kind: str) -> str | None:
    """The data the measures use (classifier, training set, shapes reader): the dataset itself, or the one
    a registered model declares (wrap(..., dataset=...)); None when it declares none of DATASETS."""
    if kind != PLUGIN:
        return dataset
    declared = getattr(ex.models.get(dataset), "dataset", None)
    return declared if declared in DATASETS else None


def train_images(dataset: str, kind: str):
    """The training images a model is measured against (a registered model: those of the data it declares)."""
    if kind != PLUGIN:
        return model_for(dataset, kind).train_images()
    data = data_of(dataset, kind)
    return None if data is None else empirical(data).train_images()


@st.cache_data(max_entries=4, show_spinner=False)
def reference_images(dataset: str) -> np.ndarray:
    """Real images to measure samples against: every digit; 2000 fresh Simple Shapes."""
    return datasets.digits()[0] if dataset == "digits" else datasets.shapes(2000, seed=REFERENCE_SEED)[0]


@st.cache_data(max_entries=4, show_spinner=False)
@precomputed.default("images")
def reference_moments(dataset: str):
    return Q.moments(Q.features(reference_images(dataset), dataset))


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("images")
def floor(dataset: str, n: int, repeats: int = 5) -> float:
    """Mean FD of n real images against the reference over `repeats` draws (digits: n of them at
    random, with replacement; shapes: fresh images): where a perfect sampler lands at this n (FD in
    64 dimensions is biased upward and noisy at a few hundred images)."""
    x = reference_images(dataset)
    fds = []
    for k in range(repeats):
        if dataset == "digits":
            real = x[np.random.default_rng([1, k]).integers(0, len(x), n)]
        else:
            real = datasets.shapes(n, seed=REFERENCE_SEED + 1 + k)[0]
        fds.append(Q.frechet_from_moments(*Q.moments(Q.features(real, dataset)), *reference_moments(dataset)))
    return float(np.mean(fds))


@st.cache_resource(show_spinner=False)
def made() -> set:
    """The keys of the runs this process has computed (so in run's cache, unless evicted since)."""
    return set()


def _not_a_preview(n: int, **_) -> bool:
    """The default view ships its full run, so it never draws a preview: a preview's run (while the file is being
    made, needs_preview finds nothing shipped) is not recorded."""
    return n != PREVIEW


@st.cache_data(max_entries=8, show_spinner=False)
@precomputed.default("images", only=_not_a_preview)
def run(dataset: str, kind: str, solver: str, options: tuple, nfe: int, spacing: str, n: int, seed: int) -> dict:
    """One seeded run: states and x0-predictions as float32 numpy, the grid, NFE, time, divergence."""
    with Q.torch_threads(1):  # see torch_threads: one thread is far faster on a shared machine
        traj = Q.sample_images(model_for(dataset, kind), n, solver, nfe, seed, spacing, **dict(options))
    as_np = lambda v: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)  # noqa: E731
    made().add((dataset, kind, solver, options, nfe, spacing, n, seed))
    return {"x": as_np(traj.x), "denoised": as_np(traj.denoised), "t": np.asarray(traj.t), "nfe": traj.nfe,
            "n_steps": traj.n_steps, "seconds": traj.wall_time, "diverged": traj.diverged_reason if traj.diverged else None}


def is_wide(images) -> bool:
    """Shapes' 16x48 panels (wider than twice their height): fewer to a row."""
    return images.shape[-1] > 2 * images.shape[-2]


def needs_preview(key: tuple) -> bool:
    """Whether to sample and show the run's first PREVIEW images before the rest: a run not made yet (nor shipped)
    of more images, by a deterministic solver. Only then are they the run's own first images: the same prior
    draw, and no noise drawn along the way (a stochastic solver draws each step's noise for the whole batch)."""
    solver, n = key[2], key[6]
    if n <= PREVIEW or ex.solvers.info(solver)["stochastic"] or key in made():
        return False
    return precomputed.key_of(key, {}) not in precomputed.shipped("images")[0].get("run", {})


@st.cache_data(max_entries=16, show_spinner=False)
@precomputed.default("images")
def scores(dataset: str, kind: str, solver: str, options: tuple, nfe: int, spacing: str, n: int, seed: int) -> dict:
    r = run(dataset, kind, solver, options, nfe, spacing, n, seed)
    data = data_of(dataset, kind)
    if r["diverged"] or data is None:
        return {"fd": float("nan"), "nearest": np.full(n, np.nan)}
    x = r["x"][-1]
    return {"fd": Q.frechet_from_moments(*Q.moments(Q.features(x, data)), *reference_moments(data)),
            "nearest": Q.nearest_training_distance(x, train_images(dataset, kind))}


@st.cache_data(max_entries=32, show_spinner=False)
def sweep_one(dataset: str, kind: str, solver: str, nfes: tuple, spacing: str, n: int, seed: int) -> list:
    """quality_vs_nfe of one solver (cached per solver, so adding one is cheap)."""
    model, data = model_for(dataset, kind), data_of(dataset, kind)
    with Q.torch_threads(1):
        return Q.quality_vs_nfe(model, [solver], nfes, data, reference_images(data), n=n, seed=seed,
                                spacing=spacing, train_images=train_images(dataset, kind))


@st.cache_data(max_entries=16, show_spinner=False)
def shapes_reading(dataset: str, kind: str, solver: str, options: tuple, nfe: int, spacing: str, n: int, seed: int):
    return S.analyse(run(dataset, kind, solver, options, nfe, spacing, n, seed)["x"][-1])


st.title("Images")
st.caption(
    "The explorer's solvers, unchanged, on small image models: scikit-learn's 8x8 digits and the Simple Shapes of "
    "*Understanding Hallucinations in Diffusion Models through Mode Interpolation*. The learned U-Net against the "
    "exact denoiser of its own training set (which can only return training images). Every control is in the URL."
)

with st.sidebar:
    st.header("Model")
    plugins = [name for name in ex.models.registered("image") if name not in DATASETS]
    dataset = st.selectbox("Dataset", DATASETS + tuple(plugins), key="dataset", bind=URL,
                           help="digits: 8x8, 1797 images. shapes: 16x48, three panels (triangle, square, pentagon)."
                                + (f" After them, the registered image models: {', '.join(plugins)}." if plugins else ""))
    if dataset in plugins:
        kind = PLUGIN
        about = ex.models.info(dataset)
        st.caption(f"A registered model ({about['source']})" + (f": {about['summary']}" if about["summary"] else "."))
    else:
        kind = st.radio("Model", list(MODELS), captions=["the shipped U-Net", "the exact optimum: a memoriser"],
                        key="model", bind=URL,
                        help="The shipped U-Net, or the closed-form optimum of the training loss on the finite training "
                             "set (a mixture of point masses at the training images: perfect score, zero generalisation).")
    st.header("Sampler")
    solver = st.selectbox("Solver", SOLVERS, SOLVERS.index("dpmpp-2m"), key="solver", bind=URL,
                          help="Any solver of the explorer; its options below come from its declaration.")
    st.caption(ex.solvers.info(solver)["reference"])
    options = controls.solver_options(solver)
    nfe = int(st.slider("NFE (model evaluations)", 1, 100, 20, key="nfe", bind=URL,
                        help="Steps = NFE / evaluations per step of the solver."))
    spacing = controls.spacing()
    n = int(controls.number("Samples", "images", 64, "Images drawn from the same seeded noise.", 8, 512))
    seed = controls.seed("image_seed")

try:
    model = model_for(dataset, kind)
except ValueError as err:  # no pretrained U-Net shipped for this dataset: say so, show the memoriser
    if kind != "learned":
        controls.report_core_error(err)
        st.stop()
    st.info(f"**No learned model to show** ({err}). Showing the empirical optimum of its training set instead.")
    kind = "empirical"
    model = model_for(dataset, kind)
except Exception as err:  # an unreadable file
    controls.report_core_error(err)
    st.stop()
data = data_of(dataset, kind)  # None: a registered model trained on other data (no classifier, no training set)
if kind == PLUGIN and data is None:
    st.info(f"**{dataset}** declares no dataset of this page ({', '.join(DATASETS)}): its samples are shown, but the "
            "Frechet distance, the nearest training image and the quality sweep need one (wrap(..., dataset=...)).")

opts = tuple(sorted(options.items()))
key = (dataset, kind, solver, opts, nfe, spacing, n, seed)
head, grid = st.container(), st.empty()  # the run's numbers, then its samples: a new run's first images show first
try:
    with st.spinner(f"Sampling {n} images with {solver} at {nfe} NFE…"):
        if needs_preview(key):
            first = run(dataset, kind, solver, opts, nfe, spacing, PREVIEW, seed)["x"][-1]
            shown = np.full((n, *first.shape[1:]), np.nan, np.float32)
            shown[:PREVIEW] = first
            chart.draw(FI.sample_grid(shown, cols=8 if is_wide(first) else 16,
                                      title=f"{MODELS.get(kind, dataset)}, {solver}, {nfe} NFE: the first {PREVIEW} "
                                            f"of {n} images; the rest are being sampled"), grid)
        r = run(*key)
        sc = scores(*key)
except Exception as err:
    controls.report_core_error(err)
    st.stop()

if r["diverged"]:
    head.warning(f"**The run diverged**: {r['diverged']}. Raise the NFE or pick another solver.")
m = head.columns(4)
m[0].metric("NFE spent", r["nfe"], help=f"{r['n_steps']} steps.")
m[1].metric("Sampling time", f"{r['seconds']:.2f} s", help=f"{n} images on the CPU.")
m[2].metric("Frechet distance", "—" if data is None else f"{sc['fd']:.3g}",
            delta=None if data is None else f"real vs real: {floor(data, n):.3g}", delta_color="off",
            delta_arrow="off", help="In the feature space of a small classifier trained on the same data (lower is better); "
                                    "real images of the same count land at the floor shown.")
m[3].metric("Nearest training image", "—" if data is None else f"{np.nanmean(sc['nearest']):.3f}",
            help="Mean RMS pixel distance of each sample to its nearest training image (0: a copy).")

reading = shapes_reading(dataset, kind, solver, opts, nfe, spacing, n, seed) if data == "shapes" and not r["diverged"] else None
final = r["x"][-1]
wide = is_wide(final)
chart.draw(FI.sample_grid(final, cols=8 if wide else 16,
                          title=f"{MODELS.get(kind, dataset)}, {solver}, {r['nfe']} NFE"
                                + (" — flagged shapes outlined in red" if reading is not None else ""),
                          flagged=None if reading is None else reading.flagged), grid)


class _Traj:
    """The cached run seen as a trajectory (t, x, denoised) by the figures."""

    def __init__(self, r):
        self.t, self.x, self.denoised = r["t"], r["x"], r["denoised"]


@st.fragment
def film():
    index = st.slider("Sample in the film strip", 0, n - 1, 0, key="index", bind=URL)
    chart.draw(FI.film_strip(_Traj(r), int(index), frames=min(8, r["n_steps"])))


film()

st.subheader("Two solvers from the same noise")
b_cols = st.columns(3)
with b_cols[0]:
    solver_b = st.selectbox("Second solver", SOLVERS, SOLVERS.index("euler"), key="solver_b", bind=URL)
with b_cols[1]:
    options_b = controls.solver_options_for(solver_b, "b")
n_side = int(b_cols[2].slider("Images shown", 4, max(4, min(n, 64)), max(4, min(n, 24 if wide else 32)),
                              key="n_side", bind=URL))
try:
    rb = run(dataset, kind, solver_b, tuple(sorted(options_b.items())), nfe, spacing, n, seed)
    chart.draw(FI.side_by_side(r["x"][-1][:n_side], rb["x"][-1][:n_side], f"{solver}: NFE {r['nfe']}",
                               f"{solver_b}: NFE {rb['nfe']}", cols=4 if wide else 8))
    if data is not None and solver_b != solver and not r["diverged"] and not rb["diverged"]:
        fd_a = sc["fd"]
        fd_b = scores(dataset, kind, solver_b, tuple(sorted(options_b.items())), nfe, spacing, n, seed)["fd"]
        st.caption(f"Frechet distance of all {n} images: {solver} {fd_a:.3g}, {solver_b} {fd_b:.3g} ({solver_b}'s is "
                   f"{fd_b / fd_a:.2g}× {solver}'s); real images of the same count: {floor(data, n):.3g}.")
except Exception as err:
    controls.report_core_error(err)

if reading is not None:
    st.subheader("Shapes the data never has")
    st.caption("Each panel of the training images holds only its own shape (triangle, square, pentagon), or nothing, "
               "and never is an image empty. Shapes are found by thresholding, connected components and the best-"
               "matching template; flagged: two in a panel, a wrong shape, one across a border, a blob that is no "
               "shape, or nothing at all.")
    summ = S.summary(reading)
    f = st.columns(3)
    f[0].metric("Flagged images", f"{summ['flagged']} / {summ['n']}", delta=f"{summ['flagged_rate']:.1%}",
                delta_color="off", delta_arrow="off")
    f[1].metric("Two in a panel", summ["flags"]["two in a panel"])
    f[2].metric("Across panels", summ["flags"]["across panels"])
    chart.draw(FI.shapes_counts(summ))
    chart.draw(FI.flagged_images(final, reading, cols=8))

    @st.fragment
    def variance_filter():
        st.markdown("**The trajectory-variance filter** (Aithal et al.): variance of the x0-prediction over the "
                    "last steps, averaged over pixels; keep the images at or below a threshold.")
        if r["n_steps"] < 2:
            st.info("The filter needs at least two steps: raise the NFE.")
            return
        window = int(st.slider("Window (last x0-predictions)", 2, r["n_steps"], min(10, r["n_steps"]), key="window",
                               bind=URL))
        score = S.trajectory_variance(r["denoised"], window)
        if not reading.flagged.any() or reading.flagged.all():
            st.info("All images are flagged or none is: no trade-off to show on this run.")
            return
        rep = S.filter_report(score, reading.flagged)
        c = st.columns(3)
        c[0].metric("Flagged removed", f"{rep['removed_hallucinations']} / {rep['hallucinations']}",
                    delta=f"{rep['removed_fraction']:.0%}", delta_color="off", delta_arrow="off")
        c[1].metric("Clean kept", f"{rep['kept_in_support']} / {rep['in_support']}", delta=f"{rep['kept_fraction']:.0%}",
                    delta_color="off", delta_arrow="off")
        c[2].metric("Flagged rate after", f"{rep['rate_after']:.1%}", delta=f"before: {rep['rate_before']:.1%}",
                    delta_color="off", delta_arrow="off")
        lo, hi = st.columns(2)
        chart.draw(FH.score_histogram(score, reading.flagged, rep["threshold"]), lo)
        chart.draw(FH.tradeoff_curve(rep["curve"], rep), hi)

    variance_filter()

st.subheader("Quality against NFE")
st.caption("Each solver from the same seeded noise at several NFE; the Frechet distance to real images in the "
           "classifier's features, and how close the samples sit to training images. Cached per solver.")
with st.form("sweep"):
    q = st.columns([3, 2, 1])
    q_solvers = q[0].multiselect("Solvers", SOLVERS, ("euler", "ddim", "dpmpp-2m"), key="q_solvers", bind=URL)
    with q[1]:
        try:
            q_nfes = controls.int_list("NFE values", "q_nfes", "5, 10, 20", 1, 200)
        except ValueError as err:
            q_nfes = None
            controls.report_core_error(err)
    q_n = int(q[2].number_input("Samples", 16, 512, 64, 16, key="q_n", bind=URL))
    start = st.form_submit_button("Run the sweep")
if data is None:
    st.info("The sweep measures samples against the data the model was trained on: this model declares none.")
elif (start or st.session_state.get("sweep_done")) and q_nfes and q_solvers:
    st.session_state["sweep_done"] = True
    bar = st.progress(0.0, "sampling…")
    records = []
    for i, name in enumerate(q_solvers):
        bar.progress(i / len(q_solvers), f"{name}…")
        records += sweep_one(dataset, kind, name, q_nfes, spacing, q_n, seed)
    memoriser = None
    if kind != "empirical":
        mem = sweep_one(data, "empirical", "dpmpp-2m", (max(q_nfes),), spacing, q_n, seed)
        memoriser = mem[0] if mem else None
    bar.empty()
    chart.draw(FI.quality_vs_nfe(records, floor=floor(data, q_n), empirical=memoriser))
