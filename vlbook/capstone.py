"""The five methods side by side: one budget, one benchmark, the same downstream tasks.

Each paper compares against its own baselines, on its own data, with its own compute. Here
every method is built at the same transformer width and depth (:class:`Budget`), pre-trained
for the same number of steps on the same clips with the same batch size, and evaluated with the
same frozen-feature protocols on the synthetic benchmark:

- retrieval (text-to-video and video-to-text) by cosine similarity of the pooled embeddings;
- 5-way multiple choice by the same cosine similarity, with every distractor type scored
  separately (the temporal ones, ``motion`` and ``order``, apart from the static ones);
- open-ended QA by a linear classifier over the answer vocabulary on ``[v, q, v * q]`` (frozen
  video and question embeddings), with the temporal questions separated;
- action classification by a linear probe on the frozen video embedding.

What each method keeps of its paper (the objective, the architecture, its frame count) and the
toy departures its chapter found necessary (stated in :data:`METHODS`) are listed in the
capstone notebook. Auxiliary networks a method needs before pre-training (UMT's CLIP teacher,
E-ViLM's video tokenizer) get their own ``aux_steps`` and are reported as extra compute.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.analysis import count_flops, count_parameters
from vlbook.chapters import allinone, chapters, evilm, simvtp, umt, vlm
from vlbook.config import get_preset
from vlbook.data import build_dataset
from vlbook.data.cache import cache_dataset
from vlbook.data.synthetic import annotation_path, ensure_synthetic
from vlbook.data.tokenizer import load_tokenizer, tokenize
from vlbook.eval import (
    RetrievalProtocol,
    linear_probe_accuracy,
    multiple_choice_breakdown,
    retrieval_metrics,
)
from vlbook.eval.downstream import TEMPORAL_ATTRIBUTES
from vlbook.parallel import map_runs
from vlbook.train.toy import ToyRun, train_on_cache

STATIC_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "count")


@dataclass
class Budget:
    """The shared budget: transformer width/depth, clips, steps, batch (capstone preset)."""

    width: int = 64
    depth: int = 4
    heads: int = 4
    num_frames: int = 8
    size: int = 32
    patch_size: int = 8
    max_len: int = 24
    steps: int = 300
    batch_size: int = 32
    aux_steps: int = 150
    train_clips: int = 1000
    eval_videos: int = 200
    qa_train: int = 3000
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"  # "auto": CUDA when available

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.width % self.heads:
            raise ValueError(f"Budget: width={self.width} is not a multiple of "
                             f"heads={self.heads}")
        if self.size % self.patch_size:
            raise ValueError(f"Budget: size={self.size} is not a multiple of "
                             f"patch_size={self.patch_size}")


# ------------------------------------------------------------------------------------------
# data: decoded once, shared by every method and seed
# ------------------------------------------------------------------------------------------


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_benchmark(budget: Budget, root: str | Path | None = None, scale: str = "toy"
                   ) -> dict[str, Any]:
    """The synthetic benchmark decoded once at the budget's clip size.

    Returns ``train`` (clips, all captions tokenised ``(N, C, L)``), ``test`` (held-out clips,
    first caption), and index-based views into them for ``mc``, ``qa_train``/``qa_test`` and
    ``cls_train``/``cls_test`` (rows whose video is not cached are left out).
    """
    root = Path(root) if root is not None else ensure_synthetic(scale)
    tokenizer = load_tokenizer(root / "tokenizer")
    clips = {}
    for split, limit in (("train", budget.train_clips), ("test", budget.eval_videos)):
        dataset = build_dataset("video_text", annotation=annotation_path(root, "retrieval", split),
                                split=split, num_frames=budget.num_frames, size=budget.size,
                                tokenizer=tokenizer, max_len=budget.max_len, train=False)
        cached = cache_dataset(dataset, limit)
        n = len(cached["video"])
        records = dataset.records[:n]
        captions = [r["captions"] for r in records]
        per_clip = min(len(c) for c in captions)
        ids, mask = tokenize(tokenizer, [c for cs in captions for c in cs[:per_clip]],
                             budget.max_len)
        clips[split] = {
            "video": cached["video"],
            "caption_ids": ids.view(n, per_clip, -1), "caption_mask": mask.view(n, per_clip, -1),
            "input_ids": ids.view(n, per_clip, -1)[:, 0],
            "attention_mask": mask.view(n, per_clip, -1)[:, 0],
            "video_index": torch.arange(n),
            "row": {r["video_id"]: i for i, r in enumerate(records)},
        }

    def rows(task: str, split: str, source: str, limit: int | None = None
             ) -> tuple[list[dict[str, Any]], torch.Tensor]:
        lookup = clips[source]["row"]
        kept = [r for r in _records(annotation_path(root, task, split))
                if r["video_id"] in lookup][:limit]
        return kept, torch.tensor([lookup[r["video_id"]] for r in kept], dtype=torch.long)

    mc, mc_rows = rows("mc", "test", "test")
    k = len(mc[0]["options"]) if mc else 0
    opt_ids, opt_mask = tokenize(tokenizer, [o for r in mc for o in r["options"]],
                                 budget.max_len)
    answers = list(__import__("json").loads((root / "answers.json").read_text()))
    answer_index = {a: i for i, a in enumerate(answers)}
    qa: dict[str, Any] = {}
    for split, source, limit in (("train", "train", budget.qa_train), ("test", "test", None)):
        items, item_rows = rows("qa", split, source, limit)
        q_ids, q_mask = tokenize(tokenizer, [r["question"] for r in items], budget.max_len)
        qa[split] = {"video_row": item_rows, "input_ids": q_ids, "attention_mask": q_mask,
                     "label": torch.tensor([answer_index.get(r["answer"], -100) for r in items]),
                     "temporal": torch.tensor([bool(r.get("temporal")) for r in items])}
    cls: dict[str, Any] = {}
    for split, source in (("train", "train"), ("test", "test")):
        items, item_rows = rows("classification", split, source)
        cls[split] = {"video_row": item_rows,
                      "label": torch.tensor([int(r["label"]) for r in items])}
    return {
        "root": root, "tokenizer": tokenizer, "answers": answers,
        "train": clips["train"], "test": clips["test"],
        "mc": {"video_row": mc_rows, "option_ids": opt_ids.view(len(mc), k, -1),
               "option_mask": opt_mask.view(len(mc), k, -1),
               "label": torch.tensor([int(r["answer"]) for r in mc]),
               "option_attributes": [r.get("option_attributes") or [None] * k for r in mc]},
        "qa_train": qa["train"], "qa_test": qa["test"],
        "cls_train": cls["train"], "cls_test": cls["test"],
    }


# ------------------------------------------------------------------------------------------
# the five methods at one budget
# ------------------------------------------------------------------------------------------


@dataclass
class Method:
    """How one paper's model is built, fed and trained at the shared budget."""

    name: str
    paper: str
    objective: str
    frames: int | None  # frames the method reads of each clip (None: all of the budget's)
    lr: float
    weight_decay: float
    departures: str
    build: Callable[[Budget, Any], nn.Module]
    step_fn: Callable[[int, int], Any] | None = None  # (step, steps) -> step_fn for that step
    prepare: Callable[[nn.Module, Mapping[str, Any], Budget, int], dict[str, Any]] | None = None

    def frame_index(self, budget: Budget) -> torch.Tensor:
        """Uniformly spaced frames of the budget's clip (all of them when ``frames`` is None)."""
        n = self.frames or budget.num_frames
        return torch.linspace(0, budget.num_frames - 1, n).round().long()


