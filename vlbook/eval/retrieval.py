"""Text-video retrieval metrics with an explicit evaluation protocol.

The five papers report R@1/5/10 and median rank, but their evaluation code differs in ways that
move the numbers (the book's *Paper vs code* page, ``book/paper_vs_code.md``). vlbook makes every
such choice a field of :class:`RetrievalProtocol`; every :class:`RetrievalResult` carries its
protocol and prints it as a one-line card, and :func:`retrieval_table` refuses to put results of
different protocols in one table. :data:`OFFICIAL_PROTOCOLS` names the three repositories'
conventions, each reproducing its code's numbers exactly (``official_protocol(name)``):

* ``"frozen-in-time"`` (Frozen-in-Time ``t2v_metrics`` / ``v2t_metrics``, used by SimVTP and
  All-in-one): percentages; text-to-video ties broken optimistically, video-to-text ties
  averaged over the tied positions (each caption's averaged rank, best caption kept).
* ``"mmpt"`` (fairseq MMPT ``RetrievalMetric``, VLM): fractions; ties are not broken but
  *expanded*: every gallery position whose score equals the positive's counts as one entry, so
  a query tied with ``e`` items contributes ``e`` ranks ``g+1 .. g+e`` and the denominator of
  R@k is the number of such entries (``e`` summed over queries), not the number of queries.
  With no ties this is the ordinary definition.
* ``"umt"`` (UMT ``itm_eval``, from BLIP/ALBEF): percentages; ranks are positions in
  ``numpy.argsort(scores)[::-1]``, so ties fall in whatever order numpy's default (unstable)
  sort leaves them — which depends on numpy's version, the CPU's SIMD sort and the dtype.
  vlbook calls that same function on the scores' own dtype, so on one machine it gives the
  official code's numbers; the top 128 are re-scored by the matching head when a scorer is
  given (``rerank_top_k=128``).

Definitions (``sim`` is ``(num_texts, num_videos)``; ``text_to_video[i]`` is the video of text
``i``; several texts may share a video):

* text-to-video: each text is a query over all videos; its rank is the position of its video.
* video-to-text: each video is a query over all texts; its rank is the best rank among its
  captions (Frozen-in-Time / CLIP4Clip convention).
* tie policy: with ``g`` items scoring strictly higher than the positive and ``e`` items (the
  positive included) scoring equal, ``optimistic`` = ``g + 1``, ``pessimistic`` = ``g + e``,
  ``average`` = their mean; ``argsort`` = the position in ``numpy.argsort(scores)[::-1]``;
  ``expand`` = the ``e`` ranks ``g+1 .. g+e``, each an entry of the metric (MMPT).
* R@k = share of queries with rank <= k; median rank (``numpy.median``, so the mean of the two
  middle ranks for an even count) and mean rank are 1-based.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

__all__ = [
    "OFFICIAL_PROTOCOLS",
    "RetrievalProtocol",
    "RetrievalResult",
    "dual_softmax",
    "official_protocol",
    "protocol_comparison",
    "rank_positives",
    "rerank_top_k",
    "retrieval_metrics",
    "retrieval_metrics_from_embeddings",
    "retrieval_table",
]

TiePolicy = Literal["optimistic", "pessimistic", "average", "argsort", "expand"]
Units = Literal["percent", "fraction"]
TIE_POLICIES: tuple[str, ...] = ("optimistic", "pessimistic", "average", "argsort", "expand")
CAPTION_POLICIES: tuple[str, ...] = ("all", "first")
UNITS: tuple[str, ...] = ("percent", "fraction")
#: ``score_fn(text_indices, video_indices) -> scores`` of a matching head for index pairs.
PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RetrievalProtocol:
    """How a retrieval number was obtained; printed beside it as :meth:`card`.

    Attributes:
        split: evaluation split (``"test"``, ``"val"``, ``"1k-A"`` ...).
        captions_per_video: ``"all"`` every caption is a query (MSR-VTT full, DiDeMo paragraphs
            count once anyway) or ``"first"`` only the first caption of each video is kept.
        dual_softmax: re-weight similarities with :func:`dual_softmax` before ranking (an
            inference-time prior that uses the whole test gallery; none of the five papers
            uses it by default, and it must be declared when used).
        dual_softmax_temperature: its temperature.
        rerank_top_k: ``None`` (off) or k: the top k candidates of each query are re-scored by a
            matching head and placed before the rest (UMT ``itm_eval``: k = 128, head score
            alone).
        tie_policy: ``"optimistic"``, ``"pessimistic"``, ``"average"``, ``"argsort"`` or
            ``"expand"`` (module docstring), for text-to-video and, unless
            ``v2t_tie_policy`` is set, video-to-text.
        dataset: free-form dataset name shown in the card.
        v2t_tie_policy: the video-to-text tie policy when it differs (Frozen-in-Time).
        name: the repository convention this protocol reproduces (:data:`OFFICIAL_PROTOCOLS`).
    """

    split: str = "test"
    captions_per_video: Literal["all", "first"] = "all"
    dual_softmax: bool = False
    dual_softmax_temperature: float = 0.01
    rerank_top_k: int | None = None
    tie_policy: TiePolicy = "optimistic"
    dataset: str = ""
    v2t_tie_policy: TiePolicy | None = None
    name: str = ""

    @property
    def ties(self) -> tuple[str, str]:
        """The tie policies of text-to-video and video-to-text."""
        return self.tie_policy, self.v2t_tie_policy or self.tie_policy

    def __post_init__(self) -> None:
        if self.captions_per_video not in CAPTION_POLICIES:
            raise ValueError(f"RetrievalProtocol.captions_per_video={self.captions_per_video!r};"
                             f" expected one of {CAPTION_POLICIES}")
        for attr in ("tie_policy", "v2t_tie_policy"):
            value = getattr(self, attr)
            if value is not None and value not in TIE_POLICIES:
                raise ValueError(f"RetrievalProtocol.{attr}={value!r}; expected one of "
                                 f"{TIE_POLICIES}")
        if self.rerank_top_k is not None and self.rerank_top_k < 1:
            raise ValueError(f"RetrievalProtocol.rerank_top_k={self.rerank_top_k}; expected None "
                             "(off) or a positive integer")
        if self.dual_softmax_temperature <= 0:
            raise ValueError("RetrievalProtocol.dual_softmax_temperature must be > 0")

    def card(self) -> str:
        """One line naming every choice, e.g. ``split=test | captions=all | ... | ties=...``."""
        parts = [f"dataset={self.dataset}"] if self.dataset else []
        parts += [f"convention={self.name}"] if self.name else []
        t2v, v2t = self.ties
        ties = t2v if t2v == v2t else f"{t2v} t2v / {v2t} v2t"
        parts += [
            f"split={self.split}",
            f"captions={self.captions_per_video}",
            "dual-softmax=" + (f"on(T={self.dual_softmax_temperature:g})"
                               if self.dual_softmax else "off"),
            "re-rank=" + (f"top-{self.rerank_top_k}" if self.rerank_top_k else "off"),
            f"ties={ties}",
        ]
        return " | ".join(parts)


@dataclass(frozen=True)
class RetrievalResult:
    """Metrics of both directions with the protocol and units that produced them."""

    t2v: dict[str, float]
    v2t: dict[str, float]
    protocol: RetrievalProtocol
    units: Units
    num_texts: int
    num_videos: int
    t2v_ranks: torch.Tensor = field(repr=False, compare=False)
    v2t_ranks: torch.Tensor = field(repr=False, compare=False)

    def card(self) -> str:
        """The protocol card plus the units and gallery sizes."""
        unit = "%" if self.units == "percent" else "fraction"
        return (f"{self.protocol.card()} | R@k in {unit} | {self.num_texts} texts x "
                f"{self.num_videos} videos")

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"t2v/R@1": ..., "v2t/MdR": ...}``."""
        out = {f"t2v/{k}": v for k, v in self.t2v.items()}
        out.update({f"v2t/{k}": v for k, v in self.v2t.items()})
        return out

    def __str__(self) -> str:
        names = list(self.t2v)
        lines = ["| direction | " + " | ".join(names) + " |",
                 "|---" * (len(names) + 1) + "|"]
        for direction, metrics in (("T2V", self.t2v), ("V2T", self.v2t)):
            lines.append(f"| {direction} | " + " | ".join(f"{metrics[n]:.2f}" for n in names)
                         + " |")
        lines.append(f"protocol: {self.card()}")
        return "\n".join(lines)


