"""Static review of infra/ (Terraform for AWS): what a reviewer checks before anyone runs `apply`.

CI has no AWS account and cannot reach the Terraform registry, so `terraform init`/`validate`
cannot run; every infra/*.tf is parsed with python-hcl2 instead and

- every module block is checked against the vendored input list of the exact version it pins
  (data/terraform-modules/, made by its extract.py): arguments exist, required inputs are given,
  object-typed values use declared attributes only (what `terraform validate` would catch);
- the resources and data sources written by hand are checked against the provider's schema
  (data/terraform-modules/*-provider-*.json, made by extract_resources.py);
- the security properties are asserted on the module inputs that carry them (encryption, private
  subnets, endpoint access, IMDSv2, TLS-only bucket policies, deletion protection, IRSA scoping,
  vpc-cni on IRSA, the EKS upgrade policy) and on the resources written by hand.

`terraform fmt -check` runs when the binary is on PATH. The checkov scan is separate
(infra/check.sh: it needs its own virtualenv).

Repeated blocks are written once with `for_each` over a map; `instances()` and `modules()` expand
them into one body per key (each.key / each.value and `dynamic` blocks substituted), so every
assertion still reads one concrete bucket, role or node group.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

from ecosystem_assets_tests import tools

INFRA = Path(__file__).resolve().parents[2] / "infra"
MODULE_INPUTS = Path(__file__).resolve().parent / "data" / "terraform-modules"
# bucket => its module instance (the data buckets are one module block with for_each)
BUCKETS = {"artifacts": 'data_bucket["artifacts"]', "images": 'data_bucket["images"]', "access_logs": "access_log_bucket"}
DATA_BUCKETS = ("artifacts", "images")
KEY = "${aws_kms_key.main.arn}"
PRIVATE_SUBNETS = "${module.vpc.private_subnets}"
NODE_SECURITY_GROUP = "${module.eks.node_security_group_id}"
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


def _expand(blocks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, body in blocks.items():
        if "for_each" not in body:
            found[name] = _generate_dynamic(body)
            continue
        rest = {k: v for k, v in body.items() if k != "for_each"}
        for key, value in _for_each_entries(body["for_each"]).items():
            found[f'{name}["{key}"]'] = _generate_dynamic(_substitute(rest, "each", key, value))
    return found


def instances(rtype: str, section: str = "resource") -> dict[str, dict[str, Any]]:
    """Bodies of `rtype` by address: `name`, or `name["key"]` per entry of a for_each."""
    return _expand(parsed()[section].get(rtype, {}))


def modules() -> dict[str, dict[str, Any]]:
    """Module blocks by address (`name`, or `name["key"]` per entry of a for_each), arguments as written."""
    return _expand(parsed()["module"])


def module(address: str) -> dict[str, Any]:
    return modules()[address]


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


# --- module inputs: what `terraform validate` would check -------------------------------------------

META_ARGUMENTS = {"source", "version", "for_each", "count", "providers", "depends_on"}
REGISTRY_SOURCE = re.compile(r"terraform-aws-modules/[a-z0-9-]+/aws(//modules/[a-z0-9-]+)?")


@cache
def vendored_inputs() -> dict[tuple[str, str], dict[str, Any]]:
    """(source, version) => the vendored description of that module version (extract.py)."""
    documents = [json.loads(path.read_text()) for path in sorted(MODULE_INPUTS.glob("*.json"))]
    return {(d["source"], d["version"]): d for d in documents if "source" in d}


def _resolved(value: Any) -> Any:
    """A value that is exactly `${local.x}`: the local's value (so its literal structure can be checked)."""
    while isinstance(value, str) and (match := re.fullmatch(r"\$\{local\.(\w+)\}", value)):
        value = local(match.group(1))
    return value


