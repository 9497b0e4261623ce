"""The PyTorchJob that the deployed code location submits, checked against the Training Operator it
runs on; the operator's pinned install and the runs' RBAC.

- The job is built by the project's own code (``cnn_model``'s `train_spec` from the default
  `CnnTrainingConfig`, `TrainingBackend.job_request`, `build_pytorchjob`), with the settings the
  Helm values give the code location (placeholders filled with dummies).
- It is validated with jsonschema against the ``openAPIV3Schema`` of the operator v1.9.0 CRD,
  vendored in data/ (source: data/README.md). Unknown fields are errors here (the API server would
  prune them silently, or refuse them under ``kubectl --validate=strict``): a typo fails.
- The operator's admission webhook rules for PyTorchJobs (v1.9.0
  ``pkg/webhooks/pytorch/pytorchjob_webhook.go``: DNS-1035 name, only Master/Worker, a container
  named ``pytorch`` with an image in each, exactly one Master) are checked as written there.
- The pod templates are strict `kubernetes` client models (`test_deploy.k8s_field_errors`).
"""

from __future__ import annotations

import copy
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ecosystem_assets_tests.deploy.test_deploy import (
    DEPLOY,
    K8S,
    NAMESPACE,
    deployed_settings,
    docs,
    k8s_field_errors,
    user_deployment,
    values,
)

