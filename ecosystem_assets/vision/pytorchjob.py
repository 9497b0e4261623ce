"""CNN training as a Kubeflow Training Operator ``PyTorchJob``, driven through Dagster Pipes.

`build_pytorchjob` turns a `PyTorchJobRequest` into the ``kubeflow.org/v1`` object: one Master
and ``nodes - 1`` Workers, each pod ``python -m ecosystem_assets.vision.launch`` (torchrun, c10d
rendezvous at the Master), GPUs, tolerations and the GPU node selector on the pods.
`PipesPyTorchJobClient` submits it with the Pipes bootstrap variables in every pod's environment,
follows the job's status conditions and the Master's log, and deletes the job when the run is
cancelled or the job fails. Rank 0 reports through Pipes messages in S3 (`S3MessageReader` here,
``PipesS3MessageWriter`` in the pod: `vision/tracking.py`).

Written against training-operator v1.9.0 (the version deploy/training-operator installs); the
test suite validates the object against that version's CRD schema.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import dagster as dg

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
# The operator finds the training container and the Master's port by these names
# (pkg/apis/kubeflow.org/v1/pytorch_types.go: PyTorchJobDefaultContainerName, ...PortName, ...Port).
CONTAINER = "pytorch"
PORT_NAME, PORT = "pytorchjob-port", 23456
# Labels the operator puts on the pods it creates (pkg/apis/kubeflow.org/v1/common_types.go).
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
RUN_ID_LABEL = "ecosystem/dagster-run-id"
APP_UID = 10001  # the image's non-root user (deploy/Dockerfile)

# A training pod must not be evicted mid-run by a scale-down (cluster-autoscaler) or a consolidation
# (Karpenter): the job would lose its rendezvous. The same annotations as the run pods
# (deploy/helm/values.yaml, deploy/dagster.k8s.yaml).
DO_NOT_EVICT: Mapping[str, str] = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}

# Pod sizes: a GPU pod is one g5.xlarge-class node (4 vCPU, 16 GiB, one A10G; infra/eks.tf).
GPU_POD = {"requests": {"cpu": "3", "memory": "10Gi"}, "limits": {"cpu": "4", "memory": "14Gi"}}
CPU_POD = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
GPU_NODE_SELECTOR = {"node-pool": "gpu"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
# Finished jobs (and their pods, hence their logs) stay a day for inspection, then the operator deletes them.
TTL_AFTER_FINISHED_S = 24 * 3600


@dataclass(frozen=True)
class PyTorchJobRequest:
    """What one training asks of the cluster; `build_pytorchjob` makes the object from it."""

    name: str
    image: str
    spec_json: str  # the TrainSpec, passed to every pod as --spec
    nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    env: Mapping[str, str] = field(default_factory=dict)  # literal values (no secrets)
    env_config_map: str | None = None  # loaded whole (envFrom): the code location's non-secret settings
    secret_env: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # variable → (Secret, key)
    service_account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    backoff_limit: int = 3

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node


def job_name(run_id: str) -> str:
    """A DNS-1035 name, short enough for the pods' hostnames (``<name>-worker-<i>`` ≤ 63)."""
    return f"cnn-{run_id[:8].lower()}-{secrets.token_hex(3)}"


def master_pod_name(name: str) -> str:
    """The Master's pod (``pkg/controller.v1/common/pod.go``: ``<job>-<replica type>-<index>``)."""
    return f"{name}-master-0"