def _vocabulary_errors(value: Any, vocabulary: set[str], path: str) -> list[str]:
    """Keys in a value of an `any`-typed input that the module reads nowhere. A map whose values are
    all maps is taken for a map of names chosen by the caller (rule names, log types): its keys are
    free, its values are checked."""
    value = _resolved(value)
    errors: list[str] = []
    if isinstance(value, dict):
        named_entries = bool(value) and all(isinstance(v, dict) for v in value.values())
        for key, item in value.items():
            if not named_entries and key not in vocabulary:
                errors.append(f"{path}: the module reads no key {key!r}")
            errors += _vocabulary_errors(item, vocabulary, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += _vocabulary_errors(item, vocabulary, f"{path}[{index}]")
    return errors


def type_errors(value: Any, schema: Any, vocabulary: set[str], path: str) -> list[str]:
    """Where a literal value does not fit a module input's type: unknown or missing object
    attributes, a map or list where a primitive is expected. Expressions (strings) pass."""
    value = _resolved(value)
    if schema == "any":
        return _vocabulary_errors(value, vocabulary, path)
    if isinstance(value, str) or value is None or isinstance(value, bool | int | float):
        return []
    if isinstance(schema, str):
        return [f"{path}: a {type(value).__name__} where the module expects {schema}"]
    (kind, inner), *_ = schema.items()
    errors: list[str] = []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: a {type(value).__name__} where the module expects an object"]
        errors += [f"{path}: no attribute {key!r} in the module's type" for key in value if key not in inner]
        errors += [f"{path}: required attribute {key!r} missing" for key, a in inner.items() if not a["optional"] and key not in value]
        for key, item in value.items():
            if key in inner:
                errors += type_errors(item, inner[key]["type"], vocabulary, f"{path}.{key}")
    elif kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: a {type(value).__name__} where the module expects a map"]
        for key, item in value.items():
            errors += type_errors(item, inner, vocabulary, f"{path}.{key}")
    elif kind in {"list", "set"}:
        if not isinstance(value, list):
            return [f"{path}: a {type(value).__name__} where the module expects a {kind}"]
        for index, item in enumerate(value):
            errors += type_errors(item, inner, vocabulary, f"{path}[{index}]")
    elif kind == "tuple" and isinstance(value, list):
        for index, (item, item_schema) in enumerate(zip(value, inner, strict=False)):
            errors += type_errors(item, item_schema, vocabulary, f"{path}[{index}]")
    return errors


def module_input_errors(name: str, body: dict[str, Any]) -> list[str]:
    description = vendored_inputs()[(body["source"], body["version"])]
    inputs, vocabulary = description["inputs"], set(description["vocabulary"])
    arguments = set(body) - META_ARGUMENTS
    errors = [
        f"module.{name}: {argument!r} is not an input of {body['source']} {body['version']}" for argument in sorted(arguments - set(inputs))
    ]
    errors += [
        f"module.{name}: required input {key!r} not given"
        for key, spec in sorted(inputs.items())
        if spec["required"] and key not in arguments
    ]
    for argument in sorted(arguments & set(inputs)):
        errors += type_errors(body[argument], inputs[argument]["type"], vocabulary, f"module.{name}.{argument}")
    return errors


# The module blocks of infra/ (each checked against its pinned version's inputs below).
MODULES = (
    "vpc",
    "eks",
    "postgres",
    "data_bucket",
    "access_log_bucket",
    "irsa",
    "vpc_cni_irsa",
    "load_balancer_controller_irsa",
    "feature_store",
)


def test_modules_are_registry_modules_pinned_to_exact_versions() -> None:
    blocks = parsed()["module"]
    assert set(blocks) == set(MODULES)
    for name, body in blocks.items():
        assert REGISTRY_SOURCE.fullmatch(body["source"]), f"module.{name}: {body['source']} is not a terraform-aws-modules registry source"
        assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"]), f"module.{name}: version {body['version']!r} is not an exact pin"
        assert (body["source"], body["version"]) in vendored_inputs(), (
            f"module.{name}: no input list for {body['source']} {body['version']} (extract.py)"
        )
    # One version per module across the stack, and no input list that no block uses.
    assert len({(b["source"], b["version"]) for b in blocks.values()}) == len({b["source"] for b in blocks.values()})
    assert set(vendored_inputs()) == {(b["source"], b["version"]) for b in blocks.values()}


@pytest.mark.parametrize(
    "name",
    MODULES,
)
def test_module_arguments_exist_in_the_pinned_version(name: str) -> None:
    assert module_input_errors(name, parsed()["module"][name]) == []


def test_the_module_input_check_catches_mistakes() -> None:
    """The checker itself: a misspelt argument, a missing required input, a misspelt attribute deep
    in a typed object, a key no `any`-typed input reads."""
    eks, rds, bucket = parsed()["module"]["eks"], parsed()["module"]["postgres"], parsed()["module"]["access_log_bucket"]
    groups = json.loads(json.dumps(eks["eks_managed_node_groups"]))
    groups["gpu"]["iam_role_attach_cni_polcy"] = False
    groups["gpu"]["metadata_options"]["http_token"] = "required"
    errors = module_input_errors("eks", {**eks, "upgrade_polcy": {"support_type": "STANDARD"}, "eks_managed_node_groups": groups})
    assert errors == [
        "module.eks: 'upgrade_polcy' is not an input of terraform-aws-modules/eks/aws 21.19.0",
        "module.eks.eks_managed_node_groups.gpu: no attribute 'iam_role_attach_cni_polcy' in the module's type",
        "module.eks.eks_managed_node_groups.gpu.metadata_options: no attribute 'http_token' in the module's type",
    ]
    assert module_input_errors("postgres", {k: v for k, v in rds.items() if k != "identifier"}) == [
        "module.postgres: required input 'identifier' not given"
    ]
    sse = {"rule": {"apply_server_side_encryption_by_default": {"sse_algoritm": "AES256"}}}
    assert module_input_errors("access_log_bucket", {**bucket, "server_side_encryption_configuration": sse}) == [
        "module.access_log_bucket.server_side_encryption_configuration.rule.apply_server_side_encryption_by_default: the module reads no key 'sse_algoritm'"
    ]


# --- resource arguments: the provider schemas -------------------------------------------------------

RESOURCE_META_ARGUMENTS = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}


@cache
def provider_schemas() -> dict[str, dict[str, Any]]:
    """Provider name ("aws", "random") => the vendored argument schema of the types infra/ uses (extract_resources.py)."""
    documents = [json.loads(path.read_text()) for path in sorted(MODULE_INPUTS.glob("*-provider-*.json"))]
    return {d["provider"].rsplit("/", 1)[-1]: d for d in documents}