CRD = Path(__file__).parent / "data" / "kubeflow.org_pytorchjobs.yaml"
CRD_SHA256 = "eb80e57a984cdc7ceefaaf3fc561e21b673c30cbb58589f2389528d2b2760d22"  # the original file (data/README.md)
OPERATOR_REF = "v1.9.0"
HEADER_LINES = 4
RUN_ID = "0a1b2c3d-1111-2222-3333-444455556666"
# kubernetes-client method → (resource, RBAC verb)
CLIENT_CALLS = {
    "create_namespaced_custom_object": ("pytorchjobs", "create"),
    "get_namespaced_custom_object": ("pytorchjobs", "get"),
    "delete_namespaced_custom_object": ("pytorchjobs", "delete"),
    "read_namespaced_pod": ("pods", "get"),
    "read_namespaced_pod_log": ("pods/log", "get"),
}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@cache
def crd() -> dict[str, Any]:
    return yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and does not
    keep unknown fields (``x-kubernetes-preserve-unknown-fields``) or say otherwise."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def pytorchjob_validator() -> Any:
    """A jsonschema validator of the CRD's served, stored ``v1`` schema."""
    from jsonschema import Draft7Validator

    (version,) = [v for v in crd()["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    return Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def webhook_errors(job: dict[str, Any]) -> list[str]:
    """validatePyTorchJob of the operator's webhook (v1.9.0), for a job without elasticPolicy."""
    errors = []
    name = job["metadata"]["name"]
    if not DNS_1035.match(name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    specs = job["spec"].get("pytorchReplicaSpecs")
    if not specs:
        return [*errors, "spec.pytorchReplicaSpecs: must be required"]
    for rtype, spec in specs.items():
        if rtype not in ("Master", "Worker"):
            errors.append(f"spec.pytorchReplicaSpecs[{rtype}]: not supported")
        containers = spec["template"]["spec"].get("containers") or []
        if not containers:
            errors.append(f"{rtype}: containers must be specified")
        errors += [f"{rtype}: container {c.get('name')} has no image" for c in containers if not c.get("image")]
        if not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"{rtype}: must have at least one container with name pytorch")
        if rtype == "Master" and spec.get("replicas") != 1:
            errors.append("Master: replicas must be 1")
        if rtype == "Worker" and spec.get("replicas", 1) < 1:
            errors.append("Worker: replicas must be at least 1")
    return errors


def pytorchjob_errors(job: dict[str, Any]) -> list[str]:
    """CRD schema, webhook rules, and the pod templates as strict Kubernetes models."""
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in pytorchjob_validator().iter_errors(job)]
    errors += webhook_errors(job)
    for rtype, spec in (job["spec"].get("pytorchReplicaSpecs") or {}).items():
        errors += k8s_field_errors(spec.get("template"), "V1PodTemplateSpec", f"{rtype}.template")
    return errors


def deployed_job(bootstrap_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The PyTorchJob ``cnn_model`` submits with the deployed settings and its default config."""
    from ecosystem_assets.resources.storage import ArtifactStorage
    from ecosystem_assets.resources.wiring import build_resources
    from ecosystem_assets.vision.assets import CnnTrainingConfig, train_spec
    from ecosystem_assets.vision.pytorchjob import build_pytorchjob

    settings = deployed_settings()
    training = build_resources(settings)["training"]
    config = CnnTrainingConfig()
    nproc = training.processes_per_node(config.nproc_per_node)
    spec = train_spec(
        config,
        storage_url=settings.storage_url,
        shards_metadata={"dataset_version": "d" * 16, "classes": ["cat", "dog"], "image_stats": {"median_width": 96, "median_height": 64}},
        shards_key=f"datasets/shards/{'d' * 16}/index.json",
        world_size=training.node_count * nproc,
        mlflow_tracking_uri=settings.mlflow_tracking_uri,
        mlflow_run_id="f" * 32,
        dagster_run_id=RUN_ID,
    )
    storage = ArtifactStorage(url=settings.storage_url)
    threads = config.threads_per_process or max(1, training.cpus_per_node() // nproc)
    request = training.job_request(RUN_ID, spec, storage=storage, nproc_per_node=nproc, threads=threads)
    # What open_pipes_session hands over: the two bootstrap variables (values are opaque here).
    bootstrap = bootstrap_env or {"DAGSTER_PIPES_CONTEXT": "eJyrrgUAAXUA+Q==", "DAGSTER_PIPES_MESSAGES": "eJyrrgUAAXUA+Q=="}
    return build_pytorchjob(request, bootstrap, NAMESPACE)


def test_vendored_crd_is_the_pinned_operator_version():
    lines = CRD.read_text().splitlines(keepends=True)
    assert all(line.startswith("#") for line in lines[:HEADER_LINES])
    original = "".join(lines[HEADER_LINES:]).encode()
    assert hashlib.sha256(original).hexdigest() == CRD_SHA256, "the vendored CRD was edited"
    assert OPERATOR_REF in "".join(lines[:HEADER_LINES])
    spec = crd()["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"], spec["scope"]) == (
        "kubeflow.org",
        "PyTorchJob",
        "pytorchjobs",
        "Namespaced",
    )
    kustomization = yaml.safe_load((DEPLOY / "training-operator" / "kustomization.yaml").read_text())
    (remote,) = kustomization["resources"]
    assert remote == f"https://github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref={OPERATOR_REF}"
    readme = (DEPLOY / "README.md").read_text()
    assert "kubectl apply --server-side -k deploy/training-operator" in readme and OPERATOR_REF in readme


def test_deployed_pytorchjob_validates_against_the_operator_crd():
    job = deployed_job()
    assert pytorchjob_errors(job) == []
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("kubeflow.org/v1", "PyTorchJob", NAMESPACE)
    # The Helm values ask for 2 nodes × 1 GPU: a Master and one Worker, one process each.
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {t: r["replicas"] for t, r in replicas.items()} == {"Master": 1, "Worker": 1}
    assert job["spec"]["nprocPerNode"] == "1"
    # Pods are named <job>-worker-<i>: they must stay valid hostnames (≤ 63).
    assert len(f"{job['metadata']['name']}-worker-99") <= 63


def test_crd_check_catches_typos_and_wrong_types():
    job = copy.deepcopy(deployed_job())
    job["spec"]["nprocPerNode"] = 1  # the CRD wants a string
    job["spec"]["runPolicy"]["ttlSecondsAfterFinish"] = 60  # unknown field
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    master["replicas"] = 2  # the webhook allows one Master
    master["template"]["spec"]["containers"][0]["name"] = "trainer"  # the operator looks for `pytorch`
    master["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "14 GB"  # not a quantity
    errors = "\n".join(pytorchjob_errors(job))
    assert "nprocPerNode: 1 is not of type 'string'" in errors
    assert "ttlSecondsAfterFinish" in errors and "memory" in errors
    assert "Master: replicas must be 1" in errors and "container with name pytorch" in errors


def test_pytorchjob_pods_get_the_gpus_and_nothing_secret():
    job = deployed_job()
    env = values()["dagster-user-deployments"]["deployments"][0]["env"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs(K8S / "secrets.example.yaml") if d["kind"] == "Secret"}
    for rtype, replica in job["spec"]["pytorchReplicaSpecs"].items():
        assert replica["restartPolicy"] == "OnFailure"  # in place, within runPolicy.backoffLimit
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert env["TRAINING_IMAGE"] == "<ECR_REPOSITORY_URL>:<IMAGE_TAG>-cuda"
        assert container["image"] == "ecr-repository-url:image-tag-cuda"  # the same, as deployed_settings fills it
        assert container["command"][:3] == ["python", "-m", "ecosystem_assets.vision.launch"]
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container["ports"]
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1" and container["resources"]["requests"] == {"cpu": "3", "memory": "10Gi"}
        assert pod["nodeSelector"] == {"node-pool": "gpu"}, rtype
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        # IRSA for S3 through the training account, but no Kubernetes API token in the training pods.
        assert pod["serviceAccountName"] == "dagster-training" and pod["automountServiceAccountToken"] is False
        # Not evicted mid-training by a scale-down or a consolidation.
        annotations = replica["template"]["metadata"]["annotations"]
        assert annotations == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"}
        # The code location's non-secret settings: the ConfigMap the chart renders from `env`
        # (<release>-<subchart fullname>-<deployment>-user-env, release `dagster`).
        assert container["envFrom"] == [
            {"configMapRef": {"name": f"dagster-dagster-user-deployments-{user_deployment()['name']}-user-env"}}
        ]
        # Of the Secrets, only the MLflow writer's two keys, by reference; no literal value of a secret.
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert refs == {k: {"name": "ecosystem-app-secrets", "key": k} for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        assert set(refs) <= set(secrets["ecosystem-app-secrets"])
        literal = {e["name"] for e in container["env"] if "value" in e}
        assert literal == {"MLFLOW_DISABLE_TELEMETRY", "OMP_NUM_THREADS", "DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running" and job["spec"]["runPolicy"]["ttlSecondsAfterFinished"] > 0
    # Every pod needs its own GPU node: the GPU group may grow that far (infra/variables.tf).
    variables = (DEPLOY.parent / "infra" / "variables.tf").read_text()
    gpu_node_max = int(re.search(r'variable "gpu_node_max" \{[^}]*?default\s*=\s*(\d+)', variables, re.S).group(1))
    assert int(env["TRAINING_NODES"]) * int(env["TRAINING_GPUS_PER_NODE"]) <= gpu_node_max  # g5.xlarge: one GPU a node


def test_runs_may_manage_pytorchjobs_and_nothing_more():
    rbac = docs(K8S / "training-rbac.yaml")
    (training,) = [d for d in rbac if d["kind"] == "ServiceAccount"]
    assert training["automountServiceAccountToken"] is False  # the training pods' account: no API
    (role,) = [d for d in rbac if d["kind"] == "Role"]
    (binding,) = [d for d in rbac if d["kind"] == "RoleBinding"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("kubeflow.org",), ("pytorchjobs",)): {"create", "get", "list", "watch", "delete"},
        (("",), ("pods",)): {"get"},
        (("",), ("pods/log",)): {"get"},
    }
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    runs = values()["dagster-user-deployments"]["serviceAccount"]["name"]  # the account of every run pod
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": runs, "namespace": NAMESPACE}]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "training-rbac.yaml" in kustomization["resources"]
    # Every Kubernetes API call of the client is one the Role allows.
    source = (Path(__file__).resolve().parents[2] / "ecosystem_assets" / "vision" / "pytorchjob.py").read_text()
    calls = set(re.findall(r"\.(\w+_namespaced_\w+)\(", source))
    assert calls and calls <= set(CLIENT_CALLS), calls - set(CLIENT_CALLS)
    allowed = {(resource, verb) for r in role["rules"] for resource in r["resources"] for verb in r["verbs"]}
    assert {CLIENT_CALLS[c] for c in calls} <= allowed
