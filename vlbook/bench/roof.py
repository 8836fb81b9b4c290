"""This machine's matrix-multiply roof, and each model's training step as a fraction of it.

``python -m vlbook.bench roof`` first probes the dense matrix-multiply throughput the models'
linear layers can reach on this device, on the shapes they use (a ViT-B MLP layer over 1,568
video tokens; All-in-one-Ti's over 4 clips x 3 frames x 237 tokens), along every path PyTorch
offers for them:

* CPU, fp32: ``torch.mm`` (MKL), ``F.linear`` (what ``nn.Linear`` calls) and oneDNN's
  ``mkldnn_linear`` on oneDNN tensors (the path ``torch.utils.mkldnn`` / inductor take);
* CPU, bf16: ``torch.mm`` on bf16 tensors, ``F.linear`` under ``torch.autocast("cpu",
  bfloat16)`` (casts included, as in a training step), oneDNN ``mkldnn_linear`` in bf16;
* CUDA: ``torch.mm`` in fp32, TF32 and bf16.

The roof of a precision is the best path at the best shape, by its fastest of ``--repeats``
timed calls after a warm-up (on a shared CPU noise only adds time; medians are in the
table). Then it times the training step (forward + backward + AdamW) of each
``--models`` variant with its chapter's benchmark (:func:`vlbook.bench.models.bench_one`,
FLOPs counted by :func:`vlbook.analysis.count_flops`, fused attention included) and reports
the achieved FLOP/s and its fraction of each roof. Only matrix products are counted, so the
fraction is the share of the matmul roof the whole step reaches (norms, softmax, dropout and
the optimiser are overhead against it). The load average of the machine is recorded before
and after: on a shared CPU the roof and the steps are measured under the same load.

Results go to ``results_root()/bench/roof-<device>.json`` and ``.md``, and the roofline figure
(:func:`plot_roofline`) to ``.png``; the book's Benchmarks page shows it (and draws it from the
JSON when the PNG is absent).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vlbook.bench.common import call_times, resolve_device, setup_threads, write_result

#: (label, tokens M, input K, output N) of the probed linear layers.
SHAPES: tuple[tuple[str, int, int, int], ...] = (
    ("ViT-B MLP fc1, 1568 tokens", 1568, 768, 3072),
    ("ViT-Ti MLP fc1, 4x3x237 tokens", 2844, 192, 768),
)
#: Default models: All-in-one-Ti and UMT-B stage 1 (chapter, variant, batch).
DEFAULT_MODELS: tuple[str, ...] = ("allinone_tiny", "umt_base")


@dataclass
class Probe:
    """One matmul path at one shape: achieved GFLOP/s (median and best of the repeats)."""

    path: str
    precision: str
    shape: str
    m: int
    k: int
    n: int
    gflops_median: float
    gflops_best: float
    max_rel_error: float  # against the fp32 torch.mm result (bf16 paths: rounding)


@dataclass
class ModelRow:
    """A model's training step against the roof."""

    variant: str
    chapter: str
    batch_size: int
    precision: str
    step_s: float
    flops_per_step: int | None
    achieved_gflops: float | None
    fraction_of_roof: dict[str, float]


def _paths(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, device: torch.device
           ) -> list[tuple[str, str, Callable[[], torch.Tensor]]]:
    """(path, precision, call) for every way a linear layer can run here."""
    wt = w.t().contiguous()
    paths: list[tuple[str, str, Callable[[], torch.Tensor]]] = [
        ("torch.mm", "fp32", lambda: torch.mm(x, wt)),
        ("F.linear", "fp32", lambda: F.linear(x, w, b)),
    ]
    if device.type == "cpu":
        if torch.backends.mkldnn.is_available():
            xm, wm, bm = x.to_mkldnn(), w.to_mkldnn(), b.to_mkldnn()
            paths.append(("oneDNN mkldnn_linear", "fp32",
                          lambda: torch._C._nn.mkldnn_linear(xm, wm, bm)))
        xb, wtb = x.bfloat16(), wt.bfloat16()
        paths.append(("torch.mm", "bf16", lambda: torch.mm(xb, wtb)))

        def autocast_linear() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return F.linear(x, w, b)

        paths.append(("F.linear under autocast", "bf16", autocast_linear))
        if torch.backends.mkldnn.is_available():
            try:
                xbm, wbm = x.bfloat16().to_mkldnn(), w.bfloat16().to_mkldnn()
                bbm = b.bfloat16().to_mkldnn()
                torch._C._nn.mkldnn_linear(xbm, wbm, bbm)
                paths.append(("oneDNN mkldnn_linear", "bf16",
                              lambda: torch._C._nn.mkldnn_linear(xbm, wbm, bbm)))
            except RuntimeError:  # no bf16 support in this oneDNN build / CPU
                pass
    else:
        def tf32() -> torch.Tensor:
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                return torch.mm(x, wt)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old

        xb, wtb = x.bfloat16(), wt.bfloat16()
        paths += [("torch.mm", "tf32", tf32), ("torch.mm", "bf16", lambda: torch.mm(xb, wtb))]
    return paths