def _chapter_preset(chapter: str, budget: Budget) -> dict[str, Any]:
    preset = get_preset(chapter, "toy")
    preset["data"]["max_len"] = budget.max_len
    return preset


def _build_vlm(budget: Budget, tokenizer: Any) -> nn.Module:
    preset = _chapter_preset("vlm", budget)
    data = {"tokenizer": tokenizer, "num_frames": budget.num_frames, "max_len": budget.max_len}
    model = vlm.build_chapter_model(preset, data, hidden_size=budget.width,
                                    num_layers=budget.depth, num_heads=budget.heads,
                                    intermediate_size=4 * budget.width)
    model.attach_frame_encoder(vlm.ToyFrameEncoder(feature_dim=preset["data"]["feature_dim"]))
    return model


def _build_simvtp(budget: Budget, tokenizer: Any) -> nn.Module:
    preset = _chapter_preset("simvtp", budget)
    preset["data"].update(num_frames=budget.num_frames, size=budget.size)
    return simvtp.build_chapter_model(preset, tokenizer, embed_dim=budget.width,
                                      depth=budget.depth, num_heads=budget.heads,
                                      patch_size=budget.patch_size)


def _build_umt(budget: Budget, tokenizer: Any) -> nn.Module:
    return umt.build_chapter_model("umt_toy", tokenizer, stage=2, max_text_len=budget.max_len,
                                   embed_dim=budget.width, depth=budget.depth,
                                   num_heads=budget.heads, image_size=budget.size,
                                   patch_size=budget.patch_size, num_frames=budget.num_frames,
                                   teacher_dim=budget.width, align_layers=min(2, budget.depth))


