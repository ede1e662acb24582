"""experiments/synthetic_report.py on hand-made run dirs: means over the seeds every column ran, the gap closed,
the ceiling, and the switches table read from validation."""

import json

from experiments import synthetic_report

CEIL = "data.synthetic.withhold_from_pool=_swapped_steps_"


def _run(root, name, schedule, seed, test, val=0.9, subtle=None, subtle0=None, statuses=(), val_loss=0.2,
         data="synthetic"):
    loops = [{"loop": 0, "selected_total": 0, "test_accuracy_by_group": {"stark": 0.9, "subtle": subtle0}}]
    for k, status in enumerate(statuses, start=1):
        loops.append({"loop": k, "status": status, "selected": 100, "selected_total": 100 * k,
                      "selected_by_group": {"stark": 100 - 10 * k, "subtle": 10 * k},
                      "self_label_accuracy_by_group": {"stark": 1.0, "subtle": 0.9},
                      "test_accuracy_by_group": {"stark": 0.99, "subtle": subtle}})
    loops[-1]["val_loss"] = val_loss
    summary = {"schedule": schedule, "data": data, "seed": seed, "statuses": list(statuses), "loops": loops,
               "final": {"loop": loops[-1]["loop"], "val_accuracy": val, "test_accuracy": test}}
    d = root / f"{name},seed={seed}"
    (d / ".hydra").mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))
    # as a sweep records them: the launcher's overrides too, which the run dir's name leaves out
    recorded = [*name.split(","), f"seed={seed}", "launcher=joblib", "hydra.launcher.n_jobs=2"]
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in recorded))


def test_the_report_pairs_seeds_and_computes_the_gap_closed(tmp_path, capsys):
    for seed, (so, ser, full) in enumerate([(0.80, 0.85, 1.00), (0.90, 0.93, 1.00)]):
        _run(tmp_path, "schedule=seed_only", "seed_only", seed, so)
        _run(tmp_path, "schedule=ser", "ser", seed, ser, subtle=0.8, subtle0=0.7, statuses="112")
        _run(tmp_path, "schedule=full_data", "full_data", seed, full)
        _run(tmp_path, f"{CEIL},schedule=full_data", "full_data", seed, 0.95)
    _run(tmp_path, "schedule=seed_only", "seed_only", 3, 0.70)  # seed 3: no ceiling run
    _run(tmp_path, "schedule=ser", "ser", 3, 0.70, subtle=0.7, subtle0=0.7, statuses="112")
    _run(tmp_path, "schedule=full_data", "full_data", 3, 1.00)
    _run(tmp_path, "schedule=ser", "ser", 2, 0.99, subtle=0.9, subtle0=0.9, statuses="112")  # no seed_only: not in means
    _run(tmp_path, "schedule=ser,ser.loop_epochs=4", "ser", 0, 0.70, val=0.5, statuses="1")
    _run(tmp_path, "schedule=ser,ser.loop_epochs=4", "ser", 1, 0.80, val=0.7, statuses="1")
    _run(tmp_path, "coevolve.rm=self,experiment=coevolve_cpu", "coevolve", 0, 0.5, statuses="112")  # not an RM run
    _run(tmp_path, "experiment=real_hh_helpful,schedule=ser", "ser", 0, 0.6, statuses="112", data="hh_helpful_shared")
    ser_dpo = tmp_path / "schedule=ser_dpo,seed=0"  # a policy stage's summary: no loops
    ser_dpo.mkdir()
    (ser_dpo / "summary.json").write_text(json.dumps({"schedule": "ser_dpo", "data": "synthetic", "seed": 0}))

    assert synthetic_report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report.md").read_text()
    # means of seeds 0, 1, 3: seed_only 80, SER 82.67, full 100 -> 2.67 / 20 = 13.3% of the gap; paired differences
    # +5, +3, 0: 2.67 ± t(0.975, 2) 4.303 * 2.517 / 1.732 = 6.25 -> [-3.58, +8.92], 2 wins 1 tie. The ceiling ran on seeds
    # 0-1 only: there seed_only 85, full 100, ceiling 95 -> 66.7%, SER 89 -> 26.7%. Subtle: +10, +10, 0 -> +6.67.
    assert "| mean (3 seeds) | 80.00 | 82.67 | 100.00 | 95.00 (2 seeds) | +2.67 [-3.58, +8.92] 2/1/0 |" in text
    assert "SER closes 13.3% of the seed→full gap" in text
    assert "on the 2 seeds the ceiling¹ ran, it closes 66.7% of their gap and SER 26.7%" in text
    assert "Subtle test pairs: +6.67 points" in text
    assert "| 2 | — | 99.00 |" in text  # shown per seed, left out of the means
    assert "| `schedule=ser,ser.loop_epochs=4` | 0, 1 | 60.00 | 75.00 |" in text
    assert "| 0 | 3 | 2 | 100 | 70 / 30 | 100.00 / 90.00 | 80.00 |" in text  # per loop: selected and right, by kind
    assert (tmp_path / "report_runs.csv").read_text().count("\n") == 1 + 14  # header + every run