def argument_errors(body: dict[str, Any], schema: dict[str, Any], path: str, top: bool = True) -> list[str]:
    """Arguments and nested blocks of a resource body that the schema lacks, and required ones missing."""
    errors: list[str] = []
    present = set(body)
    for key, value in body.items():
        if top and key in RESOURCE_META_ARGUMENTS:
            continue
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    present.add(name)
                    if "block" not in schema.get(name, {}):
                        errors.append(f"{path}: no block {name!r}")
                    else:
                        errors += argument_errors(one(spec["content"]), schema[name]["block"], f"{path}.{name}", top=False)
            continue
        if key not in schema:
            errors.append(f"{path}: no argument {key!r}")
        elif "block" in schema[key]:
            for block in value if isinstance(value, list) else [value]:
                if isinstance(block, dict):
                    errors += argument_errors(block, schema[key]["block"], f"{path}.{key}", top=False)
    errors += [f"{path}: required argument {key!r} missing" for key, spec in schema.items() if spec["required"] and key not in present]
    return errors


def resource_argument_errors() -> list[str]:
    errors: list[str] = []
    for section, kind in (("resource", "resources"), ("data", "data_sources")):
        for rtype, blocks in parsed()[section].items():
            provider = provider_schemas().get(rtype.split("_", 1)[0], {})
            schema = provider.get(kind, {}).get(rtype)
            if schema is None:
                errors.append(f"{section} {rtype}: no vendored schema (extract_resources.py --types-from infra)")
                continue
            for name, body in blocks.items():
                errors += argument_errors(body, schema, f"{'data.' if section == 'data' else ''}{rtype}.{name}")
    return errors


def test_resource_arguments_exist_in_the_provider_schema() -> None:
    """The resources and data sources written by hand, against the schema of the provider's major
    version (from the prebuilt CDKTF bindings, extract_resources.py): what `terraform validate`
    would report about them."""
    assert resource_argument_errors() == []
    constraints = one(one(parsed()["terraform"])["required_providers"])
    for name, schema in provider_schemas().items():
        major = re.search(r"(\d+)\.", constraints[name]["version"])
        assert major and schema["version"].split(".")[0] == major.group(1), (
            f"{name}: schema {schema['version']} vs {constraints[name]['version']}"
        )


def test_the_resource_argument_check_catches_mistakes() -> None:
    schema = provider_schemas()["aws"]["resources"]["aws_ecr_repository"]
    repo = json.loads(json.dumps(resources("aws_ecr_repository")["app"]))
    repo["image_tag_mutabilty"] = repo.pop("image_tag_mutability")
    repo["image_scanning_configuration"][0]["scan_on_pushh"] = True
    del repo["name"]
    assert sorted(argument_errors(repo, schema, "aws_ecr_repository.app")) == [
        "aws_ecr_repository.app.image_scanning_configuration: no argument 'scan_on_pushh'",
        "aws_ecr_repository.app: no argument 'image_tag_mutabilty'",
        "aws_ecr_repository.app: required argument 'name' missing",
    ]


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
        "kms.tf",
        "outputs.tf",
        "terraform.tfvars.example",
        "README.md",
        ".checkov.yaml",
        ".gitignore",
        "check.sh",
    ]
    assert [name for name in expected if not (INFRA / name).is_file()] == []


def test_terraform_and_providers_are_pinned_and_the_lock_file_is_committed() -> None:
    settings = one(parsed()["terraform"])
    # >= 1.11.1: the rds module's floor (its ephemeral inputs).
    assert re.fullmatch(r">= ?1\.(1[1-9]|[2-9]\d)(\.\d+)?", settings["required_version"]), settings["required_version"]
    providers = one(settings["required_providers"])
    assert providers["aws"]["source"] == "hashicorp/aws"
    # 6.x, at least the s3-bucket module's floor (6.42).
    assert (match := re.fullmatch(r"~> 6\.(\d+)(\.\d+)?", providers["aws"]["version"])) and int(match.group(1)) >= 42, providers["aws"]
    assert all(p.get("version") for p in providers.values()), "every provider needs a version constraint"
    # The lock file (provider checksums, written by `terraform init`) is committed, not ignored.
    ignore = (INFRA / ".gitignore").read_text()
    assert not [
        line
        for line in ignore.splitlines()
        if line.strip() and not line.startswith(("#", "!")) and fnmatch(".terraform.lock.hcl", line.strip())
    ]
    if shutil.which("git") and (INFRA.parent / ".git").exists():
        result = subprocess.run(["git", "-C", str(INFRA.parent), "check-ignore", "-q", "infra/.terraform.lock.hcl"], check=False)
        assert result.returncode == 1, "infra/.terraform.lock.hcl is git-ignored"
    readme = (INFRA / "README.md").read_text()
    assert ".terraform.lock.hcl" in readme and "terraform providers lock" in readme


def test_every_variable_has_description_and_type() -> None:
    variables = parsed()["variable"]
    assert {"region", "name", "cluster_version", "gpu_node_max", "db_instance_class", "deletion_protection", "tags"} <= set(variables)
    missing = [name for name, body in variables.items() if not body.get("description") or not body.get("type")]
    assert missing == []
    assert variables["deletion_protection"]["default"] is True
    assert variables["force_destroy"]["default"] is False
    # Nothing secret is a variable: the database password is generated by RDS, the feature store's
    # AUTH token by random_password.
    assert [name for name in variables if re.search("password|secret_key|token", name)] == []


def test_tfvars_example_sets_only_declared_variables() -> None:
    example = hcl2.loads((INFRA / "terraform.tfvars.example").read_text(), serialization_options=_OPTIONS)
    assert set(example) - set(parsed()["variable"]) == set()
    assert example["deletion_protection"] is True


