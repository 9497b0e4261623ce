"""Every Kubernetes manifest in deploy/, and the kustomization as `kubectl apply -k` would send it,
against the OpenAPI schemas of the Kubernetes version the EKS cluster runs (infra's
`cluster_version`), with kubernetes-validate in strict mode: an unknown field is an error, as it is
for `kubectl apply` (server-side field validation is Strict by default), and so are a wrong type, a
missing required field, and an apiVersion that version no longer serves (e.g. autoscaling/v2beta2).

Kinds that are not in the Kubernetes schemas are handled explicitly, by API group:

- a CRD whose schema is vendored is validated against it, strictly (unknown fields are errors
  unless the schema keeps them): the Kubeflow `PyTorchJob` (data/kubeflow.org_pytorchjobs.yaml,
  operator v1.9.0, through test_pytorchjob_crd.py's validator), and the External Secrets
  Operator's `ExternalSecret` and `SecretStore` of the chart infra/addons.tf installs (2.9.0:
  data/external-secrets.io_*.yaml, provenance in data/README.md);
- the groups in SKIPPED are skipped, each with its reason;
- anything else fails: a new kind must be given a schema or a reason.

`deploy/training-operator` is a kustomization of a remote git ref (the operator's own manifests;
rendering it needs the network): only its pinned ref is checked (test_addons.py).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecosystem_assets_tests import tools
from ecosystem_assets_tests.deploy.test_infra import INFRA, parsed

ROOT = INFRA.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in [*K8S.glob("*.yaml"), *(DEPLOY / "training-operator").glob("*.yaml")])
# API group => why its kinds are not validated here
SKIPPED = {
    "kustomize.config.k8s.io": "kustomize's own configuration, never sent to the API server; what it renders is validated",
    "monitoring.coreos.com": "Prometheus Operator CRDs (PodMonitor, PrometheusRule), not vendored; promtool checks the rules "
    "and their tests (test_prometheus_rules.py)",
}
DATA = Path(__file__).resolve().parent / "data"
# vendored CRD (unchanged) => its sha256, as taken from the source named in data/README.md
VENDORED_CRDS = {
    "external-secrets.io_externalsecrets.yaml": "5044be5a610ca90a075f34f03ed20b462695c43387ba9410db7f4250e47b1e2f",
    "external-secrets.io_secretstores.yaml": "7f750858d393913915a2f15daff9e1d2f56ca207c09920c055d7a68cceacb641",
}


def cluster_version() -> str:
    """The Kubernetes minor version the EKS cluster pins (infra/variables.tf)."""
    return str(parsed()["variable"]["cluster_version"]["default"])


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


@cache
def crd_validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) => a strict jsonschema validator of a vendored CRD."""
    from jsonschema import Draft7Validator

    from ecosystem_assets_tests.deploy.test_pytorchjob_crd import pytorchjob_validator, strict

    validators: dict[tuple[str, str], Any] = {("kubeflow.org/v1", "PyTorchJob"): pytorchjob_validator()}
    for name in VENDORED_CRDS:
        crd = yaml.load((DATA / name).read_text(), Loader=yaml.CSafeLoader)
        for version in crd["spec"]["versions"]:
            if version["served"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                validators[key] = Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return validators


def schema_errors(doc: dict[str, Any], version: str | None = None) -> list[str]:
    """What the API server of `version` (default: the cluster's) would refuse in `doc`; [] when
    valid or when its group is in SKIPPED."""
    import kubernetes_validate

    version = version or cluster_version()
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    name = f"{kind}/{(doc.get('metadata') or {}).get('name')}"
    if group_of(api_version) in SKIPPED:
        return []
    if (api_version, kind) in crd_validators():
        validator = crd_validators()[(api_version, kind)]
        return [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name}: {'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: Kubernetes {version} has no {api_version} {kind}, and no CRD schema or reason to skip it is given here"]
    assert validated == version, f"validated against {validated}, not {version}"
    return []


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- the kustomization, rendered ----------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "StorageClass"}


def render_in_python(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` makes of a kustomization that uses only `resources` (local files),
    `namespace` and `images` (name → newName/newTag), the fields deploy/k8s uses; anything else is
    refused rather than rendered wrong. Used where kubectl is not installed."""
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(config) - {"apiVersion", "kind", "namespace", "resources", "images"}
    assert not unsupported, f"{directory}: the Python renderer does not handle {sorted(unsupported)}; install kubectl"
    objects: list[dict[str, Any]] = []
    for resource in config.get("resources", []):
        path = directory / resource
        assert "://" not in resource and path.is_file(), f"{directory}: {resource} is not a local file"
        objects += documents(path)
    images = {i["name"]: i for i in config.get("images", [])}
    for obj in objects:
        if "namespace" in config and obj["kind"] not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = config["namespace"]
        pod = obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] != "Pod" else obj.get("spec", {})
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            image = images.get(container.get("image", "").split("@")[0].split(":")[0])
            if image:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}" if "newTag" in image else image["newName"]
    return objects


def render(directory: Path) -> list[dict[str, Any]]:
    """The kustomization as `kubectl apply -k` sends it: kubectl's kustomize where installed (as in
    test_deploy.py), else the Python renderer above."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return render_in_python(directory)
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


# --- tests ---------------------------------------------------------------------------------------------


def test_the_cluster_version_has_its_own_schemas() -> None:
    """kubernetes-validate falls back to an older version's schemas for a newer cluster; the tests
    must run against the pinned version itself."""
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions, major_minor

    version = cluster_version()
    assert version in {major_minor(v) for v in all_versions()}, f"kubernetes-validate has no {version} schemas: upgrade it"
    assert (
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}, version, strict=True) == version
    )
    import hcl2

    from ecosystem_assets_tests.deploy.test_infra import _OPTIONS

    example = hcl2.loads((INFRA / "terraform.tfvars.example").read_text(), serialization_options=_OPTIONS)
    assert example["cluster_version"] == version, "terraform.tfvars.example pins another Kubernetes version than the default"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid_for_the_cluster_version(path: Path) -> None:
    objects = documents(path)
    assert objects, f"{path} is empty"
    errors = [e for obj in objects for e in schema_errors(obj)]
    assert errors == []


def test_the_rendered_kustomization_is_valid_for_the_cluster_version() -> None:
    rendered = render(K8S)
    sources = [d for path in MANIFESTS if path.parent == K8S and path.name in _listed(K8S) for d in documents(path)]
    assert len(rendered) == len(sources) > 0
    assert [e for obj in rendered for e in schema_errors(obj)] == []
    # What would actually be validated, not skipped: the Kubernetes kinds.
    validated = [obj for obj in rendered if group_of(obj["apiVersion"]) not in SKIPPED]
    assert {"Deployment", "Service", "Job", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget"} <= {
        o["kind"] for o in validated
    }


def _listed(directory: Path) -> set[str]:
    return set(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])


def test_the_python_renderer_agrees_with_kubectl() -> None:
    tools.command("kubectl", "the Python renderer is compared with kubectl's")
    by_kubectl = render(K8S)
    by_python = render_in_python(K8S)
    assert sorted(map(identity, by_python)) == sorted(map(identity, by_kubectl))

    def images(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[str]]:
        found = {}
        for obj in objects:
            pod = obj.get("spec", {}).get("template", {}).get("spec", {})
            found[identity(obj)] = [c["image"] for c in [*pod.get("containers", []), *pod.get("initContainers", [])]]
        return found

    assert images(by_python) == images(by_kubectl)


def test_every_kind_is_validated_or_skipped_for_a_reason() -> None:
    """No kind slips through as "unknown": each is in the Kubernetes schemas, a vendored CRD, or a
    group skipped with its reason."""
    import kubernetes_validate

    for path in MANIFESTS:
        for obj in documents(path):
            key = (obj["apiVersion"], obj["kind"])
            if group_of(obj["apiVersion"]) in SKIPPED or key in crd_validators():
                continue
            try:
                kubernetes_validate.validate(obj, cluster_version(), strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{path.name}: {key} has no schema and no reason to skip it")
    assert all(len(reason) > 40 for reason in SKIPPED.values())


def _fraud_service_deployment() -> dict[str, Any]:
    (deployment,) = [d for d in documents(K8S / "fraud-service.yaml") if d["kind"] == "Deployment"]
    return copy.deepcopy(deployment)


def test_the_validator_catches_real_mistakes() -> None:
    deployment = _fraud_service_deployment()
    assert schema_errors(deployment) == []

    typo = _fraud_service_deployment()
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # misspelt: kubectl apply refuses it
    (error,) = schema_errors(typo)
    assert error.startswith("Deployment/fraud-service: spec.template.spec.containers.0: ")
    assert "'readinesProbe' was unexpected" in error

    nested = _fraud_service_deployment()
    nested["spec"]["strategy"]["rollingUpdate"]["maxSurg"] = nested["spec"]["strategy"]["rollingUpdate"].pop("maxSurge")
    assert "'maxSurg' was unexpected" in schema_errors(nested)[0]

    wrong_type = _fraud_service_deployment()
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    assert "terminationGracePeriodSeconds: '30s' is not of type 'integer'" in schema_errors(wrong_type)[0]

    missing = _fraud_service_deployment()
    del missing["spec"]["selector"]
    assert schema_errors(missing) == ["Deployment/fraud-service: spec: 'selector' is a required property"]

    # An API version the cluster no longer serves: HorizontalPodAutoscaler autoscaling/v2beta2 went in 1.26.
    (hpa,) = [d for d in documents(K8S / "fraud-service.yaml") if d["kind"] == "HorizontalPodAutoscaler"]
    old = {**copy.deepcopy(hpa), "apiVersion": "autoscaling/v2beta2"}
    assert schema_errors(old) == [
        f"HorizontalPodAutoscaler/fraud-service: Kubernetes {cluster_version()} has no autoscaling/v2beta2 "
        "HorizontalPodAutoscaler, and no CRD schema or reason to skip it is given here"
    ]
    assert schema_errors(old, "1.25") == []  # still served there: the version is what decides

    # A CRD kind with a vendored schema is validated, strictly.
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "train"},
        "spec": {
            "pytorchReplicaSpecs": {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": []}}}}
        },
    }
    assert schema_errors(job) == []
    job["spec"]["runPolicy"] = {"cleanPodPolicy": "Running", "ttlSecondsAfterFinishd": 60}
    (error,) = schema_errors(job)
    assert "spec.runPolicy" in error and "'ttlSecondsAfterFinishd' was unexpected" in error
    # An unknown CRD kind without schema or reason fails rather than passing unchecked.
    assert "no CRD schema or reason" in schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})[0]


def test_vendored_crds_are_the_pinned_operators_own() -> None:
    import hashlib

    for name, digest in VENDORED_CRDS.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, f"{name} differs from the file vendored"
    # The External Secrets CRDs are those of the chart version infra/addons.tf installs.
    from ecosystem_assets_tests.deploy.test_addons import releases

    assert releases()["external_secrets"]["version"] == "2.9.0", "a new chart version: vendor its CRDs too (data/README.md)"
    assert ("external-secrets.io/v1", "ExternalSecret") in crd_validators()
    assert ("external-secrets.io/v1beta1", "ExternalSecret") not in crd_validators()  # no longer served by 2.x


def test_the_crd_validation_catches_mistakes_in_external_secrets() -> None:
    secret = {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": "fraud-db", "namespace": "ecosystem"},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "SecretStore", "name": "aws-secrets-manager"},
            "target": {"name": "fraud-db"},
            "data": [{"secretKey": "FRAUD_DB_URL", "remoteRef": {"key": "arn-of-the-secret", "property": "url"}}],
        },
    }
    assert schema_errors(secret) == []
    secret["spec"]["data"][0]["remoteRef"]["proprety"] = secret["spec"]["data"][0]["remoteRef"].pop("property")
    (error,) = schema_errors(secret)
    assert error.startswith("ExternalSecret/fraud-db: spec.data.0.remoteRef: ") and "'proprety' was unexpected" in error
    # The v1beta1 API that ESO 2.x no longer serves is refused like any unknown kind.
    assert "no CRD schema or reason" in schema_errors({**secret, "apiVersion": "external-secrets.io/v1beta1"})[0]
