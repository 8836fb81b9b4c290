"""The UMT chapter: presets, synthetic data, the toy teacher and student runs, evaluations.

What ``notebooks/umt.ipynb`` runs and reports, above the model package :mod:`vlbook.models.umt`
(re-exported here, so ``import vlbook.chapters.umt as U`` gives the notebook the model and the
chapter in one name): the scale presets and chapter parameters, the cached synthetic benchmark,
the chapter's model builder, short stage-1 / stage-2 training runs, the probes, zero-shot
retrieval and multiple-choice evaluations, the Table 1 target rows of the ablations, the
activation-memory measurements and the chapter's ledger rows.

Toy ablations are compared in pairs (:func:`compare`): for a training seed every variant
starts from the same initialisation, sees the same batches and is scored on the same clips,
so the error of a difference is that of the per-clip differences, and the headline variants
are trained with several seeds whose spread joins the error. :func:`ledger_rows` turns the
notebook's results into the rows of :data:`LEDGER_ROWS`, verdicts included.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.chapters import Chapter, RowKey, register_chapter
from vlbook.config import Param, register_chapter_params, register_preset
from vlbook.data import build_dataset
from vlbook.data.cache import cache_dataset
from vlbook.data.synthetic import SHAPE_WORDS, annotation_path, ensure_synthetic
from vlbook.data.tokenizer import load_tokenizer
from vlbook.eval import (
    RetrievalProtocol,
    linear_probe_accuracy,
    multiple_choice_breakdown,
    retrieval_metrics,
)
from vlbook.models import create_model
from vlbook.models.umt import *  # noqa: F403
from vlbook.models.umt import (
    PAPER_PARAMS_M,
    UMT,
    TeacherOutput,
    ToyCLIP,
    ToyCLIPConfig,
    UMTConfig,
)
from vlbook.results import (
    Z_THRESHOLD,
    LedgerRow,
    above_chance,
    clearly_greater,
    difference_note,
    paired_difference,
    trend_status,
)
from vlbook.train import config_from_preset
from vlbook.train.toy import train_on_cache

# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------

register_preset(
    "umt",
    {
        "smoke": {
            "data": {"synthetic": "smoke", "num_frames": 8, "size": 32, "max_len": 24},
            "teacher": {"steps": 8, "batch_size": 16, "lr": 2e-3, "items": 32},
            "stage1": {"steps": 6, "batch_size": 8, "lr": 1e-3, "items": 32},
            "stage2": {"steps": 3, "batch_size": 8, "lr": 5e-4},
            "ablation": {"steps": 3, "mask_types": ["semantic", "random"],
                         "ratios": [0.5, 0.8], "layers": [1, 2],
                         "targets": ["uta", "mae"], "seeds": 2},
            "eval": {"items": 16, "motion_items": 16},
            "finetune": {"steps": 4, "lr": 2e-3, "batch_size": 8},
            "memory": {"batch_size": 2},
        },
        "toy": {
            "data": {"synthetic": "toy", "num_frames": 8, "size": 32, "max_len": 24},
            "teacher": {"steps": 250, "batch_size": 64, "lr": 2e-3, "items": 2000},
            "stage1": {"steps": 250, "batch_size": 32, "lr": 1e-3, "items": 1000},
            "stage2": {"steps": 300, "batch_size": 32, "lr": 2e-3},
            # 50 steps per variant; the headline variants (HEADLINE_VARIANTS) with 3 seeds
            "ablation": {"steps": 50, "mask_types": ["semantic", "tube", "random"],
                         "ratios": [0.5, 0.8, 0.95], "layers": [1, 2, 4],
                         "targets": ["uta", "uta+masked", "uta+mae", "mae"], "seeds": 3},
            # motion classes: the whole test split (500 clips) for the probes and fine-tuning
            "eval": {"items": 200, "motion_items": 500},
            "finetune": {"steps": 200, "lr": 2e-3, "batch_size": 32},
            "memory": {"batch_size": 8},
        },
        "full": {
            # UMT-B stage 1 (Sec. 4.1, appendix): K710, 8 sparse frames at 224, 80 % semantic
            # masking, CLIP-B/16 teacher, batch 2048 (32 GPUs x 64), AdamW (0.9, 0.95),
            # lr 1.5e-4 * 2048 / 256, wd 0.05, cosine, 40 warm-up epochs, AMP. Epochs: 200
            # (Sec. 4.1 "for 200 epochs"; the release config runs 201, book/paper_vs_code.md).
            "model": {"name": "umt_base", "kwargs": {"teacher": True}},
            "data": {"datasets": ["kinetics710"], "num_frames": 8, "size": 224, "max_len": 32},
            "stage1": {"epochs": 200, "warmup_epochs": 40, "batch_size": 2048,
                       "max_per_device_batch": 64, "lr": 1.5e-4 * 2048 / 256,
                       "weight_decay": 0.05, "betas": (0.9, 0.95), "schedule": "cosine",
                       "precision": "fp16"},
            # stage 2: 25M corpus, 4 frames, 10 epochs, 1 warm-up, batch 4096, lr 1e-4, wd 0.02
            "stage2": {"epochs": 10, "warmup_epochs": 1, "batch_size": 4096,
                       "max_per_device_batch": 128, "lr": 1e-4, "weight_decay": 0.02,
                       "num_frames": 4, "image_mask_ratio": 0.5, "video_mask_ratio": 0.8,
                       "mlm_probability": 0.5, "precision": "fp16"},
            "ablation": {"steps": None, "mask_types": ["semantic", "tube", "random"],
                         "ratios": [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
                         "layers": [1, 2, 4, 6, 8, 12],
                         "targets": ["uta", "uta+masked", "uta+mae", "mae"]},
            "eval": {"items": None},
            # action-recognition fine-tuning: run the authors' recipe (appendix) separately
            "finetune": {"steps": None, "lr": None, "batch_size": None},
            "memory": {"batch_size": 64},
        },
    },
)

register_chapter_params("umt", (
    Param("run_ablation", True, type=bool, help="train the Table 1/2, Fig. 3/4 ablations"),
))


def config_summary(config: UMTConfig) -> dict[str, Any]:
    """The config as a plain dict (for results files)."""
    return asdict(config)


def activation_bytes(model: nn.Module, run: Any) -> int:
    """Bytes of tensors saved for backward by ``run()`` (the activation part of training
    memory; exact on the meta device, so paper-size models cost nothing to measure)."""
    total = 0

    def is_weight(t: torch.Tensor) -> bool:
        base = t._base if t._base is not None else t
        return base.is_leaf and base.requires_grad

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not is_weight(t):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def full_pretrain_config(preset: Mapping[str, Any], *, seed: int = 0,
                         output_dir: str | Path = "") -> Any:
    """Stage 1 of the ``full`` run as a :class:`vlbook.train.TrainConfig`: UTA from the CLIP
    teacher on the prepared clips of ``preset["data"]["datasets"]`` (K710, labels unused),
    with ``preset["stage1"]``'s hyper-parameters (Sec. 4.1 / appendix), warm-up in epochs.
    Stage 2 starts from its checkpoint."""
    return config_from_preset(preset["model"],
                              {"name": "video_classification", "kwargs": preset["data"]},
                              preset["stage1"], seed=seed, output_dir=str(output_dir))


# --------------------------------------------------------------------------------------------
# chapter helpers: cached synthetic data, short training runs, evaluations
# --------------------------------------------------------------------------------------------


def synthetic_datasets(preset: Mapping[str, Any], root: str | Path | None = None
                       ) -> dict[str, Any]:
    """The synthetic benchmark, decoded once: image-text pairs (teacher), clips (stage 1/2),
    action classes (train/test), held-out retrieval pairs and multiple-choice items."""
    data = preset["data"]
    root = Path(root) if root is not None else ensure_synthetic(data["synthetic"])
    tokenizer = load_tokenizer(root / "tokenizer")
    common = dict(size=data["size"], tokenizer=tokenizer, max_len=data["max_len"])
    frames = dict(num_frames=data["num_frames"], **common)
    items = preset["eval"]["items"]

    def make(name: str, task: str, split: str, **kw: Any) -> Any:
        return build_dataset(name, annotation=annotation_path(root, task, split), split=split,
                             **kw)

    return {
        "root": root, "tokenizer": tokenizer,
        "images": cache_dataset(make("image_text", "image_text", "train", **common),
                                preset["teacher"]["items"]),
        "images_test": cache_dataset(make("image_text", "image_text", "test", **common), items),
        "clips": cache_dataset(make("video_text", "retrieval", "train", **frames),
                               preset["stage1"]["items"]),
        "classes_train": cache_dataset(make("video_classification", "classification", "train",
                                            **frames), 4 * (items or 10**9)),
        "classes_test": cache_dataset(make("video_classification", "classification", "test",
                                           **frames), preset["eval"].get("motion_items", items)),
        "pairs_test": cache_dataset(make("video_text", "retrieval", "test", **frames), items),
        "mc_test": cache_dataset(make("video_mc", "mc", "test", **frames), items),
    }


def train_steps(model: nn.Module, data: Mapping[str, Any], *, steps: int, batch_size: int,
                lr: float, **kwargs: Any) -> list[dict[str, float]]:
    """:func:`vlbook.train.toy.train_on_cache` (AdamW, warm-up, cosine) returning the per-step
    history of every loss term; ``step_fn(model, batch, generator)`` gives the loss dict."""
    return train_on_cache(model, data, steps=steps, batch_size=batch_size, lr=lr,
                          **kwargs).history


def stage1_step(model: UMT, batch: Mapping[str, Any], generator: torch.Generator
                ) -> dict[str, torch.Tensor]:
    """One stage-1 step with a seeded mask (for :func:`train_steps`)."""
    out = model.stage1_losses(batch["video"], generator=generator)
    return {"loss": out.loss, "uta": out.uta.detach(), "masked_recovery":
            out.masked_recovery.detach(), "pixel": out.pixel.detach()}


def stage2_step(model: UMT, batch: Mapping[str, Any], generator: torch.Generator
                ) -> dict[str, torch.Tensor]:
    """One stage-2 step with seeded masks and negatives."""
    out = model.stage2_losses(batch, generator=generator)
    return {"loss": out.loss, "vtc": out.vtc.detach(), "vtm": out.vtm.detach(),
            "mlm": out.mlm.detach(), "uta": out.uta.detach()}


@torch.no_grad()
def features(encode: Any, video: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``encode`` applied to cached clips in batches."""
    return torch.cat([encode(video[i:i + batch_size]) for i in range(0, len(video), batch_size)])


