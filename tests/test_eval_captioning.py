"""Captioning scores against published values and hand computations."""

from __future__ import annotations

import math

import pytest

from vlbook.eval import caption_metrics, tokenize_caption
from vlbook.eval import captioning as captioning_module

# Papineni et al. (2002), Sec. 2.1, Example 1, candidate 1 and its three references.
CANDIDATE = ("It is a guide to action which ensures that the military always obeys the commands "
             "of the party.")
REFERENCES = [
    "It is a guide to action that ensures that the military will forever heed Party commands.",
    "It is the guiding principle which guarantees the military forces always being under the "
    "command of the Party.",
    "It is the practical guide for the army always to heed the directions of the party.",
]


def test_tokenizer_lowercases_splits_clitics_and_drops_punctuation():
    assert tokenize_caption("A man's guitar, don't play it!") == "a man 's guitar do n't play it"
    assert tokenize_caption("Well-known: 3.5 times...") == "well-known 3.5 times"


def test_bleu_matches_papineni_and_nltk_published_values():
    s = caption_metrics([CANDIDATE], [REFERENCES], metrics=("BLEU-1", "BLEU-2", "BLEU-4"),
                        units="fraction")
    # Papineni et al.: modified unigram precision 17/18, bigram 10/17; candidate length 18
    # equals reference 2's, so no brevity penalty.
    assert s["BLEU-1"] == pytest.approx(17 / 18, abs=1e-6)
    assert s["BLEU-2"] == pytest.approx(math.sqrt(17 / 18 * 10 / 17), abs=1e-6)
    # NLTK documentation, nltk.translate.bleu_score.sentence_bleu on this example.
    assert s["BLEU-4"] == pytest.approx(0.5045666840058485, abs=1e-6)
    pct = caption_metrics([CANDIDATE], [REFERENCES], metrics=("BLEU-4",))
    assert pct["BLEU-4"] == pytest.approx(50.45666840058485, abs=1e-4)


def test_rouge_l_hand_computed():
    # LCS("a cat sat on the mat", "the cat is on the mat today") = "cat on the mat" = 4
    s = caption_metrics(["a cat sat on the mat"], [["the cat is on the mat today"]],
                        metrics=("ROUGE-L",), units="fraction")
    p, r, beta = 4 / 6, 4 / 7, 1.2
    assert s["ROUGE-L"] == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p), abs=1e-9)


def test_cider_is_ten_for_exact_captions_with_distinct_words():
    # Every n-gram occurs in one video only (idf = log 3 > 0); the candidate equals its
    # references, so each n-gram cosine is 1, the length penalty is 1, times 10 (CIDEr-D).
    preds = ["red apple falls down", "blue car drives fast", "green frog jumps high"]
    refs = [[p, p] for p in preds]
    s = caption_metrics(preds, refs, metrics=("CIDEr",), units="fraction")
    assert s["CIDEr"] == pytest.approx(10.0, abs=1e-6)
    # CIDEr-D averages n = 1..4: three-word captions have no 4-gram, so 3 of 4 terms are 10
    short = [" ".join(p.split()[:3]) for p in preds]
    s3 = caption_metrics(short, [[p, p] for p in short], metrics=("CIDEr",), units="fraction")
    assert s3["CIDEr"] == pytest.approx(7.5, abs=1e-6)
    worse = caption_metrics(["red apple drives fast", *preds[1:]], refs, metrics=("CIDEr",),
                            units="fraction")
    assert worse["CIDEr"] < 10.0
    # the per-caption values average to the corpus score; exact captions have no spread
    assert s.per_item["CIDEr"] == pytest.approx([10.0, 10.0, 10.0])
    assert s.standard_error("CIDEr") == pytest.approx(0.0, abs=1e-9)
    values = worse.per_item["CIDEr"]
    assert sum(values) / 3 == pytest.approx(worse["CIDEr"])
    assert values[1:] == pytest.approx([10.0, 10.0]) and values[0] < 10.0
    mean = sum(values) / 3
    by_hand = (sum((v - mean) ** 2 for v in values) / 2 / 3) ** 0.5
    assert worse.standard_error("CIDEr") == pytest.approx(by_hand)
    assert worse.standard_error("BLEU-4") is None  # corpus-level: no per-caption values


def test_meteor_runs_with_java_and_orders_captions():
    if not captioning_module.java_available():
        pytest.skip("Java is not installed: METEOR cannot run here")
    refs = [["a man is playing a guitar"], ["a woman is slicing an onion"]]
    s = caption_metrics(["a man is playing a guitar", "a dog runs on the grass"], refs,
                        metrics=("METEOR",), units="fraction")
    one = caption_metrics(["a man is playing a guitar"], refs[:1], metrics=("METEOR",),
                          units="fraction")
    assert not s.unavailable
    assert 0.9 < one["METEOR"] <= 1.0  # exact match: only the fragmentation penalty
    assert s["METEOR"] < one["METEOR"]


def test_meteor_reported_unavailable_without_java(monkeypatch):
    monkeypatch.setattr(captioning_module.shutil, "which", lambda name: None)
    s = caption_metrics(["a man plays"], [["a man plays guitar"]])
    assert "METEOR" in s.unavailable and "Java" in s.unavailable["METEOR"]
    assert set(s.scores) == {"BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    with pytest.raises(KeyError, match="unavailable"):
        s["METEOR"]
    assert "METEOR unavailable" in s.card()
    with pytest.raises(RuntimeError, match="METEOR unavailable"):
        caption_metrics(["a man plays"], [["a man plays guitar"]], strict=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown caption metrics"):
        caption_metrics(["a"], [["a"]], metrics=("SPICE",))
    with pytest.raises(ValueError, match="2 predictions for 1"):
        caption_metrics(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics(["a"], ["a"])
    with pytest.raises(ValueError, match="different keys"):
        caption_metrics({"v1": "a"}, {"v2": ["a"]})