def dual_softmax(sim: torch.Tensor, temperature: float = 0.01, dim: int = 0) -> torch.Tensor:
    """Dual-softmax re-weighting ``sim * softmax(sim / temperature, dim)`` (CAMoE, Cheng et al.
    2021, Eq. 7 "DSL", used at inference).

    For text-to-video ranking (rows = texts) the prior is normalised over texts (``dim=0``): a
    video that is the best match of many texts is down-weighted for the others. It looks at the
    whole test gallery, so results using it are reported under a protocol that says so.
    """
    if sim.dim() != 2:
        raise ValueError(f"dual_softmax expects a 2-D similarity matrix, got {tuple(sim.shape)}")
    return sim * torch.softmax(sim / temperature, dim=dim)


def _check_inputs(sim: torch.Tensor, text_to_video: torch.Tensor) -> torch.Tensor:
    if sim.dim() != 2:
        raise ValueError(f"sim must be (num_texts, num_videos), got shape {tuple(sim.shape)}")
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN")
    return _check_text_to_video(sim.shape, text_to_video)


def _check_text_to_video(shape: tuple[int, ...], text_to_video: torch.Tensor) -> torch.Tensor:
    text_to_video = torch.as_tensor(text_to_video)
    if text_to_video.dim() != 1 or text_to_video.shape[0] != shape[0]:
        raise ValueError(f"text_to_video must be ({shape[0]},) (one video index per text "
                         f"row of sim), got shape {tuple(text_to_video.shape)}")
    if text_to_video.dtype.is_floating_point:
        raise ValueError("text_to_video must hold integer video indices")
    if len(text_to_video) and (text_to_video.min() < 0 or text_to_video.max() >= shape[1]):
        raise ValueError(f"text_to_video values must be in [0, {shape[1]}) (the columns of "
                         f"sim); got range [{int(text_to_video.min())}, "
                         f"{int(text_to_video.max())}]")
    return text_to_video.long()


