#!/usr/bin/python3
"""bench/summarize.py: the table and the JSON lines of bench/run, from the JSON files of its runs.

  summarize.py OUT_DIR RUNS OPENBLAS_CORETYPE ROW...

ROW is "name cell layers hidden batch seq threads anchor [reference]". OUT_DIR holds peak{1,2}.{0,1}.json (bptt_bench peak at the start and the end), fma{1,2}.{0,1}.json
(bptt_bench fma, likewise; may be missing) and, for each row "name cell layers hidden batch seq
threads anchor" and run r, name.r.train.json and name.r.sample.json (bptt_bench), name.r.torch.json
(the PyTorch training anchor), name.r.torch_sample.json (bench/torch_cells.py --sample-only),
name.r.onednn.json and name.r.onednn_sample.json (bptt_onednn, training and --sample-only), and
name.r.train_bf16.json (bptt_bench train --precision bf16, where the CPU has AMX or AVX-512 BF16); the anchors' and
the bf16 files may be missing. Medians over the runs; a ratio is taken within each run, then its
median.

train_bf16_ratio and onednn_train_bf16_ratio: bptt's training with bf16 products over the
PyTorch and the oneDNN anchor's (float) training.
train_ratio_to_reference: a row's training chars/s over its reference row's (the row's ninth field:
the minimal cells against the LSTM of equal parameter count), taken per run, then the median.
sample_ratio_fp32: bptt fp32 over PyTorch fp32 sampling; sample_ratio_best: bptt's fastest
precision on the row (sample_best_precision) over PyTorch fp32; sample_ratio_bf16 and
sample_ratio_int8 likewise. onednn_train_ratio, onednn_sample_ratio_fp32, onednn_sample_ratio_best,
onednn_sample_ratio_bf16 and onednn_sample_ratio_int8: the same against the oneDNN anchor.
rss_over_need: training's share of the resident set (peak minus the
process before the model exists) over EstimateTrainingBytes; process_rss_over_need: whole peak.
peak_fraction: over the SGEMM peak of bptt's own kernels (bptt_gflops; older runs: Eigen's) on the
row's threads; openblas_peak_fraction: over
OpenBLAS's; fma_peak_fraction: over the FMA loop's peak (bptt_bench fma) on the row's threads.
"""
import json, statistics, sys
out, runs, coretype, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def best_peak(threads):
    peaks = [json.load(open(f"{out}/peak{threads}.{i}.json")) for i in range(2)]
    return {k: max(p.get(k, 0) for p in peaks) for k in peaks[0] if k.endswith("gflops")}
peaks = {t: best_peak(t) for t in (1, 2)}
def load(path):
    try:
        return json.load(open(path))
    except FileNotFoundError:
        return None
def best_fma(threads):
    runs = [f for f in (load(f"{out}/fma{threads}.{i}.json") for i in range(2)) if f]
    return max(f["fma_gflops"] for f in runs) if runs else None
fma = {t: best_fma(t) for t in (1, 2)}
def best_bf16(threads):
    runs = [f for f in (load(f"{out}/fma{threads}.{i}.json") for i in range(2)) if f and "bf16_dot_gflops" in f]
    return max(f["bf16_dot_gflops"] for f in runs) if runs else None
bf16 = {t: best_bf16(t) for t in (1, 2)}
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
for t, peak in peaks.items():
    print(f"SGEMM peak (2048^3, {t} thread(s), best of start and end):"
          + (f" bptt {peak['bptt_gflops']:.1f} GFLOP/s," if "bptt_gflops" in peak else "")
          + f" Eigen {peak['eigen_gflops']:.1f} GFLOP/s"
          + (f", OpenBLAS {peak['openblas_gflops']:.1f} GFLOP/s" if "openblas_gflops" in peak else "")
          + (f"; bfloat16 {peak['bf16_gflops']:.1f} GFLOP/s" if "bf16_gflops" in peak else "")
          + (f"; bfloat16 on AMX {peak['amx_bf16_gflops']:.1f} GFLOP/s" if "amx_bf16_gflops" in peak else ""))
for t, peak in fma.items():
    if peak is not None:
        print(f"FMA peak (independent FMAs, {t} thread(s), best of start and end): {peak:.1f} GFLOP/s"
              + (f"; AVX-512 BF16 dot products {bf16[t]:.1f} GFLOP/s" if bf16[t] else ""))
print(f"PyTorch and the OpenBLAS peak with OPENBLAS_CORETYPE={coretype}")
print(f"medians of {runs} run(s); ratios are per run (bptt, PyTorch and oneDNN back to back), then the median")
print("sampling: best of the same repeats after one untimed sample on every side; 'fp32 ratio' is bptt fp32 over"
      " PyTorch fp32, 'best ratio' bptt's fastest precision over PyTorch fp32; 'fp32/dnnl' and 'best/dnnl' the same"
      " over oneDNN fp32")