def _prepare_umt(model: nn.Module, data: Mapping[str, Any], budget: Budget, seed: int
                 ) -> dict[str, Any]:
    """Train the toy CLIP teacher on single frames of the training clips (aux steps)."""
    torch.manual_seed(seed)
    tokenizer = data["tokenizer"]
    teacher = umt.ToyCLIP(umt.ToyCLIPConfig(
        image_size=budget.size, patch_size=budget.patch_size, width=budget.width,
        depth=budget.depth, heads=budget.heads, text_width=budget.width,
        vocab_size=len(tokenizer), max_text_len=budget.max_len, output_dim=budget.width))
    middle = budget.num_frames // 2
    train = data["train"]
    teacher.to(budget.device)
    run = train_on_cache(teacher, train, steps=budget.aux_steps, batch_size=budget.batch_size,
                         lr=2e-3, betas=(0.9, 0.98), seed=seed,
                         sample=_caption_sampler(train, frames=torch.tensor([middle])),
                         device=budget.device)
    teacher.requires_grad_(False).eval()
    model.set_teacher(teacher)
    return {"aux": "CLIP teacher", "aux_steps": budget.aux_steps, "aux_seconds": run.seconds,
            "aux_params": count_parameters(teacher).total}


def _umt_step_fn(step: int, steps: int) -> Any:
    """Stage 1 (UTA on masked video) for the first half, stage 2 (VTC+VTM+MLM+UTA) after."""
    return umt.stage1_step if step < steps // 2 else umt.stage2_step


def _build_allinone(budget: Budget, tokenizer: Any) -> nn.Module:
    preset = _chapter_preset("allinone", budget)
    return allinone.build_chapter_model(preset, tokenizer, embed_dim=budget.width,
                                        depth=budget.depth, num_heads=budget.heads,
                                        image_size=budget.size, patch_size=budget.patch_size,
                                        num_frames=3)


def _build_evilm(budget: Budget, tokenizer: Any) -> nn.Module:
    preset = _chapter_preset("evilm", budget)
    return evilm.build_chapter_model(
        preset, tokenizer, hidden=budget.width, decoder_depth=budget.depth // 2,
        text_layers=budget.depth // 2, text_hidden=budget.width, text_heads=budget.heads,
        text_intermediate=2 * budget.width, decoder_heads=budget.heads,
        image_size=budget.size, conv_stride=budget.patch_size, num_frames=4)


def _prepare_evilm(model: nn.Module, data: Mapping[str, Any], budget: Budget, seed: int
                   ) -> dict[str, Any]:
    """Train the semantic video tokenizer (E-ViLM Eq. 7) for the aux steps and attach it."""
    preset = _chapter_preset("evilm", budget)
    preset["data"]["num_frames"] = 4
    torch.manual_seed(seed)
    vq = evilm.build_chapter_tokenizer(preset, data["tokenizer"], image_size=budget.size,
                                       patch_size=budget.patch_size, encoder_dim=budget.width,
                                       decoder_dim=budget.width)
    train = data["train"]
    frames = METHODS["evilm"].frame_index(budget)
    sample = _caption_sampler(train, frames=frames)
    gen = torch.Generator().manual_seed(seed)
    n = len(train["video"])
    cache = [sample(torch.randperm(n, generator=gen)[:budget.batch_size], gen)
             for _ in range(min(budget.aux_steps, 32))]
    start = time.perf_counter()
    evilm.train_tokenizer(vq, None, steps=budget.aux_steps, batch_size=budget.batch_size,
                          lr=2e-3, seed=seed, cache=cache)
    seconds = time.perf_counter() - start
    vq.requires_grad_(False).eval()
    model.set_video_tokenizer(vq)
    return {"aux": "video tokenizer", "aux_steps": budget.aux_steps, "aux_seconds": seconds,
            "aux_params": count_parameters(vq).total}


