"""vlbook's training step against the authors' own model code, same weights, one process.

``python -m vlbook.bench official --allinone-repo PATH --umt-repo PATH`` imports the model
classes of a checkout of ``showlab/all-in-one`` and of ``OpenGVLab/unmasked_teacher`` that the
user points to (nothing of them is in this repository), builds both models at the same
configuration, copies the official model's random weights into vlbook's with vlbook's own
converters (:mod:`vlbook.models.allinone.convert`, :mod:`vlbook.models.umt.convert`; the UMT
teacher goes the other way, transformers' CLIP -> the code's ``clip_b16``), checks that both
compute the same thing, then times full training steps (forward + backward + AdamW)
alternating between the implementations in one process, so that a shared or throttled CPU
slows both alike. Results go to ``results_root()/bench/official-<device>.json`` and ``.md``.

Configurations (the issue's; the released recipes):

* ``allinone_tiny`` / ``allinone_base``: batch 4, 3 frames at 224 px, 40 text tokens, dropout
  0.1 and drop path 0.1 (the code's ``config.py``), MLM + VTM with half negatives. The official
  step is the code's ``infer`` + ``mlm_score`` / ``itm_score`` heads with the losses of
  ``objectives.compute_mlm`` / ``compute_itm_wpa`` without the word-patch alignment (vlbook
  does not train WPA); ``official (released training_step, with WPA)`` is the code's own
  ``training_step`` (IPOT optimal transport included), a row of its own.
* ``umt_base``: stage 1, batch 1, 8 frames at 224 px, 80 % semantic ("attention") masking, a
  CLIP ViT-B/16 teacher with 6 aligned layers, drop path 0.1 (``exp/pretraining/b16_...sh``).
  The official step transcribes ``engines/engine_for_pretraining_umt.py`` (teacher under
  ``no_grad``, multinomial mask from the CLS attention, targets gathered, student, ``2 - 2
  cos``); the CUDA-only loss scaler and synchronisation are left out.

Checks before timing (models in eval mode, the official patch shuffle / mask replaced by the
identity / one fixed mask): joint-pass features and head logits (All-in-one), teacher targets
and CLS attention and the student's aligned predictions (UMT), and every mapped parameter's
gradient of the same loss. Levers are extra vlbook rows in the same alternation: bf16 autocast
(with its loss difference), explicit attention (``fused_attn=False`` in timm's blocks), the
teacher's transformers forward with every layer's attention (``HFCLIPTeacher(fast=False)``,
the previous default) and dropout off (a recipe change, not the same numerics: said in the
row).

The official code needs ``pytorch_lightning``, ``einops`` and an old ``transformers``; missing
pieces are stubbed in ``sys.modules`` while importing (:func:`install_shims`), never by editing
the checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.bench.common import (
    resolve_device,
    saved_for_backward_mb,
    setup_threads,
    write_result,
)
from vlbook.nn.dropout import torch_dropout

CONFIGS: tuple[str, ...] = ("allinone_tiny", "allinone_base", "umt_base")
#: Official ViT names of the All-in-one variants (``config.py`` ``vit``).
ALLINONE_VIT: dict[str, tuple[str, int, int]] = {
    "allinone_tiny": ("vit_deit_tiny_patch16_224", 192, 3),
    "allinone_base": ("vit_base_patch16_224", 768, 12),
}
#: Modules the official files import at the top but the benchmarked paths never call.
IMPORT_ONLY: tuple[str, ...] = ("ipdb", "scipy.stats", "sklearn.metrics", "cv2",
                                 "skimage.transform")


class _ImportOnly(types.ModuleType):
    """A stub module: any attribute is a function that raises when called."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(f"{self.__name__}.{name} is stubbed (not installed)")

        return unavailable
#: Extra rows: All-in-one (wpa, explicit-attention, dropout-off, torch-dropout), UMT
#: (teacher-eager).
LEVERS: tuple[str, ...] = ("wpa", "explicit-attention", "dropout-off", "torch-dropout",
                           "teacher-eager")
ENV_ALLINONE = "VLBOOK_ALLINONE_REPO"
ENV_UMT = "VLBOOK_UMT_REPO"


# ------------------------------------------------------------------------------ importing
class _AttrDict(dict):
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


def _lightning_stub() -> dict[str, types.ModuleType]:
    """``pytorch_lightning.LightningModule`` / ``.metrics.Metric``: what the model code uses
    (hyper-parameters, ``log``, ``device``, metric objects), nothing of the trainer."""
    pl = types.ModuleType("pytorch_lightning")

    class LightningModule(nn.Module):
        def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
            caller = inspect.currentframe().f_back  # type: ignore[union-attr]
            self.hparams = _AttrDict(config=caller.f_locals.get("config"))  # type: ignore

        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

        @property
        def device(self) -> torch.device:
            return next(self.parameters()).device

    class Metric(nn.Module):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()

        def add_state(self, name: str, default: Any, **kwargs: Any) -> None:
            setattr(self, name, default)

        def forward(self, *args: Any, **kwargs: Any) -> None:
            return None

    pl.LightningModule = LightningModule  # type: ignore[attr-defined]
    metrics = types.ModuleType("pytorch_lightning.metrics")
    metrics.Metric = Metric  # type: ignore[attr-defined]
    pl.metrics = metrics  # type: ignore[attr-defined]
    return {"pytorch_lightning": pl, "pytorch_lightning.metrics": metrics}


