"""Self-labeling throughput: our scoring path vs the transformers text-classification pipeline.

    python -m experiments.bench.score_vs_pipeline [--pairs 200] [--repeats 3] [--data hh|synthetic]
                                                  [--batch-size 8] [--no-compile]

Both score the same texts ("Question: {prompt}\\n\\nAnswer: {response}", both sides of each pair)
with the same all-MiniLM-L6-v2 reward model and tokenizer (max_length 512, truncated from the
left). The pipeline is called as the paper's scripts call it:
`pipeline("text-classification", function_to_apply="sigmoid", batch_size=50)`. Our time includes
tokenisation (a fresh TokenCache per run), as the pipeline's does. Also printed: the share of the
machine's matmul peak our scoring reaches (useful FLOPs: real tokens only, padding excluded), and
how much bf16 autocast moves the rewards and the pairwise decisions, and the op ceiling
(`encoder_op_ceiling`): the time MiniLM's linears and attention take alone at the shapes scoring
runs them, everything else free: the share of the peak no scoring path of this model can pass here.

Compiled scoring (`rm.score_compile=true`: torch.compile with frozen weights) is timed after it has
compiled on *other* texts (the next pairs of the sample): the compile itself is printed apart, as
the cost paid once per RM (once per SER loop).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from experiments.bench.common import (
    bench_pairs,
    encoder_flops,
    encoder_op_ceiling,
    interleaved,
    load_minilm,
    machine,
    matmul_peak,
    median_seconds,
    print_machine,
    save,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", choices=("hh", "synthetic"), default="hh")
    parser.add_argument("--max-length", type=int, default=512)
    # 8: on the 2-core CPU small batches keep each GEMM's operands in cache (bs 8 vs 64: 1.3x eager,
    # 1.5x compiled); length-sorting already removes the padding that large batches would amortise
    parser.add_argument("--batch-size", type=int, default=8, help="our batch size (the pipeline's is 50)")
    parser.add_argument("--no-compile", action="store_true", help="skip score_token_ids(compile=True)")
    parser.add_argument("--pipeline-bf16", action="store_true", help="also time the pipeline on a bf16 model copy")
    args = parser.parse_args(argv)

    from transformers import pipeline

    from ser.data.tokens import DEFAULT_TEMPLATE, TokenCache, render
    from ser.reward.scoring import score_texts

    info = machine()
    print_machine(info)
    pairs, source = bench_pairs(2 * args.pairs, args.data)
    pairs, unseen = pairs[: args.pairs], pairs[args.pairs:]  # the compiled path compiles on `unseen`
    texts = [render(DEFAULT_TEMPLATE, p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    model, tokenizer = load_minilm()
    model.eval()
    lengths = [len(ids) for ids in TokenCache(tokenizer, args.max_length).encode(texts)]
    print(f"data: {source}; {len(texts)} texts, {sum(lengths)} tokens after truncation "
          f"(mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)})", flush=True)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, function_to_apply="sigmoid",
                        batch_size=50, device="cpu")
    pipe_kwargs = {"truncation": True, "max_length": args.max_length}

    def ours(precision: str, compile: bool = False):
        return lambda: score_texts(model, TokenCache(tokenizer, args.max_length), texts, pooling="hf",
                                   batch_size=args.batch_size, precision=precision, compile=compile)

    runs = {"ours fp32": ours("32"), "ours bf16-autocast": ours("bf16-mixed"),
            "pipeline fp32 (bs=50)": lambda: classify(texts, **pipe_kwargs)}
    if args.pipeline_bf16:
        bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        classify16 = pipeline("text-classification", model=bf16_model, tokenizer=tokenizer,
                              function_to_apply="sigmoid", batch_size=50, device="cpu")
        runs["pipeline bf16 model (bs=50)"] = lambda: classify16(texts, **pipe_kwargs)
    compile_seconds = {}
    if not args.no_compile:
        warm_texts = [render(DEFAULT_TEMPLATE, p.prompt, r) for p in unseen for r in (p.chosen, p.rejected)]
        for precision, name in (("32", "ours fp32 compiled"), ("bf16-mixed", "ours bf16-autocast compiled")):
            start = time.perf_counter()
            score_texts(model, TokenCache(tokenizer, args.max_length), warm_texts, pooling="hf",
                        batch_size=args.batch_size, precision=precision, compile=True)
            compile_seconds[name] = time.perf_counter() - start
            print(f"  {name}: compile + first scoring of {len(warm_texts)} other texts {compile_seconds[name]:.1f} s",
                  flush=True)
            runs[name] = ours(precision, compile=True)
    peak_before = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    ceiling_before = encoder_op_ceiling(model.config, lengths, args.batch_size)
    timings = interleaved(runs, args.repeats)
    ceiling_after = encoder_op_ceiling(model.config, lengths, args.batch_size)
    peak_after = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    peak = {k: max(peak_before[k], peak_after[k]) for k in peak_before}
    # the faster of the two measurements: the least time the matmuls and attention alone can take
    ceiling = min(ceiling_before, ceiling_after, key=lambda c: c["seconds"])
    ceiling_bf16 = encoder_op_ceiling(model.config, lengths, args.batch_size, dtype=torch.bfloat16)

    # Same model, same texts: the pipeline's sigmoid scores must be ours through a sigmoid.
    r32 = timings["ours fp32"][-1]["result"]
    r16 = timings["ours bf16-autocast"][-1]["result"]
    compiled_diff = {name: (timings[name][-1]["result"] - (r16 if "bf16" in name else r32)).abs().max().item()
                     for name in compile_seconds}
    piped = torch.tensor([row["score"] for row in timings["pipeline fp32 (bs=50)"][-1]["result"]])
    agree_pipe = (torch.sigmoid(r32) - piped).abs().max().item()
    n = len(pairs)
    flips = ((r32[0::2] > r32[1::2]) != (r16[0::2] > r16[1::2])).float().mean().item()
    flops = encoder_flops(model.config, lengths)

    print(f"\n{'':<30}{'median s':>10}{'seq/s':>10}{'x pipeline':>12}{'GFLOP/s':>10}{'% peak':>8}")
    base = median_seconds(timings["pipeline fp32 (bs=50)"])
    table = {}
    for name, rows in timings.items():
        sec = median_seconds(rows)
        gflops = flops / sec / 1e9
        kind = "bf16" if "bf16" in name else "fp32"
        table[name] = {"median_s": sec, "seq_per_s": len(texts) / sec, "x_pipeline": base / sec,
                       "gflops": gflops, "pct_peak": 100 * gflops / peak[kind], "peak_kind": kind,
                       "loads": [r["load"] for r in rows], "seconds": [r["seconds"] for r in rows]}
        print(f"{name:<30}{sec:>10.2f}{len(texts) / sec:>10.1f}{base / sec:>12.2f}{gflops:>10.1f}"
              f"{table[name]['pct_peak']:>7.0f}%")
    print(f"matmul peak (best of torch.matmul and oneDNN, 1024/2048, before/after): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s")
    ceiling_pct = {k: 100 * flops / ceiling[k] / 1e9 / peak["fp32"] for k in ("seconds", "packed_seconds")}
    eager = table["ours fp32"]["median_s"]
    print(f"op ceiling (fp32; only the matmuls and the attention cost time, each timed alone at scoring's shapes, "
          f"best of before/after): {ceiling['seconds']:.2f} s = {ceiling_pct['seconds']:.0f} % of the fp32 peak "
          f"(linears {ceiling['linear_seconds']:.2f} s, attention {ceiling['attention_seconds']:.2f} s); with no "
          f"padding at all {ceiling['packed_seconds']:.2f} s = {ceiling_pct['packed_seconds']:.0f} %; "
          f"ours fp32 eager takes {eager / ceiling['seconds']:.2f}x the ceiling")
    bf16_pct = 100 * flops / ceiling_bf16["seconds"] / 1e9 / peak["bf16"]
    compiled16 = table.get("ours bf16-autocast compiled")
    print(f"op ceiling in bf16: {ceiling_bf16['seconds']:.2f} s = {bf16_pct:.0f} % of the bf16 peak (linears "
          f"{ceiling_bf16['linear_seconds']:.2f} s, attention {ceiling_bf16['attention_seconds']:.2f} s)"
          + (f"; ours bf16 compiled takes {compiled16['median_s'] / ceiling_bf16['seconds']:.2f}x it" if compiled16 else ""))
    for name, diff in compiled_diff.items():
        print(f"{name} vs the same precision eager: max |reward diff| = {diff:.2e}; compile + first call "
              f"{compile_seconds[name]:.1f} s")
    print(f"max |sigmoid(ours fp32) - pipeline score| = {agree_pipe:.2e}")
    print(f"bf16 autocast vs fp32: max |reward diff| = {(r16 - r32).abs().max().item():.4f} "
          f"(reward std {r32.std().item():.4f}); pairwise decisions flipped: {flips:.2%} of {n} pairs")
    payload = {"machine": info, "data": source, "texts": len(texts), "tokens": sum(lengths), "args": vars(args),
               "matmul_peak_gflops": peak, "results": table, "pipeline_max_abs_diff": agree_pipe,
               "bf16_max_abs_reward_diff": (r16 - r32).abs().max().item(), "bf16_decision_flips": flips,
               "compile_seconds": compile_seconds, "compiled_max_abs_reward_diff": compiled_diff,
               "op_ceiling": {"before": ceiling_before, "after": ceiling_after, "pct_peak": ceiling_pct,
                              "bf16": ceiling_bf16, "bf16_pct_peak": bf16_pct}}
    save("score_vs_pipeline", payload)
    return payload


if __name__ == "__main__":
    main()
