"""docs/troubleshooting.md against the project: what can be checked mechanically, is.

- the section anchors the alerts link to exist, exactly the agreed set, each before a heading; every
  in-page link lands; every `runbook_url` of the PrometheusRule is one of the anchors, and every
  alert the guide names is a rule;
- in the code blocks: every asset, job, sensor, schedule and partition of a `dg launch`,
  `dagster sensor|schedule|job` command exists, and every `--config-json` passes Dagster's own
  validation against that job or asset selection; every (asset, check) given to the check one-liner
  is a check of that asset; every `kubectl` namespace, resource name and label selector in
  namespace `ecosystem` is one that deploy/ (or the Dagster chart and dagster-k8s, from the names
  deploy/ gives them) creates; every project environment variable is one the code reads;
- in the prose: every `make` target exists, and every backticked job, sensor, schedule and check
  name is defined.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "troubleshooting.md"
K8S = ROOT / "deploy" / "k8s"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
RELEASE = "dagster"  # the Helm release name deploy/README.md requires
# The anchors the Dagster alerts and the Prometheus rules link to (agreed with the alerts' authors).
ANCHORS = {
    "run-failed", "blocking-check", "sales-gate", "dataset-checks", "accuracy-gate", "precision-low",
    "precision-not-judged", "retrain-failed", "champion-refused", "report-late", "sensor-skips",
    "schedule-not-ticking", "backfill", "pods-pending-gpu", "oomkilled", "image-pull", "run-pod-evicted",
    "postgres-connections", "nccl-hang", "loss-divergence", "gate-keeps-refusing", "drift-vs-label-delay",
    "precision-falls-no-drift", "service-error-rate", "service-latency", "no-champion", "scrape-down",
}  # fmt: skip
PLACEHOLDER = re.compile(r"^<[A-Z_]+>(-\w+)?$")
NAMESPACES = {"ecosystem", "kube-system", "kubeflow", "monitoring"}
KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "svc": "Service", "service": "Service",
    "hpa": "HorizontalPodAutoscaler", "configmap": "ConfigMap", "podmonitor": "PodMonitor", "prometheusrule": "PrometheusRule",
}  # fmt: skip


def doc() -> str:
    return DOC.read_text()


def code_blocks() -> list[str]:
    """The bash blocks, line continuations joined."""
    return [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", doc(), re.S)]


def commands(*prefixes: str) -> Iterator[list[str]]:
    """The shell words of every code-block line that starts with one of ``prefixes``, up to a
    pipe or a comment."""
    for block in code_blocks():
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line.strip())
            if line.startswith(prefixes):
                words = shlex.split(line)
                cut = [i for i, w in enumerate(words) if w in ("|", "||", "&&", ";")]
                yield words[: cut[0]] if cut else words


def option(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words):
        if word in names:
            return words[i + 1]
    return None


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The code location on the embedded defaults (the names do not depend on the settings)."""
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        for field in Settings.model_fields.values():
            assert isinstance(field.validation_alias, str)
            mp.delenv(field.validation_alias, raising=False)
        mp.setenv("ECOSYSTEM_HOME", str(tmp_path_factory.mktemp("home")))
        return build_definitions(Settings.from_env())


