"""Where one EM iteration's time goes: the kernel on each worker and everything around it.

A Gaussian mixture (N=1e6, d=16, K=8, full by default) on a LocalCluster of one-thread
worker processes holding the data (scattered first, 100,000-row chunks), from the same
start as scikit-learn. Each iteration is split, on one clock (the workers run on this
machine, so their task-stream times and the client's ``time.time()`` compare):

- ``graph``: building the pass's graph on the client (``map_reduce_graph``);
- ``submit``: ``dask.compute`` until the first task of the pass starts on a worker
  (the client's optimisation and packing, ``client_submit`` of it the client's
  ``_graph_to_futures``, then the scheduler's);
- ``kernel``: the map tasks' compute on the busiest worker (the E-step of its chunks;
  every worker's figure is in the JSON), and ``map_idle`` the rest of the map phase
  (first task start to last map task end: waiting for parameters, imbalance);
- ``tree``: from the last map task's end to the root combine's end;
- ``gather``: from the root's end to ``dask.compute`` returning on the client;
- ``m_step``: the M-step and log-likelihood on the client (``_evaluations``);
- ``checkpoint``: ``Checkpoint.write`` (only in the fit with a checkpoint): the time the
  EM loop spends in it, now that the write itself runs in a thread during the next pass
  (``checkpoint_write``, begun in the pass: off the critical path unless it takes longer
  than a pass, when the next write waits for it);
- ``other``: what is left of the wall time (the EM loop's own work).

The kernel times come from the scheduler's task stream (``client.get_task_stream``:
per task, its worker and the start and stop of its compute and of each transfer of its
inputs), the client's from wrapping the engine's functions in this process: neither
depends on the code measured. Also ``transfer_params`` (summed transfers into map
tasks: the parameters, once per worker) and ``transfer_stats`` (into combine tasks),
``kernel_alone`` (one chunk's E-step in this process, one thread, while the cluster
idles: the difference with the per-chunk figure on the workers is the two kernels
slowing each other), ``map_task_cpu_share`` (of the map tasks' seconds on the workers,
the share on the CPU, from distributed's ``digests_total``: the rest is waiting for a
core held by other processes, or for memory), and scikit-learn's seconds per iteration
with its default threads and with one (its ``_e_step`` plus ``_m_step`` per iteration,
timed around the calls).

``--model`` picks another model with the same machinery: ``ppca`` (PPCA, q=4, with 10%
of the entries missing), ``tobit`` (CensoredRegression, half the rows censored) or
``hmm`` (GaussianHMM, diag, 4 states, sequences of 100 steps of 4 features, float32;
``--n`` counts sequences, ``--chunk-rows`` sequences per chunk); scikit-learn runs for
``gmm`` only.

Run ``python benchmarks/iteration.py`` (about 3 minutes on 2 cores) or with ``--n 2e6
--covariance diag --no-sklearn``. Medians over the timed iterations of every repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from _common import (
    emit,
    initial_parameters,
    local_cluster,
    machine,
    median,
    mixture_rows,
    scattered,
    timed,
)
from threadpoolctl import threadpool_limits

BENCHMARK = "iteration"

PHASES = ("graph", "submit", "kernel", "map_idle", "tree", "gather", "m_step", "checkpoint")


class Probe:
    """Wall-clock intervals of wrapped functions: (name, start, stop), ``time.time()``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float]] = []
        self.last_pass: tuple[Any, ...] = ()  # em_pass's (pairs, names, blocks) of the last
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:  # the engine changed: that phase is then reported as 0
            print(f"note: {owner.__name__}.{attribute} not found", file=sys.stderr)
            return
        events = self.events

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if name == "pass":
                self.last_pass = args
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                events.append((name, start, time.time()))

        setattr(owner, attribute, wrapper)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def probed() -> Iterator[Probe]:
    """The engine's functions wrapped for the duration (the client's side of a pass)."""
    import distributed

    import dem.checkpoint
    import dem.engine

    probe = Probe()
    probe.wrap(dem.engine, "em_pass", "pass")
    probe.wrap(dem.engine, "map_reduce_graph", "graph")
    probe.wrap(dem.engine, "_compute", "compute")
    probe.wrap(dem.engine, "_evaluations", "m_step")
    probe.wrap(dem.checkpoint.Checkpoint, "write", "checkpoint")
    if hasattr(dem.checkpoint.Checkpoint, "_write"):  # since writes run in the background
        probe.wrap(dem.checkpoint.Checkpoint, "_write", "checkpoint_write")
    probe.wrap(distributed.Client, "_graph_to_futures", "client_submit")
    try:
        yield probe
    finally:
        probe.undo()


