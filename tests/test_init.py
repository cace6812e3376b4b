"""k-means‖ initialisation and choosing K, checked against scipy, scikit-learn and closed forms."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture as SklearnMixture

import dem
from dem import seeding
from dem.models import kmeans
from tests.conftest import COVARIANCE_TYPES


class CountingScheduler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


def separated(sizes=(3000, 2000, 1000, 15), d=4, seed=0, offset=0.0):
    """Clusters of unit spread whose centres are far apart; returns (x, labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (len(sizes), d))
    centres *= 30.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[labels] + rng.standard_normal((len(labels), d)) + offset
    order = rng.permutation(len(x))
    return x[order], labels[order], centres + offset


def scatter_of(xc, labels, n_clusters, covariance_type):
    """Scatter statistics of a hard partition, written out row group by row group."""
    groups = [xc[labels == k] for k in range(n_clusters)]
    if covariance_type == "full":
        return np.stack([g.T @ g for g in groups])
    if covariance_type == "tied":
        return xc.T @ xc
    return np.stack([(g * g).sum(axis=0) for g in groups])


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_recovers_well_separated_clusters_including_a_tiny_far_one(offset):
    x, labels, centres = separated(offset=offset)
    sizes = np.bincount(labels)
    for seed in range(3):
        (found,) = seeding.kmeans_parallel(
            da.from_array(x, chunks=1000), [4], [np.random.default_rng(seed)], scatter="full"
        )
        match = cdist(centres, found.centres).argmin(axis=1)
        assert sorted(match) == [0, 1, 2, 3]
        np.testing.assert_allclose(found.centres[match], centres, atol=0.4)
        # the clusters are exactly the true groups, so the statistics are theirs
        np.testing.assert_array_equal(found.stats["resp_sum"][match], sizes)
        xc = x - found.shift
        np.testing.assert_allclose(
            found.stats["scatter"][match], scatter_of(xc, labels, 4, "full"), rtol=1e-9
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weights_and_statistics_are_those_of_the_nearest_candidate_partition(
    covariance_type, blobs
):
    (found,) = seeding.kmeans_parallel(
        da.from_array(blobs, chunks=800), [3], [np.random.default_rng(1)], scatter=covariance_type
    )
    nearest = cdist(blobs, found.candidates, "sqeuclidean").argmin(axis=1)
    assert found.weights.sum() == len(blobs)
    np.testing.assert_array_equal(found.weights, np.bincount(nearest, minlength=len(found.weights)))
    assert len(found.candidates) <= 1 + seeding.ROUNDS * 2 * 3
    assert found.costs[-1] == pytest.approx(
        cdist(blobs, found.candidates, "sqeuclidean").min(axis=1).sum(), rel=1e-9
    )
    assert all(np.diff(found.costs) <= 0)  # more centres never cost more
    cluster = found.labels[nearest]
    xc = blobs - found.shift
    np.testing.assert_array_equal(found.stats["resp_sum"], np.bincount(cluster, minlength=3))
    sums = np.stack([xc[cluster == k].sum(axis=0) for k in range(3)])
    np.testing.assert_allclose(found.stats["sum_x"], sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        found.stats["scatter"], scatter_of(xc, cluster, 3, covariance_type), rtol=1e-9
    )


def test_draws_are_proportional_to_squared_distance():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0], [-2.0, -2.0]])
    centres = np.array([[0.0, 0.0], [3.0, 1.0]])
    d2 = cdist(points, centres, "sqeuclidean").min(axis=1)
    block = {"X": points, "row": np.arange(len(points))}
    rng = np.random.default_rng(5)
    draws = 4000
    picked = np.zeros(len(points))
    for seed in rng.integers(0, 2**63, size=draws):
        state = {"shift": np.zeros(2), "centres": centres, "seed": int(seed), "ell": 1}
        (row,) = kmeans.sample_candidates(block, state)["rows"]
        picked[row] += 1
    assert picked[0] == 0  # a centre is never drawn again
    np.testing.assert_allclose(picked / draws, d2 / d2.sum(), atol=0.03)