def probe_matmul(device: str = "cpu", repeats: int = 5,
                 shapes: tuple[tuple[str, int, int, int], ...] = SHAPES) -> list[Probe]:
    """GFLOP/s of every linear-layer path at every shape (``2 M K N`` FLOPs per call)."""
    dev = torch.device(device)
    probes = []
    for label, m, k, n in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(m, k, generator=gen).to(dev)
        w = (torch.randn(n, k, generator=gen) / k ** 0.5).to(dev)
        b = torch.zeros(n).to(dev)
        reference = torch.mm(x, w.t())
        for path, precision, call in _paths(x, w, b, dev):
            out = call()
            if out.is_mkldnn:
                out = out.to_dense()
            out = out.float()  # the bias is zero
            error = float(((out - reference).abs().max() / reference.abs().max()).item())
            times = call_times(call, repeats, dev)
            flops = 2 * m * k * n
            probes.append(Probe(path, precision, label, m, k, n,
                                flops / statistics.median(times) / 1e9,
                                flops / min(times) / 1e9, error))
    return probes


def roofs(probes: list[Probe]) -> dict[str, dict[str, Any]]:
    """Per precision: the best path and shape by their fastest call (a shared CPU only ever
    slows a call down, so the fastest is the closest to the machine's peak)."""
    out: dict[str, dict[str, Any]] = {}
    for p in probes:
        best = out.get(p.precision)
        if best is None or p.gflops_best > best["gflops"]:
            out[p.precision] = {"gflops": p.gflops_best, "path": p.path, "shape": p.shape,
                                "gflops_median": p.gflops_median}
    return out


def _chapter_of(variant: str) -> str:
    from vlbook.bench.models import chapter_names, variants

    for chapter, _size, name in variants(chapter_names(), ("toy", "paper")):
        if name == variant:
            return chapter
    raise ValueError(f"{variant!r} is no chapter's toy or paper model")


def measure_models(models: list[str], roof: dict[str, dict[str, Any]], *, batch_size: int,
                   steps: int, warmup: int, precision: str, device: str) -> list[ModelRow]:
    """Train steps of ``models`` and their achieved FLOP/s against each roof."""
    from vlbook.bench.models import bench_one

    rows = []
    for variant in models:
        chapter = _chapter_of(variant)
        result = bench_one(chapter, variant, batch_size=batch_size, steps=steps,
                           warmup=warmup, modes=("train",), precision=precision,
                           device=device, count_flops=True)[0]
        flops = result.flops_per_step
        achieved = flops / result.step_time_s_median / 1e9 if flops else None
        fractions = ({k: achieved / v["gflops"] for k, v in roof.items()}
                     if achieved is not None else {})
        rows.append(ModelRow(variant, chapter, batch_size, precision,
                             result.step_time_s_median, flops, achieved, fractions))
        print(f"{variant} ({chapter}) train batch {batch_size}: "
              f"{result.step_time_s_median * 1000:.0f} ms/step, "
              + (f"{achieved:.1f} GFLOP/s" if achieved else "FLOPs n/a")
              + "".join(f", {100 * f:.0f} % of {k}" for k, f in fractions.items()), flush=True)
    return rows


def markdown(probes: list[Probe], roof: dict[str, dict[str, Any]], rows: list[ModelRow],
             header: str) -> str:
    lines = [header, "", "## Matmul probe", "",
             "| path | precision | shape | GFLOP/s (median) | GFLOP/s (best) | max rel. error |",
             "|---|---|---|---|---|---|"]
    for p in probes:
        lines.append(f"| {p.path} | {p.precision} | {p.shape} | {p.gflops_median:.1f} | "
                     f"{p.gflops_best:.1f} | {p.max_rel_error:.1e} |")
    lines += ["", "## Roof (best path, fastest call)", "",
              "| precision | GFLOP/s | its median | path | shape |", "|---|---|---|---|---|"]
    for precision, r in roof.items():
        lines.append(f"| {precision} | {r['gflops']:.1f} | {r['gflops_median']:.1f} | "
                     f"{r['path']} | {r['shape']} |")
    if rows:
        keys = list(roof)
        lines += ["", "## Training steps against the roof", "",
                  "| model | batch | precision | ms/step (median) | GFLOPs/step | GFLOP/s | "
                  + " | ".join(f"% of {k} roof" for k in keys) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(keys)]
        for r in rows:
            flops = f"{r.flops_per_step / 1e9:.1f}" if r.flops_per_step else "n/a"
            achieved = f"{r.achieved_gflops:.1f}" if r.achieved_gflops else "n/a"
            fractions = " | ".join(f"{100 * r.fraction_of_roof[k]:.0f} %"
                                   if k in r.fraction_of_roof else "n/a" for k in keys)
            lines.append(f"| {r.variant} | {r.batch_size} | {r.precision} | "
                         f"{1000 * r.step_s:.0f} | {flops} | {achieved} | {fractions} |")
    return "\n".join(lines) + "\n"


#: Line styles of the roof lines by precision (a GPU adds tf32).
_ROOF_STYLES: dict[str, tuple[str, str]] = {"fp32": ("#b03a3a", "-"), "tf32": ("#7b4a94", "-."),
                                            "bf16": ("#3b6ea5", "--")}