def action_probe_correct(encode: Any, data: Mapping[str, Any]) -> torch.Tensor:
    """Per test clip, 1.0 where the linear probe on frozen features names its motion class
    (0.0 elsewhere): what :func:`paired_difference` compares item by item."""
    train = features(encode, data["classes_train"]["video"])
    test = features(encode, data["classes_test"]["video"])
    result = linear_probe_accuracy(train, data["classes_train"]["label"], test,
                                   data["classes_test"]["label"])
    return (result.predictions == data["classes_test"]["label"]).float()


def action_probe(encode: Any, data: Mapping[str, Any]) -> float:
    """Action recognition by a linear probe on frozen features (percent, chance 12.5)."""
    return 100.0 * float(action_probe_correct(encode, data).mean())


@torch.no_grad()
def image_text_recall(teacher: ToyCLIP, images: Mapping[str, Any]) -> float:
    """Held-out text-to-image R@1 (percent) of the toy CLIP teacher."""
    img = F.normalize(features(teacher.encode_image, images["video"][:, 0]), dim=-1)
    txt = F.normalize(teacher.encode_text(images["input_ids"], images["attention_mask"]), dim=-1)
    best = (txt @ img.T).argmax(dim=1)
    return float((best == torch.arange(len(best))).float().mean() * 100)