def rank_positives(scores: torch.Tensor, positives: torch.Tensor, tie_policy: TiePolicy,
                   tier: torch.Tensor | None = None, chunk_size: int = 1024) -> torch.Tensor:
    """1-based rank of the best positive of each query row.

    ``scores`` and boolean ``positives`` are ``(num_queries, gallery)``; every row needs a
    positive. ``tier`` (optional boolean, same shape) puts ``True`` items before all ``False``
    items whatever their scores (the re-ranked top k). Ties follow ``tie_policy``.
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy={tie_policy!r}; expected one of {TIE_POLICIES}")
    if not bool(positives.any(1).all()):
        raise ValueError("every query needs at least one positive in the gallery")
    if tie_policy == "argsort":
        return _argsort_ranks(scores, positives, tier)
    out = []
    for start in range(0, scores.shape[0], chunk_size):
        s = scores[start:start + chunk_size]
        p = positives[start:start + chunk_size]
        t = (tier[start:start + chunk_size] if tier is not None
             else torch.zeros_like(p))
        best_tier = (t & p).any(1, keepdim=True)
        in_best_tier = p & (t == best_tier)
        best = torch.where(in_best_tier, s, torch.full_like(s, -math.inf)).amax(1, keepdim=True)
        same_tier = t == best_tier
        better = (t & ~best_tier) | (same_tier & (s > best))
        equal = same_tier & (s == best)
        greater = better.sum(1).double()
        ties = equal.sum(1).double()
        if tie_policy == "expand":  # one entry per tied position: g+1 .. g+e (MMPT)
            counts = ties.long()
            first = torch.repeat_interleave(greater, counts)
            offset = torch.arange(int(counts.sum()), dtype=torch.float64) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts).double()
            out.append(first + 1 + offset)
            continue
        if tie_policy == "optimistic":
            ranks = greater + 1
        elif tie_policy == "pessimistic":
            ranks = greater + ties
        else:
            ranks = greater + (1 + ties) / 2
        out.append(ranks)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _argsort_ranks(scores: torch.Tensor, positives: torch.Tensor,
                   tier: torch.Tensor | None = None) -> torch.Tensor:
    """1-based position of the first positive in ``numpy.argsort(row)[::-1]`` (UMT, BLIP and
    ALBEF ``itm_eval``), numpy's own sort deciding the order of ties; items outside the
    re-ranked ``tier`` score -inf (UMT fills them with -100)."""
    s = scores if scores.is_floating_point() else scores.double()  # the caller's dtype
    if tier is not None:
        s = torch.where(tier, s, torch.full_like(s, -math.inf))
    order = np.argsort(s.numpy(), axis=1)[:, ::-1]
    hits = np.take_along_axis(positives.numpy(), order, axis=1)
    return torch.from_numpy(hits.argmax(1).astype(np.float64) + 1)


def rerank_top_k(scores: torch.Tensor, k: int, score_fn: PairScorer,
                 queries_are_texts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-score each query's top ``k`` with a matching head (UMT ``itm_eval``, k = 128).

    Returns ``(new_scores, tier)``: inside the top k the score is ``score_fn``'s, outside it is
    unchanged, and ``tier`` marks the top k so :func:`rank_positives` ranks them first.
    ``score_fn(text_indices, video_indices)`` gets 1-D index tensors of equal length.
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    rows = torch.arange(scores.shape[0])[:, None].expand_as(top)
    texts, videos = (rows, top) if queries_are_texts else (top, rows)
    head = torch.as_tensor(score_fn(texts.reshape(-1), videos.reshape(-1)))
    if head.shape != (texts.numel(),):
        raise ValueError(f"rerank score_fn must return ({texts.numel()},) scores, one per pair; "
                         f"got {tuple(head.shape)}")
    new = scores.clone()
    new[rows, top] = head.to(new.dtype).reshape(top.shape)
    tier = torch.zeros_like(scores, dtype=torch.bool)
    tier[rows, top] = True
    return new, tier


def _summarise(ranks: torch.Tensor, ks: tuple[int, ...], units: Units) -> dict[str, float]:
    scale = 100.0 if units == "percent" else 1.0
    r = ranks.double()
    metrics = {f"R@{k}": float((r <= k).double().mean()) * scale for k in ks}
    metrics["MdR"] = float(np.median(r.numpy()))
    metrics["MnR"] = float(r.mean())
    return metrics


def _select_captions(text_to_video: torch.Tensor, policy: str) -> torch.Tensor:
    if policy == "all":
        return torch.arange(len(text_to_video))
    seen: set[int] = set()
    rows = []
    for i, v in enumerate(text_to_video.tolist()):
        if v not in seen:
            seen.add(v)
            rows.append(i)
    return torch.tensor(rows, dtype=torch.long)


def _videos_with_captions(text_to_video: torch.Tensor, num_videos: int) -> torch.Tensor:
    has = torch.zeros(num_videos, dtype=torch.bool)
    has[text_to_video] = True
    if not bool(has.all()):
        warnings.warn(f"{int((~has).sum())} of {num_videos} videos have no caption; they are "
                      "left out of the video-to-text queries (still in the text-to-video "
                      "gallery)", stacklevel=3)
    return has.nonzero().squeeze(1)


def retrieval_metrics(sim: torch.Tensor, text_to_video: torch.Tensor,
                      protocol: RetrievalProtocol | None = None, *, units: Units = "percent",
                      rerank_fn: PairScorer | None = None,
                      ks: tuple[int, ...] = (1, 5, 10)) -> RetrievalResult:
    """R@k, median and mean rank in both directions from a similarity matrix.

    ``sim`` ``(num_texts, num_videos)``, higher = more similar; ``text_to_video`` ``(num_texts,)``.
    The protocol's steps are applied here: caption selection, dual softmax, then re-ranking of
    the top k by ``rerank_fn`` (required when ``protocol.rerank_top_k`` is set).
    """
    protocol = protocol or RetrievalProtocol()
    if units not in UNITS:
        raise ValueError(f"units={units!r}; expected one of {UNITS}")
    sim = torch.as_tensor(sim).detach().cpu()
    text_to_video = _check_inputs(sim, text_to_video)
    rows = _select_captions(text_to_video, protocol.captions_per_video)
    text_ids = rows
    sim, text_to_video = sim[rows], text_to_video[rows]
    if not sim.is_floating_point():
        sim = sim.double()
    num_texts, num_videos = sim.shape

    t2v_scores, v2t_scores = sim, sim.t()
    if protocol.dual_softmax:
        t2v_scores = dual_softmax(sim, protocol.dual_softmax_temperature, dim=0)
        v2t_scores = dual_softmax(sim, protocol.dual_softmax_temperature, dim=1).t()
    t2v_tier = v2t_tier = None
    if protocol.rerank_top_k:
        if rerank_fn is None:
            raise ValueError(f"protocol re-ranks the top {protocol.rerank_top_k} but no rerank_fn "
                             "(matching-head pair scorer) was given")

        def scorer(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(rerank_fn(text_ids[t], v)).detach().cpu()

        t2v_scores, t2v_tier = rerank_top_k(t2v_scores, protocol.rerank_top_k, scorer, True)
        v2t_scores, v2t_tier = rerank_top_k(v2t_scores, protocol.rerank_top_k, scorer, False)

    t2v_pos = torch.zeros(num_texts, num_videos, dtype=torch.bool)
    t2v_pos[torch.arange(num_texts), text_to_video] = True
    t2v_ties, v2t_ties = protocol.ties
    t2v_ranks = rank_positives(t2v_scores, t2v_pos, t2v_ties, t2v_tier)

    queried = _videos_with_captions(text_to_video, num_videos)
    v2t_pos = t2v_pos.t()[queried]
    # several captions: the best caption's rank (Frozen-in-Time's minimum over each caption's
    # averaged rank is that one too: the best-scoring caption has the fewest items above it)
    v2t_ranks = rank_positives(v2t_scores[queried], v2t_pos, v2t_ties,
                               None if v2t_tier is None else v2t_tier[queried])
    return RetrievalResult(
        t2v=_summarise(t2v_ranks, ks, units), v2t=_summarise(v2t_ranks, ks, units),
        protocol=protocol, units=units, num_texts=num_texts, num_videos=num_videos,
        t2v_ranks=t2v_ranks, v2t_ranks=v2t_ranks,
    )


#: The three official evaluation conventions: ``name -> (protocol, units)``.
OFFICIAL_PROTOCOLS: dict[str, tuple[RetrievalProtocol, Units]] = {
    "frozen-in-time": (RetrievalProtocol(tie_policy="optimistic", v2t_tie_policy="average",
                                         name="frozen-in-time"), "percent"),
    "mmpt": (RetrievalProtocol(tie_policy="expand", name="mmpt"), "fraction"),
    "umt": (RetrievalProtocol(tie_policy="argsort", name="umt"), "percent"),
}


def official_protocol(name: str, **changes: object) -> tuple[RetrievalProtocol, Units]:
    """``(protocol, units)`` of a repository's convention (:data:`OFFICIAL_PROTOCOLS`), with
    fields changed (``split=``, ``captions_per_video=``, ``rerank_top_k=128`` for UMT's
    re-ranking, ...)."""
    if name not in OFFICIAL_PROTOCOLS:
        raise ValueError(f"official protocol {name!r} is not known; known: "
                         f"{sorted(OFFICIAL_PROTOCOLS)}")
    protocol, units = OFFICIAL_PROTOCOLS[name]
    return replace(protocol, **changes), units  # type: ignore[arg-type]


def tied_example() -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-text x 4-video similarity matrix with ties (scores quantised to 0.1, as fp16
    features or a saturated model give), one caption per video: ``(sim, text_to_video)``."""
    sim = torch.tensor([[0.9, 0.9, 0.2, 0.1],   # text 0: its video ties with video 1
                        [0.5, 0.5, 0.5, 0.5],   # text 1: every video ties (a collapsed model)
                        [0.3, 0.7, 0.7, 0.1],   # text 2: its video ties with video 1, second
                        [0.2, 0.1, 0.3, 0.8]])  # text 3: no tie
    return sim, torch.arange(4)


