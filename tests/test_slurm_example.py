"""``examples/slurm/multinode.sbatch``: its log path works on a fresh clone, and it resumes from the newest checkpoint.

The script runs under bash with a fake ``srun`` that records its arguments.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "slurm" / "multinode.sbatch"


def _directives(name: str) -> list[str]:
    return re.findall(rf"^#SBATCH --{name}=(\S+)", SCRIPT.read_text(), flags=re.MULTILINE)


def test_log_files_need_no_folder_a_fresh_clone_lacks():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {str(Path(path).parent) for path in tracked.splitlines()}
    paths = _directives("output") + _directives("error")
    assert paths
    for path in paths:  # SLURM opens them (relative to the submission directory) before the script runs
        folder = str(Path(path).parent)
        assert folder == "." or folder in folders, f"{path}: {folder}/ does not exist in a fresh clone"


def test_preemption_signal_reaches_every_task_and_the_recipe_saves_on_it():
    assert _directives("signal") == ["SIGUSR1@90"]  # no "B:": every srun task gets it, not only the batch shell
    recipe = (REPO / "recipes" / "scale" / "multinode_slurm.yaml").read_text()
    assert "vlmkit.training.PreemptionCheckpoint" in recipe and "default_root_dir: runs/scale/multinode" in recipe


@pytest.fixture
def submit(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "srun").chmod(0o755)
    root = tmp_path / "runs" / "scale" / "multinode"

    def run() -> list[str]:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_ARGS": str(tmp_path / "args")}
        subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, check=True, timeout=30)
        return (tmp_path / "args").read_text().splitlines()

    return root, run


def _touch(path: Path, folder: bool = False) -> None:
    if folder:  # a sharded checkpoint is a folder
        path.mkdir(parents=True)
        (path / ".metadata").write_text("")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    time.sleep(0.02)  # distinct modification times


def test_resumes_from_the_newest_of_the_requeue_and_the_last_checkpoint(submit):
    root, run = submit
    args = run()
    assert args[:2] == ["vlmkit", "fit"] and "--ckpt_path" not in args  # a fresh start
    _touch(root / "checkpoints" / "last.ckpt", folder=True)
    assert run()[-2:] == ["--ckpt_path", "runs/scale/multinode/checkpoints/last.ckpt"]
    _touch(root / "hpc_ckpt_1.ckpt", folder=True)  # saved on the requeue signal: newer than last.ckpt
    assert run()[-2:] == ["--ckpt_path", "runs/scale/multinode/hpc_ckpt_1.ckpt"]
    _touch(root / "hpc_ckpt_2.ckpt")
    assert run()[-2:] == ["--ckpt_path", "runs/scale/multinode/hpc_ckpt_2.ckpt"]
    shutil.rmtree(root / "checkpoints")
    _touch(root / "checkpoints" / "last.ckpt")  # trained on after the requeue, then a node failed
    assert run()[-2:] == ["--ckpt_path", "runs/scale/multinode/checkpoints/last.ckpt"]