METHODS: dict[str, Method] = {
    "vlm": Method(
        "vlm", "VLM", "masked modality model + masked token loss", None, 2e-3, 0.01,
        "frozen random-convolution frame features stand in for S3D (the paper's video "
        "encoder is frozen too)", _build_vlm),
    "simvtp": Method(
        "simvtp", "SimVTP", "masked video (90 %) + text (75 %) reconstruction, VTC, VTM", None,
        1e-3, 0.05, "VTC/VTM passes draw lighter masks (50 % video, 15 % text)", _build_simvtp),
    "umt": Method(
        "umt", "UMT", "stage 1 UTA on 80 % semantic masks, then VTC+VTM+MLM+UTA", None, 1e-3,
        0.05, "half the steps per stage; a toy CLIP teacher trained on middle frames",
        _build_umt, step_fn=_umt_step_fn, prepare=_prepare_umt),
    "allinone": Method(
        "allinone", "All-in-one", "VTM + MLM through one backbone with temporal token rolling",
        3, 2e-3, 0.01, "Xavier init and an added VTC loss (needed at toy width)",
        _build_allinone),
    "evilm": Method(
        "evilm", "E-ViLM", "MVM on semantic VQ codes + MLM + VTM", 4, 3e-4, 0.01,
        "Xavier init, lr 3e-4, added VTC; conv frame encoder instead of EdgeNeXt",
        _build_evilm, prepare=_prepare_evilm),
}
#: The compared methods in the book's order: the registered chapters that have a recipe in
#: :data:`METHODS` (a new chapter joins the comparison when it gets one).
METHOD_NAMES: tuple[str, ...] = tuple(c.name for c in chapters() if c.name in METHODS)


def _caption_sampler(data: Mapping[str, Any], frames: torch.Tensor | None = None
                     ) -> Callable[[torch.Tensor, torch.Generator], dict[str, Any]]:
    """Batches of clips with one random caption each (the clip's frames ``frames``)."""

    def sample(pick: torch.Tensor, gen: torch.Generator) -> dict[str, Any]:
        per_clip = data["caption_ids"].shape[1]
        which = torch.randint(0, per_clip, (len(pick),), generator=gen)
        video = data["video"][pick]
        if frames is not None:
            video = video[:, frames]
        return {"video": video, "input_ids": data["caption_ids"][pick, which],
                "attention_mask": data["caption_mask"][pick, which], "video_index": pick}

    return sample


# ------------------------------------------------------------------------------------------
# training at the budget
# ------------------------------------------------------------------------------------------