@torch.no_grad()
def zero_shot_retrieval(model: UMT, pairs: Mapping[str, Any]) -> Any:
    """Zero-shot text-to-video retrieval on held-out pairs with vlbook's metric."""
    v = F.normalize(features(model.encode_video, pairs["video"]), dim=-1)
    t = F.normalize(model.encode_text(pairs["input_ids"], pairs["attention_mask"]), dim=-1)
    protocol = RetrievalProtocol(split="test", captions_per_video="first",
                                 dataset="synthetic")
    return retrieval_metrics(t @ v.T, torch.arange(len(t)), protocol)


@torch.no_grad()
def multiple_choice_scores(model: UMT, mc: Mapping[str, Any], batch_size: int = 32,
                           method: str = "vtc") -> torch.Tensor:
    """Scores ``(N, K)`` of every option by VTC cosine (or VTM match probability)."""
    return torch.cat([model.score_options(mc["video"][i:i + batch_size],
                                          mc["option_ids"][i:i + batch_size],
                                          mc["option_mask"][i:i + batch_size],
                                          method=method).scores
                      for i in range(0, len(mc["video"]), batch_size)])


def multiple_choice(model: UMT, mc: Mapping[str, Any], batch_size: int = 32,
                    method: str = "vtc") -> float:
    """Multiple-choice accuracy (percent, chance 20) by VTC (or VTM) scores of the options."""
    scores = multiple_choice_scores(model, mc, batch_size, method)
    return 100.0 * float((scores.argmax(1) == mc["label"]).float().mean())


def multiple_choice_pairwise(model: UMT, mc: Mapping[str, Any], method: str = "vtc"
                             ) -> dict[str, float]:
    """How often the true caption beats its static / temporal one-attribute distractors
    (percent, chance 50), by :func:`vlbook.eval.multiple_choice_breakdown`."""
    out = multiple_choice_breakdown(multiple_choice_scores(model, mc, method=method),
                                    mc["label"], mc["option_attributes"])
    return {"static": out["pairwise/static"], "temporal": out["pairwise/temporal"]}


def target_variant(name: str) -> dict[str, float]:
    """Config weights of a Table 1 row: ``uta``, ``uta+masked``, ``uta+mae``, ``mae``."""
    table = {"uta": dict(uta_weight=1.0), "uta+masked": dict(masked_recovery_weight=1.0),
             "uta+mae": dict(pixel_weight=1.0), "mae": dict(uta_weight=0.0, pixel_weight=1.0)}
    if name not in table:
        raise ValueError(f"unknown target {name!r}; accepted {sorted(table)}")
    return table[name]


