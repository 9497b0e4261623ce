"""The cluster add-ons (infra/addons.tf): what a reviewer checks before `terraform apply` installs them.

CI reaches neither the chart repositories nor a cluster, so infra/*.tf is parsed with python-hcl2
(the helpers of test_infra.py) and every `helm_release` is checked against the chart version it
pins, vendored in data/addons/ by extract_chart.py (its README has the commands):

- every add-on the design needs is a release, from its official repository, at an exact version;
- they install in the documented order (a `depends_on` chain), the Kubeflow training operator as
  the kustomize step after them;
- every values key exists in that chart version (its values.yaml, or read by its templates), a
  map only where the chart takes one, a literal of the default's type; the chart's own
  values.schema.json where it has one. Helm ignores an unknown key, so a typo would silently do
  nothing: the negative cases show the check reports one;
- the IRSA roles (iam.tf) trust exactly the service accounts the releases create, and each
  release annotates its account with its own role;
- the GPU node group can be scaled from 0 by the cluster autoscaler (auto-discovery, node-template
  tags for every label, the taint and the GPU count), and the device plugin lands on GPU nodes
  only, tolerating their taint.
"""

from __future__ import annotations

import itertools
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from ecosystem_assets_tests.deploy.test_infra import _OPTIONS, INFRA, local, module, parsed, resources

ROOT = INFRA.parent
CHARTS = Path(__file__).resolve().parent / "data" / "addons"
# release (resource name) => (chart, pinned version), in install order
ADDONS = {
    "aws_load_balancer_controller": ("aws-load-balancer-controller", "3.5.0"),
    "metrics_server": ("metrics-server", "3.13.1"),
    "external_secrets": ("external-secrets", "2.9.0"),
    "cluster_autoscaler": ("cluster-autoscaler", "9.51.0"),
    "nvidia_device_plugin": ("nvidia-device-plugin", "0.19.3"),
}
# release => (the key of local.addon_service_accounts, the variable its IRSA role trusts, the role,
# the values path of its service account)
IRSA = {
    "aws_load_balancer_controller": (
        "load-balancer-controller",
        "load_balancer_controller_service_account",
        "${module.load_balancer_controller_irsa.arn}",
        ("serviceAccount",),
    ),
    "external_secrets": (
        "external-secrets",
        "external_secrets_service_account",
        '${module.irsa["external-secrets"].arn}',
        ("serviceAccount",),
    ),
    "cluster_autoscaler": (
        "cluster-autoscaler",
        "cluster_autoscaler_service_account",
        '${module.irsa["cluster-autoscaler"].arn}',
        ("rbac", "serviceAccount"),
    ),
}
ROLE_ARN = "eks.amazonaws.com/role-arn"
REFERENCE = re.compile(r"\$\{.*\}", re.S)


def ref(expression: str) -> str:
    """A Terraform expression as python-hcl2 returns it: ${...}."""
    return "${" + expression + "}"


def releases() -> dict[str, dict[str, Any]]:
    return resources("helm_release")


@cache
def release_values(name: str) -> dict[str, Any]:
    """The release's values: `values = [yamlencode({...})]`, the object parsed back from HCL."""
    written = releases()[name].get("values", [])
    merged: dict[str, Any] = {}
    for entry in written:
        match = re.fullmatch(r"\$\{yamlencode\((\{.*\})\)\}", entry, re.S)
        assert match, f"helm_release.{name}: values must be yamlencode({{...}}) of an object literal, got {entry[:80]}"
        merged.update(hcl2.loads(f"v = {match.group(1)}\n", serialization_options=_OPTIONS)["v"])
    return merged


@cache
def chart(name: str, version: str) -> dict[str, Any]:
    path = CHARTS / f"{name}-{version}.json"
    assert path.is_file(), f"no key list for chart {name} {version} (data/addons/extract_chart.py)"
    return json.loads(path.read_text())


def chart_of(release: str) -> dict[str, Any]:
    body = releases()[release]
    return chart(body["chart"], body["version"])


