"""Captioning scores (BLEU-3/4, METEOR, ROUGE-L, CIDEr) through pycocoevalcap.

VLM reports video captioning on YouCook2 with nlg-eval (BLEU-1..4, METEOR, ROUGE-L, CIDEr, VLM
Table 6); nlg-eval and the COCO caption toolkit share these scorers. Two differences from the
toolkit's usual pipeline, both for portability:

* Tokenisation is :func:`tokenize_caption`, a small Python tokenizer that mimics what the Stanford
  PTB tokenizer does to captions (lower-case, split clitics, drop punctuation), instead of the
  Java tokenizer.
* METEOR runs ``meteor-1.5.jar`` and therefore needs Java. When Java is missing or the jar fails,
  METEOR is reported in :attr:`CaptionScores.unavailable` with the reason, and the other scores
  are still computed (``strict=True`` raises instead).

Scores are multiplied by 100 by default (``units="percent"``), as captioning tables print them
(CIDEr 0.52 is written 52).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CAPTION_METRICS", "CaptionScores", "caption_metrics", "java_available",
           "tokenize_caption"]

CAPTION_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR",
                                    "ROUGE-L", "CIDEr")
_DEFAULT = ("BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_CLITICS = re.compile(r"(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'[a-z]+|[a-z0-9]+(?:[-.,][a-z0-9]+)*")


def tokenize_caption(text: str) -> str:
    """Lower-case, split clitics (``don't`` -> ``do n't``), drop punctuation; space-joined.

    The result matches the COCO toolkit's PTB tokenizer on ordinary captions: punctuation tokens
    are removed, hyphenated words and decimal numbers stay one token.
    """
    lowered = _CLITICS.sub(r" \1", text.lower())
    return " ".join(_TOKEN.findall(lowered))


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH`` (needed by METEOR)."""
    return shutil.which("java") is not None


@dataclass(frozen=True)
class CaptionScores:
    """Corpus-level caption scores and the metrics that could not be computed (with why)."""

    scores: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    num_captions: int = 0
    units: str = "percent"
    #: per-caption values of the metrics that are means over captions (ROUGE-L, CIDEr), for
    #: standard errors; BLEU and METEOR are corpus-level and have none
    per_item: dict[str, list[float]] = field(default_factory=dict)

    def standard_error(self, metric: str) -> float | None:
        """Standard error of a per-caption-mean metric (None for corpus-level ones)."""
        values = self.per_item.get(metric)
        if not values or len(values) < 2:
            return None
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return (variance / len(values)) ** 0.5

    def __getitem__(self, metric: str) -> float:
        if metric in self.unavailable:
            raise KeyError(f"{metric} is unavailable: {self.unavailable[metric]}")
        return self.scores[metric]

    def card(self) -> str:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in self.scores.items())
        missing = "; ".join(f"{k} unavailable ({why})" for k, why in self.unavailable.items())
        return f"{shown}{'; ' + missing if missing else ''} ({self.num_captions} captions)"


def _as_dicts(predictions: Mapping | Sequence[str],
              references: Mapping | Sequence[Sequence[str]]) -> tuple[dict, dict]:
    if isinstance(predictions, Mapping):
        if not isinstance(references, Mapping):
            raise ValueError("predictions is a mapping, so references must be one too")
        if set(predictions) != set(references):
            missing = set(predictions) ^ set(references)
            raise ValueError(f"predictions and references have different keys, e.g. "
                             f"{sorted(map(str, missing))[:5]}")
        keys = list(predictions)
        preds = {k: predictions[k] for k in keys}
        refs = {k: references[k] for k in keys}
    else:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} reference "
                             "lists")
        preds = dict(enumerate(predictions))
        refs = dict(enumerate(references))
    if not preds:
        raise ValueError("caption_metrics needs at least one caption")
    for k, r in refs.items():
        if isinstance(r, str) or len(r) == 0:
            raise ValueError(f"references[{k!r}] must be a non-empty list of strings")
    for k, p in preds.items():
        if not isinstance(p, str):
            raise ValueError(f"predictions[{k!r}] must be a string, got {type(p).__name__}")
    return preds, refs


def caption_metrics(predictions: Mapping | Sequence[str],
                    references: Mapping | Sequence[Sequence[str]],
                    metrics: Sequence[str] = _DEFAULT, tokenize: bool = True,
                    units: str = "percent", strict: bool = False) -> CaptionScores:
    """Corpus BLEU-n (Papineni et al. 2002), METEOR 1.5 (Denkowski & Lavie 2014), ROUGE-L
    (Lin 2004, beta 1.2) and CIDEr-D (Vedantam et al. 2015) of generated captions.

    ``predictions``: one caption per video (list, or mapping id -> caption); ``references``: the
    matching lists of reference captions. BLEU is the corpus score with the closest reference
    length for the brevity penalty; CIDEr-D's document frequencies come from these references,
    so CIDEr depends on the whole evaluated set.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; known: {CAPTION_METRICS}")
    if units not in ("percent", "fraction"):
        raise ValueError(f"units={units!r}; expected 'percent' or 'fraction'")
    preds, refs = _as_dicts(predictions, references)
    tok = tokenize_caption if tokenize else (lambda s: s)
    res = {k: [tok(v)] for k, v in preds.items()}
    gts = {k: [tok(r) for r in rs] for k, rs in refs.items()}
    scale = 100.0 if units == "percent" else 1.0
    scores: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    per_item: dict[str, list[float]] = {}

    bleu_orders = [int(m[-1]) for m in metrics if m.startswith("BLEU")]
    if bleu_orders:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n in bleu_orders:
            scores[f"BLEU-{n}"] = bleu[n - 1] * scale
    if "METEOR" in metrics:
        value, reason = _meteor(gts, res)
        if value is None:
            if strict:
                raise RuntimeError(f"METEOR unavailable: {reason}")
            unavailable["METEOR"] = reason
        else:
            scores["METEOR"] = value * scale
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        mean, values = Rouge().compute_score(gts, res)
        scores["ROUGE-L"] = float(mean) * scale
        per_item["ROUGE-L"] = [float(v) * scale for v in values]
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        mean, values = Cider().compute_score(gts, res)
        scores["CIDEr"] = float(mean) * scale
        per_item["CIDEr"] = [float(v) * scale for v in values]
    ordered = {m: scores[m] for m in metrics if m in scores}
    return CaptionScores(ordered, unavailable, len(preds), units, per_item)


def _meteor(gts: dict, res: dict) -> tuple[float | None, str]:
    """METEOR through the jar, or ``(None, reason)`` when it cannot run."""
    if not java_available():
        return None, "Java not found on PATH; METEOR runs meteor-1.5.jar (install a JRE)"
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError as err:
        return None, f"METEOR jar could not start: {err}"
    try:
        value, _ = scorer.compute_score(gts, res)
        return float(value), ""
    except Exception as err:  # the jar died or answered garbage
        return None, f"METEOR jar failed: {type(err).__name__}: {err}"
    finally:
        # compute_score leaves its lock held when it fails; the scorer's __del__ would then
        # wait on it forever, so release it and stop the Java process here.
        if scorer.lock.locked():
            scorer.lock.release()
        scorer.meteor_p.kill()