@contextlib.contextmanager
def install_shims() -> Iterator[list[str]]:
    """Stub the official code's missing dependencies while it is imported; yields what was
    stubbed. Stubs leave ``sys.modules`` afterwards (the imported official modules keep their
    references), so nothing else in the process sees them."""
    # transformers checks optional packages with find_spec: import what the official code
    # takes from it before any stub exists
    import transformers.optimization as optimization
    from transformers import (  # noqa: F401
        get_cosine_schedule_with_warmup,
        get_polynomial_decay_schedule_with_warmup,
    )
    from transformers.models.bert import modeling_bert  # noqa: F401

    stubbed: list[str] = []
    added: list[str] = []

    def add(name: str, module: types.ModuleType) -> None:
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = module
        added.append(name)

    if importlib.util.find_spec("pytorch_lightning") is None:
        for name, module in _lightning_stub().items():
            add(name, module)
        stubbed.append("pytorch_lightning (LightningModule, metrics.Metric)")
    for name in ("einops", *IMPORT_ONLY):
        top = name.split(".")[0]
        if importlib.util.find_spec(top) is not None:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            full = ".".join(parts[:i])
            if full not in sys.modules:
                add(full, _ImportOnly(full))
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[full])
        stubbed.append(f"{name} (imported, never called on the benchmarked paths)")
    had_adamw = hasattr(optimization, "AdamW")
    if not had_adamw:
        optimization.AdamW = torch.optim.AdamW  # type: ignore[attr-defined]
        stubbed.append("transformers.optimization.AdamW -> torch.optim.AdamW")
    try:
        yield stubbed
    finally:
        for name in added:
            sys.modules.pop(name, None)
        if not had_adamw:
            del optimization.AdamW


@contextlib.contextmanager
def _timm_registration_off() -> Iterator[None]:
    """The official files ``@register_model`` names timm already has (``vit_base_...``):
    registering them would replace timm's models in this process."""
    import timm.models.registry as registry

    original = registry.register_model
    registry.register_model = lambda fn: fn  # type: ignore[assignment]
    try:
        yield
    finally:
        registry.register_model = original  # type: ignore[assignment]


def import_allinone(repo: str | Path) -> types.SimpleNamespace:
    """``AllInOne.modules`` of a ``showlab/all-in-one`` checkout (module objects)."""
    root = Path(repo).expanduser().resolve()
    if not (root / "AllInOne" / "modules" / "allinone_module.py").is_file():
        raise FileNotFoundError(f"{root} is not a showlab/all-in-one checkout "
                                "(no AllInOne/modules/allinone_module.py)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with install_shims(), _timm_registration_off(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("AllInOne.modules.allinone_module")
        vit = importlib.import_module("AllInOne.modules.base_vision_transformer")
        objectives = importlib.import_module("AllInOne.modules.objectives")
    vit.load_pretrained = lambda *args, **kwargs: None  # random weights, no download
    return types.SimpleNamespace(module=module, vit=vit, objectives=objectives)


def import_umt(repo: str | Path) -> types.ModuleType:
    """``single_modality/models`` of an ``OpenGVLab/unmasked_teacher`` checkout, imported as
    the package ``umt_official_models`` (its generic name ``models`` would clash)."""
    root = Path(repo).expanduser().resolve() / "single_modality" / "models"
    if not (root / "modeling_pretrain_umt.py").is_file():
        raise FileNotFoundError(f"{repo} is not an OpenGVLab/unmasked_teacher checkout (no "
                                "single_modality/models/modeling_pretrain_umt.py)")
    name = "umt_official_models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    package = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = package
    with install_shims(), _timm_registration_off(), warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(package)  # type: ignore[union-attr]
    return package


# ------------------------------------------------------------------------------ helpers
def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115


@contextlib.contextmanager
def _identity_multinomial() -> Iterator[None]:
    """``torch.multinomial(ones(n), k)`` -> ``arange(k)``: the official patch order without its
    shuffle (vlbook: ``shuffle=False``), so the rolled tokens are the same ones."""
    original = torch.multinomial

    def identity(weights: torch.Tensor, num: int, replacement: bool = False,
                 **kwargs: Any) -> torch.Tensor:
        if weights.dim() == 1 and bool((weights == 1).all()):
            return torch.arange(num, device=weights.device)
        return original(weights, num, replacement, **kwargs)

    torch.multinomial = identity  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.multinomial = original  # type: ignore[assignment]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def _grad_diff(official: nn.Module, ours: nn.Module, mapping: dict[str, str]
               ) -> tuple[float, float, int]:
    """Max abs difference and max size of the gradients of every mapped parameter."""
    theirs = dict(official.named_parameters())
    mine = dict(ours.named_parameters())
    worst = scale = 0.0
    compared = 0
    for src, dst in mapping.items():
        p, q = theirs.get(src), mine.get(dst)
        if p is None or q is None or p.grad is None or q.grad is None:
            continue
        worst = max(worst, _max_diff(p.grad, q.grad.view_as(p.grad)))
        scale = max(scale, float(p.grad.abs().max()))
        compared += 1
    return worst, scale, compared