print("bf16 columns: bptt training with --precision bf16 (bfloat16 products) and its ratios to the same"
      " run's PyTorch and oneDNN (float) training")
hdr = (f"{'config':<20}{'bptt ch/s':>10}{'torch ch/s':>11}{'ratio':>7}{'dnnl ch/s':>10}{'r/dnnl':>7}"
       f"{'bf16 ch/s':>10}{'bf16/torch':>11}{'bf16/dnnl':>10}"
       f"{'GFLOP/s':>9}{'%peak':>7}{'%oblas':>7}{'%fma':>6}"
       f"{'smp fp32':>10}{'smp bf16':>10}{'smp int8':>10}{'torch smp':>10}{'fp32 ratio':>11}{'best ratio':>16}"
       f"{'dnnl smp':>10}{'fp32/dnnl':>10}{'best/dnnl':>10}{'us/ch':>7}"
       f"{'RSS MB':>8}{'train MB':>9}{'need MB':>8}{'x need':>7}")
print(hdr)
lines = []
f = lambda x, fmt: (fmt % x) if x is not None else "-"
precisions = ("fp32", "bf16", "int8")
for row in rows:
    name = row.split()[0]
    tr = [load(f"{out}/{name}.{r}.train.json") for r in range(runs)]
    sm = [load(f"{out}/{name}.{r}.sample.json") for r in range(runs)]
    th = [load(f"{out}/{name}.{r}.torch.json") for r in range(runs)]
    ts_runs = [load(f"{out}/{name}.{r}.torch_sample.json") for r in range(runs)]
    dn = [load(f"{out}/{name}.{r}.onednn.json") for r in range(runs)]
    ds_runs = [load(f"{out}/{name}.{r}.onednn_sample.json") for r in range(runs)]
    bt = med([t["train_chars_per_s"] for t in tr])
    t16 = [load(f"{out}/{name}.{r}.train_bf16.json") for r in range(runs)]
    bt16 = med([t["train_chars_per_s"] if t else None for t in t16])
    bs = {p: med([s[f"sample_{p}_chars_per_s"] for s in sm]) for p in precisions}
    best = max(precisions, key=lambda p: bs[p])  # bptt's fastest precision on this row
    tt = med([t["train_chars_per_s"] if t else None for t in th])
    ts = med([t["sample_chars_per_s"] if t else None for t in ts_runs])
    tratio = med([a["train_chars_per_s"] / b["train_chars_per_s"] if b else None for a, b in zip(tr, th)])
    sratio = {p: med([a[f"sample_{p}_chars_per_s"] / b["sample_chars_per_s"] if b else None
                      for a, b in zip(sm, ts_runs)]) for p in precisions}
    dt = med([t["train_chars_per_s"] if t else None for t in dn])
    ds = med([t["sample_chars_per_s"] if t else None for t in ds_runs])
    dratio = med([a["train_chars_per_s"] / b["train_chars_per_s"] if b else None for a, b in zip(tr, dn)])
    t16ratio = med([a["train_chars_per_s"] / b["train_chars_per_s"] if a and b else None for a, b in zip(t16, th)])
    d16ratio = med([a["train_chars_per_s"] / b["train_chars_per_s"] if a and b else None for a, b in zip(t16, dn)])
    dsratio = {p: med([a[f"sample_{p}_chars_per_s"] / b["sample_chars_per_s"] if b else None
                       for a, b in zip(sm, ds_runs)]) for p in precisions}
    dimpl = next((t["impl"] for t in dn if t), None)
    dloss = med([t["loss"] if t else None for t in dn])
    gf = med([t["gflops"] for t in tr])
    peak = peaks[int(row.split()[6])]  # on the row's threads
    ref = peak.get("bptt_gflops", peak["eigen_gflops"])
    oref = peaks[int(row.split()[6])].get("openblas_gflops")
    fref = fma[int(row.split()[6])]  # the FMA loop's peak on the row's threads
    rss = max(t["peak_rss_mb"] for t in tr)
    trss = max(t["training_rss_mb"] for t in tr)
    est = tr[0]["estimate_mb"]
    best_text = f"{sratio[best]:.1f} ({best})" if sratio[best] is not None else "-"
    print(f"{name:<20}{bt:>10.0f}{f(tt, '%.0f'):>11}{f(tratio, '%.2f'):>7}{f(dt, '%.0f'):>10}{f(dratio, '%.2f'):>7}"
          f"{f(bt16, '%.0f'):>10}{f(t16ratio, '%.2f'):>11}{f(d16ratio, '%.2f'):>10}"
          f"{gf:>9.1f}{100 * gf / ref:>6.0f}%{f(oref and 100 * gf / oref, '%.0f%%'):>7}{f(fref and 100 * gf / fref, '%.0f%%'):>6}"
          f"{bs['fp32']:>10.0f}{bs['bf16']:>10.0f}{bs['int8']:>10.0f}{f(ts, '%.0f'):>10}{f(sratio['fp32'], '%.1f'):>11}"
          f"{best_text:>16}{f(ds, '%.0f'):>10}{f(dsratio['fp32'], '%.1f'):>10}{f(dsratio[best], '%.1f'):>10}{1e6 / bs[best]:>7.1f}"
          f"{rss:>8.0f}{trss:>9.0f}{est:>8.0f}{trss / est:>7.2f}")
    r = lambda x, n: None if x is None else round(x, n)
    lines.append(dict(config=name, bptt_train_chars_per_s=r(bt, 1), torch_train_chars_per_s=r(tt, 1),
                      train_ratio=r(tratio, 3), bptt_train_bf16_chars_per_s=r(bt16, 1),
                      train_bf16_ratio=r(t16ratio, 3), onednn_train_bf16_ratio=r(d16ratio, 3),
                      bptt_sample_fp32_chars_per_s=r(bs["fp32"], 1), bptt_sample_bf16_chars_per_s=r(bs["bf16"], 1),
                      bptt_sample_int8_chars_per_s=r(bs["int8"], 1), torch_sample_fp32_chars_per_s=r(ts, 1),
                      sample_ratio_fp32=r(sratio["fp32"], 2), sample_ratio_bf16=r(sratio["bf16"], 2),
                      sample_ratio_int8=r(sratio["int8"], 2), sample_best_precision=best,
                      sample_ratio_best=r(sratio[best], 2), sample_us_per_char_best=r(1e6 / bs[best], 1),
                      gflops=r(gf, 1), peak_fraction=r(gf / ref, 3),
                      openblas_peak_fraction=r(oref and gf / oref, 3), fma_gflops=r(fref, 1),
                      fma_peak_fraction=r(fref and gf / fref, 3),
                      onednn_train_chars_per_s=r(dt, 1), onednn_train_ratio=r(dratio, 3), onednn_loss=dloss,
                      onednn_impl=dimpl, onednn_sample_fp32_chars_per_s=r(ds, 1),
                      onednn_sample_ratio_fp32=r(dsratio["fp32"], 2), onednn_sample_ratio_bf16=r(dsratio["bf16"], 2),
                      onednn_sample_ratio_int8=r(dsratio["int8"], 2), onednn_sample_ratio_best=r(dsratio[best], 2),
                      peak_rss_mb=r(rss, 1),
                      training_rss_mb=r(trss, 1), training_need_mb=r(est, 1),
                      rss_over_need=r(trss / est, 3), process_rss_over_need=r(rss / est, 3),
                      openblas_coretype=coretype, runs=runs))
