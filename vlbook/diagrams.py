"""Architecture diagrams of the five papers, drawn from the models' configurations.

``draw_architecture("umt")`` returns a :class:`matplotlib.figure.Figure` of UMT's paper-size
variant (the chapter's first ``paper_models`` entry, built on the meta device, so no weights are
allocated): inputs at the bottom, where masking happens, the encoders with their depth, width
and heads read from the config, and at the top the losses, each named by the key its model's
``pretrain_step`` returns and connected to the tokens it reads. Because every number comes from
the config and every loss from :func:`losses`, the diagram changes when the model does.

:func:`check_layout` lists what makes a diagram unreadable (two labels overlapping, a label
running out of its box or out of the figure); the tests and the book build call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

__all__ = [
    "PAPERS",
    "Canvas",
    "LayoutError",
    "check_layout",
    "draw_all",
    "draw_architecture",
    "losses",
    "paper_config",
    "paper_variant",
    "save_teaser",
    "show_architecture",
]

#: Papers in book order.
PAPERS: tuple[str, ...] = ("vlm", "simvtp", "umt", "allinone", "evilm")

#: Face and edge colours of the box kinds.
STYLE: dict[str, tuple[str, str]] = {
    "video": ("#dbe9f6", "#3b6ea5"),
    "text": ("#dcefdc", "#3f8a3f"),
    "model": ("#efe3f5", "#7b4a94"),
    "frozen": ("#eeeeee", "#777777"),
    "mask": ("#fff2cc", "#b8860b"),
    "head": ("#ffffff", "#555555"),
    "loss": ("#f9dcdc", "#b03a3a"),
}
TOKEN_COLOURS = {"v": "#7fa7d1", "t": "#8cc78c", "s": "#c8c8c8", "m": "#ffffff"}
FONT = 8.5
WIDTH, HEIGHT = 16.0, 8.0  # canvas units
INCH = 0.56  # inches per canvas unit: the labels stay readable at a page's width


# --------------------------------------------------------------------------------------------
# configs and losses, from the code
# --------------------------------------------------------------------------------------------


def paper_variant(paper: str) -> str:
    """The paper-size model variant of ``paper``: the model of its ``full`` preset (what the
    chapter launches on a cluster), else its chapter's first ``paper_models``."""
    from vlbook.chapters import chapter
    from vlbook.config import ensure_registered, get_preset

    try:
        if ensure_registered(paper):
            return get_preset(paper, "full")["model"]["name"]
    except (KeyError, TypeError, ValueError):
        pass
    return chapter(paper).paper_models[0]


def paper_config(paper: str) -> Any:
    """The config of ``paper``'s paper-size variant, built on the meta device (no memory)."""
    import torch

    from vlbook.models import create_model

    with torch.device("meta"):
        model = create_model(paper_variant(paper))
    return model.config


def losses(paper: str, config: Any) -> list[str]:
    """The loss keys ``pretrain_step`` of ``paper``'s model returns under ``config`` (the
    weighted terms, without the total ``"loss"`` or accuracies). UMT: both stages."""
    c = config
    if paper == "vlm":
        return ["video_loss", "text_loss"]
    if paper == "simvtp":
        return ([*(["loss_video", "loss_text"] if c.msm_weight > 0 else []),
                 *(["loss_vtc"] if c.vtc_weight > 0 else []),
                 *(["loss_vtm"] if c.vtm_weight > 0 else [])])
    if paper == "umt":
        stage1 = [k for k, w in (("uta", c.uta_weight), ("masked_recovery",
                                                        c.masked_recovery_weight),
                                 ("pixel", c.pixel_weight)) if w > 0]
        stage2 = [k for k, w in (("vtc", c.vtc_weight), ("vtm", c.vtm_weight),
                                 ("mlm", c.mlm_weight)) if w > 0]
        return stage1 + stage2
    if paper == "allinone":
        return [k for k, w in (("loss_vtm", c.vtm_weight), ("loss_mlm", c.mlm_weight),
                               ("loss_vtc", c.vtc_weight)) if w > 0]
    if paper == "evilm":
        return [k for k, on in (("mvm", c.use_mvm), ("mlm", c.use_mlm), ("vtm", c.use_vtm),
                                ("vtc", c.vtc_weight > 0)) if on]
    raise ValueError(f"no diagram for {paper!r}; known: {PAPERS}")


# --------------------------------------------------------------------------------------------
# a tiny box-and-arrow layout
# --------------------------------------------------------------------------------------------


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float

    def anchor(self, side: str, shift: float = 0.0) -> tuple[float, float]:
        """The middle of a side (``top``, ``bottom``, ``left``, ``right``), moved along it."""
        if side == "top":
            return (self.x + self.w / 2 + shift, self.y + self.h)
        if side == "bottom":
            return (self.x + self.w / 2 + shift, self.y)
        if side == "left":
            return (self.x, self.y + self.h / 2 + shift)
        return (self.x + self.w, self.y + self.h / 2 + shift)


