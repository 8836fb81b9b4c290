"""The synthetic video-text benchmark: rendered shapes that move, grow, shrink, appear, vanish.

Every clip shows one object doing one thing for the whole clip (``single``) or two objects
acting one after the other (``sequence``: "first the red circle moves left, then the blue
square grows"). Objects have a colour, a shape and a size (:data:`ATTRIBUTES`); motions are
the eight of :data:`MOTIONS`. Clips are real H.264 mp4 files; captions come from templates
with synonyms (several per clip, MSR-VTT-like) and annotations are written for every
downstream task of the five papers (see :mod:`vlbook.data` for the schema).

Temporal design. A motion is centred on the clip: the object's position/size/opacity at the
middle of its event is drawn independently of the motion, and the motion moves it
symmetrically around that state (``x(u) = c + d·D·(u - ½)``). For "left" against "right" (and
up/down, grow/shrink, appear/disappear) the distribution of what one frame shows — at a random
time, or at the middle — is then identical, so no single frame can tell a motion from its
opposite; two frames can. ``tests/test_data_synthetic.py`` checks this with linear probes.

Generation is deterministic for a seed: clip ``i`` of split ``s`` uses the random generator
``default_rng([seed, s, i])``, whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlbook.data.annotations import write_jsonl
from vlbook.data.video import write_video
from vlbook.paths import synthetic_root

FORMAT_VERSION = 1

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 100, 240),
    "yellow": (240, 215, 40),
    "purple": (160, 70, 215),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, float] = {"small": 0.10, "large": 0.16}  # radius as a fraction of the frame
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink", "appear", "disappear")
OPPOSITE: dict[str, str] = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "grow": "shrink",
    "shrink": "grow",
    "appear": "disappear",
    "disappear": "appear",
}
#: Attribute vocabularies, for answer vocabularies and multiple-choice distractors.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "motion": MOTIONS,
}
#: Attributes that one frame cannot decide (the temporal subset).
TEMPORAL_ATTRIBUTES: tuple[str, ...] = ("motion", "order")
COUNT_WORDS: tuple[str, ...] = ("one", "two")
#: The fixed answer vocabulary of open-ended QA.
ANSWER_VOCAB: tuple[str, ...] = tuple(
    sorted(set(COLOURS) | set(SHAPES) | set(SIZES) | set(MOTIONS) | set(COUNT_WORDS))
)
#: Class names of the classification task (clip-level motion, Kinetics-like).
CLASS_NAMES: tuple[str, ...] = MOTIONS

BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (30, 30, 34),
    (62, 62, 70),
    (48, 40, 34),
    (28, 44, 52),
    (96, 96, 96),
)

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "block"),
    "triangle": ("triangle", "three-sided shape"),
    "diamond": ("diamond", "rhombus"),
}
#: Verb phrases per motion; the first is the canonical one used by multiple-choice options.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves left", "moves to the left", "slides left", "travels leftward"),
    "right": ("moves right", "moves to the right", "slides right", "travels rightward"),
    "up": ("moves up", "rises", "slides upward", "travels upward"),
    "down": ("moves down", "falls", "slides downward", "drops"),
    "grow": ("grows", "gets bigger", "expands", "increases in size"),
    "shrink": ("shrinks", "gets smaller", "contracts", "decreases in size"),
    "appear": ("appears", "fades in", "comes into view", "shows up"),
    "disappear": ("disappears", "fades out", "vanishes", "fades away"),
}
SINGLE_TEMPLATES: tuple[str, ...] = (
    "{a} {ma}",
    "in this video {a} {ma}",
    "we see {a} that {ma}",
    "a clip where {a} {ma}",
    "{a} {ma} on a plain background",
)
SEQUENCE_TEMPLATES: tuple[str, ...] = (
    "first {a} {ma}, then {b} {mb}",
    "{a} {ma} and then {b} {mb}",
    "{a} {ma} before {b} {mb}",
    "after {a} {ma}, {b} {mb}",
    "{b} {mb} after {a} {ma}",
)
IMAGE_TEMPLATES: tuple[str, ...] = (
    "{objs}",
    "a picture of {objs}",
    "an image showing {objs}",
    "{objs} on a plain background",
)

TRAVEL = 0.35  # distance of a move, fraction of the frame
SCALE_CHANGE = 1.0  # grow/shrink: radius goes from (1 - ½·k) to (1 + ½·k) of its base
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
TASK_FILES: tuple[str, ...] = (
    "clips",
    "retrieval",
    "caption",
    "mc",
    "qa",
    "frame_labels",
    "steps",
    "classification",
    "image_text",
)

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        num_train=32,
        num_val=8,
        num_test=16,
        num_frames=8,
        size=32,
        fps=8.0,
        captions_per_clip=3,
        sequence_fraction=0.5,
        seed=0,
    ),
    "toy": dict(
        num_train=2000,
        num_val=200,
        num_test=500,
        num_frames=16,
        size=64,
        fps=8.0,
        captions_per_clip=5,
        sequence_fraction=0.5,
        seed=0,
    ),
}


# --------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """One object: its attributes and its state at the middle of its event."""

    colour: str
    shape: str
    size: str
    x: float  # centre at mid-event, pixels
    y: float
    radius: float  # base radius at mid-event, pixels


@dataclass
class Event:
    """Object ``obj`` performs ``motion`` during normalised time ``[start, end]``."""

    obj: int
    motion: str
    start: float
    end: float


@dataclass
class Scene:
    kind: str  # "single" or "sequence"
    objects: list[SceneObject]
    events: list[Event]
    background: tuple[int, int, int]
    size: int


def _max_radius_factor(motion: str) -> float:
    return 1 + SCALE_CHANGE / 2 if motion in ("grow", "shrink") else 1.0


def _place(rng: np.random.Generator, size: int, radius: float, motion: str) -> tuple[float, float]:
    # 1.3: the farthest vertex of a triangle/square/diamond of base radius 1
    margin = 1.3 * radius * _max_radius_factor(motion) + 1.0
    travel = TRAVEL * size
    lo, hi = margin, size - margin
    x = rng.uniform(lo, hi)
    y = rng.uniform(lo, hi)
    if motion in ("left", "right"):
        x = rng.uniform(lo + travel / 2, hi - travel / 2)
    elif motion in ("up", "down"):
        y = rng.uniform(lo + travel / 2, hi - travel / 2)
    return x, y


def _sample_object(
    rng: np.random.Generator, size: int, motion: str, exclude_colour: str | None = None
) -> SceneObject:
    colours = [c for c in COLOURS if c != exclude_colour]
    colour = colours[int(rng.integers(len(colours)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    size_name = tuple(SIZES)[int(rng.integers(len(SIZES)))]
    radius = SIZES[size_name] * size
    x, y = _place(rng, size, radius, motion)
    return SceneObject(colour, shape, size_name, x, y, radius)


def sample_scene(rng: np.random.Generator, size: int, sequence_fraction: float = 0.5) -> Scene:
    """A random scene: one object and one motion, or two objects acting in turn."""
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if rng.random() >= sequence_fraction:
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        return Scene(
            "single",
            [_sample_object(rng, size, motion)],
            [Event(0, motion, 0.0, 1.0)],
            background,
            size,
        )
    m1, m2 = (MOTIONS[int(i)] for i in rng.integers(len(MOTIONS), size=2))
    a = _sample_object(rng, size, m1)
    b = _sample_object(rng, size, m2, exclude_colour=a.colour)
    for _ in range(20):  # keep the two paths apart when possible
        if np.hypot(a.x - b.x, a.y - b.y) > (a.radius + b.radius) * 1.5 + TRAVEL * size * 0.5:
            break
        b.x, b.y = _place(rng, size, b.radius, m2)
    return Scene(
        "sequence", [a, b], [Event(0, m1, 0.0, 0.5), Event(1, m2, 0.5, 1.0)], background, size
    )


def object_states(scene: Scene, times: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per object, arrays ``x, y, radius, alpha`` at normalised times ``times`` (in [0, 1])."""
    states = []
    for k, obj in enumerate(scene.objects):
        x = np.full(len(times), obj.x)
        y = np.full(len(times), obj.y)
        r = np.full(len(times), obj.radius)
        alpha = np.ones(len(times))
        for ev in scene.events:
            if ev.obj != k:
                continue
            p = np.clip((times - ev.start) / (ev.end - ev.start), 0.0, 1.0)
            offset = p - 0.5
            travel = TRAVEL * scene.size
            if ev.motion == "left":
                x = obj.x - travel * offset
            elif ev.motion == "right":
                x = obj.x + travel * offset
            elif ev.motion == "up":
                y = obj.y - travel * offset
            elif ev.motion == "down":
                y = obj.y + travel * offset
            elif ev.motion == "grow":
                r = obj.radius * (1 + SCALE_CHANGE * offset)
            elif ev.motion == "shrink":
                r = obj.radius * (1 - SCALE_CHANGE * offset)
            elif ev.motion == "appear":
                alpha = p
            elif ev.motion == "disappear":
                alpha = 1 - p
        states.append({"x": x, "y": y, "radius": r, "alpha": alpha})
    return states