def _pod_template(request: PyTorchJobRequest, bootstrap_env: Mapping[str, str]) -> dict[str, Any]:
    gpu = request.gpus_per_node > 0
    resources = {kind: dict(values) for kind, values in (GPU_POD if gpu else CPU_POD).items()}
    if gpu:
        resources["limits"]["nvidia.com/gpu"] = str(request.gpus_per_node)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in {**request.env, **bootstrap_env}.items()]
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for name, (secret, key) in request.secret_env.items()
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": request.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "ecosystem_assets.vision.launch", "--rdzv-id", request.name, "--spec", request.spec_json],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        # NCCL and DataLoader workers outgrow a container's 64 MiB /dev/shm.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if request.env_config_map:
        container["envFrom"] = [{"configMapRef": {"name": request.env_config_map}}]
    spec: dict[str, Any] = {
        "containers": [container],
        # The pods need AWS (IRSA, a token of its own) but not the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "fsGroup": APP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}],
    }
    if request.service_account:
        spec["serviceAccountName"] = request.service_account
    if gpu:
        spec["nodeSelector"] = dict(GPU_NODE_SELECTOR)
        spec["tolerations"] = [dict(t) for t in GPU_TOLERATIONS]
    return {"metadata": {"labels": dict(request.labels), "annotations": dict(DO_NOT_EVICT)}, "spec": spec}


