"""The ``torchrun`` command line of CNN training, built in one place for every backend.

- ``local`` (the Dagster run's own pod or laptop): one node, ``--standalone`` (c10d on a free
  loopback port), ``nproc_per_node`` processes.
- ``pytorchjob`` (Kubeflow Training Operator): every pod runs ``python -m
  ecosystem_assets.vision.launch --rdzv-id <job> --spec <json>``, which reads the variables the
  operator sets (``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``)
  and replaces itself with ``torchrun --nnodes=N --rdzv-backend=c10d
  --rdzv-endpoint=<master>:<port> --rdzv-id=<job>``. The Master pod hosts the rendezvous store.

Which node holds global rank 0: c10d numbers the nodes in the sorted order of their addresses
(``torch.distributed.elastic.rendezvous.dynamic_rendezvous._mark_rendezvous_complete``; an agent's
address is its FQDN, the pod's hostname). The operator names the pods ``<job>-master-0`` and
``<job>-worker-<i>``, so the Master is node 0 and runs rank 0, the rank that reports through Pipes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

TRAIN_MODULE = "ecosystem_assets.vision.train"
# How long an agent waits for the others (join_timeout; torchrun's default is 600 s) and for the
# rendezvous store at the Master (read_timeout; default 60 s): GPU nodes scale up from zero and
# pull a multi-GB CUDA image, each pod at its own pace.
JOIN_TIMEOUT_S = 1800


def torchrun_command(
    spec_json: str,
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    join_timeout_s: int = JOIN_TIMEOUT_S,
    python: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run … --module ecosystem_assets.vision.train --spec <json>``.

    Without ``rdzv_endpoint`` (one node only): ``--standalone``. With it: c10d rendezvous at
    ``host:port`` under ``rdzv_id``, the same for every node of the job.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nnodes ({nnodes}) and nproc_per_node ({nproc_per_node}) must be at least 1")
    command = [python or sys.executable, "-m", "torch.distributed.run"]
    if rdzv_endpoint is None:
        if nnodes != 1:
            raise ValueError(f"{nnodes} nodes need a rendezvous endpoint")
        command.append("--standalone")
    else:
        if not rdzv_id:
            raise ValueError("a multi-node rendezvous needs an id shared by its nodes")
        command += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
            f"--rdzv-conf=join_timeout={join_timeout_s},read_timeout={join_timeout_s}",
        ]
    # No restarts inside a node: a failed rank fails the node; the PyTorchJob's restart policy and
    # the per-epoch checkpoints decide what happens next.
    command += [f"--nproc-per-node={nproc_per_node}", "--max-restarts=0", "--module", TRAIN_MODULE, "--spec", spec_json]
    return command


def command_from_operator_env(spec_json: str, rdzv_id: str, environ: Mapping[str, str]) -> list[str]:
    """The torchrun command of one PyTorchJob pod, from the variables the training operator set in it.

    The operator (v1.9.0, ``pkg/controller.v1/pytorch/envvar.go`` and ``master.go``) sets
    ``PET_NNODES`` (replicas of Master + Workers), ``PET_NPROC_PER_NODE`` (``spec.nprocPerNode``),
    ``PET_MASTER_ADDR`` (``<job>-master-0``) and ``PET_MASTER_PORT`` (the Master's
    ``pytorchjob-port``); ``RANK``/``PET_NODE_RANK`` only matter to the static rendezvous,
    and torchrun sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_*`` of its ranks itself.
    """
    missing = [name for name in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR", "PET_MASTER_PORT") if not environ.get(name)]
    if missing:
        raise RuntimeError(f"not started by the training operator: {', '.join(missing)} unset")
    return torchrun_command(
        spec_json,
        nproc_per_node=int(environ["PET_NPROC_PER_NODE"]),
        nnodes=int(environ["PET_NNODES"]),
        rdzv_endpoint=f"{environ['PET_MASTER_ADDR']}:{environ['PET_MASTER_PORT']}",
        rdzv_id=rdzv_id,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of a PyTorchJob pod: becomes torchrun (exec), so signals reach it directly."""
    parser = argparse.ArgumentParser(description="Start this pod's torchrun agent of a PyTorchJob.")
    parser.add_argument("--rdzv-id", required=True, help="the rendezvous id shared by the job's pods (the job's name)")
    parser.add_argument("--spec", required=True, help="TrainSpec as JSON")
    args = parser.parse_args(argv)
    command = command_from_operator_env(args.spec, args.rdzv_id, os.environ)
    print(f"torchrun: {' '.join(command[:-2])} --spec <TrainSpec>", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
