"""The ``full`` path of every chapter: the paper's configuration as a launchable TrainConfig,
real datasets resolved by name (a clear error when they are not prepared), and the real-data
loading code exercised on a small local copy laid out as ``vlbook-data prepare`` writes it.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from vlbook.chapters import chapter as chapter_spec
from vlbook.chapters import chapters
from vlbook.config import get_preset
from vlbook.data import REAL_DATASETS
from vlbook.data.synthetic import ensure_synthetic
from vlbook.train import TrainConfig
from vlbook.train.data import build_dataset

CHAPTERS = tuple(c.name for c in chapters())
#: model kwargs that fetch pretrained weights (not available offline in the tests)
WEIGHT_KWARGS = ("pretrained", "teacher", "encoder_init", "bert_embeddings", "checkpoint")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def full_config(chapter: str, tmp_path: Path, preset: dict | None = None) -> TrainConfig:
    module = importlib.import_module(chapter_spec(chapter).module)
    preset = preset or get_preset(chapter, "full")
    if chapter == "evilm":
        return module.full_pretrain_config(preset, tmp_path / "video_tokenizer.pt",
                                           tmp_path / "words", seed=1,
                                           output_dir=tmp_path / "run")
    return module.full_pretrain_config(preset, seed=1, output_dir=tmp_path / "run")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_full_preset_is_a_launchable_config_with_every_hyper_parameter(chapter, tmp_path):
    preset = get_preset(chapter, "full")
    config = full_config(chapter, tmp_path, preset)
    # launch() writes the config as YAML for `accelerate launch -m vlbook.train`
    assert TrainConfig.load(config.save(tmp_path / "config.yaml")) == config
    train = preset["stage1"] if chapter == "umt" else preset["train"]
    assert config.seed == 1 and config.output_dir == str(tmp_path / "run")
    assert (config.global_batch_size, config.lr) == (train["batch_size"], train["lr"])
    assert config.weight_decay == train["weight_decay"]
    assert config.epochs == train.get("epochs") and config.total_steps == train.get("steps")
    assert config.warmup_epochs == train.get("warmup_epochs")  # SimVTP / UMT: 40 epochs
    assert config.warmup_steps == train.get("warmup_steps", 0)
    assert config.precision == train.get("precision", "no")
    # the data are real datasets vlbook knows how to prepare
    names = config.data.kwargs["datasets"]
    assert names and all(name in REAL_DATASETS for name in names)


@pytest.mark.parametrize("chapter", ("vlm", "simvtp", "umt", "allinone"))
def test_full_model_spec_builds_the_paper_size_model(chapter, tmp_path):
    from vlbook.models import create_model

    config = full_config(chapter, tmp_path)
    kwargs = {k: v for k, v in config.model.kwargs.items() if k not in WEIGHT_KWARGS}
    with torch.device("meta"):
        model = create_model(config.model.name, **kwargs)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions > 80  # ViT-B / BERT-base sized, not a toy


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_full_preset_model_has_the_papers_parameter_count(chapter):
    """Every chapter's ``full`` model, built on the meta device without pretrained weights,
    has the paper's parameter count (within 2 %) where the chapter states it."""
    from vlbook.models import create_model

    spec = get_preset(chapter, "full")["model"]
    kwargs = {k: v for k, v in spec.get("kwargs", {}).items() if k not in WEIGHT_KWARGS}
    with torch.device("meta"):
        model = create_model(spec["name"], **kwargs)
    params = list(model.parameters())
    assert params and all(p.is_meta for p in params)  # nothing was loaded or allocated
    millions = sum(p.numel() for p in params) / 1e6
    paper = chapter_spec(chapter).paper_params_m.get(spec["name"])
    if paper is not None:
        assert millions == pytest.approx(paper, rel=0.02), (chapter, millions, paper)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_unprepared_full_data_names_the_file_and_the_commands(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path / "empty"))
    config = full_config(chapter, tmp_path)
    name = config.data.kwargs["datasets"][0]
    with pytest.raises(FileNotFoundError, match=rf"{name}/.*does not exist.*vlbook-data "
                                                rf"prepare {name}"):
        build_dataset(config.data)


def test_a_dataset_that_lacks_the_task_is_refused(tmp_path, monkeypatch):
    from vlbook.data import build_dataset as data_build

    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="'howto100m' offers feature_text_train.jsonl, not the "
                                         "'retrieval' annotations"):
        data_build("video_text", datasets=["howto100m"])
    with pytest.raises(ValueError, match="not a dataset vlbook can prepare"):
        data_build("video_text", datasets=["webvid"])


