"""The UMT chapter: presets, synthetic data, the toy teacher and student runs, evaluations.

What ``notebooks/umt.ipynb`` runs and reports, above the model package :mod:`vlbook.models.umt`
(re-exported here, so ``import vlbook.chapters.umt as U`` gives the notebook the model and the
chapter in one name): the scale presets and chapter parameters, the cached synthetic benchmark,
the chapter's model builder, short stage-1 / stage-2 training runs, the probes, zero-shot
retrieval and multiple-choice evaluations, the Table 1 target rows of the ablations, the
activation-memory measurements and the chapter's ledger rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
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
                         "targets": ["uta", "mae"]},
            "eval": {"items": 16},
            "finetune": {"steps": 4, "lr": 2e-3, "batch_size": 8},
            "memory": {"batch_size": 2},
        },
        "toy": {
            "data": {"synthetic": "toy", "num_frames": 8, "size": 32, "max_len": 24},
            "teacher": {"steps": 250, "batch_size": 64, "lr": 2e-3, "items": 2000},
            "stage1": {"steps": 250, "batch_size": 32, "lr": 1e-3, "items": 1000},
            "stage2": {"steps": 300, "batch_size": 32, "lr": 2e-3},
            "ablation": {"steps": 50, "mask_types": ["semantic", "tube", "random"],
                         "ratios": [0.5, 0.8, 0.95], "layers": [1, 2, 4],
                         "targets": ["uta", "uta+masked", "uta+mae", "mae"]},
            "eval": {"items": 200},
            "finetune": {"steps": 200, "lr": 2e-3, "batch_size": 32},
            "memory": {"batch_size": 8},
        },
        "full": {
            # UMT-B stage 1 (Sec. 4.1, appendix): K710, 8 sparse frames at 224, 80 % semantic
            # masking, CLIP-B/16 teacher, batch 2048 (32 GPUs x 64), AdamW (0.9, 0.95),
            # lr 1.5e-4 * 2048 / 256, wd 0.05, cosine, 40 warm-up of 201 epochs, AMP.
            "model": {"name": "umt_base", "kwargs": {"teacher": True}},
            "data": {"datasets": ["kinetics710"], "num_frames": 8, "size": 224, "max_len": 32},
            "stage1": {"epochs": 201, "warmup_epochs": 40, "batch_size": 2048,
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
                                           **frames), items),
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


def action_probe(encode: Any, data: Mapping[str, Any]) -> float:
    """Action recognition by a linear probe on frozen features (percent, chance 12.5)."""
    train = features(encode, data["classes_train"]["video"])
    test = features(encode, data["classes_test"]["video"])
    return float(linear_probe_accuracy(train, data["classes_train"]["label"], test,
                                       data["classes_test"]["label"]).accuracy)


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
def heldout_alignment(model: UMT, video: torch.Tensor, batch_size: int = 64, *,
                      with_error: bool = False) -> float | tuple[float, float]:
    """Mean cosine between the student's last aligned layer (all tokens, no mask) and the
    teacher's last layer on held-out clips: how much of the teacher the student reproduces.
    ``with_error``: also the standard error of that mean over clips, ``(mean, se)``."""
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
    values = torch.cat(per_clip) if per_clip else torch.zeros(0)
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
    def accuracy(self, video: torch.Tensor, labels: torch.Tensor) -> float:
        self.eval()
        logits = features(lambda v: self.head(self.encode(self.encoder, v)), video)
        return float((logits.argmax(-1) == labels).float().mean() * 100)


# --------------------------------------------------------------------------------------------
# the chapter
# --------------------------------------------------------------------------------------------

#: The ledger rows the chapter writes at every scale.
LEDGER_ROWS: tuple[RowKey, ...] = (
    ("UMT", "Table 5", "umt_base", "params (M)"),
    ("UMT", "Table 5", "umt_base", "GFLOPs 8x224"),
    ("UMT", "Table 5", "umt_large", "params (M)"),
    ("UMT", "Table 5", "umt_large", "GFLOPs 8x224"),
    ("UMT", "Table 1", "UTA vs MAE", "SSV2 (toy: motion probe)"),
    ("UMT", "Table 2", "semantic vs tube/random", "K400 (toy: teacher cosine)"),
    ("UMT", "Figure 4", "0.8 vs 0.95 masking", "K400 (toy: teacher cosine)"),
    ("UMT", "Table 3", "student vs fine-tuned CLIP-S", "SSV2 (toy: motion FT)"),
    ("UMT", "Table 7", "zero-shot t2v", "R@1 (toy: synthetic)"),
    ("UMT", "Sec. 4.1", "pre-training run", "stage 1 + 2 full schedules"),
)

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
