"""``astroingest train`` comes from the trainer's plugin, without torch on every call."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import run_cli


def test_the_trainer_registers_the_train_command() -> None:
    listing = json.loads(run_cli(["plugins", "--json"]).stdout)
    [trainer] = [p for p in listing["plugins"] if p["name"] == "trainer"]
    assert trainer["hooks"] == ["astroingest_commands"]
    assert trainer["builtin"] is False
    help_text = run_cli(["train", "--help"])
    assert help_text.returncode == 0 and "--stop-after-steps" in help_text.stdout
    blocked = run_cli(["--no-plugins", "train", "--config", "x.toml"])
    assert blocked.returncode == 2 and "invalid choice: 'train'" in blocked.stderr


def test_help_does_not_import_torch() -> None:
    probe = (
        "import sys\n"
        "from astroingest.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'zarr', 'numpy'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "train" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
