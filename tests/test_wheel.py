"""The package as a user gets it: a wheel built from this checkout, installed into a fresh venv.

The venv is built once per test session (module fixture) and sees this environment's installed
dependencies through a path entry (a .pth line naming their directory; the .pth files in that
directory, among them the editable install of this checkout, are not run), so the test needs no
network and stays fast; the package itself comes from the wheel, its source tree not on the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "transforms", "schemas")


def _run(*cmd: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    proc = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT,
                cwd=dist)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (found,) = dist.glob("telemetry_sanitizer-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel installed (dependencies come from this environment)."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    inner = Path(_run(home / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                      cwd=home).stdout.strip())
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (inner / "_dependencies.pth").write_text("\n".join(outer) + "\n")
    proc = _run(sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install", "--no-deps",
                "--no-index", "--force-reinstall", wheel, cwd=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home / "bin"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONSAFEPATH"] = "1"
    return env


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                rel = path.relative_to(ROOT).as_posix()
                assert rel in names, f"{rel} is not in the wheel"
        assert f"{package}/py.typed" in names


def test_installed_wheel_runs_from_outside_the_checkout(installed, tmp_path):
    exe = installed / "telemetry-sanitizer"
    py = installed / "python"
    where = _run(py, "-c", "import pipeline, schemas; print(pipeline.__file__); print(schemas.__file__)",
                 cwd=tmp_path, env=_env())
    assert where.returncode == 0, where.stderr
    assert all(str(ROOT) not in line for line in where.stdout.splitlines()), where.stdout

    version = _run(exe, "--version", cwd=tmp_path, env=_env())
    assert version.returncode == 0 and version.stdout.startswith("telemetry-sanitizer "), version.stderr

    policy = _run(exe, "policy", cwd=tmp_path, env=_env())
    assert policy.returncode == 0 and "| url_visit |" in policy.stdout, policy.stderr

    schema = _run(exe, "schema", "--format", "json", cwd=tmp_path, env=_env())
    assert schema.returncode == 0, schema.stderr
    assert "device_id_pseudonym" in [c["name"] for c in json.loads(schema.stdout)["detection"]["columns"]]

    data = tmp_path / "in.ndjson"
    sample = _run(exe, "sample", "--records", "300", "--output", data, cwd=tmp_path, env=_env())
    assert sample.returncode == 0, sample.stderr
    out = tmp_path / "out"
    run = _run(exe, "--input", data, "--output", out, "--as-of", "2026-11-25T00:00:00Z", cwd=tmp_path, env=_env())
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "_report.json").read_text())
    assert report["input_records"] == 300 and report["identity"]["holds"]