# --- S3 --------------------------------------------------------------------------------------------


def test_buckets_and_their_names() -> None:
    # The bucket names the deployment's outputs and README mention are unchanged.
    names = {address: body["bucket"] for address, body in modules().items() if body["source"] == "terraform-aws-modules/s3-bucket/aws"}
    assert names == {
        'data_bucket["artifacts"]': "${local.name}-artifacts-${local.bucket_suffix}",
        'data_bucket["images"]': "${local.name}-images-${local.bucket_suffix}",
        "access_log_bucket": "${local.access_log_bucket}",
    }
    assert local("access_log_bucket") == "${local.name}-access-logs-${local.bucket_suffix}"
    assert set(names) == set(BUCKETS.values())
    assert not parsed()["resource"].get("aws_s3_bucket"), "buckets come from the s3-bucket module"


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_is_versioned_encrypted_private_tls_only_with_lifecycle(bucket: str) -> None:
    body = module(BUCKETS[bucket])
    assert body["versioning"] == {"enabled": True}
    default = body["server_side_encryption_configuration"]["rule"]["apply_server_side_encryption_by_default"]
    assert default["sse_algorithm"] in {"aws:kms", "AES256"}
    # Public access blocked, ACLs off, plain HTTP and TLS < 1.2 denied by the bucket policy.
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert body[flag] is True, flag
    assert body["control_object_ownership"] is True and body["object_ownership"] == "BucketOwnerEnforced"
    assert body["attach_deny_insecure_transport_policy"] is True and body["attach_require_latest_tls_policy"] is True
    assert "acl" not in body and "policy" not in body and body.get("attach_public_policy", False) is False
    assert body["force_destroy"] == "${var.force_destroy}"
    (rule,) = body["lifecycle_rule"]
    assert rule["enabled"] is True and rule["noncurrent_version_expiration"]["days"] and rule["abort_incomplete_multipart_upload_days"] == 7


@pytest.mark.parametrize("bucket", DATA_BUCKETS)
def test_data_buckets_use_the_stack_kms_key_and_are_access_logged(bucket: str) -> None:
    body = module(BUCKETS[bucket])
    rule = body["server_side_encryption_configuration"]["rule"]
    assert rule == {
        "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": KEY},
        "bucket_key_enabled": True,
    }
    assert body["lifecycle_rule"][0]["noncurrent_version_expiration"] == {"days": "${var.noncurrent_version_days}"}
    assert body["logging"] == {"target_bucket": "${module.access_log_bucket.s3_bucket_id}", "target_prefix": f"{bucket}/"}
    # Only S3 log delivery for this account's data buckets may write into the log bucket.
    logs = module(BUCKETS["access_logs"])
    assert logs["attach_access_log_delivery_policy"] is True
    assert logs["access_log_delivery_policy_source_accounts"] == ["${local.account_id}"]
    assert "local.data_buckets" in logs["access_log_delivery_policy_source_buckets"]
    assert logs["server_side_encryption_configuration"]["rule"]["apply_server_side_encryption_by_default"] == {"sse_algorithm": "AES256"}


def test_kms_key_rotates() -> None:
    key = resources("aws_kms_key")["main"]
    assert key["enable_key_rotation"] is True and key.get("policy")


# --- RDS, ElastiCache ------------------------------------------------------------------------------


def test_rds_is_encrypted_private_and_its_password_is_managed_by_rds() -> None:
    db = module("postgres")
    assert db["engine"] == "postgres" and db["identifier"] == "${local.name}-postgres"
    assert db["storage_encrypted"] is True and db["kms_key_id"] == KEY
    assert db["publicly_accessible"] is False
    assert db["manage_master_user_password"] is True and db["master_user_secret_kms_key_id"] == KEY
    assert not {"password", "password_wo"} & set(db), "a literal or variable password would end up in code or state"
    assert db["deletion_protection"] == "${var.deletion_protection}"
    assert db["skip_final_snapshot"] is False
    assert db["backup_retention_period"] == "${var.db_backup_retention_days}"
    assert parsed()["variable"]["db_backup_retention_days"]["default"] >= 7
    assert db["performance_insights_kms_key_id"] == KEY and db["cloudwatch_log_group_kms_key_id"] == KEY
    assert db["cloudwatch_log_group_retention_in_days"] == "${var.log_retention_days}"
    # Private subnets only, reachable only from the cluster's nodes and pods, TLS enforced.
    assert db["subnet_ids"] == PRIVATE_SUBNETS and db["create_db_subnet_group"] is True
    assert db["vpc_security_group_ids"] == ["${aws_security_group.postgres.id}"]
    ingress = list(resources("aws_vpc_security_group_ingress_rule").values())
    assert [
        (r["referenced_security_group_id"], r["from_port"], r["to_port"])
        for r in ingress
        if r["security_group_id"] == "${aws_security_group.postgres.id}"
    ] == [(NODE_SECURITY_GROUP, 5432, 5432)]
    assert not [
        r for r in resources("aws_vpc_security_group_egress_rule").values() if r["security_group_id"] == "${aws_security_group.postgres.id}"
    ]
    assert "ingress" not in resources("aws_security_group")["postgres"] and "egress" not in resources("aws_security_group")["postgres"]
    assert {"name": "rds.force_ssl", "value": "1"} in db["parameters"] and db["create_db_parameter_group"] is True