class Canvas:
    """Boxes with centred labels and arrows between them, in canvas units."""

    def __init__(self, title: str, height: float = HEIGHT) -> None:
        self.fig = Figure(figsize=(WIDTH * INCH, height * INCH))
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, WIDTH)
        self.ax.set_ylim(0, height)
        self.ax.axis("off")
        self.height = height
        self.ax.text(0.3, height - 0.3, title, fontsize=FONT + 3, fontweight="bold",
                     ha="left", va="center")
        #: label text -> the box patch it must stay inside (read by check_layout)
        self.fig._vlbook_owners = []  # type: ignore[attr-defined]
        #: the boxes' patches, which must not overlap each other (regions are not boxes)
        self.fig._vlbook_boxes = []  # type: ignore[attr-defined]

    def box(self, x: float, y: float, w: float, h: float, label: str, kind: str,
            dashed: bool = False, fontsize: float = FONT, weight: str = "normal") -> Box:
        face, edge = STYLE[kind]
        patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                               facecolor=face, edgecolor=edge, linewidth=1.3,
                               linestyle="--" if dashed or kind == "frozen" else "-", zorder=2)
        self.ax.add_patch(patch)
        text = self.ax.text(x + w / 2, y + h / 2, label, ha="center", va="center",
                            fontsize=fontsize, fontweight=weight, zorder=4, linespacing=1.35)
        self.fig._vlbook_owners.append((text, patch))  # type: ignore[attr-defined]
        self.fig._vlbook_boxes.append(patch)  # type: ignore[attr-defined]
        return Box(x, y, w, h)

    def loss(self, x: float, y: float, w: float, h: float, key: str, description: str
             ) -> Box:
        """A loss box: the ``pretrain_step`` key in bold monospace, then what it compares."""
        face, edge = STYLE["loss"]
        patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12",
                               facecolor=face, edgecolor=edge, linewidth=1.6, zorder=2)
        self.ax.add_patch(patch)
        key_text = self.ax.text(x + w / 2, y + h - 0.22, key, ha="center", va="center",
                                fontsize=FONT + 0.5, fontweight="bold", family="monospace",
                                color=edge, zorder=4)
        body = self.ax.text(x + w / 2, y + (h - 0.4) / 2, description, ha="center",
                            va="center", fontsize=FONT - 0.5, zorder=4, linespacing=1.3)
        self.fig._vlbook_owners += [(key_text, patch), (body, patch)]  # type: ignore[attr-defined]
        self.fig._vlbook_boxes.append(patch)  # type: ignore[attr-defined]
        return Box(x, y, w, h)

    def region(self, x: float, y: float, w: float, h: float, label: str) -> None:
        """A dashed background area with its label in the top-left corner."""
        patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.15",
                               facecolor="#fafafa", edgecolor="#999999", linewidth=1.0,
                               linestyle=(0, (4, 3)), zorder=0)
        self.ax.add_patch(patch)
        text = self.ax.text(x + 0.15, y + h - 0.2, label, ha="left", va="center",
                            fontsize=FONT - 0.5, style="italic", color="#555555", zorder=1)
        self.fig._vlbook_owners.append((text, patch))  # type: ignore[attr-defined]

    def arrow(self, start: tuple[float, float], end: tuple[float, float], label: str = "",
              colour: str = "#444444", rad: float = 0.0, dashed: bool = False,
              label_at: tuple[float, float] | None = None) -> None:
        self.ax.add_patch(FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=11, color=colour, linewidth=1.2,
            connectionstyle=f"arc3,rad={rad}", linestyle="--" if dashed else "-", zorder=3,
            shrinkA=1, shrinkB=1))
        if label:
            x, y = label_at or ((start[0] + end[0]) / 2 + 0.1, (start[1] + end[1]) / 2)
            self.ax.text(x, y, label, fontsize=FONT - 1, color=colour, ha="left",
                         va="center", style="italic", zorder=5,
                         bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.85))

    def tokens(self, x: float, y: float, pattern: str, size: float = 0.26,
               gap: float = 0.05) -> Box:
        """A row of token squares: ``v`` video, ``t`` text, ``s`` special, ``m`` masked (the
        hatch), ``|`` a wider gap. Returns the row's box."""
        cx = x
        for ch in pattern:
            if ch == "|":
                cx += 2 * gap
                continue
            self.ax.add_patch(Rectangle((cx, y), size, size, facecolor=TOKEN_COLOURS[ch],
                                        edgecolor="#333333", linewidth=0.6,
                                        hatch="////" if ch == "m" else None, zorder=3))
            cx += size + gap
        return Box(x, y, cx - x - gap, size)

    def legend(self, entries: Sequence[tuple[str, str]], x: float = 0.985,
               y: float | None = None) -> None:
        """The token colours, right-aligned on the line below the title."""
        y = (self.height - 0.5) / self.height if y is None else y
        handles = [Patch(facecolor=TOKEN_COLOURS[k], edgecolor="#333333",
                         hatch="////" if k == "m" else None, label=label)
                   for k, label in entries]
        self.ax.legend(handles=handles, loc="upper right", bbox_to_anchor=(x, y), ncol=len(
            handles), fontsize=FONT - 1, frameon=False, handlelength=1.2, columnspacing=1.0)

    def loss_row(self, x0: float, x1: float, y: float, h: float, keys: Sequence[str],
                 descriptions: dict[str, str], gap: float = 0.3) -> dict[str, Box]:
        """``{key: loss box}`` of :meth:`loss` boxes side by side (:meth:`row`), each with its
        description."""
        return dict(zip(keys, self.row(x0, x1, y, h, keys, lambda x, y_, w, h_, k: self.loss(
            x, y_, w, h_, k, descriptions[k]), gap=gap)))

    def row(self, x0: float, x1: float, y: float, h: float, items: Sequence[Any],
            draw: Callable[[float, float, float, float, Any], Box], gap: float = 0.3
            ) -> list[Box]:
        """Boxes of equal width side by side between ``x0`` and ``x1``."""
        if not items:
            return []
        w = (x1 - x0 - gap * (len(items) - 1)) / len(items)
        return [draw(x0 + i * (w + gap), y, w, h, item) for i, item in enumerate(items)]