def protocol_comparison(sim: torch.Tensor | None = None,
                        text_to_video: torch.Tensor | None = None):  # -> pandas.DataFrame
    """Text-to-video R@1, R@5 (percent) and median rank of each official convention on one
    matrix (default :func:`tied_example`): how far apart the repositories' numbers are."""
    import pandas as pd

    if sim is None:
        sim, text_to_video = tied_example()
    rows = {}
    for name in OFFICIAL_PROTOCOLS:
        protocol, _ = official_protocol(name)
        result = retrieval_metrics(sim, text_to_video, protocol, units="percent", ks=(1, 5))
        rows[name] = {"t2v R@1 (%)": result.t2v["R@1"], "t2v R@5 (%)": result.t2v["R@5"],
                      "t2v MdR": result.t2v["MdR"], "v2t R@1 (%)": result.v2t["R@1"]}
    return pd.DataFrame(rows).T


def _faiss_ranks(index_vectors: np.ndarray, query_vectors: np.ndarray,
                 is_positive: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 tie_policy: TiePolicy, top_k: int = 128, chunk_size: int = 1024) -> np.ndarray:
    """Exact ranks: a flat inner-product faiss search of the top ``top_k`` resolves most queries;
    the rest are counted exactly against the whole gallery, ``chunk_size`` queries at a time.

    A query is resolved by the search when a positive appears among its k results and the k-th
    score is strictly below the positive's (no tie continues past k).
    """
    import faiss

    index = faiss.IndexFlatIP(index_vectors.shape[1])
    index.add(index_vectors)
    n_gallery = index_vectors.shape[0]
    ranks = np.zeros(len(query_vectors), dtype=np.float64)
    k = min(top_k, n_gallery)
    scores, ids = index.search(query_vectors, k)
    pos = is_positive(np.arange(len(query_vectors)), ids)
    found = pos.any(1)
    best = scores[np.arange(len(scores)), pos.argmax(1)]
    resolved = found & ((scores[:, -1] < best) | (k == n_gallery))
    g = (scores > best[:, None]).sum(1)
    e = (scores == best[:, None]).sum(1)
    ranks[resolved] = _apply_ties(g, e, tie_policy)[resolved]

    rest = np.nonzero(~resolved)[0]
    gallery = torch.from_numpy(index_vectors)
    all_ids = np.arange(n_gallery)[None, :]
    for start in range(0, len(rest), chunk_size):
        q = rest[start:start + chunk_size]
        full = torch.from_numpy(query_vectors[q]) @ gallery.t()
        candidates = np.broadcast_to(all_ids, (len(q), n_gallery))
        positive = torch.from_numpy(np.ascontiguousarray(is_positive(q, candidates)))
        ranks[q] = rank_positives(full, positive, tie_policy).numpy()
    return ranks