def test_feature_store_is_private_encrypted_authenticated_and_multi_az() -> None:
    cache = module("feature_store")
    assert cache["engine"] in {"valkey", "redis"} and cache["port"] == 6379
    assert cache["parameter_group_name"] == f"default.valkey{cache['engine_version'].split('.')[0]}"
    assert cache["cluster_mode"] == "disabled"  # the service's scripts touch several keys at once
    # TLS only, an AUTH token, at rest with the stack's key.
    assert cache["transit_encryption_enabled"] is True and cache["transit_encryption_mode"] == "required"
    assert cache["auth_token"] == "${random_password.feature_store_auth.result}"
    assert cache["at_rest_encryption_enabled"] is True and cache["kms_key_arn"] == KEY
    token = resources("random_password")["feature_store_auth"]
    assert 32 <= token["length"] <= 128 and token["special"] is False  # no characters to escape in the URL
    # A replica in another zone that takes over by itself.
    assert cache["num_cache_clusters"] >= 2
    assert cache["automatic_failover_enabled"] is True and cache["multi_az_enabled"] is True
    # Private subnets; the module's security group open only to the cluster's nodes and pods, on 6379.
    assert cache["subnet_ids"] == PRIVATE_SUBNETS and cache.get("create_subnet_group", True) is True
    assert cache.get("create_security_group", True) is True and "security_group_ids" not in cache
    (rule,) = cache["security_group_rules"].values()
    assert rule == {
        "type": "ingress",
        "description": rule["description"],
        "ip_protocol": "tcp",
        "from_port": 6379,
        "to_port": 6379,
        "referenced_security_group_id": NODE_SECURITY_GROUP,
    }
    # Snapshots, changes in the maintenance window, logs to encrypted log groups.
    assert cache["snapshot_retention_limit"] == "${var.feature_store_snapshot_retention_days}"
    assert parsed()["variable"]["feature_store_snapshot_retention_days"]["default"] >= 1
    assert cache["apply_immediately"] is False and cache["maintenance_window"] and cache["final_snapshot_identifier"]
    deliveries = cache["log_delivery_configuration"]
    assert set(deliveries) == {"slow-log", "engine-log"}
    for delivery in deliveries.values():
        assert delivery["destination_type"] == "cloudwatch-logs"
        assert delivery["cloudwatch_log_group_kms_key_id"] == KEY
        assert delivery["cloudwatch_log_group_retention_in_days"] == "${var.log_retention_days}"
    variable = parsed()["variable"]["feature_store_node_type"]
    assert variable["default"] == "cache.t4g.small" and variable.get("validation")


def test_feature_store_secret_is_encrypted_and_holds_the_tls_url() -> None:
    secret = resources("aws_secretsmanager_secret")["feature_store_auth"]
    assert secret["kms_key_id"] == KEY
    version = resources("aws_secretsmanager_secret_version")["feature_store_auth"]
    assert version["secret_id"] == "${aws_secretsmanager_secret.feature_store_auth.id}"
    body = version["secret_string"]
    assert body.startswith("${jsonencode({") and "auth_token = random_password.feature_store_auth.result" in body
    endpoint = "${module.feature_store.replication_group_primary_endpoint_address}"
    url = "rediss://:${random_password.feature_store_auth.result}@%s:${module.feature_store.replication_group_port}/0"
    assert f'url = "{url % endpoint}"' in body  # FRAUD_FEATURE_STORE_URL, TLS (deploy/README.md)


# --- EKS -------------------------------------------------------------------------------------------


def test_cluster_is_private_by_default_with_encrypted_secrets_audit_logs_and_an_upgrade_policy() -> None:
    eks = module("eks")
    assert eks["subnet_ids"] == PRIVATE_SUBNETS and eks["vpc_id"] == "${module.vpc.vpc_id}"
    assert eks["endpoint_private_access"] is True
    assert eks["endpoint_public_access"] == "${var.cluster_endpoint_public_access}"
    assert eks["endpoint_public_access_cidrs"] == "${var.cluster_endpoint_public_access_cidrs}"  # the module's default is 0.0.0.0/0
    variables = parsed()["variable"]
    assert variables["cluster_endpoint_public_access"]["default"] is False
    conditions = [v["condition"] for v in variables["cluster_endpoint_public_access_cidrs"]["validation"]]
    assert any("0.0.0.0/0" in c for c in conditions) and any(
        "var.cluster_endpoint_public_access" in c and "length(" in c for c in conditions
    )
    # Kubernetes Secrets envelope-encrypted with the stack's key.
    assert eks["create_kms_key"] is False and eks["attach_encryption_policy"] is True
    assert eks["encryption_config"] == {"provider_key_arn": KEY, "resources": ["secrets"]}
    assert {"api", "audit", "authenticator"} <= set(eks["enabled_log_types"])
    assert eks["cloudwatch_log_group_kms_key_id"] == KEY and eks["cloudwatch_log_group_retention_in_days"] == "${var.log_retention_days}"
    # Access entries only (no aws-auth ConfigMap); the OIDC provider for IRSA; deletion protection.
    assert eks["authentication_mode"] == "API" and eks["enable_irsa"] is True
    assert eks["deletion_protection"] == "${var.deletion_protection}"
    # At the end of standard support EKS upgrades the control plane instead of billing extended support.
    assert eks["upgrade_policy"] == {"support_type": "STANDARD"}
    assert eks["kubernetes_version"] == "${var.cluster_version}"