def _pct(x: float) -> str:
    return f"{x:.0%}"


# --------------------------------------------------------------------------------------------
# the five papers
# --------------------------------------------------------------------------------------------


def _vlm(c: Any, variant: str) -> Figure:
    cv = Canvas(f"VLM ({variant}): single stream, one BERT over video and text tokens")
    whole_video = c.mmm_probability * c.whole_video_share
    whole_text = c.mmm_probability * (1 - c.whole_video_share)
    video_in = cv.box(0.3, 0.3, 4.6, 0.9, f"video: up to {c.max_video_len} clip features\n"
                      f"(frozen S3D, {c.feature_dim}-d, one per second)", "frozen")
    mlp = cv.box(0.3, 1.55, 4.6, 0.75, f"video MLP  {c.feature_dim} → {c.hidden_size}", "video")
    text_in = cv.box(11.1, 0.3, 4.6, 0.9, f"caption (WordPiece, {c.vocab_size:,} words)\n"
                     f"≤ {c.max_len} tokens with the video", "text")
    mask = cv.box(5.3, 0.3, 5.4, 2.0,
                  "masked modality model (per example)\n"
                  f"{_pct(whole_video)}: the whole video masked\n"
                  f"{_pct(whole_text)}: the whole caption masked\n"
                  f"{_pct(1 - c.mmm_probability)}: {_pct(c.mfm_probability)} of video tokens"
                  f" + {_pct(c.mlm_probability)} of words", "mask")
    strip = cv.tokens(2.55, 2.72, "s|vvmvvmvv|s|ttmtttmt|s", size=0.32, gap=0.06)
    encoder = cv.box(0.3, 3.45, 15.4, 1.0,
                     f"one BERT encoder · {c.num_layers} layers · width {c.hidden_size} · "
                     f"{c.num_heads} heads\n"
                     "[CLS] video tokens [SEP] words [SEP]: every token attends to every token",
                     "model", weight="bold")
    head = cv.box(4.3, 4.85, 7.4, 0.7, "shared head  e = W h + b  (BERT's MLM transform)",
                  "head")
    masked_token = c.loss == "masked_token"
    video_desc = ("a masked video token must pick its original token among\n"
                  "the batch's unmasked video tokens and all words" if masked_token else
                  "MFM: a masked video token must pick its original\n"
                  "among the batch's video tokens (NCE)")
    text_desc = ("a masked word must pick itself among all words\n"
                 "and the batch's unmasked video tokens" if masked_token else
                 "MLM: a masked word must pick itself among all words")
    lv, lt = losses("vlm", c)
    loss_v = cv.loss(0.3, 5.95, 7.5, 1.0, lv, video_desc)
    loss_t = cv.loss(8.2, 5.95, 7.5, 1.0, lt, text_desc)
    cv.arrow(video_in.anchor("top"), mlp.anchor("bottom"))
    cv.arrow(mlp.anchor("top"), (strip.x + 0.6, strip.y))
    cv.arrow(text_in.anchor("top"), (strip.x + strip.w - 1.0, strip.y))
    cv.arrow(mask.anchor("top"), (8.0, strip.y), label="masks", label_at=(8.15, 2.5))
    cv.arrow((8.0, strip.y + strip.h), encoder.anchor("bottom"))
    cv.arrow(encoder.anchor("top"), head.anchor("bottom"))
    cv.arrow(head.anchor("top", -2.0), loss_v.anchor("bottom", 1.0),
             label="masked video positions", label_at=(2.0, 5.72))
    cv.arrow(head.anchor("top", 2.0), loss_t.anchor("bottom", -1.0),
             label="masked word positions", label_at=(11.4, 5.72))
    cv.legend([("s", "[CLS] / [SEP]"), ("v", "video token"), ("t", "word"),
               ("m", "masked")])
    return cv.fig


