"""Least privilege and safe operation on Kubernetes (issue 14 point 3), checked statically:

- one service account per component (webserver, daemon, code server, runs, training pods), each
  bound to exactly the Role designed for it, and those Roles are exactly what dagster-k8s's client
  calls (read from its source) for the daemon and for the webserver's run termination;
- the runs' account may create PyTorchJobs; no other account may, and only the daemon may create Jobs;
- the chart's own broad Roles are off; the post-renderer moves the webserver and the code server to
  their own accounts (run through kubectl's kustomize where kubectl is installed);
- no workload and no ExternalSecret reads the RDS master secret; the ExternalSecrets produce exactly
  the Secrets the workloads read from Terraform's secrets;
- every Postgres URI and parameter set in deploy/ has sslmode=verify-full and the RDS CA bundle as
  sslrootcert, and the bundle is mounted wherever a client runs;
- run pods carry the annotations that keep cluster-autoscaler and Karpenter from evicting them;
  migrate.enabled and tick retention are set; ordinary runs use the CPU image.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecosystem_assets_tests import tools
from ecosystem_assets_tests.deploy.test_infra import parsed

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VALUES = DEPLOY / "helm" / "values.yaml"
INSTANCE = DEPLOY / "dagster.k8s.yaml"
POST_RENDER = DEPLOY / "helm" / "post-render"
NAMESPACE = "ecosystem"
CA_DIR = "/etc/ssl/rds"
CA_FILE = f"{CA_DIR}/global-bundle.pem"
CA_CONFIG_MAP = "rds-ca-bundle"
DO_NOT_EVICT = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def applied() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k deploy/k8s` applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in docs(K8S / name)]


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def instance() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE.read_text())


def user_deployment() -> dict[str, Any]:
    (found,) = values()["dagster-user-deployments"]["deployments"]
    return found


# --- accounts and their rights -----------------------------------------------------------------

# Which account each component runs as, and where that is decided.
ACCOUNTS = {
    "webserver": "dagster-webserver",  # post-renderer
    "daemon": "dagster-daemon",  # chart serviceAccount.name
    "code server": "dagster-code-server",  # post-renderer
    "runs": "dagster-run",  # subchart serviceAccount.name -> the code location's container context
    "training pods": "dagster-training",  # TRAINING_SERVICE_ACCOUNT
}

# The kubernetes client's method -> (API group, resource, verb).
API_CALLS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "read_namespaced_job_status": ("batch", "jobs/status", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "list_namespaced_event": ("", "events", "list"),
}


def client_api_calls(roots: list[str]) -> set[str]:
    """The kubernetes API methods that these methods of dagster-k8s's DagsterKubernetesClient reach
    (through its own helper methods), read from its source."""
    import dagster_k8s.client

    tree = ast.parse(inspect.getsource(dagster_k8s.client))
    (klass,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "DagsterKubernetesClient"]
    calls: dict[str, tuple[set[str], set[str]]] = {}
    for function in klass.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        api, own = set(), set()
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                inner = node.value
                if isinstance(inner.value, ast.Name) and inner.value.id == "self" and inner.attr in ("batch_api", "core_api"):
                    api.add(node.attr)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                own.add(node.attr)
        calls[function.name] = (api, own)
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in calls:
            continue
        seen.add(name)
        api, own = calls[name]
        found |= api
        stack += own
    return found


def launcher_client_calls(methods: list[str]) -> list[str]:
    """The DagsterKubernetesClient methods these K8sRunLauncher methods call (self._api_client.X)."""
    from dagster_k8s import K8sRunLauncher

    names = []
    for method in methods:
        source = inspect.getsource(getattr(K8sRunLauncher, method))
        names += re.findall(r"self\._api_client\.(\w+)\(", source)
    assert names, methods
    return names


def rights(calls: set[str]) -> set[tuple[str, str, str]]:
    unknown = calls - set(API_CALLS)
    assert not unknown, f"dagster-k8s calls API methods this test does not map: {unknown}"
    return {API_CALLS[c] for c in calls}


def role_rights(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def bound_rights() -> dict[str, set[tuple[str, str, str]]]:
    """Account -> everything its RoleBindings grant (the manifests are the only RBAC: the chart's is off)."""
    roles = {d["metadata"]["name"]: d for d in applied() if d["kind"] == "Role"}
    granted: dict[str, set[tuple[str, str, str]]] = {}
    for binding in (d for d in applied() if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "no ClusterRole for a workload"
        for subject in binding["subjects"]:
            assert (subject["kind"], subject["namespace"]) == ("ServiceAccount", NAMESPACE)
            granted.setdefault(subject["name"], set()).update(role_rights(roles[binding["roleRef"]["name"]]))
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in applied())
    return granted


def test_each_component_has_its_own_account():
    v = values()
    assert len(set(ACCOUNTS.values())) == len(ACCOUNTS)
    assert v["global"]["serviceAccountName"] == ""  # a global name would put every component on one account
    assert v["serviceAccount"] == {"create": True, "name": ACCOUNTS["daemon"], "annotations": {}}
    subchart = v["dagster-user-deployments"]["serviceAccount"]
    assert subchart["create"] is True and subchart["name"] == ACCOUNTS["runs"]
    assert instance()["run_launcher"]["config"]["service_account_name"] == ACCOUNTS["runs"]
    assert user_deployment()["env"]["TRAINING_SERVICE_ACCOUNT"] == ACCOUNTS["training pods"]
    # The chart's Roles (every verb on jobs and pods) are off in both charts.
    assert v["rbacEnabled"] is False and v["dagster-user-deployments"]["rbacEnabled"] is False
    made_here = {d["metadata"]["name"]: d for d in applied() if d["kind"] == "ServiceAccount"}
    assert {ACCOUNTS["webserver"], ACCOUNTS["code server"], ACCOUNTS["training pods"]} <= set(made_here)
    # No API token where the API is not used.
    for name in (ACCOUNTS["code server"], ACCOUNTS["training pods"]):
        assert made_here[name]["automountServiceAccountToken"] is False, name


def test_rbac_is_exactly_what_each_account_calls():
    daemon_calls = client_api_calls(
        launcher_client_calls(["_launch_k8s_job_with_args", "terminate", "check_run_worker_health", "get_run_worker_debug_info"])
    )
    webserver_calls = client_api_calls(launcher_client_calls(["terminate"]))  # the UI's Terminate
    granted = bound_rights()
    assert granted[ACCOUNTS["daemon"]] == rights(daemon_calls)
    assert granted[ACCOUNTS["webserver"]] == rights(webserver_calls)
    assert granted[ACCOUNTS["runs"]] == {("kubeflow.org", "pytorchjobs", verb) for verb in ("create", "get", "list", "watch", "delete")} | {
        ("", "pods", "get"),
        ("", "pods/log", "get"),
    }
    # Nothing for the code server and the training pods.
    assert set(granted) == {ACCOUNTS["daemon"], ACCOUNTS["webserver"], ACCOUNTS["runs"]}


def test_only_the_runs_create_pytorchjobs_and_only_the_daemon_creates_jobs():
    granted = bound_rights()
    creators = {account for account, r in granted.items() if ("kubeflow.org", "pytorchjobs", "create") in r}
    assert creators == {ACCOUNTS["runs"]}
    assert ("kubeflow.org", "pytorchjobs", "create") not in granted[ACCOUNTS["webserver"]]
    job_creators = {account for account, r in granted.items() if ("batch", "jobs", "create") in r}
    assert job_creators == {ACCOUNTS["daemon"]}
    # Nobody may create pods directly, read Secrets or use wildcards.
    for account, r in granted.items():
        assert ("", "pods", "create") not in r and not any(res == "secrets" for _, res, _ in r), account
        assert not any("*" in part for right in r for part in right), account


def test_irsa_roles_go_to_the_accounts_that_use_aws():
    annotated = {
        d["metadata"]["name"]: d["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        for d in applied()
        if d["kind"] == "ServiceAccount"
    }
    assert annotated[ACCOUNTS["webserver"]] == "<DAGSTER_WEBSERVER_ROLE_ARN>"  # compute logs only
    assert annotated[ACCOUNTS["training pods"]] == "<DAGSTER_ROLE_ARN>"
    assert annotated[ACCOUNTS["code server"]] is None
    assert values()["dagster-user-deployments"]["serviceAccount"]["annotations"] == {"eks.amazonaws.com/role-arn": "<DAGSTER_ROLE_ARN>"}
    # The Terraform role's trust: exactly these accounts (infra/variables.tf).
    variables = (ROOT / "infra" / "variables.tf").read_text()
    trusted = re.search(r'variable "dagster_service_accounts" \{.*?default\s*=\s*(\[[^\]]*\])', variables, re.S).group(1)
    assert yaml.safe_load(trusted) == [ACCOUNTS["runs"], ACCOUNTS["training pods"]]
    assert re.search(r'variable "dagster_webserver_service_account" \{.*?default\s*=\s*"dagster-webserver"', variables, re.S)


def post_render(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tools.command("kubectl", "the post-renderer runs its kustomize")
    result = subprocess.run(
        ["bash", str(POST_RENDER / "post-render.sh")], input=yaml.safe_dump_all(manifests), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def chart_deployment(name: str, component: str, account: str) -> dict[str, Any]:
    """A Deployment as the chart 1.13.27 renders it (metadata labels and the pod spec's account)."""
    labels = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster", "component": component}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"serviceAccountName": account, "automountServiceAccountToken": True, "containers": [{"name": "c", "image": "i"}]},
            },
        },
    }


def test_post_renderer_puts_webserver_and_code_server_on_their_accounts():
    rendered = post_render(
        [
            chart_deployment("dagster-webserver", "dagster-webserver", ACCOUNTS["daemon"]),
            chart_deployment("dagster-daemon", "dagster-daemon", ACCOUNTS["daemon"]),
            chart_deployment("dagster-dagster-user-deployments-ecosystem-assets", "user-deployments", ACCOUNTS["runs"]),
        ]
    )
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in rendered}
    assert pods["dagster-webserver"]["serviceAccountName"] == ACCOUNTS["webserver"]
    assert pods["dagster-daemon"]["serviceAccountName"] == ACCOUNTS["daemon"]  # untouched
    code_server = pods["dagster-dagster-user-deployments-ecosystem-assets"]
    assert code_server["serviceAccountName"] == ACCOUNTS["code server"] and code_server["automountServiceAccountToken"] is False
    plugin = yaml.safe_load((POST_RENDER / "plugin.yaml").read_text())  # Helm 4 packaging of the same script
    assert plugin["type"] == "postrenderer/v1" and plugin["runtimeConfig"]["platformCommand"][0]["command"].endswith("/post-render.sh")


