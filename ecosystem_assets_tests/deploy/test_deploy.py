"""Static review of deploy/: what a reviewer checks before anything reaches a cluster.

No Docker engine, cluster or helm binary is needed; each check uses the project's pinned
libraries as the authority:

- every YAML file parses; the Kubernetes manifests deserialize into the official `kubernetes`
  client models with no unknown field at any depth (a typo fails: see the negative cases);
- pods run non-root with requests and limits; Services select real pods and named ports;
- the fraud service scales out: no fixed replica count under its HorizontalPodAutoscaler (at least
  2), RollingUpdate that never drops below capacity, readiness on /readyz, a preStop pause, spread
  over zones and nodes, a PodDisruptionBudget for exactly its pods, and a NetworkPolicy whose rules
  are evaluated on example peers (port 8000 in; DNS, MLflow, Postgres and Redis out, nothing else);
  its shared feature state comes from a Secret with a TLS rediss:// URL;
- `mlflow server` is given only options the pinned mlflow has;
- every environment variable set anywhere is one that `ecosystem_assets/settings.py` reads or a
  documented Dagster / MLflow / AWS / library one;
- `deploy/dagster.k8s.yaml` passes Dagster's own instance schema and each configured class's
  config schema (`dagster._config.process_config`, private API, tests only), env placeholders
  resolved from dummy values (no Postgres needed);
- `deploy/helm/values.yaml` validates against the chart's values schema, vendored in
  data/dagster-chart-values.schema.json (source and version caveat: data/README.md), and agrees
  with dagster.k8s.yaml;
- vision_training_job's run, as the deployed code location tags it (TRAINING_BACKEND=pytorchjob),
  fed through dagster-k8s's own K8sRunLauncher code, is an ordinary CPU pod (its PyTorchJob's pods
  get the GPUs: test_pytorchjob_crd.py); the GPU run tags of TRAINING_BACKEND=local produce a run
  Job on the GPU node group with the toleration and an nvidia.com/gpu limit;
- every <PLACEHOLDER> is documented in deploy/README.md (the Dockerfile and its locks: test_image.py).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from ecosystem_assets_tests import tools

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VALUES = DEPLOY / "helm" / "values.yaml"
LOCAL_INSTANCE = DEPLOY / "dagster.local.yaml"
INSTANCE = DEPLOY / "dagster.k8s.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SCHEMA = Path(__file__).parent / "data" / "dagster-chart-values.schema.json"
MANIFESTS = ("namespace.yaml", "mlflow.yaml", "fraud-service.yaml", "training-rbac.yaml", "dagster-rbac.yaml", "secrets.example.yaml")
EXTERNAL_SECRETS = ("external-secrets.yaml",)  # External Secrets Operator kinds (test_k8s_security.py)
MONITORING = ("fraud-service-monitor.yaml", "prometheus-rules.yaml")  # Prometheus Operator kinds (test_prometheus_rules.py)
NAMESPACE = "ecosystem"
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest_objects() -> list[dict[str, Any]]:
    return [d for name in MANIFESTS for d in docs(K8S / name)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifest_objects() if d["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == name]
    return found


def service_address(name: str) -> str:
    """``host:port`` of the Service ``name`` inside the cluster, from its manifest (its one port)."""
    (service,) = [d for d in by_kind("Service") if d["metadata"]["name"] == name]
    (port,) = service["spec"]["ports"]
    return f"{name}.{service['metadata']['namespace']}:{port['port']}"


def network_policy(name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind("NetworkPolicy") if d["metadata"]["name"] == name]
    return found


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def user_deployment() -> dict[str, Any]:
    (found,) = values()["dagster-user-deployments"]["deployments"]
    return found


# --- Kubernetes models: strict, recursive ------------------------------------------------------


def k8s_field_errors(value: Any, type_name: str, path: str) -> list[str]:
    """Every key of ``value`` (camelCase, as in a manifest) must be a field of the client model
    ``type_name``, recursively, and scalars must have the field's type."""
    import kubernetes.client as k8s

    if value is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value) for e in k8s_field_errors(v, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        inner = re.match(r"dict[\(\[][^,]*,\s*(.*)[\)\]]$", type_name).group(1)
        return [e for k, v in value.items() for e in k8s_field_errors(v, inner, f"{path}.{k}")]
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}
    if type_name in scalars:
        ok = isinstance(value, scalars[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {type_name}"]
    if type_name == "object":  # IntOrString, Quantity
        return [] if isinstance(value, (str, int, float)) else [f"{path}: {value!r} is not a scalar"]
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping"]
    camel_to_snake = {camel: snake for snake, camel in model.attribute_map.items()}
    errors = []
    for key, sub in value.items():
        if key not in camel_to_snake:
            errors.append(f"{path}.{key}: not a field of {type_name}")
        else:
            errors += k8s_field_errors(sub, model.openapi_types[camel_to_snake[key]], f"{path}.{key}")
    return errors


KIND_MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


def manifest_errors(doc: dict[str, Any]) -> list[str]:
    model = KIND_MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        return [f"unexpected apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}"]
    return k8s_field_errors(doc, model, doc["kind"])


def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} >= {"values.yaml", "dagster.k8s.yaml", "dagster.local.yaml", "kustomization.yaml", *MANIFESTS}
    for path in files:
        assert docs(path), f"{path} is empty"


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_are_valid_kubernetes_objects(name: str):
    import kubernetes.client as k8s

    for doc in docs(K8S / name):
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or doc["kind"] == "Namespace"
        assert manifest_errors(doc) == [], name
        # And the client's own deserializer builds it (required fields present, enums valid).
        response = type("Response", (), {"data": json.dumps(doc)})()
        model = k8s.ApiClient().deserialize(response, KIND_MODELS[(doc["apiVersion"], doc["kind"])])
        assert model.metadata.name == doc["metadata"]["name"]


def test_strict_check_catches_typos():
    doc = copy.deepcopy(deployment("fraud-service"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # top-level typo
    container["ports"][0]["containerport"] = container["ports"][0].pop("containerPort")  # nested typo
    doc["spec"]["replicas"] = "1"  # wrong type
    errors = manifest_errors(doc)
    assert any("readinesProbe: not a field of V1Container" in e for e in errors)
    assert any("containerport: not a field of V1ContainerPort" in e for e in errors)
    assert any("replicas: '1' is not int" in e for e in errors)
    # The same for the policy kinds.
    pdb, hpa = (copy.deepcopy(one_of_kind(kind)) for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"))
    policy = copy.deepcopy(network_policy("fraud-service"))
    pdb["spec"]["minAvailible"] = pdb["spec"].pop("minAvailable")
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    target["averageUtilisation"] = target.pop("averageUtilization")
    policy["spec"]["ingress"][0]["form"] = policy["spec"]["ingress"][0].pop("from")
    assert any("minAvailible: not a field of V1PodDisruptionBudgetSpec" in e for e in manifest_errors(pdb))
    assert any("averageUtilisation: not a field of V2MetricTarget" in e for e in manifest_errors(hpa))
    assert any("form: not a field of V1NetworkPolicyIngressRule" in e for e in manifest_errors(policy))


# --- pods: non-root, resources, probes ---------------------------------------------------------


def assert_pod_hardened(pod_security: dict, container_security: dict, resources: dict, where: str):
    assert pod_security.get("runAsNonRoot") is True, where
    assert pod_security.get("runAsUser", 0) != 0, where
    assert container_security.get("allowPrivilegeEscalation") is False, where
    assert container_security.get("capabilities", {}).get("drop") == ["ALL"], where
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


def test_manifest_pods_run_as_non_root_with_resources():
    for dep in by_kind("Deployment"):
        spec = dep["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert_pod_hardened(spec["securityContext"], container["securityContext"], container["resources"], dep["metadata"]["name"])
            assert container.get("readinessProbe") and container.get("livenessProbe"), dep["metadata"]["name"]


def test_code_server_and_runs_run_as_non_root_with_resources():
    ud = user_deployment()
    assert_pod_hardened(ud["podSecurityContext"], ud["securityContext"], ud["resources"], "code server")
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert_pod_hardened(
        launcher["runK8sConfig"]["podSpecConfig"]["securityContext"], launcher["securityContext"], ud["resources"], "run pods"
    )
    daemon, webserver = values()["dagsterDaemon"], values()["dagsterWebserver"]
    for part in (daemon, webserver):
        assert {"cpu", "memory"} <= set(part["resources"]["limits"])


def one_of_kind(kind: str) -> dict[str, Any]:
    (found,) = by_kind(kind)
    return found


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) applied to ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def pod_labels(name: str) -> dict[str, str]:
    return deployment(name)["spec"]["template"]["metadata"]["labels"]


def autoscaler_of(name: str) -> dict[str, Any]:
    (hpa,) = [h for h in by_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
    return hpa


def test_fraud_service_pod_serves_with_readyz_and_shared_state():
    dep = deployment("fraud-service")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["ecosystem-assets", "serve", "--host", "0.0.0.0", "--port", "8000"]
    # Readiness: a real scoring through the champion and both stores answering.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Start-up and liveness ask the event loop only: a replica waiting for a champion or for Redis
    # is alive and must not be restarted. No warm-up any more, so a short start-up budget.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/openapi.json", "port": "http"}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] <= 180
    env = {e["name"]: e for e in container["env"]}
    assert env["FRAUD_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "fraud-db", "key": "FRAUD_DB_URL"}
    assert env["FRAUD_FEATURE_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fraud-feature-store",
        "key": "FRAUD_FEATURE_STORE_URL",
    }
    assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://{service_address('mlflow')}"
    # The hardening of the pod is unchanged.
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert spec["serviceAccountName"] == "fraud-service"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "fraud-service"]
    assert service["spec"]["type"] == "ClusterIP"


def test_feature_store_url_is_tls_with_auth():
    """The Secret's shape, read by the client library the service uses (redis-py)."""
    from redis.connection import SSLConnection, parse_url

    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind("Secret")}
    url = secrets["fraud-feature-store"]["FRAUD_FEATURE_STORE_URL"]
    parsed = parse_url(PLACEHOLDER.sub("features.example.internal", url))
    assert parsed["connection_class"] is SSLConnection  # rediss://: ElastiCache requires TLS
    assert parsed["password"] and parsed["port"] == 6379 and parsed["db"] == 0
    assert PLACEHOLDER.findall(url) == ["FEATURE_STORE_ADDRESS"]


def test_fraud_service_scales_out_and_rolls_out_without_losing_capacity():
    dep = deployment("fraud-service")
    # The autoscaler owns the count: a `replicas:` here would reset it on every `kubectl apply`.
    assert "replicas" not in dep["spec"]
    hpa = autoscaler_of("fraud-service")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud-service"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization" and 0 < metric["resource"]["target"]["averageUtilization"] < 100
    spec = dep["spec"]["template"]["spec"]
    assert all("cpu" in c["resources"]["requests"] for c in spec["containers"])  # utilization is of the request
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # A new pod first, an old one only when the new one is ready.
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Endpoints go before uvicorn stops; the grace period leaves time to drain after the pause.
    (container,) = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep" and len(command) == 2
    assert spec["terminationGracePeriodSeconds"] >= int(command[1]) + 15
    # /bin/sleep exists in the image: Debian's coreutils, under the python slim base.
    assert re.search(r"^FROM python:3\.11-slim(-bookworm)?@sha256:[0-9a-f]{64} AS base$", DOCKERFILE.read_text(), re.M)


def test_fraud_service_spreads_over_zones_and_nodes():
    labels = pod_labels("fraud-service")
    constraints = deployment("fraud-service")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in constraints:
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] in ("ScheduleAnyway", "DoNotSchedule")
        assert selects(constraint["labelSelector"], labels)
        assert not selects(constraint["labelSelector"], pod_labels("mlflow"))
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]  # each rollout's pods spread too


def test_disruption_budget_covers_exactly_the_fraud_service():
    pdb = one_of_kind("PodDisruptionBudget")
    selector = pdb["spec"]["selector"]
    assert [d["metadata"]["name"] for d in by_kind("Deployment") if selects(selector, pod_labels(d["metadata"]["name"]))] == [
        "fraud-service"
    ]
    assert selector == deployment("fraud-service")["spec"]["selector"]
    min_available = pdb["spec"]["minAvailable"]
    assert isinstance(min_available, int) and 1 <= min_available < autoscaler_of("fraud-service")["spec"]["minReplicas"]
    assert "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # an outage never blocks a drain


# --- the NetworkPolicy, evaluated --------------------------------------------------------------

VPC_CIDR = "10.40.0.0/16"  # infra/variables.tf's default vpc_cidr, for <VPC_CIDR>


def peer_matches(peer: dict[str, Any], policy_namespace: str, other: dict[str, Any]) -> bool:
    """Whether a NetworkPolicyPeer selects ``other`` ({"namespace": labels, "pod": labels} or {"ip": address})."""
    if "ipBlock" in peer:
        if "ip" not in other:
            return False
        address = ipaddress.ip_address(other["ip"])
        block = PLACEHOLDER.sub(VPC_CIDR, peer["ipBlock"]["cidr"])
        excluded = any(address in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []))
        return address in ipaddress.ip_network(block) and not excluded
    if "pod" not in other:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], other["namespace"])
    else:
        namespace_ok = other["namespace"].get("kubernetes.io/metadata.name") == policy_namespace
    return namespace_ok and selects(peer.get("podSelector", {}), other["pod"])


