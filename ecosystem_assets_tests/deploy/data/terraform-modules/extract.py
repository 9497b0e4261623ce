"""Write the input list of one Terraform module version, for test_infra.py's existence checks.

CI cannot reach the Terraform registry, so the inputs of every module that infra/ calls are vendored
here as <name>-<version>.json, and the tests check each module block against them: every argument
is an input of the module, every required input is given, and literal values of object-typed inputs
use only attributes that the object type declares (Terraform drops unknown object attributes
without a word, so a misspelt `iam_role_attach_cni_policy` would silently keep the default).

Source, either a git checkout of the module's repository at the pinned tag:

    python extract.py --git-dir <clone> --ref v21.19.0 --source terraform-aws-modules/eks/aws
    python extract.py --git-dir <clone of terraform-aws-iam> --ref v6.5.0 \
        --source terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts

or the copy `terraform init` downloads: the module's own directory, the "Dir" that
infra/.terraform/modules/modules.json lists for it (give the version: that copy has no tags):

    python extract.py --dir infra/.terraform/modules/eks --source terraform-aws-modules/eks/aws --version 21.19.0

The file records, per input, whether it is required (no default) and its type as a tree:
"string" / "number" / "bool" / "any", {"list"|"set"|"map": T}, {"tuple": [T, ...]},
{"object": {attribute: {"type": T, "optional": bool}}}. For inputs typed `any`, whose structure
the module only reads with try()/lookup(), it records the module's vocabulary: every name the
module's code reads as an attribute or key (`x.name`, `x["name"]`, `lookup(x, "name")`); a key
outside it is read nowhere, so certainly ignored.

Needs python-hcl2 (a dev dependency of the project) and git.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

HERE = Path(__file__).resolve().parent
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
_SOURCE = re.compile(r"(?P<namespace>[\w-]+)/(?P<name>[\w-]+)/(?P<provider>[\w-]+)(?://(?P<subdir>[\w./-]+))?")


# --- Terraform type expressions ---------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[A-Za-z_][\w-]*)|(?P<number>-?\d+(?:\.\d+)?)|(?P<punct>[(){}\[\],=:]))')


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position:].strip() == "":
                break
            raise ValueError(f"cannot read the type expression at {text[position : position + 40]!r}")
        tokens.append(match.group(match.lastgroup or "punct"))
        position = match.end()
    return tokens


class _TypeParser:
    """Recursive descent over a type constraint as python-hcl2 prints it, e.g.
    `map(object({name = optional(string), tags = optional(map(string), {})}))`."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected!r}, found {token!r} in {' '.join(self.tokens)}")
        self.position += 1
        return token

    def skip_expression(self) -> None:
        """A default value inside optional(T, default): skipped up to the closing parenthesis."""
        depth = 0
        while (token := self.peek()) is not None:
            if token in "([{":
                depth += 1
            elif token in ")]}":
                if depth == 0:
                    return
                depth -= 1
            self.position += 1

    def parse(self) -> Any:
        word = self.take()
        if word in {"string", "number", "bool", "any"}:
            return word
        self.take("(")
        if word in {"list", "set", "map"}:
            result: Any = {word: self.parse()}
        elif word == "tuple":
            self.take("[")
            elements = []
            while self.peek() != "]":
                elements.append(self.parse())
                if self.peek() == ",":
                    self.take(",")
            self.take("]")
            result = {"tuple": elements}
        elif word == "object":
            result = {"object": self.parse_attributes()}
        else:
            raise ValueError(f"unknown type constructor {word!r}")
        self.take(")")
        return result

    def parse_attributes(self) -> dict[str, Any]:
        self.take("{")
        attributes: dict[str, Any] = {}
        while self.peek() != "}":
            name = self.take().strip('"')
            self.take(self.peek() if self.peek() in {"=", ":"} else "=")
            optional = self.peek() == "optional"
            if optional:
                self.take("optional")
                self.take("(")
                attribute_type = self.parse()
                if self.peek() == ",":
                    self.take(",")
                    self.skip_expression()
                self.take(")")
            else:
                attribute_type = self.parse()
            attributes[name] = {"type": attribute_type, "optional": optional}
            if self.peek() == ",":
                self.take(",")
        self.take("}")
        return attributes