def test_vpc_cni_runs_on_irsa_and_enforces_network_policies() -> None:
    """deploy/k8s/fraud-service.yaml has a NetworkPolicy; without the VPC CNI's agent it is inert.
    The CNI's EC2 rights are on its own role, trusted by kube-system:aws-node only, not on the nodes."""
    addons = module("eks")["addons"]
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns"}
    cni = addons["vpc-cni"]
    assert cni["service_account_role_arn"] == "${module.vpc_cni_irsa.arn}" and cni["before_compute"] is True
    assert re.fullmatch(r'\$\{jsonencode\(\{\s*enableNetworkPolicy\s*=\s*"true"\s*\}\)\}', cni["configuration_values"])
    role = module("vpc_cni_irsa")
    assert role["attach_vpc_cni_policy"] is True and role["vpc_cni_enable_ipv4"] is True
    assert role["oidc_providers"] == {
        "eks": {"provider_arn": "${module.eks.oidc_provider_arn}", "namespace_service_accounts": ["kube-system:aws-node"]}
    }
    for name, group in module("eks")["eks_managed_node_groups"].items():
        assert group["iam_role_attach_cni_policy"] is False, f"{name}: the CNI policy on the node role"


def test_gpu_node_group_scales_from_zero_tainted_and_labelled() -> None:
    groups = module("eks")["eks_managed_node_groups"]
    assert set(groups) == {"cpu", "gpu"}
    gpu, cpu = groups["gpu"], groups["cpu"]
    assert gpu["min_size"] == 0 and gpu["desired_size"] == 0 and gpu["max_size"] == "${var.gpu_node_max}"
    assert gpu["taints"] == {"gpu": {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}}
    assert "gpu" in gpu["labels"].values()
    assert "taints" not in cpu and cpu["min_size"] == "${var.cpu_node_min}"
    assert "cpu" in cpu["labels"].values()
    # The autoscaler's scale-from-zero hints are on the GPU group's ASG.
    hints = resources("aws_autoscaling_group_tag")["gpu_node_template"]
    assert hints["autoscaling_group_name"].startswith('${module.eks.eks_managed_node_groups["gpu"].')
    # Nodes in private subnets; IMDSv2 with one hop, so pods cannot reach the node role; encrypted disks.
    for name, group in groups.items():
        assert group["subnet_ids"] == PRIVATE_SUBNETS, name
        assert group["capacity_type"] == "ON_DEMAND", name
        assert group["metadata_options"] == {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}, name
        (disk,) = group["block_device_mappings"].values()
        assert disk["ebs"]["encrypted"] is True and disk["ebs"]["volume_type"] == "gp3", name
        assert group.get("use_custom_launch_template", True) is True, (
            f"{name}: metadata options and disks need the module's launch template"
        )


# --- outputs ---------------------------------------------------------------------------------------


def test_no_output_exposes_a_password() -> None:
    outputs = parsed()["output"]
    for name, body in outputs.items():
        value = str(body["value"])
        assert "password" not in name.lower() and "password" not in value.lower(), name
        assert "random_" not in value and "auth_token" not in value, name
        assert "aws_secretsmanager_secret_version" not in value, name
    assert outputs["db_master_secret_arn"]["value"] == "${module.postgres.db_instance_master_user_secret_arn}"
    assert outputs["feature_store_auth_secret_arn"]["value"] == "${aws_secretsmanager_secret.feature_store_auth.arn}"
    # A generated secret is stored in plain text in the state. The only one: the feature store's
    # AUTH token (ElastiCache takes no managed password), used by the cache and its secret only.
    # The applications' passwords are ephemeral and reach their secrets through write-only
    # arguments (app_secrets.tf): in neither plan nor state.
    assert set(resources("random_password")) == {"feature_store_auth"}
    assert set(resources("aws_secretsmanager_secret_version")) == {"feature_store_auth", "db_app", "mlflow_server"}
    for name in ("db_app", "mlflow_server"):
        version = resources("aws_secretsmanager_secret_version")[name]
        assert "secret_string" not in version and "ephemeral.random_password." in version["secret_string_wo"], name
        assert version["secret_string_wo_version"].startswith("${var."), name
        assert resources("aws_secretsmanager_secret")[name]["kms_key_id"] == KEY, name
    users = [
        f"{section}.{rtype}.{name}" if section == "resource" else f"module.{rtype}"
        for section in ("resource", "module")
        for rtype, bodies in parsed()[section].items()
        for name, body in (bodies.items() if section == "resource" else [(rtype, bodies)])
        if re.search(r"(?<!ephemeral\.)random_password\.", json.dumps(body))
    ]
    assert sorted(users) == ["module.feature_store", "resource.aws_secretsmanager_secret_version.feature_store_auth"]
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
        "oidc_provider_arn",
        "dagster_role_arn",
        "mlflow_role_arn",
        "fraud_service_role_arn",
        "cluster_autoscaler_role_arn",
        "external_secrets_role_arn",
        "load_balancer_controller_role_arn",
        "app_environment",
    } <= set(outputs)
    assert all(body.get("description") for body in outputs.values())
    assert outputs["artifact_bucket"]["value"] == '${module.data_bucket["artifacts"].s3_bucket_id}'
    assert outputs["image_bucket"]["value"] == '${module.data_bucket["images"].s3_bucket_id}'
    env = outputs["app_environment"]["value"]
    assert env["ECOSYSTEM_STORAGE_URL"].startswith('s3://${module.data_bucket["artifacts"].s3_bucket_id}/')
    assert env["IMAGE_DATASET_URL"].startswith('s3://${module.data_bucket["images"].s3_bucket_id}/')
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    # Each workload's role ARN output names that workload's role.
    for role in local("workload_roles"):
        output = outputs[role.replace("-", "_") + "_role_arn"]
        assert output["value"] == '${module.irsa["%s"].arn}' % role


