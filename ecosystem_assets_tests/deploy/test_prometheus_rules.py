"""The fraud service's alert rules (deploy/k8s/prometheus-rules.yaml) and the PodMonitor that feeds them.

- `promtool check rules` and `promtool test rules` (prometheus-rules.test.yaml: synthetic series per
  alert, firing when it should and silent when healthy) on the PrometheusRule's own ``.spec``,
  written out here, so there is one copy of the rules. promtool comes with the OS package
  `prometheus`; without it the promtool tests skip (.ci/run installs it in CI);
- every metric an expression uses is one a real running service exports on /metrics (scraped from
  the service under uvicorn), with the labels the rules match on, and the job label the rules
  select is the one the PodMonitor gives the service's pods;
- every alert has a severity, a summary, a description and a runbook link, and the test file
  shows each alert both firing and silent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecosystem_assets_tests import tools

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RULES = K8S / "prometheus-rules.yaml"
POD_MONITOR = K8S / "fraud-service-monitor.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
SEVERITIES = {"critical", "warning"}
# Labels a PodMonitor's targets give every series (the Prometheus Operator's relabelings: job,
# namespace, pod, container, and endpoint = the port's name; Prometheus's instance), before the
# PodMonitor's own relabelings; `up` has only these.
OPERATOR_TARGET_LABELS = {"job", "namespace", "pod", "container", "endpoint", "instance"}
Scraped = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> [(labels, value)] of one /metrics
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def prometheus_rule() -> dict[str, Any]:
    (rule,) = [d for d in _docs(RULES) if d["kind"] == "PrometheusRule"]
    return rule


def alerting_rules() -> list[dict[str, Any]]:
    return [r for group in prometheus_rule()["spec"]["groups"] for r in group["rules"] if "alert" in r]


def promtool() -> str:
    return tools.command(
        "promtool",
        "the alert rule tests need it (Debian/Ubuntu: `apt-get install prometheus`; `bash .ci/run` installs it when run as root)",
    )


def target_labels() -> set[str]:
    """The target labels the fraud service's series get: the Operator's, less what the PodMonitor drops."""
    (monitor,) = _docs(POD_MONITOR)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    labels = set(OPERATOR_TARGET_LABELS)
    for relabeling in endpoint.get("relabelings", []):
        assert relabeling["action"] == "labeldrop", relabeling  # the only kind this test models
        labels = {label for label in labels if not re.fullmatch(relabeling["regex"], label)}
    return labels


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's .spec as the plain rule file promtool reads, beside a copy of the test file."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- the manifests --------------------------------------------------------------------------------


def test_the_rule_and_the_pod_monitor_are_prometheus_operator_objects():
    rule = prometheus_rule()
    (monitor,) = _docs(POD_MONITOR)
    for doc, kind in ((rule, "PrometheusRule"), (monitor, "PodMonitor")):
        assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", kind)
        assert doc["metadata"]["namespace"] == "ecosystem"
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r.get("alert")


def test_every_alert_has_severity_summary_description_and_runbook():
    alerts = alerting_rules()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    assert {"FraudServiceErrorRate", "FraudServiceLatencyHigh", "FraudServiceNoChampion", "FraudServiceChampionRefused"} <= set(names)
    assert {"FraudLivePrecisionLow", "FraudServiceScrapeDown", "FraudServiceTargetMissing"} <= set(names)
    for rule in alerts:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"docs/troubleshooting\.md#[a-z0-9-]+", rule["annotations"]["runbook_url"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_rules_select_the_job_the_pod_monitor_scrapes():
    """The PodMonitor takes the job label from the pods' `jobLabel` label; its selector and port are
    the fraud-service Deployment's. Every rule selects exactly that job."""
    (monitor,) = _docs(POD_MONITOR)
    (deployment,) = [d for d in _docs(K8S / "fraud-service.yaml") if d["kind"] == "Deployment" and d["metadata"]["name"] == "fraud-service"]
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = pod["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    job = pod["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    for rule in alerting_rules():
        jobs = {value for _metric, matchers in selectors(rule["expr"]) for label, op, value in matchers if label == "job"}
        assert jobs == {job}, rule["alert"]
        assert all(("job", "=", job) in matchers for _metric, matchers in selectors(rule["expr"])), rule["alert"]


def test_the_rule_tests_show_every_alert_firing_and_silent():
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert fired == names, names - fired
    assert silent == names, names - silent


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_check_rules(rules_dir: Path):
    result = _run([promtool(), "check", "rules", "rules.yaml"], rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests(rules_dir: Path):
    result = _run([promtool(), "test", "rules", RULE_TESTS.name], rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_tests_fail_when_a_rule_breaks(rules_dir: Path):
    """The unit tests can fail: with the precision rule judging on any number of labels, the
    not-judged case fires and promtool says so."""
    tool = promtool()
    text = (rules_dir / "rules.yaml").read_text()
    assert text.count(">= 200") == 1
    (rules_dir / "rules.yaml").write_text(text.replace(">= 200", ">= 0"))
    result = _run([tool, "test", "rules", RULE_TESTS.name], rules_dir)
    assert result.returncode != 0
    assert "FraudLivePrecisionLow" in result.stdout + result.stderr


# --- the metrics the rules use are the service's ------------------------------------------------


def _strip(expr: str) -> str:
    """``expr`` without strings, label matchers, range selectors and grouping label lists."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)


def metric_names(expr: str) -> set[str]:
    """Every metric name in a PromQL expression: identifiers that are not functions, aggregations,
    keywords, numbers or label names."""
    text = _strip(expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) for every ``metric{...}`` selector."""
    found = []
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', body)
        found.append((metric, matchers))
    return found


def test_metric_name_extraction_sees_every_name():
    expr = 'sum by (le) (rate(a_bucket{job="x", le=~"0.1"}[5m])) / ignoring(pod) b_total > 0.1 and on (job) absent(up) or c:rec'
    assert metric_names(expr) == {"a_bucket", "b_total", "up", "c:rec"}
    assert selectors(expr) == [("a_bucket", [("job", "=", "x"), ("le", "=~", "0.1")])]


def scrape_a_real_service(root: Path) -> Scraped:
    """The metrics of a real fraud service under uvicorn (empty registry: no champion; a refusal set
    on its champion watcher so the refusal gauge has a sample), after one request to every route the
    rules count: {sample name: [(labels, value)]}."""
    from mlflow import MlflowClient
    from prometheus_client.parser import text_string_to_metric_families

    from ecosystem_assets.serving.app import create_app
    from ecosystem_assets.serving.champion import Refusal
    from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread

    registry = f"sqlite:///{root / 'mlflow.db'}"
    # The registry's tables first: creating them takes seconds (more on busy cores), which would
    # otherwise count against the server's start (the champion watcher's first look is in its start-up).
    MlflowClient(tracking_uri=registry, registry_uri=registry).search_registered_models()
    app = create_app(f"sqlite:///{root / 'service.db'}", registry, poll_s=60, metrics_refresh_s=60)
    with UvicornThread(app) as server:
        app.state.watcher.refused = Refusal("7", "synthetic refusal for the scrape")
        for method, path in (("POST", "/predict"), ("POST", "/feedback"), ("POST", "/history"), ("GET", "/monitoring"), ("GET", "/readyz")):
            request = urllib.request.Request(server.url + path, data=b"{}" if method == "POST" else None, method=method)
            request.add_header("Content-Type", "application/json")
            try:
                urllib.request.urlopen(request, timeout=30).close()
            except urllib.error.HTTPError as exc:  # 422 / 503: counted all the same
                exc.close()
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
            text = response.read().decode()
    samples: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def label_values(scraped: Scraped, metric: str) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for labels, _value in scraped.get(metric, []):
        for label, value in labels.items():
            values.setdefault(label, set()).add(value)
    return values


def test_the_rules_use_the_metrics_and_labels_a_running_service_exports(tmp_path: Path):
    """One scrape (a service start costs seconds), three findings:

    1. every metric an expression uses is on /metrics (`up` is Prometheus's own, per target), and
       the states the rules read are written as they expect (no champion: version 0; a refusal: 1);
    2. no label the service writes is also a target label: Prometheus would rename it
       ``exported_<label>`` (honor_labels is off) and the rules matching it would never fire. The
       route label `endpoint` of fraud_requests_total is why the PodMonitor drops the target's;
    3. every label a rule matches exists on the metric (or comes from the target), and values matched
       literally, and each alternative of an ``a|b`` regex, are values the service really writes
       (its route templates)."""
    scraped = scrape_a_real_service(tmp_path)

    used = {name for rule in alerting_rules() for name in metric_names(rule["expr"])}
    assert "fraud_requests_total" in used and "fraud_predict_seconds_bucket" in used
    assert used - {"up"} <= set(scraped), used - {"up"} - set(scraped)
    assert scraped["fraud_model_version"] == [({}, 0.0)]
    assert scraped["fraud_model_refused"] == [({"version": "7"}, 1.0)]

    targets = target_labels()
    assert "endpoint" not in targets and {"job", "namespace", "pod"} <= targets
    assert "endpoint" in label_values(scraped, "fraud_requests_total")
    collisions = {(name, label) for name, samples in scraped.items() for labels, _ in samples for label in labels if label in targets}
    assert collisions == set()

    for rule in alerting_rules():
        for metric, matchers in selectors(rule["expr"]):
            own = label_values(scraped, metric) if metric != "up" else {}
            for label, op, value in matchers:
                where = (rule["alert"], metric, label, value)
                if label in targets:
                    continue
                assert label in own, where
                if op == "=":
                    assert value in own[label], where
                elif op == "=~" and re.fullmatch(r"[\w/|-]+", value):
                    assert set(value.split("|")) <= own[label], where
                elif op == "=~":
                    assert any(re.fullmatch(value, v) for v in own[label]), where