def test_uniforms_are_uniform_and_depend_on_the_row_number_only():
    u = kmeans.row_uniforms(12345, np.arange(200_000))
    assert u.min() > 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=20, range=(0.0, 1.0))[0]
    assert np.abs(counts - 10_000).max() < 500  # ~5 standard deviations
    np.testing.assert_array_equal(kmeans.row_uniforms(12345, np.arange(100, 300)), u[100:300])
    assert not np.array_equal(kmeans.row_uniforms(54321, np.arange(200)), u[:200])


def test_same_candidates_whatever_the_chunking(blobs):
    results = [
        seeding.kmeans_parallel(
            da.from_array(blobs, chunks=chunks),
            [3, 5],
            [np.random.default_rng(7), np.random.default_rng(8)],
            scatter="diag",
            split_every=split_every,
        )
        for chunks, split_every in ((1000, 8), (1700, 2), (len(blobs), 8))
    ]
    reference = results[0]
    for other in results[1:]:
        for a, b in zip(reference, other, strict=True):
            np.testing.assert_array_equal(a.candidates, b.candidates)
            np.testing.assert_array_equal(a.weights, b.weights)
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.centres, b.centres, rtol=1e-12)
            np.testing.assert_allclose(a.stats["scatter"], b.stats["scatter"], rtol=1e-12)


def test_pass_count_is_rounds_plus_one_for_any_number_of_seedings(blobs, monkeypatch):
    data = da.from_array(blobs, chunks=1000)
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        found = seeding.kmeans_parallel(
            data, [2, 3, 4], [np.random.default_rng(s) for s in range(3)], scatter="full"
        )
    assert counter.calls == 3 + seeding.ROUNDS + 1  # one single-row read per seeding
    assert all(f.passes == seeding.ROUNDS + 1 for f in found)
    # too much per-candidate scatter to carry: one more pass, to the K means directly
    monkeypatch.setattr(seeding, "SCATTER_LIMIT", 0)
    x, labels, _ = separated()
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        (found,) = seeding.kmeans_parallel(
            da.from_array(x, chunks=1000), [4], [np.random.default_rng(0)], scatter="full"
        )
    assert counter.calls == 1 + seeding.ROUNDS + 2 and found.passes == seeding.ROUNDS + 2
    match = cdist(found.centres, x[[np.flatnonzero(labels == k)[0] for k in range(4)]]).argmin(0)
    xc = x - found.shift
    np.testing.assert_array_equal(found.stats["resp_sum"][match], np.bincount(labels))
    np.testing.assert_allclose(
        found.stats["scatter"][match], scatter_of(xc, labels, 4, "full"), rtol=1e-9
    )