# --- IRSA ------------------------------------------------------------------------------------------


def _s3_actions(statements: list[dict[str, Any]], resource_prefix: str) -> set[str]:
    return {a for s in statements for a in s["actions"] for r in s["resources"] if r.startswith(resource_prefix)}


def role_policy(role: str) -> list[dict[str, Any]]:
    """Statements of the inline policy of workload role `role` (the only policy the role has)."""
    (document,) = module('irsa["%s"]' % role)["source_inline_policy_documents"]
    return statements(document)


def test_every_workload_role_has_exactly_one_inline_policy_and_no_managed_ones() -> None:
    roles = local("workload_roles")
    assert set(roles) == {"dagster", "dagster-webserver", "mlflow", "fraud-service", "cluster-autoscaler", "external-secrets"}
    assert parsed()["module"]["irsa"]["for_each"] == "${local.workload_roles}"
    for role in roles:
        body = module('irsa["%s"]' % role)
        assert body["name"] == "${local.name}-%s" % role and body["use_name_prefix"] is False
        assert body["create_policy"] is False and body["create_inline_policy"] is True
        assert body["source_inline_policy_documents"] == [roles[role]["policy"]]
        attached = [
            k
            for k in body
            if k.startswith("attach_") or k in {"policies", "permissions", "source_policy_documents", "inline_policy_permissions"}
        ]
        assert attached == [], f"{role}: {attached}"


