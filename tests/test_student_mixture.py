"""StudentMixture against independent references: scipy's multivariate t density, a direct
scipy maximisation of the t likelihood, a plain numpy ECM written here from Peel &
McLachlan (2000), and dem's GaussianMixture as the degrees of freedom grow; robustness to
outliers and recovery of the degrees of freedom."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import optimize, special, stats
from scipy.special import logsumexp

import dem
from dem.synth import GENERATORS
from tests.conftest import COVARIANCE_TYPES, initial_parameters, make_blobs

pytestmark = pytest.mark.filterwarnings("ignore::dem.engine.ConvergenceWarning")


def t_data(n: int = 1500, seed: int = 0, dof: float = 4.0) -> np.ndarray:
    """Three t clusters in d=3 (the blobs' centres and shapes)."""
    rng = np.random.default_rng(seed)
    x = make_blobs(n_per=n // 6, seed=seed)
    tau = rng.gamma(dof / 2.0, 2.0 / dof, size=(len(x), 1))
    centre = x.mean(axis=0)
    return centre + (x - centre) / np.sqrt(tau)


def full_scales(model: dem.StudentMixture) -> np.ndarray:
    """The scale matrices as (K, d, d) whatever the covariance type."""
    k, d = model.means_.shape
    cov = model.covariances_
    return {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([np.eye(d) * c for c in cov]),
    }[model.covariance_type]()


def scipy_mixture_logpdf(x, weights, means, scales, dofs) -> np.ndarray:
    """log Σ_k w_k t(x | μ_k, Σ_k, ν_k) by scipy.stats.multivariate_t."""
    parts = [
        np.log(w) + stats.multivariate_t(loc=m, shape=s, df=v).logpdf(x)
        for w, m, s, v in zip(weights, means, scales, dofs, strict=True)
    ]
    return logsumexp(np.stack(parts, axis=1), axis=1)


# --- the density -----------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_is_scipys_multivariate_t(covariance_type):
    x = t_data(600)
    model = dem.StudentMixture(3, covariance_type=covariance_type, max_iter=5, random_state=0)
    model.fit(x)
    expected = scipy_mixture_logpdf(
        x, model.weights_, model.means_, full_scales(model), model.dofs_
    )
    np.testing.assert_allclose(model.score_samples(x), expected, rtol=1e-11)
    assert model.score(x) == pytest.approx(expected.mean(), rel=1e-11)
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(x), np.argmax(proba, axis=1))


def test_the_e_step_loglik_is_scipys_at_the_starting_parameters():
    """lower_bounds_[0] is the observed-data log-likelihood at the start (dofs 10)."""
    x = t_data(600)
    init = initial_parameters(x, 3, "full")
    model = dem.StudentMixture(3, max_iter=1, reg_covar=0.0, **init).fit(x)
    scales = np.linalg.inv(init["precisions_init"])
    expected = scipy_mixture_logpdf(
        x, init["weights_init"], init["means_init"], scales, np.full(3, 10.0)
    ).mean()
    assert model.lower_bounds_[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dof", [1e-2, 0.5, 3.0, 1e4, 1e10])
def test_the_density_constant_holds_for_any_dof(dof):
    """G(ν) by betaln against the log-gamma difference in high precision (mpmath): within
    5e-11 of the log density at any ν (scipy's betaln carries ~2e-13 relative error near
    ν = 1e4; the difference of two float64 log-gammas is off by 1e-3 at ν = 1e12)."""
    mpmath = pytest.importorskip("mpmath")
    from dem.models.student_mixture.kernels import dof_constants

    mpmath.mp.dps = 40
    for d in (1, 3, 16):
        a, h = mpmath.mpf(dof) / 2, mpmath.mpf(d) / 2
        exact = mpmath.loggamma(a + h) - mpmath.loggamma(a) - h * mpmath.log(a)
        assert dof_constants(np.array([dof]), d)[0] == pytest.approx(
            float(exact), rel=1e-12, abs=5e-11
        )


# --- the ECM iteration -------------------------------------------------------------------


def reference_ecm(x, weights, means, scales, dofs, n_iter, dof_mode=None):
    """Peel & McLachlan (2000), section 5, in plain numpy/scipy: the E-step's r and u, the
    CM-steps for π, μ, Σ, then ν_k from eq. 30 by brentq. Returns the parameters and the
    mean log-likelihood at the start of each iteration."""
    n, d = x.shape
    weights, means, scales, dofs = (
        np.array(a, dtype=float) for a in (weights, means, scales, dofs)
    )
    trace = []
    for _ in range(n_iter):
        log_parts, u = [], []
        for k in range(len(weights)):
            diff = x - means[k]
            delta = np.einsum("ij,ij->i", diff, np.linalg.solve(scales[k], diff.T).T)
            u.append((dofs[k] + d) / (dofs[k] + delta))
            log_parts.append(
                np.log(weights[k])
                + stats.multivariate_t(loc=means[k], shape=scales[k], df=dofs[k]).logpdf(x)
            )
        log_parts, u = np.stack(log_parts, axis=1), np.stack(u, axis=1)
        norm = logsumexp(log_parts, axis=1)
        trace.append(norm.mean())
        r = np.exp(log_parts - norm[:, None])
        counts = r.sum(axis=0)
        weights = counts / n
        new_dofs = dofs.copy()
        scores = []
        for k in range(len(weights)):
            ru = r[:, k] * u[:, k]
            means[k] = ru @ x / ru.sum()
            diff = x - means[k]
            scales[k] = (diff * ru[:, None]).T @ diff / counts[k]
            scores.append(
                np.sum(r[:, k] * (np.log(u[:, k]) - u[:, k]))
                + counts[k] * (special.digamma((dofs[k] + d) / 2) - np.log((dofs[k] + d) / 2))
            )

        def equation(nu, total, count):
            return -special.digamma(nu / 2) + np.log(nu / 2) + 1 + total / count

        if dof_mode == "tied":
            shared = optimize.brentq(equation, 1e-2, 1e6, args=(sum(scores), n), xtol=1e-13)
            new_dofs[:] = shared
        else:
            for k in range(len(weights)):
                new_dofs[k] = optimize.brentq(
                    equation, 1e-2, 1e6, args=(scores[k], counts[k]), xtol=1e-13
                )
        dofs = new_dofs
    return {"weights": weights, "means": means, "scales": scales, "dofs": dofs}, trace


@pytest.mark.parametrize("dof_mode", [None, "tied"])
@pytest.mark.parametrize("n_iter", [1, 15])
def test_every_iteration_is_the_published_ecm(dof_mode, n_iter):
    x = t_data(900, seed=1)
    init = initial_parameters(x, 3, "full")
    scales = np.linalg.inv(init["precisions_init"])
    expected, trace = reference_ecm(
        x, init["weights_init"], init["means_init"], scales, np.full(3, 10.0), n_iter, dof_mode
    )
    model = dem.StudentMixture(3, dof=dof_mode, max_iter=n_iter, tol=0, reg_covar=0.0, **init).fit(
        da.from_array(x, chunks=250)
    )
    assert model.n_iter_ == n_iter
    np.testing.assert_allclose(model.lower_bounds_, trace, rtol=1e-12)
    np.testing.assert_allclose(model.weights_, expected["weights"], rtol=1e-9)
    np.testing.assert_allclose(model.means_, expected["means"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(model.covariances_, expected["scales"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(model.dofs_, expected["dofs"], rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dof", [None, "tied", 2.5])
def test_observed_loglik_never_decreases(covariance_type, dof):
    x = t_data(900, seed=2)
    model = dem.StudentMixture(
        3,
        covariance_type=covariance_type,
        dof=dof,
        max_iter=40,
        tol=0,
        reg_covar=0.0,
        random_state=1,
    ).fit(x)
    trace = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    if dof == 2.5:
        np.testing.assert_array_equal(model.dofs_, 2.5)
    if dof == "tied":
        assert np.all(model.dofs_ == model.dofs_[0])


# --- the maximum ------------------------------------------------------------------------


def direct_t_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Maximum of Σ log t(x | μ, Σ, ν) over (μ, Cholesky factor of Σ, log ν) by BFGS,
    the likelihood being scipy.stats.multivariate_t's."""
    d = x.shape[1]
    rows, cols = np.tril_indices(d)

    def unpack(theta):
        factor = np.zeros((d, d))
        factor[rows, cols] = theta[d : d + len(rows)]
        factor[np.diag_indices(d)] = np.exp(np.diag(factor))
        return theta[:d], factor @ factor.T, np.exp(theta[-1])

    def objective(theta):
        loc, shape, dof = unpack(theta)
        return -stats.multivariate_t(loc=loc, shape=shape, df=dof).logpdf(x).mean()

    factor = np.linalg.cholesky(np.cov(x.T))
    start_factor = factor.copy()
    start_factor[np.diag_indices(d)] = np.log(np.diag(factor))
    theta = np.concatenate([np.median(x, axis=0), start_factor[rows, cols], [np.log(5.0)]])
    for _ in range(3):  # restarting BFGS polishes its finite-difference Hessian
        theta = optimize.minimize(objective, theta, method="BFGS", options={"gtol": 1e-10}).x
    loc, shape, dof = unpack(theta)
    return loc, shape, dof, -objective(theta)


def test_one_component_reaches_the_direct_maximum_of_the_t_likelihood():
    rng = np.random.default_rng(4)
    truth = stats.multivariate_t(loc=[1.0, -2.0], shape=[[2.0, 0.6], [0.6, 1.0]], df=4.0)
    x = truth.rvs(2000, random_state=rng)
    loc, shape, dof, best = direct_t_fit(x)
    model = dem.StudentMixture(
        1, reg_covar=0.0, tol=1e-13, max_iter=2000, accelerate="squarem"
    ).fit(x)
    assert model.converged_
    assert model.lower_bound_ == pytest.approx(best, rel=1e-10) or model.lower_bound_ > best
    np.testing.assert_allclose(model.means_[0], loc, atol=1e-5)
    np.testing.assert_allclose(model.covariances_[0], shape, atol=1e-5)
    assert model.dofs_[0] == pytest.approx(dof, abs=1e-4)


# --- limits and robustness ---------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_as_dof_grows_it_is_the_gaussian_mixture(covariance_type):
    x = make_blobs(n_per=200, seed=5)
    init = initial_parameters(x, 3, covariance_type)
    options = {"covariance_type": covariance_type, "max_iter": 10, "tol": 0, **init}
    gaussian = dem.GaussianMixture(3, **options).fit(x)
    student = dem.StudentMixture(3, dof=1e10, **options).fit(x)
    np.testing.assert_allclose(student.lower_bounds_, gaussian.lower_bounds_, rtol=1e-8)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(student, name), getattr(gaussian, name), rtol=1e-6, atol=1e-9
        )
    np.testing.assert_allclose(student.score_samples(x), gaussian.score_samples(x), rtol=1e-8)


def test_with_gross_outliers_its_means_are_closer_to_the_truth_than_the_gaussians():
    rng = np.random.default_rng(6)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    clean = np.vstack([c + rng.standard_normal((600, 2)) for c in centres])
    outliers = rng.uniform(-40.0, 40.0, size=(int(0.05 * len(clean) / 0.95), 2))
    x = rng.permutation(np.vstack([clean, outliers]))
    options = {"max_iter": 300, "tol": 1e-6, "means_init": centres + 0.5, "random_state": 0}
    gaussian = dem.GaussianMixture(3, **options).fit(x)
    student = dem.StudentMixture(3, **options).fit(x)

    def error(means):
        return max(np.min(np.linalg.norm(means - c, axis=1)) for c in centres)

    assert error(student.means_) < 0.15
    assert error(student.means_) < error(gaussian.means_) / 3
    assert np.min(student.dofs_) < 5  # heavy tails take the outliers


@pytest.mark.parametrize("dof", [None, "tied"])
def test_the_degrees_of_freedom_are_recovered(dof):
    generator = GENERATORS["tmix"]
    rng = np.random.default_rng(7)
    truth = generator.truth(3, rng, n_components=2, separation=4.0, dof=4.0)
    x = generator.draw(truth, rng, 20_000)["X"]
    model = dem.StudentMixture(2, dof=dof, tol=1e-9, max_iter=500, random_state=0).fit(x)
    np.testing.assert_allclose(model.dofs_, 4.0, rtol=0.15)
    order = [int(np.argmin(np.linalg.norm(model.means_ - m, axis=1))) for m in truth["means"]]
    np.testing.assert_allclose(model.means_[order], truth["means"], atol=0.05)


def test_sample_has_the_t_distribution_of_the_fit():
    """(x - μ)ᵀ Σ⁻¹ (x - μ) / d of a t draw follows F(d, ν)."""
    model = dem.StudentMixture(1, dof=3.0, max_iter=3, random_state=0).fit(t_data(600))
    x, labels = model.sample(4000, random_state=1)
    assert x.shape == (4000, 3) and np.all(labels == 0)
    diff = x - model.means_[0]
    d2 = np.einsum("ij,ij->i", diff, np.linalg.solve(model.covariances_[0], diff.T).T)
    assert stats.kstest(d2 / 3, stats.f(3, 3.0).cdf).pvalue > 1e-3


def test_bic_counts_the_degrees_of_freedom():
    x = t_data(600)
    for dof, extra in ((None, 3), ("tied", 1), (4.0, 0)):
        model = dem.StudentMixture(3, dof=dof, max_iter=3, random_state=0).fit(x)
        params = 3 * 3 * 4 // 2 + 3 * 3 + 2 + extra
        expected = -2 * model.score(x) * len(x) + params * np.log(len(x))
        assert model.bic(x) == pytest.approx(expected, rel=1e-12)


# --- engine features -------------------------------------------------------------------


def test_kmeans_parallel_start_and_restarts_reach_the_optimum_from_the_true_centres():
    """k-means‖ over all the chunks (``"auto"`` above ``init_sample_size`` rows), alone
    and with restarts, ends where ECM from the true centres ends."""
    x = t_data(1500, seed=12)
    lazy = da.from_array(x, chunks=(300, -1))
    options = {"tol": 1e-9, "max_iter": 400, "random_state": 0, "init_sample_size": 500}
    auto = dem.StudentMixture(3, **options).fit(lazy)
    explicit = dem.StudentMixture(3, init_params="k-means||", **options).fit(lazy)
    restarts = dem.StudentMixture(3, init_params="k-means||", n_init=3, **options).fit(lazy)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [-3.0, 1.5, 2.5]])  # make_blobs'
    truth = dem.StudentMixture(3, means_init=centres, **options).fit(x)
    assert auto.lower_bounds_ == explicit.lower_bounds_
    for model in (auto, restarts):
        assert model.converged_
        assert model.lower_bound_ == pytest.approx(truth.lower_bound_, abs=1e-8)
        order = [int(np.argmin(np.linalg.norm(model.means_ - m, axis=1))) for m in truth.means_]
        # ECM crawls near its optimum: tol 1e-9 on the log-likelihood leaves 1e-4 here
        np.testing.assert_allclose(model.means_[order], truth.means_, atol=1e-3)
        np.testing.assert_allclose(model.dofs_[order], truth.dofs_, rtol=1e-2)


def test_squarem_reaches_the_plain_ecm_optimum_in_fewer_passes():
    x = t_data(1200, seed=8)
    options = {"max_iter": 3000, "tol": 1e-10, "random_state": 0, "reg_covar": 0.0}
    plain = dem.StudentMixture(3, **options).fit(x)
    fast = dem.StudentMixture(3, accelerate="squarem", **options).fit(x)
    assert plain.converged_ and fast.converged_
    assert fast.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-8)
    np.testing.assert_allclose(np.sort(fast.dofs_), np.sort(plain.dofs_), rtol=1e-3)
    assert fast.n_iter_ < plain.n_iter_ / 2


def test_checkpoint_restores_the_degrees_of_freedom(tmp_path):
    x = t_data(600)
    model = dem.StudentMixture(
        2, dof="tied", max_iter=5, random_state=0, checkpoint=tmp_path / "fit.zarr"
    ).fit(x)
    with pytest.warns(UserWarning, match="without converging"):
        restored = dem.from_checkpoint(tmp_path / "fit.zarr")
    assert isinstance(restored, dem.StudentMixture) and restored.dof == "tied"
    np.testing.assert_array_equal(restored.dofs_, model.dofs_)
    np.testing.assert_array_equal(restored.score_samples(x), model.score_samples(x))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "options",
    [
        {"dof": "tied", "covariance_type": "diag"},
        {"dof": 3.0, "covariance_type": "spherical", "n_init": 2},
        {"covariance_type": "tied", "accelerate": "squarem", "init_params": "k-means||"},
    ],
    ids=["tied-dof-diag", "fixed-dof-restarts", "squarem-kmeans-parallel"],
)
def test_resume_after_an_interruption_gives_the_same_bits(tmp_path, options):
    """The contract suite resumes the default variant; these are the other ν modes,
    restarts, SQUAREM and a start that takes passes of its own (k-means‖)."""
    from tests.contract.models import fitted_arrays

    x = da.from_array(t_data(900, seed=13), chunks=(200, -1))

    def fit(path, **more) -> dem.StudentMixture:
        return dem.StudentMixture(
            3, max_iter=6, tol=0, random_state=0, checkpoint=path, **options, **more
        ).fit(x)

    def stop(info) -> None:
        if info.iteration == 3:
            raise Interrupt

    whole = fit(tmp_path / "whole.zarr")
    with pytest.raises(Interrupt):
        fit(tmp_path / "cut.zarr", callback=stop)
    seen: list = []
    resumed = fit(tmp_path / "cut.zarr", resume=True, callback=seen.append)
    # resumed after iteration 3 (SQUAREM: after its last complete cycle), not restarted
    assert seen[0].run == 0 and seen[0].iteration >= 4
    expected = fitted_arrays(whole)
    assert expected.keys() == fitted_arrays(resumed).keys() and "dofs_" in expected
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(resumed, name), value, err_msg=name)
    cycles = 2 if options.get("accelerate") == "squarem" else 6  # SQUAREM: 3 passes a cycle
    assert resumed.lower_bounds_ == whole.lower_bounds_ and len(whole.lower_bounds_) == cycles


@pytest.mark.slow
def test_a_fit_on_worker_processes_equals_the_local_fit(process_client):
    x = t_data(1200, seed=9)
    lazy = da.from_array(x, chunks=(300, -1))
    options = {"max_iter": 8, "tol": 0, "random_state": 3, "init_params": "kmeans"}
    remote = dem.StudentMixture(3, persist=True, **options).fit(lazy)
    with warnings.catch_warnings(), dask.config.set(scheduler="sync"):
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        local = dem.StudentMixture(3, persist=False, **options).fit(x)
    np.testing.assert_allclose(remote.lower_bounds_, local.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(remote.dofs_, local.dofs_, rtol=1e-10)
    np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-10)


def test_float32_data_fit_as_their_float64_values():
    """Everything is computed in float64: float32 input gives the fit of its values."""
    x = t_data(900, seed=10).astype(np.float32)
    options = {"max_iter": 10, "tol": 0, "random_state": 0, "init_params": "kmeans"}
    single = dem.StudentMixture(3, **options).fit(x)
    double = dem.StudentMixture(3, **options).fit(x.astype(np.float64))
    np.testing.assert_allclose(single.lower_bounds_, double.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(single.dofs_, double.dofs_, rtol=1e-10)


def test_online_em_then_batch_reaches_the_batch_optimum():
    x = t_data(3000, seed=11)
    lazy = da.from_array(x, chunks=(300, -1))
    options = {"tol": 1e-9, "max_iter": 500, "random_state": 0, "init_params": "kmeans"}
    batch = dem.StudentMixture(3, **options).fit(lazy)
    online = dem.StudentMixture(3, method="online", batch_chunks=2, **options).fit(lazy)
    assert online.n_online_updates_ == 5
    assert online.lower_bound_ == pytest.approx(batch.lower_bound_, abs=1e-6)
    np.testing.assert_allclose(np.sort(online.dofs_), np.sort(batch.dofs_), rtol=1e-2)


@pytest.mark.slow
def test_cli_synth_fit_predict_show(process_client, tmp_path):
    """``dem synth tmix``, ``dem fit tmix --dof tied``, ``dem predict`` and ``dem show`` on
    worker processes: the checkpoint is the library's fit of the same store, the outputs
    its methods', and the truth ``dem synth`` kept is recovered."""
    import os

    import zarr
    from typer.testing import CliRunner

    from dem.cli import app
    from dem.synth import read_truth

    def invoke(*args) -> tuple[int, str]:
        result = CliRunner().invoke(app, [os.fspath(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    data, checkpoint, out = tmp_path / "data.zarr", tmp_path / "fit.zarr", tmp_path / "out.zarr"
    scheduler = ("--scheduler", process_client.scheduler.address)
    code, output = invoke(
        "synth", "tmix", data, "-n", "3000", "-d", "2", "-k", "2", "--separation", "5",
        "--dof", "4", "--chunk-rows", "1000", "--seed", "1",
    )  # fmt: skip
    assert code == 0, output
    code, output = invoke(
        "fit", "tmix", data, "--var", "X", "-k", "2", "--dof", "tied", "--tol", "1e-4",
        "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output
    reference = dem.StudentMixture(2, dof="tied", tol=1e-4, random_state=0)
    reference.fit(data, variable="X")
    restored = dem.from_checkpoint(checkpoint)
    assert type(restored) is dem.StudentMixture and restored.dof == "tied"
    assert restored.n_iter_ == reference.n_iter_ and restored.converged_
    for name in ("weights_", "means_", "covariances_", "dofs_"):
        np.testing.assert_allclose(getattr(restored, name), getattr(reference, name), rtol=1e-9)
    truth = read_truth(data)
    order = [int(np.argmin(np.linalg.norm(restored.means_ - m, axis=1))) for m in truth["means"]]
    np.testing.assert_allclose(restored.means_[order], truth["means"], atol=0.15)
    np.testing.assert_allclose(restored.dofs_, 4.0, rtol=0.3)

    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    group = zarr.open_group(out, mode="r")
    x = zarr.open_group(data, mode="r")["X"][:]
    assert group["labels"].chunks == (1000,)
    np.testing.assert_array_equal(group["labels"][:], reference.predict(x))
    np.testing.assert_allclose(group["probabilities"][:], reference.predict_proba(x), atol=1e-9)
    np.testing.assert_allclose(group["loglik"][:], reference.score_samples(x), rtol=1e-10)
    code, output = invoke("show", checkpoint)
    assert code == 0 and "student_mixture" in output and "dofs" in output, output