# Rows timed against a reference row of the same runs.
for row in rows:
    fields = row.split()
    if len(fields) < 9:
        continue
    name, reference = fields[0], fields[8]
    ratio = med([a["train_chars_per_s"] / b["train_chars_per_s"] if a and b else None
                 for a, b in zip((load(f"{out}/{name}.{r}.train.json") for r in range(runs)),
                                 (load(f"{out}/{reference}.{r}.train.json") for r in range(runs)))])
    print(f"{name}: training {f(ratio, '%.2f')}x the chars/s of {reference} (median of per-run ratios)")
    for l in lines:
        if l["config"] == name:
            l.update(reference=reference, train_ratio_to_reference=None if ratio is None else round(ratio, 3))
for l in lines:
    print(json.dumps(l))
# Start-up (bench/startup.py), when the run measured it.
startup = load(f"{out}/startup.json")
if startup:
    print(f"start-up, 2x512 LSTM checkpoint, `bptt sample --length {startup['length']}` as whole processes "
          f"(median of {startup['runs']}): bptt {startup['bptt_total_s']:.3f} s (first symbol at "
          f"{1e3 * startup['bptt_first_symbol_s']:.0f} ms), PyTorch on {startup['torch_threads']} thread(s) "
          f"{startup['torch_total_s']:.3f} s (first symbol at {1e3 * startup['torch_first_symbol_s']:.0f} ms): "
          f"{startup['startup_ratio']:.1f}x")
    print(json.dumps(dict(config="startup", **startup)))
