"""The installed package: one import name, `jobtrail`, beside a user's own package called `app`.

A wheel and an sdist are built from this checkout and installed into a fresh venv, as a user
would. The venv reaches the dependencies through a path file pointing at the test run's own
site-packages (no network); that file adds a path, not the editable install's finder, so
what `jobtrail` imports there is the wheel's copy.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.support.env import ROOT


def build(kind: str, out: Path) -> Path:
    """A wheel or an sdist of this checkout, built by setuptools' own backend (no network)."""
    hook = "build_wheel" if kind == "wheel" else "build_sdist"
    out.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.{hook}({str(out)!r})"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    [built] = out.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    return built


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(path)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)}))
    # The dependencies (litestar, redis, …) from this run's environment, without its `jobtrail`.
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return path / "bin" / "python"


def user_project(path: Path) -> Path:
    """A user's service whose own package is called `app`, as most Litestar and FastAPI services are."""
    (path / "app").mkdir(parents=True)
    (path / "app" / "__init__.py").write_text("NAME = 'the user app'\n")
    return path


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_package_installs_as_jobtrail_beside_a_users_own_app_package(tmp_path, kind):
    artifact = build(kind, tmp_path / "dist")
    python = fresh_venv(tmp_path / "venv")
    # This run's pip, installing into the fresh venv; an sdist is built there with this run's setuptools.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--no-build-isolation", "-q", str(artifact)],
        check=True, capture_output=True, text=True,
    )
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(tmp_path / "venv")}))
    installed = sorted(p.name for p in purelib.iterdir() if not p.name.endswith((".pth", ".dist-info")))
    assert "jobtrail" in installed
    assert not {"app", "workers", "migrations"} & set(installed), installed

    project = user_project(tmp_path / "service")
    probe = (
        "import app, jobtrail, jobtrail.workers.runner, jobtrail.migrations, jobtrail.api.app;"
        "print(app.NAME); print(jobtrail.__file__); print(jobtrail.kind, jobtrail.Client)"
    )
    out = subprocess.run([python, "-c", probe], cwd=project, check=True, capture_output=True, text=True).stdout
    name, location, _ = out.splitlines()
    assert name == "the user app"
    assert location.startswith(str(purelib)), "jobtrail comes from the installed wheel, not the checkout"

    help_text = subprocess.run(
        [tmp_path / "venv" / "bin" / "jobtrail", "--help"], cwd=project, check=True, capture_output=True, text=True
    ).stdout
    assert "serve" in help_text and "worker" in help_text