_NORMALS: dict[str, np.ndarray] = {
    "square": np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float),
    "diamond": np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float) / np.sqrt(2),
    "triangle": np.array([[0, 1], [np.sqrt(3) / 2, -0.5], [-np.sqrt(3) / 2, -0.5]]),
}
_INRADIUS: dict[str, float] = {"square": 0.9, "diamond": 0.85, "triangle": 0.65}


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (pixels, positive inside)."""
    if shape == "circle":
        sd = radius - np.hypot(dx, dy)
    else:
        normals = _NORMALS[shape]
        proj = np.max(np.stack([n[0] * dx + n[1] * dy for n in normals]), axis=0)
        sd = _INRADIUS[shape] * radius - proj
    return np.clip(sd + 0.5, 0.0, 1.0)


def render(scene: Scene, num_frames: int) -> np.ndarray:
    """The clip of ``scene`` as uint8 RGB frames ``(num_frames, size, size, 3)``."""
    times = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.array([0.5])
    return render_at(scene, times)


def render_at(scene: Scene, times: np.ndarray, full_opacity: bool = False) -> np.ndarray:
    """Frames of ``scene`` at normalised ``times``; ``full_opacity`` draws every object."""
    s = scene.size
    coords = np.arange(s) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    shade = (0.85 + 0.3 * yy / s)[None, :, :, None]
    frames = np.broadcast_to(
        np.asarray(scene.background, dtype=float)[None, None, None, :] * shade,
        (len(times), s, s, 3),
    ).copy()
    for obj, st in zip(scene.objects, object_states(scene, times)):
        dx = xx[None] - st["x"][:, None, None]
        dy = yy[None] - st["y"][:, None, None]
        cov = _coverage(obj.shape, dx, dy, st["radius"][:, None, None])
        alpha = 1.0 if full_opacity else st["alpha"][:, None, None]
        cov = (cov * alpha)[..., None]
        frames = frames * (1 - cov) + np.asarray(COLOURS[obj.colour], dtype=float) * cov
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------


def object_phrase(obj: SceneObject | dict, rng: np.random.Generator | None = None) -> str:
    """``"a small red circle"``; synonyms drawn with ``rng`` (canonical words without one)."""
    o = obj if isinstance(obj, dict) else asdict(obj)
    size = SIZE_WORDS[o["size"]]
    shape = SHAPE_WORDS[o["shape"]]
    if rng is None:
        return f"a {size[0]} {o['colour']} {shape[0]}"
    return f"a {size[rng.integers(len(size))]} {o['colour']} {shape[rng.integers(len(shape))]}"


def caption(
    objects: list[dict],
    events: list[dict],
    rng: np.random.Generator | None = None,
    template: int | None = None,
) -> str:
    """A caption of a clip from its objects and events (``rng=None``: canonical wording).

    ``events`` in the order they happen; the canonical caption (template 0, first synonyms) is
    what multiple-choice options use, so options differ only in the changed attribute's words.
    """

    def verb(motion: str) -> str:
        phrases = MOTION_PHRASES[motion]
        return phrases[0] if rng is None else phrases[int(rng.integers(len(phrases)))]

    templates = SINGLE_TEMPLATES if len(events) == 1 else SEQUENCE_TEMPLATES
    if template is None:
        template = 0 if rng is None else int(rng.integers(len(templates)))
    fields = {"a": object_phrase(objects[events[0]["obj"]], rng), "ma": verb(events[0]["motion"])}
    if len(events) > 1:
        fields |= {
            "b": object_phrase(objects[events[1]["obj"]], rng),
            "mb": verb(events[1]["motion"]),
        }
    return templates[template].format(**fields)


def _captions(
    objects: list[dict], events: list[dict], rng: np.random.Generator, n: int
) -> list[str]:
    out = [caption(objects, events)]
    for _ in range(20 * n):
        if len(out) >= n:
            break
        c = caption(objects, events, rng)
        if c not in out:
            out.append(c)
    return out


def _alternatives(attribute: str, value: str, taken: set[str]) -> list[str]:
    if attribute == "colour":  # the two objects of a sequence keep distinct colours
        return [v for v in ATTRIBUTES[attribute] if v != value and v not in taken]
    return [v for v in ATTRIBUTES[attribute] if v != value]


def multiple_choice(
    objects: list[dict], events: list[dict], rng: np.random.Generator, num_options: int = 5
) -> dict[str, Any]:
    """5-way options whose distractors each change exactly one attribute of the true caption.

    One distractor is always temporal (the opposite motion; for sequences also the swapped
    order); the others change a colour, shape, size or a motion to a non-opposite one.
    """
    true = caption(objects, events)
    changes: list[tuple[str, int | None, str | None]] = []  # (attribute, object/event, value)
    ev = int(rng.integers(len(events)))
    changes.append(("motion", ev, OPPOSITE[events[ev]["motion"]]))
    if len(events) > 1:
        changes.append(("order", None, None))
    pool: list[tuple[str, int | None, str | None]] = []
    for attribute in ("colour", "shape", "size"):
        for k, obj in enumerate(objects):
            taken = {o[attribute] for o in objects}
            for v in _alternatives(attribute, obj[attribute], taken):
                pool.append((attribute, k, v))
    for e, event in enumerate(events):
        for m in MOTIONS:
            if m not in (event["motion"], OPPOSITE[event["motion"]]):
                pool.append(("motion", e, m))
    options, attributes = [true], [None]

    def add(change: tuple[str, int | None, str | None]) -> None:
        attribute, k, value = change
        objs = [dict(o) for o in objects]
        evs = [dict(e) for e in events]
        if attribute == "order":
            evs = evs[::-1]
        elif attribute == "motion":
            evs[k]["motion"] = value
        else:
            objs[k][attribute] = value
        text = caption(objs, evs)
        if text not in options:
            options.append(text)
            attributes.append(attribute)

    for change in changes:
        add(change)
    shuffled = [pool[i] for i in rng.permutation(len(pool))]
    for change in shuffled:  # first one distractor per attribute not used yet
        if len(options) < num_options and change[0] not in attributes:
            add(change)
    for change in shuffled:
        if len(options) < num_options:
            add(change)
    order = rng.permutation(len(options))
    return {
        "options": [options[i] for i in order],
        "answer": int(np.argmax(order == 0)),
        "option_attributes": [attributes[i] for i in order],
    }


def questions(
    objects: list[dict], events: list[dict], rng: np.random.Generator, n: int = 3
) -> list[dict]:
    """Open-ended questions with one-word answers from :data:`ANSWER_VOCAB`.

    At least one per clip is temporal (what an object does, or which changes first).
    """

    def name(o: dict) -> str:
        return f"{o['colour']} {o['shape']}"

    temporal, static = [], []
    for e in events:
        o = objects[e["obj"]]
        temporal.append(
            {
                "question": f"what does the {name(o)} do?",
                "answer": e["motion"],
                "answer_type": "motion",
                "temporal": True,
            }
        )
    if len(events) > 1:
        first = objects[events[0]["obj"]]
        temporal.append(
            {
                "question": "what colour is the object that changes first?",
                "answer": first["colour"],
                "answer_type": "order",
                "temporal": True,
            }
        )
    for o in objects:
        static.append(
            {
                "question": f"what colour is the {o['size']} {o['shape']}?",
                "answer": o["colour"],
                "answer_type": "colour",
                "temporal": False,
            }
        )
        static.append(
            {
                "question": f"what shape is the {o['colour']} object?",
                "answer": o["shape"],
                "answer_type": "shape",
                "temporal": False,
            }
        )
        static.append(
            {
                "question": f"is the {name(o)} small or large?",
                "answer": o["size"],
                "answer_type": "size",
                "temporal": False,
            }
        )
    static.append(
        {
            "question": "how many objects are there?",
            "answer": COUNT_WORDS[len(objects) - 1],
            "answer_type": "count",
            "temporal": False,
        }
    )
    chosen = [temporal[int(rng.integers(len(temporal)))]]
    rest = [q for q in temporal + static if q is not chosen[0]]
    for i in rng.permutation(len(rest))[: max(n - 1, 0)]:
        chosen.append(rest[int(i)])
    return chosen


# --------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------


def _clip_job(job: tuple) -> dict[str, Any]:
    split, index, cfg, root = job
    rng = np.random.default_rng([cfg["seed"], SPLIT_CODES[split], index])
    scene = sample_scene(rng, cfg["size"], cfg["sequence_fraction"])
    video_id = f"{split}_{index:05d}"
    frames = render(scene, cfg["num_frames"])
    write_video(Path(root) / "videos" / f"{video_id}.mp4", frames, cfg["fps"])
    image = render_at(scene, np.array([0.5]), full_opacity=True)[0]
    from PIL import Image

    Image.fromarray(image).save(Path(root) / "images" / f"{video_id}.png")
    objects = [asdict(o) for o in scene.objects]
    events = [asdict(e) for e in scene.events]
    n, fps = cfg["num_frames"], cfg["fps"]
    times = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
    duration = n / fps
    base = {"video": f"videos/{video_id}.mp4", "video_id": video_id}
    caps = _captions(objects, events, rng, cfg["captions_per_clip"])
    frame_labels = []
    for u in times:  # the event under way at time u (the later one from its start on)
        label = [e for e in scene.events if e.start <= u][-1].motion
        frame_labels.append(MOTIONS.index(label))
    out: dict[str, Any] = {
        "clips": [
            base
            | {
                "kind": scene.kind,
                "objects": objects,
                "events": events,
                "background": list(scene.background),
                "num_frames": n,
                "fps": fps,
                "duration": duration,
                "caption": caps[0],
            }
        ],
        "retrieval": [base | {"captions": caps}],
        "caption": [base | {"captions": caps}],
        "mc": [
            base
            | {"question": "which caption describes the video?"}
            | multiple_choice(objects, events, rng)
        ],
        "qa": [base | q for q in questions(objects, events, rng)],
        "frame_labels": [base | {"frame_labels": frame_labels, "fps": fps}],
        "steps": [],
        "classification": [],
        "image_text": [],
    }
    if scene.kind == "sequence":
        out["steps"].append(
            base
            | {
                "steps": [
                    {
                        "text": caption([objects[e["obj"]]], [e | {"obj": 0}]),
                        "start": e["start"] * duration,
                        "end": e["end"] * duration,
                    }
                    for e in events
                ],
                "duration": duration,
            }
        )
    else:
        motion = events[0]["motion"]
        out["classification"].append(base | {"label": MOTIONS.index(motion), "label_name": motion})
    img_objs = " and ".join(object_phrase(o) for o in objects)
    img_caps = [IMAGE_TEMPLATES[0].format(objs=img_objs)]
    for _ in range(10):
        t = IMAGE_TEMPLATES[int(rng.integers(len(IMAGE_TEMPLATES)))]
        c = t.format(objs=" and ".join(object_phrase(o, rng) for o in objects))
        if c not in img_caps:
            img_caps.append(c)
        if len(img_caps) >= 2:
            break
    out["image_text"].append(
        {"image": f"images/{video_id}.png", "image_id": video_id, "captions": img_caps}
    )
    return out


def _settings(
    num_train: int,
    num_val: int,
    num_test: int,
    num_frames: int,
    size: int,
    fps: float,
    seed: int,
    captions_per_clip: int,
    sequence_fraction: float,
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "num_frames": int(num_frames),
        "size": int(size),
        "fps": float(fps),
        "seed": int(seed),
        "captions_per_clip": int(captions_per_clip),
        "sequence_fraction": float(sequence_fraction),
    }


def generate(
    root: str | Path,
    *,
    num_train: int,
    num_val: int,
    num_test: int,
    num_frames: int,
    size: int,
    fps: float,
    seed: int,
    captions_per_clip: int = 5,
    sequence_fraction: float = 0.5,
    workers: int | None = None,
    tokenizer_vocab_size: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Render the benchmark into ``root`` and return it.

    Writes ``videos/*.mp4`` (H.264), ``images/*.png``, ``<task>_<split>.jsonl`` for every task
    of :data:`TASK_FILES`, ``answers.json`` and ``classes.json``, a WordPiece tokenizer trained
    on the text (``tokenizer/``) and, last, ``manifest.json`` (settings, counts, timing) which
    marks the folder complete. The work happens in a temporary sibling folder renamed into
    place, so a crash or a concurrent call never leaves a half-written benchmark at ``root``.

    An existing benchmark at ``root`` made with other settings is replaced only with
    ``overwrite=True`` (else :class:`SyntheticExistsError`), and then only the files its
    manifest lists as written by the generator are removed: any other file is kept (and
    reported with a warning). A folder without a manifest is never touched.
    """
    if size % 2:
        raise ValueError(f"size must be even (H.264 yuv420p), got {size}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show a motion, got {num_frames}")
    root = Path(root)
    if root.exists() and any(root.iterdir()) and read_manifest(root) is None:
        raise FileExistsError(
            f"{root} is not empty and holds no vlbook synthetic benchmark (manifest.json); "
            "refusing to replace it"
        )
    cfg = _settings(
        num_train,
        num_val,
        num_test,
        num_frames,
        size,
        fps,
        seed,
        captions_per_clip,
        sequence_fraction,
    )
    root = Path(root)
    _check_replaceable(root, cfg, overwrite)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "videos").mkdir(parents=True)
    (tmp / "images").mkdir()
    started = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    total = num_train + num_val + num_test
    workers = (
        workers if workers is not None else (1 if total < 200 else min(2, os.cpu_count() or 1))
    )
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    texts: list[str] = []
    try:
        for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
            jobs = [(split, i, cfg, str(tmp)) for i in range(n)]
            results = pool.map(_clip_job, jobs, chunksize=16) if pool else map(_clip_job, jobs)
            merged: dict[str, list] = {t: [] for t in TASK_FILES}
            for res in results:
                for task in TASK_FILES:
                    merged[task].extend(res[task])
            for task in TASK_FILES:
                write_jsonl(tmp / f"{task}_{split}.jsonl", merged[task])
            counts[split] = {task: len(merged[task]) for task in TASK_FILES}
            if split == "train":
                for rec in merged["retrieval"]:
                    texts.extend(rec["captions"])
                for rec in merged["mc"]:
                    texts.extend(rec["options"])
                for rec in merged["qa"]:
                    texts.append(rec["question"])
                for rec in merged["image_text"]:
                    texts.extend(rec["captions"])
    finally:
        if pool:
            pool.close()
            pool.join()
    (tmp / "answers.json").write_text(json.dumps(list(ANSWER_VOCAB), indent=1))
    (tmp / "classes.json").write_text(json.dumps(list(CLASS_NAMES), indent=1))
    from vlbook.data.tokenizer import train_wordpiece

    # every vocabulary word, so that val/test text never meets [UNK]
    vocab_text = [
        " ".join(p for ps in MOTION_PHRASES.values() for p in ps),
        " ".join(w for ws in SIZE_WORDS.values() for w in ws),
        " ".join(w for ws in SHAPE_WORDS.values() for w in ws),
        " ".join(ANSWER_VOCAB),
        " ".join(SINGLE_TEMPLATES + SEQUENCE_TEMPLATES + IMAGE_TEMPLATES),
    ]
    train_wordpiece(texts + vocab_text, tmp / "tokenizer", vocab_size=tokenizer_vocab_size)
    manifest = {
        "name": "vlbook-synthetic",
        "settings": cfg,
        "counts": counts,
        "generation_seconds": round(time.perf_counter() - started, 3),
        "workers": workers,
        "tasks": list(TASK_FILES),
        # every file the generator wrote (relative paths): `overwrite` removes these only
        "files": sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        + ["manifest.json"],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if root.exists():
        _replace_generated(root, tmp)
        return root
    try:
        tmp.rename(root)
    except OSError:
        if is_complete(root, cfg):  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    return root


class SyntheticExistsError(FileExistsError):
    """A synthetic benchmark with other settings exists where a new one would be written."""


def _settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}={old.get(k)!r} (requested {new.get(k)!r})" for k in keys)


