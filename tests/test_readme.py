"""The README's "Use" commands run as written, on a fresh folder, with the installed CLI.

The first ``bash`` block of the "Use" section is extracted and every command in it is run
with ``sn2n-live`` from this environment's ``bin`` (as after ``source .venv/bin/activate``)
in a temporary folder that holds a link to the repository's ``profiles/``. The only change
is a shorter training budget (``--max-minutes``), so the test takes minutes, not the
README's two.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MINUTES = "0.1"


def use_commands() -> list[str]:
    """The commands of the first bash block under "## Use", without comments."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, 'README.md: no ```bash block in the "Use" section'
    lines = (line.split(" #", 1)[0].strip() for line in block.group(1).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_use_block_names_every_step():
    commands = use_commands()
    steps = [shlex.split(c)[1] for c in commands]
    assert steps[:5] == ["profile", "pilot", "train", "acquire", "denoise"], steps
    assert all(shlex.split(c)[0] == "sn2n-live" for c in commands)


@pytest.mark.timeout(900)
def test_readme_use_runs_as_written(tmp_path):
    (tmp_path / "profiles").symlink_to(ROOT / "profiles")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in use_commands():
        command = re.sub(r"--max-minutes \S+", f"--max-minutes {TEST_MINUTES}", command)
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    # What the block says it writes is there.
    for path in (
        "pilot.ome.tiff",
        "sample.sn2n",
        "runs/001/run.json",
        "pilot-denoised.ome.zarr",
        "pilot-denoised.risk.ome.zarr",
    ):
        assert (tmp_path / path).exists(), path
    run = (tmp_path / "runs/001/run.json").read_text()
    assert '"status": "completed"' in run
