"""TRAINING_BACKEND=pytorchjob without a cluster.

- End to end: ``cnn_model`` submits its PyTorchJob through `PipesPyTorchJobClient` to a real HTTP
  server on loopback that speaks the part of the Kubernetes API the client uses
  (`servers/kube_api.py`, real ``kubernetes`` client on the other side). Playing the operator and
  the kubelet, the test runs each replica's container command as a local process (Master and
  Worker) with the container's environment and exactly the variables the training operator v1.9.0
  adds (`operator_env`). The processes train for real (torchrun, c10d, gloo) and rank 0 reports
  through Pipes messages in S3 (moto); the run's message reader turns them into the
  materialization's metadata.
- The job-following logic against the same server: a failed job fails the run and is deleted, a
  cancelled run deletes its job, a succeeded one is left to its TTL, a restarted Master's log is
  read again without repeating the old one.
- The settings that select the backend, and their wiring.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets_tests.servers.kube_api import FakeKubeApi
from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.vision.conftest import write_image_folder
from ecosystem_assets_tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ml"


def operator_env(job: dict[str, Any], replica_type: str, index: int, *, master_addr: str, master_port: int) -> dict[str, str]:
    """The variables training-operator v1.9.0 appends to each container of replica ``replica_type``
    ``index``: ``setPodEnv`` in pkg/controller.v1/pytorch/envvar.go and ``MasterEnvVarGenerator`` in
    pkg/controller.v1/pytorch/master.go (commit 6f74c7f6b2ed6c27aabd82d0a316b23f0646059c), for a job
    with a Master and without elasticPolicy, after the operator's defaulting (nprocPerNode "auto").

    Two values are stand-ins, because this machine has no cluster DNS and runs both "pods" on one
    network namespace: MASTER_ADDR / PET_MASTER_ADDR would be the Master's service name
    ``<job>-master-0``, here the loopback address; MASTER_PORT / PET_MASTER_PORT would be the Master
    container's ``pytorchjob-port`` (23456, asserted by the caller), here a free port.
    """
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(r.get("replicas", 1) for r in replicas.values())  # getTotalReplicas
    nproc = spec.get("nprocPerNode") or "auto"  # setDefaultNprocPerNode
    nproc_int = int(nproc) if nproc.isdigit() else 1  # getNprocPerNodeInt
    env = {"PYTHONUNBUFFERED": "1"}
    assert "Master" in replicas
    env |= {
        "MASTER_PORT": str(master_port),
        "PET_MASTER_PORT": str(master_port),
        "MASTER_ADDR": master_addr,
        "PET_MASTER_ADDR": master_addr,
    }
    rank = index + 1 if replica_type == "Worker" else index
    env |= {"WORLD_SIZE": str(total * nproc_int), "RANK": str(rank), "PET_NODE_RANK": str(rank)}
    env["PET_NPROC_PER_NODE"] = nproc
    env["PET_NNODES"] = str(total)
    return env


class LocalPods:
    """The operator and the kubelet for `FakeKubeApi`: each replica of a created PyTorchJob runs as a
    local process with the pod's environment; the Master's output is its pod log; the job's
    conditions follow the processes; deleting the job kills them."""

    def __init__(
        self, api: FakeKubeApi, base_env: dict[str, str], config_maps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]
    ):
        self.api, self.base_env, self.config_maps, self.secrets = api, base_env, config_maps, secrets
        self.processes: dict[str, subprocess.Popen] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.outputs: dict[str, list[str]] = {}
        self.jobs: list[dict[str, Any]] = []

    def pod_env(self, job: dict[str, Any], container: dict[str, Any], rtype: str, index: int, port: int) -> dict[str, str]:
        """As the kubelet: envFrom first, then env (later entries win), the operator's variables appended to env."""
        env = dict(self.base_env)
        for source in container.get("envFrom", []):
            env |= self.config_maps[source["configMapRef"]["name"]]
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self.secrets[ref["name"]][ref["key"]]
        return env | operator_env(job, rtype, index, master_addr="127.0.0.1", master_port=port)

    def __call__(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        name = job["metadata"]["name"]
        port = free_port()
        started = []
        for rtype in ("Master", "Worker"):
            replica = job["spec"]["pytorchReplicaSpecs"].get(rtype)
            for index in range(replica["replicas"] if replica else 0):
                (container,) = replica["template"]["spec"]["containers"]
                pod = f"{name}-{rtype.lower()}-{index}"
                env = self.pod_env(job, container, rtype, index, port)
                self.envs[pod] = env
                self.api.start_container(NAMESPACE, pod)
                process = subprocess.Popen(
                    container["command"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                self.processes[pod] = process
                self.outputs[pod] = []
                started.append((pod, process))
        self.api.set_conditions(NAMESPACE, name, "Created", "Running")
        pumps = [threading.Thread(target=self._pump, args=(pod, process), daemon=True) for pod, process in started]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        codes = {pod: process.wait() for pod, process in started}
        if (NAMESPACE, name) not in self.api.jobs:
            return  # deleted meanwhile
        if all(code == 0 for code in codes.values()):
            self.api.set_conditions(
                NAMESPACE, name, "Created", "Running", "Succeeded", message=f"PyTorchJob {name} is successfully completed."
            )
        else:
            self.api.set_conditions(NAMESPACE, name, "Created", "Running", "Failed", message=f"PyTorchJob {name} is failed: {codes}")

    def _pump(self, pod: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.outputs[pod].append(line)
            if "-master-" in pod:
                self.api.write_log(NAMESPACE, pod, line)
        self.api.end_container(NAMESPACE, pod, process.wait())

    def kill(self, job: dict[str, Any]) -> None:
        for pod, process in self.processes.items():
            if pod.startswith(job["metadata"]["name"]) and process.poll() is None:
                process.kill()

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def kube_api():
    with FakeKubeApi() as api:
        yield api


def _metadata(result: Any, node: str) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


@pytest.mark.timeout(180)  # a client waiting on a job that never ends would hang
def test_training_runs_as_a_pytorchjob_and_reports_through_s3(
    ecosystem_env, monkeypatch, tmp_path, s3_bucket, s3_endpoint, kube_api, dagster_instance
):
    """The PyTorchJob path of ``cnn_model``: its `train_spec`, the wired `TrainingBackend.run`,
    the client, the pods' command under the operator's environment, Pipes messages in S3.

    (Without MLflow: ``cnn_model`` itself adds an MLflow run, whose model logging costs ~20 s here;
    the local backend's test_pipeline.py runs the whole asset with it.)
    """
    import boto3

    from ecosystem_assets.resources.training import TrainingBackend
    from ecosystem_assets.resources.wiring import build_resources
    from ecosystem_assets.settings import Settings
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision.assets import CnnTrainingConfig, train_spec
    from ecosystem_assets.vision.shards import pack
    from ecosystem_assets_tests.deploy.test_pytorchjob_crd import pytorchjob_errors

    images_url = f"s3://{s3_bucket}/images"
    write_image_folder(open_store(images_url), {"circle": 30, "square": 30, "cross": 30})
    for name, value in {
        "ECOSYSTEM_STORAGE_URL": f"s3://{s3_bucket}/eco",
        "IMAGE_DATASET_URL": images_url,
        "TRAINING_BACKEND": "pytorchjob",
        "TRAINING_NODES": "2",
        "TRAINING_GPUS_PER_NODE": "0",
        "TRAINING_IMAGE": "registry.example/ecosystem-assets:test-cuda",
        "TRAINING_SERVICE_ACCOUNT": "trainer",
        "TRAINING_ENV_CONFIG_MAP": "training-env",
        "TRAINING_MLFLOW_SECRET": "mlflow-writer",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    wired = build_resources(settings)
    assert (wired["training"].backend, wired["training"].nodes, wired["training"].image) == ("pytorchjob", 2, settings.training_image)
    fields = ("backend", "nodes", "gpus_per_node", "image", "service_account", "env_config_map", "mlflow_secret")
    training = TrainingBackend(
        **{k: getattr(wired["training"], k) for k in fields},  # as wired, plus where the (fake) API server is
        namespace=NAMESPACE,
        kubeconfig_file=str(kube_api.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)),
        poll_interval_s=0.2,
        message_interval_s=0.2,
    )
    manifest = ds.build_manifest(open_store(images_url))
    index, _ = pack(open_store(settings.storage_url), open_store(images_url), manifest.frame, manifest.version)

    # The pod's world: the image's environment (the venv's python first on PATH, like /opt/venv in
    # the image), S3 credentials as IRSA would provide them, the ConfigMap and the Secret it names.
    base_env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    config_maps = {
        "training-env": {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1", "ECOSYSTEM_HOME": str(tmp_path / "pod")}
    }
    secrets = {"mlflow-writer": {"MLFLOW_TRACKING_USERNAME": "writer", "MLFLOW_TRACKING_PASSWORD": "not-a-password"}}
    pods = LocalPods(kube_api, base_env, config_maps, secrets)
    kube_api.on_create, kube_api.on_delete = pods, pods.kill

    @dg.asset(required_resource_keys={"training", "storage"})
    def cnn_model(context) -> dg.MaterializeResult:
        # What cnn_model does around its MLflow run (vision/assets.py).
        training, storage = context.resources.training, context.resources.storage
        config = CnnTrainingConfig(max_epochs=2, batch_size=4, image_size=8)
        nproc = training.processes_per_node(config.nproc_per_node)
        spec = train_spec(
            config,
            storage_url=storage.url,
            shards_metadata={"dataset_version": manifest.version, "classes": list(index.classes)},
            shards_key=index.key,
            world_size=training.node_count * nproc,
            mlflow_tracking_uri=None,
            mlflow_run_id=None,
            dagster_run_id=context.run_id,
        )
        invocation = training.run(context, spec, storage=storage, nproc_per_node=nproc, threads=1)
        return invocation.get_materialize_result()

    try:
        result = dg.materialize(
            [cnn_model], resources={"training": training, "storage": wired["storage"]}, instance=dagster_instance, raise_on_error=False
        )
    finally:
        pods.kill_all()
    outputs = {pod: "".join(lines)[-3000:] for pod, lines in pods.outputs.items()}
    assert result.success, outputs

    # The job the asset submitted: valid for the operator's CRD, two nodes, CPU pods, its spec.
    (submitted,) = pods.jobs
    name = submitted["metadata"]["name"]
    assert pytorchjob_errors({k: v for k, v in submitted.items() if k != "status"}) == []
    master = submitted["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in master["containers"][0]["ports"]
    assert "nvidia.com/gpu" not in master["containers"][0]["resources"]["limits"] and "tolerations" not in master
    assert master["serviceAccountName"] == "trainer"
    assert "not-a-password" not in str(submitted)  # secrets travel as references only
    # Two nodes of one process each, as the operator reads them (its env for each pod derives from these).
    replicas = submitted["spec"]["pytorchReplicaSpecs"]
    assert {kind: r["replicas"] for kind, r in replicas.items()} == {"Master": 1, "Worker": 1}
    assert submitted["spec"]["nprocPerNode"] == "1" and set(pods.envs) == {f"{name}-master-0", f"{name}-worker-0"}
    assert all("DAGSTER_PIPES_CONTEXT" in env and env["MLFLOW_TRACKING_PASSWORD"] == "not-a-password" for env in pods.envs.values())

    # Rank 0's report came back through S3 and is the materialization's metadata.
    model = _metadata(result, "cnn_model")
    assert model["world_size"] == 2 and model["epochs_trained"] == 2 and model["device"] == "cpu"
    assert model["dataset_version"] == manifest.version and model["pytorchjob"] == f"{NAMESPACE}/{name}"
    assert model["result_key"].endswith(f"/runs/{result.run_id}/result.json") and "| 2 |" in model["history"]
    assert open_store(settings.storage_url).exists(model["result_key"])
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="eco/pipes/")["Contents"]]
    assert keys and all(k.endswith(".json") for k in keys)  # the message chunks, under the storage prefix
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    for epoch in (1, 2):
        assert any(m.startswith(f"epoch {epoch}/2 loss") for m in messages), f"no progress line for epoch {epoch}"
    assert any(m.startswith("rank 0/2 on cpu (gloo)") for m in messages)  # one world across the two "pods"
    # The run followed the job (status polls) and read the Master's log.
    assert ("GET", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{name}") in kube_api.requests
    assert ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}-master-0/log") in kube_api.requests
    assert kube_api.deleted == []  # a succeeded job is left to its TTL


# --- following the job: scripted operator ------------------------------------------------------


def _client_asset(kube_api: FakeKubeApi, kubeconfig: Path, s3_bucket: str, log: io.StringIO) -> dg.AssetsDefinition:
    """An asset that runs one PyTorchJob through the client (the pods are scripted by the test)."""
    from ecosystem_assets.storage import s3_client
    from ecosystem_assets.vision.pytorchjob import PipesPyTorchJobClient, PyTorchJobRequest, job_name, s3_message_reader

    @dg.asset
    def trained(context) -> dg.MaterializeResult:  # (no annotation: `from __future__ import annotations` makes it a string)
        client = PipesPyTorchJobClient(
            namespace=NAMESPACE,
            message_reader=s3_message_reader(s3_bucket, "eco", s3_client(), 0.1),
            kubeconfig_file=str(kubeconfig),
            poll_interval_s=0.05,
            log_stream=log,
        )
        request = PyTorchJobRequest(name=job_name(context.run_id), image="image:cuda", spec_json="{}", nodes=2)
        invocation = client.run(context=context, request=request)
        return dg.MaterializeResult(metadata=dict(invocation.metadata))

    return trained


def _scripted(kube_api: FakeKubeApi, script: Callable[[str, dict[str, Any]], None]) -> list[str]:
    names: list[str] = []

    def on_create(job: dict[str, Any]) -> None:
        names.append(job["metadata"]["name"])
        script(job["metadata"]["name"], job)

    kube_api.on_create = on_create
    return names


def _rank0_reports(job: dict[str, Any], *messages: tuple[str, dict[str, Any]]) -> None:
    """What rank 0's `PipesS3MessageWriter` uploads: one chunk of Pipes messages, at the place the
    job's DAGSTER_PIPES_MESSAGES variable names."""
    import json

    import boto3
    from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, PIPES_PROTOCOL_VERSION, PIPES_PROTOCOL_VERSION_FIELD, decode_param

    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    params = decode_param(next(e["value"] for e in container["env"] if e["name"] == DAGSTER_PIPES_MESSAGES_ENV_VAR))
    body = "\n".join(json.dumps({PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, "method": m, "params": p}) for m, p in messages)
    boto3.client("s3").put_object(Bucket=params["bucket"], Key=f"{params['key_prefix']}/1.json", Body=body.encode())


@pytest.mark.timeout(180)  # a client waiting on a job that never ends would hang (3 s when it works)
def test_a_failed_job_fails_the_run_and_is_deleted(kube_api, tmp_path, s3_bucket, dagster_instance):
    def script(name: str, job: dict[str, Any]) -> None:
        pod = f"{name}-master-0"
        kube_api.start_container(NAMESPACE, pod)
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running")
        kube_api.write_log(NAMESPACE, pod, "Traceback (most recent call last):\nRuntimeError: the train split is empty\n")
        _rank0_reports(job, ("opened", {}), ("closed", {}))
        kube_api.end_container(NAMESPACE, pod, 1)
        kube_api.set_conditions(
            NAMESPACE, name, "Created", "Running", "Failed", message=f"PyTorchJob {name} is failed because 1 Master replica(s) failed."
        )

    names = _scripted(kube_api, script)
    log = io.StringIO()
    asset = _client_asset(kube_api, kube_api.kubeconfig(tmp_path / "kubeconfig", NAMESPACE), s3_bucket, log)
    result = dg.materialize([asset], instance=dagster_instance, raise_on_error=False)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "1 Master replica(s) failed" in failure.step_failure_data.error.message
    assert failure.step_failure_data.user_failure_data.metadata["last_log_lines"].value.count("train split is empty") == 1
    assert kube_api.deleted == [(NAMESPACE, names[0])]
    assert "RuntimeError: the train split is empty" in log.getvalue()


@pytest.mark.timeout(180)  # a client waiting on a job that never ends would hang (3 s when it works)
def test_a_cancelled_run_deletes_its_job(kube_api, tmp_path, s3_bucket, dagster_instance):
    running = threading.Event()

    def script(name: str, job: dict[str, Any]) -> None:
        # Rank 0 already closed its Pipes session (else the run would wait 10 s for its messages
        # after the cancellation, as Dagster's readers do; that wait is not what is tested here).
        _rank0_reports(job, ("opened", {}), ("closed", {}))
        kube_api.start_container(NAMESPACE, f"{name}-master-0")
        kube_api.write_log(NAMESPACE, f"{name}-master-0", "epoch 1/8 …\n")
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running")
        running.set()

    names = _scripted(kube_api, script)
    log = io.StringIO()
    asset = _client_asset(kube_api, kube_api.kubeconfig(tmp_path / "kubeconfig", NAMESPACE), s3_bucket, log)

    def cancel() -> None:
        # What a run's termination does to its step: SIGINT, which Dagster raises in the step's
        # code as DagsterExecutionInterruptedError — once the job runs and its log is being read.
        wait_until(lambda: running.is_set() and "epoch 1/8" in log.getvalue(), 30, "the job running")
        os.kill(os.getpid(), signal.SIGINT)

    canceller = threading.Thread(target=cancel, daemon=True)
    canceller.start()
    try:
        result = dg.materialize([asset], instance=dagster_instance, raise_on_error=False)
        assert not result.success
    except dg.DagsterExecutionInterruptedError:
        pass  # either way the run did not succeed
    canceller.join(timeout=30)
    assert kube_api.deleted == [(NAMESPACE, names[0])]


@pytest.mark.timeout(180)  # a client waiting on a job that never ends would hang (3 s when it works)
def test_a_succeeded_job_is_kept_and_a_restarted_master_is_read_once_per_container(kube_api, tmp_path, s3_bucket, dagster_instance):
    def script(name: str, job: dict[str, Any]) -> None:
        pod = f"{name}-master-0"
        kube_api.start_container(NAMESPACE, pod)
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running")
        kube_api.write_log(NAMESPACE, pod, "first container\n")
        wait_until(lambda: "first container" in log.getvalue(), 30, "the first container's log read")
        kube_api.end_container(NAMESPACE, pod, 137)  # killed (OOM): restarted in place (restartPolicy OnFailure)
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running", "Restarting")
        kube_api.start_container(NAMESPACE, pod, restart_count=1)
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running")
        kube_api.write_log(NAMESPACE, pod, "second container\n")
        _rank0_reports(job, ("opened", {}), ("closed", {}))
        kube_api.end_container(NAMESPACE, pod, 0)
        kube_api.set_conditions(NAMESPACE, name, "Created", "Running", "Succeeded")

    names = _scripted(kube_api, script)
    log = io.StringIO()
    asset = _client_asset(kube_api, kube_api.kubeconfig(tmp_path / "kubeconfig", NAMESPACE), s3_bucket, log)
    result = dg.materialize([asset], instance=dagster_instance)

    assert result.success
    assert _metadata(result, "trained")["pytorchjob"] == f"{NAMESPACE}/{names[0]}"
    assert log.getvalue().splitlines() == ["first container", "second container"]
    assert kube_api.deleted == [] and (NAMESPACE, names[0]) in kube_api.jobs


# --- settings ----------------------------------------------------------------------------------


def test_training_settings_default_to_local_and_pytorchjob_needs_an_image_and_s3():
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.run_tags import GPU_TRAINING, PYTORCHJOB_TRAINING
    from ecosystem_assets.settings import Settings, SettingsError

    home = {"ECOSYSTEM_HOME": "/srv/eco"}
    local = Settings.from_env(home)
    assert (local.training_backend, local.training_nodes, local.training_gpus_per_node, local.training_image) == ("local", 1, 0, None)
    local_tags = build_definitions(local).resolve_job_def("vision_training_job").tags
    assert set(local_tags) == set(GPU_TRAINING) and "dagster-k8s/config" in local_tags

    cluster = home | {
        "ECOSYSTEM_STORAGE_URL": "s3://bucket/eco",
        "TRAINING_BACKEND": "PyTorchJob",
        "TRAINING_NODES": "4",
        "TRAINING_GPUS_PER_NODE": "8",
        "TRAINING_IMAGE": "repo:tag-cuda",
    }
    s = Settings.from_env(cluster)
    assert (s.training_backend, s.training_nodes, s.training_gpus_per_node) == ("pytorchjob", 4, 8)
    defs = build_definitions(s)
    assert defs.resolve_job_def("vision_training_job").tags == PYTORCHJOB_TRAINING
    training = defs.resources["training"]
    assert training.node_count == 4 and training.processes_per_node(0) == 8 and training.processes_per_node(3) == 8

    for env, message in [
        (cluster | {"TRAINING_IMAGE": ""}, "needs TRAINING_IMAGE"),
        (cluster | {"ECOSYSTEM_STORAGE_URL": "/data"}, "needs ECOSYSTEM_STORAGE_URL=s3://"),
        (cluster | {"TRAINING_BACKEND": "slurm"}, "TRAINING_BACKEND='slurm' must be one of local, pytorchjob"),
        (cluster | {"TRAINING_NODES": "0"}, "TRAINING_NODES='0' must be at least 1"),
        (cluster | {"TRAINING_GPUS_PER_NODE": "one"}, "TRAINING_GPUS_PER_NODE='one' is not an integer"),
    ]:
        with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
            Settings.from_env(env)


def test_the_pod_command_becomes_torchrun_with_c10d_at_the_master():
    from ecosystem_assets.vision import launch

    environ = {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "4", "PET_MASTER_ADDR": "cnn-1-master-0", "PET_MASTER_PORT": "23456", "RANK": "2"}
    command = launch.command_from_operator_env('{"x": 1}', "cnn-1", environ)
    assert command[1:3] == ["-m", "torch.distributed.run"] and command[-2:] == ["--spec", '{"x": 1}']
    assert {"--nnodes=3", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=cnn-1-master-0:23456", "--rdzv-id=cnn-1"} <= set(
        command
    )
    with pytest.raises(RuntimeError, match="PET_MASTER_ADDR, PET_MASTER_PORT unset"):
        launch.command_from_operator_env("{}", "cnn-1", {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "1"})
    assert "--standalone" in launch.torchrun_command("{}", nproc_per_node=2)
    with pytest.raises(ValueError, match="need a rendezvous endpoint"):
        launch.torchrun_command("{}", nproc_per_node=1, nnodes=2)