def _check_replaceable(root: Path, cfg: dict[str, Any], overwrite: bool) -> None:
    manifest = read_manifest(root)
    if manifest is None or overwrite:
        return
    old = manifest.get("settings") or {}
    if old != cfg:
        raise SyntheticExistsError(
            f"{root} already holds a synthetic benchmark made with other settings: "
            f"{_settings_diff(old, cfg)}. Nothing was changed. Write the new one elsewhere "
            "(--root DIR / root=...), or replace it explicitly with --overwrite "
            "(overwrite=True), which removes only the files the generator wrote and keeps "
            "any other file."
        )


def _generated_files(root: Path) -> list[Path]:
    """The files of ``root`` its manifest says the generator wrote.

    Manifests older than the ``files`` list get the generator's own layout: the annotation
    files, ``answers.json``, ``classes.json``, the tokenizer and the media the records name.
    """
    manifest = read_manifest(root) or {}
    if isinstance(manifest.get("files"), list):
        names = [str(n) for n in manifest["files"]]
    else:
        names = ["manifest.json", "answers.json", "classes.json"]
        tokenizer = root / "tokenizer"
        if tokenizer.is_dir():
            names += [str(f.relative_to(root)) for f in tokenizer.rglob("*") if f.is_file()]
        for task in TASK_FILES:
            for split in ("train", "val", "test"):
                name = f"{task}_{split}.jsonl"
                names.append(name)
                try:
                    lines = (root / name).read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError):
                    continue
                for line in lines:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    for key in ("video", "image"):
                        if isinstance(rec, dict) and isinstance(rec.get(key), str):
                            names.append(rec[key])
    out = []
    base = root.resolve()
    for name in dict.fromkeys(names):
        path = (root / name).resolve()
        if path.is_relative_to(base) and path.is_file():  # never outside the folder
            out.append(root / name)
    return out