def plot_roofline(payload: dict[str, Any], path: str | os.PathLike | None = None) -> Any:
    """The roofline-style figure of a ``roof`` result (the JSON :func:`run` writes): one bar per
    model train step at its achieved GFLOP/s, each measured matmul roof (fp32, bf16, tf32 on a
    GPU) as a horizontal line at its GFLOP/s, each bar labelled with its share of the fp32
    roof. The axis is logarithmic when the values span more than a factor of 30. Saved as a
    PNG to ``path`` when given; returns the :class:`matplotlib.figure.Figure`."""
    from matplotlib.figure import Figure

    roof = payload.get("roof", {})
    models = [m for m in payload.get("models", []) if m.get("achieved_gflops")]
    labels = [m["variant"] + ("" if m.get("precision", "no") == "no"
                              else f" ({m['precision']})") + f"\nbatch {m['batch_size']}"
              for m in models]
    values = [float(m["achieved_gflops"]) for m in models]
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.subplots()
    xs = list(range(len(models)))
    ax.bar(xs, values, width=0.55, color="#9cc3a4", edgecolor="#2f6b3f",
                  label="train step (forward + backward + AdamW)")
    reference = roof.get("fp32", {}).get("gflops")
    for x, v in zip(xs, values):
        share = f"\n{100 * v / reference:.0f} % of fp32" if reference else ""
        ax.annotate(f"{v:.1f}{share}", (x, v), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    for name, r in roof.items():
        colour, style = _ROOF_STYLES.get(name, ("#555555", ":"))
        ax.axhline(float(r["gflops"]), color=colour, linestyle=style, linewidth=1.6,
                   label=f"{name} roof: {r['gflops']:.1f} GFLOP/s ({r['path']})")
    every = values + [float(r["gflops"]) for r in roof.values()]
    if every and min(every) > 0 and max(every) / min(every) > 30:
        ax.set_yscale("log")
        ax.set_ylim(min(every) / 2, max(every) * 3)
    elif every:
        ax.set_ylim(0, max(every) * 1.3)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_xlim(-0.6, max(len(models), 1) - 0.4)
    ax.set_xlabel("model (train step)")
    ax.set_ylabel("achieved GFLOP/s (matrix products)")
    name = payload.get("device_name", payload.get("device", ""))
    threads = payload.get("threads")
    ax.set_title("Training steps against the measured matmul roof\n"
                 + name + (f", {threads} threads" if threads else ""), fontsize=10)
    # below the axes, so that no bar or roof line is hidden by it
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2, fontsize=7.5,
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    if not models:
        ax.text(0.5, 0.5, "no model step measured", transform=ax.transAxes, ha="center",
                fontsize=9, color="#666666")
    if path is not None:
        fig.savefig(path, dpi=120, facecolor="white", bbox_inches="tight")
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per probe")
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS),
                        help="variants whose train step is set against the roof (none: skip)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", choices=("no", "bf16"), default="no",
                        help="precision of the model steps (the probe always measures both)")
    parser.add_argument("--small", action="store_true",
                        help="small probe shapes only, no models (seconds; used by the tests)")
    parser.add_argument("--name", default="", help="output name (default roof-<device>)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    shapes = (("small", 256, 128, 256),) if args.small else SHAPES
    probes = probe_matmul(device, args.repeats, shapes)
    for p in probes:
        print(f"{p.path:26s} {p.precision} {p.shape}: {p.gflops_median:.1f} GFLOP/s "
              f"(best {p.gflops_best:.1f})", flush=True)
    roof = roofs(probes)
    models = [] if args.small else list(args.models)
    rows = measure_models(models, roof, batch_size=args.batch_size, steps=args.steps,
                          warmup=args.warmup, precision=args.precision, device=device)
    load_after = os.getloadavg()
    name = (torch.cuda.get_device_name(device) if device.startswith("cuda")
            else f"CPU {platform.processor() or platform.machine()}, capability "
                 f"{torch.backends.cpu.get_cpu_capability()}")
    header = (f"# Matmul roof and training steps ({name}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__})\n\nLoad average (1/5/15 min) before "
              f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
              f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on "
              f"{os.cpu_count()} CPUs. GFLOP/s = 2 M K N / time; model FLOPs count matrix "
              "products only (vlbook.analysis.count_flops, fused attention included).")
    payload = {"suite": "roof", "device": device, "device_name": name,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "load_average_before": load_before, "load_average_after": load_after,
               "roof": roof, "probes": [asdict(p) for p in probes],
               "models": [asdict(r) for r in rows]}
    label = args.name or f"roof-{device.replace(':', '')}{'-small' if args.small else ''}"
    out_dir = write_result(label, payload, markdown(probes, roof, rows, header))
    plot_roofline(payload, out_dir / f"{label}.png")
    print(f"wrote {out_dir / label}.png")
    return payload


__all__ = ["DEFAULT_MODELS", "SHAPES", "ModelRow", "Probe", "measure_models", "plot_roofline",
           "probe_matmul", "roofs"]