def _simvtp(c: Any, variant: str) -> Figure:
    cv = Canvas(f"SimVTP ({variant}): single stream, a masked autoencoder over tubes and words")
    t, h, w = c.grid
    visible = c.num_visible_video_tokens
    video_in = cv.box(0.3, 0.3, 4.8, 0.9, f"video: {c.num_frames} frames × {c.image_size}² px\n"
                      f"→ {t}×{h}×{w} = {t * h * w:,} tubes of "
                      f"{c.tubelet_size}×{c.patch_size}×{c.patch_size} px", "video")
    vmask = cv.box(0.3, 1.55, 4.8, 0.9, f"tube masking: hide {_pct(c.video_mask_ratio)}\n"
                   f"only {visible} visible tubes enter the encoder", "mask")
    text_in = cv.box(10.9, 0.3, 4.8, 0.9, f"caption: WordPiece tokens\n"
                     f"BERT-base embeddings, {c.vocab_size:,} words", "text")
    kept = "kept in the sequence" if c.text_mask_token else "dropped from the encoder"
    tmask = cv.box(10.9, 1.55, 4.8, 0.9, f"text masking: {_pct(c.text_mask_ratio)} of the "
                   f"words\n→ [MASK] ({kept})", "mask")
    strip = cv.tokens(5.6, 1.88, "vmmmmvmmm|ttmmtmmt", size=0.24, gap=0.05)
    encoder = cv.box(0.3, 2.85, 15.4, 1.0,
                     f"one shared encoder (ViT, VideoMAE layout) · {c.depth} blocks · width "
                     f"{c.embed_dim} · {c.num_heads} heads\n"
                     "joint pass: visible tubes + masked caption · unimodal passes: "
                     "video alone, caption alone", "model", weight="bold")
    vdec = cv.box(0.3, 4.25, 4.8, 0.85, f"video decoder · {c.video_decoder_depth} blocks · "
                  f"width {c.decoder_dim}\n[MASK] tokens at the hidden tubes", "head")
    text_head = ("text head: linear word classifier" if c.text_decoder_depth == 0 else
                 f"text decoder · {c.text_decoder_depth} blocks")
    tdec = cv.box(5.6, 4.25, 4.8, 0.85, f"{text_head}\nat the masked words", "head")
    pooled = cv.box(10.9, 4.25, 4.8, 0.85, "mean-pooled features\n(video alone · caption "
                    "alone · joint pass)", "head")
    descriptions = {
        "loss_video": "MSM, video: MSE of the hidden\ntubes' " + (
            "normalised pixels" if c.normalize_target else "pixels"),
        "loss_text": "MSM, text: cross-entropy\nof the masked words",
        "loss_vtc": "contrastive: video alone\nvs caption alone",
        "loss_vtm": "match: the joint pass vs\na pair with a random video",
    }
    keys = losses("simvtp", c)
    boxes = cv.loss_row(0.3, 15.7, 5.55, 1.05, keys, descriptions)
    cv.arrow(video_in.anchor("top"), vmask.anchor("bottom"))
    cv.arrow(text_in.anchor("top"), tmask.anchor("bottom"))
    cv.arrow(vmask.anchor("right"), (strip.x, strip.y + strip.h / 2))
    cv.arrow(tmask.anchor("left"), (strip.x + strip.w, strip.y + strip.h / 2))
    cv.arrow((strip.x + strip.w / 2, strip.y + strip.h), (strip.x + strip.w / 2, encoder.y))
    cv.arrow(encoder.anchor("top", -5.3), vdec.anchor("bottom"), label="visible tubes",
             label_at=(2.8, 4.05))
    cv.arrow(encoder.anchor("top"), tdec.anchor("bottom"), label="word tokens",
             label_at=(8.1, 4.05))
    cv.arrow(encoder.anchor("top", 5.3), pooled.anchor("bottom"))
    targets = {"loss_video": vdec, "loss_text": tdec, "loss_vtc": pooled, "loss_vtm": pooled}
    for key, box in boxes.items():
        src = targets[key]
        start = src.anchor("top", -1.0 if key == "loss_vtc" else (1.0 if key == "loss_vtm"
                                                                   else 0.0))
        cv.arrow(start, box.anchor("bottom"))
    cv.legend([("v", "visible tube"), ("t", "word"), ("m", "masked")])
    return cv.fig


