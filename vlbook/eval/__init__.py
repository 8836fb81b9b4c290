"""Evaluation: retrieval with explicit protocols, downstream metrics and captioning scores.

* :mod:`vlbook.eval.retrieval` — R@k / median / mean rank in both directions, tie policies,
  :class:`RetrievalProtocol` cards, dual softmax, matching-head re-ranking, faiss search.
* :mod:`vlbook.eval.downstream` — multiple choice, open-ended QA (explicit out-of-vocabulary
  policy), action-segmentation frame accuracy, CrossTask step recall, linear probe.
* :mod:`vlbook.eval.captioning` — BLEU, METEOR, ROUGE-L, CIDEr through pycocoevalcap.
"""

from vlbook.eval.captioning import (
    CAPTION_METRICS,
    CaptionScores,
    caption_metrics,
    java_available,
    tokenize_caption,
)
from vlbook.eval.downstream import (
    LinearProbeResult,
    QAAccuracy,
    StepRecall,
    frame_accuracy,
    linear_probe_accuracy,
    multiple_choice_accuracy,
    multiple_choice_breakdown,
    normalize_answer,
    open_ended_qa_accuracy,
    step_localisation_recall,
)
from vlbook.eval.retrieval import (
    RetrievalProtocol,
    RetrievalResult,
    dual_softmax,
    rank_positives,
    rerank_top_k,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_table,
)

__all__ = [
    "CAPTION_METRICS",
    "CaptionScores",
    "LinearProbeResult",
    "QAAccuracy",
    "RetrievalProtocol",
    "RetrievalResult",
    "StepRecall",
    "caption_metrics",
    "dual_softmax",
    "frame_accuracy",
    "java_available",
    "linear_probe_accuracy",
    "multiple_choice_accuracy",
    "multiple_choice_breakdown",
    "normalize_answer",
    "open_ended_qa_accuracy",
    "rank_positives",
    "rerank_top_k",
    "retrieval_metrics",
    "retrieval_metrics_from_embeddings",
    "retrieval_table",
    "step_localisation_recall",
    "tokenize_caption",
]