# --- secrets: application users, External Secrets ----------------------------------------------


def test_no_workload_reads_the_master_secret():
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml"))
    assert "db_master_secret_arn" not in text and "<DB_MASTER" not in text
    assert "master" not in (K8S / "external-secrets.yaml").read_text().split("apiVersion", 1)[1]
    assert values()["postgresql"]["postgresqlUsername"] == "dagster"  # the application's role
    infra_env = parsed()["output"]["app_environment"]["value"]
    assert infra_env["DAGSTER_PG_USERNAME"] == '${local.db_app_users["dagster"].username}'


def test_external_secrets_make_exactly_the_database_and_feature_store_secrets():
    objects = docs(K8S / "external-secrets.yaml")
    (store,) = [d for d in objects if d["kind"] == "SecretStore"]  # namespaced: not a ClusterSecretStore
    assert store["apiVersion"] == "external-secrets.io/v1" and store["metadata"]["namespace"] == NAMESPACE
    assert store["spec"]["provider"]["aws"]["service"] == "SecretsManager" and "auth" not in store["spec"]["provider"]["aws"]
    externals = [d for d in objects if d["kind"] == "ExternalSecret"]
    assert all(d["apiVersion"] == "external-secrets.io/v1" for d in objects)
    made = {e["spec"]["target"]["name"]: e for e in externals}
    assert set(made) == {"dagster-postgresql-secret", "fraud-db", "mlflow-db", "mlflow-auth", "fraud-feature-store"}
    example = {d["metadata"]["name"]: d["stringData"] for d in docs(K8S / "secrets.example.yaml")}
    for name, external in made.items():
        assert external["spec"]["secretStoreRef"] == {"kind": "SecretStore", "name": store["metadata"]["name"]}
        assert external["spec"]["refreshInterval"]
        template = external["spec"]["target"].get("template", {}).get("data")
        keys = set(template) if template else {d["secretKey"] for d in external["spec"]["data"]}
        assert keys == set(example[name]), name  # the keys the workloads read
        remote = [r["remoteRef"]["key"] for r in external["spec"].get("data", [])]
        remote += [r["extract"]["key"] for r in external["spec"].get("dataFrom", [])]
        assert remote and all(
            re.fullmatch(r"<(DB_(DAGSTER|MLFLOW|FRAUD)|MLFLOW_SERVER|FEATURE_STORE_AUTH)_SECRET_ARN>", k) for k in remote
        ), name