@dataclass
class Variant:
    """One timed training step: ``step()`` runs forward + backward + optimiser once."""

    name: str
    implementation: str  # "official" or "vlbook"
    step: Callable[[], torch.Tensor]
    note: str = ""
    same_numerics: bool = True


@dataclass
class Row:
    """One variant's timing in the alternation."""

    config: str
    variant: str
    implementation: str
    steps: int
    step_s_median: float
    step_s_all: list[float]
    speedup_vs_official: float | None  # official median / this median (> 1: faster)
    paired_speedup_median: float | None  # median over rounds of official / this
    flops_per_step: int | None
    achieved_gflops: float | None
    saved_for_backward_mb: float | None
    note: str = ""
    same_numerics: bool = True
    step_s_min: float | None = None
    speedup_by_min: float | None = None  # official fastest / this fastest step
    cpu_s_median: float | None = None
    speedup_by_cpu_time: float | None = None  # official / this, median process CPU seconds


@dataclass
class ConfigResult:
    config: str
    description: str
    checks: dict[str, float] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def alternate(variants: list[Variant], rounds: int, warmup: int,
              cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time each variant's step ``rounds`` times, round-robin (order reversed every other
    round), after ``warmup`` untimed steps of each. Wall-clock seconds; ``cpu_times`` (if
    given) receives the process CPU seconds of each step (all threads), which a CPU shared
    with other work inflates less than the wall clock."""
    for _ in range(warmup):
        for v in variants:
            v.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu = cpu_times if cpu_times is not None else {}
    for v in variants:
        cpu.setdefault(v.name, [])
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            v.step()
            times[v.name].append(time.perf_counter() - start)
            cpu[v.name].append(time.process_time() - start_cpu)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{v.name} {times[v.name][-1]:.2f} s (CPU {cpu[v.name][-1]:.2f} s)"
            for v in variants), flush=True)
    return times


def _rows(config: str, variants: list[Variant], times: dict[str, list[float]],
          flops: dict[str, int | None], saved: dict[str, float | None],
          cpu_times: dict[str, list[float]] | None = None) -> list[Row]:
    reference = next(v for v in variants if v.implementation == "official")
    ref_times = times[reference.name]
    ref_median = statistics.median(ref_times)
    ref_cpu = (statistics.median(cpu_times[reference.name])
               if cpu_times and cpu_times.get(reference.name) else None)
    rows = []
    for v in variants:
        t = times[v.name]
        median = statistics.median(t)
        paired = statistics.median(a / b for a, b in zip(ref_times, t))
        f = flops.get(v.name)
        cpu = (statistics.median(cpu_times[v.name])
               if cpu_times and cpu_times.get(v.name) else None)
        rows.append(Row(config, v.name, v.implementation, len(t), median, t,
                        ref_median / median, paired, f, f / min(t) / 1e9 if f else None,
                        saved.get(v.name), v.note, v.same_numerics, min(t),
                        min(ref_times) / min(t), cpu,
                        ref_cpu / cpu if ref_cpu and cpu else None))
    return rows


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@contextlib.contextmanager
def _dropout_off(model: nn.Module) -> Iterator[None]:
    saved = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            saved.append((m, m.p))
            m.p = 0.0
        elif hasattr(m, "drop_prob"):
            saved.append((m, m.drop_prob))
            m.drop_prob = 0.0
    try:
        yield
    finally:
        for m, p in saved:
            if isinstance(m, nn.Dropout):
                m.p = p
            else:
                m.drop_prob = p


@contextlib.contextmanager
def _explicit_attention(model: nn.Module) -> Iterator[None]:
    """timm's blocks with ``fused_attn=False`` (softmax(Q K^T) V written out)."""
    changed = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in changed:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in changed:
            m.fused_attn = True