def prepared_copy(root: Path, name: str, task: str, smoke: Path, task_file: str) -> Path:
    """A small 'prepared' dataset: the smoke benchmark's clips under ``root/name`` with the
    task file renamed as the converter of ``name`` would write it."""
    folder = root / name
    shutil.copytree(smoke / "videos", folder / "videos")
    records = [json.loads(line) for line in (smoke / task_file).read_text().splitlines()]
    (folder / f"{task}_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture(scope="module")
def smoke_benchmark(tmp_path_factory) -> Path:
    return ensure_synthetic("smoke", root=tmp_path_factory.mktemp("full") / "smoke")


def test_full_data_path_reads_a_prepared_copy_of_several_datasets(smoke_benchmark, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path))
    prepared_copy(tmp_path, "webvid2m", "retrieval", smoke_benchmark, "retrieval_train.jsonl")
    prepared_copy(tmp_path, "msrvtt", "retrieval", smoke_benchmark, "retrieval_train.jsonl")
    preset = get_preset("simvtp", "full")
    preset["data"].update(datasets=["webvid2m", "msrvtt"],
                          tokenizer=str(smoke_benchmark / "tokenizer"), num_frames=4, size=32)
    with pytest.raises(ValueError, match="'msrvtt' offers .*retrieval_train_9k"):
        build_dataset(full_config("simvtp", tmp_path, preset).data)
    # the 9k split is the one MSR-VTT's converter writes for training
    (tmp_path / "msrvtt" / "retrieval_train.jsonl").rename(
        tmp_path / "msrvtt" / "retrieval_train_9k.jsonl")
    preset["data"].update(datasets=["webvid2m"])
    dataset = build_dataset(full_config("simvtp", tmp_path, preset).data)
    item = dataset[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["input_ids"].ndim == 1
    preset["data"].update(datasets=["webvid2m", "webvid2m"])
    twice = build_dataset(full_config("simvtp", tmp_path, preset).data)
    assert len(twice) == 2 * len(dataset)
    batch = twice.collate([twice[0], twice[len(dataset)]])
    assert batch["video"].shape == (2, 4, 3, 32, 32)


def test_evilm_full_pipeline_on_a_prepared_copy(smoke_benchmark, tmp_path, monkeypatch):
    """Word vocabulary from the corpus -> tokenizer stage trained with vlbook.train ->
    exported -> pre-training stage builds and trains with the tokenizer's codes."""
    import vlbook.chapters.evilm as E
    from vlbook.train import train

    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path / "data"))
    prepared_copy(tmp_path / "data", "webvid2m", "retrieval", smoke_benchmark,
                  "retrieval_train.jsonl")
    preset = get_preset("evilm", "full")
    toy = get_preset("evilm", "smoke")
    preset["model"] = {"name": "evilm_toy", "kwargs": toy["model"]["kwargs"]}
    preset["tokenizer"] = {**toy["tokenizer"], "image_size": 32, "patch_size": 16}
    preset["data"].update(num_frames=4, size=32, max_len=16)
    small = {"batch_size": 4, "lr": 1e-3, "steps": 2, "warmup_steps": 0, "schedule": "constant"}
    preset["tokenizer_train"], preset["train"] = dict(small), dict(small)

    words = tmp_path / "words"
    vocabulary = E.corpus_word_tokenizer(["webvid2m"], words, vocab_size=120)
    assert len(vocabulary) <= 120 and (words / "tokenizer.json").exists()
    assert len(E.corpus_word_tokenizer(["webvid2m"], words, vocab_size=50)) == len(vocabulary)

    stage1 = E.full_tokenizer_config(preset, words, output_dir=tmp_path / "tok")
    stage1.progress_bar = stage1.tensorboard = False
    first = train(stage1)
    assert first.finished and {"loss", "vq"} <= set(first.final_losses)
    exported = E.export_video_tokenizer(tmp_path / "tok", tmp_path / "video_tokenizer.pt")
    with pytest.raises(FileExistsError):
        E.export_video_tokenizer(tmp_path / "tok", exported)

    stage2 = E.full_pretrain_config(preset, exported, words, output_dir=tmp_path / "pre")
    stage2.progress_bar = stage2.tensorboard = False
    stage2.model.kwargs.update(image_size=32, conv_stride=16)
    second = train(stage2)
    assert second.finished and {"mvm", "mlm", "vtm"} <= set(second.final_losses)
