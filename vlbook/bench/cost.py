"""What a full pre-training run costs: GPU-hours per chapter, estimated, beside the paper's.

``python -m vlbook.bench cost`` reads a ``models`` benchmark result
(``results_root()/bench/models-<device>-<precision>.json``: the paper-size model's training
step at batch 1, its matrix-product FLOPs counted by :func:`vlbook.analysis.count_flops`) and
multiplies it by the number of samples the chapter's ``full`` preset pre-trains on:

    GPU-hours = samples x FLOPs per sample / (GPU peak x MFU) / 3600

an **estimate**, labelled as one on the page, at a stated peak and a stated model-FLOPs
utilisation (default 40 %). When the paper states its own compute, its GPU-hours stand beside
ours, and so does the MFU that the paper's run would have had on its GPUs if it did exactly
the counted FLOPs (``FLOPs / (paper GPU-hours x peak)``): a low value says that the run was
bound by something the FLOP count does not see (video decoding, data loading, communication),
or that the sample count below is not the one the authors ran.

Sample counts are the ``full`` presets' (epochs x the training set's size, or steps x the
global batch); dataset sizes are the papers' (cited in :data:`RUNS`). Nothing here times a
step; ``--device-result`` can point to a ``models`` result measured on a GPU (its steps'
FLOPs are the same numbers, counted there).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlbook.bench.common import write_result
from vlbook.paths import results_root

#: Dense peak TFLOP/s of the GPUs the estimate and the papers use (vendor data sheets; tensor
#: cores, fp16 / bf16 inputs, no sparsity).
GPU_PEAK_TFLOPS: dict[str, float] = {
    "V100 (fp16)": 125.0,
    "A100 (bf16)": 312.0,
    "H200 (bf16)": 989.4,
}


@dataclass(frozen=True)
class FullRun:
    """One chapter's ``full`` pre-training run, as its preset and paper describe it."""

    chapter: str
    stage: str
    #: the ``models`` benchmark row of the paper-size train step (batch 1)
    bench_row: str
    samples: float
    samples_from: str
    paper_gpu: str | None = None
    paper_gpu_hours: float | None = None
    paper_compute: str = "not stated"
    #: a multiplier of the counted step when the benchmark could not count it (E-ViLM)
    flops_note: str = ""


#: The five chapters' full pre-training runs. Sizes: HowTo100M 1.1 M videos (VLM Sec. 5.1.1),
#: WebVid-2M 2.5 M pairs (SimVTP Sec. 1), Kinetics-710 0.66 M training clips (UniFormerV2,
#: Li et al. 2022, which defines the set UMT Sec. 4.1 uses).
RUNS: tuple[FullRun, ...] = (
    FullRun("vlm", "pre-training", "vlm-vlm_base-b1", 15 * 1.1e6 * 32,
            "15 epochs x 1.1 M videos x 32 clips per video (batch 256 = 8 videos x 32, Sec. 5.2)",
            "V100 (fp16)", 8 * 24, "8 V100 for one day (appendix: 15 epochs, fp16)"),
    FullRun("simvtp", "pre-training", "simvtp-simvtp_base-b1", 200 * 2.5e6,
            "200 epochs x 2.5 M WebVid-2M pairs (release script)"),
    FullRun("umt", "stage 1", "umt-umt_base-uta-b1", 200 * 0.66e6,
            "200 epochs x 0.66 M Kinetics-710 clips (Sec. 4.1)", "A100 (bf16)", 32 * 60,
            "32 A100, about 60 hours (Sec. 4.1, ViT-B/16)"),
    FullRun("allinone", "pre-training", "allinone-allinone_base-rolling-S3-b1",
            200_000 * 4096, "200 K steps x batch 4096 (the preset: release config; the paper's "
            "16 per GPU on 32 GPUs would be 8x fewer samples)", "A100 (bf16)", 32 * 7 * 24,
            "32 A100 for 7 days (Sec. 4.1.2, footnote 3)"),
    FullRun("evilm", "pre-training", "evilm-evilm-b1", 20 * 2.5e6,
            "20 epochs x 2.5 M WebVid pairs (Sec. 4.1)",
            flops_note="3 x the forward pass (the benchmark does not count this train step)"),
)


@dataclass
class CostRow:
    chapter: str
    stage: str
    samples: float
    samples_from: str
    gflops_per_sample: float | None
    flops_from: str
    total_eflop: float | None
    estimate_gpu_hours: dict[str, float | None]
    paper_gpu: str | None
    paper_gpu_hours: float | None
    paper_compute: str
    paper_implied_mfu: float | None


def _bench_rows(payload: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["name"], r["mode"]): r for r in payload.get("results", [])}


