"""Every run the long queue would start composes and validates: a misspelt override in experiments/*.sh fails
here, not hours into the queue when its sweep is reached."""

import os
import shlex
import subprocess

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from ser.config import validate_config
from tests.conftest import ROOT, compose

SCRIPTS = ["synthetic.sh", "coevolve.sh", "real_largest.sh"]


def planned_sweeps(script: str) -> list[list[str]]:
    """The overrides of each sweep the script would run, from its dry run (nothing runs, nothing is written)."""
    done = subprocess.run(["bash", str(ROOT / "experiments" / script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SER_QUEUE_DRY_RUN": "1"}, check=True)
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def expand(overrides: list[str]) -> list[list[str]]:
    """A sweep's runs, formed by the sweeper `run.py -m` uses (Hydra's basic sweeper, in one batch)."""
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_queued_run_composes_and_validates(script, tmp_path):
    sweeps = planned_sweeps(script)
    assert sweeps, f"{script} plans no sweep"
    # one compose per setting (0.4 s each): the seeds of a setting change its random streams, not its validity
    seeds: dict[tuple[str, ...], set[int]] = {}
    for run in (run for sweep in sweeps for run in expand(sweep)):
        setting = tuple(o for o in run if not o.startswith("seed="))
        seeds.setdefault(setting, set()).update(int(o.split("=", 1)[1]) for o in run if o.startswith("seed="))
    for setting, its_seeds in sorted(seeds.items()):
        assert its_seeds, f"{script}: {' '.join(setting)} names no seed: its run dir would not say which"
        validate_config(compose([*setting, f"seed={min(its_seeds)}"], tmp_path))


def test_dry_run_expands_sweeps_and_a_misspelt_key_is_caught(tmp_path):
    assert expand(["schedule=seed_only,ser", "seed=0,1", "ser.phases=[1,2,2],[1,1,2,2]"]) == [
        ["schedule=seed_only", "seed=0", "ser.phases=[1,2,2]"], ["schedule=seed_only", "seed=0", "ser.phases=[1,1,2,2]"],
        ["schedule=seed_only", "seed=1", "ser.phases=[1,2,2]"], ["schedule=seed_only", "seed=1", "ser.phases=[1,1,2,2]"],
        ["schedule=ser", "seed=0", "ser.phases=[1,2,2]"], ["schedule=ser", "seed=0", "ser.phases=[1,1,2,2]"],
        ["schedule=ser", "seed=1", "ser.phases=[1,2,2]"], ["schedule=ser", "seed=1", "ser.phases=[1,1,2,2]"]]
    with pytest.raises(Exception, match="stratify_bin"):  # Hydra's struct check, before validation
        validate_config(compose(["schedule=ser", "ser.stratify_bin=4"], tmp_path))


def test_the_real_data_table_runs_seed_by_seed():
    """A queue stopped part way through a real-data sweep (hours each) leaves whole seeds: every schedule of a
    seed before the next seed's first."""
    for sweep in planned_sweeps("real_largest.sh"):
        runs = expand(sweep)
        schedules = {o for run in runs for o in run if o.startswith("schedule=")}
        if len(schedules) < 2:
            continue
        order = [next(o for o in run if o.startswith("seed=")) for run in runs]
        assert order == sorted(order, key=order.index), f"{' '.join(sweep)}: seeds interleave: {order}"
        assert len(set(order[: len(schedules)])) == 1, f"{' '.join(sweep)}: the first seed's schedules do not come first"


def tables_calls(tmp_path, run_dirs: list[str], unfinished: tuple[str, ...] = ()) -> tuple[list[list[str]], str]:
    """`real_largest.sh tables` in a copy of the scripts beside the given run dirs (each with a summary.json but
    those in `unfinished`), with a stub Python that logs its arguments: the collect.py calls it would make, and
    what it printed."""
    for script in ("real_largest.sh", "queue_lib.sh"):
        (tmp_path / "experiments").mkdir(parents=True, exist_ok=True)
        (tmp_path / "experiments" / script).write_text((ROOT / "experiments" / script).read_text())
    for run_dir in run_dirs:
        (tmp_path / "outputs/ser/sweeps" / run_dir).mkdir(parents=True)
        if run_dir not in unfinished:
            (tmp_path / "outputs/ser/sweeps" / run_dir / "summary.json").write_text("{}")
    stub = tmp_path / "py"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$(dirname "$0")/calls"\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(tmp_path / "experiments/real_largest.sh"), "tables"], capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**{k: v for k, v in os.environ.items() if k != "SER_QUEUE_DRY_RUN"}, "PY": str(stub)})
    logged = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return [line.split() for line in logged if line.startswith("experiments/collect.py")], done.stderr


def test_tables_collect_what_finished_and_keep_the_rm_choice_page_until_smollm2_ran(tmp_path):
    calls, said = tables_calls(tmp_path, [])
    assert calls == [] and "no runs yet for docs/results/real_largest" in said  # nothing finished: nothing written
    tldr = [f"experiment=real_summarize,schedule={s},seed=0" for s in ("seed_only", "ser", "full_data")]
    hh = [f"experiment=real_hh_helpful,schedule=seed_only,seed={k}" for k in (0, 1, 2, 3)]
    other = "experiment=real_harmless,schedule=ser,seed=0"  # not a table's dataset
    calls, said = tables_calls(tmp_path / "partial", [*tldr, *hh, other])
    (table,) = calls  # the RM-choice page is kept: no SmolLM2 run yet
    assert "docs/results/real_rm_choice.md kept" in said
    assert sorted(a.rsplit("/", 1)[-1] for a in table if "experiment=" in a) == sorted([*hh, *tldr])
    assert table[table.index("--metric") + 1] == "test_accuracy"
    assert table[table.index("--out") + 1] == "docs/results/real_largest"
    smollm2 = "experiment=real_hh_helpful,rm=smollm2,schedule=seed_only,seed=0"
    # a SmolLM2 run stopped part way (a run dir, no summary) leaves the page as it is
    calls, said = tables_calls(tmp_path / "started", [*tldr, *hh, smollm2], unfinished=(smollm2,))
    assert len(calls) == 1 and "docs/results/real_rm_choice.md kept" in said
    calls, _ = tables_calls(tmp_path / "both", [*tldr, *hh, smollm2])
    choice = next(c for c in calls if c[c.index("--out") + 1] == "docs/results/real_rm_choice")
    assert choice[choice.index("--metric") + 1] == "val_accuracy"
    # MiniLM's seed RMs on the splits SmolLM2 is run on (seeds 0-2), against SmolLM2's
    assert sorted(a.rsplit("/", 1)[-1] for a in choice if "experiment=" in a) == sorted([*hh[:3], smollm2])


def test_the_retrain_from_last_arm_has_its_own_table_beside_the_default(tmp_path):
    tldr = [f"experiment=real_summarize,schedule={s},seed=0" for s in ("seed_only", "ser", "full_data")]
    last = "experiment=real_summarize,schedule=ser,seed=0,ser.retrain_from=last"
    calls, _ = tables_calls(tmp_path / "default", tldr)
    assert [c[c.index("--out") + 1] for c in calls] == ["docs/results/real_largest"]
    calls, _ = tables_calls(tmp_path / "started", [*tldr, last], unfinished=(last,))  # under way: no page yet
    assert [c[c.index("--out") + 1] for c in calls] == ["docs/results/real_largest"]  # no such run: no page
    calls, _ = tables_calls(tmp_path / "both", [*tldr, last])
    main, arm = calls
    # the default's table keeps one SER run a seed (collect.py refuses two of one group and seed)
    assert sorted(a.rsplit("/", 1)[-1] for a in main if "experiment=" in a) == sorted(tldr)
    assert arm[arm.index("--out") + 1] == "docs/results/real_largest_retrain_last"
    assert arm[arm.index("--group-by") + 1] == "data,rm,schedule,variant"  # the two SER runs are two rows
    assert sorted(a.rsplit("/", 1)[-1] for a in arm if "experiment=" in a) == sorted([*tldr, last])