def resolve_key(key: str) -> str:
    """An HCL object key written as `(local.x)` or with `${local.x}` inside: the local's string value."""
    for name, value in parsed()["locals"].items():
        if isinstance(value, str) and "${" not in value:
            key = key.replace(ref(f"(local.{name})"), value).replace(ref(f"local.{name}"), value)
    return key


def heading_section(markdown: str, title: str) -> str:
    """The text under the first heading containing `title`, up to the next heading of its level or above."""
    match = re.search(rf"^(#+) .*{re.escape(title)}.*$", markdown, re.M)
    assert match, f"no heading with {title!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(markdown, match.end())
    return markdown[match.end() : end.start() if end else len(markdown)]


def at(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


# --- the values keys against the pinned chart ------------------------------------------------------

_MISSING = object()


def _default(defaults: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(defaults, dict) or key not in defaults:
            return _MISSING
        defaults = defaults[key]
    return defaults


def value_key_errors(values: dict[str, Any], description: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """Keys of `values` that the chart neither defaults nor reads; maps under a scalar; literals of
    another type than the default. Below a free-form path (annotations, nodeSelector, extraArgs)
    anything goes."""
    where = f"{description['chart']} {description['version']}"
    reads = set(description["template_reads"])
    free = set(description["free_form"])
    errors: list[str] = []
    for key, value in values.items():
        here = (*path, key)
        dotted = ".".join(here)
        default = _default(description["defaults"], here)
        read_below = dotted in reads or any(r.startswith(dotted + ".") for r in reads)
        if default is _MISSING and not read_below:
            errors.append(f"{dotted}: not a value of {where}")
            continue
        if dotted in free:
            continue
        if isinstance(value, dict):
            if default is not _MISSING and default is not None and not isinstance(default, dict):
                errors.append(f"{dotted}: a map, where {where} has a {type(default).__name__}")
            else:
                errors += value_key_errors(value, description, here)
        elif isinstance(value, str) and REFERENCE.fullmatch(value):
            continue  # an expression: its type is Terraform's business
        elif default not in (_MISSING, None) and type(value) is not type(default):
            kinds = (type(value).__name__, type(default).__name__)
            if not (set(kinds) <= {"int", "float"}):
                errors.append(f"{dotted}: a {kinds[0]}, where {where} has a {kinds[1]} ({default!r})")
    return errors


def test_every_addon_is_a_release_of_its_official_chart_at_an_exact_version() -> None:
    assert list(releases()) == list(ADDONS), "the add-ons, in the order addons.tf writes them"
    vendored = {path.name for path in CHARTS.glob("*.json")}
    assert vendored == {f"{c}-{v}.json" for c, v in ADDONS.values()}, "a key list no release uses, or one missing"
    for name, (chart_name, version) in ADDONS.items():
        body = releases()[name]
        assert body["chart"] == chart_name and body["version"] == version, name
        assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"]), f"{name}: not an exact version"
        description = chart(chart_name, version)
        assert (description["chart"], description["version"]) == (chart_name, version)
        # The Helm repository the chart is published in, by the project that builds it.
        assert body["repository"] == description["source"]["helm_repository"], name
        assert re.fullmatch(r"[0-9a-f]{40}", description["source"]["commit"]), name
        assert body.get("max_history", 0) > 0, f"{name}: unbounded release history (a Secret per upgrade)"


def test_the_helm_provider_talks_to_this_cluster_with_a_fresh_token() -> None:
    (provider,) = [p["helm"] for p in hcl2.loads((INFRA / "addons.tf").read_text(), serialization_options=_OPTIONS)["provider"]]
    kubernetes = provider["kubernetes"]
    assert kubernetes["host"] == "${module.eks.cluster_endpoint}"
    assert kubernetes["cluster_ca_certificate"] == "${base64decode(module.eks.cluster_certificate_authority_data)}"
    exec_ = kubernetes["exec"]
    assert exec_["command"] == "aws" and exec_["api_version"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["args"][:2] == ["eks", "get-token"] and "${module.eks.cluster_name}" in exec_["args"]
    settings = parsed()["terraform"][0]["required_providers"][0]
    assert settings["helm"]["source"] == "hashicorp/helm"
    assert re.fullmatch(r"~> 3\.\d+", settings["helm"]["version"]), settings["helm"]


def test_install_order_is_a_chain_after_the_cluster() -> None:
    """One release after the other: the load-balancer controller first (its webhook refuses every
    new Service until it is ready), metrics-server next (its APIService breaks API discovery while
    unready), then External Secrets, the autoscaler, the device plugin; the training operator is
    the kustomize step after `terraform apply`."""
    order = list(ADDONS)
    assert releases()[order[0]]["depends_on"] == ["${module.eks}"]  # node groups and CNI up first
    for before, after in itertools.pairwise(order):
        assert releases()[after]["depends_on"] == [ref(f"helm_release.{before}")], after
    for name in order:
        assert releases()[name].get("wait", True) is True, f"{name}: the next release must find it ready"
    # The same order in infra/README.md, the training operator last, each with its pinned version.
    section = heading_section((INFRA / "README.md").read_text(), "Cluster add-ons")
    positions = [section.find(f"`{c}`") for c, _ in ADDONS.values()] + [section.find("deploy/training-operator")]
    assert -1 not in positions, "infra/README.md: an add-on missing from its add-ons section"
    assert positions == sorted(positions), "infra/README.md: add-ons not listed in install order"
    assert all(re.search(rf"(?<![\d.]){re.escape(version)}(?!\d|\.\d)", section) for _, version in ADDONS.values())


@pytest.mark.parametrize("release", list(ADDONS))
def test_values_keys_exist_in_the_pinned_chart(release: str) -> None:
    description = chart_of(release)
    values = release_values(release)
    assert value_key_errors(values, description) == []
    if description["schema"] is not None:  # Helm validates against it too; so do we
        from jsonschema import validators

        validator = validators.validator_for(description["schema"])(description["schema"])
        assert [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)] == []


def test_the_values_key_check_catches_mistakes() -> None:
    autoscaler = chart("cluster-autoscaler", "9.51.0")
    values = json.loads(json.dumps(release_values("cluster_autoscaler")))
    values["rbac"]["serviceAcount"] = values["rbac"].pop("serviceAccount")  # misspelt
    values["awsRegion"] = {"name": "eu-west-1"}  # a map where the chart wants a string
    values["autoDiscovery"]["clustername"] = values["autoDiscovery"].pop("clusterName")  # wrong case
    values["extraArgs"] = {"any-flag-at-all": True}  # free-form: the chart passes every key on
    values["replicaCount"] = "2"  # a string where the chart has a number
    assert value_key_errors(values, autoscaler) == [
        "awsRegion: a map, where cluster-autoscaler 9.51.0 has a str",
        "autoDiscovery.clustername: not a value of cluster-autoscaler 9.51.0",
        "rbac.serviceAcount: not a value of cluster-autoscaler 9.51.0",
        "replicaCount: a str, where cluster-autoscaler 9.51.0 has a int (1)",
    ]
    # A key only the templates read (no default in values.yaml) is known.
    assert value_key_errors({"devicePlugin": {"enabled": True}}, chart("nvidia-device-plugin", "0.19.3")) == []
    # The chart's schema (External Secrets ships one) catches a wrong type as Helm would.
    from jsonschema import validators

    schema = chart("external-secrets", "2.9.0")["schema"]
    errors = list(validators.validator_for(schema)(schema).iter_errors({"installCRDs": "yes"}))
    assert [e.message for e in errors] == ["'yes' is not of type 'boolean'"]


def test_irsa_roles_trust_exactly_the_service_accounts_the_releases_create() -> None:
    accounts = local("addon_service_accounts")
    trusted = {
        "cluster_autoscaler_service_account": local("workload_roles")["cluster-autoscaler"]["service_accounts"],
        "external_secrets_service_account": local("workload_roles")["external-secrets"]["service_accounts"],
        "load_balancer_controller_service_account": module("load_balancer_controller_irsa")["oidc_providers"]["eks"][
            "namespace_service_accounts"
        ],
    }
    for release, (key, variable, role, sa_path) in IRSA.items():
        # The role trusts var.<variable> ("namespace:name"); the release splits the same variable.
        assert trusted[variable] == [ref(f"var.{variable}")], variable
        assert accounts[key] == ref(f'split(":", var.{variable})'), key
        assert releases()[release]["namespace"] == ref(f'local.addon_service_accounts["{key}"][0]'), release
        account = at(release_values(release), sa_path)
        assert account["create"] is True and account["name"] == ref(f'local.addon_service_accounts["{key}"][1]'), release
        assert account["annotations"] == {ROLE_ARN: role}, release
        assert ".".join((*sa_path, "annotations")) in chart_of(release)["free_form"], release  # any annotation passes through
        default = parsed()["variable"][variable]["default"]
        assert re.fullmatch(r"[a-z0-9-]+:[a-z0-9-]+", default), variable
    # No other release carries an AWS role.
    for release in set(ADDONS) - set(IRSA):
        assert ROLE_ARN not in json.dumps(release_values(release)), release
    # The External Secrets role may read the stack's secrets (iam.tf); the autoscaler's scale its groups.
    autoscaler_actions = {a for s in _role_statements("cluster-autoscaler") for a in s["actions"]}
    assert {"autoscaling:SetDesiredCapacity", "eks:DescribeNodegroup", "autoscaling:DescribeTags"} <= autoscaler_actions


def _role_statements(role: str) -> list[dict[str, Any]]:
    from ecosystem_assets_tests.deploy.test_infra import role_policy

    return role_policy(role)


def test_load_balancer_controller_gets_cluster_region_and_vpc() -> None:
    values = release_values("aws_load_balancer_controller")
    # Pods cannot reach the instance metadata (hop limit 1): nothing may be left to discovery.
    assert values["clusterName"] == "${module.eks.cluster_name}"
    assert values["region"] == "${var.region}" and values["vpcId"] == "${module.vpc.vpc_id}"
    metadata = module("eks")["eks_managed_node_groups"]
    assert all(group["metadata_options"]["http_put_response_hop_limit"] == 1 for group in metadata.values())


# --- the GPU group from zero ------------------------------------------------------------------------


def gpu_group() -> dict[str, Any]:
    return module("eks")["eks_managed_node_groups"]["gpu"]


def test_the_autoscaler_finds_both_groups_and_matches_the_cluster_version() -> None:
    values = release_values("cluster_autoscaler")
    description = chart("cluster-autoscaler", "9.51.0")
    assert values["cloudProvider"] == "aws" and values["awsRegion"] == "${var.region}"
    assert values["autoDiscovery"] == {"clusterName": "${module.eks.cluster_name}"}
    # Auto-discovery by the tags EKS puts on every managed node group's ASG
    # (k8s.io/cluster-autoscaler/enabled and k8s.io/cluster-autoscaler/<cluster name>): the chart's default.
    assert description["defaults"]["autoDiscovery"]["tags"] == [
        "k8s.io/cluster-autoscaler/enabled",
        "k8s.io/cluster-autoscaler/{{ .Values.autoDiscovery.clusterName }}",
    ]
    # The autoscaler's minor version is the cluster's, for the default version and any other listed.
    assert values["image"] == {"tag": "${local.cluster_autoscaler_image_tags[var.cluster_version]}"}
    tags = local("cluster_autoscaler_image_tags")
    assert parsed()["variable"]["cluster_version"]["default"] in tags
    for minor, tag in tags.items():
        assert re.fullmatch(rf"v{re.escape(minor)}\.\d+", tag), (minor, tag)
    assert description["appVersion"].rsplit(".", 1)[0] == parsed()["variable"]["cluster_version"]["default"]
    example = hcl2.loads((INFRA / "terraform.tfvars.example").read_text(), serialization_options=_OPTIONS)
    assert example["cluster_version"] in tags


def test_gpu_group_has_a_node_template_for_scale_from_zero() -> None:
    """At 0 nodes the autoscaler knows a GPU node only from the ASG's tags: every label a pod may
    select, the taint it must tolerate, and the GPU count it may request."""
    group = gpu_group()
    template = {resolve_key(k): v for k, v in resources("aws_autoscaling_group_tag")["gpu_node_template"]["for_each"].items()}
    labels = {resolve_key(k): v for k, v in group["labels"].items()}
    for label, value in labels.items():
        assert template.get(f"k8s.io/cluster-autoscaler/node-template/label/{label}") == value, label
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    for taint in group["taints"].values():
        assert template[f"k8s.io/cluster-autoscaler/node-template/taint/{taint['key']}"] == f"{taint['value']}:{effects[taint['effect']]}"
    # The GPU count and the autoscaler's GPU label, from the instance type itself.
    assert template["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"] == "${tostring(local.gpu_per_node.count)}"
    assert labels["k8s.amazonaws.com/accelerator"] == "${local.gpu_accelerator}"
    assert local("gpu_per_node") == "${one(data.aws_ec2_instance_type.gpu.gpus)}"
    assert parsed()["data"]["aws_ec2_instance_type"]["gpu"]["instance_type"] == "${var.gpu_instance_types[0]}"
    # Nothing but these tags: no stray template a typo would make.
    assert all(k.startswith("k8s.io/cluster-autoscaler/node-template/") for k in template)
    assert group["min_size"] == 0 and group["desired_size"] == 0


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    for toleration in tolerations:
        key_ok = (
            toleration.get("key") in (None, taint["key"])
            if toleration.get("operator") == "Exists"
            else toleration.get("key") == taint["key"]
        )
        value_ok = toleration.get("operator") == "Exists" or toleration.get("value") == taint["value"]
        effect_ok = toleration.get("effect") in (None, "", effects[taint["effect"]])
        if key_ok and value_ok and effect_ok:
            return True
    return False


def _matches_node_affinity(affinity: dict[str, Any], labels: dict[str, str]) -> bool:
    """requiredDuringScheduling: one nodeSelectorTerm whose expressions all hold."""
    terms = affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms")
    if not terms:
        return True
    for term in terms:
        ok = True
        for expression in term.get("matchExpressions", []):
            key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
            ok &= {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values, "Exists": key in labels}.get(operator, False)
        if ok:
            return True
    return False


def test_device_plugin_runs_on_gpu_nodes_only_and_tolerates_their_taint() -> None:
    values = release_values("nvidia_device_plugin")
    description = chart("nvidia-device-plugin", "0.19.3")
    groups = module("eks")["eks_managed_node_groups"]
    gpu_labels = {resolve_key(k): v for k, v in groups["gpu"]["labels"].items()}
    cpu_labels = {resolve_key(k): v for k, v in groups["cpu"]["labels"].items()}
    selector = {resolve_key(k): v for k, v in values["nodeSelector"].items()}
    assert selector.items() <= gpu_labels.items() and not selector.items() <= cpu_labels.items()
    assert selector == {resolve_key(k): v for k, v in parsed()["output"]["gpu_node_selector"]["value"].items()}
    for taint in groups["gpu"]["taints"].values():
        assert _tolerates(values["tolerations"], taint), taint
    # The chart's default node affinity (not overridden) holds on the GPU nodes too.
    affinity = values.get("affinity", description["defaults"]["affinity"])
    assert _matches_node_affinity(affinity, gpu_labels)
    # The negative cases of the two helpers: a toleration for another effect, a CPU node.
    assert not _tolerates([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], groups["gpu"]["taints"]["gpu"])
    assert not _matches_node_affinity(description["defaults"]["affinity"], cpu_labels)


def test_the_training_operator_is_the_pinned_kustomize_step_after_the_releases() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy" / "training-operator" / "kustomization.yaml").read_text())
    (resource,) = kustomization["resources"]
    assert re.fullmatch(r"https://github\.com/kubeflow/training-operator\.git/manifests/overlays/standalone\?ref=v\d+\.\d+\.\d+", resource)
    text = (INFRA / "addons.tf").read_text()
    assert "kubectl apply --server-side -k deploy/training-operator" in text
    assert "kubectl apply --server-side -k deploy/training-operator" in (ROOT / "deploy" / "README.md").read_text()