def training_activation_bytes(name: str, batch_size: int = 1, **overrides: Any) -> int:
    """Activation memory (bytes saved for backward) of one stage-1 step of a variant, with a
    stand-in teacher of the right grid and width (the teacher runs without gradient, so it
    saves nothing). Random masking (same visible count as semantic masking)."""
    torch.manual_seed(0)
    model = create_variant(name, **{"mask_type": "random", **overrides})
    c = model.config
    model.set_teacher(_StandInTeacher(c))
    clip = torch.randn(batch_size, c.num_frames, c.channels, c.image_size, c.image_size)
    return activation_bytes(model, lambda: model.stage1_losses(clip).loss)


def create_variant(name: str, **overrides: Any) -> UMT:
    return create_model(name, **overrides)


class _StandInTeacher:
    """Teacher stand-in for memory measurements: unit tokens of the teacher's shapes."""

    def __init__(self, config: UMTConfig) -> None:
        self.config = config

    def teacher_outputs(self, frames: torch.Tensor, num_layers: int) -> TeacherOutput:
        n = self.config.tokens_per_frame
        tokens = F.normalize(frames.new_ones(num_layers, frames.shape[0], n,
                                             self.config.teacher_dim), dim=-1)
        return TeacherOutput(tokens=tokens, cls_attention=frames.new_ones(frames.shape[0], n),
                             pooled=tokens[-1, :, 0])


def build_chapter_model(name: str, tokenizer: Any = None, *, stage: int = 1,
                        **overrides: Any) -> UMT:
    """A registered variant sized to the tokenizer (stage 2: vocabulary, [MASK], PAD/CLS)."""
    kwargs: dict[str, Any] = {"stage": stage, **overrides}
    if stage == 2:
        if tokenizer is None:
            raise ValueError("a stage-2 model needs the tokenizer (vocabulary and [MASK] id)")
        kwargs = {"vocab_size": len(tokenizer), "mask_token_id": tokenizer.mask_token_id,
                  "special_token_ids": (tokenizer.pad_token_id, tokenizer.cls_token_id),
                  **kwargs}
    return create_variant(name, **kwargs)


def shape_labels(texts: Sequence[str]) -> torch.Tensor:
    """Index (in ``SHAPE_WORDS`` order) of the first shape a synthetic caption mentions: the
    "scene/object" label of the probe (K400-like), next to the motion classes (SSV2-like)."""
    labels = []
    for text in texts:
        found = [(text.find(word), k) for k, words in enumerate(SHAPE_WORDS.values())
                 for word in words if word in text]
        if not found:
            raise ValueError(f"caption {text!r} names no synthetic shape")
        labels.append(min(found)[1])
    return torch.tensor(labels)


def probe_scores(encode: Any, data: Mapping[str, Any]) -> dict[str, float]:
    """Linear-probe accuracies (percent) of frozen features: ``motion`` (8 action classes,
    chance 12.5; needs time: the toy stand-in of Something-Something) and ``shape`` (the first
    object's shape, chance 25; one frame suffices: the stand-in of Kinetics' object cues)."""
    out = {"motion": action_probe(encode, data)}
    train = features(encode, data["clips"]["video"])
    test = features(encode, data["pairs_test"]["video"])
    out["shape"] = float(linear_probe_accuracy(
        train, shape_labels(data["clips"]["text"]), test,
        shape_labels(data["pairs_test"]["text"])).accuracy)
    return out