def test_weighted_lloyd_matches_sklearn_kmeans_with_sample_weights():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(60, 3))
    weights = rng.integers(1, 50, size=60).astype(float)
    start = points[:4].copy()
    labels, centres = kmeans.weighted_lloyd(points, weights, start)
    reference = KMeans(4, init=start, n_init=1, algorithm="lloyd", tol=0, max_iter=300)
    reference.fit(points, sample_weight=weights)
    np.testing.assert_allclose(centres, reference.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(labels, reference.labels_)


def test_mixture_from_kmeans_parallel_finds_the_optimum(blobs):
    model = dem.GaussianMixture(3, init_params="k-means||", random_state=0, tol=1e-5).fit(blobs)
    reference = SklearnMixture(3, n_init=5, random_state=0).fit(blobs)
    assert model.converged_
    assert model.score(blobs) == pytest.approx(reference.score(blobs), abs=1e-4)


@pytest.mark.parametrize(("init_sample_size", "init_computes"), [(1000, 1 + 6), (10_000, 1)])
def test_auto_uses_kmeans_parallel_when_the_data_exceed_the_sample(
    blobs, init_sample_size, init_computes
):
    counter = CountingScheduler()
    data = da.from_array(blobs, chunks=1000)
    with dask.config.set(scheduler=counter), pytest.warns(dem.ConvergenceWarning):
        dem.GaussianMixture(
            3, max_iter=2, tol=0, persist=False, random_state=0, init_sample_size=init_sample_size
        ).fit(data)
    assert counter.calls == init_computes + 2


def test_seeding_on_a_process_cluster_gives_the_local_result(process_client, blobs):
    data = da.from_array(blobs, chunks=1000)
    on_cluster = seeding.kmeans_parallel(data, [3], [np.random.default_rng(2)], scatter="full")
    with dask.config.set(scheduler="sync"):
        local = seeding.kmeans_parallel(data, [3], [np.random.default_rng(2)], scatter="full")
    np.testing.assert_array_equal(on_cluster[0].candidates, local[0].candidates)
    np.testing.assert_array_equal(on_cluster[0].stats["resp_sum"], local[0].stats["resp_sum"])
    np.testing.assert_allclose(
        on_cluster[0].stats["scatter"], local[0].stats["scatter"], rtol=1e-12
    )


# --- choosing K --------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_clusters():
    x, _, _ = separated(sizes=(700, 500, 300), d=2, seed=4)
    return x


@pytest.mark.parametrize("init_params", ["kmeans", "k-means||"])
def test_select_picks_the_true_k_and_its_criteria_match_sklearn(three_clusters, init_params):
    x = three_clusters
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        chosen = dem.select_n_components(
            da.from_array(x, chunks=500),
            range(1, 6),
            covariance_type="full",
            init_params=init_params,
            random_state=0,
            max_iter=400,
            persist=False,
        )
    table = chosen.table
    assert chosen.best.n_components == 3 == table.attrs["best_n_components"]
    assert bool(table["converged"].all())
    for k, fitted in chosen.models.items():
        reference = SklearnMixture(k, covariance_type="full")
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            setattr(reference, name, getattr(fitted, name))
        row = table.sel(n_components=k)
        assert float(row["bic"]) == pytest.approx(reference.bic(x), rel=1e-12)
        assert float(row["aic"]) == pytest.approx(reference.aic(x), rel=1e-12)
        assert float(row["loglik"]) == pytest.approx(reference.score(x), rel=1e-12)
    # every K in the same passes: the initialisation, the longest fit, one final pass
    init = 5 + 6 if init_params == "k-means||" else 1
    assert counter.calls == init + int(table["n_iter"].max()) + 1


def test_select_by_aic_and_with_restarts(three_clusters):
    x = three_clusters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        chosen = dem.select_n_components(
            x, [2, 3, 4], covariance_type="diag", criterion="aic", n_init=2, random_state=1
        )
    best = chosen.best.n_components
    assert best == int(chosen.table["aic"].idxmin())
    loglik = float(chosen.table["loglik"].sel(n_components=best))
    assert chosen.best.score(x) == pytest.approx(loglik, rel=1e-12)
    reference = SklearnMixture(3, covariance_type="diag", n_init=3, random_state=0).fit(x)
    assert float(chosen.table["loglik"].sel(n_components=3)) >= reference.score(x) - 1e-4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_components": []}, "non-empty"),
        ({"n_components": [2, 2]}, "repeats"),
        ({"n_components": [0, 1]}, "integers >= 1"),
        ({"n_components": [1, 5000]}, "only 1500 samples"),
        ({"criterion": "hqic"}, "criterion must be one of"),
        ({"covariance_type": "banded"}, "'covariance_type' parameter of GaussianMixture must be"),
    ],
)
def test_select_refuses_bad_options(three_clusters, options, match):
    with pytest.raises(ValueError, match=match):
        dem.select_n_components(three_clusters, **options)
