"""One DPO step of the SmolLM2 policy: the LM head on target tokens only against the head on every position.

    python -m experiments.bench.dpo_step [--repeats 3] [--precision bf16|32]

8 pairs shaped as experiment=coevolve/cpu trains them (16 right-padded sequences, prompts of 40-80 tokens,
responses of 10-32, seeded): policy forward + backward through the LoRA adapter, reference forward (the
adapter off). Interleaved runs after an untimed warm-up round of each, medians; the log-probs of both paths
are compared (equal in fp32, bf16 rounding apart under autocast).
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from experiments.bench.common import interleaved, machine, median_seconds, print_machine, save


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("bf16", "32"), default="bf16")
    args = parser.parse_args(argv)

    from ser.policy.model import PolicyWithValue, load_policy_model
    from ser.policy.math import sequence_logprobs

    info = machine()
    print_machine(info)
    torch.manual_seed(0)
    policy = PolicyWithValue(load_policy_model(OmegaConf.load("conf/policy/model/smollm2.yaml"))[0], with_value=False)
    policy.train()
    g = torch.Generator().manual_seed(0)
    prompt, response = torch.randint(40, 81, (16,), generator=g), torch.randint(10, 33, (16,), generator=g)
    width = int((prompt + response).max())
    ids = torch.randint(100, 1000, (16, width), generator=g)
    mask = (torch.arange(width)[None] < (prompt + response)[:, None]).long()
    targets = ((torch.arange(width)[None] >= prompt[:, None]) & (mask == 1)).long()

    def every_position():
        logprobs, m = sequence_logprobs(policy(ids, mask, with_value=False)[0], ids, targets)
        ref, _ = sequence_logprobs(policy.reference_logits(ids, mask), ids, targets)
        return (logprobs * m).sum(1), (ref * m).sum(1)

    def target_rows():
        return policy.target_logps(ids, mask, targets), policy.target_logps(ids, mask, targets, reference=True)

    def step(logps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            chosen, ref = logps()
        (chosen - ref).sum().backward()
        policy.zero_grad()
        return chosen.detach()

    print(f"batch: 16 sequences, {int(mask.sum())} tokens, {int(targets.sum())} targets, width {width}", flush=True)
    timings = interleaved({"head on every position": lambda: step(every_position),
                           "head on target rows": lambda: step(target_rows)}, args.repeats)
    diff = (timings["head on every position"][-1]["result"] - timings["head on target rows"][-1]["result"]).abs().max()
    table = {name: {"median_s": median_seconds(rows), "seconds": [r["seconds"] for r in rows],
                    "loads": [r["load"] for r in rows]} for name, rows in timings.items()}
    for name, row in table.items():
        print(f"{name:<26}{row['median_s']:>8.2f} s")
    print(f"max |log-prob difference| {float(diff):.2e}")
    payload = {"machine": info, "args": vars(args), "results": table, "max_abs_logp_diff": float(diff)}
    save("dpo_step", payload)
    return payload


if __name__ == "__main__":
    main()