def _umt(c: Any, variant: str) -> Figure:
    cv = Canvas(f"UMT ({variant}): a frozen image teacher, a video student "
                "that sees only the unmasked tokens")
    t, h, w = c.grid
    n = t * h * w
    keep = t * (h * w - int(c.mask_ratio * h * w))  # vlbook.masking: per frame
    cv.region(8.75, 0.15, 7.1, 6.95, "stage 2 adds (stage 1 is on the left): uta is kept")
    video_in = cv.box(0.3, 0.3, 4.0, 0.9, f"video: {c.num_frames} frames × {c.image_size}² px"
                      f"\n{t}×{h}×{w} = {n:,} patch tokens", "video")
    teacher = cv.box(0.3, 1.55, 4.0, 1.35, f"frozen CLIP ViT teacher\nsees every token, frame "
                     f"by frame\n{c.teacher_dim}-d features + [CLS] attention", "frozen")
    mask_text = {
        "semantic": f"semantic masking: keep {_pct(1 - c.mask_ratio)}\nof each frame's tokens, "
                    "drawn by\nthe teacher's [CLS] attention",
        "tube": f"tube masking: hide\n{_pct(c.mask_ratio)} of the tokens\n(the same in "
                "every frame)",
        "random": f"random masking: hide\n{_pct(c.mask_ratio)} of the tokens",
    }[c.mask_type]
    smask = cv.box(4.75, 1.55, 3.7, 1.35, mask_text, "mask")
    student = cv.box(4.75, 3.7, 3.7, 1.2, f"student ViT · {c.depth} blocks\nwidth "
                     f"{c.embed_dim} · {c.num_heads} heads\nreads only the {keep} kept "
                     "tokens", "model")
    strip = cv.tokens(5.35, 3.15, "vmmvmmmvmm", size=0.22, gap=0.05)
    descriptions = {
        "uta": f"unmasked token alignment: the last {c.align_layers}\nstudent layers, "
               f"projected to {c.teacher_dim}-d, match the\nteacher's tokens at the kept "
               "positions",
        "masked_recovery": "the decoder recovers the teacher's\ntokens at the masked positions",
        "pixel": "the decoder recovers the pixels\nof the masked tokens",
        "vtc": "contrastive:\npooled video\nvs text [CLS]",
        "vtm": "match: fusion\n[CLS], hard\nnegatives",
        "mlm": f"{_pct(c.mlm_probability)} of the\nwords masked,\nfusion predicts",
    }
    keys = losses("umt", c)
    stage1 = [k for k in keys if k in ("uta", "masked_recovery", "pixel")]
    stage2 = [k for k in keys if k not in stage1]
    loss1 = cv.loss_row(0.3, 8.45, 5.45, 1.25, stage1, descriptions)
    text_in = cv.box(12.3, 0.3, 3.35, 0.9, "caption\n(WordPiece)", "text")
    text_enc = cv.box(12.3, 1.55, 3.35, 1.35, f"text encoder\nBERT · {c.text_layers} layers\n"
                      f"width {c.text_width}", "text")
    fusion = cv.box(11.35, 3.7, 4.3, 1.2, f"fusion · {c.fusion_layers} BERT layers\n"
                    "cross-attention to the\nstudent's video tokens", "model")
    loss2 = cv.loss_row(8.95, 15.65, 5.45, 1.25, stage2, descriptions, gap=0.2)
    cv.arrow(video_in.anchor("top"), teacher.anchor("bottom"))
    cv.arrow(video_in.anchor("right"), smask.anchor("bottom"), rad=0.25)
    cv.arrow(teacher.anchor("right"), smask.anchor("left"))
    cv.arrow(smask.anchor("top"), (smask.anchor("top")[0], strip.y))
    cv.arrow((smask.anchor("top")[0], strip.y + strip.h), student.anchor("bottom"))
    for key, box in loss1.items():
        cv.arrow(student.anchor("top", -0.6), box.anchor("bottom", 1.5))
        if key == "uta":
            cv.arrow(teacher.anchor("top"), box.anchor("bottom", -1.5), label="targets",
                     label_at=(2.05, 4.1))
    cv.arrow(text_in.anchor("top"), text_enc.anchor("bottom"))
    cv.arrow(text_enc.anchor("top", 0.4), fusion.anchor("bottom", 0.75))
    cv.arrow(student.anchor("right"), fusion.anchor("left"), label="video tokens",
             label_at=(9.3, 4.05))
    for key, box in loss2.items():
        if key == "vtc":
            cv.arrow(student.anchor("top", 1.2), box.anchor("bottom", -0.4))
            cv.arrow(text_enc.anchor("left"), box.anchor("bottom", 0.4), rad=-0.2)
        else:
            cv.arrow(fusion.anchor("top", box.anchor("bottom")[0] - fusion.anchor("top")[0]),
                     box.anchor("bottom"))
    cv.legend([("v", "kept token"), ("m", "masked")], y=0.93)
    return cv.fig