def _with(context: Callable[[], contextlib.AbstractContextManager],
          step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with context():
            return step()

    return run


# ------------------------------------------------------------------------------ All-in-one
def allinone_config(variant: str, frames: int, text_len: int, drop_rate: float) -> dict:
    vit_name, width, heads = ALLINONE_VIT[variant]
    names = {k: 0 for k in ("itm", "itc", "mlm", "mpp", "ind_itc", "vcop", "vqa", "openend_vqa",
                            "mc_vqa", "nlvr2", "irtr", "multiple_choice", "vcr_q2a",
                            "zs_classify")}
    names.update(itm=1, mlm=1)
    return dict(vocab_size=30522, hidden_size=width, num_layers=12, num_heads=heads,
                mlp_ratio=4, max_text_len=text_len, drop_rate=drop_rate, load_path="",
                vit=vit_name, num_frames=frames, loss_names=names, test_only=False,
                linear_evaluation=False, max_image_len=-1, shared_embedding_dim=512,
                vqav2_label_size=3129, msrvttqa_label_size=1501)


def _allinone_batches(ours: nn.Module, batch_size: int, frames: int, text_len: int,
                      seed: int) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = ours.example_batch(batch_size, frames=frames, text_len=text_len, generator=gen)
    batch["input_ids"][:, 0] = 101
    masking = ours.mask_text(batch["input_ids"], batch["attention_mask"],
                             generator=torch.Generator().manual_seed(seed + 1))
    false_video = batch["video"].roll(1, dims=0)
    official = {"text": batch["text"], "text_ids": batch["input_ids"],
                "text_labels": torch.full_like(batch["input_ids"], -100),
                "text_masks": batch["attention_mask"], "text_ids_mlm": masking.input_ids,
                "text_labels_mlm": masking.labels, "image": [batch["video"]],
                "false_image_0": [false_video]}
    return batch, official, masking.input_ids, masking.labels


def check_allinone(official: nn.Module, ours: nn.Module, mapping: dict[str, str],
                   batch: dict, off_batch: dict, masked_ids: torch.Tensor,
                   labels: torch.Tensor) -> dict[str, float]:
    """Features, logits and gradients of MLM + VTM, both in eval mode, same patch order."""
    official.eval()
    ours.eval()
    itm_labels = torch.tensor([1, 0] * (batch["input_ids"].shape[0] // 2 + 1)
                              )[:batch["input_ids"].shape[0]]
    with _identity_multinomial():
        infer = official.infer(off_batch, mask_text=True)
        off_itm = official.infer({**off_batch, "image": [torch.where(
            itm_labels[:, None, None, None, None].bool(), off_batch["image"][0],
            off_batch["false_image_0"][0])]})
    out = ours.forward_joint(batch["video"], masked_ids, batch["attention_mask"], shuffle=False)
    pairs_video = torch.where(itm_labels[:, None, None, None, None].bool(), batch["video"],
                              batch["video"].roll(1, dims=0))
    out_itm = ours.forward_joint(pairs_video, batch["input_ids"], batch["attention_mask"],
                                 shuffle=False)
    off_mlm = official.mlm_score(infer["text_feats"])
    our_mlm = ours.mlm_head(out.text_hidden)
    off_vtm = official.itm_score(off_itm["cls_feats"])
    our_vtm = ours.vtm_head(out_itm.pooled)
    checks = {
        "joint text features": _max_diff(infer["text_feats"], out.text_hidden),
        "joint video features": _max_diff(infer["image_feats"], out.video_hidden),
        "pooled CLS": _max_diff(infer["cls_feats"], out.pooled),
        "MLM logits": _max_diff(off_mlm, our_mlm),
        "VTM logits": _max_diff(off_vtm, our_vtm),
    }
    vocab = off_mlm.shape[-1]
    loss_off = (F.cross_entropy(off_mlm.view(-1, vocab), labels.view(-1), ignore_index=-100)
                + F.cross_entropy(off_vtm, itm_labels))
    loss_our = (F.cross_entropy(our_mlm.view(-1, vocab), labels.view(-1), ignore_index=-100)
                + F.cross_entropy(our_vtm, itm_labels))
    official.zero_grad()
    ours.zero_grad()
    loss_off.backward()
    loss_our.backward()
    worst, scale, compared = _grad_diff(official, ours, mapping)
    checks.update({"loss": _max_diff(loss_off, loss_our), "gradients (max abs diff)": worst,
                   "gradients (max abs value)": scale, "parameters compared": compared})
    official.zero_grad()
    ours.zero_grad()
    official.train()
    ours.train()
    return checks


def bench_allinone(modules: types.SimpleNamespace, variant: str, *, batch_size: int,
                   frames: int, text_len: int, drop_rate: float, rounds: int, warmup: int,
                   levers: tuple[str, ...], bf16: bool) -> ConfigResult:
    from vlbook.analysis import count_flops
    from vlbook.models import create_model
    from vlbook.models.allinone import load_official_checkpoint

    torch.manual_seed(0)
    config = allinone_config(variant, frames, text_len, drop_rate)
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = modules.module.AllinoneTransformerSS(config)
    ours = create_model(variant, num_frames=frames, max_text_len=text_len, drop_rate=drop_rate,
                        drop_path_rate=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heads the pre-training checkpoint has no use for
        conversion = load_official_checkpoint(ours, official.state_dict())
    batch, off_batch, masked_ids, labels = _allinone_batches(ours, batch_size, frames,
                                                             text_len, seed=0)
    result = ConfigResult(variant, f"{variant} pre-training step (MLM + VTM), batch "
                          f"{batch_size}, {frames}x224, text {text_len}, dropout {drop_rate}, "
                          "drop path 0.1, AdamW")
    result.checks = check_allinone(official, ours, conversion.mapping, batch, off_batch,
                                   masked_ids, labels)
    print(f"{variant} checks: " + ", ".join(f"{k} {v:.2g}" for k, v in result.checks.items()),
          flush=True)
    vocab = config["vocab_size"]

    def official_loss() -> torch.Tensor:
        """compute_mlm + compute_itm_wpa's ITM part: the code's infer, heads and losses."""
        infer = official.infer(off_batch, mask_text=True)
        mlm_logits = official.mlm_score(infer["text_feats"])
        mlm = F.cross_entropy(mlm_logits.view(-1, vocab), infer["text_labels"].view(-1),
                              ignore_index=-100)
        pos = batch_size // 2
        itm_labels = torch.cat([torch.ones(pos), torch.zeros(batch_size - pos)])
        itm_labels = itm_labels[torch.randperm(batch_size)]
        images = [torch.stack([ti if itm_labels[i] == 1 else fi
                               for i, (ti, fi) in enumerate(zip(bti, bfi))])
                  for bti, bfi in zip(off_batch["image"], off_batch["false_image_0"])]
        infer = official.infer({**off_batch, "image": images})
        itm = F.cross_entropy(official.itm_score(infer["cls_feats"]), itm_labels.long())
        return mlm + itm

    def official_released() -> torch.Tensor:
        with _quiet():
            return official.training_step(off_batch, 0)

    def ours_loss() -> torch.Tensor:
        return ours.pretrain_step(batch)["loss"]

    off_opt, our_opt = _optimizer(official), _optimizer(ours)
    variants = [Variant("official", "official", _train_step(official, off_opt, official_loss),
                        "the code's infer + heads, MLM + ITM losses (no WPA)"),
                Variant("vlbook", "vlbook", _train_step(ours, our_opt, ours_loss))]
    if "wpa" in levers:
        variants.append(Variant(
            "official (released training_step, with WPA)", "official",
            _train_step(official, off_opt, official_released),
            "adds the word-patch alignment (IPOT, 50 iterations) vlbook does not train",
            same_numerics=False))
    if "explicit-attention" in levers:
        variants.append(Variant("vlbook, explicit attention", "vlbook",
                                _with(partial(_explicit_attention, ours),
                                      _train_step(ours, our_opt, ours_loss)),
                                "timm blocks with fused_attn=False"))
    if "torch-dropout" in levers:
        variants.append(Variant("vlbook, torch dropout", "vlbook",
                                _with(torch_dropout, _train_step(ours, our_opt, ours_loss)),
                                "PyTorch's CPU dropout instead of vlbook.nn.FastDropout "
                                "(same distribution, one Bernoulli draw per element)"))
    if "dropout-off" in levers:
        variants.append(Variant("vlbook, dropout off", "vlbook",
                                _with(partial(_dropout_off, ours),
                                      _train_step(ours, our_opt, ours_loss)),
                                "recipe change: dropout and drop path 0", same_numerics=False))
    if bf16:
        def bf16_loss() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours_loss()

        variants.append(Variant("vlbook, bf16 autocast", "vlbook",
                                _train_step(ours, our_opt, bf16_loss),
                                "reduced precision", same_numerics=False))
        ours.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            fp32 = ours.forward_joint(batch["video"], batch["input_ids"],
                                      batch["attention_mask"], shuffle=False)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = ours.forward_joint(batch["video"], batch["input_ids"],
                                         batch["attention_mask"], shuffle=False)
        ours.train()
        result.checks["bf16 autocast vs fp32: pooled CLS max abs diff"] = _max_diff(
            fp32.pooled, low.pooled)
        result.checks["bf16 autocast vs fp32: text features max abs diff"] = _max_diff(
            fp32.text_hidden, low.text_hidden)
    torch.manual_seed(2)
    saved = {"official": saved_for_backward_mb(official_loss, backward=True),
             "vlbook": saved_for_backward_mb(ours_loss, backward=True)}
    official.zero_grad()
    ours.zero_grad()
    flops = count_flops(ours, batch, forward=lambda m, b: m.pretrain_step(b), backward=True,
                        device="cpu").total
    per_variant = {v.name: flops for v in variants if v.same_numerics}
    per_variant["official"] = flops
    cpu: dict[str, list[float]] = {}
    times = alternate(variants, rounds, warmup, cpu)
    result.rows = _rows(variant, variants, times, per_variant, saved, cpu)
    return result


# ------------------------------------------------------------------------------ UMT
def hf_clip_to_official(hf: nn.Module) -> dict[str, torch.Tensor]:
    """transformers ``CLIPVisionModelWithProjection`` -> the code's ``clip.VisionTransformer``
    (OpenAI layout, 1-frame Conv3d)."""
    vision = hf.vision_model
    state = {
        "conv1.weight": vision.embeddings.patch_embedding.weight[:, :, None].clone(),
        "class_embedding": vision.embeddings.class_embedding.clone(),
        "positional_embedding": vision.embeddings.position_embedding.weight.clone(),
        "ln_pre.weight": vision.pre_layrnorm.weight, "ln_pre.bias": vision.pre_layrnorm.bias,
        "ln_post.weight": vision.post_layernorm.weight,
        "ln_post.bias": vision.post_layernorm.bias,
        "proj": hf.visual_projection.weight.t().contiguous(),
    }
    for i, layer in enumerate(vision.encoder.layers):
        p = f"transformer.resblocks.{i}."
        a = layer.self_attn
        state[p + "attn.in_proj_weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight,
                                                      a.v_proj.weight])
        state[p + "attn.in_proj_bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        state[p + "attn.out_proj.weight"] = a.out_proj.weight
        state[p + "attn.out_proj.bias"] = a.out_proj.bias
        for ours, theirs in (("ln_1", layer.layer_norm1), ("ln_2", layer.layer_norm2),
                             ("mlp.c_fc", layer.mlp.fc1), ("mlp.c_proj", layer.mlp.fc2)):
            state[p + ours + ".weight"] = theirs.weight
            state[p + ours + ".bias"] = theirs.bias
    return {k: v.detach().clone() for k, v in state.items()}


def _clip_input(video_btchw: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
    """vlbook's ImageNet-normalised frames as the CLIP teacher sees them, (B, C, T, H, W)."""
    b, t = video_btchw.shape[:2]
    frames = video_btchw.flatten(0, 1) * teacher.scale + teacher.shift
    return frames.view(b, t, *frames.shape[1:]).transpose(1, 2).contiguous()


def official_umt_loss(student: nn.Module, teacher: nn.Module, videos: torch.Tensor,
                      mask_ratio: float) -> torch.Tensor:
    """``engine_for_pretraining_umt.train_one_epoch``'s step body, ``mask_type='attention'``,
    ``clip_loss_type='l2'``, ratio 1, teacher at the input resolution (its lines 42-99)."""
    with torch.no_grad():
        b = videos.shape[0]
        norm_clip, attn = teacher(videos)
        bt, n = attn.shape
        n_vis = n - int(n * mask_ratio)
        importance = torch.multinomial(attn, n)
        bool_masked_pos = torch.ones((bt, n))
        pos1 = torch.arange(bt).view(-1, 1).repeat(1, n_vis)
        pos2 = importance[:, :n_vis]
        bool_masked_pos[pos1, pos2] = 0
        bool_masked_pos = bool_masked_pos.view(b, -1).to(torch.bool)
        c_clip = norm_clip.shape[-1]
        k = norm_clip.shape[0]
        clip_mask = bool_masked_pos.unsqueeze(0).repeat(k, 1, 1)
        targets = norm_clip[~clip_mask].reshape(k, b, -1, c_clip)
    outputs = student(videos, bool_masked_pos)
    return (2 - 2 * (outputs * targets).sum(dim=-1)).mean()


def check_umt(student: nn.Module, teacher: nn.Module, ours: nn.Module, mapping: dict[str, str],
              video: torch.Tensor) -> dict[str, float]:
    """Teacher targets and attention, the student's aligned predictions, gradients."""
    student.eval()
    ours.eval()
    k = ours.config.align_layers
    with torch.no_grad():
        norm_clip, attn = teacher(_clip_input(video, ours.teacher))
        target = ours.teacher_targets(video, k)
    checks = {"teacher tokens (K layers)": _max_diff(norm_clip, target.tokens),
              "teacher CLS attention": _max_diff(attn, target.cls_attention.flatten(0, 1))}
    mask = ours.make_mask(video.shape[0], video.shape[1], target.cls_attention,
                          generator=torch.Generator().manual_seed(0))
    theirs = student(video.transpose(1, 2).contiguous(), mask)
    _, hidden, positions = ours.forward_student(video, mask, return_layers=k)
    mine = torch.stack(ours.uta_predictions(hidden, positions))
    checks["student aligned predictions"] = _max_diff(theirs, mine)
    visible = torch.stack([t[~mask].view(video.shape[0], -1, t.shape[-1])
                           for t in target.tokens])
    (2 - 2 * (theirs * visible).sum(-1)).mean().backward()
    (2 - 2 * (mine * visible).sum(-1)).mean().backward()
    worst, scale, compared = _grad_diff(student, ours, mapping)
    checks.update({"gradients (max abs diff)": worst, "gradients (max abs value)": scale,
                   "parameters compared": compared})
    student.zero_grad()
    ours.zero_grad()
    student.train()
    ours.train()
    return checks


def bench_umt(models: types.ModuleType, *, batch_size: int, frames: int, rounds: int,
              warmup: int, levers: tuple[str, ...], bf16: bool) -> ConfigResult:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from vlbook.analysis import count_flops
    from vlbook.models import create_model
    from vlbook.models.umt import HFCLIPTeacher
    from vlbook.models.umt.convert import convert_official_state_dict

    torch.manual_seed(0)
    with _quiet():
        student = models.pretrain_umt_base_patch16_224(
            num_frames=frames, tubelet_size=1, drop_path_rate=0.1, clip_decoder_embed_dim=768,
            clip_output_dim=512, clip_norm_type="l2", clip_return_layer=6,
            clip_student_return_interval=1)
        teacher = models.clip_b16(pretrained=False, clip_norm_type="l2", input_resolution=224,
                                  return_attn=True, clip_return_layer=6,
                                  clip_return_interval=1)
    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, patch_size=16, image_size=224,
                              projection_dim=512, attn_implementation="eager")
    hf = CLIPVisionModelWithProjection(config)
    teacher.load_state_dict(hf_clip_to_official(hf))
    teacher.eval().requires_grad_(False)
    ours = create_model("umt_base", num_frames=frames, mask_type="semantic", mask_ratio=0.8,
                        drop_path_rate=0.1)
    conversion = convert_official_state_dict(student.state_dict())
    missing, unexpected = ours.load_state_dict(conversion.state_dict, strict=False)
    if unexpected or [m for m in missing if not m.startswith("head")]:
        raise RuntimeError(f"UMT conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf_teacher = HFCLIPTeacher(hf)
    ours.set_teacher(hf_teacher)
    video = torch.randn(batch_size, frames, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    result = ConfigResult("umt_base", f"UMT-B stage-1 step, batch {batch_size}, {frames}x224, "
                          "80 % semantic mask, CLIP-B/16 teacher (6 aligned layers), drop path "
                          "0.1, AdamW")
    result.checks = check_umt(student, teacher, ours, conversion.mapping, video)
    print("umt_base checks: " + ", ".join(f"{k} {v:.2g}" for k, v in result.checks.items()),
          flush=True)
    videos = video.transpose(1, 2).contiguous()  # the code's (B, C, T, H, W) batches

    def official_loss() -> torch.Tensor:
        return official_umt_loss(student, teacher, videos, 0.8)

    def ours_loss() -> torch.Tensor:
        return ours.stage1_losses(video).loss

    off_opt, our_opt = _optimizer(student), _optimizer(ours)
    variants = [Variant("official", "official", _train_step(student, off_opt, official_loss),
                        "engine_for_pretraining_umt step body"),
                Variant("vlbook", "vlbook", _train_step(ours, our_opt, ours_loss),
                        "HFCLIPTeacher(fast=True): fused attention, last-layer CLS row only")]
    if "teacher-eager" in levers:
        @contextlib.contextmanager
        def eager_teacher() -> Iterator[None]:
            hf_teacher.fast = False
            try:
                yield
            finally:
                hf_teacher.fast = True

        variants.append(Variant("vlbook, teacher with every layer's attention", "vlbook",
                                _with(eager_teacher, _train_step(ours, our_opt, ours_loss)),
                                "HFCLIPTeacher(fast=False): the previous default"))
    if bf16:
        def bf16_loss() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours_loss()

        variants.append(Variant("vlbook, bf16 autocast", "vlbook",
                                _train_step(ours, our_opt, bf16_loss), "reduced precision",
                                same_numerics=False))
    torch.manual_seed(2)
    saved = {"official": saved_for_backward_mb(official_loss, backward=True),
             "vlbook": saved_for_backward_mb(ours_loss, backward=True)}
    student.zero_grad()
    ours.zero_grad()
    flops = count_flops(ours, {"video": video},
                        forward=lambda m, b: m.stage1_losses(b["video"]).loss,
                        backward=True, device="cpu").total
    result.notes.append("FLOPs: vlbook's step counted on the CPU (teacher forward + student "
                        "forward and backward, matrix products); the official step does the "
                        "same products")
    cpu: dict[str, list[float]] = {}
    times = alternate(variants, rounds, warmup, cpu)
    result.rows = _rows("umt_base", variants, times,
                        {v.name: flops for v in variants if v.same_numerics}, saved, cpu)
    return result


# ------------------------------------------------------------------------------ report
def markdown(results: list[ConfigResult], header: str) -> str:
    lines = [header]
    for r in results:
        lines += ["", f"## {r.config}", "", r.description, "", "Checks before timing (max abs "
                  "difference, fp32, eval mode): " + "; ".join(
                      f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in r.checks.items()) + ".", "",
                  "| variant | ms/step (fastest) | ms/step (median) | official / this (fastest) "
                  "| official / this (medians) | official / this (paired median) | official / "
                  "this (CPU time) | GFLOP/s (fastest) | saved for backward MB | same numerics "
                  "| note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in r.rows:
            gflops = f"{row.achieved_gflops:.1f}" if row.achieved_gflops else "—"
            saved = (f"{row.saved_for_backward_mb:.0f}" if row.saved_for_backward_mb is not None
                     else "—")
            cpu = f"{row.speedup_by_cpu_time:.2f}x" if row.speedup_by_cpu_time else "—"
            lines.append(f"| {row.variant} | {1000 * (row.step_s_min or 0):.0f} | "
                         f"{1000 * row.step_s_median:.0f} | {row.speedup_by_min or 0:.2f}x | "
                         f"{row.speedup_vs_official:.2f}x | {row.paired_speedup_median:.2f}x | "
                         f"{cpu} | {gflops} | {saved} | "
                         f"{'yes' if row.same_numerics else 'no'} | {row.note} |")
        lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allinone-repo", default=os.environ.get(ENV_ALLINONE, ""),
                        help=f"checkout of showlab/all-in-one (or ${ENV_ALLINONE})")
    parser.add_argument("--umt-repo", default=os.environ.get(ENV_UMT, ""),
                        help=f"checkout of OpenGVLab/unmasked_teacher (or ${ENV_UMT})")
    parser.add_argument("--configs", nargs="+", default=["allinone_tiny", "umt_base"],
                        choices=CONFIGS)
    parser.add_argument("--allinone-batch-size", type=int, default=4)
    parser.add_argument("--umt-batch-size", type=int, default=1)
    parser.add_argument("--frames", type=int, default=3, help="All-in-one frames")
    parser.add_argument("--umt-frames", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=40)
    parser.add_argument("--drop-rate", type=float, default=0.1,
                        help="All-in-one dropout (the code's config.py: 0.1)")
    parser.add_argument("--rounds", type=int, default=3, help="timed steps of each variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--levers", nargs="*", default=list(LEVERS), choices=LEVERS,
                        help="extra rows (none: only official and vlbook)")
    parser.add_argument("--bf16", action="store_true", help="add a bf16-autocast vlbook row")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--name", default="", help="output name (default official-cpu)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    device = resolve_device("cpu")
    load_before = os.getloadavg()
    results: list[ConfigResult] = []
    skipped: list[str] = []
    for config in args.configs:
        if config.startswith("allinone"):
            if not args.allinone_repo:
                skipped.append(f"{config}: no --allinone-repo / ${ENV_ALLINONE}")
                continue
            modules = import_allinone(args.allinone_repo)
            results.append(bench_allinone(
                modules, config, batch_size=args.allinone_batch_size, frames=args.frames,
                text_len=args.text_len, drop_rate=args.drop_rate, rounds=args.rounds,
                warmup=args.warmup, levers=tuple(args.levers), bf16=args.bf16))
        else:
            if not args.umt_repo:
                skipped.append(f"{config}: no --umt-repo / ${ENV_UMT}")
                continue
            results.append(bench_umt(import_umt(args.umt_repo), batch_size=args.umt_batch_size,
                                     frames=args.umt_frames, rounds=args.rounds,
                                     warmup=args.warmup, levers=tuple(args.levers),
                                     bf16=args.bf16))
    load_after = os.getloadavg()
    header = (f"# vlbook vs the official code ({device}, {platform.processor() or 'x86_64'}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__})\n\n"
              "Same configuration, same weights (converted with vlbook's converters), steps "
              "alternating in one process; `official / this` > 1 means faster than the "
              "official code. Load average (1/5/15 min) before "
              f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
              f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on "
              f"{os.cpu_count()} CPUs. On a CPU shared with other work a step can take several "
              "times its quiet time, so the *fastest* step of each variant (noise only adds "
              "time) and the process CPU time are given beside the medians; GFLOP/s is at the "
              "fastest step. *Saved for backward* is what autograd keeps for one step's "
              "backward (activation memory; parameters and optimiser state excluded).")
    if skipped:
        header += "\n\nSkipped: " + "; ".join(skipped)
    payload = {"suite": "official", "threads": torch.get_num_threads(),
               "torch": torch.__version__, "load_average_before": load_before,
               "load_average_after": load_after, "skipped": skipped,
               "results": [asdict(r) for r in results]}
    write_result(args.name or f"official-{device}", payload, markdown(results, header))
    return payload


__all__ = ["CONFIGS", "ConfigResult", "Row", "Variant", "allinone_config", "alternate",
           "bench_allinone", "bench_umt", "check_allinone", "check_umt", "hf_clip_to_official",
           "import_allinone", "import_umt", "install_shims", "official_umt_loss",
           "saved_for_backward_mb"]