def _method_step_fn(method: Method, steps: int) -> Callable[..., Any]:
    state = {"step": 0}

    def step_fn(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> Any:
        if method.step_fn is None:
            out = model.pretrain_step(batch)
        else:
            out = method.step_fn(state["step"], steps)(model, batch, gen)
        state["step"] += 1
        return {k: v for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0}

    return step_fn


def probe_batch(method: Method, data: Mapping[str, Any], budget: Budget, seed: int = 0
                ) -> dict[str, Any]:
    """One training batch of the budget's size (for FLOP counting)."""
    train = data["train"]
    sample = _caption_sampler(train, frames=method.frame_index(budget))
    return sample(torch.arange(min(budget.batch_size, len(train["video"]))),
                  torch.Generator().manual_seed(seed))


def training_step_flops(method: Method, model: nn.Module, batch: dict[str, Any]) -> int:
    """FLOPs of one pre-training step (forward + backward) on ``batch``.

    Counted on the meta device when the step allows it, else on a CPU copy (fused attention
    counted there too, :data:`vlbook.analysis.CPU_ATTENTION_FLOPS`). UMT counts its stage-2
    step, the costlier of its two.
    """
    step = (method.step_fn(1, 1) if method.step_fn is not None
            else lambda m, b, g: m.pretrain_step(b))

    def forward(m: nn.Module, b: dict[str, Any]) -> Any:
        return step(m, b, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return count_flops(copy.deepcopy(model), batch, forward=forward, backward=True).total
        except Exception:  # noqa: BLE001 - data-dependent step: count on a CPU copy instead
            return count_flops(copy.deepcopy(model), batch, forward=forward, backward=True,
                               device="cpu").total


@dataclass
class MethodRun:
    """A pre-trained method with its budget accounting."""

    method: str
    seed: int
    model: nn.Module
    run: ToyRun
    params: int
    step_flops: int
    aux: dict[str, Any] = field(default_factory=dict)

    @property
    def train_flops(self) -> float:
        return float(self.step_flops) * len(self.run.history)

    def accounting(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "params": self.params,
                "steps": len(self.run.history), "samples_seen": self.run.samples,
                "wall_s": self.run.seconds, "step_gflops": self.step_flops / 1e9,
                "train_tflops": self.train_flops / 1e12,
                "final_loss": self.run.last("loss"), **self.aux}


def pretrain_method(name: str, data: Mapping[str, Any], budget: Budget, seed: int = 0
                    ) -> MethodRun:
    """Build ``name`` at the budget and pre-train it with its own objective."""
    method = METHODS[name]
    torch.manual_seed(seed)
    model = method.build(budget, data["tokenizer"])
    aux = method.prepare(model, data, budget, seed) if method.prepare is not None else {}
    flops = training_step_flops(method, model, probe_batch(method, data, budget, seed))
    model.to(budget.device)
    train = data["train"]
    sample = _caption_sampler(train, frames=method.frame_index(budget))
    torch.manual_seed(seed)
    run = train_on_cache(model, train, steps=budget.steps, batch_size=budget.batch_size,
                         lr=method.lr, weight_decay=method.weight_decay, betas=(0.9, 0.98),
                         seed=seed, step_fn=_method_step_fn(method, budget.steps), sample=sample,
                         device=budget.device)
    params = count_parameters(model).total
    return MethodRun(name, seed, model, run, params, flops, aux)


# ------------------------------------------------------------------------------------------
# the shared evaluation
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def _embed_videos(model: nn.Module, video: torch.Tensor, frames: torch.Tensor,
                  batch_size: int = 64) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = [model.encode_video(video[i:i + batch_size][:, frames].to(device)).cpu()
           for i in range(0, len(video), batch_size)]
    return F.normalize(torch.cat(out).float(), dim=-1)


@torch.no_grad()
def _embed_texts(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                 batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = [model.encode_text(ids[i:i + batch_size].to(device),
                             mask[i:i + batch_size].to(device)).cpu()
           for i in range(0, len(ids), batch_size)]
    return F.normalize(torch.cat(out).float(), dim=-1)


def mc_breakdown(scores: torch.Tensor, answer: torch.Tensor,
                 attributes: Sequence[Sequence[str | None]]) -> dict[str, float]:
    """:func:`vlbook.eval.multiple_choice_breakdown` with the synthetic benchmark's temporal
    attributes (percent)."""
    return multiple_choice_breakdown(scores, answer, attributes, temporal=TEMPORAL_ATTRIBUTES)


def evaluate_method(run: MethodRun, data: Mapping[str, Any], budget: Budget) -> dict[str, float]:
    """Retrieval, MC (temporal vs static distractors), open QA and the action probe."""
    model = run.model
    frames = METHODS[run.method].frame_index(budget)
    test, train = data["test"], data["train"]
    v_test = _embed_videos(model, test["video"], frames)
    t_test = _embed_texts(model, test["input_ids"], test["attention_mask"])
    protocol = RetrievalProtocol(split="test", captions_per_video="first", dataset="synthetic")
    retrieval = retrieval_metrics(t_test @ v_test.T, torch.arange(len(t_test)), protocol)
    metrics = {"t2v_R@1": retrieval.t2v["R@1"], "t2v_R@5": retrieval.t2v["R@5"],
               "t2v_R@10": retrieval.t2v["R@10"], "v2t_R@1": retrieval.v2t["R@1"],
               "v2t_R@5": retrieval.v2t["R@5"]}

    mc = data["mc"]
    b, k, length = mc["option_ids"].shape
    options = _embed_texts(model, mc["option_ids"].view(b * k, length),
                           mc["option_mask"].view(b * k, length)).view(b, k, -1)
    scores = (options * v_test[mc["video_row"]][:, None]).sum(-1)
    metrics.update({f"mc_{key}": value for key, value in
                    mc_breakdown(scores, mc["label"], mc["option_attributes"]).items()})

    v_train = _embed_videos(model, train["video"], frames)

    def qa_features(split: Mapping[str, Any], videos: torch.Tensor) -> torch.Tensor:
        q = _embed_texts(model, split["input_ids"], split["attention_mask"])
        v = videos[split["video_row"]]
        return torch.cat([v, q, v * q], dim=1)

    qa_train, qa_test = data["qa_train"], data["qa_test"]
    keep = qa_train["label"] >= 0
    probe = linear_probe_accuracy(qa_features(qa_train, v_train)[keep], qa_train["label"][keep],
                                  qa_features(qa_test, v_test), qa_test["label"].clamp(min=0))
    correct = (probe.predictions == qa_test["label"]).float()  # out-of-vocabulary: wrong
    temporal = qa_test["temporal"]
    metrics["qa_accuracy"] = 100.0 * float(correct.mean())
    metrics["qa_temporal"] = 100.0 * float(correct[temporal].mean()) if temporal.any() else 0.0
    metrics["qa_static"] = 100.0 * float(correct[~temporal].mean()) if (~temporal).any() else 0.0

    cls_train, cls_test = data["cls_train"], data["cls_test"]
    metrics["probe_accuracy"] = linear_probe_accuracy(
        v_train[cls_train["video_row"]], cls_train["label"],
        v_test[cls_test["video_row"]], cls_test["label"]).accuracy
    return metrics


def chance_levels(data: Mapping[str, Any]) -> dict[str, float]:
    """What a model that knows nothing scores on each task (percent)."""
    n = len(data["test"]["video"])
    k = data["mc"]["option_ids"].shape[1]
    qa_labels = data["qa_train"]["label"][data["qa_train"]["label"] >= 0]
    majority_qa = data["qa_test"]["label"] == torch.bincount(qa_labels).argmax()
    cls = data["cls_train"]["label"]
    majority_cls = data["cls_test"]["label"] == torch.bincount(cls).argmax()
    return {"t2v_R@1": 100.0 / n, "t2v_R@5": 500.0 / n, "t2v_R@10": 1000.0 / n,
            "v2t_R@1": 100.0 / n, "v2t_R@5": 500.0 / n, "mc_accuracy": 100.0 / k,
            "mc_pairwise/temporal": 50.0, "mc_pairwise/static": 50.0,
            "qa_accuracy": 100.0 * float(majority_qa.float().mean()),
            "probe_accuracy": 100.0 * float(majority_cls.float().mean())}


# ------------------------------------------------------------------------------------------
# the whole comparison
# ------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Every (method, seed) run: accounting and metrics, as flat records."""

    budget: Budget
    records: list[dict[str, Any]]
    chance: dict[str, float]

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.records)

    def summary(self, metrics: Sequence[str]) -> Any:
        """``mean ± std`` over seeds, methods x metrics (a DataFrame of strings)."""
        df = self.frame()
        grouped = df.groupby("method", sort=False)[list(metrics)]
        mean, std = grouped.mean(), grouped.std(ddof=0).fillna(0.0)
        return mean.apply(lambda col: [f"{m:.1f} ± {s:.1f}"
                                       for m, s in zip(col, std[col.name])]).astype(object)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": asdict(self.budget), "records": self.records, "chance": self.chance}


def run_comparison(data: Mapping[str, Any], budget: Budget,
                   methods: Sequence[str] = METHOD_NAMES, progress: bool = True,
                   workers: int | None = None) -> Comparison:
    """Pre-train and evaluate every method for every seed of the budget.

    The (method, seed) runs are independent: on the CPU they run side by side, one per core
    (:func:`vlbook.parallel.map_runs`; ``workers=1`` runs them one after the other), on a GPU
    one after the other. Each run seeds itself from its seed, so the records do not depend on
    the number of workers; ``wall_s`` is each run's own time.
    """
    def one_run(job: tuple[str, int]) -> dict[str, Any]:
        name, seed = job
        run = pretrain_method(name, data, budget, seed)
        start = time.perf_counter()
        metrics = evaluate_method(run, data, budget)
        return {**run.accounting(), "eval_s": time.perf_counter() - start, **metrics}

    jobs = [(m, s) for s in budget.seeds for m in methods]
    if budget.device != "cpu":
        workers = 1
    records = map_runs(one_run, jobs, workers=workers, desc="capstone runs", progress=progress)
    return Comparison(budget, records, chance_levels(data))


# --------------------------------------------------------------------------------------------
# the benchmark tables of the models, shown in the page
# --------------------------------------------------------------------------------------------


def markdown_blocks(text: str) -> list[tuple[str, Any]]:
    """``text`` (a ``vlbook.bench`` markdown file) as ``(kind, value)`` blocks: ``("heading",
    str)``, ``("text", str)`` and ``("table", DataFrame)`` for each pipe table, its first
    column as the index. A notebook output is rendered as CommonMark, which has no tables:
    this lets the page show them as HTML tables instead."""
    import pandas as pd

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    blocks: list[tuple[str, Any]] = []
    paragraph: list[str] = []
    lines = text.splitlines()

    def flush() -> None:
        if paragraph:
            blocks.append(("text", "\n".join(paragraph).strip()))
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        is_rule = (i + 1 < len(lines)
                   and set(lines[i + 1].replace("|", "").replace(":", "").strip()) == {"-"})
        if line.lstrip().startswith("|") and is_rule:
            flush()
            header = cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                row = cells(lines[i])
                rows.append((row + [""] * len(header))[:len(header)])
                i += 1
            frame = pd.DataFrame(rows, columns=header)
            blocks.append(("table", frame.set_index(header[0]) if len(header) > 1 else frame))
            continue
        if line.startswith("#"):
            flush()
            blocks.append(("heading", line.lstrip("#").strip()))
        elif line.strip():
            paragraph.append(line)
        else:
            flush()
        i += 1
    flush()
    return blocks


def show_model_benchmarks(folder: str | Path | None = None) -> int:
    """Display every ``models-*.md`` table that ``python -m vlbook.bench models`` wrote under
    ``folder`` (default ``results_root()/bench``): headings in bold, notes as text, tables as
    HTML tables (pandas; a column with one value in every row is stated once above its
    table). Returns how many files were shown."""
    from IPython.display import Markdown, display

    from vlbook.notebook import display_path
    from vlbook.paths import results_root

    folder = Path(folder) if folder is not None else results_root() / "bench"
    files = sorted(folder.glob("models-*.md"))
    for path in files:  # one per device and precision it was measured on
        for kind, value in markdown_blocks(path.read_text()):
            if kind == "heading":
                display(Markdown(f"**{value}**"))
            elif kind == "text":
                display(Markdown(value))
            else:  # columns with one value in every row are said once, above the table
                same = [c for c in value.columns if value[c].nunique() == 1 and len(value) > 1]
                if same:
                    display(Markdown("Every row: " + ", ".join(
                        f"{c} = {value[c].iloc[0]}" for c in same) + "."))
                display(value.drop(columns=same))
    if not files:
        print(f"no models table under {display_path(folder)} yet: run "
              "`python -m vlbook.bench models`")
    return len(files)


__all__ = [
    "METHODS", "METHOD_NAMES", "STATIC_ATTRIBUTES", "TEMPORAL_ATTRIBUTES", "Budget",
    "Comparison", "Method", "MethodRun", "chance_levels", "evaluate_method", "load_benchmark",
    "markdown_blocks", "mc_breakdown", "pretrain_method", "run_comparison",
    "show_model_benchmarks", "training_step_flops",
]