def _allinone(c: Any, variant: str) -> Figure:
    from vlbook.models.allinone.modeling import rolling_plan

    cv = Canvas(f"All-in-one ({variant}): single stream, one ViT for video, text and fusion")
    video_in = cv.box(0.3, 0.3, 4.9, 0.9, f"video: {c.num_frames} frames × {c.image_size}² px"
                      f"\n{c.num_patches} patches of {c.patch_size}² px per frame", "video")
    text_in = cv.box(10.8, 0.3, 4.9, 0.9, f"caption: up to {c.max_text_len} tokens\n"
                     f"(vocabulary {c.vocab_size:,})", "text")
    mlm = cv.box(10.8, 1.55, 4.9, 0.9, f"MLM pass: {_pct(c.mlm_probability)} of the words "
                 "masked\n" + ("(whole words)" if c.whole_word_masking else "(word pieces)"),
                 "mask")
    vtm = cv.box(5.6, 0.3, 4.8, 0.9, f"VTM pass: {_pct(c.vtm_negative_fraction)} of the "
                 "captions\npaired with a random other video", "mask")
    frames = min(c.num_frames, 3)
    strip = cv.tokens(0.75, 1.85, "|".join(["stmt|svvv"] * frames), size=0.24, gap=0.05)
    if c.temporal == "rolling":
        moved = rolling_plan(c.num_image_tokens, ratio=c.roll_ratio, layout=c.roll_layout,
                             selection=c.roll_selection).moved
        temporal = (f"temporal token rolling: before every block from block "
                    f"{c.roll_start_layer + 1}, {moved} of each frame's\n{c.num_image_tokens} "
                    "visual tokens move to the neighbouring frames")
    else:
        temporal = {
            "time_average": "no temporal operation: frames processed apart",
            "channel_shift": f"{_pct(c.channel_shift_ratio)} of the patch channels shifted "
                             "in time",
            "flatten": "text and all frames in one sequence",
            "single_frame": "the middle frame only",
        }[c.temporal]
    encoder = cv.box(0.3, 2.75, 15.4, 1.35,
                     f"one ViT for video, text and their fusion · {c.depth} blocks · width "
                     f"{c.embed_dim} · {c.num_heads} heads\none [text; frame] sequence per frame, "
                     f"outputs averaged over the frames\n{temporal}", "model", weight="bold")
    cls = cv.box(1.2, 4.5, 6.0, 0.75, "text [CLS] → pooler → match head", "head")
    words = cv.box(8.8, 4.5, 6.0, 0.75, "word states → MLM head" + (
        " (tied)" if c.tie_mlm_decoder else " (untied)"), "head")
    descriptions = {
        "loss_vtm": "match: does this caption\ndescribe this video?",
        "loss_mlm": "cross-entropy of\nthe masked words",
        "loss_vtc": "contrastive: video pass\nvs text pass",
    }
    keys = losses("allinone", c)
    boxes = cv.loss_row(0.3, 15.7, 5.65, 1.05, keys, descriptions, gap=1.0)
    cv.arrow(video_in.anchor("top"), (video_in.anchor("top")[0], strip.y))
    cv.arrow(text_in.anchor("left"), vtm.anchor("right"))
    cv.arrow(text_in.anchor("top"), mlm.anchor("bottom"))
    cv.arrow(vtm.anchor("top", -0.9), (vtm.anchor("top")[0] - 0.9, strip.y))
    cv.arrow(mlm.anchor("left"), (strip.x + strip.w, strip.y + strip.h / 2))
    centre = strip.x + strip.w / 2
    cv.arrow((centre, strip.y + strip.h), (centre, encoder.y))
    cv.arrow((cls.anchor("top")[0], encoder.y + encoder.h), cls.anchor("bottom"))
    cv.arrow((words.anchor("top")[0], encoder.y + encoder.h), words.anchor("bottom"))
    heads = {"loss_vtm": cls, "loss_mlm": words, "loss_vtc": cls}
    for key, box in boxes.items():
        cv.arrow(heads[key].anchor("top", 1.0 if key == "loss_vtc" else 0.0),
                 box.anchor("bottom"))
    cv.legend([("s", "[CLS]"), ("v", "patch"), ("t", "word"), ("m", "masked")])
    return cv.fig