@torch.no_grad()
def alignment_per_clip(model: UMT, video: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per held-out clip ``(N,)``: the mean cosine between the student's last aligned layer
    (all tokens, no mask) and the teacher's last layer: how much of the teacher the student
    reproduces on that clip."""
    model.eval()
    per_clip = []
    for i in range(0, len(video), batch_size):
        clip = video[i:i + batch_size]
        target = model.teacher_targets(clip, 1).tokens[-1]
        _, hidden, positions = model.forward_student(clip, return_layers=1)
        head = model.uta_heads[-1]
        predicted = F.normalize(head["norm"](head["head"](
            model.norm(hidden[-1]) + model.pos_embed[positions].to(hidden[-1].dtype))), dim=-1)
        # (B*T, N) token cosines -> one mean per clip
        cosines = (predicted * target).sum(-1).reshape(len(clip), -1).mean(-1)
        per_clip.append(cosines.float())
    return torch.cat(per_clip) if per_clip else torch.zeros(0)


def heldout_alignment(model: UMT, video: torch.Tensor, batch_size: int = 64, *,
                      with_error: bool = False) -> float | tuple[float, float]:
    """Mean of :func:`alignment_per_clip` over held-out clips ("teacher cosine").
    ``with_error``: also the standard error of that mean over clips, ``(mean, se)``."""
    values = alignment_per_clip(model, video, batch_size)
    mean = float(values.mean()) if len(values) else 0.0
    if not with_error:
        return mean
    se = float(values.std() / len(values) ** 0.5) if len(values) > 1 else 0.0
    return mean, se


class ActionClassifier(nn.Module):
    """Encoder + linear head fine-tuned on action labels (UMT Sec. 4.3, Table 3)."""

    def __init__(self, encoder: nn.Module, encode: Any, dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder, self.encode, self.head = encoder, encode, nn.Linear(dim, num_classes)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.head(self.encode(self.encoder, batch["video"]))
        return {"loss": F.cross_entropy(logits, batch["label"])}

    @torch.no_grad()
    def correct(self, video: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per clip, 1.0 where the predicted class is ``labels``' (0.0 elsewhere)."""
        self.eval()
        logits = features(lambda v: self.head(self.encode(self.encoder, v)), video)
        return (logits.argmax(-1) == labels).float()

    def accuracy(self, video: torch.Tensor, labels: torch.Tensor) -> float:
        return float(self.correct(video, labels).mean() * 100)


def fine_tune(encoder: nn.Module, encode: Any, dim: int, data: Mapping[str, Any],
              finetune: Mapping[str, Any], seed: int) -> torch.Tensor:
    """Fine-tune a copy of ``encoder`` with a new linear head on the motion classes
    (``finetune``: steps, lr, batch size; the same seed, so the same batches, for every
    encoder) and return its per-test-clip correctness (UMT Sec. 4.3 protocol, at toy size)."""
    torch.manual_seed(seed)
    num_classes = int(data["classes_train"]["label"].max()) + 1
    classifier = ActionClassifier(copy.deepcopy(encoder).requires_grad_(True), encode, dim,
                                  num_classes)
    train_steps(classifier, data["classes_train"], steps=finetune["steps"],
                batch_size=finetune["batch_size"], lr=finetune["lr"], seed=seed,
                keys=("video", "label"), layer_decay=float(finetune.get("layer_decay", 1.0)))
    return classifier.correct(data["classes_test"]["video"], data["classes_test"]["label"])


# --------------------------------------------------------------------------------------------
# paired, replicated comparisons and the ablation runs
# --------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """``a - b`` of two variants scored on the same items, over ``R`` training seeds.

    ``difference`` is the mean over seeds of the paired per-item differences; its standard
    error ``se`` combines the item error (:func:`paired_difference` of the per-item
    differences averaged over seeds) and the seed error (spread of the per-seed differences
    over ``sqrt(R)``), so both the evaluation items and the training run count as noise."""

    a: float
    b: float
    difference: float
    se: float
    se_items: float
    se_seeds: float
    per_seed: list[float]

    def clearly_above(self, z: float = Z_THRESHOLD) -> bool:
        """``a`` above ``b`` by more than ``z`` standard errors of the difference."""
        return clearly_greater(self.difference, 0.0, se_a=self.se, se_b=0.0, z=z)

    def note(self, digits: int = 3) -> str:
        """``"+0.011 ± 0.0009 (1 s.e.), 3 seeds: +0.010 +0.012 +0.011"``."""
        seeds = " ".join(f"{d:+.{digits}g}" for d in self.per_seed)
        count = len(self.per_seed)
        return (difference_note(self.difference, 0.0, se_a=self.se, se_b=0.0)
                + f", {count} seed{'s' if count > 1 else ''}: {seeds}")


def compare(a_runs: Sequence[torch.Tensor], b_runs: Sequence[torch.Tensor], *,
            scale: float = 1.0) -> Comparison:
    """:class:`Comparison` of per-item scores ``a_runs[r]``, ``b_runs[r]`` (seed ``r``, the
    same items in every run), multiplied by ``scale`` (100: 0/1 correctness to percent)."""
    if len(a_runs) != len(b_runs) or not a_runs:
        raise ValueError(f"compare: one run of each variant per seed expected, got "
                         f"{len(a_runs)} and {len(b_runs)}")
    a = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in a_runs]) * scale
    b = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in b_runs]) * scale
    per_seed = (a - b).mean(dim=1)
    difference, se_items = paired_difference(a.mean(0), b.mean(0))
    se_seeds = float(per_seed.std() / math.sqrt(len(per_seed))) if len(per_seed) > 1 else 0.0
    return Comparison(a=float(a.mean()), b=float(b.mean()), difference=difference,
                      se=math.hypot(se_items, se_seeds), se_items=se_items, se_seeds=se_seeds,
                      per_seed=[float(d) for d in per_seed])


#: The default stage-1 run (semantic masking at 0.8, K = 2, UTA only): one run in every group.
ABLATION_DEFAULT: dict[str, Any] = {"mask_type": "semantic", "mask_ratio": 0.8,
                                    "align_layers": 2, "uta_weight": 1.0}
#: The variants the headline rows compare (Table 1 UTA vs MAE, Table 2 semantic vs tube and
#: random, Figure 4 0.8 vs 0.95): trained with ``preset["ablation"]["seeds"]`` seeds each.
HEADLINE_VARIANTS: tuple[dict[str, Any], ...] = (
    {}, {"mask_type": "tube"}, {"mask_type": "random"}, {"mask_ratio": 0.95},
    {"uta_weight": 0.0, "pixel_weight": 1.0})


def ablation_variants(ablation: Mapping[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(group, label, config overrides)`` of every ablation row of the preset: Table 2
    mask types, Figure 4 ratios, Figure 3 aligned layers, Table 1 targets."""
    return ([("mask_type", m, {"mask_type": m}) for m in ablation["mask_types"]]
            + [("mask_ratio", r, {"mask_ratio": r}) for r in ablation["ratios"]]
            + [("align_layers", k, {"align_layers": k}) for k in ablation["layers"]]
            + [("targets", t, target_variant(t)) for t in ablation["targets"]])


def run_key(overrides: Mapping[str, Any]) -> tuple:
    """One key per distinct run: the default appears in every group but is trained once."""
    if all(ABLATION_DEFAULT.get(k) == v for k, v in overrides.items()):
        return ()
    return tuple(sorted(overrides.items()))


def ablation_jobs(ablation: Mapping[str, Any], seed: int) -> list[tuple[tuple, dict, int]]:
    """``(run key, overrides, training seed)`` of every run: each distinct variant once with
    ``seed``, the headline variants with ``seed, seed + 1, ...`` (``ablation["seeds"]``)."""
    unique = {run_key(o): o for _, _, o in ablation_variants(ablation)}
    headline = {run_key(o) for o in HEADLINE_VARIANTS}
    seeds = int(ablation.get("seeds", 1))
    return [(key, overrides, seed + r) for key, overrides in unique.items()
            for r in range(seeds if key in headline else 1)]


def ablation_run(teacher: Any, data: Mapping[str, Any], preset: Mapping[str, Any],
                 overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """One stage-1 run of ``preset["ablation"]["steps"]`` steps (the stage-1 batch and lr,
    training seed ``seed``: the same initialisation and batches for every variant of a seed),
    scored per held-out clip (teacher cosine) and per test clip (motion probe)."""
    s1 = preset["stage1"]
    torch.manual_seed(seed)
    model = create_variant("umt_toy", **overrides)
    model.set_teacher(teacher)
    history = train_steps(model, data["clips"], steps=preset["ablation"]["steps"],
                          batch_size=s1["batch_size"], lr=s1["lr"], seed=seed,
                          step_fn=stage1_step)
    return {"cosine": alignment_per_clip(model, data["pairs_test"]["video"]),
            "motion": action_probe_correct(model.video_features, data),
            "final_loss": float(sum(h["loss"] for h in history[-5:]) / 5)}


def summarise_ablation(ablation: Mapping[str, Any], jobs: Sequence[tuple[tuple, dict, int]],
                       runs: Sequence[Mapping[str, Any]]) -> tuple[dict, dict[str, Comparison]]:
    """The ablation table (``group -> label -> metrics``, the first seed's run of each
    variant) and the headline :class:`Comparison` s over every seed."""
    by_key: dict[tuple, list[Mapping[str, Any]]] = {}
    for (key, _, _), run in zip(jobs, runs):
        by_key.setdefault(key, []).append(run)
    table: dict[str, dict[Any, dict[str, float]]] = {}
    for group, label, overrides in ablation_variants(ablation):
        first = by_key[run_key(overrides)][0]
        cosine = first["cosine"]
        table.setdefault(group, {})[label] = {
            "teacher cosine": float(cosine.mean()),
            "teacher cosine s.e.": float(cosine.std() / math.sqrt(len(cosine)))
            if len(cosine) > 1 else 0.0,
            "motion probe": 100.0 * float(first["motion"].mean()),
            "final_loss": first["final_loss"]}

    def pair(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, scale: float
             ) -> Comparison:
        ra, rb = by_key[run_key(a)], by_key[run_key(b)]
        count = min(len(ra), len(rb))
        return compare([r[metric] for r in ra[:count]], [r[metric] for r in rb[:count]],
                       scale=scale)

    default, tube, random, ratio95, mae = HEADLINE_VARIANTS
    comparisons: dict[str, Comparison] = {}
    if run_key(mae) in by_key:
        comparisons["uta - mae (motion probe)"] = pair(default, mae, "motion", 100.0)
    for name, other in (("tube", tube), ("random", random)):
        if run_key(other) in by_key:
            comparisons[f"semantic - {name} (teacher cosine)"] = pair(default, other,
                                                                      "cosine", 1.0)
    if run_key(ratio95) in by_key:
        comparisons["0.8 - 0.95 (teacher cosine)"] = pair(default, ratio95, "cosine", 1.0)
    return table, comparisons


# --------------------------------------------------------------------------------------------
# the chapter
# --------------------------------------------------------------------------------------------

#: Table 5's compute column: the paper writes "GFLOPs", its numbers count multiply-adds.
_MACS = "GMACs 8x224 (paper: 'GFLOPs')"

#: The ledger rows the chapter writes at every scale (:func:`ledger_rows` builds them).
LEDGER_ROWS: tuple[RowKey, ...] = (
    ("UMT", "Table 5", "umt_base", "params (M)"),
    ("UMT", "Table 5", "umt_base", _MACS),
    ("UMT", "Table 5", "umt_large", "params (M)"),
    ("UMT", "Table 5", "umt_large", _MACS),
    ("UMT", "Table 1", "UTA vs MAE", "memory ratio"),
    ("UMT", "Table 1", "UTA vs MAE", "SSV2 (toy: motion probe)"),
    ("UMT", "Table 1", "UTA vs MAE", "SSV2 (toy: motion FT)"),
    ("UMT", "Table 2", "semantic vs tube/random", "K400 (toy: teacher cosine)"),
    ("UMT", "Figure 4", "0.8 vs 0.95 masking", "K400 (toy: teacher cosine)"),
    ("UMT", "Table 3", "student vs fine-tuned CLIP-S", "SSV2 (toy: motion FT)"),
    ("UMT", "Table 7", "zero-shot t2v", "R@1 (toy: synthetic)"),
    ("UMT", "Sec. 4.1", "pre-training run", "stage 1 + 2 full schedules"),
)
#: What the paper reports for each measured row (Tables 1-3, 5, 7 and Figure 4).
PAPER_VALUES: dict[RowKey, Any] = {
    LEDGER_ROWS[4]: round(16 / 44, 2),  # Table 1: 16.0 G (UTA) vs 44.0 G (MAE)
    LEDGER_ROWS[5]: "70.2 vs 67.1",
    LEDGER_ROWS[6]: "70.2 vs 67.1",
    LEDGER_ROWS[7]: "84.9 vs 84.3/84.6",
    LEDGER_ROWS[8]: "drop at 0.95",
    LEDGER_ROWS[9]: "70.3 vs 57.4",
    LEDGER_ROWS[10]: "MSR-VTT 35.5 (B, 5M)",
}


def _comparison(value: Comparison | Mapping[str, Any] | None) -> Comparison | None:
    if value is None or isinstance(value, Comparison):
        return value
    return Comparison(**value)


def ledger_rows(results: Mapping[str, Any], scale: str) -> list[LedgerRow]:
    """Every row of :data:`LEDGER_ROWS`, in order, from the notebook's ``results``.

    ``results`` (what the notebook saves as ``results.json``): ``sizes`` (Table 5 rows),
    ``memory_vit_b`` (activation bytes per Table 1 target; empty at ``smoke``),
    ``comparisons`` (the ablation's :class:`Comparison` s, absent without the ablation),
    ``fine_tuned`` (the fine-tuned :class:`Comparison` s ``student - CLIP-S`` and
    ``uta - mae``) and ``stage2`` (``t2v``, ``retrieval_chance_R@1``, ``num_texts``). A row
    whose measurement is missing reads ``not run``; every verdict is computed here from the
    measurement and its error (:func:`vlbook.results.trend_status`)."""
    rows: dict[RowKey, LedgerRow] = {}

    def add(key: RowKey, ours: Any, holds: bool | None, note: str, *,
            status: str | None = None, row_scale: str | None = None) -> None:
        if holds is None and status is None:
            status = "not run"
        rows[key] = LedgerRow(*key, PAPER_VALUES.get(key), ours, row_scale or scale,
                              status or trend_status(bool(holds), scale), note)

    for size in results.get("sizes", []):
        variant = size["variant"]
        for metric, ours, paper, tolerance in (
                ("params (M)", size["params (M)"], size["paper params (M)"], 0.02),
                (_MACS, size["GMACs 8x224"], size["paper GFLOPs"], 0.02)):
            close = abs(ours - paper) <= tolerance * paper
            rows[("UMT", "Table 5", variant, metric)] = LedgerRow(
                "UMT", "Table 5", variant, metric, paper, ours, "exact",
                "matches" if close else "differs",
                f"criterion: within {tolerance:.0%} of the paper; ours "
                f"{100 * (ours - paper) / paper:+.1f} %"
                + ("; the paper's 'GFLOPs' are multiply-adds (1 MAC = 2 FLOPs)"
                   if metric == _MACS else ""))

    memory = {m["target"]: m["activation GB (ViT-B, batch 1)"]
              for m in results.get("memory_vit_b", [])}
    if "uta" in memory and "mae" in memory:
        ratio = memory["uta"] / memory["mae"]
        add(LEDGER_ROWS[4], round(ratio, 2), ratio < 1,
            "ours: activation memory of one ViT-B step, batch 1, fp32; criterion: below 1")
    else:
        add(LEDGER_ROWS[4], None, None, "measured at toy scale and above")

    ablated = {k: _comparison(v) for k, v in results.get("comparisons", {}).items()}
    fine_tuned = {k: _comparison(v) for k, v in results.get("fine_tuned", {}).items()}
    ran = bool(ablated)
    skipped = "ablation not run (run_ablation=False)"

    def pair_row(key: RowKey, c: Comparison | None, shown: str, criterion: str,
                 absent: str) -> None:
        if c is None:
            add(key, None, None, absent)
        else:
            add(key, shown.format(a=c.a, b=c.b), c.clearly_above(),
                f"criterion: {criterion}; paired difference {c.note()}")

    pair_row(LEDGER_ROWS[5], ablated.get("uta - mae (motion probe)"), "{a:.1f} vs {b:.1f}",
             "UTA clearly above MAE (frozen features, linear probe)",
             "the preset's targets lack uta or mae" if ran else skipped)
    pair_row(LEDGER_ROWS[6], fine_tuned.get("uta - mae"), "{a:.1f} vs {b:.1f}",
             "UTA clearly above MAE after the same fine-tuning (the paper's protocol)",
             "fine-tuning of the MAE student not run" if ran else skipped)
    tube = ablated.get("semantic - tube (teacher cosine)")
    random = ablated.get("semantic - random (teacher cosine)")
    if tube is None or random is None:
        add(LEDGER_ROWS[7], None, None,
            "the preset's mask types lack tube or random" if ran else skipped)
    else:
        add(LEDGER_ROWS[7], f"{tube.a:.3f} vs {tube.b:.3f}/{random.b:.3f}",
            tube.clearly_above() and random.clearly_above(),
            f"criterion: semantic clearly above each; vs tube {tube.note()}; "
            f"vs random {random.note()}")
    pair_row(LEDGER_ROWS[8], ablated.get("0.8 - 0.95 (teacher cosine)"),
             "{a:.3f} vs {b:.3f}", "0.8 clearly above 0.95",
             "the preset's ratios lack 0.8 or 0.95" if ran else skipped)
    pair_row(LEDGER_ROWS[9], fine_tuned.get("student - CLIP-S"), "{a:.1f} vs {b:.1f}",
             "student clearly above the frame-wise teacher after the same fine-tuning",
             "fine-tuning not run")
    # the other encoders fine-tuned with the same recipe: what a differing Table 1/3 row
    # measures against (no pre-training at all, and pixel targets)
    others = results.get("table3_fine_tuned_motion", {})
    names = [n for n in ("random-init student", "MAE student (pixels)") if n in others]
    context = "; ".join(f"{name} {others[name]:.1f}" for name in names)
    student = others.get("UMT student (space-time)")
    for index in (6, 9):
        row = rows.get(LEDGER_ROWS[index])
        if context and student is not None and row is not None and row.status == "differs":
            below = all(student < others[n] for n in names)
            row.note += (f"; the same fine-tuning from {context} (%): at toy scale the "
                         f"distilled student ({student:.1f}) fine-tunes "
                         + ("worse than each" if below else "no better than the best of these"))

    stage2 = results.get("stage2")
    if stage2:
        r1, chance, queries = (stage2["t2v"]["R@1"], stage2["retrieval_chance_R@1"],
                               stage2["num_texts"])
        add(LEDGER_ROWS[10], round(r1, 1), above_chance(r1, chance, queries),
            f"criterion: above chance; chance {chance:.1f}, {queries} queries")
    else:
        add(LEDGER_ROWS[10], None, None, "stage 2 not run")
    add(LEDGER_ROWS[11], None, None, "needs K710 / 25M corpus and GPUs", status="not run",
        row_scale="full")
    missing = [key for key in LEDGER_ROWS if key not in rows]
    if missing:
        raise ValueError(f"ledger_rows: results lack {missing} (results['sizes'] must hold "
                         "umt_base and umt_large)")
    return [rows[key] for key in LEDGER_ROWS]


def contract_toy_model(name: str) -> UMT:
    """A toy variant with everything one step of each objective reads: the stage-2 towers
    (VTC, VTM, MLM, and ``encode_text``) and a toy CLIP teacher (UTA) of the student's width."""
    model = create_model(name, stage=2)
    model.set_teacher(ToyCLIP(ToyCLIPConfig(width=model.config.teacher_dim,
                                            output_dim=model.config.teacher_dim)))
    return model


CHAPTER = register_chapter(Chapter(
    name="umt",
    title="Unmasked Teacher: distilling an image model into a video model through the "
          "unmasked tokens",
    order=3,
    toy_models=("umt_toy",),
    paper_models=("umt_base", "umt_large"),
    ledger_rows=LEDGER_ROWS,
    module=__name__,
    paper_params_m=PAPER_PARAMS_M,
    build_toy_model=contract_toy_model,
))