def parse_type(expression: Any) -> Any:
    """The type tree of a variable's `type` as python-hcl2 returns it ("${map(string)}"); none: any."""
    if expression is None:
        return "any"
    text = str(expression)
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    parser = _TypeParser(text)
    result = parser.parse()
    if parser.peek() is not None:
        raise ValueError(f"trailing tokens in type {text!r}")
    return result


def _mentions_any(tree: Any) -> bool:
    if tree == "any":
        return True
    if isinstance(tree, dict):
        return any(_mentions_any(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_mentions_any(v) for v in tree)
    return False


# --- reading a module ---------------------------------------------------------------------------------

_VOCABULARY = (
    re.compile(r"\.([A-Za-z_][\w-]*)"),
    re.compile(r'\[\s*"([A-Za-z_][\w-]*)"\s*\]'),
    re.compile(r'lookup\(\s*[^,()]+,\s*"([A-Za-z_][\w-]*)"'),
)


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(git_dir), *args], capture_output=True, text=True, check=True).stdout


def module_files_from_git(git_dir: Path, ref: str, subdir: str) -> tuple[dict[str, str], str]:
    """{file name: text} of the module's *.tf at `ref`, and the commit it names."""
    prefix = f"{subdir.strip('/')}/" if subdir else ""
    commit = _git(git_dir, "rev-parse", f"{ref}^{{commit}}").strip()
    listing = _git(git_dir, "ls-tree", "--name-only", commit, *([prefix] if prefix else []))
    files = {path.removeprefix(prefix): _git(git_dir, "show", f"{commit}:{path}") for path in listing.split() if path.endswith(".tf")}
    return files, commit


def module_files_from_dir(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(directory.glob("*.tf"))}


def describe(files: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The module's inputs and, when an input is typed `any`, its vocabulary (else [])."""
    inputs: dict[str, Any] = {}
    for _file, text in sorted(files.items()):
        for entry in hcl2.loads(text, serialization_options=_OPTIONS).get("variable", []):
            for variable, body in entry.items():
                inputs[variable] = {"required": "default" not in body, "type": parse_type(body.get("type"))}
    if not inputs:
        raise SystemExit(f"no variable blocks in {sorted(files)}")
    vocabulary: set[str] = set()
    if any(_mentions_any(spec["type"]) for spec in inputs.values()):
        for text in files.values():
            for pattern in _VOCABULARY:
                vocabulary.update(pattern.findall(text))
    return dict(sorted(inputs.items())), sorted(vocabulary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="the module block's source, e.g. terraform-aws-modules/eks/aws")
    parser.add_argument("--git-dir", type=Path, help="a clone of the module's repository")
    parser.add_argument("--ref", help="with --git-dir: the release tag, e.g. v21.19.0")
    parser.add_argument("--dir", type=Path, help="or: the module's own directory (its Dir in infra/.terraform/modules/modules.json)")
    parser.add_argument("--version", help="the version the module block pins (default: --ref without its 'v')")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = parser.parse_args()

    source = _SOURCE.fullmatch(args.source)
    if source is None:
        parser.error(f"--source {args.source!r} is not <namespace>/<name>/<provider>[//<subdir>]")
    subdir = source.group("subdir") or ""
    repository = f"github.com/{source.group('namespace')}/terraform-{source.group('provider')}-{source.group('name')}"
    if args.git_dir is not None:
        if not args.ref:
            parser.error("--git-dir needs --ref")
        files, commit = module_files_from_git(args.git_dir, args.ref, subdir)
        origin = {"repository": repository, "ref": args.ref, "commit": commit, "subdir": subdir}
    elif args.dir is not None:
        files = module_files_from_dir(args.dir)
        origin = {"repository": repository, "directory": "downloaded by terraform init", "subdir": subdir}
    else:
        parser.error("give --git-dir and --ref, or --dir")
    version = args.version or (args.ref or "").removeprefix("v")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        parser.error(f"version {version!r} is not an exact X.Y.Z (give --version)")

    inputs, vocabulary = describe(files)
    document = {
        "source": args.source,
        "version": version,
        "origin": origin,
        "generated_by": "ecosystem_assets_tests/deploy/data/terraform-modules/extract.py",
        "inputs": inputs,
        "vocabulary": vocabulary,
    }
    name = subdir.rsplit("/", 1)[-1] if subdir else source.group("name")
    target = args.out / f"{name}-{version}.json"
    target.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    required = sorted(k for k, v in inputs.items() if v["required"])
    print(f"{target}: {len(inputs)} inputs, required: {', '.join(required) or 'none'}")


if __name__ == "__main__":
    main()