def _within(events: list[tuple[str, float, float]], name: str, start: float, stop: float) -> float:
    return sum(b - a for n, a, b in events if n == name and start <= a < stop)


def budget(
    events: list[tuple[str, float, float]], tasks: list[dict[str, Any]], end: float
) -> list[dict[str, Any]]:
    """One budget per pass, from the probe's events and the task stream; a pass lasts
    from its ``em_pass`` call to the next one (the last to ``end``)."""
    starts = sorted(a for n, a, _ in events if n == "pass")
    rows = []
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else end
        compute = [(a, b) for n, a, b in events if n == "compute" and start <= a < stop]
        if not compute:
            continue
        c0, c1 = compute[0]
        mine = [t for t in tasks if c0 <= _compute_span(t)[0] <= c1]
        if not mine:
            continue
        spans = {id(t): _compute_span(t) for t in mine}
        maps = [t for t in mine if _prefix(t) == "_map_task"]
        combines = [t for t in mine if _prefix(t) == "_combine_task"]
        first = min(a for a, _ in spans.values())
        map_end = max((spans[id(t)][1] for t in maps), default=first)
        last = max(b for _, b in spans.values())
        per_worker: dict[str, float] = {}
        chunks: dict[str, int] = {}
        for t in maps:
            a, b = spans[id(t)]
            per_worker[t["worker"]] = per_worker.get(t["worker"], 0.0) + (b - a)
            chunks[t["worker"]] = chunks.get(t["worker"], 0) + 1
        kernel = max(per_worker.values(), default=0.0)
        row = {
            "pass": index,
            "wall": stop - start,
            "graph": _within(events, "graph", start, stop),
            "submit": first - c0,
            "client_submit": _within(events, "client_submit", c0, c1),
            "kernel": kernel,
            "map_idle": (map_end - first) - kernel,
            "tree": last - map_end,
            "gather": c1 - last,
            "m_step": _within(events, "m_step", start, stop),
            "checkpoint": _within(events, "checkpoint", start, stop),
            "checkpoint_write": _within(events, "checkpoint_write", start, stop),
            "kernel_per_worker": sorted(per_worker.values()),
            "map_tasks_per_worker": sorted(chunks.values()),
            "kernel_per_map_task": statistics.median(b - a for a, b in map(_span_of(spans), maps))
            if maps
            else 0.0,
            "combine_compute": sum(spans[id(t)][1] - spans[id(t)][0] for t in combines),
            "transfer_params": _transfers(maps),
            "transfer_stats": _transfers(combines),
            "tasks": len(mine),
        }
        row["other"] = row["wall"] - sum(row[p] for p in PHASES)
        row["timeline"] = [_line(t, c0) for t in sorted(mine, key=lambda t: spans[id(t)][0])]
        rows.append(row)
    return rows


def _line(task: dict[str, Any], origin: float) -> str:
    """One task of the timeline: ms from the pass's ``dask.compute`` call."""
    parts = [f"{_prefix(task):<14} {str(task['worker'])[-6:]:>6}"]
    for s in task["startstops"]:
        parts.append(
            f"{s['action']} {1e3 * (s['start'] - origin):7.1f}-{1e3 * (s['stop'] - origin):7.1f}"
        )
    return "  ".join(parts)


def _span_of(spans: dict[int, tuple[float, float]]) -> Callable[[dict[str, Any]], Any]:
    return lambda t: spans[id(t)]