def _evilm(c: Any, variant: str) -> Figure:
    from vlbook.models.evilm.modeling import TokenizerConfig

    tok = TokenizerConfig()
    cv = Canvas(f"E-ViLM ({variant}): a semantic video tokenizer teaches masked video "
                "modelling")
    t, h, w = c.grid
    video_in = cv.box(0.3, 0.3, 4.3, 0.9, f"video: {c.num_frames} frames × {c.image_size}² px\n"
                      f"{t}×{h}×{w} regions of {c.stride}² px", "video")
    tokenizer = cv.box(0.3, 1.6, 4.3, 1.75, "semantic video tokenizer (frozen)\n"
                       f"{tok.clip_name.split('/')[-1]}, trained first\nto predict the "
                       f"captions' words;\none of {c.num_codes:,} codes per region", "frozen")
    mmask = cv.box(5.0, 0.3, 3.6, 0.9, f"block masking: {_pct(c.mvm_ratio)} of\neach frame's "
                   "regions set to 0", "mask")
    backbone = ("EdgeNeXt-small" if c.video_backbone == "edgenext_small" else
                f"conv net ({len(c.conv_dims)} stages)")
    venc = cv.box(5.0, 1.6, 3.6, 1.75, f"video encoder\n{backbone}, stride {c.stride}\n→ "
                  f"{h}×{w} tokens per frame\nMLP → {c.hidden}", "video")
    text_in = cv.box(11.7, 0.3, 4.0, 0.9, f"caption (vocabulary {c.vocab_size:,})\n"
                     f"MLM: {_pct(c.mlm_probability)} of the words masked", "text")
    tenc = cv.box(11.7, 1.6, 4.0, 1.75, f"text encoder\nBERT · {c.text_layers} layers\n"
                  f"width {c.text_hidden} · {c.text_heads} heads\nMLP → {c.hidden}", "text")
    vtm_pass = cv.box(9.0, 0.3, 2.3, 0.9, f"VTM: {_pct(c.vtm_negative_fraction)} get\na "
                      "random video", "mask")
    decoder = cv.box(5.0, 3.75, 10.7, 1.05,
                     f"multimodal decoder · {c.decoder_depth} blocks · width {c.hidden} · "
                     f"{c.decoder_heads} heads\n[CLS] + word tokens + video tokens, "
                     "one joint pass", "model", weight="bold")
    descriptions = {
        "mvm": "masked video modelling: each\nmasked video token predicts\nthe tokenizer's "
               "code there",
        "mlm": "cross-entropy of the masked\nwords (matched pairs only)",
        "vtm": "match: [CLS] → pooler\n→ 2-way head",
        "vtc": "contrastive: video-only vs\ntext-only decoder passes",
    }
    keys = losses("evilm", c)
    boxes = cv.loss_row(0.3, 15.7, 5.3, 1.25, keys, descriptions)
    cv.arrow(video_in.anchor("top"), tokenizer.anchor("bottom"))
    cv.arrow(video_in.anchor("right"), mmask.anchor("left"))
    cv.arrow(mmask.anchor("top"), venc.anchor("bottom"))
    cv.arrow(text_in.anchor("top"), tenc.anchor("bottom"))
    cv.arrow(vtm_pass.anchor("left"), mmask.anchor("right"), label="", dashed=True)
    cv.arrow(venc.anchor("top"), decoder.anchor("bottom", -3.55))
    cv.arrow(tenc.anchor("top"), decoder.anchor("bottom", 3.35))
    sources = {"mvm": -3.55, "mlm": 2.0, "vtm": -1.5, "vtc": 4.0}
    for key, box in boxes.items():
        shift = sources[key]
        if key == "mvm":
            cv.arrow(decoder.anchor("top", -4.35), box.anchor("bottom", 0.9),
                     label="masked video tokens", label_at=(6.1, 5.02))
            cv.arrow(tokenizer.anchor("top"), box.anchor("bottom", -1.0),
                     label="targets: codes of\nthe unmasked frames", label_at=(2.3, 4.3))
        else:
            start = decoder.anchor("top", shift)
            cv.arrow(start, (start[0], box.y))
    return cv.fig


DRAW: dict[str, Callable[[Any, str], Figure]] = {
    "vlm": _vlm, "simvtp": _simvtp, "umt": _umt, "allinone": _allinone, "evilm": _evilm,
}


