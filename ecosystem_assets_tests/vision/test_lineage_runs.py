"""Runs read the upstream materialization of their own run (else the latest), never a "current" file.

Two ``image_dataset`` runs on different data at the same time, in two processes, against one
on-disk Dagster instance and one storage: each run's checks judge that run's dataset. And
``cnn_evaluation`` evaluates the model of its own run, or the latest model when its run trained none.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from functools import cached_property
from typing import Any

import dagster as dg

from ecosystem_assets.lineage import STORAGE_KEY
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.resources.vision import ImageSource
from ecosystem_assets.storage import Store
from ecosystem_assets.vision.assets import image_dataset
from ecosystem_assets.vision.checks import DATASET_CHECKS
from ecosystem_assets_tests.vision.conftest import write_image_folder
from ecosystem_assets_tests.waiting import wait_until

TIMEOUT = 120.0  # seconds any rendezvous may take before the run fails with what it saw


class Rendezvous:
    """Forces the interleaving that a "current" pointer or a "latest" lookup gets wrong:

    1. both runs are inside ``image_dataset`` at once (a barrier);
    2. the *second* run materializes only after the *first* run's materialization is recorded;
    3. the first run's checks read their manifest only after the second's is recorded, so when
       its later checks look their dataset up, the latest ``image_dataset`` is the other run's.
    """

    def __init__(self, instance: dg.DagsterInstance, sources: dict[str, str], barrier: Any):
        self.instance, self.sources, self.barrier = instance, sources, barrier

    def materialized_from(self) -> list[str]:
        records = self.instance.fetch_materializations(dg.AssetKey("image_dataset"), limit=10).records
        return [r.asset_materialization.metadata["source_url"].value for r in records]

    def wait_for(self, role: str) -> None:
        """Until the run of ``role`` has recorded its image_dataset materialization."""
        source = self.sources[role]
        wait_until(self.materialized_from, TIMEOUT, f"image_dataset materialized from {source}", done=lambda seen: source in seen)

    def entering_dataset(self, role: str) -> None:
        self.barrier.wait(TIMEOUT)  # BrokenBarrierError if the other run never gets here
        if role == "second":
            self.wait_for("first")

    def reading_manifest(self, role: str) -> None:
        if role == "first":
            self.wait_for("second")


RENDEZVOUS: list[Rendezvous] = []  # set in each run's process; resources carry config only


class RendezvousImageSource(ImageSource):
    role: str

    def open(self, storage: Store) -> Store:
        RENDEZVOUS[-1].entering_dataset(self.role)
        return super().open(storage)


class _ManifestReadGate:
    """The shared storage as a Store, calling the rendezvous before a manifest is read."""

    def __init__(self, store: Store, role: str):
        self._store, self._role = store, role
        self.url = store.url

    def read_bytes(self, key: str) -> bytes:
        if key.startswith("datasets/manifests/"):
            RENDEZVOUS[-1].reading_manifest(self._role)
        return self._store.read_bytes(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class RendezvousStorage(ArtifactStorage):
    role: str

    @cached_property
    def store(self) -> Store:
        return _ManifestReadGate(super().store, self.role)  # type: ignore[return-value]


def _materialize_in_process(instance_ref: Any, role: str, sources: dict[str, str], storage_url: str, barrier: Any, results: Any) -> None:
    """One run, in its own process (Dagster's in-process execution is not thread-safe: two runs in
    two threads deadlock in its logging setup). Reports (role, run id, success, error)."""
    try:
        with dg.DagsterInstance.from_ref(instance_ref) as instance:
            RENDEZVOUS.append(Rendezvous(instance, sources, barrier))
            resources = {
                "storage": RendezvousStorage(url=storage_url, role=role),
                "image_source": RendezvousImageSource(url=sources[role], role=role),
            }
            result = dg.materialize([image_dataset, *DATASET_CHECKS], resources=resources, instance=instance, raise_on_error=False)
            failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure and e.step_failure_data.error]
            results.put((role, result.run_id, result.success, failures))
    except BaseException:  # noqa: BLE001 — reported to the test, which fails with it
        barrier.abort()
        results.put((role, None, False, [traceback.format_exc()]))


def _outcome(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """What the run recorded in the instance: its dataset version and key, and its check evaluations."""
    materializations = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    checks = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    [materialization] = [r.event_log_entry.dagster_event.step_materialization_data.materialization for r in materializations]
    evaluations = {e.check_name: e for e in (r.event_log_entry.dagster_event.event_specific_data for r in checks)}
    assert set(evaluations) == {c.check_key.name for c in DATASET_CHECKS}, sorted(evaluations)
    metadata = materialization.metadata
    return {"version": metadata["dataset_version"].value, "key": metadata[STORAGE_KEY].value, "checks": evaluations}


def test_concurrent_dataset_runs_each_check_their_own_dataset(tmp_path, dagster_instance):
    from ecosystem_assets.storage import open_store

    clean, defective = tmp_path / "clean", tmp_path / "defective"
    write_image_folder(open_store(str(clean)), {"cat": 40, "dog": 40, "owl": 40})
    write_image_folder(open_store(str(defective)), {"cat": 40, "dog": 40, "owl": 1}, first_seed=1000)  # owl misses splits
    # The defective run goes first: a check that read the latest dataset would judge the clean one and pass.
    sources = {"first": str(defective), "second": str(clean)}

    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    processes = [
        spawn.Process(
            target=_materialize_in_process,
            name=f"run-{role}",
            daemon=True,
            args=(dagster_instance.get_ref(), role, sources, str(tmp_path / "storage"), barrier, results),
        )
        for role in ("first", "second")
    ]
    for process in processes:
        process.start()
    reported: dict[str, tuple] = {}
    try:
        deadline = time.monotonic() + 4 * TIMEOUT
        while len(reported) < 2:
            try:
                role, run_id, success, failures = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"runs not finished within {4 * TIMEOUT:g} s; reported: {reported}") from None
            reported[role] = (run_id, success, failures)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    run_ids = {role: run_id for role, (run_id, _, _) in reported.items()}
    assert all(run_ids.values()), reported

    first, second = _outcome(dagster_instance, run_ids["first"]), _outcome(dagster_instance, run_ids["second"])
    assert first["version"] != second["version"] and first["key"] != second["key"]
    # When the first run's checks looked, the latest image_dataset was the second run's.
    latest = dagster_instance.get_latest_materialization_event(dg.AssetKey("image_dataset"))
    assert latest is not None and latest.run_id == run_ids["second"]

    for role, outcome in (("first", first), ("second", second)):
        for name, check in outcome["checks"].items():
            assert check.metadata["dataset_version"].value == outcome["version"], (role, name)
            judged = check.metadata["input/image_dataset"].value
            assert judged["run_id"] == run_ids[role] and judged[STORAGE_KEY] == outcome["key"], (role, name, judged)
    assert not first["checks"]["classes_in_every_split"].passed
    assert "owl/" in first["checks"]["classes_in_every_split"].description
    assert first["checks"]["image_files_decode"].passed and first["checks"]["no_train_test_leakage"].passed
    assert all(check.passed for check in second["checks"].values()), reported["second"]
    # The blocking check failed only the defective run.
    assert reported["first"][1] is False and reported["second"][1] is True, reported


SMALL_TRAINING = {"max_epochs": 1, "nproc_per_node": 1, "threads_per_process": 1, "image_size": 8, "batch_size": 16}


def _run(defs, instance, keys, config=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(k) for k in keys], run_config={"ops": config} if config else None
    )


def _metadata(result, node) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_evaluation_reads_the_model_of_its_own_run_else_the_latest(tmp_path, monkeypatch, vision_defs, dagster_instance, one_torch_thread):
    import json

    from ecosystem_assets.settings import Settings
    from ecosystem_assets.storage import open_store

    folder = tmp_path / "shapes"
    write_image_folder(open_store(str(folder)), {"circle": 30, "square": 30, "star": 30})
    monkeypatch.setenv("IMAGE_DATASET_URL", str(folder))
    defs = vision_defs()
    storage = open_store(Settings.from_env().storage_url)

    first = _run(defs, dagster_instance, ["image_dataset", "image_shards", "cnn_model"], {"cnn_model": {"config": SMALL_TRAINING}})
    model_a = _metadata(first, "cnn_model")
    assert model_a["input/image_shards"]["run_id"] == first.run_id

    # A run that trains model B (another seed) and evaluates: the evaluation is of B, not of A.
    evaluate = {"cnn_evaluation": {"config": {"accuracy_threshold": 0.0}}}
    second = _run(
        defs, dagster_instance, ["cnn_model", "cnn_evaluation"], {"cnn_model": {"config": {**SMALL_TRAINING, "seed": 1}}, **evaluate}
    )
    model_b, evaluated = _metadata(second, "cnn_model"), _metadata(second, "cnn_evaluation")
    assert model_b["input/image_shards"]["run_id"] == first.run_id  # this run packed no shards: the latest
    assert model_b[STORAGE_KEY] != model_a[STORAGE_KEY] and model_b["mlflow_run_id"] != model_a["mlflow_run_id"]
    assert second.run_id in model_b[STORAGE_KEY] and first.run_id in model_a[STORAGE_KEY]  # run-keyed results
    assert evaluated["input/cnn_model"]["run_id"] == second.run_id
    assert evaluated["input/cnn_model"][STORAGE_KEY] == model_b[STORAGE_KEY]
    assert evaluated["mlflow_run_id"] == model_b["mlflow_run_id"]
    record = json.loads(storage.read_bytes(evaluated[STORAGE_KEY]))
    assert record["model_result_key"] == model_b[STORAGE_KEY] and second.run_id in evaluated[STORAGE_KEY]

    # Evaluation alone: the latest model (B), while A's and B's results both stay in storage.
    alone = _run(defs, dagster_instance, ["cnn_evaluation"], evaluate)
    again = _metadata(alone, "cnn_evaluation")
    assert again["input/cnn_model"]["run_id"] == second.run_id and again["mlflow_run_id"] == model_b["mlflow_run_id"]
    assert again[STORAGE_KEY] != evaluated[STORAGE_KEY]  # each evaluation run writes its own files
    assert storage.exists(model_a[STORAGE_KEY]) and storage.exists(model_b[STORAGE_KEY])
    assert not [k for k in storage.list_keys("models") if k.endswith("current.json")]
