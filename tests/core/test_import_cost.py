"""`import astroingest` stays cheap: no torch, zarr, xarray, boto, dask or numpy.

Most of these are optional extras and may not be installed here, and an accidental import
of a missing package would only show up as an ImportError in some environments. So each
check runs with empty stand-in packages of those names first on ``sys.path``: an import
of any of them, guarded by try/except or not, lands in ``sys.modules`` and is caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "zarr", "xarray", "boto3", "botocore", "aioboto3", "aiobotocore", "dask", "numpy")


def _imported_heavy(code: str, stubs: Path) -> list[str]:
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("heavy-stubs")
    for name in HEAVY:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("# stand-in: importing this is the failure\n")
    return root


@pytest.mark.parametrize("module", ["astroingest", "astroingest.cli"])
def test_import_does_not_pull_in_heavy_packages(module: str, stubs: Path) -> None:
    assert _imported_heavy(f"import {module}", stubs) == []


def test_the_probe_sees_a_heavy_import(stubs: Path) -> None:
    # The control: the same probe does report one when it happens.
    assert _imported_heavy("import astroingest\nimport numpy\nimport boto3", stubs) == [
        "boto3",
        "numpy",
    ]