# --- TLS to Postgres ---------------------------------------------------------------------------


def postgres_uris() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        # To the end of the line or the quote: a template's URI has spaces inside {{ }}.
        for uri in re.findall(r"postgresql[+\w]*://(?=\S)[^\n\"']+", path.read_text()):
            found.append((path.name, uri))
    return found


def test_every_postgres_connection_verifies_the_server_with_the_rds_ca():
    from urllib.parse import parse_qs, urlsplit

    uris = postgres_uris()
    # fraud store, MLflow backend and auth: in secrets.example.yaml and in external-secrets.yaml.
    assert {name for name, _ in uris} >= {"secrets.example.yaml", "external-secrets.yaml"} and len(uris) >= 6
    for name, uri in uris:
        query = parse_qs(urlsplit(uri).query)
        assert query.get("sslmode") == ["verify-full"] and query.get("sslrootcert") == [CA_FILE], (name, uri)
    expected = {"sslmode": "verify-full", "sslrootcert": CA_FILE}
    assert values()["postgresql"]["postgresqlParams"] == expected
    assert instance()["storage"]["postgres"]["postgres_db"]["params"] == expected
    assert "sslmode=require" not in "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml"))


def mounts_ca(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> bool:
    names = {v["name"] for v in volumes if v.get("configMap", {}).get("name") == CA_CONFIG_MAP}
    return any(m["name"] in names and m["mountPath"] == CA_DIR for m in mounts)


def test_the_ca_bundle_is_mounted_wherever_postgres_is_used():
    v = values()
    assert mounts_ca(v["dagsterWebserver"]["volumes"], v["dagsterWebserver"]["volumeMounts"])  # and the migrate Job
    assert mounts_ca(v["dagsterDaemon"]["volumes"], v["dagsterDaemon"]["volumeMounts"])
    assert mounts_ca(user_deployment()["volumes"], user_deployment()["volumeMounts"])  # code server and its runs
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    assert mounts_ca(launcher["volumes"], launcher["volumeMounts"])
    config = instance()["run_launcher"]["config"]
    assert mounts_ca(config["volumes"], config["volume_mounts"])
    for deployment in (d for d in applied() if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            uses_postgres = {"FRAUD_DB_URL", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_CONFIG_PATH"} & set(env)
            if uses_postgres:
                assert mounts_ca(spec["volumes"], container.get("volumeMounts", [])), (deployment["metadata"]["name"], container["name"])


# --- run pods, migrations, retention, images ---------------------------------------------------


def test_run_pods_are_not_evicted_mid_run():
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["runK8sConfig"]["podTemplateSpecMetadata"]["annotations"] == DO_NOT_EVICT
    assert instance()["run_launcher"]["config"]["run_k8s_config"]["pod_template_spec_metadata"]["annotations"] == DO_NOT_EVICT
    from ecosystem_assets.vision.pytorchjob import DO_NOT_EVICT as training_annotations

    assert dict(training_annotations) == DO_NOT_EVICT


def test_run_pod_metadata_reaches_the_job_dagster_k8s_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Through dagster-k8s's own code: the launcher of dagster.k8s.yaml, a run, the Job it builds."""
    from ecosystem_assets_tests.deploy import test_deploy

    for name, value in {
        "DAGSTER_PG_HOST": "db",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "x",
        "DAGSTER_PG_DB": "dagster",
    }.items():
        monkeypatch.setenv(name, value)
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    launcher = test_deploy.k8s_run_launcher(tmp_path)  # deploy/dagster.k8s.yaml's, as instance() reads it
    run = DagsterRun(job_name="sales_job", run_id="2" * 8 + "-2222-2222-2222-" + "2" * 12)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image="repo:tag-cpu", run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-test",
        user_defined_k8s_config=context.run_k8s_config,
        labels={},
        env_vars=[],
    )
    template = job.spec.template
    assert DO_NOT_EVICT.items() <= (template.metadata.annotations or {}).items()
    assert template.spec.service_account_name == ACCOUNTS["runs"]
    (container,) = template.spec.containers
    assert any(m.mount_path == CA_DIR for m in container.volume_mounts)
    assert test_deploy.NAMESPACE == NAMESPACE


def test_migrations_and_tick_retention_are_on():
    v = values()
    assert v["migrate"] == {"enabled": True}
    retention = v["retention"]
    assert retention["enabled"] is True
    assert retention["schedule"]["purgeAfterDays"] > 0
    assert all(days > 0 for days in retention["sensor"]["purgeAfterDays"].values())
    # The instance without the chart purges the same.
    purge = instance()["retention"]
    assert purge["schedule"]["purge_after_days"] == retention["schedule"]["purgeAfterDays"]
    assert purge["sensor"]["purge_after_days"] == retention["sensor"]["purgeAfterDays"]


def test_ordinary_runs_use_the_cpu_image_and_only_training_pods_the_cuda_one():
    ud = user_deployment()
    assert ud["image"]["tag"].endswith("-cpu")  # the code server's image is every run's (DAGSTER_CURRENT_IMAGE)
    assert "image" not in values()["runLauncher"]["config"]["k8sRunLauncher"]  # no launcher-wide image overrides it
    cuda = [(k, v) for k, v in ud["env"].items() if "cuda" in str(v)]
    assert cuda == [("TRAINING_IMAGE", "<ECR_REPOSITORY_URL>:<IMAGE_TAG>-cuda")]
