"""Sampling for schedule=coevolve: batched, left-padded generation with the KV cache against generate() one
prompt at a time, on the same model and prompts (interleaved runs, medians; generated tokens per second).

    python -m experiments.bench.generation                    # SmolLM2-135M-Instruct, 32 synthetic prompts
    python -m experiments.bench.generation --model tiny       # a tiny random policy (seconds)
"""

from __future__ import annotations

import argparse
import statistics

import torch

from experiments.bench.common import interleaved, machine, print_machine, save


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="conf/policy/model option")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from ser.data.synthetic import synthetic_pairs
    from ser.policy.model import PolicyWithValue, load_policy_model
    from ser.policy.rollout import encode_prompts, generate
    from tests.conftest import compose

    cfg = compose([f"policy/model={args.model}"])
    prompts = sorted({p.prompt for p in synthetic_pairs(4 * args.prompts, seed=3)})[: args.prompts]
    model, tokenizer = load_policy_model(cfg.policy.model, vocab_texts=prompts)
    policy = PolicyWithValue(model, with_value=False)
    ids = encode_prompts(tokenizer, prompts, int(cfg.policy.max_prompt_tokens), cfg.policy.model.get("chat_template", True))
    generation = {**OmegaConf.to_container(cfg.policy.generation, resolve=True), "max_new_tokens": args.new_tokens}

    def batched():
        torch.manual_seed(0)
        return sum(int(generate(policy, tokenizer, ids[s:s + args.batch_size], generation).lengths.sum())
                   for s in range(0, len(ids), args.batch_size))

    def one_by_one():
        torch.manual_seed(0)
        return sum(int(generate(policy, tokenizer, [x], generation).lengths.sum()) for x in ids)

    info = machine()
    print_machine(info)
    runs = interleaved({f"batched (batch {args.batch_size}, KV cache)": batched, "generate() at batch 1": one_by_one},
                       args.repeats)
    result = {}
    for name, rows in runs.items():
        rates = [r["result"] / r["seconds"] for r in rows]
        result[name] = {"tokens": rows[0]["result"], "seconds_median": statistics.median(r["seconds"] for r in rows),
                        "tokens_per_second_median": statistics.median(rates)}
        print(f"{name:<32} {result[name]['tokens_per_second_median']:8.1f} generated tokens/s "
              f"(median of {len(rows)}; {rows[0]['result']} tokens)")
    names = list(result)
    print(f"speed-up: {result[names[0]]['tokens_per_second_median'] / result[names[1]]['tokens_per_second_median']:.2f}x")
    save("generation", {"machine": info, "args": vars(args), "result": result})
    return result


if __name__ == "__main__":
    main()