def draw_architecture(paper: str, config: Any = None, variant: str | None = None,
                      path: str | Path | None = None) -> Figure:
    """The architecture diagram of ``paper`` (``"vlm"``, ``"simvtp"``, ``"umt"``,
    ``"allinone"``, ``"evilm"``) from ``config`` (default: the paper-size variant's config,
    built on the meta device); saved as PNG to ``path`` when given."""
    if paper not in DRAW:
        raise ValueError(f"no diagram for {paper!r}; known: {PAPERS}")
    if config is None:
        variant = variant or paper_variant(paper)
        config = paper_config(paper)
    fig = DRAW[paper](config, variant or type(config).__name__)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white")
    return fig


class LayoutError(AssertionError):
    """A diagram has overlapping or overflowing labels (see :func:`check_layout`)."""


def show_architecture(paper: str, config: Any = None, variant: str | None = None,
                      dpi: int = 130) -> Any:
    """The diagram of :func:`draw_architecture` as an ``IPython.display.Image`` (PNG), for a
    chapter notebook; raises :class:`LayoutError` if :func:`check_layout` finds a problem, so
    that the book build fails instead of printing an unreadable figure."""
    import io

    from IPython.display import Image

    fig = draw_architecture(paper, config, variant)
    problems = check_layout(fig)
    if problems:
        raise LayoutError(f"{paper} diagram: " + "; ".join(problems))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return Image(data=buffer.getvalue(), format="png")


def draw_all(folder: str | Path) -> dict[str, Path]:
    """Each paper's diagram as ``<folder>/architecture_<paper>.png``."""
    folder = Path(folder)
    out = {}
    for paper in PAPERS:
        out[paper] = folder / f"architecture_{paper}.png"
        draw_architecture(paper, path=out[paper])
    return out


def save_teaser(path: str | Path) -> Path:
    """The front page's teaser: the five diagrams in a 3 + 2 grid, one PNG."""
    import numpy as np

    path = Path(path)
    images = []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for paper in PAPERS:
        canvas = FigureCanvasAgg(draw_architecture(paper))
        canvas.draw()
        images.append(np.asarray(canvas.buffer_rgba())[..., :3])
    aspect = images[0].shape[1] / images[0].shape[0]
    teaser = Figure(figsize=(18, 2 * 6 / aspect))  # two rows of panels 6 inches wide
    for i, image in enumerate(images):
        ax = teaser.add_axes(((i % 3) / 3 + (1 / 6 if i >= 3 else 0) + 0.003,
                              0.5 - 0.5 * (i // 3) + 0.003, 1 / 3 - 0.006, 0.494))
        ax.imshow(image)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    teaser.savefig(path, dpi=110, facecolor="white")
    return path


# --------------------------------------------------------------------------------------------
# readability check
# --------------------------------------------------------------------------------------------


def check_layout(fig: Figure, margin: float = 1.0) -> list[str]:
    """Problems that make ``fig`` hard to read: visible texts whose boxes (in pixels, Agg
    renderer) overlap, labels that run out of the box they belong to, boxes that overlap,
    texts outside the figure. An empty list means none was found."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    problems = []
    fig_box = fig.bbox
    for t, b in boxes:
        if b.x0 < fig_box.x0 - margin or b.x1 > fig_box.x1 + margin or \
                b.y0 < fig_box.y0 - margin or b.y1 > fig_box.y1 + margin:
            problems.append(f"outside the figure: {t.get_text()!r}")
    for i, (t1, b1) in enumerate(boxes):
        for t2, b2 in boxes[i + 1:]:
            overlap_x = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
            overlap_y = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
            if overlap_x > margin and overlap_y > margin:
                problems.append(f"overlap: {t1.get_text()!r} and {t2.get_text()!r}")
    patches = [p.get_window_extent(renderer) for p in getattr(fig, "_vlbook_boxes", [])]
    for i, p1 in enumerate(patches):
        for p2 in patches[i + 1:]:
            if min(p1.x1, p2.x1) - max(p1.x0, p2.x0) > margin and \
                    min(p1.y1, p2.y1) - max(p1.y0, p2.y0) > margin:
                problems.append(f"boxes overlap at ({p1.x0:.0f}, {p1.y0:.0f}) px")
    for text, patch in getattr(fig, "_vlbook_owners", []):
        b = text.get_window_extent(renderer)
        p = patch.get_window_extent(renderer)
        if b.x0 < p.x0 + 2 or b.x1 > p.x1 - 2 or b.y0 < p.y0 + 1 or b.y1 > p.y1 - 1:
            problems.append(f"runs out of its box: {text.get_text()!r}")
    return problems