def allowed(policy: dict[str, Any], direction: str, other: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
    """Whether ``policy`` lets the selected pods talk with ``other`` on ``port`` ("ingress": from it)."""
    spec = policy["spec"]
    assert direction.capitalize() in spec["policyTypes"]
    peers_key = "from" if direction == "ingress" else "to"
    for rule in spec.get(direction, []):  # an empty or missing list of peers or ports matches all
        peer_ok = not rule.get(peers_key) or any(peer_matches(p, policy["metadata"]["namespace"], other) for p in rule[peers_key])
        port_ok = not rule.get("ports") or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in rule["ports"])
        if peer_ok and port_ok:
            return True
    return False


def namespace(name: str, **labels: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **labels}


def test_network_policy_admits_only_the_service_port_from_known_callers():
    policy = network_policy("fraud-service")
    assert policy["spec"]["podSelector"] == deployment("fraud-service")["spec"]["selector"]
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    # Every ingress rule is port 8000/TCP: the container port behind the Service.
    container_ports = {
        p["name"]: p["containerPort"] for p in deployment("fraud-service")["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "fraud-service"]
    assert {container_ports[p["targetPort"]] for p in service["spec"]["ports"]} == {8000}
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"protocol": "TCP", "port": 8000}]]

    dagster_run = {"namespace": namespace(NAMESPACE), "pod": {"dagster/job": "fraud_monitoring_job"}}
    gateway = {"namespace": namespace("payments", **{"ecosystem-assets/fraud-client": "true"}), "pod": {"app": "gateway"}}
    prometheus = {"namespace": namespace("monitoring"), "pod": {"app.kubernetes.io/name": "prometheus"}}
    assert allowed(policy, "ingress", dagster_run, 8000)
    assert allowed(policy, "ingress", gateway, 8000)
    assert allowed(policy, "ingress", prometheus, 8000)
    assert not allowed(policy, "ingress", dagster_run, 9000)
    assert not allowed(policy, "ingress", {"namespace": namespace("payments"), "pod": {"app": "gateway"}}, 8000)
    assert not allowed(policy, "ingress", {"namespace": namespace("default"), "pod": {}}, 8000)
    assert not allowed(policy, "ingress", {"ip": "10.40.20.7"}, 8000)


