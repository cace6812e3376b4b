"""The user API of the Student-t mixture: :class:`StudentMixture`."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.estimator import Bounded, RandomState
from dem.model import Params
from dem.models.mixture.estimator import GaussianMixture
from dem.models.student_mixture.model import StudentMixtureModel


class StudentMixture(GaussianMixture):
    """Mixture of multivariate t distributions fitted by ECM over Dask chunks.

    The robust counterpart of :class:`~dem.GaussianMixture` (Peel & McLachlan 2000):
    each component is a multivariate t with location ``means_[k]``, scale matrix
    ``covariances_[k]`` and ``dofs_[k]`` degrees of freedom, so rows far from every
    component are down-weighted instead of pulling means and covariances toward them.
    As the degrees of freedom grow it becomes the Gaussian mixture.

    The fit is ECM (Meng & Rubin 1993): the E-step gives each row its responsibilities
    r and, per component, its latent scale weight ``u = (ν + d)/(ν + δ²)`` (δ² the
    squared Mahalanobis distance in the scale metric) and ``E[log τ]``; the first
    CM-step sets weights, means and scale matrices from the u-weighted statistics at the
    current ν, the second each ν by a one-dimensional root solve (Brent) of the
    complete-data score, from the same statistics: no extra pass over the data. This
    is the ECM form, which maximises the complete-data expectation over ν; ECME
    (Liu & Rubin 1994) maximises the observed-data likelihood over ν instead and
    converges in fewer iterations, but each of its root-solve evaluations would need
    every row's distances, i.e. a pass over the data per evaluation. Both CM-steps
    maximise the same expected complete-data log-likelihood, so the observed
    log-likelihood never decreases (``reg_covar`` aside, as for the Gaussian mixture).
    Everything is computed in float64, also for float32 data.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component scale matrices.
    dof : None, "tied" or float > 0, default=None
        Degrees of freedom: None estimates one per component, ``"tied"`` one shared by
        every component, a number fixes all of them (``dof=1``: Cauchy components; a
        large value, 1e8, gives the Gaussian mixture to 1e-8). Estimates start at 10 and
        are kept within [0.01, 1e6].
    tol, reg_covar, max_iter, n_init, init_params, weights_init, means_init, \
precisions_init, random_state, checkpoint, resume, storage_options, \
checkpoint_storage_options, split_every, persist, \
init_sample_size, accelerate, alpha, method, online_passes, batch_chunks, step_exponent, \
forgetting, warm_start, callback, sample_dim, feature_dim
        As for :class:`~dem.GaussianMixture` (``precisions_init``: the inverse scale
        matrices; ``reg_covar`` is added to the scale matrices' diagonal).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
        Locations (the means where ν > 1).
    covariances_ : ndarray
        The scale matrices Σ_k, shaped as for the covariance type. They are not the
        components' covariances, which are Σ_k ν_k / (ν_k - 2) where ν_k > 2 (and
        infinite otherwise).
    precisions_, precisions_cholesky_ : ndarray
        Inverses of the scale matrices and their Cholesky factors.
    dofs_ : ndarray of shape (n_components,)
        Degrees of freedom of each component.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_online_updates_, \
online_lower_bounds_, n_features_in_
        As for :class:`~dem.GaussianMixture` (the bounds are the observed-data mean
        log-likelihood).

    See Also
    --------
    dem.GaussianMixture
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        dof: float | str | None = None,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "auto",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 100_000,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        online_passes: int = 1,
        batch_chunks: int = 1,
        step_exponent: float = 0.6,
        forgetting: float | None = None,
        warm_start: bool = False,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        super().__init__(
            n_components,
            covariance_type=covariance_type,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            weights_init=weights_init,
            means_init=means_init,
            precisions_init=precisions_init,
            random_state=random_state,
            checkpoint=checkpoint,
            resume=resume,
            storage_options=storage_options,
            checkpoint_storage_options=checkpoint_storage_options,
            split_every=split_every,
            persist=persist,
            init_sample_size=init_sample_size,
            accelerate=accelerate,
            alpha=alpha,
            method=method,
            online_passes=online_passes,
            batch_chunks=batch_chunks,
            step_exponent=step_exponent,
            forgetting=forgetting,
            warm_start=warm_start,
            callback=callback,
            sample_dim=sample_dim,
            feature_dim=feature_dim,
        )
        self.dof = dof

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GaussianMixture._parameter_constraints,
        "dof": [None, StrOptions({"tied"}), Bounded(Real, 0, None, closed="neither")],
    }

    def _model(self) -> StudentMixtureModel:
        self._validate_params()
        dof = self.dof if self.dof is None or self.dof == "tied" else float(self.dof)
        return StudentMixtureModel(
            int(self.n_components), self.covariance_type, float(self.reg_covar), dof
        )

    def _set_params(self, params: Params) -> None:
        super()._set_params(params)
        self.dofs_ = params["dofs"]

    def _params(self) -> Params:
        params = super()._params()
        return {**params, "dofs": self.dofs_}

    def _n_parameters(self) -> int:
        if self.dof is None:
            return super()._n_parameters() + len(self.dofs_)
        return super()._n_parameters() + int(self.dof == "tied")

    def _component_draws(
        self, z: np.ndarray, component: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``z / sqrt(τ)`` with ``τ ~ Gamma(ν_k/2, rate ν_k/2)`` per row: the t draws of
        ``component`` about its location from its Gaussian draws ``z``."""
        dof = float(self.dofs_[component])
        tau = rng.gamma(dof / 2.0, 2.0 / dof, size=(len(z), 1))
        return z / np.sqrt(tau)
