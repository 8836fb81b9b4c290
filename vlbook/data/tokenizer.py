"""Text tokenisation through a transformers tokenizer.

Toy runs use a small WordPiece vocabulary trained here on the synthetic captions (BERT's
normaliser and pre-tokeniser, specials ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``); full
runs use ``bert-base-uncased`` (the tokenizer of VLM, SimVTP, UMT and All-in-one), read from
``weights_root()/bert-base-uncased`` or the Hugging Face hub. Both come back as a
``PreTrainedTokenizerFast`` producing ``[CLS] text [SEP]``.

transformers 5 trap: ``BertTokenizer(vocab_file=...)`` silently ignores the file and maps every
token to ``[UNK]``; this module only loads with ``from_pretrained(<folder>)`` and checks that a
known word is not ``[UNK]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from vlbook.paths import weights_root

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerNotFoundError(FileNotFoundError):
    """A named tokenizer is neither on disk nor reachable; the message says what to fetch."""


def train_wordpiece(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 1000,
    *,
    min_frequency: int = 1,
    model_max_length: int = 512,
):
    """Train a lower-casing BERT-style WordPiece tokenizer on ``texts``; save it to ``out_dir``.

    Returns the ``PreTrainedTokenizerFast`` (also loadable later with
    :func:`load_tokenizer(out_dir) <load_tokenizer>`).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def _download_hint(name: str, target: Path) -> str:
    return (
        f"tokenizer {name!r} is not available offline. Put its files in {target}/ "
        f"(for bert-base-uncased: vocab.txt, tokenizer.json, tokenizer_config.json from "
        f"https://huggingface.co/{name}/tree/main), e.g. on a machine with network:\n"
        f"    huggingface-cli download {name} vocab.txt tokenizer.json tokenizer_config.json "
        f"--local-dir {target}\n"
        f"or unset HF_HUB_OFFLINE to let transformers fetch it from the hub; set $VLBOOK_WEIGHTS "
        f"to move the weights folder."
    )


def load_tokenizer(name_or_path: str | Path):
    """A ``PreTrainedTokenizerFast`` from a folder, ``weights_root()/<name>``, or the hub.

    Order: ``name_or_path`` as an existing folder; ``weights_root()/name``; the hub (or its
    local cache). When none works, :class:`TokenizerNotFoundError` says what to download and
    where to put it. Never falls back to another tokenizer.
    """
    from transformers import AutoTokenizer

    candidates = []
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        candidates.append(path)
    local = weights_root() / str(name_or_path)
    if local.is_dir():
        candidates.append(local)
    for folder in candidates:
        if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt")):
            raise TokenizerNotFoundError(
                f"{folder} has neither tokenizer.json nor vocab.txt; "
                + _download_hint(str(name_or_path), local)
            )
        tok = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
        return _checked(tok, folder)
    if path.is_absolute() or str(name_or_path).startswith("."):
        raise TokenizerNotFoundError(f"tokenizer folder {path} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), use_fast=True)
    except Exception as err:  # noqa: BLE001 - OSError, offline errors, HTTP errors
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reason = "HF_HUB_OFFLINE is set and it is not cached" if offline else str(err)[:200]
        hint = _download_hint(str(name_or_path), local)
        raise TokenizerNotFoundError(f"{hint}\n({reason})") from err
    return _checked(tok, name_or_path)


def _checked(tok, source):
    for special in ("pad_token", "cls_token", "sep_token", "mask_token", "unk_token"):
        if getattr(tok, special, None) is None:
            raise ValueError(
                f"tokenizer from {source} lacks a {special}; vlbook needs BERT specials"
            )
    probe = tok("a", add_special_tokens=False)["input_ids"]
    if probe and all(i == tok.unk_token_id for i in probe) and len(tok) > 10:
        raise ValueError(
            f"tokenizer from {source} maps the word 'a' to [UNK]: its vocabulary did not load "
            "(transformers 5 ignores vocab_file=; save it with save_pretrained instead)"
        )
    return tok


def tokenize(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` long tensors ``(B, max_len)``, padded and truncated."""
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    return enc["input_ids"].long(), enc["attention_mask"].long()
