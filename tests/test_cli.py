"""The ``dem`` command line and deploy/, end to end.

Real scheduler and worker processes are started on loopback by
``deploy/local/dask-local.sh``; ``dem`` runs in process (typer's CliRunner) or as a
subprocess. Results are checked against the ground truth of the generated data, against
an in-process fit with the library, and against scikit-learn's clustering score.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from scipy.optimize import linear_sum_assignment
from typer.testing import CliRunner

import dem
from dem.cli import ExitCode, app
from dem.cluster import InsecureConnectionWarning, SchedulerError, check_address, make_security
from dem.restore import from_checkpoint
from dem.synth import read_truth, write_store

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "dask-local.sh"
N_SAMPLES, N_FEATURES, K, CHUNK = 20_000, 3, 3, 4_000


def environment(**extra: str) -> dict[str, str]:
    """This interpreter's bin first on PATH and this checkout first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def dem_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dem.cli", *args]


def invoke(*args: str | os.PathLike[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, [os.fspath(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


class LocalCluster:
    """A cluster started by deploy/local/dask-local.sh in ``directory``."""

    def __init__(self, directory: Path, *extra: str, workers: int = 2) -> None:
        self.directory = directory
        subprocess.run(
            [str(SCRIPT), "start", "--workers", str(workers), "--dir", str(directory), *extra],
            env=environment(),
            check=True,
            timeout=180,
            capture_output=True,
        )
        self.scheduler_file = directory / "scheduler.json"
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def env(self) -> dict[str, str]:
        out = subprocess.run(
            [str(SCRIPT), "env", "--dir", str(self.directory)],
            env=environment(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())

    def stop(self) -> None:
        subprocess.run(
            [str(SCRIPT), "stop", "--dir", str(self.directory)],
            env=environment(),
            check=True,
            timeout=60,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    started = LocalCluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    write_store(
        path,
        "gmm",
        n_samples=N_SAMPLES,
        n_features=N_FEATURES,
        seed=3,
        chunk_rows=CHUNK,
        options={"n_components": K, "separation": 3.0},
    )
    return path


def matched_errors(true_means: np.ndarray, means: np.ndarray) -> np.ndarray:
    distance = np.linalg.norm(true_means[:, None] - means[None], axis=2)
    rows, cols = linear_sum_assignment(distance)
    return distance[rows, cols]


def in_process_fit(store: Path, **options) -> dem.GaussianMixture:
    return dem.GaussianMixture(K, random_state=0, **options).fit(store, variable="X")


# --- dem demo -----------------------------------------------------------------------


def test_demo_recovers_the_true_means(tmp_path: Path) -> None:
    code, output = invoke(
        "demo",
        "--samples",
        "6000",
        "--features",
        "8",
        "--components",
        "3",
        "--workers",
        "1",
        "--chunk-rows",
        "2000",
        "--dir",
        tmp_path,
    )
    assert code == 0, output
    assert "Running on local cluster" in output and "Converged" in output
    assert f"Checkpoint: {tmp_path / 'fit.zarr'}" in output
    fitted = from_checkpoint(tmp_path / "fit.zarr")
    truth = read_truth(tmp_path / "data.zarr")
    assert matched_errors(truth["means"], fitted.means_).max() < 0.2


# --- synth → fit → show → predict on a real loopback cluster ------------------------


def test_synth_fit_show_predict_round_trip(cluster: LocalCluster, tmp_path: Path) -> None:
    from sklearn.metrics import adjusted_rand_score

    data = tmp_path / "data.zarr"
    code, output = invoke(
        "synth",
        "gmm",
        data,
        "--samples",
        "12000",
        "--features",
        "2",
        "--components",
        "3",
        "--separation",
        "4",
        "--chunk-rows",
        "3000",
        "--seed",
        "5",
    )
    assert code == 0, output
    group = zarr.open_group(data, mode="r")
    assert group["X"].shape == (12000, 2) and group["X"].chunks == (3000, 2)
    truth = read_truth(data)
    assert truth["means"].shape == (3, 2)

    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit",
        "gmm",
        data,
        "--var",
        "X",
        "-k",
        "3",
        "--checkpoint",
        checkpoint,
        "--resume",
        "--scheduler-file",
        cluster.scheduler_file,
    )
    assert code == 0, output
    first = output.splitlines()[0]
    assert (
        "found by --scheduler-file" in first and cluster.address in first and "dashboard" in first
    )
    assert "Converged" in output

    reference = dem.GaussianMixture(3, random_state=0).fit(data, variable="X")
    restored = from_checkpoint(checkpoint)
    assert restored.n_iter_ == reference.n_iter_
    np.testing.assert_allclose(restored.means_, reference.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        restored.covariances_, reference.covariances_, rtol=1e-10, atol=1e-12
    )
    assert matched_errors(truth["means"], restored.means_).max() < 0.1

    plot = tmp_path / "trace.png"
    code, output = invoke("show", checkpoint, "--plot", plot)
    assert code == 0, output
    assert "gaussian_mixture" in output and "n_components" in output and "means" in output
    assert f"{reference.lower_bounds_[-1]:.10f}" in output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "predicted.zarr"
    code, output = invoke(
        "predict",
        checkpoint,
        data,
        "--var",
        "X",
        "--out",
        out,
        "--scheduler-file",
        cluster.scheduler_file,
    )
    assert code == 0, output
    written = zarr.open_group(out, mode="r")
    x = np.asarray(group["X"][:])
    assert written["labels"].chunks == (3000,) and written["probabilities"].chunks == (3000, 3)
    np.testing.assert_array_equal(written["labels"][:], reference.predict(x))
    np.testing.assert_allclose(
        written["probabilities"][:], reference.predict_proba(x), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(written["loglik"][:], reference.score_samples(x), rtol=1e-10)
    assert adjusted_rand_score(group["labels"][:], written["labels"][:]) > 0.95

    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out)
    assert code == ExitCode.USAGE and "--overwrite" in output


def test_fit_subprocess_finds_scheduler_from_environment(
    cluster: LocalCluster, store: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "fit.zarr"
    result = subprocess.run(
        dem_command(
            "fit",
            "gmm",
            str(store),
            "--var",
            "X",
            "--n-components",
            str(K),
            "--covariance-type",
            "diag",
            "--checkpoint",
            str(checkpoint),
        ),
        env=environment(DASK_SCHEDULER_ADDRESS=cluster.address),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert "found by DASK_SCHEDULER_ADDRESS" in first and cluster.address in first
    reference = in_process_fit(store, covariance_type="diag")
    restored = from_checkpoint(checkpoint)
    np.testing.assert_allclose(restored.means_, reference.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        restored.covariances_, reference.covariances_, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(restored.lower_bounds_, reference.lower_bounds_, rtol=1e-12)


def test_sigint_leaves_a_resumable_checkpoint(
    cluster: LocalCluster, store: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "fit.zarr"
    args = [
        "fit",
        "gmm",
        str(store),
        "--var",
        "X",
        "-k",
        str(K),
        "--tol",
        "0",
        "--max-iter",
        "12",
        "--init-params",
        "random_from_data",
        "--checkpoint",
        str(checkpoint),
        "--scheduler-file",
        str(cluster.scheduler_file),
    ]
    process = subprocess.Popen(
        dem_command(*args),
        env=environment(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line)
            if line.split()[:2] == ["0", "2"]:  # iteration 2 is checkpointed
                process.send_signal(signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == ExitCode.INTERRUPTED, output
    assert "Resume with:" in output
    stopped = dem.load_checkpoint(checkpoint).attrs["last_iteration"]
    assert 2 <= stopped < 12

    resume = shlex.split(output.split("Resume with:")[1].strip().splitlines()[0])
    assert resume[:3] == ["dem", "fit", "gmm"] and "--resume" in resume
    code, output = invoke(*resume[1:])
    assert code == 0, output
    assert f"Resuming {checkpoint} after run 0, iteration {stopped}" in output
    assert "ConvergenceWarning" in output  # tol 0 never converges: a warning, exit 0

    with pytest.warns(dem.ConvergenceWarning):
        reference = in_process_fit(store, tol=0.0, max_iter=12, init_params="random_from_data")
    with pytest.warns(UserWarning, match="without converging"):
        restored = from_checkpoint(checkpoint)
    assert restored.n_iter_ == 12
    np.testing.assert_allclose(restored.means_, reference.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(restored.lower_bounds_, reference.lower_bounds_, rtol=1e-12)


# --- TLS and address checks ---------------------------------------------------------------


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Nested dask config as dotted keys (so setting it leaves the rest of the config)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def tls_handshake_accepted(address: str, ca_file: Path) -> bool:
    """Whether the scheduler keeps a TLS connection from a client without a certificate."""
    import socket
    import ssl

    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as connection:
                connection.settimeout(5)
                return connection.recv(1) != b""  # TLS 1.3: the refusal arrives as an alert
        except ssl.SSLError:
            return False
        except TimeoutError:  # the server kept the connection open: accepted
            return True


def test_tls_cluster_refuses_clients_without_certificates(store: Path, tmp_path: Path) -> None:

    tls = LocalCluster(tmp_path / "tls", "--tls", "--no-nanny", workers=1)
    try:
        assert tls.address.startswith("tls://127.0.0.1:")
        certs = tls.directory / "certs"
        # The server demands a client certificate: trusting its CA is not enough.
        assert not tls_handshake_accepted(tls.address, certs / "ca.pem")

        code, output = invoke(
            "fit",
            "gmm",
            store,
            "--var",
            "X",
            "-k",
            str(K),
            "--checkpoint",
            tmp_path / "refused.zarr",
            "--scheduler",
            tls.address,
        )
        assert code == ExitCode.SCHEDULER and "no client certificate" in output

        code, output = invoke(
            "fit",
            "gmm",
            store,
            "--var",
            "X",
            "-k",
            str(K),
            "--checkpoint",
            tmp_path / "flags.zarr",
            "--scheduler",
            tls.address,
            "--tls-ca-file",
            certs / "ca.pem",
            "--tls-cert",
            certs / "client.pem",
            "--tls-key",
            certs / "client-key.pem",
        )
        assert code == 0, output
        assert tls.address in output.splitlines()[0]

        # The same through dask config, set from the variables `dask-local.sh env` prints.
        import dask

        with dask.config.set(flatten(dask.config.collect_env(tls.env()))):
            code, output = invoke(
                "fit",
                "gmm",
                store,
                "--var",
                "X",
                "-k",
                str(K),
                "--checkpoint",
                tmp_path / "config.zarr",
            )
        assert code == 0, output
        assert "found by dask config scheduler-address" in output.splitlines()[0]
        reference = in_process_fit(store)
        for path in ("flags.zarr", "config.zarr"):
            np.testing.assert_allclose(
                from_checkpoint(tmp_path / path).means_, reference.means_, rtol=1e-10, atol=1e-12
            )
    finally:
        tls.stop()


def test_plain_tcp_beyond_loopback_needs_insecure(store: Path, tmp_path: Path) -> None:
    security = make_security()
    assert check_address("tcp://127.0.0.1:8786", security) == "tcp://127.0.0.1:8786"
    assert check_address("localhost:8786", security) == "tcp://localhost:8786"
    assert check_address("tcp://[::1]:8786", security) == "tcp://[::1]:8786"
    for address in ("tcp://10.1.2.3:8786", "tcp://scheduler.example.org:8786", "192.168.1.1:8786"):
        with pytest.raises(SchedulerError, match="--insecure"):
            check_address(address, security)
    with pytest.warns(InsecureConnectionWarning, match="run arbitrary code"):
        check_address("tcp://10.1.2.3:8786", security, insecure=True)
    with pytest.raises(SchedulerError, match="no client certificate"):
        check_address("tls://10.1.2.3:8786", security)
    # Refused before any connection is attempted.
    code, output = invoke(
        "fit",
        "gmm",
        store,
        "--var",
        "X",
        "--checkpoint",
        tmp_path / "c.zarr",
        "--scheduler",
        "tcp://10.1.2.3:8786",
    )
    assert code == ExitCode.SCHEDULER and "--insecure" in output
    assert not (tmp_path / "c.zarr").exists()
    # Nothing listens on port 1 of loopback: a clear error, not a hang.
    code, output = invoke(
        "fit",
        "gmm",
        store,
        "--var",
        "X",
        "--checkpoint",
        tmp_path / "c.zarr",
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--connect-timeout",
        "1",
    )
    assert code == ExitCode.SCHEDULER and "Cannot connect" in output


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_exit_codes(cluster: LocalCluster, store: Path, tmp_path: Path) -> None:
    on_cluster = ("--scheduler-file", cluster.scheduler_file)
    code, output = invoke("fit", "gmm", tmp_path / "missing.zarr", "--var", "X")
    assert code == ExitCode.DATA and "does not exist" in output
    code, output = invoke("fit", "gmm", store, "--var", "Y")
    assert code == ExitCode.DATA and "no variable 'Y'" in output
    code, output = invoke("fit", "gmm", store, "--var", "X", "--covariance-type", "banana")
    assert code == ExitCode.USAGE
    code, output = invoke("fit", "gmm", store, "--var", "X", "--means-init", tmp_path / "nope.npy")
    assert code == ExitCode.DATA and ".npy" in output

    bad = tmp_path / "nan.zarr"
    x = np.random.default_rng(0).standard_normal((400, 2))
    x[250, 1] = np.nan
    zarr.open_group(bad, mode="w").create_array("X", data=x, chunks=(100, 2))
    code, output = invoke(
        "fit",
        "gmm",
        bad,
        "--var",
        "X",
        "-k",
        "2",
        "--checkpoint",
        tmp_path / "nan-fit.zarr",
        *on_cluster,
    )
    assert code == ExitCode.DATA and "NaN" in output

    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit",
        "gmm",
        store,
        "--var",
        "X",
        "-k",
        str(K),
        "--max-iter",
        "2",
        "--checkpoint",
        checkpoint,
        *on_cluster,
    )
    assert code == 0 and "Stopped without converging" in output and "--resume" in output
    code, output = invoke(
        "fit", "gmm", store, "--var", "X", "-k", str(K), "--checkpoint", checkpoint
    )
    assert code == ExitCode.CHECKPOINT and "--resume" in output
    code, output = invoke(
        "fit",
        "gmm",
        store,
        "--var",
        "X",
        "-k",
        str(K + 1),
        "--checkpoint",
        checkpoint,
        "--resume",
        *on_cluster,
    )
    assert code == ExitCode.CHECKPOINT and "n_components" in output

    code, output = invoke("show", tmp_path / "nothing.zarr")
    assert code == ExitCode.USAGE and "does not exist" in output
    code, output = invoke("show", store)
    assert code == ExitCode.CHECKPOINT and "not a dem checkpoint" in output
    wide = tmp_path / "wide.zarr"
    zarr.open_group(wide, mode="w").create_array("X", data=np.zeros((10, 5)), chunks=(5, 5))
    code, output = invoke("predict", checkpoint, wide, "--var", "X", "--out", tmp_path / "o.zarr")
    assert code == ExitCode.DATA and "fitted to 3 features" in output
    code, output = invoke("predict", checkpoint, store, "--var", "X", "--out", store / "inside")
    assert code == ExitCode.USAGE
    assert sorted(zarr.open_group(store, mode="r").array_keys()) == ["X", "labels"]


# --- dem synth memory ----------------------------------------------------------------------------


def test_synth_memory_stays_bounded(tmp_path: Path) -> None:
    """A 77 MB store is written with a few chunks' worth of memory (2.6 MB each)."""
    probe = """
import resource, sys
from dem.cli import app
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    app(sys.argv[1:])
except SystemExit as exit:
    assert exit.code == 0, exit.code
print("growth_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    out = tmp_path / "big.zarr"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "synth",
            "gmm",
            str(out),
            "--samples",
            "600000",
            "--features",
            "16",
            "--chunk-rows",
            "20000",
            "--threads",
            "2",
        ],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    growth_mib = int(result.stdout.split("growth_kib")[1]) / 1024
    assert zarr.open_group(out, mode="r")["X"].nbytes == 76_800_000
    assert growth_mib < 48, f"peak memory grew by {growth_mib:.0f} MiB for a 73 MiB store"


# --- deploy/kubernetes --------------------------------------------------------------------------


def _operator_schemas() -> dict[str, dict]:
    """The operator's CRD schemas, vendored from dask-kubernetes (see tests/fixtures/README.md)."""
    fixture = REPO / "tests" / "fixtures" / "dask_operator_crd_schemas.json"
    vendored = json.loads(fixture.read_text())
    assert vendored["source"].startswith("dask-kubernetes==2026.3.0 ")
    return vendored["schemas"]


def test_kubernetes_manifests_validate_against_operator_crds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jsonschema

    import dem.cli

    schemas = _operator_schemas()
    documents = {}
    for path in (REPO / "deploy" / "kubernetes").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") in schemas:
                assert document["apiVersion"] == "kubernetes.dask.org/v1"
                jsonschema.Draft7Validator(schemas[document["kind"]]).validate(document)
                documents[document["kind"]] = document
    assert set(documents) == {"DaskCluster", "DaskJob"}
    broken = json.loads(json.dumps(documents["DaskJob"]))
    broken["spec"]["cluster"]["spec"]["worker"]["replicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schemas["DaskJob"]).validate(broken)

    job = documents["DaskJob"]["spec"]["job"]["spec"]["containers"][0]
    # The job's command line, parsed by the real CLI (the fit itself is not run).
    parsed: dict = {}
    monkeypatch.setattr(
        dem.cli.fit,
        "_run_fit",
        lambda key, spec, cls, opts, parameters, values: parsed.update(values),
    )
    assert job["args"][0] == "dem"
    code, output = invoke(*job["args"][1:])
    assert code == 0, output
    params = parsed
    mount = job["volumeMounts"][0]["mountPath"]
    assert params["resume"] is True and params["insecure"] is True
    assert str(params["checkpoint"]).startswith(mount) and str(params["store"]).startswith(mount)
    images = {c["image"] for d in documents.values() for c in _containers(d)}
    assert images == {"dem:0.1.0"}  # pinned, one image for client, scheduler and workers


def _containers(document: dict) -> list[dict]:
    spec = document["spec"]
    cluster = spec["cluster"]["spec"] if document["kind"] == "DaskJob" else spec
    pods = [cluster["worker"]["spec"], cluster["scheduler"]["spec"]]
    if document["kind"] == "DaskJob":
        pods.append(spec["job"]["spec"])
    return [c for pod in pods for c in pod["containers"]]