def test_the_by_kind_table_counts_kept_self_labels_and_averages_test_accuracy(tmp_path):
    import pandas as pd

    paths = []
    for seed, (right, test1) in enumerate([(True, 0.5), (False, 0.7)]):
        _run(tmp_path, "schedule=ser", "ser", seed, 0.9, statuses="1")
        d = tmp_path / f"schedule=ser,seed={seed}"
        summary = json.loads((d / "summary.json").read_text())
        summary["loops"][0]["test_accuracy_by_kind"] = {"swapped_steps": 0.4, "refusal": 1.0}
        summary["loops"][1]["test_accuracy_by_kind"] = {"swapped_steps": test1, "refusal": 1.0}
        (d / "summary.json").write_text(json.dumps(summary))
        (d / "selflabels").mkdir()
        rows = [{"id": f"syn-00000{seed}-0-swapped_steps", "correct": right},
                {"id": f"syn-00001{seed}-0-refusal", "correct": True}, {"id": f"syn-00002{seed}-1-refusal", "correct": True}]
        (d / "selflabels" / "loop_1.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        paths.append(str(d / "summary.json"))
    runs = pd.DataFrame({"setting": ["schedule=ser"] * 2, "seed": [0, 1], "path": paths})
    table = synthetic_report.by_kind_table(runs, range(0, 5))
    # swapped steps: one kept per seed, right on seed 0 only; test 40 -> mean(50, 70) = 60
    assert "| swapped_steps | 40.00 | 2 (50.00) → 60.00 |" in table
    assert "| refusal | 100.00 | 4 (100.00) → 100.00 |" in table
    assert synthetic_report.by_kind_table(runs, range(5, 10)) == ""


def test_a_switch_run_on_three_seeds_gets_its_own_table_against_the_same_baselines(tmp_path):
    for seed, (so, ser, full) in enumerate([(0.80, 0.85, 1.00), (0.90, 0.93, 1.00), (0.70, 0.70, 1.00)]):
        _run(tmp_path, "schedule=seed_only", "seed_only", seed, so)
        _run(tmp_path, "schedule=ser", "ser", seed, ser, subtle=0.8, subtle0=0.7, statuses="112")
        _run(tmp_path, "schedule=full_data", "full_data", seed, full)
        _run(tmp_path, "rm.loss.hard_pair_gamma=2,schedule=ser", "ser", seed, ser + 0.05, subtle=0.9, subtle0=0.7,
             statuses="112")
    _run(tmp_path, "schedule=ser,ser.loop_epochs=4", "ser", 0, 0.70, statuses="1")  # 1 seed: no table of its own
    assert synthetic_report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report.md").read_text()
    # the switch: 90, 98, 75 -> 87.67 against seed_only 80 and full 100: 7.67 / 20 = 38.3% of the gap
    assert "## seeds 0-4 (settings chosen on their validation), SER with `rm.loss.hard_pair_gamma=2,schedule=ser`" in text
    assert "| mean (3 seeds) | 80.00 | 87.67 | 100.00 |" in text
    assert "SER closes 38.3% of the seed→full gap" in text
    assert "| mean (3 seeds) | 80.00 | 82.67 | 100.00 |" in text  # the default's table as before
    assert "ser.loop_epochs=4`\n" not in text and "SER with `schedule=ser,ser.loop_epochs=4`" not in text


def test_the_setting_for_the_other_seeds_is_chosen_on_validation_of_seeds_0_and_1(tmp_path, capsys):
    from experiments import choose_on_val

    for seed in (0, 1):
        _run(tmp_path, "schedule=ser", "ser", seed, 0.99, val=0.90, statuses="112")  # the default: best on test
        _run(tmp_path, "rm.loss.hard_pair_gamma=2,schedule=ser", "ser", seed, 0.80, val=0.94, val_loss=0.30,
             statuses="112")
        _run(tmp_path, "schedule=ser,ser.stratify_bins=4", "ser", seed, 0.80, val=0.94, val_loss=0.25, statuses="112")
        # the best of its loops on validation: not comparable, never chosen
        _run(tmp_path, "schedule=ser,ser.final_model=best_val,ser.patience=2", "ser", seed, 0.8, val=1.0, statuses="1")
        # real data in the same sweeps dir: not a candidate
        _run(tmp_path, "experiment=real_hh_helpful,schedule=ser", "ser", seed, 0.6, val=0.99, data="hh_helpful_shared")
    _run(tmp_path, "schedule=ser,ser.loop_epochs=4", "ser", 0, 0.8, val=1.0, statuses="112")  # seed 0 only
    # gamma and stratify tie on validation accuracy (94); stratify has the lower validation loss. Test never counts.
    assert choose_on_val.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == "ser.stratify_bins=4\n"
    table = choose_on_val.candidates(synthetic_report.load(tmp_path))
    assert list(table["setting"]) == ["schedule=ser,ser.stratify_bins=4", "rm.loss.hard_pair_gamma=2,schedule=ser",
                                      "schedule=ser"]
    # the default wins when it is best on validation, and adds no override
    _run(tmp_path, "schedule=ser,ser.margin=1", "ser", 0, 0.99, val=0.80, statuses="112")
    for seed in (0, 1):
        summary = tmp_path / f"schedule=ser,seed={seed}" / "summary.json"
        s = json.loads(summary.read_text())
        s["final"]["val_accuracy"] = 0.96
        summary.write_text(json.dumps(s))
    assert choose_on_val.choose(synthetic_report.load(tmp_path)) == ("schedule=ser", [])
    # the page marks the winner among the switches
    assert synthetic_report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| `schedule=ser` **(chosen)** | 0, 1 | 96.00 |" in text
    assert "among 3 settings): `schedule=ser`" in text


def test_a_loss_switch_is_also_measured_against_baselines_trained_with_it(tmp_path):
    gamma = "rm.loss.hard_pair_gamma=2"
    for seed, (so, ser, full) in enumerate([(0.80, 0.85, 1.00), (0.90, 0.93, 1.00), (0.70, 0.70, 1.00)]):
        _run(tmp_path, "schedule=seed_only", "seed_only", seed, so)
        _run(tmp_path, "schedule=ser", "ser", seed, ser, statuses="112")
        _run(tmp_path, "schedule=full_data", "full_data", seed, full)
        _run(tmp_path, f"{gamma},schedule=ser", "ser", seed, ser + 0.05, statuses="112")
        _run(tmp_path, f"{gamma},schedule=seed_only", "seed_only", seed, so + 0.02)
        _run(tmp_path, f"{gamma},schedule=full_data", "full_data", seed, full - 0.01)
        _run(tmp_path, "schedule=ser,ser.stratify_bins=4", "ser", seed, ser, statuses="112")  # a loop switch only
    assert synthetic_report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report.md").read_text()
    # seed_only 82, SER 87.67, full 99: 5.67 / 17 = 33.3%; differences +8, +6, +3 -> +5.67, 3 wins
    assert ("Against seed_only and full_data trained with the same RM overrides (`rm.loss.hard_pair_gamma=2`, 3 seeds): "
            "82.00 → SER 87.67, full 99.00; SER closes 33.3% of that gap, SER − seed_only +5.67") in text
    assert text.count("Against seed_only and full_data trained with the same RM overrides") == 1  # not for stratify
    # what synthetic.sh trains the baselines with: the winner's RM overrides only
    from experiments import choose_on_val

    _run(tmp_path, f"{gamma},schedule=ser,ser.stratify_bins=4", "ser", 0, 0.9, val=1.0, statuses="112")
    _run(tmp_path, f"{gamma},schedule=ser,ser.stratify_bins=4", "ser", 1, 0.9, val=1.0, statuses="112")
    assert choose_on_val.choose(synthetic_report.load(tmp_path))[1] == [gamma, "ser.stratify_bins=4"]
    assert synthetic_report.rm_overrides(["ser.stratify_bins=4", gamma, "phases=paper"]) == [gamma]


def test_a_second_round_chooses_on_the_validation_of_seeds_0_to_4(tmp_path, capsys):
    import pytest

    from experiments import choose_on_val

    last, cap = "schedule=ser,ser.retrain_from=last", "schedule=ser,ser.retrain_from=last,ser.top_fraction=0.4"
    # seeds 0-1: retrain_from=last wins (96 against 94); on seeds 2-4 the larger cap is right more often, so over
    # seeds 0-4 it wins (95.2 against 94.8); the default has only seeds 0-1 and is no candidate of the second round
    for seed, (v_last, v_cap) in enumerate([(0.96, 0.94), (0.96, 0.94), (0.94, 0.96), (0.94, 0.96), (0.94, 0.96)]):
        _run(tmp_path, last, "ser", seed, 0.50, val=v_last, statuses="112")  # test never counts
        _run(tmp_path, cap, "ser", seed, 0.40, val=v_cap, statuses="112")
    for seed in (0, 1):
        _run(tmp_path, "schedule=ser", "ser", seed, 0.99, val=0.90, statuses="112")
    runs = synthetic_report.load(tmp_path)
    assert choose_on_val.choose(runs)[1] == ["ser.retrain_from=last"]
    assert choose_on_val.main([str(tmp_path), "--seeds", "4,3,2,1,0"]) == 0
    assert capsys.readouterr().out == "ser.retrain_from=last\nser.top_fraction=0.4\n"
    assert list(choose_on_val.candidates(runs, (0, 1, 2, 3, 4))["setting"]) == [cap, last]
    with pytest.raises(SystemExit):
        choose_on_val.main([str(tmp_path), "--seeds", "0-4"])
    assert "--seeds '0-4': comma-separated integers" in capsys.readouterr().err
    # the page shows both rounds, each with its own winner
    assert synthetic_report.main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report.md").read_text()
    assert f"| `{last}` **(chosen)** | 0, 1 | 96.00 |" in text
    second = text.split("## Second round (seeds 0-4; chosen on validation)")[1]
    assert "among 2 settings): `" + cap + "`" in second
    assert f"| `{cap}` **(chosen)** | 0, 1, 2, 3, 4 | 95.20 | 40.00 |" in second
    assert f"| `{last}` | 0, 1, 2, 3, 4 | 94.80 | 50.00 |" in second