def _replace_generated(root: Path, tmp: Path) -> None:
    """Replace the generator's files in ``root`` by those of ``tmp``; keep every other file."""
    generated = {p.resolve() for p in _generated_files(root)}
    new_files = sorted(f for f in tmp.rglob("*") if f.is_file() and f.name != "manifest.json")
    new_files.append(tmp / "manifest.json")  # last: it marks the folder complete
    for f in new_files:  # check before removing anything
        dest = root / f.relative_to(tmp)
        if (dest.exists() or dest.is_symlink()) and dest.resolve() not in generated:
            raise SyntheticExistsError(
                f"{dest} was not written by the generator, but the new benchmark needs that "
                f"path; nothing in {root} was changed. The new benchmark is left in {tmp}."
            )
    (root / "manifest.json").unlink(missing_ok=True)  # incomplete until the new one lands
    for path in generated:
        path.unlink(missing_ok=True)
    kept = sorted(
        str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() or f.is_symlink()
    )
    for f in new_files:
        dest = root / f.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    if kept:
        warnings.warn(
            f"{root}: replaced the synthetic benchmark; kept {len(kept)} file(s) it had not "
            f"written: {', '.join(kept[:20])}{' …' if len(kept) > 20 else ''}",
            stacklevel=3,
        )


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_complete(root: str | Path, settings: dict[str, Any] | None = None) -> bool:
    """Whether ``root`` holds a finished benchmark (with ``settings``, when given)."""
    manifest = read_manifest(root)
    if manifest is None:
        return False
    if settings is not None and manifest.get("settings") != settings:
        return False
    root = Path(root)
    return (
        all(
            (root / f"{task}_{split}.jsonl").is_file()
            for task in TASK_FILES
            for split in ("train", "val", "test")
        )
        and (root / "tokenizer").is_dir()
    )