def _apply_ties(greater: np.ndarray, equal: np.ndarray, tie_policy: TiePolicy) -> np.ndarray:
    if tie_policy == "optimistic":
        return greater + 1.0
    if tie_policy == "pessimistic":
        return greater + equal * 1.0
    return greater + (1.0 + equal) / 2


def retrieval_metrics_from_embeddings(text_emb: torch.Tensor, video_emb: torch.Tensor,
                                      text_to_video: torch.Tensor,
                                      protocol: RetrievalProtocol | None = None, *,
                                      units: Units = "percent", backend: str = "dense",
                                      ks: tuple[int, ...] = (1, 5, 10),
                                      faiss_top_k: int = 128) -> RetrievalResult:
    """Retrieval metrics from embeddings (similarity = dot product; L2-normalise first for cosine).

    ``backend="dense"`` builds the full similarity matrix and calls :func:`retrieval_metrics`;
    ``backend="faiss"`` never materialises the matrix: a flat inner-product faiss search of the
    top ``faiss_top_k`` ranks the queries whose positive is found there, and the others are
    counted exactly in chunks, so memory stays O(chunk x gallery) and the ranks are the same
    (test_eval_retrieval checks this with exact ties for every tie policy). The faiss path
    supports neither dual softmax nor re-ranking (both need the whole matrix) and raises if the
    protocol asks for them.
    """
    protocol = protocol or RetrievalProtocol()
    text_emb = torch.as_tensor(text_emb).detach().cpu().float()
    video_emb = torch.as_tensor(video_emb).detach().cpu().float()
    if text_emb.dim() != 2 or video_emb.dim() != 2 or text_emb.shape[1] != video_emb.shape[1]:
        raise ValueError(f"text_emb (N, D) and video_emb (M, D) must share D; got "
                         f"{tuple(text_emb.shape)} and {tuple(video_emb.shape)}")
    if backend == "dense":
        return retrieval_metrics(text_emb @ video_emb.t(), text_to_video, protocol, units=units,
                                 ks=ks)
    if backend != "faiss":
        raise ValueError(f"backend={backend!r}; expected 'dense' or 'faiss'")
    if protocol.dual_softmax or protocol.rerank_top_k:
        raise ValueError("the faiss backend supports neither dual softmax nor re-ranking; use "
                         "backend='dense'")
    if {"argsort", "expand"} & set(protocol.ties):
        raise ValueError(f"the faiss backend supports the optimistic, pessimistic and average "
                         f"tie policies, not {protocol.ties}; use backend='dense'")
    if units not in UNITS:
        raise ValueError(f"units={units!r}; expected one of {UNITS}")
    t2v = _check_text_to_video((text_emb.shape[0], video_emb.shape[0]), text_to_video)
    rows = _select_captions(t2v, protocol.captions_per_video)
    texts = np.ascontiguousarray(text_emb[rows].numpy())
    videos = np.ascontiguousarray(video_emb.numpy())
    t2v_np = t2v[rows].numpy()

    t2v_ties, v2t_ties = protocol.ties
    t2v_ranks = _faiss_ranks(videos, texts, lambda q, ids: ids == t2v_np[q][:, None],
                             t2v_ties, faiss_top_k)
    queried = _videos_with_captions(t2v[rows], videos.shape[0]).numpy()
    v2t_ranks = _faiss_ranks(texts, videos[queried],
                             lambda q, ids: t2v_np[ids] == queried[q][:, None],
                             v2t_ties, faiss_top_k)
    t2v_ranks_t, v2t_ranks_t = torch.from_numpy(t2v_ranks), torch.from_numpy(v2t_ranks)
    return RetrievalResult(
        t2v=_summarise(t2v_ranks_t, ks, units), v2t=_summarise(v2t_ranks_t, ks, units),
        protocol=protocol, units=units, num_texts=len(rows), num_videos=videos.shape[0],
        t2v_ranks=t2v_ranks_t, v2t_ranks=v2t_ranks_t,
    )


def retrieval_table(results: Mapping[str, RetrievalResult]):  # -> pandas.DataFrame
    """One table, a column per named result, rows ``t2v/R@1`` ...; its protocol in ``attrs``.

    Raises ``ValueError`` when the results do not share one protocol and one unit: numbers
    obtained differently never share a column or a table. Make one table per protocol instead.
    """
    import pandas as pd

    if not results:
        raise ValueError("retrieval_table needs at least one result")
    cards = {name: r.card().rsplit(" | ", 1)[0] for name, r in results.items()}
    if len({(r.protocol, r.units) for r in results.values()}) > 1:
        detail = "; ".join(f"{n}: {c}" for n, c in cards.items())
        raise ValueError("results use different evaluation protocols and cannot share a table: "
                         f"{detail}")
    table = pd.DataFrame({name: r.as_dict() for name, r in results.items()})
    table.attrs["protocol"] = next(iter(cards.values()))
    return table
