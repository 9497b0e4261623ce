"""Static review of infra/ (Terraform for AWS): what a reviewer checks before anyone runs `apply`.

CI has no AWS account and cannot download providers, so `terraform validate` cannot run; every
infra/*.tf is parsed with python-hcl2 instead and the security-relevant settings are asserted on
the parsed configuration. `terraform fmt -check` runs when the binary is on PATH. The checkov scan
is separate (infra/check.sh: it needs its own virtualenv).

Repeated resources are written once with `for_each` over a map; `instances()` expands them into one
body per key (each.key / each.value and `dynamic` blocks substituted), so every assertion still
reads one concrete bucket, role or node group.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

INFRA = Path(__file__).resolve().parents[2] / "infra"
DATA_BUCKETS = ("artifacts", "images")
# bucket => its address below aws_s3_bucket (the data buckets are one resource with for_each)
BUCKETS = {"artifacts": 'data["artifacts"]', "images": 'data["images"]', "access_logs": "access_logs"}
# Strings come back without their quotes, references as "${...}", blocks as lists of dicts.
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)


@cache
def parsed() -> dict[str, Any]:
    """All infra/*.tf merged: {"resource": {type: {name: body}}, "data": ..., "variable": {name: body}, ...}."""
    merged: dict[str, Any] = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "terraform": [], "module": {}}
    for path in sorted(INFRA.glob("*.tf")):
        doc = hcl2.loads(path.read_text(), serialization_options=_OPTIONS)
        for section in ("resource", "data"):
            for entry in doc.get(section, []):
                for rtype, instances in entry.items():
                    merged[section].setdefault(rtype, {}).update(instances)
        for section in ("variable", "output", "module"):
            for entry in doc.get(section, []):
                merged[section].update(entry)
        for entry in doc.get("locals", []):
            merged["locals"].update(entry)
        merged["terraform"].extend(doc.get("terraform", []))
    return merged


def resources(rtype: str) -> dict[str, dict[str, Any]]:
    """The resource blocks of `rtype` as written (a for_each block once, unexpanded)."""
    return parsed()["resource"].get(rtype, {})


def local(name: str) -> Any:
    return parsed()["locals"][name]


def one(blocks: Any) -> dict[str, Any]:
    """A nested block (hcl2 gives a list of one dict)."""
    assert isinstance(blocks, list) and len(blocks) == 1, blocks
    return blocks[0]


def resolve_locals(text: str) -> str:
    """Substitute ${local.x} for string-valued locals, so prefixes in ARNs can be asserted."""
    for name, value in parsed()["locals"].items():
        if isinstance(value, str) and "${" not in value:
            text = text.replace("${local.%s}" % name, value)
    return text


# --- for_each and dynamic blocks -------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


def _for_each_entries(expression: Any) -> dict[str, Any]:
    """The map a for_each iterates: a literal map, a map-valued local, or toset() of literal strings."""
    if isinstance(expression, dict):
        return expression
    if match := re.fullmatch(r"\$\{local\.(\w+)\}", expression):
        entries = local(match.group(1))
        assert isinstance(entries, dict), f"for_each over local.{match.group(1)}: not a map"
        return entries
    if match := re.fullmatch(r"\$\{toset\((\[[^\]]*\])\)\}", expression):
        return {item: item for item in json.loads(match.group(1))}
    raise AssertionError(f"for_each the tests cannot evaluate: {expression}")


def _lookup(iterator: str, match: re.Match[str], key: str, value: Any) -> Any:
    """<iterator>.key, <iterator>.value or <iterator>.value.a.b for one entry."""
    current = key if match.group(1) == "key" else value
    for field in filter(None, match.group(2).split(".")):
        if isinstance(current, str):  # a reference (${aws_s3_bucket.data["images"]}): its attribute
            reference = re.fullmatch(r"\$\{([^{}]+)\}", current)
            assert reference, f"{iterator}.value.{field} of {current!r}"
            current = "${%s.%s}" % (reference.group(1), field)
        else:
            current = current[field]
    return current


def _substitute(node: Any, iterator: str, key: str, value: Any) -> Any:
    """`node` with <iterator>.key / <iterator>.value replaced by one entry's key and value."""
    if isinstance(node, dict):
        return {k: _substitute(v, iterator, key, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, iterator, key, value) for v in node]
    if not isinstance(node, str):
        return node
    reference = re.compile(rf"\b{iterator}\.(key|value)((?:\.\w+)*)")
    if (whole := re.fullmatch(r"\$\{(.*)\}", node)) and (match := reference.fullmatch(whole.group(1))) is not None:
        return _lookup(iterator, match, key, value)  # keeps its type: a list, a map, a number

    def as_expression(match: re.Match[str]) -> str:
        found = _lookup(iterator, match, key, value)
        assert isinstance(found, str), f"{match.group(0)} = {found!r} inside an expression"
        inner = re.fullmatch(r"\$\{([^{}]*)\}", found)
        return inner.group(1) if inner else json.dumps(found)

    def splice(interpolation: re.Match[str]) -> str:
        if (match := reference.fullmatch(interpolation.group(1))) is not None:
            found = _lookup(iterator, match, key, value)
            assert isinstance(found, str), f"{interpolation.group(0)} = {found!r} inside a string"
            return found
        return "${%s}" % reference.sub(as_expression, interpolation.group(1))

    return _INTERPOLATION.sub(splice, node)


def instances(rtype: str, section: str = "resource") -> dict[str, dict[str, Any]]:
    """Bodies of `rtype` by address: `name`, or `name["key"]` per entry of a for_each."""
    found: dict[str, dict[str, Any]] = {}
    for name, body in parsed()[section].get(rtype, {}).items():
        if "for_each" not in body:
            found[name] = _generate_dynamic(body)
            continue
        rest = {k: v for k, v in body.items() if k != "for_each"}
        for key, value in _for_each_entries(body["for_each"]).items():
            found[f'{name}["{key}"]'] = _generate_dynamic(_substitute(rest, "each", key, value))
    return found


def _generate_dynamic(body: dict[str, Any]) -> dict[str, Any]:
    """`dynamic "x" { for_each = [...]; content {...} }` replaced by the x blocks it generates."""
    generated = {k: v for k, v in body.items() if k != "dynamic"}
    for dynamic in body.get("dynamic", []):
        for block, spec in dynamic.items():
            items = spec["for_each"]
            assert isinstance(items, list), f"dynamic {block}: for_each the tests cannot evaluate: {items}"
            content = one(spec["content"])
            blocks = [_substitute(content, block, str(index), item) for index, item in enumerate(items)]
            if blocks:
                generated.setdefault(block, []).extend(blocks)
    return generated


def configuring(rtype: str, bucket: str) -> list[dict[str, Any]]:
    """The instances of `rtype` whose `bucket` argument is the id of bucket `bucket` (a key of BUCKETS)."""
    ref = "${aws_s3_bucket.%s.id}" % BUCKETS[bucket]
    return [body for body in instances(rtype).values() if body.get("bucket") == ref]


# --- IAM policy documents --------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    """A list argument: literal, a list-valued local, or an expression kept as one string."""
    if isinstance(value, list):
        return value
    if (match := re.fullmatch(r"\$\{local\.(\w+)\}", value)) and isinstance(local(match.group(1)), list):
        return local(match.group(1))
    return [value]


def statements(reference: str) -> list[dict[str, Any]]:
    """The statements of the policy document that `${data.aws_iam_policy_document.X[...].json}` names,
    its source_policy_documents' first (as the provider merges them); actions and resources as lists,
    string locals in resources substituted."""
    match = re.fullmatch(r'\$\{data\.aws_iam_policy_document\.(\w+(?:\["[^"]+"\])?)\.json\}', reference)
    assert match, f"not a reference to a policy document: {reference}"
    document = instances("aws_iam_policy_document", "data")[match.group(1)]
    merged = [s for source in document.get("source_policy_documents", []) for s in statements(source)]
    for statement in document.get("statement", []):
        merged.append(
            {
                **statement,
                "actions": _as_list(statement["actions"]),
                "resources": [resolve_locals(r) for r in _as_list(statement.get("resources", []))],
            }
        )
    return merged


def bucket_policy(bucket: str) -> list[dict[str, Any]]:
    (policy,) = configuring("aws_s3_bucket_policy", bucket)
    return statements(policy["policy"])


def test_layout_is_complete() -> None:
    expected = [
        "versions.tf",
        "variables.tf",
        "network.tf",
        "eks.tf",
        "s3.tf",
        "rds.tf",
        "elasticache.tf",
        "ecr.tf",
        "iam.tf",
        "outputs.tf",
        "terraform.tfvars.example",
        "README.md",
        ".checkov.yaml",
        "check.sh",
    ]
    assert [name for name in expected if not (INFRA / name).is_file()] == []
    # Plain resources only: modules would need a registry download that CI cannot make.
    assert parsed()["module"] == {}


def test_terraform_and_providers_are_pinned() -> None:
    settings = one(parsed()["terraform"])
    assert re.fullmatch(r">= ?1\.(6|[7-9]|\d\d)(\.\d+)?", settings["required_version"])
    providers = one(settings["required_providers"])
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> 5\.\d+(\.\d+)?", providers["aws"]["version"]), providers["aws"]
    assert all(p.get("version") for p in providers.values()), "every provider needs a version constraint"


def test_every_variable_has_description_and_type() -> None:
    variables = parsed()["variable"]
    assert {"region", "name", "cluster_version", "gpu_node_max", "db_instance_class", "deletion_protection", "tags"} <= set(variables)
    missing = [name for name, body in variables.items() if not body.get("description") or not body.get("type")]
    assert missing == []
    assert variables["deletion_protection"]["default"] is True
    # Nothing secret is a variable: the database password is generated by RDS, the feature store's
    # AUTH token by random_password.
    assert [name for name in variables if re.search("password|secret_key|token", name)] == []


def test_tfvars_example_sets_only_declared_variables() -> None:
    example = hcl2.loads((INFRA / "terraform.tfvars.example").read_text(), serialization_options=_OPTIONS)
    assert set(example) - set(parsed()["variable"]) == set()
    assert example["deletion_protection"] is True


def test_buckets_and_their_names() -> None:
    # Every bucket of the stack is in BUCKETS (so the parametrized tests below see all of them), and
    # the names the deployment's outputs and README mention are unchanged.
    names = {address: body["bucket"] for address, body in instances("aws_s3_bucket").items()}
    assert names == {
        'data["artifacts"]': "${local.name}-artifacts-${local.bucket_suffix}",
        'data["images"]': "${local.name}-images-${local.bucket_suffix}",
        "access_logs": "${local.name}-access-logs-${local.bucket_suffix}",
    }
    assert set(names) == set(BUCKETS.values())


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_is_versioned_encrypted_private_tls_only_with_lifecycle(bucket: str) -> None:
    assert BUCKETS[bucket] in instances("aws_s3_bucket")

    (versioning,) = configuring("aws_s3_bucket_versioning", bucket)
    assert one(versioning["versioning_configuration"])["status"] == "Enabled"

    (encryption,) = configuring("aws_s3_bucket_server_side_encryption_configuration", bucket)
    default = one(one(encryption["rule"])["apply_server_side_encryption_by_default"])
    assert default["sse_algorithm"] in {"aws:kms", "AES256"}

    (block,) = configuring("aws_s3_bucket_public_access_block", bucket)
    assert all(
        block[flag] is True for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )

    (ownership,) = configuring("aws_s3_bucket_ownership_controls", bucket)
    assert one(ownership["rule"])["object_ownership"] == "BucketOwnerEnforced"

    arn = "${aws_s3_bucket.%s.arn}" % BUCKETS[bucket]
    deny_plain_http = [
        s
        for s in bucket_policy(bucket)
        if s.get("effect") == "Deny"
        and "s3:*" in s["actions"]
        and {arn, arn + "/*"} <= set(s["resources"])
        and any(c["variable"] == "aws:SecureTransport" and c["values"] == ["false"] for c in s.get("condition", []))
    ]
    assert deny_plain_http, f"{bucket}: no TLS-only statement in its bucket policy"

    (lifecycle,) = configuring("aws_s3_bucket_lifecycle_configuration", bucket)
    rules = lifecycle["rule"]
    assert any("noncurrent_version_expiration" in rule and rule["status"] == "Enabled" for rule in rules)
    assert any("abort_incomplete_multipart_upload" in rule for rule in rules)


@pytest.mark.parametrize("bucket", DATA_BUCKETS)
def test_data_buckets_use_the_stack_kms_key_and_are_access_logged(bucket: str) -> None:
    (encryption,) = configuring("aws_s3_bucket_server_side_encryption_configuration", bucket)
    default = one(one(encryption["rule"])["apply_server_side_encryption_by_default"])
    assert default == {"sse_algorithm": "aws:kms", "kms_master_key_id": "${aws_kms_key.main.arn}"}
    (logging,) = configuring("aws_s3_bucket_logging", bucket)
    assert logging["target_bucket"] == "${aws_s3_bucket.access_logs.id}"
    assert logging["target_prefix"] == f"{bucket}/"
    # Only S3 log delivery for the data buckets' logs may write into the log bucket.
    (delivery,) = [s for s in bucket_policy("access_logs") if s.get("effect", "Allow") == "Allow"]
    assert delivery["actions"] == ["s3:PutObject"] and delivery["resources"] == ["${aws_s3_bucket.access_logs.arn}/*"]
    assert one(delivery["principals"]) == {"type": "Service", "identifiers": ["logging.s3.amazonaws.com"]}
    assert {c["variable"] for c in delivery["condition"]} == {"aws:SourceAccount", "aws:SourceArn"}


def test_kms_key_rotates() -> None:
    key = resources("aws_kms_key")["main"]
    assert key["enable_key_rotation"] is True and key.get("policy")


def test_rds_is_encrypted_private_and_its_password_is_managed_by_rds() -> None:
    (db,) = resources("aws_db_instance").values()
    assert db["engine"] == "postgres"
    assert db["storage_encrypted"] is True and db["kms_key_id"] == "${aws_kms_key.main.arn}"
    assert db["publicly_accessible"] is False
    assert db["manage_master_user_password"] is True
    assert "password" not in db, "a literal or variable password would end up in state"
    assert db["deletion_protection"] == "${var.deletion_protection}"
    assert db["skip_final_snapshot"] is False
    assert db["backup_retention_period"] == "${var.db_backup_retention_days}"
    assert parsed()["variable"]["db_backup_retention_days"]["default"] >= 7
    # Private subnets only, reachable only from the cluster's security group, TLS enforced.
    assert resources("aws_db_subnet_group")["main"]["subnet_ids"] == "${aws_subnet.private[*].id}"
    ingress = list(resources("aws_vpc_security_group_ingress_rule").values())
    assert [r["referenced_security_group_id"] for r in ingress if r["security_group_id"] == "${aws_security_group.postgres.id}"] == [
        "${aws_eks_cluster.main.vpc_config[0].cluster_security_group_id}"
    ]
    (params,) = resources("aws_db_parameter_group").values()
    assert {"name": "rds.force_ssl", "value": "1"} in params["parameter"]


def test_feature_store_is_private_encrypted_authenticated_and_multi_az() -> None:
    (cache,) = resources("aws_elasticache_replication_group").values()
    assert cache["engine"] in {"valkey", "redis"} and cache["port"] == 6379
    assert cache["parameter_group_name"] == f"default.valkey{cache['engine_version'].split('.')[0]}"
    assert cache["cluster_mode"] == "disabled"  # the service's scripts touch several keys at once
    # TLS only, an AUTH token, at rest with the stack's key.
    assert cache["transit_encryption_enabled"] is True and cache["transit_encryption_mode"] == "required"
    assert cache["auth_token"] == "${random_password.feature_store_auth.result}"
    assert cache["at_rest_encryption_enabled"] is True and cache["kms_key_id"] == "${aws_kms_key.main.arn}"
    token = resources("random_password")["feature_store_auth"]
    assert 32 <= token["length"] <= 128 and token["special"] is False  # no characters to escape in the URL
    # A replica in another zone that takes over by itself.
    assert cache["num_cache_clusters"] >= 2
    assert cache["automatic_failover_enabled"] is True and cache["multi_az_enabled"] is True
    # Private subnets; reachable only from the cluster's security group, on 6379; no egress.
    assert cache["subnet_group_name"] == "${aws_elasticache_subnet_group.feature_store.name}"
    assert resources("aws_elasticache_subnet_group")["feature_store"]["subnet_ids"] == "${aws_subnet.private[*].id}"
    assert cache["security_group_ids"] == ["${aws_security_group.feature_store.id}"]
    group = "${aws_security_group.feature_store.id}"
    ingress = [r for r in resources("aws_vpc_security_group_ingress_rule").values() if r["security_group_id"] == group]
    assert [(r["referenced_security_group_id"], r["ip_protocol"], r["from_port"], r["to_port"]) for r in ingress] == [
        ("${aws_eks_cluster.main.vpc_config[0].cluster_security_group_id}", "tcp", 6379, 6379)
    ]
    assert not [r for r in resources("aws_vpc_security_group_egress_rule").values() if r["security_group_id"] == group]
    assert "ingress" not in resources("aws_security_group")["feature_store"]
    # Snapshots, changes in the maintenance window, logs to the stack's encrypted log groups.
    assert cache["snapshot_retention_limit"] == "${var.feature_store_snapshot_retention_days}"
    assert parsed()["variable"]["feature_store_snapshot_retention_days"]["default"] >= 1
    assert cache["apply_immediately"] is False and cache["maintenance_window"] and cache["final_snapshot_identifier"]
    groups = instances("aws_cloudwatch_log_group")
    for delivery in cache["log_delivery_configuration"]:
        assert delivery["destination_type"] == "cloudwatch-logs"
        reference = re.fullmatch(r"\$\{aws_cloudwatch_log_group\.(.+)\.name\}", delivery["destination"])
        assert reference, delivery["destination"]
        assert groups[reference.group(1)]["kms_key_id"] == "${aws_kms_key.main.arn}"
    assert {d["log_type"] for d in cache["log_delivery_configuration"]} == {"slow-log", "engine-log"}
    variable = parsed()["variable"]["feature_store_node_type"]
    assert variable["default"] == "cache.t4g.small" and variable.get("validation")


def test_feature_store_secret_is_encrypted_and_holds_the_tls_url() -> None:
    secret = resources("aws_secretsmanager_secret")["feature_store_auth"]
    assert secret["kms_key_id"] == "${aws_kms_key.main.arn}"
    (version,) = resources("aws_secretsmanager_secret_version").values()
    assert version["secret_id"] == "${aws_secretsmanager_secret.feature_store_auth.id}"
    body = version["secret_string"]
    assert body.startswith("${jsonencode({") and "auth_token = random_password.feature_store_auth.result" in body
    endpoint = "${aws_elasticache_replication_group.feature_store.primary_endpoint_address}"
    url = "rediss://:${random_password.feature_store_auth.result}@%s:${aws_elasticache_replication_group.feature_store.port}/0"
    assert f'url = "{url % endpoint}"' in body  # FRAUD_FEATURE_STORE_URL, TLS (deploy/README.md)


def test_vpc_cni_enforces_network_policies() -> None:
    """deploy/k8s/fraud-service.yaml has a NetworkPolicy; without the VPC CNI's agent it is inert."""
    addons = instances("aws_eks_addon")
    assert {body["addon_name"] for body in addons.values()} == {"vpc-cni", "kube-proxy", "coredns"}
    (cni,) = [body for body in addons.values() if body["addon_name"] == "vpc-cni"]
    assert re.fullmatch(r'\$\{jsonencode\(\{\s*enableNetworkPolicy\s*=\s*"true"\s*\}\)\}', cni["configuration_values"])


def test_ecr_tags_are_immutable_and_images_scanned_and_encrypted() -> None:
    (repo,) = resources("aws_ecr_repository").values()
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert one(repo["image_scanning_configuration"])["scan_on_push"] is True
    assert one(repo["encryption_configuration"])["encryption_type"] == "KMS"


def test_no_output_exposes_a_password() -> None:
    outputs = parsed()["output"]
    for name, body in outputs.items():
        value = str(body["value"])
        assert "password" not in name.lower() and "password" not in value.lower(), name
        assert "random_" not in value and "auth_token" not in value, name
        assert "aws_secretsmanager_secret_version" not in value, name
    assert outputs["db_master_secret_arn"]["value"] == "${aws_db_instance.postgres.master_user_secret[0].secret_arn}"
    assert outputs["feature_store_auth_secret_arn"]["value"] == "${aws_secretsmanager_secret.feature_store_auth.arn}"
    # A generated secret is stored in plain text in the state. The only one: the feature store's
    # AUTH token (ElastiCache takes no managed password), used by the cache and its secret only.
    assert set(resources("random_password")) == {"feature_store_auth"}
    assert set(resources("aws_secretsmanager_secret_version")) == {"feature_store_auth"}
    users = [
        f"{rtype}.{name}"
        for rtype, bodies in parsed()["resource"].items()
        for name, body in bodies.items()
        if "random_password." in json.dumps(body)
    ]
    assert sorted(users) == ["aws_elasticache_replication_group.feature_store", "aws_secretsmanager_secret_version.feature_store_auth"]
    assert "random_password." not in json.dumps(parsed()["data"]) + json.dumps(parsed()["locals"])


def test_outputs_feed_the_deployment() -> None:
    outputs = parsed()["output"]
    assert {
        "artifact_bucket",
        "image_bucket",
        "ecr_repository_url",
        "db_address",
        "db_endpoint",
        "db_master_secret_arn",
        "feature_store_address",
        "feature_store_port",
        "feature_store_auth_secret_arn",
        "vpc_cidr",
        "cluster_name",
        "dagster_role_arn",
        "mlflow_role_arn",
        "fraud_service_role_arn",
        "app_environment",
    } <= set(outputs)
    assert all(body.get("description") for body in outputs.values())
    assert outputs["artifact_bucket"]["value"] == '${aws_s3_bucket.data["artifacts"].bucket}'
    assert outputs["image_bucket"]["value"] == '${aws_s3_bucket.data["images"].bucket}'
    env = outputs["app_environment"]["value"]
    assert env["ECOSYSTEM_STORAGE_URL"].startswith('s3://${aws_s3_bucket.data["artifacts"].bucket}/')
    assert env["IMAGE_DATASET_URL"].startswith('s3://${aws_s3_bucket.data["images"].bucket}/')
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    # Each workload's role ARN output names that workload's role.
    for role in local("irsa_subjects"):
        output = outputs[role.replace("-", "_") + "_role_arn"]
        assert output["value"] == '${aws_iam_role.irsa["%s"].arn}' % role


def _s3_actions(statements: list[dict[str, Any]], resource_prefix: str) -> set[str]:
    return {a for s in statements for a in s["actions"] for r in s["resources"] if r.startswith(resource_prefix)}


def role_policy(role: str) -> list[dict[str, Any]]:
    """Statements of the inline policy of IRSA role `role` (the only policy the role has)."""
    policies = {address: body for address, body in instances("aws_iam_role_policy").items() if "aws_iam_role.irsa[" in body["role"]}
    (body,) = [body for body in policies.values() if body["role"] == '${aws_iam_role.irsa["%s"].id}' % role]
    return statements(body["policy"])


def test_every_irsa_role_has_exactly_one_inline_policy_and_no_managed_ones() -> None:
    roles = set(local("irsa_subjects"))
    attached = [body["role"] for body in instances("aws_iam_role_policy").values() if "aws_iam_role.irsa[" in body["role"]]
    assert sorted(attached) == sorted('${aws_iam_role.irsa["%s"].id}' % role for role in roles)
    assert not [body for body in resources("aws_iam_role_policy_attachment").values() if "aws_iam_role.irsa" in str(body["role"])]


def test_irsa_policies_name_concrete_buckets_and_keys() -> None:
    artifacts, images, key = '${aws_s3_bucket.data["artifacts"].arn}', '${aws_s3_bucket.data["images"].arn}', "${aws_kms_key.main.arn}"
    for role in ("dagster", "mlflow", "fraud-service"):
        for statement in role_policy(role):
            assert statement["resources"], role
            for resource in statement["resources"]:
                assert resource.startswith((artifacts, images, key)), f"{role}: {resource}"
            if any(r == key for r in statement["resources"]):
                # The key is usable only through S3, not for decrypting anything else.
                assert statement["condition"][0]["variable"] == "kms:ViaService"
                assert statement["condition"][0]["values"] == ["${local.kms_via_s3}"]
    assert local("kms_via_s3") == "s3.${var.region}.amazonaws.com"

    dagster = role_policy("dagster")
    assert {"s3:GetObject", "s3:PutObject"} <= _s3_actions(dagster, artifacts + "/*")
    assert _s3_actions(dagster, images + "/*") == {"s3:GetObject", "s3:GetObjectVersion"}

    mlflow = role_policy("mlflow")
    assert {r for s in mlflow for r in s["resources"] if r.startswith(artifacts + "/")} == {artifacts + "/mlflow-artifacts/*"}
    assert {"s3:GetObject", "s3:PutObject"} <= _s3_actions(mlflow, artifacts + "/mlflow-artifacts/")
    assert not _s3_actions(mlflow, images)

    fraud = role_policy("fraud-service")
    assert {r for s in fraud for r in s["resources"] if r.startswith(artifacts + "/")} == {artifacts + "/mlflow-artifacts/*"}
    assert not {a for s in fraud for a in s["actions"] if re.search("Put|Delete|Encrypt|GenerateDataKey", a)}
    assert not _s3_actions(fraud, images)

    # The other two roles: the stack's two secrets only; their own node groups only.
    (secret, decrypt) = role_policy("external-secrets")
    assert secret["actions"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    assert secret["resources"] == [
        "${aws_db_instance.postgres.master_user_secret[0].secret_arn}",
        "${aws_secretsmanager_secret.feature_store_auth.arn}",
    ]
    assert decrypt["resources"] == [key] and decrypt["condition"][0]["variable"] == "kms:ViaService"
    autoscaler = role_policy("cluster-autoscaler")
    scaling = [s for s in autoscaler if any(a.startswith("autoscaling:Set") or "Terminate" in a for a in s["actions"])]
    assert [s["resources"] for s in scaling] == [["${local.node_group_asg_arns}"]]


def test_irsa_roles_trust_only_their_service_accounts() -> None:
    trust = parsed()["data"]["aws_iam_policy_document"]["irsa_assume"]
    assert parsed()["resource"]["aws_iam_role"]["irsa"]["for_each"] == trust["for_each"] == "${local.irsa_subjects}"
    assert resources("aws_iam_role")["irsa"]["assume_role_policy"] == "${data.aws_iam_policy_document.irsa_assume[each.key].json}"
    (statement,) = trust["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert one(statement["principals"])["identifiers"] == ["${aws_iam_openid_connect_provider.eks.arn}"]
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert conditions["${local.oidc_issuer}:sub"]["test"] == "StringEquals"
    assert conditions["${local.oidc_issuer}:sub"]["values"] == "${each.value}"
    assert conditions["${local.oidc_issuer}:aud"]["values"] == ["sts.amazonaws.com"]
    subjects = local("irsa_subjects")
    assert {"dagster", "mlflow", "fraud-service"} <= set(subjects)
    assert all("*" not in str(s) for s in subjects.values())


def test_wildcard_resources_only_for_unscopable_describe_calls() -> None:
    documents = instances("aws_iam_policy_document", "data")
    for address in documents:
        for statement in statements("${data.aws_iam_policy_document.%s.json}" % address):
            if "*" in statement["resources"]:
                assert statement.get("effect", "Allow") == "Allow"
                unscoped = [a for a in statement["actions"] if not re.match(r"[a-z0-9]+:(Describe|Get\w*FromInstanceRequirements)", a)]
                assert unscoped == [], f"{address}: {unscoped} on '*'"


def test_gpu_node_group_scales_from_zero_tainted_and_labelled() -> None:
    groups = instances("aws_eks_node_group")
    assert set(groups) == {'node["cpu"]', 'node["gpu"]'}
    gpu, cpu = groups['node["gpu"]'], groups['node["cpu"]']
    scaling = one(gpu["scaling_config"])
    assert scaling["min_size"] == 0 and scaling["desired_size"] == 0 and scaling["max_size"] == "${var.gpu_node_max}"
    assert one(gpu["taint"]) == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    assert "gpu" in gpu["labels"].values()
    assert "taint" not in cpu and one(cpu["scaling_config"])["min_size"] == "${var.cpu_node_min}"
    assert "cpu" in cpu["labels"].values()
    # The autoscaler's scale-from-zero hints are on the GPU group's ASG.
    hints = resources("aws_autoscaling_group_tag")["gpu_node_template"]
    assert hints["autoscaling_group_name"].startswith('${aws_eks_node_group.node["gpu"].')
    # Nodes and the control plane live in private subnets; pods cannot reach the node role.
    templates = instances("aws_launch_template")
    for name, group in (("gpu", gpu), ("cpu", cpu)):
        assert group["subnet_ids"] == "${aws_subnet.private[*].id}"
        assert one(group["launch_template"])["id"] == '${aws_launch_template.node["%s"].id}' % name
        assert 'node["%s"]' % name in templates
    for template in templates.values():
        metadata = one(template["metadata_options"])
        assert metadata["http_tokens"] == "required" and metadata["http_put_response_hop_limit"] == 1
        assert one(one(template["block_device_mappings"])["ebs"])["encrypted"] is True


def test_cluster_is_private_by_default_with_encrypted_secrets_and_audit_logs() -> None:
    cluster = resources("aws_eks_cluster")["main"]
    vpc = one(cluster["vpc_config"])
    assert vpc["subnet_ids"] == "${aws_subnet.private[*].id}" and vpc["endpoint_private_access"] is True
    assert vpc["endpoint_public_access"] == "${var.cluster_endpoint_public_access}"
    assert parsed()["variable"]["cluster_endpoint_public_access"]["default"] is False
    assert one(cluster["encryption_config"])["resources"] == ["secrets"]
    assert "audit" in str(cluster["enabled_cluster_log_types"]) or "audit" in parsed()["locals"]["cluster_log_types"]
    assert "aws_iam_openid_connect_provider" in parsed()["resource"]


def test_network_has_private_subnets_nat_and_flow_logs() -> None:
    assert resources("aws_subnet")["public"]["map_public_ip_on_launch"] is False
    assert "aws_nat_gateway" in parsed()["resource"]
    (flow_log,) = resources("aws_flow_log").values()
    assert flow_log["vpc_id"] == "${aws_vpc.main.id}" and flow_log["traffic_type"] == "ALL"
    for group in resources("aws_cloudwatch_log_group").values():
        assert group["kms_key_id"] == "${aws_kms_key.main.arn}" and group["retention_in_days"] == "${var.log_retention_days}"


def test_no_account_ids_or_literal_arns_in_code() -> None:
    for path in [*INFRA.glob("*.tf"), INFRA / "terraform.tfvars.example"]:
        text = path.read_text()
        assert not re.search(r"(?<![\d.])\d{12}(?![\d.])", text), f"{path.name}: looks like an account id"
        assert not re.search(r"arn:aws[a-z-]*:", text), f"{path.name}: literal ARN (build it from local.partition)"


def test_every_checkov_skip_has_a_reason() -> None:
    config_text = (INFRA / ".checkov.yaml").read_text()
    config = yaml.safe_load(config_text)
    inline = set(re.findall(r"#checkov:skip=(CKV2?_AWS_\d+):\S", "\n".join(p.read_text() for p in INFRA.glob("*.tf"))))
    for check in set(config.get("skip-check", [])) | inline:
        # Documented in the config's comments as "#   <ID>  <reason>".
        assert re.search(rf"^#\s+{check}\s+\S.{{10,}}", config_text, re.M), f"{check} is skipped without a reason in .checkov.yaml"


def test_readme_explains_apply_outputs_databases_cost_and_teardown() -> None:
    readme = (INFRA / "README.md").read_text()
    for needle in (
        "terraform init",
        "terraform apply -var-file",
        "terraform destroy",
        "ECOSYSTEM_STORAGE_URL",
        "IMAGE_DATASET_URL",
        "MLFLOW_TRACKING_URI",
        "FRAUD_DB_URL",
        "FRAUD_FEATURE_STORE_URL",
        "feature_store_auth_secret_arn",
        "DAGSTER_PG_",
        "CREATE DATABASE",
        "Cost drivers",
    ):
        assert needle in readme, needle


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform binary not on PATH: formatting is checked where it is installed")
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