def build_pytorchjob(request: PyTorchJobRequest, bootstrap_env: Mapping[str, str], namespace: str) -> dict[str, Any]:
    """The ``kubeflow.org/v1`` PyTorchJob: Master (node 0) plus ``nodes - 1`` Workers, identical pods.

    ``restartPolicy: OnFailure`` (the operator's default): the kubelet restarts a failed container
    in place, also the Workers' init container that waits for the Master's DNS name while GPU nodes
    scale up; after ``backoffLimit`` restarts the job fails. Training resumes from the last
    checkpoint after a restart.
    """
    replica = {"restartPolicy": "OnFailure", "template": _pod_template(request, bootstrap_env)}
    replicas: dict[str, Any] = {"Master": {"replicas": 1, **replica}}
    if request.nodes > 1:
        replicas["Worker"] = {"replicas": request.nodes - 1, **replica}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": request.name, "namespace": namespace, "labels": dict(request.labels)},
        "spec": {
            "nprocPerNode": str(request.nproc_per_node),
            "runPolicy": {
                # When the job finishes (one node failed), stop the nodes still waiting on it.
                "cleanPodPolicy": "Running",
                "backoffLimit": request.backoff_limit,
                "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def job_outcome(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """("Succeeded" | "Failed", message) once the operator has decided, else None.

    The operator keeps one condition per type and marks the current ones ``status: "True"``
    (``pkg/util/status.go``); Succeeded and Failed are final.
    """
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"], str(condition.get("message") or condition.get("reason") or "")
    return None


def s3_message_reader(bucket: str, prefix: str, client: Any, interval_s: float) -> dg.PipesMessageReader:
    """dagster-aws's `PipesS3MessageReader`, its chunks under ``<prefix>/pipes/<random>/<n>.json`` (the
    artifact store's prefix, where the run's role may write) instead of at the bucket's root."""
    from dagster_aws.pipes import PipesS3MessageReader

    base = f"{prefix.strip('/')}/pipes" if prefix.strip("/") else "pipes"

    class UnderPrefix(PipesS3MessageReader):
        @contextlib.contextmanager
        def get_params(self) -> Iterator[dict[str, Any]]:
            with super().get_params() as params:
                yield {**params, "key_prefix": f"{base}/{params['key_prefix']}"}

    return UnderPrefix(bucket=bucket, client=client, interval=interval_s)


class PipesPyTorchJobClient(dg.PipesClient):
    """Runs a `PyTorchJobRequest` as a PyTorchJob and reports it back through Dagster Pipes.

    The Pipes context reaches every pod as environment variables (`dg.PipesEnvContextInjector`);
    only rank 0 opens Pipes (``tracking.pipes_reporter``). The run polls the job's conditions
    with the kubernetes ``CustomObjectsApi`` and copies the Master's log (rank 0) to this step's
    stdout. On failure, cancellation (``DagsterExecutionInterruptedError``) or any error while
    following, the job is deleted, its pods with it; a job that succeeded is left to its TTL.
    """

    def __init__(
        self,
        *,
        namespace: str,
        message_reader: dg.PipesMessageReader,
        context_injector: dg.PipesContextInjector | None = None,
        kubeconfig_file: str | None = None,
        poll_interval_s: float = 5.0,
        api_failures_allowed: int = 5,
        log_stream: IO[str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.message_reader = message_reader
        self.context_injector = context_injector or dg.PipesEnvContextInjector()
        self.kubeconfig_file = kubeconfig_file
        self.poll_interval_s = poll_interval_s
        self.api_failures_allowed = api_failures_allowed
        self.log_stream = log_stream

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def _api_client(self) -> Any:
        from kubernetes import client, config

        if self.kubeconfig_file:
            return config.new_client_from_config(config_file=self.kubeconfig_file)
        config.load_incluster_config()
        return client.ApiClient()

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        request: PyTorchJobRequest,
        extras: dict[str, Any] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Submit the job, wait for its outcome, return the session's results (rank 0's report)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = self._api_client()
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        name = request.name
        with dg.open_pipes_session(
            context=context, extras=extras, context_injector=self.context_injector, message_reader=self.message_reader
        ) as session:
            body = build_pytorchjob(request, session.get_bootstrap_env_vars(), self.namespace)
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            except ApiException as exc:  # 403: no RBAC; 404: the operator's CRD is not installed
                raise dg.Failure(
                    description=f"could not create PyTorchJob {self.namespace}/{name}: {exc.status} {exc.reason} {_api_message(exc)}"
                ) from None
            context.log.info(
                f"PyTorchJob {self.namespace}/{name}: {request.nodes} node(s) × {request.nproc_per_node} process(es)"
                + (f", {request.gpus_per_node} GPU(s) per node" if request.gpus_per_node else ", CPU")
            )
            logs = _MasterLog(core, self.namespace, master_pod_name(name), self.poll_interval_s, self.log_stream)
            logs.start()
            try:
                outcome, message = self._wait(custom, name, context)
            except BaseException as exc:  # cancelled (DagsterExecutionInterruptedError), or lost the API
                self._delete(custom, name, context, reason=type(exc).__name__)  # first: the GPUs are freed at once
                logs.finish(timeout_s=1.0)
                raise
            logs.finish(timeout_s=max(5.0, 2 * self.poll_interval_s))  # the rest of the Master's log
            if outcome == "Failed":
                self._delete(custom, name, context, reason="failed")
                raise dg.Failure(
                    description=f"PyTorchJob {self.namespace}/{name} failed: {message or 'no message'}",
                    metadata={"pytorchjob": name, "last_log_lines": dg.MetadataValue.md(logs.tail_markdown())},
                )
            context.log.info(f"PyTorchJob {self.namespace}/{name} succeeded")
        return dg.PipesClientCompletedInvocation(session, metadata={"pytorchjob": f"{self.namespace}/{name}"})

    def _wait(self, custom: Any, name: str, context: Any) -> tuple[str, str]:
        """Poll the job until Succeeded or Failed; a few failed polls in a row are tolerated."""
        from kubernetes.client.exceptions import ApiException

        failures, seen = 0, ""
        while True:
            try:
                job = custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
                failures = 0
            except Exception as exc:  # an API error, or the API server unreachable (urllib3)
                if isinstance(exc, ApiException) and exc.status == 404:
                    raise dg.Failure(description=f"PyTorchJob {self.namespace}/{name} disappeared (deleted outside this run?)") from None
                failures += 1
                if failures > self.api_failures_allowed:
                    raise
                # The next poll is the retry: the job runs on whether or not we are watching.
                context.log.warning(f"PyTorchJob {name}: status unavailable ({type(exc).__name__} {getattr(exc, 'status', '')}), retrying")
                time.sleep(self.poll_interval_s)
                continue
            outcome = job_outcome(job)
            if outcome is not None:
                return outcome
            conditions = [c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
            state = ",".join(conditions) or "submitted"
            if state != seen:
                context.log.info(f"PyTorchJob {name}: {state}")
                seen = state
            time.sleep(self.poll_interval_s)

    def _delete(self, custom: Any, name: str, context: Any, reason: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body=client.V1DeleteOptions(propagation_policy="Background")
            )
            context.log.info(f"PyTorchJob {self.namespace}/{name} deleted ({reason})")
        except ApiException as exc:
            if exc.status != 404:
                context.log.error(f"could not delete PyTorchJob {self.namespace}/{name} ({exc.status} {exc.reason}): delete it by hand")
        except Exception as exc:  # noqa: BLE001 — the API unreachable: report, and let the original error propagate
            context.log.error(f"could not delete PyTorchJob {self.namespace}/{name} ({type(exc).__name__}): delete it by hand")


def _api_message(exc: Any) -> str:
    """The API server's own message from an ApiException's Status body (never the request)."""
    import json

    try:
        return str(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


class _MasterLog:
    """Copies the Master container's log to a stream while the job runs (a thread).

    A container that has not started yet answers 400 or 404: retried. When a stream ends, the
    same container is not read again (no duplicate lines); a restarted one is.
    """

    def __init__(self, core: Any, namespace: str, pod: str, interval_s: float, stream: IO[str] | None) -> None:
        self.core, self.namespace, self.pod, self.interval_s, self.stream = core, namespace, pod, interval_s, stream
        self.stop = threading.Event()
        self.tail: list[str] = []
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._follow, name=f"log-{self.pod}", daemon=True)
        self.thread.start()

    def finish(self, timeout_s: float) -> None:
        """Stop following; wait up to ``timeout_s`` for what the container still writes."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)

    def tail_markdown(self) -> str:
        return "```\n" + "".join(self.tail[-30:]) + "```" if self.tail else "(no log read)"

    def _write(self, line: str) -> None:
        import sys

        self.tail = [*self.tail[-99:], line]
        stream = self.stream or sys.stdout
        stream.write(line)
        stream.flush()

    def _container_instance(self) -> tuple[str, int] | None:
        """(pod uid, restart count) of the training container once it has started, else None."""
        pod = self.core.read_namespaced_pod(self.pod, self.namespace)
        statuses = (pod.status.container_statuses if pod.status else None) or []
        for status in statuses:
            if status.name == CONTAINER and status.state and (status.state.running or status.state.terminated):
                return pod.metadata.uid, status.restart_count or 0
        return None

    def _drain(self, response: Any) -> None:
        try:
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._write(line.decode("utf-8", "replace") + "\n")
            if pending:
                self._write(pending.decode("utf-8", "replace") + "\n")
        finally:
            response.release_conn()

    def _follow(self) -> None:
        from kubernetes.client.exceptions import ApiException

        copied: set[tuple[str, int]] = set()
        while True:
            stopping = self.stop.is_set()  # one more look after the job ended: a short job's whole log
            try:
                instance = self._container_instance()
                if instance is not None and instance not in copied:
                    response = self.core.read_namespaced_pod_log(
                        self.pod, self.namespace, container=CONTAINER, follow=True, _preload_content=False
                    )
                    copied.add(instance)  # from here on, a broken stream is not read again (no duplicate lines)
                    self._drain(response)
                    continue
            except ApiException as exc:
                if exc.status not in (400, 404):  # 400/404: the container or pod is not there yet
                    self._write(f"[log of {self.pod} unavailable: {exc.status} {exc.reason}]\n")
            except Exception as exc:  # noqa: BLE001 — a broken log stream must not fail the training run
                self._write(f"[log of {self.pod} interrupted: {type(exc).__name__}]\n")
            if stopping:
                return
            self.stop.wait(self.interval_s)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url}")
    return parsed.netloc, parsed.path.strip("/")
