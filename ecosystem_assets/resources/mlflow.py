"""MLflow tracking and registry, with runs opened through dagster-mlflow's `mlflow_tracking` resource.

`mlflow` and `dagster_mlflow` are imported only when a run is opened: the code location must load
without them. dagster-mlflow ties one MLflow run to one Dagster run (tag ``dagster_run_id``) and
ends it only through a job hook, which `dg.materialize()` never calls; so `run()` ends the MLflow
run itself when the block exits (FAILED on an exception).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import dagster as dg
from pydantic import Field

# What JavaScript's encodeURIComponent leaves as it is, besides letters, digits and "-_.".
_URI_COMPONENT_SAFE = "!~*'()"


class MlflowTracking(dg.ConfigurableResource):
    """Where experiments and registered models live: a SQLite file locally, an MLflow server in production.

    One instance serves every scenario; each names its own experiment when it opens a run.
    """

    tracking_uri: str = Field(description="sqlite:///… or http(s)://mlflow-server")
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="The MLflow UI as a browser reaches it (MLFLOW_UI_URL): the base of the links in the metadata.",
    )
    artifact_location: str | None = Field(
        default=None, description="Root for new experiments' artifacts (path or s3://…); unset → the server's default."
    )

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def ensure_experiment(self, name: str) -> str:
        """Create the experiment with our artifact location; MLflow's default would be ./mlruns of the cwd."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_location.rstrip('/')}/{name}" if self.artifact_location else None
        return client.create_experiment(name, artifact_location=location)

    @contextmanager
    def run(self, context: dg.AssetExecutionContext, experiment: str, run_id: str | None = None) -> Iterator[Any]:
        """The MLflow run of this Dagster run in ``experiment`` (or run ``run_id``), active for the block.

        Yields dagster-mlflow's `MlFlow` object: the `mlflow` module's API bound to that run.
        """
        from dagster_mlflow import mlflow_tracking

        self.ensure_experiment(experiment)
        config = {
            "experiment_name": experiment,
            "mlflow_tracking_uri": self.tracking_uri,
            "mlflow_run_id": run_id,
            "env": {"MLFLOW_DISABLE_TELEMETRY": "true"},
            # One tag per asset that wrote to the run (evaluation resumes the training run).
            "extra_tags": {f"dagster_asset.{context.asset_key.to_python_identifier()}": context.run_id},
        }
        with dg.build_resources(
            {"mlflow": mlflow_tracking},
            instance=context.instance,
            resource_config={"mlflow": {"config": config}},
            dagster_run=context.run,
            log_manager=context.log,
        ) as resources:
            mlf = resources.mlflow
            try:
                yield mlf
            except BaseException:
                mlf.end_run(status="FAILED")
                raise
            mlf.end_run()

    # Links into the MLflow UI (a hash-routed single-page app; the routes are those of MLflow 3's
    # frontend, `mlflow/server/js`: runPage, getRunPageRoute with an artifact path, modelVersionPage)
    # and to its server's raw artifact route (`/get-artifact`, mlflow/server/__init__.py).

    @property
    def _ui(self) -> str:
        return self.ui_url.rstrip("/")

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        """The run's page in the MLflow UI; the experiment is looked up when not given."""
        experiment = experiment_id or self.client().get_run(run_id).info.experiment_id
        return f"{self._ui}/#/experiments/{experiment}/runs/{run_id}"

    def artifact_url(self, run_id: str, path: str, experiment_id: str | None = None) -> str:
        """The run's page with the artifact ``path`` open: the UI shows images and renders HTML (in a sandboxed frame)."""
        return f"{self.run_url(run_id, experiment_id)}/artifacts/{quote(path, safe='/')}"

    def raw_artifact_url(self, run_id: str, path: str) -> str:
        """The artifact's bytes from the MLflow server (sent as an attachment: browsers download it)."""
        return f"{self._ui}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"

    def model_version_url(self, name: str, version: str | int) -> str:
        """The registered model version's page (the name encoded as the UI's encodeURIComponent does)."""
        return f"{self._ui}/#/models/{quote(name, safe=_URI_COMPONENT_SAFE)}/versions/{version}"
