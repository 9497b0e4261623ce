"""Write the argument schema of the provider resources that infra/ writes by hand, for test_infra.py.

The module inputs are checked against extract.py's lists; the plain `aws_*`/`random_*` resources
and data sources need the provider's schema, which `terraform providers schema -json` prints only
after `terraform init` (registry access). The schema is also compiled into the prebuilt CDKTF
bindings on npm (`@cdktf/provider-aws`, `@cdktf/provider-random`; their package.json names the
provider version they were generated from), and npm is reachable. This reads one such package
tarball and writes, per resource or data source type, its arguments (required or not) and nested
blocks, as <provider>-provider-<version>.json next to this script:

    npm pack @cdktf/provider-aws@21.22.1 @cdktf/provider-random@12.0.1      # aws 6.25.0, random 3.7.2
    python extract_resources.py --package cdktf-provider-aws-21.22.1.tgz --types-from infra
    python extract_resources.py --package cdktf-provider-random-12.0.1.tgz --types-from infra

`--types-from infra` takes every type that infra/*.tf uses from that provider (resources and
`data.` sources); `--type aws_x` / `--type data.aws_y` adds one. The package's JavaScript maps each
Terraform argument name to its binding (`snake_name: …(this._camelName)` in
synthesizeAttributes(), nested blocks through their `…ToTerraform(struct)` functions), and its
TypeScript declarations say which are optional (`readonly camelName?:`).

CDKTF was deprecated in 2025: @cdktf/provider-aws 21.22.1 (aws 6.25.0) is its last build. A
resource argument added after that version would be reported as unknown; then take the schema from
`terraform providers schema -json` instead, or widen the check.

Needs python-hcl2 (a dev dependency of the project).
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)


def _member(archive: tarfile.TarFile, name: str) -> str | None:
    try:
        member = archive.extractfile(f"package/{name}")
    except KeyError:
        return None
    return member.read().decode() if member else None


def _returned_object(js: str, start: int) -> list[tuple[str, str]]:
    """The `key: expression` lines of the first `return {` ... `};` after `start`."""
    begin = js.index("return {", start)
    closing = re.compile(r"\n\s*\};").search(js, begin)
    assert closing is not None, "unterminated return object"
    end = closing.start()
    pairs = []
    for line in js[begin:end].splitlines()[1:]:
        if match := re.match(r"\s+(\w+): (.+?),?$", line):
            pairs.append((match.group(1), match.group(2)))
    return pairs


def _optional_properties(dts: str, interface: str) -> dict[str, bool]:
    """camelName => optional, for the properties of `export interface <interface>`."""
    match = re.search(rf"export interface {interface}\b[^{{]*\{{(.*?)\n\}}", dts, re.S)
    if match is None:
        return {}
    return {name: bool(optional) for name, optional in re.findall(r"readonly (\w+)(\??):", match.group(1))}


def _arguments(js: str, dts: str, pairs: list[tuple[str, str]], interface: str, seen: frozenset[str]) -> dict[str, Any]:
    optional = _optional_properties(dts, interface)
    arguments: dict[str, Any] = {}
    for snake, expression in pairs:
        camel = re.search(r"(?:this\._|struct\.)(\w+)", expression)
        if camel is None:
            continue
        name = camel.group(1)
        spec: dict[str, Any] = {"required": optional.get(name, True) is False}
        nested = re.search(r"(?<![.\w])(\w+)ToTerraform\b", expression)
        if nested and nested.group(1) not in seen:
            function = nested.group(1) + "ToTerraform"
            body = js.index(f"function {function}(struct)")
            nested_interface = nested.group(1)[0].upper() + nested.group(1)[1:]
            spec["block"] = _arguments(js, dts, _returned_object(js, body), nested_interface, seen | {nested.group(1)})
        arguments[snake] = spec
    return dict(sorted(arguments.items()))


def schema_of(archive: tarfile.TarFile, prefix: str, rtype: str) -> dict[str, Any]:
    """Arguments of resource type `rtype` (or `data.<type>`) from the package's lib/<dir>/index.js."""
    is_data = rtype.startswith("data.")
    name = rtype.removeprefix("data.")
    directory = ("data-" + name if is_data else name.removeprefix(prefix + "_")).replace("_", "-")
    js, dts = _member(archive, f"lib/{directory}/index.js"), _member(archive, f"lib/{directory}/index.d.ts")
    if js is None or dts is None:
        raise SystemExit(f"{rtype}: no lib/{directory}/ in the package")
    declared = re.search(r'^(\w+)\.tfResourceType = "(\w+)";', js, re.M)
    if declared is None or declared.group(2) != name:
        raise SystemExit(f"{rtype}: lib/{directory}/index.js is not that type")
    pairs = _returned_object(js, js.index("synthesizeAttributes() {"))
    return _arguments(js, dts, pairs, declared.group(1) + "Config", frozenset())


def types_used(infra: Path, prefix: str) -> set[str]:
    found: set[str] = set()
    for path in sorted(infra.glob("*.tf")):
        document = hcl2.loads(path.read_text(), serialization_options=_OPTIONS)
        for section, marker in (("resource", ""), ("data", "data.")):
            for entry in document.get(section, []):
                found |= {marker + rtype for rtype in entry if rtype.startswith(prefix + "_")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, required=True, help="a @cdktf/provider-<name> tarball (npm pack)")
    parser.add_argument("--type", action="append", default=[], help="a resource type, or data.<type>")
    parser.add_argument("--types-from", type=Path, help="take every type of this provider that these *.tf use (e.g. infra)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = parser.parse_args()

    with tarfile.open(args.package) as archive:
        package = json.loads(_member(archive, "package.json") or "{}")
        provider = package["cdktf"]["provider"]
        prefix = provider["name"].rsplit("/", 1)[-1]
        wanted = set(args.type) | (types_used(args.types_from, prefix) if args.types_from else set())
        if not wanted:
            parser.error("no types: give --type or --types-from")
        schemas = {rtype: schema_of(archive, prefix, rtype) for rtype in sorted(wanted)}
    document = {
        "provider": provider["name"],
        "version": provider["version"],
        "origin": {"package": f"{package['name']}@{package['version']}", "tarball": args.package.name},
        "generated_by": "ecosystem_assets_tests/deploy/data/terraform-modules/extract_resources.py",
        "resources": {k: v for k, v in schemas.items() if not k.startswith("data.")},
        "data_sources": {k.removeprefix("data."): v for k, v in schemas.items() if k.startswith("data.")},
    }
    target = args.out / f"{prefix}-provider-{provider['version']}.json"
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{target}: {', '.join(sorted(schemas))}")


if __name__ == "__main__":
    main()
