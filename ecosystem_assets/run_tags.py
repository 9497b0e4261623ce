"""Run tags that place runs on Kubernetes: dagster-k8s's K8sRunLauncher merges `dagster-k8s/config`
into the run's pod, and the run queue (deploy/dagster.k8s.yaml) admits one run per
`ecosystem/run-queue` value at a time. On a laptop they are labels on the run and change nothing.
"""

RUN_QUEUE = "ecosystem/run-queue"

# vision_training_job: one node of the tainted GPU node group (infra/eks.tf; a g5.xlarge has
# 4 vCPU, 16 GiB and one A10G), sized to replace the code location's default run resources.
# /dev/shm as memory: NCCL and DataLoader workers outgrow a container's 64 MiB once
# nproc_per_node > 1 on multi-GPU instance types.
GPU_TRAINING = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "3", "memory": "10Gi"},
                "limits": {"cpu": "4", "memory": "14Gi", "nvidia.com/gpu": "1"},
            },
            "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": {
            "node_selector": {"node-pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "4Gi"}}],
        },
    },
    RUN_QUEUE: "gpu-training",
}

# vision_training_job with TRAINING_BACKEND=pytorchjob: the run itself (dataset, checks, evaluation,
# following the PyTorchJob) is an ordinary CPU pod with the code location's default size; the GPUs,
# their toleration and node selector are on the PyTorchJob's pods (vision/pytorchjob.py). Still one
# training at a time.
PYTORCHJOB_TRAINING = {RUN_QUEUE: "gpu-training"}

# fraud_retrain_job: besides the sensor's own guard, never two retrains at once in the cluster.
FRAUD_RETRAIN = {RUN_QUEUE: "fraud-retrain"}
