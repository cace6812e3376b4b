"""deploy/: the Kubernetes variants (volume, object storage) and the image's dependencies.

The DaskJob and DaskCluster manifests are validated against the Dask Kubernetes
operator's CRD schemas (vendored, see tests/fixtures/README.md); the job's command line
is parsed by the real CLI. ``tests/test_cli.py`` checks the volume variant's command;
here both variants are held to the rules they share (kustomizations that list every
manifest, network policies that select their cluster, one pinned image), and the
object-storage variant to its own: credentials only from a Secret, in the pods that touch
the data, and no volume at all.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

import dem.cli
from dem.cli import app

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"
VARIANTS = {"volume": KUBERNETES, "object-storage": KUBERNETES / "object-storage"}
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _schemas() -> dict[str, dict]:
    fixture = REPO / "tests" / "fixtures" / "dask_operator_crd_schemas.json"
    vendored = json.loads(fixture.read_text())
    assert vendored["source"].startswith("dask-kubernetes==2026.3.0 ")
    return vendored["schemas"]


def _documents(directory: Path) -> list[dict[str, Any]]:
    """The manifests of one kustomization directory (kustomization.yaml excluded)."""
    return [
        document
        for path in sorted(directory.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _pods(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = job["spec"]["cluster"]["spec"]
    return {
        "job": job["spec"]["job"]["spec"],
        "worker": cluster["worker"]["spec"],
        "scheduler": cluster["scheduler"]["spec"],
    }


def _job(directory: Path) -> dict[str, Any]:
    (job,) = [d for d in _documents(directory) if d["kind"] == "DaskJob"]
    return job


def _parse(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The values ``dem fit`` parses from ``args`` (the real CLI; the fit is not run)."""
    parsed: dict[str, Any] = {}
    monkeypatch.setattr(
        dem.cli.fit,
        "_run_fit",
        lambda key, spec, cls, opts, parameters, values: parsed.update(values),
    )
    assert args[0] == "dem"
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, result.output
    return parsed


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_lists_every_manifest_and_pins_the_image(variant: str) -> None:
    directory = VARIANTS[variant]
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    manifests = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    listed = set(kustomization["resources"])
    if variant == "volume":  # the long-lived DaskCluster is applied on its own
        manifests.discard("daskcluster.yaml")
    assert listed == manifests
    assert kustomization["images"] == [{"name": "dem", "newTag": "0.1.0"}]
    images = {
        container["image"]
        for document in _documents(directory)
        if document["kind"] == "DaskJob"
        for pod in _pods(document).values()
        for container in pod["containers"]
    }
    assert images == {"dem:0.1.0"}  # one image, so client, scheduler and workers agree


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_isolates_the_jobs_cluster(variant: str) -> None:
    job = _job(VARIANTS[variant])
    name = job["metadata"]["name"]
    service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == name
    policies = [d for d in _documents(VARIANTS[variant]) if d["kind"] == "NetworkPolicy"]
    (policy,) = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].get(
        "dask.org/cluster-name") == name]  # fmt: skip
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    admitted = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    assert admitted == [{"dask.org/cluster-name": name}]
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_object_storage_job_validates_and_its_command_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schemas = _schemas()
    job = _job(VARIANTS["object-storage"])
    assert job["apiVersion"] == "kubernetes.dask.org/v1"
    jsonschema.Draft7Validator(schemas["DaskJob"]).validate(job)
    broken = json.loads(json.dumps(job))
    broken["spec"]["job"]["spec"]["containers"][0]["env"][0]["valueFrom"] = "dem-s3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schemas["DaskJob"]).validate(broken)

    (container,) = _pods(job)["job"]["containers"]
    args = container["args"]
    store = args[3]
    checkpoint = args[args.index("--checkpoint") + 1]
    bucket = re.fullmatch(r"s3://([a-z0-9.-]+)/.+\.zarr", store)
    assert bucket is not None and checkpoint.startswith(f"s3://{bucket.group(1)}/")
    # nothing dem writes may lie inside an input store
    assert not checkpoint.startswith(store.rstrip("/") + "/")
    values = _parse(args, monkeypatch)
    assert values["resume"] is True and values["insecure"] is True
    assert os.fspath(values["store"]) == store  # URLs stay URLs (not Path("s3:/..."))
    assert os.fspath(values["checkpoint"]) == checkpoint


def test_object_storage_credentials_come_from_a_secret_and_nothing_mounts_a_volume() -> None:
    directory = VARIANTS["object-storage"]
    pods = _pods(_job(directory))
    secrets = set()
    for role, pod in pods.items():
        assert "volumes" not in pod, role
        for container in pod["containers"]:
            assert "volumeMounts" not in container, role
            env = {e["name"]: e for e in container.get("env", [])}
            if role == "scheduler":  # it never touches the data
                assert not env
                continue
            # The job pod writes the checkpoint and reads metadata; workers read chunks.
            for name in CREDENTIALS:
                assert "value" not in env[name], f"{role}: {name} written into the manifest"
                reference = env[name]["valueFrom"]["secretKeyRef"]
                assert reference["key"] == name and not reference.get("optional", False)
                secrets.add(reference["name"])
            for name, entry in env.items():
                assert set(entry) == {"name", "valueFrom"}, f"{role}: {name} is a literal"
    assert secrets == {"dem-s3"}
    # The Secret itself is created by the user (deploy/README.md), never kept in the repo.
    for path in (REPO / "deploy").rglob("*.yaml"):
        kinds = {d.get("kind") for d in yaml.safe_load_all(path.read_text()) if d}
        assert "Secret" not in kinds, path
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "kubectl create secret generic dem-s3" in readme
    assert "kubectl apply -k deploy/kubernetes/object-storage" in readme


def test_image_installs_the_cloud_extra_at_pinned_versions() -> None:
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert '".[cloud]"' in dockerfile and "import s3fs, gcsfs, adlfs" in dockerfile
    pins = {}
    for line in (REPO / "deploy" / "docker" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "=="
            pins[requirement.name] = specifier.version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = [Requirement(r) for r in project["optional-dependencies"]["cloud"]]
    assert {r.name for r in extra} == {"s3fs", "gcsfs", "adlfs"}
    for requirement in extra:
        assert requirement.specifier.contains(pins[requirement.name]), requirement
    # s3fs and gcsfs each require the fsspec release of their own version
    assert pins["s3fs"] == pins["gcsfs"] == pins["fsspec"]