def _prefix(task: dict[str, Any]) -> str:
    key = task["key"]
    name = key[0] if isinstance(key, tuple) else str(key)
    return name.split("-", 1)[0]


def _compute_span(task: dict[str, Any]) -> tuple[float, float]:
    spans = [(s["start"], s["stop"]) for s in task["startstops"] if s["action"] == "compute"]
    return (spans[0][0], spans[-1][1]) if spans else (np.inf, np.inf)


def _transfers(tasks: list[dict[str, Any]]) -> float:
    return sum(
        s["stop"] - s["start"] for t in tasks for s in t["startstops"] if s["action"] == "transfer"
    )


def dem_fit(
    client: Any, case: Case, arrays: list[Any], passes: int, checkpoint: str | None
) -> tuple[list[dict[str, Any]], list[float], tuple[Any, ...]]:
    """Budgets of the passes after the first (warm-up) and before the last, the lower
    bounds, and the last pass's ``(pairs, names, ...)`` (for :func:`kernel_alone`)."""
    from distributed import get_task_stream

    from dem.engine import ConvergenceWarning

    model = case.estimator(passes, checkpoint)
    cpu_before = map_task_seconds(client)
    with probed() as probe, get_task_stream(client) as stream:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(*arrays)
        end = time.time()
    cpu, elsewhere = (b - a for a, b in zip(cpu_before, map_task_seconds(client), strict=True))
    rows = budget(probe.events, stream.data, end)
    for row in rows:
        row["map_task_cpu_share"] = cpu / (cpu + elsewhere) if cpu + elsewhere > 0 else np.nan
    return rows[1:-1], list(getattr(model, "lower_bounds_", [])), probe.last_pass


def _map_task_digests(dask_worker: Any) -> tuple[float, float]:
    """On a worker: seconds its map tasks spent on the CPU and off it (distributed's
    ``digests_total``: ``thread-cpu`` and ``thread-noncpu`` of the prefix ``_map_task``)."""
    cpu = elsewhere = 0.0
    for key, value in dask_worker.digests_total.items():
        if isinstance(key, tuple) and len(key) == 5 and key[0] == "execute":
            prefix = key[2]  # dask's key_split drops the leading underscore
            if prefix == "map_task" and key[3] == "thread-cpu":
                cpu += value
            elif prefix == "map_task" and key[3] == "thread-noncpu":
                elsewhere += value
    return cpu, elsewhere


def map_task_seconds(client: Any) -> tuple[float, float]:
    """The map tasks' seconds on and off the CPU so far, summed over the workers."""
    found = client.run(_map_task_digests).values()
    return sum(c for c, _ in found), sum(e for _, e in found)


