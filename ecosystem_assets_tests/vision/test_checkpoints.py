"""Checkpoints belong to a run group (the root Dagster run id of a re-execution chain), every rank
resumes the checkpoint rank 0 chose, and cnn_model's pool holds back a second training, ad hoc or not.

Real trainings on the digits shards (tiny images, one process, a few epochs); the rank test runs two
gloo processes; the pool test asks Dagster's own limit counter and slot claims on the instance that
`make dev` runs on (deploy/dagster.local.yaml).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets.vision.tracking import NullReporter
from ecosystem_assets_tests.vision.conftest import digits_spec, two_local_ranks

LOCAL_INSTANCE = Path(__file__).parents[2] / "deploy" / "dagster.local.yaml"


class Killed(Exception):
    """Stands for the kill of a training process right after a checkpoint."""


class Progress(NullReporter):
    """What rank 0 reported: the epochs it trained and their checkpoints; raises Killed after
    ``kill_after`` epochs (the checkpoint of that epoch is written before the report)."""

    def __init__(self, kill_after: int | None = None):
        self.kill_after, self.epochs, self.checkpoints, self.lines = kill_after, [], [], []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def epoch(self, record: dict[str, Any], checkpoint_key: str) -> None:
        self.epochs.append(record["epoch"])
        self.checkpoints.append(checkpoint_key)
        if self.kill_after is not None and len(self.epochs) >= self.kill_after:
            raise Killed(f"killed after epoch {record['epoch']}")


def _train(spec, kill_after: int | None = None) -> tuple[Any, Progress]:
    from ecosystem_assets.vision import train

    progress = Progress(kill_after)
    if kill_after is None:
        return train.run(spec, reporter=progress), progress
    with pytest.raises(Killed):
        train.run(spec, reporter=progress)
    return None, progress


def _pointer(root: Path, spec) -> dict[str, Any]:
    return json.loads((root / spec.checkpoint_prefix / "latest.json").read_text())


def test_runs_of_one_spec_in_different_run_groups_do_not_see_each_others_checkpoints(digits_store, tmp_path, one_torch_thread):
    root = tmp_path / "storage"
    first = digits_spec(digits_store, root, run_group="root-run-a")
    second = digits_spec(digits_store, storage_root=None, run_group="root-run-b", storage_url=first.storage_url)
    assert first.fingerprint == second.fingerprint  # the same training: before, the second resumed the first's

    done, _ = _train(first)
    assert done.resumed_from_epoch == 0 and len(done.history) == 2
    assert _pointer(root, first)["epoch"] == 2  # finished: a run resuming it would train nothing

    outcome, progress = _train(second)
    assert outcome.resumed_from_epoch == 0 and progress.epochs == [1, 2]  # trained from scratch
    assert "starting at epoch 1" in progress.lines[0]
    assert all(key.startswith(f"{second.checkpoint_prefix}/") for key in progress.checkpoints)
    # Each group has its own checkpoints and pointer, under the fingerprint's folder.
    assert first.checkpoint_prefix == f"models/cnn/{first.fingerprint}/root-run-a/checkpoints"
    assert second.checkpoint_prefix == f"models/cnn/{first.fingerprint}/root-run-b/checkpoints"
    for spec in (first, second):
        assert sorted(p.name for p in (root / spec.checkpoint_prefix).iterdir()) == ["epoch-0001.pt", "epoch-0002.pt", "latest.json"]
        assert _pointer(root, spec) == {"epoch": 2, "key": f"{spec.checkpoint_prefix}/epoch-0002.pt"}


def test_a_reexecution_resumes_its_own_groups_checkpoint(digits_store, tmp_path, one_torch_thread):
    root = tmp_path / "storage"
    killed = digits_spec(digits_store, root, max_epochs=3, run_group="root-run-a")
    other = digits_spec(digits_store, storage_root=None, max_epochs=3, run_group="root-run-b", storage_url=killed.storage_url)

    _, progress = _train(killed, kill_after=1)  # the run of root-run-a dies after its first epoch
    assert progress.epochs == [1]
    _, progress = _train(other, kill_after=2)  # a run of the same spec goes further meanwhile
    assert progress.epochs == [1, 2] and _pointer(root, other)["epoch"] == 2

    # The re-execution of root-run-a (same root run id) continues after its own epoch 1, not the other's 2.
    outcome, progress = _train(killed)
    assert outcome.resumed_from_epoch == 1 and "resuming after epoch 1" in progress.lines[0]
    assert progress.epochs == [2, 3] and [r["epoch"] for r in outcome.history] == [1, 2, 3]
    assert outcome.result["resumed_from_epoch"] == 1 and outcome.result["stop_reason"] == "reached max_epochs 3"
    assert _pointer(root, killed) == {"epoch": 3, "key": f"{killed.checkpoint_prefix}/epoch-0003.pt"}
    assert _pointer(root, other)["epoch"] == 2  # the other run's checkpoints were left alone


def _resume_on_each_rank(spec_json: str, views: list[list[str]]) -> list[Any]:
    """One rank of a gloo group: for each case, `load_checkpoint` on this rank's view of storage
    (``views[case][rank]``); the epoch it would resume after, or the error it raised."""
    import torch.distributed as dist

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision.checkpoints import load_checkpoint
    from ecosystem_assets.vision.train import TrainSpec

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # A bounded wait: a rank left alone in a collective fails the test instead of hanging it.
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        spec, outcomes = TrainSpec.from_json(spec_json), []
        for case in views:
            try:
                state = load_checkpoint(open_store(case[rank]), spec, rank, world_size)
                outcomes.append(None if state is None else ["epoch", state["epoch"], len(state["history"])])
            except RuntimeError as exc:
                outcomes.append(["error", str(exc)])
        return outcomes
    finally:
        dist.destroy_process_group()


def test_every_rank_resumes_the_checkpoint_rank_0_chose(digits_store, tmp_path, one_torch_thread):
    """The pointer moves between two ranks' reads (another writer saved epoch 2 in between): rank 0
    sees epoch 1, rank 1 epoch 2. Reading it on each rank would resume different epochs."""
    from torch.distributed.launcher.api import elastic_launch

    before, after = tmp_path / "before", tmp_path / "after"
    spec = digits_spec(digits_store, before, run_group="root-run-a")
    _train(spec, kill_after=1)
    shutil.copytree(before, after)
    moved = digits_spec(digits_store, storage_root=None, run_group="root-run-a", storage_url=str(after))
    _train(moved)  # in the copy, the run goes on to epoch 2 and moves the pointer
    assert _pointer(before, spec)["epoch"] == 1 and _pointer(after, spec)["epoch"] == 2

    unreadable = tmp_path / "unreadable"
    shutil.copytree(before, unreadable)
    (unreadable / spec.checkpoint_prefix / "latest.json").write_text("{not json")

    config = two_local_ranks()
    views = [[str(before), str(after)], [str(unreadable), str(after)], [str(tmp_path / "empty"), str(after)]]
    outcomes = elastic_launch(config, _resume_on_each_rank)(spec.to_json(), views)

    chosen, failed, fresh = zip(outcomes[0], outcomes[1], strict=True)
    assert chosen == (["epoch", 1, 1], ["epoch", 1, 1])  # both ranks resume after epoch 1, rank 0's choice
    # Rank 0 cannot read the pointer: every rank fails with its error, none waits for the others.
    assert all(o[0] == "error" and "rank 0 could not read the checkpoint pointer" in o[1] for o in failed), failed
    assert fresh == (None, None)  # rank 0 has no checkpoint: every rank starts at epoch 1


def test_the_run_group_is_the_root_run_of_the_reexecution_chain(digits_store):
    from ecosystem_assets.vision.assets import CnnTrainingConfig, train_spec

    store, manifest, index = digits_store
    common = dict(
        storage_url=store.url,
        shards_metadata={"dataset_version": manifest.version, "classes": list(manifest.classes)},
        shards_key=index.key,
        world_size=1,
        mlflow_tracking_uri=None,
        mlflow_run_id=None,
    )
    new_run = train_spec(CnnTrainingConfig(), dagster_run_id="run-1", root_run_id=None, **common)
    reexecution = train_spec(CnnTrainingConfig(), dagster_run_id="run-2", root_run_id="run-1", **common)
    later = train_spec(CnnTrainingConfig(), dagster_run_id="run-3", root_run_id=None, **common)
    assert new_run.run_group == reexecution.run_group == "run-1" and later.run_group == "run-3"
    assert new_run.checkpoint_prefix == reexecution.checkpoint_prefix != later.checkpoint_prefix
    assert new_run.fingerprint == later.fingerprint  # the same training, only stored apart
    # Each run still publishes its own result.
    assert reexecution.output_key("result.json") == f"models/cnn/{new_run.fingerprint}/runs/run-2/result.json"
    for bad in ("", "a/b", "..", "runs", "checkpoints"):
        with pytest.raises(ValueError, match="run_group"):
            digits_spec(digits_store, run_group=bad)


def test_an_ad_hoc_cnn_model_run_waits_for_the_training_pool(vision_defs, tmp_path):
    """On the instance of `make dev` with the pool's limit set (`dagster instance concurrency set
    gpu-training 1`): while a vision_training_job run trains, the queue holds back a run that only
    materializes cnn_model (it has none of the job's run tags), and its step cannot claim a slot."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
    from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter

    from ecosystem_assets.run_tags import RUN_QUEUE
    from ecosystem_assets.vision.assets import TRAINING_POOL

    defs = vision_defs()
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(TRAINING_POOL, 1)  # what the CLI command does
        job_run = instance.create_run_for_job(defs.resolve_job_def("vision_training_job"))
        ad_hoc = instance.create_run_for_job(
            defs.resolve_implicit_global_asset_job_def(), asset_selection=frozenset({dg.AssetKey("cnn_model")})
        )
        assert RUN_QUEUE not in ad_hoc.tags  # the run queue's tag limit cannot see it
        assert ad_hoc.run_op_concurrency is not None and dict(ad_hoc.run_op_concurrency.root_key_counts) == {TRAINING_POOL: 1}
        assert job_run.run_op_concurrency is not None and job_run.run_op_concurrency.all_pools == {TRAINING_POOL}

        def queue_holds_back(run: dg.DagsterRun) -> bool:  # what the queue daemon asks before launching a run
            storage, config = instance.event_log_storage, instance.get_concurrency_config()
            assert config.run_queue_config is not None
            counter = GlobalOpConcurrencyLimitsCounter(
                instance,
                [run],
                [],
                concurrency_keys=storage.get_concurrency_keys(),
                pool_limits=storage.get_pool_limits(),
                slot_count_offset=config.run_queue_config.op_concurrency_slot_buffer,
                pool_granularity=config.pool_config.pool_granularity,
            )
            return counter.is_blocked(run)

        assert not queue_holds_back(ad_hoc)  # nothing trains yet
        with InstanceConcurrencyContext(instance, job_run) as training:
            assert training.claim(TRAINING_POOL, "cnn_model")  # the job's cnn_model step trains
            assert queue_holds_back(ad_hoc)
            with InstanceConcurrencyContext(instance, ad_hoc) as waiting:
                assert not waiting.claim(TRAINING_POOL, "cnn_model")  # launched anyway (e.g. in process): its step waits
        instance.event_log_storage.free_concurrency_slot_for_step(job_run.run_id, "cnn_model")  # the step ended
        assert not queue_holds_back(ad_hoc)
        with InstanceConcurrencyContext(instance, ad_hoc) as after:
            assert after.claim(TRAINING_POOL, "cnn_model")
