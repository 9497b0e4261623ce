"""Where ``cnn_model``'s torchrun runs: the run's own process tree, or a Kubeflow PyTorchJob.

Both backends start the same command (`vision/launch.py`) and hear from rank 0 through Dagster
Pipes: ``local`` through ``dg.PipesSubprocessClient`` (a file), ``pytorchjob`` through
`vision/pytorchjob.py: PipesPyTorchJobClient` (messages in S3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from ecosystem_assets.resources.storage import ArtifactStorage
    from ecosystem_assets.vision.train import TrainSpec

MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class TrainingBackend(dg.ConfigurableResource):
    """``local``: ``torchrun --standalone`` on this machine (one node). ``pytorchjob``: a PyTorchJob
    of ``nodes`` pods with ``gpus_per_node`` GPUs each (0: CPU pods), in ``namespace``."""

    backend: Literal["local", "pytorchjob"] = Field(default="local", description="TRAINING_BACKEND")
    nodes: int = Field(default=1, ge=1, description="TRAINING_NODES: pods of the PyTorchJob (Master + Workers)")
    gpus_per_node: int = Field(default=0, ge=0, description="TRAINING_GPUS_PER_NODE: one process per GPU; 0 → CPU pods")
    image: str | None = Field(default=None, description="TRAINING_IMAGE: the training pods' image (the CUDA build)")
    service_account: str | None = Field(default=None, description="TRAINING_SERVICE_ACCOUNT: the pods' account (S3 through IRSA)")
    env_config_map: str | None = Field(default=None, description="TRAINING_ENV_CONFIG_MAP: non-secret settings the pods load")
    mlflow_secret: str | None = Field(default=None, description="TRAINING_MLFLOW_SECRET: Secret with the MLflow writer's keys")
    namespace: str | None = Field(default=None, description="None → the run's own namespace")
    kubeconfig_file: str | None = Field(default=None, description="None → in-cluster config (the run's service account)")
    poll_interval_s: float = Field(default=5.0, gt=0)
    message_interval_s: float = Field(default=2.0, gt=0, description="How often the run reads rank 0's Pipes messages from S3")

    @property
    def node_count(self) -> int:
        """Nodes (torchrun agents) of one training."""
        return self.nodes if self.backend == "pytorchjob" else 1

    def processes_per_node(self, configured: int) -> int:
        """Ranks per node: one per GPU on a PyTorchJob, else ``configured``; 0 → the caller's default."""
        if self.backend == "pytorchjob":
            return self.gpus_per_node or configured or 1
        return configured

    def cpus_per_node(self) -> int:
        """CPU cores a node's ranks share: the pod's limit on a PyTorchJob, this machine's locally."""
        import os

        if self.backend == "pytorchjob":
            from ecosystem_assets.vision.pytorchjob import CPU_POD, GPU_POD

            return int((GPU_POD if self.gpus_per_node else CPU_POD)["limits"]["cpu"])
        return os.cpu_count() or 1

    def run(
        self,
        context: dg.AssetExecutionContext,
        spec: TrainSpec,
        *,
        storage: ArtifactStorage,
        nproc_per_node: int,
        threads: int,
    ) -> dg.PipesClientCompletedInvocation:
        """Train ``spec`` (its ``world_size`` = nodes × ``nproc_per_node``) and return rank 0's Pipes report."""
        from ecosystem_assets.vision import launch

        if self.backend == "local":
            command = launch.torchrun_command(spec.to_json(), nproc_per_node=nproc_per_node)
            return dg.PipesSubprocessClient().run(context=context, command=command, env=self._env(storage, threads))
        request = self.job_request(context.run_id, spec, storage=storage, nproc_per_node=nproc_per_node, threads=threads)
        return self._pytorchjob_client(storage).run(context=context, request=request)

    @staticmethod
    def _env(storage: ArtifactStorage, threads: int) -> dict[str, str]:
        # torchrun would pin every rank to 1 thread; we split the node's cores among them instead.
        env = {"MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": str(threads)}
        if storage.s3_endpoint_url:
            env["AWS_ENDPOINT_URL"] = storage.s3_endpoint_url
        return env

    def job_request(self, run_id: str, spec: TrainSpec, *, storage: ArtifactStorage, nproc_per_node: int, threads: int) -> Any:
        """The `PyTorchJobRequest` of one training of this run (a new job name each call)."""
        from ecosystem_assets.vision.pytorchjob import RUN_ID_LABEL, PyTorchJobRequest, job_name

        if not self.image:
            raise dg.Failure(description="TRAINING_BACKEND=pytorchjob needs TRAINING_IMAGE")
        return PyTorchJobRequest(
            name=job_name(run_id),
            image=self.image,
            spec_json=spec.to_json(),
            nodes=self.nodes,
            nproc_per_node=nproc_per_node,
            gpus_per_node=self.gpus_per_node,
            env=self._env(storage, threads),
            env_config_map=self.env_config_map,
            secret_env={name: (self.mlflow_secret, name) for name in MLFLOW_CREDENTIALS} if self.mlflow_secret else {},
            service_account=self.service_account,
            labels={RUN_ID_LABEL: run_id, "app.kubernetes.io/part-of": "ecosystem-assets", "app.kubernetes.io/component": "cnn-training"},
        )

    def _pytorchjob_client(self, storage: ArtifactStorage) -> Any:
        from dagster_k8s.utils import detect_current_namespace

        from ecosystem_assets.storage import s3_client
        from ecosystem_assets.vision.pytorchjob import PipesPyTorchJobClient, s3_message_reader, split_s3_url

        try:
            bucket, prefix = split_s3_url(storage.url)
        except ValueError:
            raise dg.Failure(description=f"TRAINING_BACKEND=pytorchjob needs S3 storage, not {storage.url}") from None
        reader = s3_message_reader(bucket, prefix, s3_client(storage.s3_endpoint_url, storage.s3_region), self.message_interval_s)
        namespace = self.namespace or detect_current_namespace(self.kubeconfig_file) or "default"
        return PipesPyTorchJobClient(
            namespace=namespace, message_reader=reader, kubeconfig_file=self.kubeconfig_file, poll_interval_s=self.poll_interval_s
        )
