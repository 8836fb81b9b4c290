"""The architecture diagrams are drawn from the models' configs and losses, and stay readable."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from matplotlib.text import Text

from vlbook import diagrams
from vlbook.chapters import chapter

#: (depth field, width field) of the main encoder in each paper's config
ENCODER_FIELDS = {
    "vlm": ("num_layers", "hidden_size"),
    "simvtp": ("depth", "embed_dim"),
    "umt": ("depth", "embed_dim"),
    "allinone": ("depth", "embed_dim"),
    "evilm": ("decoder_depth", "hidden"),
}


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def has_depth_and_width(labels: list[str], depth: int, width: int) -> bool:
    return any((f"{depth} blocks" in t or f"{depth} layers" in t) and f"width {width}" in t
               for t in labels)


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("paper", diagrams.PAPERS)
def test_paper_diagram_shows_the_paper_config_and_is_readable(paper: str) -> None:
    config = diagrams.paper_config(paper)
    fig = diagrams.draw_architecture(paper, config, variant=diagrams.paper_variant(paper))
    labels = texts(fig)
    depth_field, width_field = ENCODER_FIELDS[paper]
    depth, width = getattr(config, depth_field), getattr(config, width_field)
    assert has_depth_and_width(labels, depth, width), (depth, width, labels)
    for key in diagrams.losses(paper, config):
        assert key in labels, f"{paper}: loss {key!r} is not in the diagram"
    assert diagrams.check_layout(fig) == []


@pytest.mark.parametrize("paper", diagrams.PAPERS)
def test_diagram_follows_a_changed_config(paper: str) -> None:
    depth_field, width_field = ENCODER_FIELDS[paper]
    config = dataclasses.replace(diagrams.paper_config(paper), **{depth_field: 7})
    labels = texts(diagrams.draw_architecture(paper, config, variant="changed"))
    assert has_depth_and_width(labels, 7, getattr(config, width_field))


@pytest.mark.parametrize("paper", diagrams.PAPERS)
def test_diagram_names_the_losses_pretrain_step_computes(paper: str) -> None:
    """Run one pre-training step of the chapter's toy model: every loss it returns (the
    non-zero terms, without the total and the accuracies) is in that model's diagram."""
    spec = chapter(paper)
    name = spec.toy_models[0]
    torch.manual_seed(0)
    model = spec.toy_model(name)
    batch = model.example_batch(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.pretrain_step(batch)
    computed = {k for k, v in out.items()
                if k != "loss" and not k.startswith("acc_") and float(v) != 0.0}
    assert computed, out
    assert computed <= set(diagrams.losses(paper, model.config))
    fig = diagrams.draw_architecture(paper, model.config, variant=name)
    assert computed <= set(texts(fig))
    assert diagrams.check_layout(fig) == []


def test_losses_switch_off_with_the_config() -> None:
    config = dataclasses.replace(diagrams.paper_config("simvtp"), vtm_weight=0.0)
    assert "loss_vtm" not in diagrams.losses("simvtp", config)
    labels = texts(diagrams.draw_architecture("simvtp", config, variant="no vtm"))
    assert "loss_vtm" not in labels and "loss_vtc" in labels


def test_check_layout_reports_overlaps_and_overflow() -> None:
    cv = diagrams.Canvas("a test")
    cv.box(1, 1, 4, 1, "one label", "model")
    cv.box(1.5, 1.0, 4, 1, "another label", "text")
    cv.box(8, 1, 0.5, 0.5, "a label far too long for its box", "head")
    problems = diagrams.check_layout(cv.fig)
    assert any(p.startswith("overlap") for p in problems), problems
    assert any(p.startswith("runs out") for p in problems), problems
    assert any(p.startswith("boxes overlap") for p in problems), problems


def test_unknown_paper_is_an_error() -> None:
    with pytest.raises(ValueError, match="known"):
        diagrams.draw_architecture("clip")