def test_network_policy_lets_the_service_reach_dns_mlflow_postgres_and_redis_only():
    policy = network_policy("fraud-service")
    egress = policy["spec"]["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in egress)  # no allow-all rule
    ports = {(p.get("protocol", "TCP"), p["port"]) for rule in egress for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5000), ("TCP", 5432), ("TCP", 6379)}
    blocks = [p["ipBlock"]["cidr"] for rule in egress for p in rule["to"] if "ipBlock" in p]
    assert blocks and all(PLACEHOLDER.fullmatch(b) for b in blocks)  # the VPC (Terraform output), never 0.0.0.0/0

    coredns = {"namespace": namespace("kube-system"), "pod": {"k8s-app": "kube-dns"}}
    mlflow = {"namespace": namespace(NAMESPACE), "pod": pod_labels("mlflow")}
    (mlflow_port,) = deployment("mlflow")["spec"]["template"]["spec"]["containers"][0]["ports"]
    postgres, redis = {"ip": "10.40.17.4"}, {"ip": "10.40.33.9"}  # private subnets (cidrsubnet(vpc, 4, 1..))
    assert allowed(policy, "egress", coredns, 53, "UDP") and allowed(policy, "egress", coredns, 53, "TCP")
    assert allowed(policy, "egress", mlflow, mlflow_port["containerPort"])
    assert allowed(policy, "egress", postgres, 5432) and allowed(policy, "egress", redis, 6379)
    # Nothing else: other pods, the internet (no S3: models come through MLflow's artifact proxy).
    assert not allowed(policy, "egress", {"namespace": namespace("kube-system"), "pod": {"k8s-app": "other"}}, 53, "UDP")
    assert not allowed(policy, "egress", {"namespace": namespace(NAMESPACE), "pod": pod_labels("fraud-service")}, 5000)
    assert not allowed(policy, "egress", {"ip": "52.216.0.10"}, 443)
    assert not allowed(policy, "egress", {"ip": "8.8.8.8"}, 6379)
    assert not allowed(policy, "egress", postgres, 22)
    # And the ports are those of the URLs the service is given.
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind("Secret")}
    assert ":5432/" in secrets["fraud-db"]["FRAUD_DB_URL"] and ":6379/" in secrets["fraud-feature-store"]["FRAUD_FEATURE_STORE_URL"]
    assert "--serve-artifacts" in deployment("mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_mlflow_admits_this_namespace_only_and_reaches_dns_postgres_and_https_only():
    policy = network_policy("mlflow")
    assert policy["spec"]["podSelector"] == deployment("mlflow")["spec"]["selector"]
    (mlflow_port,) = deployment("mlflow")["spec"]["template"]["spec"]["containers"][0]["ports"]
    port = mlflow_port["containerPort"]
    dagster_run = {"namespace": namespace(NAMESPACE), "pod": {"dagster/job": "fraud_retrain_job"}}
    fraud_service = {"namespace": namespace(NAMESPACE), "pod": pod_labels("fraud-service")}
    assert allowed(policy, "ingress", dagster_run, port) and allowed(policy, "ingress", fraud_service, port)
    assert not allowed(policy, "ingress", dagster_run, 5432)
    assert not allowed(
        policy, "ingress", {"namespace": namespace("payments", **{"ecosystem-assets/fraud-client": "true"}), "pod": {}}, port
    )
    assert not allowed(policy, "ingress", {"ip": "10.40.20.7"}, port)

    coredns = {"namespace": namespace("kube-system"), "pod": {"k8s-app": "kube-dns"}}
    assert allowed(policy, "egress", coredns, 53, "UDP") and allowed(policy, "egress", {"ip": "10.40.17.4"}, 5432)
    assert allowed(policy, "egress", {"ip": "52.216.0.10"}, 443)  # S3 (the artifact store) and STS (IRSA)
    assert not allowed(policy, "egress", {"ip": "52.216.0.10"}, 5432)  # Postgres only inside the VPC
    assert not allowed(policy, "egress", {"ip": "10.40.33.9"}, 6379)  # not the feature store
    assert not allowed(policy, "egress", {"ip": "8.8.8.8"}, 80)


def test_the_mlflow_users_job_reaches_mlflow_only_and_admits_nothing():
    policy = network_policy("mlflow-users")
    (job,) = [j for j in by_kind("Job") if j["metadata"]["name"] == "mlflow-users"]
    assert selects(policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    assert "Ingress" in policy["spec"]["policyTypes"] and not policy["spec"].get("ingress")  # no rule: nothing admitted
    mlflow = {"namespace": namespace(NAMESPACE), "pod": pod_labels("mlflow")}
    assert allowed(policy, "egress", mlflow, 5000)
    assert allowed(policy, "egress", {"namespace": namespace("kube-system"), "pod": {"k8s-app": "kube-dns"}}, 53, "UDP")
    assert not allowed(policy, "egress", {"ip": "10.40.17.4"}, 5432)
    assert not allowed(policy, "egress", {"ip": "52.216.0.10"}, 443)


def test_services_select_pods_and_named_ports():
    for svc in by_kind("Service"):
        selector = svc["spec"]["selector"]
        pods = [d for d in by_kind("Deployment") if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, svc["metadata"]["name"]
        assert pods[0]["spec"]["selector"]["matchLabels"].items() <= pods[0]["spec"]["template"]["metadata"]["labels"].items()
        port_names = {p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_service_accounts_carry_irsa_roles():
    """Each account that needs AWS names its IRSA role (a Terraform output); those that need none
    have no annotation. Who may do what: test_k8s_security.py."""
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind("ServiceAccount")}
    # dagster-daemon and dagster-run come from the Helm chart (values.yaml).
    assert set(accounts) == {"mlflow", "fraud-service", "dagster-webserver", "dagster-code-server", "dagster-training"}
    with_role = {name for name, sa in accounts.items() if "eks.amazonaws.com/role-arn" in sa["metadata"].get("annotations", {})}
    assert with_role == {"mlflow", "fraud-service", "dagster-webserver", "dagster-training"}
    for name in with_role:
        assert PLACEHOLDER.fullmatch(accounts[name]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]), name
    for name in ("mlflow", "fraud-service"):
        assert deployment(name)["spec"]["template"]["spec"]["serviceAccountName"] == name
    runs = values()["dagster-user-deployments"]["serviceAccount"]
    assert runs["name"] == "dagster-run" and PLACEHOLDER.fullmatch(runs["annotations"]["eks.amazonaws.com/role-arn"])
    assert values()["serviceAccount"]["annotations"] == {}  # the daemon: no AWS role


def test_mlflow_server_options_exist_in_the_pinned_mlflow():
    from mlflow.cli import server

    (container,) = deployment("mlflow")["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["mlflow", "server"]
    known = {opt for param in server.params for opt in param.opts + param.secondary_opts}
    given = [arg.split("=", 1)[0] for arg in container["args"][2:] if arg.startswith("-")]
    assert set(given) <= known, set(given) - known
    assert "--serve-artifacts" in given
    assert "--artifacts-destination=s3://<ARTIFACT_BUCKET>/mlflow-artifacts" in container["args"]
    allowed = next(a for a in container["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert service_address("mlflow") in allowed  # the Host header of MLFLOW_TRACKING_URI
    backend = next(e for e in container["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert backend["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    envvars = {param.envvar for param in server.params if param.envvar}
    assert "MLFLOW_BACKEND_STORE_URI" in envvars  # the option reads it when the flag is absent
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_mlflow_requires_auth_and_the_fraud_service_only_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """basic-auth with NO_PERMISSIONS by default; the service logs in as the reader that the
    mlflow-users Job makes, Dagster as the writer (a real server run: test_model_safety.py)."""
    from importlib.metadata import entry_points

    from mlflow.server.auth.config import read_auth_config

    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind("Secret")}
    mlflow_pod = deployment("mlflow")["spec"]["template"]["spec"]
    (container,) = mlflow_pod["containers"]
    assert "--app-name=basic-auth" in container["args"]
    assert "basic-auth" in {e.name for e in entry_points(group="mlflow.app")}
    env = {e["name"]: e for e in container["env"]}
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in mlflow_pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert volume["secretName"] == "mlflow-auth" and {"key": "basic_auth.ini", "path": config_path.name} in volume["items"]
    (tmp_path / config_path.name).write_text(secrets["mlflow-auth"]["basic_auth.ini"])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / config_path.name))
    auth = read_auth_config()  # MLflow's own reader of the file
    assert auth.default_permission == "NO_PERMISSIONS" and auth.database_uri.startswith("postgresql+psycopg2://")
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-auth", "key": name}

    (service,) = deployment("fraud-service")["spec"]["template"]["spec"]["containers"]
    service_env = {e["name"]: e for e in service["env"]}
    (job,) = [j for j in by_kind("Job") if j["metadata"]["name"] == "mlflow-users"]
    job_pod = job["spec"]["template"]["spec"]
    (users,) = job_pod["containers"]
    assert users["args"] == ["python", "-m", "ecosystem_assets.mlflow_users"]
    assert_pod_hardened(job_pod["securityContext"], users["securityContext"], users["resources"], "mlflow-users")
    job_env = {e["name"]: e for e in users["env"]}
    source = (ROOT / "ecosystem_assets" / "mlflow_users.py").read_text()
    assert set(re.findall(r'env\["([A-Z_]+)"\]', source)) == set(job_env) - {"MLFLOW_DISABLE_TELEMETRY", "HOME"}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        reader = {"name": "mlflow-reader", "key": key}
        assert service_env[key]["valueFrom"]["secretKeyRef"] == reader  # the service is the reader
        assert job_env[key.replace("TRACKING", "READER")]["valueFrom"]["secretKeyRef"] == reader
        writer = job_env[key.replace("TRACKING", "WRITER")]["valueFrom"]["secretKeyRef"]
        assert writer == {"name": "ecosystem-app-secrets", "key": key} and key in secrets["ecosystem-app-secrets"]
    assert {"name": "ecosystem-app-secrets"} in user_deployment()["envSecrets"]  # Dagster logs in as the writer
    assert job_env["MLFLOW_TRACKING_URI"]["value"] == service_env["MLFLOW_TRACKING_URI"]["value"]


# --- environment variables ---------------------------------------------------------------------


def settings_names() -> set[str]:
    """Every variable `Settings` reads (each field names its variable)."""
    from ecosystem_assets.settings import Settings

    return {f.validation_alias for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)}


def documented_names() -> set[str]:
    import mlflow.environment_variables as mlflow_env
    from mlflow.cli import server

    mlflow_names = {n for n in dir(mlflow_env) if n.startswith("MLFLOW_")}
    mlflow_names |= {p.envvar for p in server.params if isinstance(p.envvar, str)}
    return mlflow_names | {
        # Dagster: DAGSTER_HOME, and the Postgres connection that deploy/dagster.k8s.yaml reads
        # (DAGSTER_PG_PASSWORD is also what the Helm chart sets from its Postgres secret).
        "DAGSTER_HOME",
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",  # AWS SDKs (boto3)
        "DO_NOT_TRACK",  # Evidently's telemetry switch (DESIGN.md)
        "GX_ANALYTICS_ENABLED",  # Great Expectations' telemetry switch
        "HOME",  # POSIX; points at the writable /tmp where the root filesystem is read-only
        # The fraud service's shared feature state: `serve` reads it with settings.secret (the URL
        # holds the AUTH token), not as a Settings field.
        "FRAUD_FEATURE_STORE_URL",
    }


def env_names_used() -> dict[str, str]:
    """Every environment variable name set by the manifests, the Helm values and the instance."""
    used: dict[str, str] = {}
    secrets = {s["metadata"]["name"]: s for s in by_kind("Secret")}
    for dep in by_kind("Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            used |= {e["name"]: dep["metadata"]["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    used |= dict.fromkeys(secrets[source["secretRef"]["name"]]["stringData"], dep["metadata"]["name"])
    ud = user_deployment()
    used |= dict.fromkeys(ud["env"], "helm env")
    for ref in ud["envSecrets"]:
        used |= dict.fromkeys(secrets[ref["name"]]["stringData"], f"helm envSecrets {ref['name']}")

    def env_refs(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                used[node["env"]] = "dagster.k8s.yaml"
            for v in node.values():
                env_refs(v)
        elif isinstance(node, list):
            for v in node:
                env_refs(v)

    instance = yaml.safe_load(INSTANCE.read_text())
    env_refs(instance)
    used |= dict.fromkeys(instance["run_launcher"]["config"]["env_vars"], "dagster.k8s.yaml env_vars")
    for name in instance["run_launcher"]["config"]["env_secrets"]:
        used |= dict.fromkeys(secrets[name]["stringData"], f"dagster.k8s.yaml env_secrets {name}")
    return used


def test_every_env_var_is_read_by_settings_or_documented():
    names = settings_names()
    assert {"ECOSYSTEM_STORAGE_URL", "MLFLOW_TRACKING_URI", "FRAUD_DB_URL", "SALES_API_TOKEN"} <= names
    allowed = names | documented_names()
    used = env_names_used()
    unknown = {name: where for name, where in used.items() if name not in allowed}
    assert unknown == {}
    # The negative case: a near miss is not let through.
    assert "MLFLOW_TRACKING_URL" not in allowed and "FRAUD_DB_URI" not in allowed


def test_secrets_are_placeholders_and_referenced_ones_exist():
    secrets = {s["metadata"]["name"]: s for s in by_kind("Secret")}
    for secret in secrets.values():
        for key, value in secret["stringData"].items():
            assert "REPLACE_WITH_" in value, f"{secret['metadata']['name']}.{key} looks like a real value"
    referenced = {ref["name"] for ref in user_deployment()["envSecrets"]}
    referenced |= {values()["global"]["postgresqlSecretName"]}
    referenced |= set(yaml.safe_load(INSTANCE.read_text())["run_launcher"]["config"]["env_secrets"])
    for dep in by_kind("Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            referenced |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e}
    assert referenced == set(secrets)
    assert "postgresql-password" in secrets[values()["global"]["postgresqlSecretName"]]["stringData"]


# --- the Dagster instance ----------------------------------------------------------------------


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DAGSTER_PG_HOST": "db.invalid",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "not-a-password",
        "DAGSTER_PG_DB": "dagster",
    }.items():
        monkeypatch.setenv(name, value)


def instance_errors(config: dict[str, Any], home: Path) -> list[str]:
    """Dagster's checks of a dagster.yaml: the instance schema, then each configured class's schema."""
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config
    from dagster._serdes.config_class import class_from_code_pointer

    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    try:
        processed, _ = dagster_instance_config(str(home))
    except DagsterInvalidConfigError as exc:
        return [str(exc)]
    errors = []
    result = process_config(pg_config(), processed["storage"]["postgres"])
    errors += [e.message for e in result.errors or []]
    for key in ("run_launcher", "run_coordinator", "compute_logs"):
        klass = class_from_code_pointer(processed[key]["module"], processed[key]["class"])
        result = process_config(klass.config_type(), processed[key].get("config") or {})
        errors += [f"{key}: {e.message}" for e in result.errors or []]
    return errors


def test_instance_config_passes_dagster_schema(tmp_path: Path, pg_env: None):
    from dagster._core.instance.ref import InstanceRef

    config = yaml.safe_load(INSTANCE.read_text())
    assert instance_errors(config, tmp_path / "home") == []
    ref = InstanceRef.from_dir(str(tmp_path / "home"))
    assert ref.storage_data.module_name == "dagster_postgres"  # runs, event log, schedules
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == ("dagster_k8s", "K8sRunLauncher")
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert ref.compute_logs_data.class_name == "S3ComputeLogManager"
    assert config["telemetry"] == {"enabled": False}
    launcher = config["run_launcher"]["config"]
    assert (launcher["job_namespace"], launcher["service_account_name"]) == (NAMESPACE, "dagster-run")
    assert launcher["env_secrets"]


def test_instance_check_catches_typos(tmp_path: Path, pg_env: None):
    config = yaml.safe_load(INSTANCE.read_text())
    config["run_launcher"]["config"]["job_namspace"] = config["run_launcher"]["config"].pop("job_namespace")
    config["run_coordinator"]["config"]["tag_concurrency_limits"][0]["limt"] = 1
    errors = instance_errors(config, tmp_path / "home")
    assert any("job_namspace" in e for e in errors) and any("limt" in e for e in errors)


def test_run_queue_limits_one_gpu_training_one_fraud_retrain_and_one_run_per_partition():
    instance_limits = yaml.safe_load(INSTANCE.read_text())["run_coordinator"]["config"]["tag_concurrency_limits"]
    queued = values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["tagConcurrencyLimits"] == instance_limits
    assert yaml.safe_load(LOCAL_INSTANCE.read_text())["run_queue"]["tag_concurrency_limits"] == instance_limits
    limits = {(limit["key"], str(limit["value"])): limit["limit"] for limit in instance_limits}
    assert limits == {
        ("ecosystem/run-queue", "gpu-training"): 1,
        ("ecosystem/run-queue", "fraud-retrain"): 1,
        ("dagster/partition", "{'applyLimitPerUniqueValue': True}"): 1,
    }
    assert job_tags("vision_training_job")["ecosystem/run-queue"] == "gpu-training"
    assert job_tags("fraud_retrain_job")["ecosystem/run-queue"] == "fraud-retrain"
    assert queued["maxConcurrentRuns"] == yaml.safe_load(INSTANCE.read_text())["run_coordinator"]["config"]["max_concurrent_runs"]


def test_the_laptop_queue_holds_a_second_run_of_a_day_but_not_another_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The instance `make dev` runs on, loaded from deploy/dagster.local.yaml, and Dagster's own
    limit counter (what its queue daemon asks before launching a run)."""
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.sales.schedules import DAILY_JOB
    from ecosystem_assets.settings import Settings

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
    monkeypatch.setenv("ECOSYSTEM_HOME", str(tmp_path / "ecosystem"))
    job = build_definitions(Settings.from_env()).resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        def run_of(day: str) -> Any:  # the tags Dagster gives a run of the day's partition
            return instance.create_run_for_job(job, tags=job.get_tags_for_partition_key(day, None))

        running = run_of("2026-11-26")
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        counter = TagConcurrencyLimitsCounter(limits, [running])
        assert counter.is_blocked(run_of("2026-11-26")) and not counter.is_blocked(run_of("2026-11-27"))


# --- Helm values -------------------------------------------------------------------------------


def chart_schema() -> dict[str, Any]:
    """The vendored chart schema without its references to an external Kubernetes schema site
    (never fetched in tests); those fields are checked against the kubernetes models instead."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not (k == "$ref" and isinstance(v, str) and v.startswith("http"))}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(SCHEMA.read_text()))


def overlay_validator(schema: dict[str, Any]):
    """Helm validates the chart's defaults merged with ours; in a map, a `required` key may come
    from the chart's own values.yaml, so this pass leaves `required` to `list_item_errors`."""
    from jsonschema import Draft202012Validator, validators

    overlay = validators.extend(Draft202012Validator, {"required": lambda *_: iter(())})
    return overlay(schema)


def list_item_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """`required` on: Helm merges maps with the chart's defaults but replaces lists whole, so every
    item of a list we set (a code location, a queue limit, a volume) must carry its required keys
    itself. Each item is validated with the full schema, `required` included."""
    from jsonschema import Draft202012Validator

    if "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        kind = "array" if isinstance(value, list) else "object"
        fitting = [b for b in branches if b.get("type") == kind or ("$ref" in b and kind == "object")]
        return list_item_errors(value, fitting[0], root, path) if fitting else []
    errors: list[str] = []
    if isinstance(value, list) and "items" in schema:
        validator = Draft202012Validator({**schema["items"], "$defs": root["$defs"]})
        for i, item in enumerate(value):
            errors += [f"{path}[{i}]: {e.message}" for e in validator.iter_errors(item)]
            errors += list_item_errors(item, schema["items"], root, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, sub in value.items():
            if key in schema.get("properties", {}):
                errors += list_item_errors(sub, schema["properties"][key], root, f"{path}.{key}")
    return errors


# Keys the chart's templates read (1.13.27) that its pydantic schema does not declare (the top level
# and the subchart's map allow extra keys): templates/role.yaml, rolebinding.yaml (`rbacEnabled`);
# charts/dagster-user-deployments/templates/role.yaml, serviceaccount.yaml and
# helpers/_helpers.tpl (`rbacEnabled`, `serviceAccount`: its name is the runs' account).
UNDECLARED_BUT_READ = {
    "values.rbacEnabled",
    "values.dagster-user-deployments.rbacEnabled",
    "values.dagster-user-deployments.serviceAccount",
}


def unknown_keys(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """Keys the schema does not declare, even where it allows extra keys (the chart ignores them,
    so they are typos in practice)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if isinstance(value, dict):
            objects = [b for b in branches if "$ref" in b or b.get("type") == "object"]
            return unknown_keys(value, objects[0], root, path) if objects else []
        if isinstance(value, list):
            arrays = [b for b in branches if b.get("type") == "array"]
            return unknown_keys(value, arrays[0], root, path) if arrays else []
        return []
    if isinstance(value, list) and "items" in schema:
        return [e for i, v in enumerate(value) for e in unknown_keys(v, schema["items"], root, f"{path}[{i}]")]
    if isinstance(value, dict) and schema.get("properties"):
        errors = []
        for key, sub in value.items():
            if key not in schema["properties"]:
                errors.append(f"{path}.{key}")
            else:
                errors += unknown_keys(sub, schema["properties"][key], root, f"{path}.{key}")
        return errors
    return []


def helm_errors(doc: dict[str, Any]) -> list[str]:
    schema = chart_schema()
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in overlay_validator(schema).iter_errors(doc)]
    errors += list_item_errors(doc, schema, schema, "values")
    unknown = [p for p in unknown_keys(doc, schema, schema, "values") if p not in UNDECLARED_BUT_READ]
    return errors + [f"{p}: not in the chart's schema" for p in unknown]


def test_helm_values_validate_against_the_chart_schema():
    assert helm_errors(values()) == []
    assert json.loads(SCHEMA.read_text())["title"] == "DagsterHelmValues"


def test_helm_schema_check_catches_typos():
    doc = values()
    doc["dagster-user-deployments"]["deployments"][0]["envSecret"] = [{"name": "x"}]  # extra keys allowed by schema
    doc["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRun"] = 3
    doc["runLauncher"]["type"] = "K8SRunLauncher"
    errors = "\n".join(helm_errors(doc))
    assert "envSecret: not in the chart's schema" in errors
    assert "maxConcurrentRun" in errors and "K8SRunLauncher" in errors
    # `required` inside a list (Helm replaces lists, so the chart's defaults cannot fill them in).
    doc = values()
    del doc["dagster-user-deployments"]["deployments"][0]["port"]
    del doc["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"][0]["key"]
    errors = "\n".join(helm_errors(doc))
    assert "deployments[0]: 'port' is a required property" in errors
    assert "tagConcurrencyLimits[0]: 'key' is a required property" in errors
    # And a misspelt retention key (Retention forbids extra keys).
    doc = values()
    doc["retention"]["sensors"] = doc["retention"].pop("sensor")
    assert "sensors" in "\n".join(helm_errors(doc))


def test_helm_kubernetes_fields_are_valid_models():
    v = values()
    ud = user_deployment()
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    checks = [
        (ud["resources"], "V1ResourceRequirements"),
        (ud["podSecurityContext"], "V1PodSecurityContext"),
        (ud["securityContext"], "V1SecurityContext"),
        (ud["envSecrets"], "list[V1SecretEnvSource]"),
        (launcher["securityContext"], "V1SecurityContext"),
        (launcher["runK8sConfig"]["podSpecConfig"], "V1PodSpec"),
        (v["dagsterDaemon"]["resources"], "V1ResourceRequirements"),
        (v["dagsterWebserver"]["resources"], "V1ResourceRequirements"),
    ]
    for value, model in checks:
        assert k8s_field_errors(value, model, model) == []


def test_helm_values_describe_our_deployment():
    v = values()
    ud = user_deployment()
    assert v["postgresql"]["enabled"] is False and v["generatePostgresqlPasswordSecret"] is False
    assert v["postgresql"]["postgresqlParams"] == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/rds/global-bundle.pem"}
    assert v["dagsterDaemon"]["enabled"] is True  # schedules and fraud_retrain_sensor
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["telemetry"] == {"enabled": False}
    assert ud["dagsterApiGrpcArgs"] == ["-m", "ecosystem_assets.definitions"] and ud["port"] == 3030
    assert ud["image"]["tag"].endswith("-cpu")  # runs start from this image; only the PyTorchJob's pods need CUDA
    assert ud["env"]["TRAINING_BACKEND"] == "pytorchjob" and ud["env"]["TRAINING_IMAGE"].endswith("-cuda")
    assert all(isinstance(value, str) for value in ud["env"].values())  # a ConfigMap takes strings only
    secret_names = {"SALES_API_TOKEN", "SMTP_PASSWORD", "SMTP_USER", "FRAUD_DB_URL", "DAGSTER_PG_PASSWORD"}
    assert not secret_names & set(ud["env"])
    assert ud["env"]["MLFLOW_TRACKING_URI"] == f"http://{service_address('mlflow')}"
    assert ud["env"]["FRAUD_SERVICE_URL"] == f"http://{service_address('fraud-service')}"


def test_helm_values_agree_with_the_instance_config():
    v = values()
    instance = yaml.safe_load(INSTANCE.read_text())
    launcher, chart_launcher = instance["run_launcher"]["config"], v["runLauncher"]["config"]["k8sRunLauncher"]
    assert chart_launcher["jobNamespace"] == launcher["job_namespace"]
    # The chart's runs take the code location's account (its container context), the subchart's.
    assert v["dagster-user-deployments"]["serviceAccount"]["name"] == launcher["service_account_name"] == "dagster-run"
    assert v["postgresql"]["postgresqlParams"] == instance["storage"]["postgres"]["postgres_db"]["params"]
    assert chart_launcher["volumes"] == launcher["volumes"] and chart_launcher["volumeMounts"] == launcher["volume_mounts"]
    assert chart_launcher["runK8sConfig"]["podTemplateSpecMetadata"] == launcher["run_k8s_config"]["pod_template_spec_metadata"]
    assert v["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]
    assert user_deployment()["resources"] == launcher["resources"]
    assert [s["name"] for s in user_deployment()["envSecrets"]] == launcher["env_secrets"]
    assert chart_launcher["securityContext"] == launcher["security_context"]
    assert (
        chart_launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]
        == launcher["run_k8s_config"]["pod_spec_config"]["security_context"]
    )
    s3 = v["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert {k: s3[k] for k in ("bucket", "prefix", "region")} == instance["compute_logs"]["config"]
    monitoring = v["dagsterDaemon"]["runMonitoring"]
    assert monitoring["startTimeoutSeconds"] == instance["run_monitoring"]["start_timeout_seconds"]
    # The release `dagster` names the chart's instance ConfigMap `dagster-instance`.
    assert launcher["instance_config_map"] == "dagster-instance"
    assert launcher["dagster_home"] == "/opt/dagster/dagster_home"


# --- the GPU run -------------------------------------------------------------------------------


def k8s_run_launcher(tmp_path: Path):
    """dagster-k8s's K8sRunLauncher from deploy/dagster.k8s.yaml's run_launcher config, pointed at a
    kubeconfig for a cluster nobody listens on (building Jobs needs no API server)."""
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    config = dict(
        yaml.safe_load(INSTANCE.read_text())["run_launcher"]["config"], load_incluster_config=False, kubeconfig_file=str(kubeconfig)
    )
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    return K8sRunLauncher.from_config_value(None, result.value)


def run_job(tags: dict[str, Any], tmp_path: Path):
    """The Kubernetes Job that dagster-k8s's K8sRunLauncher builds for a run with ``tags``: the
    launcher from deploy/dagster.k8s.yaml, then the code location's container context as the
    chart passes it (includeConfigInLaunchedRuns), then the run's tags, merged in that order."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._utils.tags import normalize_tags
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

    launcher = k8s_run_launcher(tmp_path)

    ud = user_deployment()
    code_location = K8sContainerContext.create_from_config(
        {
            "k8s": {
                "image_pull_policy": ud["image"]["pullPolicy"],
                "env_config_maps": [f"dagster-{ud['name']}-user-env"],
                "env_secrets": [s["name"] for s in ud["envSecrets"]],
                "resources": ud["resources"],
                "namespace": NAMESPACE,
                # What the chart writes into the code location's container context.
                "service_account_name": values()["dagster-user-deployments"]["serviceAccount"]["name"],
                "volumes": ud["volumes"],
                "volume_mounts": ud["volumeMounts"],
            }
        }
    )
    normalized = normalize_tags(tags)  # what define_asset_job(tags=...) stores: dict values as JSON
    run = DagsterRun(job_name="vision_training_job", run_id="1" * 8 + "-1111-1111-1111-" + "1" * 12, tags=normalized)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
        code_location.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(normalized)))
    )
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image="repo:tag-cuda", run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-test",
        user_defined_k8s_config=context.run_k8s_config,
        labels={},
        env_vars=[],
    )
    return context.namespace, job.spec.template.spec


def deployed_settings():
    """The Settings of the deployed code location: the Helm values' `env`, placeholders filled with
    dummies (``<ARTIFACT_BUCKET>`` → ``artifact-bucket``); secrets count as set."""
    from ecosystem_assets.settings import Settings

    env = {k: PLACEHOLDER.sub(lambda m: m.group(1).lower().replace("_", "-"), v) for k, v in user_deployment()["env"].items()}
    env |= dict.fromkeys(("SALES_API_TOKEN", "SMTP_PASSWORD", "FRAUD_FEEDBACK_TOKEN"), "set")
    return Settings.from_env(env)


def job_tags(job_name: str) -> dict[str, Any]:
    """The tags every run of the job carries, from the code location as deployed (its Settings)."""
    from ecosystem_assets.project import build_definitions

    return dict(build_definitions(deployed_settings()).resolve_job_def(job_name).tags)


def test_training_runs_leave_the_gpus_to_their_pytorchjob(tmp_path: Path, pg_env: None):
    """TRAINING_BACKEND=pytorchjob: the run lists, checks, evaluates and follows the job on a CPU node."""
    tags = job_tags("vision_training_job")
    assert tags == {"ecosystem/run-queue": "gpu-training"}  # no pod config: still one training at a time
    _, pod = run_job(tags, tmp_path)
    (container,) = pod.containers
    assert not pod.tolerations and not pod.node_selector
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.requests == user_deployment()["resources"]["requests"]


def test_gpu_tags_put_training_runs_on_the_gpu_node_group(tmp_path: Path, pg_env: None):
    """TRAINING_BACKEND=local on the cluster: the whole run on one GPU node."""
    from ecosystem_assets.run_tags import GPU_TRAINING

    tags = GPU_TRAINING
    namespace, pod = run_job(tags, tmp_path)
    (container,) = pod.containers
    assert namespace == NAMESPACE and pod.service_account_name == "dagster-run"
    assert pod.node_selector == {"node-pool": "gpu"}
    assert [(t.key, t.operator, t.value, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Equal", "true", "NoSchedule")]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.requests == {"cpu": "3", "memory": "10Gi"}  # the tag's, not the default run size
    assert any(m.mount_path == "/dev/shm" for m in container.volume_mounts)
    assert next(v for v in pod.volumes if v.name == "dshm").empty_dir.medium == "Memory"
    assert pod.security_context.run_as_non_root is True
    assert {s.secret_ref.name for s in container.env_from if s.secret_ref} == {"ecosystem-app-secrets", "fraud-db"}


def test_other_runs_stay_off_the_gpus(tmp_path: Path, pg_env: None):
    _, pod = run_job({}, tmp_path)
    (container,) = pod.containers
    assert not pod.tolerations and not pod.node_selector
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.requests == user_deployment()["resources"]["requests"]
    assert pod.security_context.run_as_non_root is True
    assert container.security_context.allow_privilege_escalation is False


def test_gpu_tags_with_a_typo_are_rejected(tmp_path: Path, pg_env: None):
    import copy

    from ecosystem_assets.run_tags import GPU_TRAINING

    tags = copy.deepcopy(GPU_TRAINING)
    tags["dagster-k8s/config"]["pod_spec_config"]["node_selektor"] = {"node-pool": "gpu"}
    with pytest.raises(Exception, match="node_selektor"):
        run_job(tags, tmp_path)


# --- image, kustomize, placeholders ------------------------------------------------------------


def test_kustomization_lists_the_manifests_but_not_the_secrets():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    assert set(kustomization["resources"]) == {
        "namespace.yaml",
        "mlflow.yaml",
        "fraud-service.yaml",
        "training-rbac.yaml",
        "dagster-rbac.yaml",
        *EXTERNAL_SECRETS,
        *MONITORING,
    }
    assert all((K8S / r).is_file() for r in kustomization["resources"])
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images"}
    images = {i["name"] for i in kustomization["images"]}
    used = {c["image"] for d in by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert used == images == {"ecosystem-assets-cpu"}
    assert "secrets.yaml" in (K8S / ".gitignore").read_text().split()


def test_kustomize_renders_the_objects_with_the_ecr_image():
    kubectl = tools.command("kubectl", "it renders the kustomization offline")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"])
        for name in (
            "namespace.yaml",
            "mlflow.yaml",
            "fraud-service.yaml",
            "training-rbac.yaml",
            "dagster-rbac.yaml",
            *EXTERNAL_SECRETS,
            *MONITORING,
        )
        for d in docs(K8S / name)
    )
    images = {c["image"] for d in rendered if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"<ECR_REPOSITORY_URL>:<IMAGE_TAG>-cpu"}
    # The Prometheus Operator's and External Secrets' kinds are not in the Kubernetes models:
    # test_prometheus_rules.py and test_k8s_security.py check them.
    operator_kinds = ("monitoring.coreos.com/", "external-secrets.io/")
    assert all(manifest_errors(d) == [] for d in rendered if not d["apiVersion"].startswith(operator_kinds))


def test_every_placeholder_is_documented():
    readme = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"^\| `<([A-Z][A-Z0-9_]*)>` \|", readme, re.M))
    used = set()
    for path in [*DEPLOY.rglob("*.yaml"), DOCKERFILE]:
        used |= set(PLACEHOLDER.findall(path.read_text()))
    assert used == documented
    outputs = ROOT / "infra" / "outputs.tf"
    if outputs.is_file():  # the Terraform outputs that the README names exist
        named = set(re.findall(r"^\| `<[A-Z_]+>` \| Terraform output `(\w+)`", readme, re.M))
        assert named and named <= set(re.findall(r'^output "(\w+)"', outputs.read_text(), re.M))


def test_every_database_url_names_an_installed_driver():
    """Every database URL in deploy/ names a driver the image installs (SQLAlchemy 2.1 maps a bare
    postgresql:// to psycopg 3, postgresql+psycopg2:// to psycopg2; both pinned): a URL naming a
    missing one would fail to connect on the cluster, never here."""
    import re

    from sqlalchemy.engine.url import make_url

    urls = re.findall(r"postgresql[+\w]*://\S+", (DEPLOY / "k8s" / "secrets.example.yaml").read_text())
    assert len(urls) >= 3, urls  # the fraud store, MLflow's backend store and its auth database
    for url in urls:
        parsed = make_url(url.replace("<DB_ADDRESS>", "db.internal"))
        parsed.get_dialect().import_dbapi()  # ImportError names the missing driver
