"""Write what test_addons.py needs to know about one pinned Helm chart: the values it reads.

infra/addons.tf installs the cluster add-ons as `helm_release`s, each pinned to an exact chart
version, with its values written as an HCL object (`values = [yamlencode({...})]`). Helm ignores a
key no template reads, so a misspelt or renamed key (`serviceAcount`, a key dropped by a new chart
version) silently does nothing. CI cannot reach the chart repositories, so this reads the chart at
the git tag (or commit) its release was built from and writes, next to this script,
`<chart>-<version>.json`:

- `defaults`: the chart's values.yaml, parsed (every key a chart documents with a default);
- `template_reads`: every `.Values.a.b.c` path the chart's templates read (keys a chart reads
  without a default, e.g. a commented-out `# enableHostNetwork: false`);
- `free_form`: paths whose whole value the templates pass on (`toYaml .Values.x`,
  `range $k, $v := .Values.x`, `with .Values.x` + `toYaml .`, or a default of `{}`): any key
  below them is the caller's (annotations, nodeSelector, extraArgs);
- `schema`: the chart's values.schema.json when it has one (Helm validates values against it);
- `source`: repository, ref, commit and chart path, and the Helm repository the release pulls from.

    git clone --bare https://github.com/kubernetes/autoscaler /tmp/autoscaler.git
    python extract_chart.py --git-dir /tmp/autoscaler.git --ref cluster-autoscaler-chart-9.51.0 \
        --path charts/cluster-autoscaler --source github.com/kubernetes/autoscaler \
        --repository https://kubernetes.github.io/autoscaler

The commands for every chart infra/ pins are in README.md beside this script. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# .Values.a.b / $.Values.a.b / .Values.a.b-c (hyphenated keys are read with index, below)
_VALUES_PATH = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
# index .Values "bitwarden-sdk-server" "enabled"
_INDEX_PATH = re.compile(r'index\s+\$?\.Values((?:\s+"[^"]+")+)')
# whole values handed on: toYaml .Values.x, range $k, $v := .Values.x, tpl (toYaml .Values.x) .
_PASSED_ON = re.compile(r"(?:toYaml|toJson|range\s+\$\w+\s*,\s*\$\w+\s*:=)\s*\(?\s*\$?\.Values((?:\.[A-Za-z_]\w*)+)")
_WITH = re.compile(r"\{\{-?\s*with\s+\$?\.Values((?:\.[A-Za-z_]\w*)+)\s*-?\}\}")


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True).stdout


def show(git_dir: Path, ref: str, path: str) -> str | None:
    result = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{ref}:{path}"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def template_paths(templates: dict[str, str]) -> tuple[set[str], set[str]]:
    """(paths read, paths whose whole value is handed on) in the chart's templates."""
    reads: set[str] = set()
    passed_on: set[str] = set()
    for text in templates.values():
        reads |= {m.group(1)[1:] for m in _VALUES_PATH.finditer(text)}
        for match in _INDEX_PATH.finditer(text):
            reads.add(".".join(re.findall(r'"([^"]+)"', match.group(1))))
        passed_on |= {m.group(1)[1:] for m in _PASSED_ON.finditer(text)}
        for match in _WITH.finditer(text):
            # `with .Values.x` whose body renders `toYaml .` (the value itself) within a few lines
            body = text[match.end() : match.end() + 300]
            if re.search(r"toYaml\s+\.\s*\|", body.split("{{- end")[0].split("{{ end")[0]):
                passed_on.add(match.group(1)[1:])
    return reads, passed_on


def empty_maps(values: Any, prefix: str = "") -> set[str]:
    """Paths whose default is `{}`: maps the caller fills (annotations, nodeSelector)."""
    found: set[str] = set()
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}{key}"
            if value == {}:
                found.add(path)
            found |= empty_maps(value, path + ".")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="a clone of the chart's repository (bare is fine)")
    parser.add_argument("--ref", required=True, help="the tag or commit the pinned chart version was released from")
    parser.add_argument("--path", required=True, help="the chart's folder in the repository")
    parser.add_argument("--source", required=True, help="the repository, e.g. github.com/kubernetes/autoscaler")
    parser.add_argument("--repository", required=True, help="the Helm repository the release installs from")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    chart = yaml.safe_load(show(args.git_dir, args.ref, f"{args.path}/Chart.yaml") or "")
    if not chart:
        parser.error(f"no {args.path}/Chart.yaml at {args.ref}")
    defaults = yaml.safe_load(show(args.git_dir, args.ref, f"{args.path}/values.yaml") or "") or {}
    schema_text = show(args.git_dir, args.ref, f"{args.path}/values.schema.json")
    names = git(args.git_dir, "ls-tree", "-r", "--name-only", args.ref, f"{args.path}/templates/").split()
    templates = {name: show(args.git_dir, args.ref, name) or "" for name in names if name.endswith((".yaml", ".yml", ".tpl", ".txt"))}
    reads, passed_on = template_paths(templates)
    document = {
        "chart": chart["name"],
        "version": str(chart["version"]),
        "appVersion": str(chart.get("appVersion", "")),
        "source": {
            "repository": args.source,
            "ref": args.ref,
            "commit": git(args.git_dir, "rev-parse", f"{args.ref}^{{commit}}").strip(),
            "path": args.path,
            "helm_repository": args.repository,
        },
        "generated_by": "ecosystem_assets_tests/deploy/data/addons/extract_chart.py",
        "template_reads": sorted(reads),
        "free_form": sorted(passed_on | empty_maps(defaults)),
        "defaults": defaults,
        "schema": json.loads(schema_text) if schema_text else None,
    }
    target = args.out / f"{chart['name']}-{chart['version']}.json"
    target.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"{target}: {len(reads)} template reads, {len(document['free_form'])} free-form paths, schema: {schema_text is not None}")


if __name__ == "__main__":
    main()