def sklearn_iteration(
    x: np.ndarray, k: int, covariance_type: str, inits: dict[str, np.ndarray], iterations: int
) -> tuple[list[float], float]:
    """scikit-learn's seconds of each EM iteration (its ``_e_step`` plus ``_m_step``,
    timed around the calls; the final E-step after the loop is left out), and its lower
    bound after ``iterations`` iterations."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    class Timed(GaussianMixture):  # type: ignore[misc]
        def _e_step(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super()._e_step(*args, **kwargs)
            finally:
                e_steps.append(time.perf_counter() - started)

        def _m_step(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                super()._m_step(*args, **kwargs)
            finally:
                m_steps.append(time.perf_counter() - started)

    e_steps: list[float] = []
    m_steps: list[float] = []
    model = Timed(
        k,
        covariance_type=covariance_type,
        max_iter=iterations,
        tol=0.0,
        init_params="random_from_data",
        random_state=0,
        **inits,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    # the final E-step after the loop has no M-step: zip stops at the M-steps
    return [e + m for e, m in zip(e_steps, m_steps, strict=False)], float(model.lower_bound_)


def kernel_alone(last_pass: tuple[Any, ...], chunks: dict[str, np.ndarray]) -> float:
    """Seconds of one chunk's E-step in this process, one thread (fastest of 5), with the
    model and parameters of the fit's last pass."""
    pairs, names = last_pass[0], last_pass[1]
    model, params = pairs[0]
    block = {name: chunks[name] for name in names}
    with threadpool_limits(1):
        return min(timed(lambda: model.e_step(block, params))[0] for _ in range(5))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over passes of each phase (seconds), the per-worker figures by rank."""
    out: dict[str, Any] = {}
    for name in ("wall", *PHASES, "other", "client_submit", "combine_compute", "checkpoint_write"):
        out[name] = median([r[name] for r in rows])
    for name in ("transfer_params", "transfer_stats", "kernel_per_map_task", "map_task_cpu_share"):
        out[name] = median([r[name] for r in rows])
    workers = max(len(r["kernel_per_worker"]) for r in rows)
    out["kernel_per_worker"] = [
        median([r["kernel_per_worker"][i] for r in rows if len(r["kernel_per_worker"]) > i])
        for i in range(workers)
    ]
    out["map_tasks_per_worker"] = rows[0]["map_tasks_per_worker"]
    out["tasks_per_pass"] = rows[0]["tasks"]
    out["wall_over_kernel"] = out["wall"] / out["kernel"]
    out["passes"] = len(rows)
    return out


def table(columns: dict[str, dict[str, Any]], extra: dict[str, str]) -> str:
    """The budgets side by side, in milliseconds."""
    names = list(columns)
    lines = [f"{'ms per iteration':<26}" + "".join(f"{n:>18}" for n in names)]
    for phase in ("wall", *PHASES, "other"):
        cells = "".join(f"{1e3 * columns[n][phase]:>18.1f}" for n in names)
        lines.append(f"{phase:<26}{cells}")
    lines.append(
        f"{'  of submit: client':<26}"
        + "".join(f"{1e3 * columns[n]['client_submit']:>18.1f}" for n in names)
    )
    for label, key in (
        ("  checkpoint write, thread", "checkpoint_write"),
        ("  transfers into maps", "transfer_params"),
        ("  transfers into combines", "transfer_stats"),
        ("  combine compute", "combine_compute"),
        ("  per map task (median)", "kernel_per_map_task"),
    ):
        lines.append(f"{label:<26}" + "".join(f"{1e3 * columns[n][key]:>18.2f}" for n in names))
    lines.append(
        f"{'kernel per worker':<26}"
        + "".join(
            f"{'/'.join(f'{1e3 * v:.0f}' for v in columns[n]['kernel_per_worker']):>18}"
            for n in names
        )
    )
    lines.append(
        f"{'  map tasks on the CPU':<26}"
        + "".join(f"{columns[n]['map_task_cpu_share']:>18.0%}" for n in names)
    )
    lines.append(
        f"{'wall / busiest kernel':<26}"
        + "".join(f"{columns[n]['wall_over_kernel']:>18.2f}" for n in names)
    )
    lines.extend(f"{key}: {value}" for key, value in extra.items())
    return "\n".join(lines)


@dataclass
class Case:
    """One model's benchmark: its inputs (in ``fit``'s order, split into chunks along their
    first axis), an estimator of ``max_iter`` passes, and the configuration it reports."""

    data: dict[str, np.ndarray]
    estimator: Callable[[int, str | None], Any]
    config: dict[str, Any]


DEFAULTS = {  # per model: rows (sequences for the HMM), features, components, chunk rows
    "gmm": (1e6, 16, 8, 100_000),
    "ppca": (1e6, 16, 4, 100_000),
    "tobit": (1e6, 16, 0, 100_000),
    "hmm": (5e4, 4, 4, 5_000),
}


def gmm_case(n: int, d: int, k: int, covariance: str) -> Case:
    """A Gaussian mixture from a k-means start (the one scikit-learn gets)."""
    from dem.models.mixture import GaussianMixture

    x = mixture_rows(n, d, k, seed=1)
    sample = x[np.random.default_rng(2).choice(n, size=min(n, 20_000), replace=False)]
    inits = initial_parameters(sample, k, covariance, seed=3)
    return Case(
        {"X": x},
        lambda passes, store: GaussianMixture(
            k, covariance_type=covariance, max_iter=passes, tol=0.0, checkpoint=store, **inits
        ),
        {"covariance": covariance, "inits": inits},
    )


def ppca_case(n: int, d: int, q: int, missing: float) -> Case:
    """PPCA with each entry missing with probability ``missing`` (NaN)."""
    import dem

    rng = np.random.default_rng(1)
    loadings = rng.standard_normal((d, q)) * np.linspace(3.0, 1.0, q)
    x = rng.standard_normal((n, q)) @ loadings.T + rng.normal(0.0, 5.0, d)
    x += rng.standard_normal((n, d))
    x[rng.random((n, d)) < missing] = np.nan
    return Case(
        {"X": x},
        lambda passes, store: dem.PPCA(
            q, max_iter=passes, tol=0.0, random_state=0, checkpoint=store
        ),
        {"missing": missing},
    )


def tobit_case(n: int, d: int, censored: float) -> Case:
    """A censored regression, ``censored`` of the rows at a limit (half each side)."""
    import dem

    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d))
    latent = 0.5 + x @ (rng.normal(size=d) / np.sqrt(d)) + rng.normal(size=n)
    left, right = np.quantile(latent, [censored / 2, 1 - censored / 2])
    return Case(
        {"X": x, "y": np.clip(latent, left, right)},
        lambda passes, store: dem.CensoredRegression(
            float(left), float(right), max_iter=passes, tol=0.0, checkpoint=store
        ),
        {"censored": censored},
    )


def hmm_case(n: int, d: int, k: int, times: int) -> Case:
    """A diagonal Gaussian HMM: ``n`` sequences of ``times`` steps (float32), from a sticky
    chain of ``k`` states, started near the truth."""
    import dem

    rng = np.random.default_rng(0)
    transmat = np.full((k, k), 0.1 / max(k - 1, 1))
    np.fill_diagonal(transmat, 0.9)
    means, covars = rng.normal(0.0, 3.0, (k, d)), rng.uniform(0.5, 1.5, (k, d))
    cdf = np.cumsum(transmat, axis=1)
    states = np.empty((n, times), dtype=np.int64)
    states[:, 0] = rng.integers(0, k, n)
    for t in range(1, times):
        states[:, t] = np.minimum((rng.random((n, 1)) >= cdf[states[:, t - 1]]).sum(1), k - 1)
    noise = rng.standard_normal((n, times, d), dtype=np.float32)
    x = (means[states] + noise * np.sqrt(covars[states])).astype(np.float32)
    inits = {
        "startprob_init": np.full(k, 1.0 / k),
        "transmat_init": np.full((k, k), 1.0 / k),
        "means_init": means + rng.normal(0.0, 0.5, means.shape),
        "covars_init": covars * rng.uniform(0.7, 1.5, covars.shape),
    }
    return Case(
        {"X": x},
        lambda passes, store: dem.GaussianHMM(
            k, covariance_type="diag", max_iter=passes, tol=0.0, checkpoint=store, **inits
        ),
        {"times": times, "covariance": "diag"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(DEFAULTS), default="gmm")
    parser.add_argument("--n", type=float, help="rows, sequences for hmm (default by model)")
    parser.add_argument("--d", type=int, help="features (default by model)")
    parser.add_argument("--k", type=int, help="components or states (default by model)")
    parser.add_argument("--covariance", default="full", help="gmm only")
    parser.add_argument("--missing", type=float, default=0.1, help="ppca: fraction missing")
    parser.add_argument("--censored", type=float, default=0.5, help="tobit: fraction censored")
    parser.add_argument("--times", type=int, default=100, help="hmm: steps per sequence")
    parser.add_argument("--chunk-rows", type=int, help="rows (sequences) per chunk")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4, help="timed passes per fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits with and without checkpoint")
    parser.add_argument("--sklearn-iterations", type=int, default=3, help="per repetition")
    parser.add_argument("--no-sklearn", action="store_true", help="gmm: no scikit-learn")
    parser.add_argument("--no-plain", action="store_true", help="only the fit with a checkpoint")
    parser.add_argument(
        "--timeline", action="store_true", help="print the tasks of one pass (stderr)"
    )
    args = parser.parse_args()
    n0, d0, k0, chunk0 = DEFAULTS[args.model]
    n, d = int(args.n or n0), args.d or d0
    k, chunk_rows = args.k or k0, args.chunk_rows or chunk0

    emit(BENCHMARK, "machine", **machine())
    if args.model == "gmm":
        case = gmm_case(n, d, k, args.covariance)
    elif args.model == "ppca":
        case = ppca_case(n, d, k, args.missing)
    elif args.model == "tobit":
        case = tobit_case(n, d, args.censored)
    else:
        case = hmm_case(n, d, k, args.times)
    inits = case.config.pop("inits", None)
    config = {"model": args.model, "n": n, "d": d, "k": k, **case.config,
              "chunk_rows": chunk_rows, "workers": args.workers}  # fmt: skip
    with_sklearn = args.model == "gmm" and not args.no_sklearn
    rows: dict[str, list[dict[str, Any]]] = {"no checkpoint": [], "checkpoint": []}
    if args.no_plain:
        del rows["no checkpoint"]
    bounds: dict[str, list[float]] = {}
    sklearn: dict[str, list[float]] = {"sklearn_threads": [], "sklearn_1_thread": []}
    with local_cluster(args.workers) as client, tempfile.TemporaryDirectory() as tmp:
        arrays = [scattered(client, value, chunk_rows) for value in case.data.values()]
        passes = args.iterations + 2
        for repeat in range(args.repeats):
            for name in rows:
                store = f"{tmp}/fit-{repeat}.zarr" if name == "checkpoint" else None
                found, bounds[name], last_pass = dem_fit(client, case, arrays, passes, store)
                rows[name].extend(found)
            if with_sklearn:
                x, ctype = case.data["X"], args.covariance
                seconds, bound = sklearn_iteration(x, k, ctype, inits, args.sklearn_iterations)
                sklearn["sklearn_threads"].extend(seconds)
                bounds["sklearn"] = [bound]
                with threadpool_limits(1):
                    seconds, _ = sklearn_iteration(x, k, ctype, inits, args.sklearn_iterations)
                sklearn["sklearn_1_thread"].extend(seconds)
        first = {name: value[:chunk_rows] for name, value in case.data.items()}
        alone = kernel_alone(last_pass, first)
    if args.timeline:
        for name, found in rows.items():
            print(f"one pass, {name} (ms from dask.compute):", file=sys.stderr)
            print("\n".join(found[0]["timeline"]), file=sys.stderr)
    columns = {name: summarise(found) for name, found in rows.items()}
    for name, column in columns.items():
        emit(BENCHMARK, "budget", fit=name, **config, seconds=column)
    plain = columns.get("no checkpoint", columns["checkpoint"])  # the fit compared with peers
    summary: dict[str, Any] = {**config, "kernel_alone_per_chunk": alone}
    summary["kernel_per_map_task_over_alone"] = plain["kernel_per_map_task"] / alone
    for name, seconds in sklearn.items():
        if seconds:
            summary[name] = median(seconds)
            summary[f"{name}_repeats"] = seconds
            summary[f"{name}_over_dem"] = median(seconds) / plain["wall"]
    if "sklearn" in bounds and bounds.get("no checkpoint"):
        ours = bounds["no checkpoint"][args.sklearn_iterations - 1]
        summary["lower_bound_rel_diff_vs_sklearn"] = abs(ours - bounds["sklearn"][0]) / abs(
            bounds["sklearn"][0]
        )
    summary["wall_over_kernel"] = plain["wall_over_kernel"]
    emit(BENCHMARK, "summary", **summary)
    extra = {
        "kernel alone, one chunk, this process (ms)": f"{1e3 * alone:.1f}",
        **{
            f"{name} (s per iteration)": f"{summary[name]:.3f} = "
            f"{summary[f'{name}_over_dem']:.1f}x dem without checkpoint"
            for name in sklearn
            if name in summary
        },
    }
    print(table(columns, extra), file=sys.stderr)


if __name__ == "__main__":
    main()
