"""E-ViLM benchmark: pre-training step time, inference latency and peak memory.

``python -m vlbook.bench evilm`` measures, for the toy model and the paper's model (Table 8,
4 frames at 256 px, 40 text tokens), with :func:`vlbook.bench.train.benchmark`:

* ``train``: one pre-training step (Eq. 8: VTM + MLM + MVM in one joint pass, backward, AdamW)
  with the video tokenizer attached, since the paper's pre-training runs the tokenizer's
  encoder on the unmasked frames for the MVM targets (toy: the chapter's small ViT; paper:
  CLIP ViT-B/32 built from its config, random weights: the cost is the same);
* ``infer``: the inference pass E-ViLM is built for (Table 1 / Figure 1): one joint
  ``[CLS] text video`` forward and the pooled output, no tokenizer (it is dropped after
  training).

Results go to ``results_root()/bench/evilm-<device>-<precision>.json`` and ``.md``. Defaults
are CPU-friendly (batch 16 for the toy model, 1 for the paper size).
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch
from torch import nn

from vlbook.bench.common import (
    add_step_arguments,
    check_variants,
    modes_of,
    report,
    resolve_device,
    setup_threads,
    write_suite,
)
from vlbook.bench.train import BenchResult, benchmark
from vlbook.chapters.evilm import _TOY_TOKENIZER
from vlbook.models import create_model
from vlbook.models.evilm import VARIANTS, SemanticVQTokenizer, TokenizerConfig

VARIANTS_BENCHED: tuple[str, ...] = ("evilm_toy", "evilm")


class JointForward(nn.Module):
    """Inference wrapper: ``forward(batch)`` = E-ViLM's joint pass, returning the pooled CLS."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.forward_joint(batch["video"], batch["input_ids"],
                                        batch["attention_mask"]).pooled


def _tokenizer_config(variant: str) -> Any:
    if variant == "evilm_toy":
        return TokenizerConfig(**_TOY_TOKENIZER, vocab_size=512)
    return TokenizerConfig(encoder="clip")


def model_factory(variant: str, mode: str) -> Any:
    """A factory building ``variant`` for ``mode`` (``"train"``: with a tokenizer attached)."""
    def build() -> nn.Module:
        model = create_model(variant)
        if mode == "infer":
            return JointForward(model)
        model.set_video_tokenizer(SemanticVQTokenizer(_tokenizer_config(variant),
                                                      config_only=True))
        return model

    return build


def bench_variant(variant: str, *, batch_size: int, text_len: int = 40, steps: int = 3,
                  warmup: int = 1, modes: tuple[str, ...] = ("train", "infer"),
                  precision: str = "no", device: str = "auto",
                  count_flops: bool = True) -> list[BenchResult]:
    """Benchmark one E-ViLM variant: pre-training steps and/or inference forwards."""
    if batch_size < 2 and "train" in modes:
        warnings.filterwarnings("ignore", message="VTM: every item")
    example_model = create_model(variant)
    example = example_model.example_batch(batch_size, generator=torch.Generator().manual_seed(0))
    length = min(text_len, example_model.config.max_text_len)
    ids = torch.randint(5, example_model.config.vocab_size, (batch_size, length),
                        generator=torch.Generator().manual_seed(1))
    example.update(input_ids=ids, attention_mask=torch.ones_like(ids))
    del example_model
    results = []
    for mode in modes:
        name = f"evilm-{variant}-b{batch_size}"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="FLOPs not countable")
            results.append(benchmark(
                model_factory(variant, mode), example, name=name, model_name=variant, mode=mode,
                steps=steps, warmup=warmup, precision=precision, device=device,
                # the train step's block masking draws random numbers: count inference only
                count_model_flops=count_flops and mode == "infer"))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS_BENCHED),
                        help="registered E-ViLM variants")
    parser.add_argument("--toy-batch-size", type=int, default=16)
    parser.add_argument("--paper-batch-size", type=int, default=1)
    parser.add_argument("--text-len", type=int, default=40, help="text tokens (paper: 40)")
    add_step_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite; write JSON + markdown under ``results_root()/bench``."""
    setup_threads(args)
    check_variants(args.variants, VARIANTS, "E-ViLM")
    modes = modes_of(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    for variant in args.variants:
        batch = args.toy_batch_size if variant == "evilm_toy" else args.paper_batch_size
        measured = bench_variant(variant, batch_size=batch, text_len=args.text_len,
                                 steps=args.steps, warmup=args.warmup, modes=modes,
                                 precision=args.precision, device=device,
                                 count_flops=not args.no_flops)
        for r in measured:
            report(r)
        results.extend(measured)
    return write_suite("evilm", f"evilm-{device.replace(':', '')}-{args.precision}", results)
