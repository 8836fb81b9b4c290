"""The registry of real datasets: sources, licences, expected counts, evaluation splits.

Each :class:`DatasetSpec` says where the official release comes from (or that it is no longer
public and a local copy is needed), what the converter in :mod:`vlbook.data.prepare` reads,
what it writes, and how many items to expect. Counts are the official release's; a user's copy
of YouTube-sourced sets (Kinetics, HowTo100M, YouCook2) is usually smaller because videos have
been taken down. Checksums are recorded where the publisher gives one; elsewhere ``sha256`` is
``None`` and :func:`vlbook.data.prepare.download` records the hash of the first download in
``checksums.json`` next to the file (trust on first use) and checks later copies against it.

Evaluation splits are stated explicitly because mixing them is the field's most common
reproduction complaint: MSR-VTT "1k-A" (JSFusion's 1,000 test videos, one caption each, the
split of VLM, SimVTP, UMT and All-in-one) is not the "full" 2,990-video test split, and the
"9k" training split (7k + the remainder of val/test) is not the "7k" one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbook.paths import data_root


@dataclass(frozen=True)
class Source:
    """One file of an official release."""

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    public: bool
    licence: str
    sources: tuple[Source, ...]
    #: what the converter reads, relative to ``<data_root>/<name>/raw``; ``"a|b"`` accepts
    #: either name (the first one present is read), e.g. a list file under its released name
    raw_files: tuple[str, ...]
    annotations: tuple[str, ...]  # what the converter writes, relative to <data_root>/<name>
    expected: dict[str, int] = field(default_factory=dict)
    eval_split: str = ""
    papers: tuple[str, ...] = ()
    notes: str = ""
    #: annotations written only when their optional raw files are present: ``{annotation:
    #: raw file(s) that give it}`` (e.g. MSRVTT-QA from ``train_qa.json``)
    optional: dict[str, str] = field(default_factory=dict)
    #: records each annotation file of the official release holds; a conversion that writes
    #: another count warns with both numbers (videos taken down, a wrong or partial file)
    split_sizes: dict[str, int] = field(default_factory=dict)

    def offers(self, annotation: str) -> bool:
        """Whether a conversion can write ``annotation`` (always or from optional files)."""
        return annotation in self.annotations or annotation in self.optional


def raw_file(raw: Path, entry: str) -> Path | None:
    """The file of a ``raw_files`` entry present in ``raw`` (the first of ``"a|b"``), or None."""
    for name in entry.split("|"):
        if (raw / name).exists():
            return raw / name
    return None


REAL_DATASETS: dict[str, DatasetSpec] = {}


def _add(spec: DatasetSpec) -> None:
    REAL_DATASETS[spec.name] = spec


_add(
    DatasetSpec(
        name="webvid2m",
        title="WebVid-2M (Bain et al., Frozen in Time)",
        public=False,
        licence="research only; the dataset was taken down by its publisher in 2024 at "
        "Shutterstock's request — vlbook cannot download it and accepts a copy you already hold",
        sources=(),
        raw_files=("results_2M_train.csv", "results_2M_val.csv"),
        annotations=("retrieval_train.jsonl", "retrieval_val.jsonl"),
        expected={"val_videos": 5_000},
        split_sizes={"retrieval_val.jsonl": 5_000},
        eval_split="pre-training only (val is not a benchmark)",
        papers=("SimVTP", "UMT", "All-in-one", "E-ViLM"),
        notes="about 2.5M training rows; CSV columns videoid, contentUrl, duration, page_dir, "
        "name; videos at videos/<page_dir>/<videoid>.mp4",
    )
)
_add(
    DatasetSpec(
        name="msrvtt",
        title="MSR-VTT (Xu et al. 2016) with JSFusion 1k-A, MSRVTT-QA and MSR-VTT MC",
        public=True,
        licence="research use (Microsoft); annotations redistributed by CLIP4Clip / Frozen in Time",
        sources=(
            Source(
                "https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip",
                "MSRVTT.zip",
                note="videos (videos/all/video*.mp4), ~6.3 GB",
            ),
            Source(
                "https://github.com/ArrowLuo/CLIP4Clip/releases/download/v0.0/msrvtt_data.zip",
                "msrvtt_data.zip",
                note="MSRVTT_data.json, train 9k/7k and JSFusion test CSVs",
            ),
        ),
        raw_files=(
            "MSRVTT_data.json",
            "MSRVTT_train.9k.csv",
            "MSRVTT_train.7k.csv",
            "MSRVTT_JSFUSION_test.csv",
        ),
        annotations=(
            "retrieval_train_9k.jsonl",
            "retrieval_train_7k.jsonl",
            "retrieval_test_1ka.jsonl",
            "retrieval_test_full.jsonl",
        ),
        optional={
            "qa_train.jsonl": "train_qa.json (MSRVTT-QA, Xu et al. 2017)",
            "qa_val.jsonl": "val_qa.json",
            "qa_test.jsonl": "test_qa.json",
            "answers.json": "train_qa.json",
            "mc_test.jsonl": "msrvtt_mc_test.jsonl (ClipBERT's release) or mc_test.jsonl",
        },
        split_sizes={
            "retrieval_train_9k.jsonl": 9_000,
            "retrieval_train_7k.jsonl": 7_010,
            "retrieval_test_1ka.jsonl": 1_000,
            "retrieval_test_full.jsonl": 2_990,
            "qa_train.jsonl": 158_581,
            "qa_val.jsonl": 12_278,
            "qa_test.jsonl": 72_821,
            "mc_test.jsonl": 2_990,
        },
        expected={
            "videos": 10_000,
            "captions": 200_000,
            "train_9k": 9_000,
            "train_7k": 7_010,
            "test_1ka": 1_000,
            "test_full": 2_990,
            "qa_train": 158_581,
            "qa_val": 12_278,
            "qa_test": 72_821,
            "mc_test": 2_990,
        },
        eval_split="retrieval: 1k-A (retrieval_test_1ka.jsonl, 1,000 videos x 1 caption) with the "
        "9k training split; the full split (2,990 test videos x 20 captions) is reported separately"
        " and is not comparable",
        papers=("VLM", "SimVTP", "UMT", "All-in-one", "E-ViLM"),
    )
)
_add(
    DatasetSpec(
        name="youcook2",
        title="YouCook2 (Zhou et al. 2018)",
        public=True,
        licence="annotations MIT-style research release; videos are YouTube content",
        sources=(
            Source(
                "http://youcook2.eecs.umich.edu/static/YouCookII/"
                "youcookii_annotations_trainval.tar.gz",
                "youcookii_annotations_trainval.tar.gz",
                note="annotations only; videos must be fetched from YouTube by the user",
            ),
        ),
        raw_files=("youcookii_annotations_trainval.json",),
        annotations=(
            "caption_train.jsonl",
            "caption_val.jsonl",
            "steps_train.jsonl",
            "steps_val.jsonl",
            "retrieval_val.jsonl",
        ),
        expected={
            "train_videos": 1_333,
            "val_videos": 457,
            "train_clips": 10_337,
            "val_clips": 3_492,
        },
        eval_split="validation split (the test annotations are withheld)",
        papers=("VLM",),
    )
)
_add(
    DatasetSpec(
        name="howto100m",
        title="HowTo100M (Miech et al. 2019), S3D features + ASR captions as VLM uses them",
        public=True,
        licence="research use; videos are YouTube content",
        sources=(
            Source(
                "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/raw_caption.zip",
                "raw_caption.zip",
                note="ASR captions {video_id: {start, end, text}}",
            ),
        ),
        raw_files=("raw_caption.json", "features/"),
        annotations=("feature_text_train.jsonl",),
        expected={"videos": 1_221_000, "clips": 136_000_000},
        eval_split="pre-training only",
        papers=("VLM", "All-in-one"),
        notes="features/<video_id>.npy: (seconds, 512) S3D (MIL-NCE) features at 1 per second, "
        "extracted with MMPT's scripts (not distributed by the authors)",
    )
)
_add(
    DatasetSpec(
        name="kinetics400",
        title="Kinetics-400 (Kay et al. 2017)",
        public=True,
        licence="CC BY 4.0 annotations; videos are YouTube content (CVDF mirror)",
        sources=(
            Source("https://s3.amazonaws.com/kinetics/400/annotations/train.csv", "train.csv"),
            Source("https://s3.amazonaws.com/kinetics/400/annotations/val.csv", "val.csv"),
        ),
        raw_files=("train.csv", "val.csv"),
        annotations=("classification_train.jsonl", "classification_val.jsonl", "classes.json"),
        expected={"classes": 400},
        eval_split="val (the test labels were released later and are rarely used)",
        papers=("UMT", "SimVTP"),
        notes="about 240k training and 20k validation clips in the release; fewer remain on "
        "YouTube",
    )
)
_add(
    DatasetSpec(
        name="kinetics710",
        title="Kinetics-710 (UniFormerV2's union of K400/600/700, de-duplicated)",
        public=True,
        licence="as Kinetics",
        sources=(),
        raw_files=("train.csv|train_list.txt", "val.csv|val_list.txt"),
        annotations=("classification_train.jsonl", "classification_val.jsonl"),
        expected={"classes": 710},
        eval_split="UMT stage 1 pre-trains on K710 train only; K400 val clips are excluded from it",
        papers=("UMT",),
        notes="about 0.66M training clips; list files '<relative video path> <label id>' "
        "(UMT/UniFormerV2 format) under their released names k710/train.csv and val.csv, or "
        "train_list.txt / val_list.txt",
    )
)
_add(
    DatasetSpec(
        name="cc3m",
        title="Conceptual Captions 3M (Sharma et al. 2018)",
        public=True,
        licence="annotations free to use with attribution (Google); images belong to their owners",
        sources=(),
        raw_files=("Train_GCC-training.tsv", "Validation_GCC-1.1.0-Validation.tsv"),
        annotations=("image_text_train.jsonl", "image_text_val.jsonl"),
        expected={"train": 3_318_333, "val": 15_840},
        split_sizes={"image_text_train.jsonl": 3_318_333, "image_text_val.jsonl": 15_840},
        eval_split="pre-training only",
        papers=("UMT",),
        notes="TSV '<caption>\\t<url>' (a 'caption<TAB>url' header line, as img2dataset's "
        "instructions add, is skipped); images downloaded by the user with img2dataset into "
        "images/<split>/ (or raw/images/<split>/), named by row: its 'files' layout "
        "(00000/000000012.jpg with .txt/.json sidecars) or its 'webdataset' tar shards "
        "(00000.tar)",
    )
)


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """``<data_root>/<name>`` (the dataset root where converters write annotations)."""
    return Path(root) if root else data_root() / name


def health(root: str | Path | None = None) -> list[dict[str, Any]]:
    """What a user has and lacks: per dataset, raw files, converted annotations, record counts."""
    base = Path(root) if root else data_root()
    rows = []
    for spec in REAL_DATASETS.values():
        folder = base / spec.name
        raw = folder / "raw"
        raw_present = [f for f in spec.raw_files if raw_file(raw, f) is not None]
        ann_present = {
            a: _count_lines(folder / a) for a in spec.annotations if (folder / a).is_file()
        }
        optional_present = {
            a: _count_lines(folder / a) for a in spec.optional
            if a.endswith(".jsonl") and (folder / a).is_file()
        }
        quarantine = folder / "quarantine.jsonl"
        if len(ann_present) == len(spec.annotations):
            status = "ready"
        elif ann_present:
            status = "partial"
        elif len(raw_present) == len(spec.raw_files):
            status = "raw files present: run `vlbook-data prepare " + spec.name + "`"
        else:
            status = "missing"
        rows.append(
            {
                "dataset": spec.name,
                "status": status,
                "public": spec.public,
                "raw_missing": [f for f in spec.raw_files if f not in raw_present],
                "annotations": {**ann_present, **optional_present},
                "quarantined": _count_lines(quarantine) if quarantine.is_file() else 0,
                "eval_split": spec.eval_split,
            }
        )
    synthetic = base / "synthetic"
    for scale in ("smoke", "toy"):
        ok = (synthetic / scale / "manifest.json").is_file()
        rows.append(
            {
                "dataset": f"synthetic/{scale}",
                "status": "ready"
                if ok
                else f"missing: run `vlbook-data synthetic --scale {scale}`",
                "public": True,
                "raw_missing": [],
                "annotations": {},
                "quarantined": 0,
                "eval_split": "test",
            }
        )
    return rows


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())