def ensure_synthetic(
    scale: str, root: str | Path | None = None, *, overwrite: bool = False, **overrides: Any
) -> Path:
    """The benchmark of preset ``scale`` (``"smoke"`` or ``"toy"``), generated if needed.

    Lives in ``synthetic_root()/scale`` unless ``root`` is given; reused when its
    ``manifest.json`` records the same settings. A benchmark with other settings is
    never replaced silently: :class:`SyntheticExistsError` names both settings unless
    ``overwrite=True`` (which removes only the files the generator wrote).
    """
    if scale not in PRESETS:
        raise ValueError(
            f"synthetic preset {scale!r} is not known; choose one of {sorted(PRESETS)} "
            "(the 'full' scale uses the real datasets, see `vlbook-data health`)"
        )
    params = PRESETS[scale] | overrides
    root = Path(root) if root is not None else synthetic_root() / scale
    settings = _settings(**{k: v for k, v in params.items() if k != "workers"})
    if is_complete(root, settings):
        return root
    if root.exists() and read_manifest(root) is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists, is not empty and is not a vlbook synthetic benchmark "
            "(no manifest.json); refusing to replace it"
        )
    return generate(root, overwrite=overwrite, **params)


def load_clips(root: str | Path, split: str) -> list[dict[str, Any]]:
    """The scene records (objects, events, captions) of ``split``."""
    from vlbook.data.annotations import read_jsonl

    return read_jsonl(Path(root) / f"clips_{split}.jsonl")


