"""Cluster configs compose (launchers, trainers, the optuna sweep), and bad launches are refused early."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf

import ser.config  # noqa: F401  (resolvers)
from ser.config import ConfigError, check_launch, validate_config
from tests.conftest import ROOT, compose


def _with_hydra(overrides: list[str]):
    """The composed config with its hydra node, as a job sees it (HydraConfig set)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("launcher,target", [
    ("local", "BasicLauncher"), ("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"),
    ("submitit_slurm", "SlurmLauncher"), ("submitit_slurm_tasks", "SlurmLauncher")])
def test_every_launcher_composes_to_its_hydra_plugin(launcher, target):
    cfg = _with_hydra([f"launcher={launcher}"])
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert node["_target_"].endswith(target)
    module, cls = node["_target_"].rsplit(".", 1)
    assert hasattr(importlib.import_module(module), cls), f"{node['_target_']} is not installed"
    assert "launcher" not in cfg.hydra.job.override_dirname  # the run dir does not depend on where it ran


def test_joblib_jobs_get_one_torch_thread_each():
    cfg = _with_hydra(["launcher=joblib"])
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.hydra.job.env_set.OMP_NUM_THREADS == "1"


def test_slurm_launcher_composes_with_the_cookbook_overrides(tmp_path):
    cfg = _with_hydra(["launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                       "trainer=ddp_spawn", "trainer.accelerator=gpu", "trainer.devices=4", "seed=0"])
    slurm = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert slurm["partition"] == "gpu" and slurm["account"] == "proj"
    assert slurm["gpus_per_node"] == 4 and slurm["tasks_per_node"] == 1 and slurm["nodes"] == 1
    assert slurm["max_num_timeout"] > 0 and slurm["array_parallelism"] > 0 and slurm["setup"]
    assert slurm["submitit_folder"].endswith(".submitit/%j")
    # Lightning takes its ranks from ddp_spawn, not from SLURM: no SLURMEnvironment, so no SIGUSR1 requeue.
    from pytorch_lightning.plugins.environments import LightningEnvironment
    plugins = [instantiate(p) for p in cfg.trainer.plugins]
    assert [type(p) for p in plugins] == [LightningEnvironment]
    validate_config(compose(["launcher=submitit_slurm", "trainer=ddp_spawn"], tmp_path))


def test_slurm_environment_can_be_built_with_requeue_off():
    """The SLURM-started-ranks variant of the cookbook: Lightning's own requeue off, submitit's on."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    env = instantiate({"_target_": "pytorch_lightning.plugins.environments.SLURMEnvironment", "auto_requeue": False})
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False


@pytest.mark.parametrize("trainer", ["ddp", "ddp_spawn"])
def test_distributed_trainers_compose_and_build_their_strategy(trainer, tmp_path):
    cfg = compose([f"trainer={trainer}"], tmp_path)
    validate_config(cfg)
    strategy = instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "DDPStrategy"
    if trainer == "ddp_spawn":
        assert strategy._start_method == "spawn"


def test_ddp_spawn_trainer_instantiates_on_cpu(tmp_path):
    cfg = compose(["trainer=ddp_spawn", "trainer.devices=2"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.world_size == 2 and type(trainer.strategy).__name__ == "DDPStrategy"


def test_optuna_sweep_composes_with_storage_under_the_sweep_dir():
    cfg = _with_hydra(["hparams_search=optuna", "experiment=smoke"])
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert sweeper["_target_"].endswith("OptunaSweeper") and sweeper["direction"] == "maximize"
    assert sweeper["storage"] == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert sweeper["max_failure_rate"] == 1.0  # a failed trial is recorded, not fatal
    assert set(sweeper["params"]) >= {"ser.rule.tau_high", "ser.rule.tau_low", "ser.rule.delta",
                                      "ser.min_pairs", "rm.optimizer.lr"}


def test_wandb_resumes_the_same_run_id(tmp_path):
    """WandbLogger passes resume='allow'; the id derives from the run dir, so a relaunch logs to the same run."""
    from ser.config import wandb_id
    assert wandb_id(str(tmp_path / "a")) == wandb_id(str(tmp_path / "a")) != wandb_id(str(tmp_path / "b"))
    raw = OmegaConf.load(ROOT / "conf" / "logger" / "wandb.yaml")
    node = OmegaConf.to_container(raw, resolve=False)["wandb"]
    assert node["id"] == "${wandb_id:${paths.output_dir}}"
    node = {**node, "id": wandb_id(str(tmp_path)), "name": "t", "group": "g", "tags": ["t"],
            "save_dir": str(tmp_path)}
    logger = instantiate(node)
    assert logger._wandb_init["resume"] == "allow" and logger._wandb_init["id"] == wandb_id(str(tmp_path))
    assert "anonymous" not in logger._wandb_init  # wandb prints a deprecation line for any value there


@pytest.mark.parametrize("multirun", [True, False])
def test_relaunching_trainer_is_refused_naming_the_fix(multirun):
    cfg = _with_hydra(["trainer=ddp", "trainer.devices=2"])
    from hydra.types import RunMode
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ConfigError, match="ddp_spawn") as err:
        check_launch(cfg)
    assert ("multirun" in str(err.value)) == multirun
    for ok in (["trainer=ddp_spawn", "trainer.devices=2"], ["trainer=ddp", "trainer.devices=1"], ["trainer=cpu"]):
        check_launch(_with_hydra(ok))


def test_cli_multirun_with_ddp_is_refused_before_anything_runs(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "experiment=smoke", "trainer=ddp",
                             "seed=0,1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "multirun" in result.stderr and "trainer=ddp_spawn" in result.stderr
    written = [p for p in Path(tmp_path).rglob("*") if p.is_file() and ".hydra" not in p.parts
               and p.suffix != ".log" and p.name != "multirun.yaml"]
    assert written == [], written


# ---- ranks started outside the pipeline (torchrun, SLURM tasks) ---------------------------------------

TORCHRUN = {"RANK": 1, "LOCAL_RANK": 1, "WORLD_SIZE": 2, "TORCHELASTIC_RUN_ID": "t"}


def _slurm(rank: int, job_name: str = "ser") -> dict:
    return {"SLURM_NTASKS": 2, "SLURM_NTASKS_PER_NODE": 2, "SLURM_PROCID": rank, "SLURM_LOCALID": rank,
            "SLURM_NODEID": 0, "SLURM_NNODES": 1, "SLURM_JOB_ID": 4242, "SLURM_JOB_NAME": job_name}


@pytest.fixture
def launched(monkeypatch):
    """Give this process the variables torchrun or srun would set (and none left from the real environment)."""
    for var in list(os.environ):
        if var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID") or var.startswith("SLURM_"):
            monkeypatch.delenv(var)

    def _set(env: dict) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
    return _set


def _check(overrides: list[str], multirun: bool) -> None:
    cfg = _with_hydra(overrides)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    check_launch(cfg)


@pytest.mark.parametrize("env,overrides,multirun", [
    (TORCHRUN, ["trainer=ddp"], False),                                    # torchrun --nproc_per_node=2 run.py
    (_slurm(1), ["trainer=ddp"], False),                                   # srun --ntasks-per-node=2 python run.py
    (_slurm(1), ["launcher=submitit_slurm_tasks", "trainer=ddp"], True),   # a job of the SLURM-tasks sweep
    (_slurm(0), ["trainer=cpu"], False),                                   # a batch script's allocation, one process
    ({}, ["trainer=ddp_spawn", "trainer.devices=2"], True),                # the driver + spawned ranks, any launcher
])
def test_started_ranks_are_accepted_with_plain_ddp_over_them(launched, env, overrides, multirun):
    launched(env)
    _check(overrides, multirun)


@pytest.mark.parametrize("env,overrides,multirun,message", [
    (TORCHRUN, ["trainer=ddp", "trainer.devices=4"], False, "devices x trainer.num_nodes = 4, but torchrun started 2"),
    (TORCHRUN, ["trainer=cpu"], False, "torchrun started 2 processes, and the pipeline runs over started ranks only"),
    (TORCHRUN, ["trainer=ddp_spawn"], False, "only with plain DDP"),
    (TORCHRUN, ["trainer=cpu", "+trainer.strategy=fsdp"], False, "fsdp is not supported"),
    ({}, ["trainer=ddp", "trainer.strategy._target_=pytorch_lightning.strategies.FSDPStrategy"], False,
     "FSDPStrategy is not supported"),
    ({}, ["trainer=cpu", "+trainer.strategy=deepspeed_stage_2"], False, "deepspeed_stage_2 is not supported"),
    (TORCHRUN, ["trainer=ddp"], True, "multirun"),                          # -m stays refused off SLURM tasks
    (TORCHRUN, ["trainer=ddp", "schedule=ser_ppo"], False, "policy schedule"),
    (_slurm(1), ["launcher=submitit_slurm", "trainer=ddp"], True, "LightningEnvironment cannot see"),
    (_slurm(1), ["launcher=submitit_slurm_tasks", "trainer=ddp_spawn"], True, "only with plain DDP"),
    (_slurm(1), ["trainer=cpu"], False, "SLURM started 2 processes"),
    ({}, ["launcher=submitit_slurm_tasks", "trainer=ddp"], True, "multirun"),  # nothing started the ranks
    (_slurm(1, "interactive"), ["trainer=ddp"], False, "nothing started the ranks"),
])
def test_started_ranks_are_refused_unless_the_trainer_trains_over_them(launched, env, overrides, multirun, message):
    launched(env)
    with pytest.raises(ConfigError, match=message):
        _check(overrides, multirun)


def test_launchers_ranks_are_read_from_torchrun_then_slurm(launched):
    from ser.ranks import launched_rank, launched_world_size
    assert (launched_rank(), launched_world_size()) == (0, 1)
    launched(_slurm(1))
    assert (launched_rank(), launched_world_size()) == (1, 2)
    launched({"RANK": 3, "LOCAL_RANK": 1, "WORLD_SIZE": 4})  # torchrun inside a one-task SLURM step wins
    assert (launched_rank(), launched_world_size()) == (3, 4)


def test_only_rank_zero_writes_the_run_config(tmp_path):
    from ser.store import RunStore

    assert _with_hydra([]).hydra.output_subdir is None  # the run writes .hydra/ itself, once accepted
    cfg = compose([], tmp_path)
    RunStore(tmp_path / "other_rank", "h", writer=False).write_run_config(cfg)
    assert not (tmp_path / "other_rank").exists()
    RunStore(tmp_path / "rank_zero", "h").write_run_config(cfg)
    assert (tmp_path / "rank_zero" / ".hydra" / "config.yaml").read_text().startswith("task_name: ser")


def test_slurm_tasks_launcher_starts_one_task_per_device_with_lightnings_requeue_off(launched):
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    cfg = _with_hydra(["launcher=submitit_slurm_tasks", "hydra.launcher.partition=gpu", "trainer=ddp",
                       "trainer.accelerator=gpu", "trainer.devices=4", "trainer.num_nodes=2"])
    slurm = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert slurm["_target_"].endswith("SlurmLauncher") and slurm["partition"] == "gpu"
    assert slurm["tasks_per_node"] == slurm["gpus_per_node"] == 4 and slurm["nodes"] == 2
    assert slurm["max_num_timeout"] > 0 and slurm["setup"]  # requeue is submitit's, as in submitit_slurm
    plugins = [instantiate(p) for p in cfg.trainer.plugins]
    assert [type(p) for p in plugins] == [SLURMEnvironment] and plugins[0].auto_requeue is False
    assert type(instantiate(cfg.trainer.strategy)).__name__ == "DDPStrategy"