def test_irsa_policies_name_concrete_buckets_and_keys() -> None:
    artifacts, images = '${module.data_bucket["artifacts"].s3_bucket_arn}', '${module.data_bucket["images"].s3_bucket_arn}'
    for role in ("dagster", "mlflow", "fraud-service"):
        for statement in role_policy(role):
            assert statement["resources"], role
            for resource in statement["resources"]:
                assert resource.startswith((artifacts, images, KEY)), f"{role}: {resource}"
            if any(r == KEY for r in statement["resources"]):
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

    # The webserver: the compute logs, read-only.
    webserver = role_policy("dagster-webserver")
    assert {r for s in webserver for r in s["resources"] if r.startswith(artifacts + "/")} == {artifacts + "/compute-logs/*"}
    assert not {a for s in webserver for a in s["actions"] if re.search("Put|Delete|Encrypt|GenerateDataKey", a)}
    assert not _s3_actions(webserver, images)

    # The other two roles: the applications' secrets only (never the RDS master secret); their own
    # node groups only.
    (secret, decrypt) = role_policy("external-secrets")
    assert secret["actions"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    assert secret["resources"] == [
        '${aws_secretsmanager_secret.db_app["dagster"].arn}',
        '${aws_secretsmanager_secret.db_app["mlflow"].arn}',
        '${aws_secretsmanager_secret.db_app["fraud"].arn}',
        "${aws_secretsmanager_secret.mlflow_server.arn}",
        "${aws_secretsmanager_secret.feature_store_auth.arn}",
    ]
    assert not any("master_user_secret" in r for s in role_policy("external-secrets") for r in s["resources"])
    assert decrypt["resources"] == [KEY] and decrypt["condition"][0]["variable"] == "kms:ViaService"
    autoscaler = role_policy("cluster-autoscaler")
    scaling = [s for s in autoscaler if any(a.startswith("autoscaling:Set") or "Terminate" in a for a in s["actions"])]
    assert [s["resources"] for s in scaling] == [["${local.node_group_asg_arns}"]]
    assert "module.eks.eks_managed_node_groups_autoscaling_group_names" in local("node_group_asg_arns")


def test_irsa_roles_trust_only_their_service_accounts() -> None:
    """The module writes the trust policy: sts:AssumeRoleWithWebIdentity from the cluster's OIDC
    provider, StringEquals on sub (system:serviceaccount:<namespace:name>) and aud (sts.amazonaws.com)."""
    roles = {address: body for address, body in modules().items() if body["source"].endswith("//modules/iam-role-for-service-accounts")}
    assert len(roles) == 8
    for address, body in roles.items():
        (provider,) = body["oidc_providers"].values()
        assert provider["provider_arn"] == "${module.eks.oidc_provider_arn}", address
        assert body.get("trust_condition_test", "StringEquals") == "StringEquals", address  # not StringLike: no wildcards
        assert body["max_session_duration"] == 3600 and body["use_name_prefix"] is False, address
        # A managed policy of the module's gets a fixed default name ("VPC_CNI_IPv4"): two stacks in
        # one account would collide, so it is named after the stack.
        if body.get("create_policy", True):
            assert body["policy_name"].startswith("${local.name}-"), address
    subjects = {key: role["service_accounts"] for key, role in local("workload_roles").items()}
    assert subjects["mlflow"] == ["${var.k8s_namespace}:${var.mlflow_service_account}"]
    assert subjects["fraud-service"] == ["${var.k8s_namespace}:${var.fraud_service_account}"]
    assert "var.dagster_service_accounts" in subjects["dagster"]
    # The S3 role is trusted by the runs' and the training pods' accounts only: not by the
    # webserver, the daemon or the code server (deploy/k8s/dagster-rbac.yaml).
    assert parsed()["variable"]["dagster_service_accounts"]["default"] == ["dagster-run", "dagster-training"]
    assert subjects["dagster-webserver"] == ["${var.k8s_namespace}:${var.dagster_webserver_service_account}"]
    assert parsed()["variable"]["dagster_webserver_service_account"]["default"] == "dagster-webserver"
    assert all("*" not in str(s) for s in subjects.values())
    variables = parsed()["variable"]
    for name in ("cluster_autoscaler_service_account", "external_secrets_service_account", "load_balancer_controller_service_account"):
        assert re.fullmatch(r"[a-z0-9-]+:[a-z0-9-]+", variables[name]["default"]), name
    controller = module("load_balancer_controller_irsa")
    assert controller["attach_load_balancer_controller_policy"] is True
    assert controller["oidc_providers"]["eks"]["namespace_service_accounts"] == ["${var.load_balancer_controller_service_account}"]


def test_wildcard_resources_only_for_unscopable_describe_calls() -> None:
    documents = instances("aws_iam_policy_document", "data")
    for address in documents:
        for statement in statements("${data.aws_iam_policy_document.%s.json}" % address):
            if "*" in statement["resources"]:
                assert statement.get("effect", "Allow") == "Allow"
                unscoped = [a for a in statement["actions"] if not re.match(r"[a-z0-9]+:(Describe|Get\w*FromInstanceRequirements)", a)]
                assert unscoped == [], f"{address}: {unscoped} on '*'"


# --- network, logs, the rest -----------------------------------------------------------------------


def test_network_has_private_subnets_nat_flow_logs_and_a_closed_default_security_group() -> None:
    vpc = module("vpc")
    assert vpc["cidr"] == "${var.vpc_cidr}" and vpc["azs"] == "${local.azs}"
    assert vpc["private_subnets"] == "${local.private_subnet_cidrs}" and vpc["public_subnets"] == "${local.public_subnet_cidrs}"
    assert vpc["map_public_ip_on_launch"] is False
    assert vpc["enable_nat_gateway"] is True and vpc["single_nat_gateway"] == "${var.single_nat_gateway}"
    assert vpc["manage_default_security_group"] is True
    assert vpc["default_security_group_ingress"] == [] and vpc["default_security_group_egress"] == []
    assert vpc["enable_flow_log"] is True and vpc["flow_log_traffic_type"] == "ALL"
    assert vpc["flow_log_cloudwatch_log_group_kms_key_id"] == KEY
    assert vpc["flow_log_cloudwatch_log_group_retention_in_days"] == "${var.log_retention_days}"
    assert vpc["flow_log_cloudwatch_iam_role_conditions"] == [
        {"test": "StringEquals", "variable": "aws:SourceAccount", "values": ["${local.account_id}"]}
    ]
    # S3 traffic from the private subnets skips NAT.
    endpoint = resources("aws_vpc_endpoint")["s3"]
    assert endpoint["vpc_endpoint_type"] == "Gateway" and endpoint["route_table_ids"] == "${module.vpc.private_route_table_ids}"
    # Every log group written by hand, too, is encrypted with the stack's key and kept as long.
    for group in resources("aws_cloudwatch_log_group").values():
        assert group["kms_key_id"] == KEY and group["retention_in_days"] == "${var.log_retention_days}"


def test_ecr_tags_are_immutable_and_images_scanned_and_encrypted() -> None:
    (repo,) = resources("aws_ecr_repository").values()
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert one(repo["image_scanning_configuration"])["scan_on_push"] is True
    assert one(repo["encryption_configuration"])["encryption_type"] == "KMS"


def test_no_account_ids_or_literal_arns_in_code() -> None:
    for path in [*INFRA.glob("*.tf"), INFRA / "terraform.tfvars.example"]:
        text = path.read_text()
        assert not re.search(r"(?<![\d.])\d{12}(?![\d.])", text), f"{path.name}: looks like an account id"
        assert not re.search(r"arn:aws[a-z-]*:", text), f"{path.name}: literal ARN (build it from local.partition)"


def test_every_checkov_skip_has_a_reason() -> None:
    config_text = (INFRA / ".checkov.yaml").read_text()
    config = yaml.safe_load(config_text)
    # The registry is out of reach in CI: checkov must not try to download the modules.
    assert config["download-external-modules"] is False
    inline = set(re.findall(r"#checkov:skip=(CKV2?_[A-Z]+_\d+):\S", "\n".join(p.read_text() for p in INFRA.glob("*.tf"))))
    for check in set(config.get("skip-check", [])) | inline:
        # Documented in the config's comments as "#   <ID>  <reason>".
        assert re.search(rf"^#\s+{check}\s+\S.{{10,}}", config_text, re.M), f"{check} is skipped without a reason in .checkov.yaml"


def test_readme_explains_apply_outputs_databases_modules_cost_and_teardown() -> None:
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
        "extract.py",
    ):
        assert needle in readme, needle
    # Every module and its pin is in the README's table.
    for body in parsed()["module"].values():
        assert f"`{body['source']}`" in readme and body["version"] in readme, body["source"]


def test_terraform_fmt() -> None:
    terraform = tools.command("terraform", "`terraform fmt -check` checks infra/'s formatting")
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