@pytest.fixture(scope="module")
def names(defs: Any) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    repo = defs.get_repository_def()
    return {
        "assets": {k.to_user_string() for k in graph.get_all_asset_keys()},
        "checks": {k.name for k in graph.asset_check_keys},
        "jobs": {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
        "sensors": {s.name for s in repo.sensor_defs},
        "schedules": {s.name for s in repo.schedule_defs},
    }


# --- anchors and links ---------------------------------------------------------------------------


def test_the_agreed_anchors_exist_once_each_before_a_heading():
    text = doc()
    found = re.findall(r'<a id="([^"]+)"></a>', text)
    assert sorted(found) == sorted(ANCHORS), set(found) ^ ANCHORS
    for anchor in ANCHORS:
        after = text.split(f'<a id="{anchor}"></a>', 1)[1].lstrip("\n")
        assert after.startswith("### "), anchor


def heading_slugs(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_in_page_link_lands():
    text = doc()
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets, "the guide links its sections"
    assert targets <= ANCHORS | heading_slugs(text), targets - ANCHORS - heading_slugs(text)


def prometheus_rules() -> list[dict[str, Any]]:
    (rule,) = [d for d in yaml.safe_load_all((K8S / "prometheus-rules.yaml").read_text()) if d and d["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def test_every_alert_links_to_a_section_and_every_named_alert_exists():
    rules = prometheus_rules()
    links = {r["alert"]: r["annotations"]["runbook_url"] for r in rules}
    assert all(url.startswith("docs/troubleshooting.md#") for url in links.values()), links
    assert {url.split("#", 1)[1] for url in links.values()} <= ANCHORS, links
    named = set(re.findall(r"\b(Fraud[A-Z]\w+)\b", doc()))
    assert named and named <= set(links), named - set(links)


# --- Dagster names and run configs in the commands ----------------------------------------------


def selected_assets(defs: Any, selection: str) -> set[str]:
    import dagster as dg

    keys: set[str] = set()
    for part in selection.split(","):
        resolved = dg.AssetSelection.from_string(part.strip()).resolve(defs.resolve_asset_graph())
        assert resolved, f"{part!r} selects no asset"
        keys |= {k.to_user_string() for k in resolved}
    return keys


def check_partitions(defs: Any, assets: set[str], keys: list[str]) -> None:
    import dagster as dg

    # An unpartitioned job contributes no assets: a partition given for it would fail in the shell.
    assert assets, f"partitions {keys} given for an unpartitioned job or selection"
    graph = defs.resolve_asset_graph()
    for asset in assets:
        partitions = graph.get(dg.AssetKey(asset)).partitions_def
        assert partitions is not None, f"{asset} is not partitioned"
        for key in keys:
            assert partitions.has_partition_key(key), (asset, key)


def test_dg_launch_commands_name_real_assets_jobs_partitions_and_configs(defs: Any, names: dict[str, set[str]]):
    import json

    import dagster as dg

    launches = list(commands("dg launch"))
    assert len(launches) >= 10
    for words in launches:
        job_name, selection = option(words, "--job"), option(words, "--assets")
        assert (job_name is None) != (selection is None), words
        if job_name:
            assert job_name in names["jobs"], words
            job = defs.resolve_job_def(job_name)
            assets = {k.to_user_string() for k in job.asset_layer.executable_asset_keys} if job.partitions_def else set()
        else:
            assets = selected_assets(defs, selection)
            job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(a) for a in assets})
        partition, window = option(words, "--partition"), option(words, "--partition-range")
        if partition:
            check_partitions(defs, assets, [partition])
        if window:
            check_partitions(defs, assets, window.split("..."))
        config = option(words, "--config-json")
        if config:
            dg.validate_run_config(job, json.loads(config))  # raises DagsterInvalidConfigError naming the field


def test_a_wrong_config_field_fails_the_validation(defs: Any):
    import dagster as dg

    with pytest.raises(dg.DagsterInvalidConfigError, match="learning_rat"):
        dg.validate_run_config(defs.resolve_job_def("vision_training_job"), {"ops": {"cnn_model": {"config": {"learning_rat": 0.1}}}})


def test_dagster_cli_commands_name_real_sensors_schedules_and_jobs(defs: Any, names: dict[str, set[str]]):
    seen = 0
    for words in commands("dagster "):
        if option(words, "-m"):
            assert option(words, "-m") == "ecosystem_assets.definitions", words
        if words[1] in ("sensor", "schedule") and words[2] in ("preview", "start", "stop", "cursor"):
            assert words[3] in names[words[1] + "s"], words
            seen += 1
        if words[1:3] == ["job", "backfill"]:
            job = option(words, "-j")
            assert job in names["jobs"] and (ROOT / option(words, "-w")).is_file(), words
            assets = {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}
            check_partitions(defs, assets, [option(words, "--from"), option(words, "--to")])
            seen += 1
    assert seen >= 5


def test_the_check_one_liner_is_given_real_checks(defs: Any):
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    given = [tuple(m) for block in code_blocks() for m in re.findall(r'^" (\w+) (\w+)$', block, re.M)]
    given += re.findall(r"one-liner[^`]*?with `(\w+) (\w+)`", doc(), re.S)
    assert len(given) >= 3
    assert set(given) <= checks, set(given) - checks


def test_backticked_dagster_names_in_the_prose_exist(names: dict[str, set[str]]):
    everything = set().union(*names.values())
    suffixes = ("_job", "_sensor", "_schedule", "_gate", "_threshold", "_split", "_leakage", "_decode", "_promotion", "_drift", "_check")
    mentioned = {t for t in re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", doc()) if t.endswith(suffixes)}
    assert len(mentioned) >= 15
    assert mentioned <= everything, mentioned - everything


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    used = set(re.findall(r"`(?:[A-Z_]+=\S+ )?make ([a-z][\w-]*)", doc()))
    assert used and used <= targets, used - targets


def test_project_environment_variables_are_read_by_the_code():
    from ecosystem_assets.settings import Settings

    read = {f.validation_alias for f in Settings.model_fields.values()}
    source = "\n".join(p.read_text() for p in (ROOT / "ecosystem_assets").rglob("*.py"))
    read |= set(re.findall(r"""secret\(["']([A-Z_]+)["']\)""", source))
    prefixes = "ECOSYSTEM|FRAUD|SALES|REPORT|SMTP|TRAINING|ARTIFACT|IMAGE_DATASET|ALERT"
    project = re.compile(rf"(?<![<\w])((?:{prefixes})_[A-Z_]+)\b")  # not deploy/README.md's <PLACEHOLDERS>
    used = {v for block in code_blocks() for v in project.findall(block)} | set(project.findall(doc()))
    assert "ECOSYSTEM_HOME" in used
    assert used <= read, used - read


# --- kubectl -------------------------------------------------------------------------------------


def cluster_objects() -> dict[str, set[str]]:
    """Kind → names in namespace ecosystem: the manifests, plus what the Dagster chart (release
    `dagster`, deploy/helm/values.yaml) names its objects."""
    objects: dict[str, set[str]] = {}
    for path in K8S.glob("*.yaml"):
        for d in yaml.safe_load_all(path.read_text()):
            if d and "kind" in d and "metadata" in d:
                objects.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    values = yaml.safe_load(VALUES.read_text())
    user = [d["name"] for d in values["dagster-user-deployments"]["deployments"]]
    objects["Deployment"] |= {f"{RELEASE}-daemon", f"{RELEASE}-dagster-webserver"}
    objects["Deployment"] |= {f"{RELEASE}-dagster-user-deployments-{n}" for n in user}
    objects["Service"] |= {f"{RELEASE}-dagster-webserver"}
    env_maps = {f"{RELEASE}-dagster-user-deployments-{n}-user-env" for n in user}
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["env"]["TRAINING_ENV_CONFIG_MAP"] in env_maps  # the name the training pods load
    objects.setdefault("ConfigMap", set()).update(env_maps)
    return objects


def label_values() -> dict[str, set[str]]:
    """Label → values the project's pods carry (manifests, the chart, dagster-k8s, the PyTorchJob)."""
    import inspect

    import dagster_k8s.launcher

    from ecosystem_assets.vision import pytorchjob

    pods: dict[str, set[str]] = {}
    for path in K8S.glob("*.yaml"):
        for d in yaml.safe_load_all(path.read_text()):
            if d and d.get("kind") == "Deployment":
                for key, value in d["spec"]["template"]["metadata"]["labels"].items():
                    pods.setdefault(key, set()).add(value)
    values = yaml.safe_load(VALUES.read_text())
    pods["deployment"] = {d["name"] for d in values["dagster-user-deployments"]["deployments"]}
    assert 'component="run_worker"' in inspect.getsource(dagster_k8s.launcher)
    training = (ROOT / "ecosystem_assets" / "resources" / "training.py").read_text()
    pods["app.kubernetes.io/component"] = {"run_worker", *re.findall(r'"app\.kubernetes\.io/component": "([\w-]+)"', training)}
    pods[pytorchjob.JOB_NAME_LABEL] = set()  # per job: <JOB> only
    pods["dagster/run-id"] = set()  # per run: <RUN_ID> only
    pods["node-pool"] = set(pytorchjob.GPU_NODE_SELECTOR.values())
    return pods


def test_kubectl_commands_name_real_namespaces_objects_and_labels(names: dict[str, set[str]]):
    objects, labels = cluster_objects(), label_values()
    labels["dagster/job"] = names["jobs"]
    checked = 0
    for words in commands("kubectl "):
        namespace = option(words, "-n")
        assert namespace in NAMESPACES or namespace is None, words
        selector = option(words, "-l")
        for term in selector.split(",") if selector else []:
            key, value = term.split("=", 1)
            assert key in labels, (key, words)
            assert value in labels[key] or PLACEHOLDER.match(value), (term, words)
            checked += 1
        if namespace != "ecosystem":
            continue
        refs = [w.split("/", 1) for w in words if "/" in w and w.split("/", 1)[0] in KINDS]
        refs += [[w, words[i + 1]] for i, w in enumerate(words[:-1]) if w in KINDS and not words[i + 1].startswith("-")]
        for kind, name in refs:
            assert PLACEHOLDER.match(name) or name in objects.get(KINDS[kind], set()), (kind, name, words)
            checked += 1
    assert checked >= 25