def flops_per_sample(run: FullRun, rows: dict[tuple[str, str], dict[str, Any]]
                     ) -> tuple[float | None, str]:
    """FLOPs of one training sample: the paper-size train step at batch 1 of the ``models``
    result, or ``3 x`` its forward when the train step was not counted (``run.flops_note``)."""
    train = rows.get((run.bench_row, "train"))
    if train is None:
        return None, f"no '{run.bench_row}' row in the models result"
    per = train.get("flops_per_step")
    if per:
        return per / train["batch_size"], "train step counted (forward + backward)"
    infer = rows.get((run.bench_row, "infer"))
    if run.flops_note and infer and infer.get("flops_per_step"):
        return 3 * infer["flops_per_step"] / infer["batch_size"], run.flops_note
    return None, "the train step's FLOPs were not counted"


def gpu_hours(flops: float, peak_tflops: float, mfu: float) -> float:
    """Hours of one GPU doing ``flops`` at ``mfu`` of ``peak_tflops``."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu}; expected a fraction in (0, 1]")
    return flops / (peak_tflops * 1e12 * mfu) / 3600


def estimate(payload: dict[str, Any], mfu: float = 0.4,
             gpus: tuple[str, ...] = ("A100 (bf16)", "H200 (bf16)")) -> list[CostRow]:
    """One :class:`CostRow` per chapter of :data:`RUNS` from a ``models`` result ``payload``."""
    rows = _bench_rows(payload)
    out = []
    for run in RUNS:
        per, source = flops_per_sample(run, rows)
        total = per * run.samples if per else None
        hours = {g: (gpu_hours(total, GPU_PEAK_TFLOPS[g], mfu) if total else None) for g in gpus}
        implied = None
        if total and run.paper_gpu and run.paper_gpu_hours:
            implied = total / (run.paper_gpu_hours * 3600 * GPU_PEAK_TFLOPS[run.paper_gpu] * 1e12)
        out.append(CostRow(run.chapter, run.stage, run.samples, run.samples_from,
                           per / 1e9 if per else None, source,
                           total / 1e18 if total else None, hours, run.paper_gpu,
                           run.paper_gpu_hours, run.paper_compute, implied))
    return out


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def markdown(rows: list[CostRow], mfu: float, source: str) -> str:
    gpus = list(rows[0].estimate_gpu_hours) if rows else []
    lines = [
        "# What a full pre-training run costs (estimate)",
        "",
        f"**Estimate, not a measurement:** samples x FLOPs per sample ÷ (GPU peak x {mfu:.0%} "
        f"MFU). FLOPs per sample: the paper-size train step at batch 1 in `{source}` (matrix "
        "products only, `vlbook.analysis.count_flops`). Peaks: "
        + ", ".join(f"{g} {GPU_PEAK_TFLOPS[g]:g} TFLOP/s" for g in GPU_PEAK_TFLOPS)
        + " (dense). *Paper's run at MFU* is what the counted FLOPs would need of the paper's "
        "GPUs in the paper's GPU-hours; far below the estimate's MFU means the paper's run was "
        "bound by more than its matrix products (decoding, loading, communication), or ran "
        "other samples than counted here. `python -m vlbook.bench cost` writes this page.",
        "",
        "| chapter | stage | samples | GFLOPs / sample | total EFLOP | "
        + " | ".join(f"GPU-hours, {g} at {mfu:.0%}" for g in gpus)
        + " | paper's compute | paper GPU-hours | paper's run at MFU |",
        "|---" * (8 + len(gpus)) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r.chapter} | {r.stage} | {r.samples / 1e6:,.0f} M | "
            f"{_fmt(r.gflops_per_sample, 1)} | {_fmt(r.total_eflop, 1)} | "
            + " | ".join(_fmt(r.estimate_gpu_hours[g]) for g in gpus)
            + f" | {r.paper_compute} | {_fmt(r.paper_gpu_hours)} | "
            f"{'—' if r.paper_implied_mfu is None else f'{r.paper_implied_mfu:.1%}'} |")
    lines += ["", "Samples and FLOPs:", ""]
    lines += [f"- **{r.chapter}**: {r.samples_from}; FLOPs: {r.flops_from}." for r in rows]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-result", type=Path, default=None,
                        help="a models benchmark JSON (default results/bench/models-cpu-no.json)")
    parser.add_argument("--mfu", type=float, default=0.4,
                        help="model-FLOPs utilisation assumed for the estimate")
    parser.add_argument("--name", default="cost", help="output name")


def run(args: argparse.Namespace) -> dict[str, Any]:
    source = args.models_result or results_root() / "bench" / "models-cpu-no.json"
    if not Path(source).exists():
        raise FileNotFoundError(f"{source}: no models benchmark result; run "
                                "`python -m vlbook.bench models` first (or give --models-result)")
    payload = json.loads(Path(source).read_text())
    if payload.get("suite") != "models":
        raise ValueError(f"{source}: suite {payload.get('suite')!r}; expected a 'models' result")
    rows = estimate(payload, args.mfu)
    result = {"suite": "cost", "mfu": args.mfu, "source": str(Path(source).name),
              "peaks_tflops": GPU_PEAK_TFLOPS, "rows": [asdict(r) for r in rows]}
    write_result(args.name, result, markdown(rows, args.mfu, Path(source).name))
    return result
