"""machine.json: which CPU, GPUs and torch a run's numbers came from."""

from __future__ import annotations

import json

import torch

from ser.machine import cpu_model, machine_facts
from ser.store import RunStore


def test_cpu_model_reads_the_model_name_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
                   "model name\t: AMD EPYC 7B13\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 243.75\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    assert cpu_model(x86) == "AMD EPYC 7B13" and cpu_model(arm) == "Raspberry Pi 4 Model B Rev 1.4"
    assert isinstance(cpu_model(tmp_path / "missing"), str)  # no /proc (macOS): platform's answer


def test_each_start_appends_its_machine(tmp_path):
    store = RunStore(tmp_path, "hash")
    store.record_machine()
    store.record_machine()  # a resume: the first start's entry is kept
    starts = json.loads((tmp_path / "machine.json").read_text())
    assert len(starts) == 2 and starts[0]["started_utc"] <= starts[1]["started_utc"]
    assert starts[0]["torch"] == torch.__version__ and starts[0]["cpu"] == cpu_model()
    assert set(machine_facts()) == set(starts[1])
    RunStore(tmp_path / "other", "hash", writer=False).record_machine()  # a non-zero rank writes nothing
    assert not (tmp_path / "other").exists()
