"""The whole pipeline on ranks started outside it (torchrun, SLURM tasks; trainer=ddp; CPU, gloo).

Every rank runs the loop; fits are DDP over these processes, scoring is split across them and gathered
by index, and only rank 0 writes the run dir. The results must be the single-process run's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.robustness.fault_hook import overrides as fault_overrides
from tests.scale.conftest import RUNS, SMOKE, _env, _summary, free_port

DDP = [*SMOKE, "trainer=ddp"]  # trainer=ddp: devices=2, plain DDPStrategy
RUN_DIR = RUNS / "experiment=smoke,trainer=ddp"  # `launcher` is not part of the run dir


def _torchrun(args: list[str], root: Path, **extra: str) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    return subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={free_port()}", str(ROOT / "run.py"),
                           *args], cwd=root, env=_env(root, **extra), capture_output=True, text=True, timeout=300)


def _slurm_tasks(args: list[str], root: Path, n: int = 2) -> list[subprocess.CompletedProcess]:
    """`srun --ntasks-per-node=n python run.py ...` without SLURM: n processes with the variables srun sets
    (what Lightning's SLURMEnvironment reads), rendezvous at MASTER_ADDR/PORT."""
    port = free_port()
    procs = []
    for rank in range(n):
        env = _env(root, SLURM_NTASKS=str(n), SLURM_NTASKS_PER_NODE=str(n), SLURM_PROCID=str(rank),
                   SLURM_LOCALID=str(rank), SLURM_NODEID="0", SLURM_NNODES="1", SLURM_JOB_ID="4242",
                   SLURM_JOB_NAME="ser-test", SLURM_NODELIST="localhost", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:  # a rank left waiting at a barrier for a dead one
            if proc.poll() is None:
                proc.kill()
    return results


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def _check_matches_single_process(run_dir: Path, single_dir: Path, output: str, environment: str) -> None:
    for rank in (0, 1):
        assert f"rank {rank} of 2 (ranks from {environment})" in output
    assert "scoring the pool across 2 ranks" in output
    # Pool, calibration, validation and test scoring: every item once, on both ranks.
    parts = [(int(a), int(b)) for a, b in re.findall(r"scored across 2 ranks \(per rank: \[(\d+), (\d+)\]\)", output)]
    assert parts and all(a > 0 and b > 0 for a, b in parts), parts

    ddp, single = _summary(run_dir), _summary(single_dir)
    assert [(e["loop"], e["status"]) for e in ddp["loops"]] == [(e["loop"], e["status"]) for e in single["loops"]]
    for got, want in zip(ddp["loops"], single["loops"]):
        # top_gap's status-1 cut and status-2 floor are pool-score quantiles: a rounding-level score change can move
        # the pair at a cut across it, so the counts may differ by a pair or two, never more
        assert abs(got["selected"] - want["selected"]) <= 2 and abs(got["selected_total"] - want["selected_total"]) <= 4
    n_val, n_test = single["splits"]["val"], single["splits"]["test"]
    seed_ddp, seed_single = ddp["loops"][0], single["loops"][0]  # the seed RM: float rounding of gloo's sums only
    assert abs(seed_ddp["val_accuracy"] - seed_single["val_accuracy"]) <= 1 / n_val + 1e-6
    assert abs(seed_ddp["test_accuracy"] - seed_single["test_accuracy"]) <= 1 / n_test + 1e-6
    for got, want in zip(ddp["loops"][1:], single["loops"][1:]):  # later loops compound a pair swapped at a cut
        assert abs(got["test_accuracy"] - want["test_accuracy"]) <= 0.05
        if want["selected"]:
            assert abs(got["self_label_accuracy"] - want["self_label_accuracy"]) <= 3 / want["selected"] + 1e-9
    assert ddp["final"]["loop"] == single["final"]["loop"]

    # One set of outputs, written by rank 0 alone: the single-process run's files, nothing more.
    assert _files(run_dir) == _files(single_dir)
    log = (run_dir / "run.log").read_text()
    assert log.count("loop 0 · status seed") == 1 and "rank 1 of 2" not in log  # one writer


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("torchrun")
    result = _torchrun(DDP, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / RUN_DIR, result.stdout + result.stderr


@pytest.mark.slow
def test_torchrun_started_ranks_run_the_pipeline_like_one_process(torchrun_run, uninterrupted):
    run_dir, output = torchrun_run
    _check_matches_single_process(run_dir, uninterrupted, output, "TorchElasticEnvironment")


@pytest.mark.slow
def test_slurm_task_ranks_run_the_pipeline_like_one_process(uninterrupted, tmp_path):
    # launcher=submitit_slurm_tasks pins SLURMEnvironment(auto_requeue=false): the ranks come from SLURM_*.
    results = _slurm_tasks(["launcher=submitit_slurm_tasks", *DDP], tmp_path)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    output = "".join(r.stdout + r.stderr for r in results)
    _check_matches_single_process(tmp_path / RUN_DIR, uninterrupted, output, "SLURMEnvironment")


@pytest.mark.slow
def test_torchrun_run_killed_inside_a_loop_resumes_on_every_rank(torchrun_run, tmp_path):
    args = [*DDP, "ckpt_every_n_steps=7"]  # not part of the run dir or the config hash
    killed = _torchrun(args + fault_overrides("midloop:1"), tmp_path)  # every rank is killed there
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr, killed.stderr[-2000:]  # torchrun reports each rank's signal
    run = tmp_path / RUN_DIR
    assert (run / "checkpoints" / "loop_1" / "last.ckpt").exists() and not (run / "summary.json").exists()
    assert [e["loop"] for e in json.loads((run / "state.json").read_text())["loops"]] == [0]

    again = _torchrun(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert output.count("resuming training from the mid-loop checkpoint") == 2  # both ranks, the same file
    assert _summary(run) == _summary(torchrun_run[0])