def annotation_path(root: str | Path, task: str, split: str) -> Path:
    """``root/<task>_<split>.jsonl``, checked to exist."""
    if task not in TASK_FILES:
        raise ValueError(f"unknown synthetic task {task!r}; known: {TASK_FILES}")
    path = Path(root) / f"{task}_{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; generate with ensure_synthetic()")
    return path


def examples(root: str | Path, split: str = "test", n: int = 6) -> list[dict[str, Any]]:
    """The first ``n`` clips of ``split`` for figures: frames, captions, a question, MC options.

    Each item: ``video_id``, ``kind``, ``frames`` (uint8 ``(T, H, W, 3)``, decoded from the
    mp4), ``captions``, ``question``/``answer`` (its first QA record) and ``options`` /
    ``answer_index`` (its multiple-choice record).
    """
    from vlbook.data.annotations import read_jsonl
    from vlbook.data.video import read_frames

    root = Path(root)
    clips = read_jsonl(root / f"clips_{split}.jsonl")[:n]
    captions = {r["video_id"]: r["captions"] for r in read_jsonl(root / f"retrieval_{split}.jsonl")}
    qa: dict[str, dict] = {}
    for r in read_jsonl(root / f"qa_{split}.jsonl"):
        qa.setdefault(r["video_id"], r)
    mc = {r["video_id"]: r for r in read_jsonl(root / f"mc_{split}.jsonl")}
    out = []
    for clip in clips:
        vid = clip["video_id"]
        out.append(
            {
                "video_id": vid,
                "kind": clip["kind"],
                "frames": read_frames(root / clip["video"], range(clip["num_frames"])),
                "captions": captions[vid],
                "question": qa[vid]["question"],
                "answer": qa[vid]["answer"],
                "options": mc[vid]["options"],
                "answer_index": mc[vid]["answer"],
            }
        )
    return out


def foreground_features(frames: np.ndarray, pool: int = 2) -> np.ndarray:
    """Per-frame pixel features of a synthetic clip: distance to the frame's median colour.

    The background of a synthetic clip is one flat colour, so ``|frame - median colour|``
    summed over RGB is a map of where the objects are; it is average-pooled by ``pool`` and
    flattened to ``(T, (H/pool)·(W/pool))`` in ``[0, 3]``. A deliberately simple, model-free
    feature: the intro chapter probes it to show which questions need more than one frame.
    """
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {f.shape}")
    background = np.median(f.reshape(len(f), -1, 3), axis=1)[:, None, None, :]
    fg = np.abs(f - background).sum(-1) / 255.0
    t, h, w = fg.shape
    h2, w2 = h // pool, w // pool
    fg = fg[:, : h2 * pool, : w2 * pool].reshape(t, h2, pool, w2, pool).mean((2, 4))
    return fg.reshape(t, -1)
