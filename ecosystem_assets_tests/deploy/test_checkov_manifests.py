"""checkov's Kubernetes checks over deploy/k8s as `kubectl apply -k` sends it (the rendered
kustomization: images with their repository and tag), each skip with its reason.

checkov lives in its own virtual environment (its pins fight the project's), made by
`make infra-check` (infra/check.sh), which `make test` runs first; without it the test skips and says
so. The Dagster chart's objects are not scanned here: checkov renders Helm charts with the `helm`
binary and the chart, neither of which is on a machine without network access; their security
properties are asserted in test_k8s_security.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ecosystem_assets_tests import tools
from ecosystem_assets_tests.deploy.test_manifest_schemas import K8S, render

REPO = Path(__file__).resolve().parents[2]
CHECKOV = Path(os.environ.get("CHECKOV_VENV", REPO / ".venv-checkov")) / "bin" / "checkov"

SKIPS = {
    "CKV_K8S_43": "image by digest: the images are tags of an ECR repository with immutable tags "
    "(infra/ecr.tf, image_tag_mutability IMMUTABLE), so a tag names one image for ever; the tag is the git SHA",
    "CKV_K8S_15": "imagePullPolicy Always: with immutable tags IfNotPresent runs exactly the same image, "
    "without a registry call at every pod start",
    "CKV_K8S_35": "secrets as files: the project's settings are environment variables (Dagster's EnvVar, "
    "pydantic settings); each comes from one Secret key by secretKeyRef and is never logged",
}


def scan(objects: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """checkov's failed checks over ``objects``, written as one multi-document file."""
    if not CHECKOV.exists():
        tools.missing(f"checkov is not installed at {CHECKOV}: `make infra-check` installs it (infra/check.sh)")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    options = ["--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-o", "json", "--skip-check", ",".join(SKIPS)]
    result = subprocess.run(
        [str(CHECKOV), "-f", str(rendered), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: some check failed
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [check for r in reports for check in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 100, f"checkov passed only {passed} checks: did it read the objects?"
    return failed


def test_checkov_passes_the_rendered_kustomization(tmp_path: Path) -> None:
    failed = scan(render(K8S), tmp_path)
    assert not failed, "\n".join(f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in failed)


def test_checkov_catches_a_privileged_container_and_a_missing_network_policy(tmp_path: Path) -> None:
    objects = copy.deepcopy(render(K8S))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "fraud-service"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    objects = [o for o in objects if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "mlflow")]
    failed = {(c["check_id"], c["resource"]) for c in scan(objects, tmp_path)}
    assert ("CKV_K8S_16", "Deployment.ecosystem.fraud-service") in failed  # privileged container
    assert any(check == "CKV2_K8S_6" and "mlflow" in resource for check, resource in failed)  # pods without a policy
