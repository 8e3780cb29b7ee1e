"""CLIP auto-labeler: does what the feature looks at match a named concept better than the class?

The person names concepts ("water", "a red square"); each class is described by its name (or a
text the person gives). For a pair, CLIP (through `open_clip`) embeds the pair's top images in
three views and the concepts as prompts ("a photo of {}."), and compares them by cosine similarity:

    whole         the image as it is
    nam_weighted  the image multiplied by the feature's NAM (upsampled to the image): only what
                  the feature looks at stays visible
    nam_crop      a crop around the NAM's hot region (NAM ≥ 0.5, padded), resized by CLIP

The decision uses the NAM views (by default): when the best-matching named concept beats the
class's own text by more than `margin`, the pair is proposed spurious, with the answer the
concept carries (`background` unless the concept is marked `separate_object`).

CLIP also gives a second spuriosity score per image: for each class, the within-class z-score of
each chosen concept's similarity on the whole image, averaged over the concepts
(`concept_spuriosity`); `compute_concept_similarities` stores the similarities of every image in
the project cache (a background job), `concept_spuriosity_scores` reads them back.

Decision and scoring are pure NumPy functions over embeddings and similarities; only the
`ClipModel` wrapper touches open_clip.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

# torch is imported where it is used, so the labeler's declarations (command-line flags, the page's form)
# load without it.

from . import register_labeler
from .base import AutoLabeler, AutoLabelError, Option, PairImages, Progress, Proposal, confidence_from_margin
from ..labels.vote import BACKGROUND, MAIN_OBJECT, SEPARATE_OBJECT, SPURIOUS_ANSWERS

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
DEFAULT_TEMPLATE = "a photo of {}."
VIEWS = ("whole", "nam_weighted", "nam_crop")
DECISION_VIEWS = ("nam_weighted", "nam_crop")
NAM_HOT = 0.5  # the crop frames the pixels where the NAM is at least half its peak
CROP_PAD = 0.15  # of the crop's side on every edge, so the crop keeps a little context
CONFIDENCE_STEP = 0.01  # cosine similarity; CLIP's similarities differ by a few hundredths


# ---- concepts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    """A named concept and the answer a pair gets when it wins (background or separate_object)."""

    text: str
    answer: str = BACKGROUND

    def __post_init__(self):
        if not self.text.strip():
            raise AutoLabelError("a concept needs some text.")
        if self.answer not in SPURIOUS_ANSWERS:
            raise AutoLabelError(f"concept {self.text!r}: the answer must be one of {', '.join(SPURIOUS_ANSWERS)}; "
                                 f"got {self.answer!r}.")


_ANSWER_WORDS = {"background": BACKGROUND, "bg": BACKGROUND, "separate_object": SEPARATE_OBJECT,
                 "separate object": SEPARATE_OBJECT, "separate": SEPARATE_OBJECT, "object": SEPARATE_OBJECT}


def parse_concepts(value: str | Iterable[str | Mapping[str, str] | Concept]) -> list[Concept]:
    """Concepts from text (one per line or comma-separated) or from a list.

    A line may end in "| background" or "| separate_object" to say which answer it stands for:

        water | background
        a red square | separate_object
        grass
    """
    if isinstance(value, str):
        items: list[Any] = [part for line in value.splitlines() for part in
                            (line.split(",") if "|" not in line else [line])]
    else:
        items = list(value)
    concepts: list[Concept] = []
    for item in items:
        if isinstance(item, Concept):
            concept = item
        elif isinstance(item, Mapping):
            concept = Concept(str(item.get("text", "")).strip(), str(item.get("answer", BACKGROUND)))
        else:
            text, _, answer = str(item).partition("|")
            if not text.strip():
                continue
            word = answer.strip().lower()
            if word and word not in _ANSWER_WORDS:
                raise AutoLabelError(f"concept line {str(item).strip()!r}: after '|' write background or "
                                     "separate_object.")
            concept = Concept(text.strip(), _ANSWER_WORDS.get(word, BACKGROUND))
        if concept.text not in {c.text for c in concepts}:
            concepts.append(concept)
    return concepts


# ---- pure functions over embeddings -------------------------------------------------------------
def cosine_similarity(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """[n, E] × [m, E] -> [n, m] cosine similarities (rows are normalised here; zero rows give 0)."""
    a = np.asarray(image_embeddings, dtype=np.float64)
    b = np.asarray(text_embeddings, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass(frozen=True)
class ClipDecision:
    answer: str
    best_concept: int | None  # index into the spurious concepts, None when there are none
    gap: float  # best concept's score minus the class text's score
    scores: np.ndarray  # [1 + m]: the class text first, then each concept


def clip_decision(similarity: np.ndarray, concept_answers: Sequence[str], margin: float = 0.0) -> ClipDecision:
    """Decide one pair from its similarities.

    Args:
        similarity: float [k, V, 1 + m]: k images, V decision views, the class's own text at
            index 0 and m named concepts after it.
        concept_answers: [m] the answer each concept stands for.
        margin: how much (in cosine similarity) a concept must beat the class text by.

    Returns:
        `ClipDecision`: spurious (the winning concept's answer) when max concept score − class score
        > margin, else main_object; scores are means over images and views.
    """
    sims = np.asarray(similarity, dtype=np.float64)
    if sims.ndim != 3 or sims.shape[2] != len(concept_answers) + 1:
        raise ValueError(f"similarity must be [k, V, 1 + {len(concept_answers)}]; got {sims.shape}.")
    scores = sims.reshape(-1, sims.shape[2]).mean(axis=0)
    if not len(concept_answers):
        return ClipDecision(MAIN_OBJECT, None, float("-inf"), scores)
    best = int(np.argmax(scores[1:]))
    gap = float(scores[1 + best] - scores[0])
    answer = concept_answers[best] if gap > margin else MAIN_OBJECT
    return ClipDecision(answer, best, gap, scores)


def concept_spuriosity(similarity: np.ndarray, labels: np.ndarray,
                       concepts: Sequence[int] | Mapping[int, Sequence[int]],
                       mask: np.ndarray | None = None) -> np.ndarray:
    """A CLIP spuriosity score per image: mean over concepts of the within-class z-scored similarity.

    Args:
        similarity: float [N, M], each image's similarity with each concept.
        labels: int [N], the class of each image.
        concepts: the concept columns to use, for every class, or {class: columns} per class.
        mask: bool [N], the images to score (and to fit the per-class mean/std on); default all.

    Returns:
        float [N]; NaN outside `mask` and for classes without concepts. A concept whose similarity
        is constant within a class (std 0) contributes 0 rather than dividing by zero.
    """
    sims = np.asarray(similarity, dtype=np.float64)
    labels = np.asarray(labels)
    mask = np.ones(len(labels), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    out = np.full(len(labels), np.nan)
    for c in np.unique(labels[mask]):
        cols = list(concepts.get(int(c), ())) if isinstance(concepts, Mapping) else list(concepts)
        if not cols:
            continue
        rows = mask & (labels == c)
        block = sims[np.ix_(rows, cols)]
        mean = block.mean(axis=0)
        std = block.std(axis=0)
        z = np.where(std > 0, (block - mean) / np.where(std > 0, std, 1.0), 0.0)
        out[rows] = z.mean(axis=1)
    return out


# ---- image views --------------------------------------------------------------------------------
def _resize_map(nam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(nam, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


def nam_views(image: np.ndarray, nam: np.ndarray) -> dict[str, np.ndarray]:
    """The three views of one image.

    Args:
        image: uint8 [H, W, 3] at any resolution (the original file, for CLIP's sake).
        nam: float [h, w] in [0, 1], upsampled bilinearly to H × W.

    Returns:
        {"whole", "nam_weighted", "nam_crop"}: uint8 [., ., 3] images. An all-zero NAM gives a
        black weighted view and the whole image as the crop.
    """
    height, width = image.shape[:2]
    heat = _resize_map(nam, (height, width))
    weighted = np.round(image.astype(np.float32) * heat[..., None]).astype(np.uint8)
    hot = np.argwhere(heat >= NAM_HOT)
    if len(hot):
        (top, left), (bottom, right) = hot.min(axis=0), hot.max(axis=0) + 1
        pad_y, pad_x = int(round(CROP_PAD * (bottom - top))), int(round(CROP_PAD * (right - left)))
        crop = image[max(0, top - pad_y):min(height, bottom + pad_y), max(0, left - pad_x):min(width, right + pad_x)]
    else:
        crop = image
    return {"whole": image, "nam_weighted": weighted, "nam_crop": crop}


# ---- the model ----------------------------------------------------------------------------------
def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.startswith(("~", ".")) or text.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _weights_help(model_name: str) -> str:
    return (
        "This machine may have no network. Download the weights file once elsewhere (e.g. "
        f"open_clip_pytorch_model.bin of the {model_name} checkpoint you want) and pass its local path as "
        f"pretrained (pretrained='/models/clip/{model_name}.bin'), or pass model_name='local-dir:/folder' "
        "for a folder holding open_clip_config.json and the weights."
    )


class ClipModel:
    """An open_clip model, its image preprocessing and tokenizer; embeddings come back normalised."""

    def __init__(self, model, preprocess, tokenizer, name: str, device: str = "cpu"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device

    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """uint8 [H, W, 3] images (any sizes) -> float32 [n, E] unit vectors."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(im)))
                                     for im in images[start:start + batch_size]]).to(self.device)
                out.append(self.model.encode_image(batch, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
        """Texts -> float32 [m, E] unit vectors of the prompts `template.format(text)`."""
        import torch

        with torch.no_grad():
            tokens = self.tokenizer([template.format(t) for t in texts]).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()


def load_clip(model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
              device: str = "cpu") -> ClipModel:
    """Build an open_clip model with its weights.

    Args:
        model_name: an open_clip architecture ("ViT-B-32", "RN50", ...) or "local-dir:/folder"
            (a folder with open_clip_config.json and the weights file; `pretrained` is then unused).
        pretrained: a pretrained tag of that architecture ("openai", "laion2b_s34b_b79k"; fetched
            into open_clip's cache when the machine is online) or the path of a local weights file.
        device: "cpu" or "cuda".

    Raises:
        AutoLabelError: when the weights cannot be found, saying how to pass a local file. A CLIP
        without trained weights would propose arbitrary labels, so there is no random fallback.
    """
    return _load_clip_cached(str(model_name).strip(), str(pretrained or "").strip(), device)


@lru_cache(maxsize=2)
def _load_clip_cached(model_name: str, pretrained: str, device: str) -> ClipModel:
    import open_clip

    local_dir = model_name.startswith("local-dir:")
    if local_dir:
        folder = Path(model_name[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise AutoLabelError(f"{folder}: no open_clip_config.json there; a local-dir CLIP folder holds that "
                                 "file and the weights (e.g. open_clip_pytorch_model.bin).")
        if not any(any(folder.glob(f"*{ext}")) for ext in (".safetensors", ".bin", ".pth")):
            # open_clip would build the model with random weights and only log a warning
            raise AutoLabelError(f"{folder}: open_clip_config.json but no weights file (.safetensors, .bin or "
                                 ".pth) next to it.")
        kwargs: dict[str, Any] = {}
    else:
        if model_name not in open_clip.list_models():
            raise AutoLabelError(f"unknown CLIP architecture {model_name!r}; open_clip knows e.g. ViT-B-32, "
                                 "ViT-B-16, RN50, or use 'local-dir:/folder'.")
        if not pretrained:
            raise AutoLabelError(f"CLIP needs trained weights: give a pretrained tag of {model_name} "
                                 f"({', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none known'}) "
                                 f"or a local weights file. {_weights_help(model_name)}")
        path = Path(pretrained).expanduser()
        if path.is_file():
            pretrained = str(path)
        elif _looks_like_path(pretrained):
            raise AutoLabelError(f"CLIP weights file {pretrained!r} not found. {_weights_help(model_name)}")
        elif pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
            raise AutoLabelError(
                f"{pretrained!r} is neither a file nor a pretrained tag of {model_name} (tags: "
                f"{', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none'}). {_weights_help(model_name)}")
        kwargs = {"pretrained": pretrained}
        tag = open_clip.get_pretrained_cfg(model_name, pretrained) if not path.is_file() else {}
        if tag.get("quick_gelu") and not open_clip.get_model_config(model_name).get("quick_gelu"):
            # e.g. OpenAI's own weights were trained with QuickGELU; the plain architecture uses GELU,
            # which open_clip only warns about and which shifts every similarity a little.
            kwargs["force_quick_gelu"] = True
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, device=device, **kwargs)
    except Exception as err:  # download errors come as RuntimeError, bad files as several types
        raise AutoLabelError(f"cannot load CLIP {model_name} with weights {pretrained or 'from the folder'!r}: "
                             f"{err}. {_weights_help(model_name)}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    return ClipModel(model, preprocess, tokenizer, f"{model_name}:{pretrained or 'local'}", device)


def _load_original(path: str) -> np.ndarray:
    from ..data.images import load_rgb

    return np.asarray(load_rgb(path), dtype=np.uint8)


# ---- the labeler --------------------------------------------------------------------------------
def clip_evidence_table(evidence: Mapping[str, Any]) -> pd.DataFrame:
    """Per text (the class's first, then each concept): its answer, mean similarity per view, decision score."""
    texts = evidence.get("texts", [])
    frame = pd.DataFrame({"text": texts, "answer": evidence.get("text_answers", [""] * len(texts))})
    for view, values in evidence.get("mean_similarity", {}).items():
        frame[view] = values
    if "decision_scores" in evidence:
        frame["decision score"] = evidence["decision_scores"]
    return frame


@register_labeler
class ClipLabeler(AutoLabeler):
    """Proposes spurious when a named concept matches the feature's NAM views better than the class.

    Options (besides the common ones of `AutoLabeler`):
        concepts: the named concepts (text, one per line, "| separate_object" to mark an object),
            or a list of texts / {"text", "answer"} dicts.
        class_prompts: {class index: text} describing each class (default: the class names).
        model_name, pretrained, device: the CLIP model (see `load_clip`).
        template: the prompt, with {} where the concept goes.
        margin: cosine similarity a concept must beat the class text by (default 0).
        decision_views: which views decide (default: the two NAM views).
    """

    name = "clip"
    title = "CLIP (named concepts)"
    label = "CLIP"
    description = (
        "Scores the pair's top images (whole, NAM-weighted, cropped around the NAM) against concepts you name and "
        "against the class. When a concept beats the class by more than the margin on the NAM views, the pair is "
        "proposed spurious. One concept per line; end a line with `| separate_object` for objects (default: "
        "background)."
    )
    declared_options = (
        Option("concepts", "", "Concepts the features might look at instead of the class, one a line; end one "
                               "with '| separate_object' for an object (default: background).", multiline=True,
               kind=object, label="Concepts"),  # text, or from Python a list of texts or {text, answer} dicts
        Option("class_prompts", None, "Each class as text (default: its name).", kind=dict, per_class=True,
               label="as text"),
        Option("model_name", DEFAULT_MODEL, "An open_clip architecture, or local-dir:/folder with "
                                            "open_clip_config.json.", flag="--clip-model", label="CLIP model"),
        Option("pretrained", DEFAULT_PRETRAINED, "A pretrained tag (fetched into open_clip's cache when online) or "
                                                 "the path of a downloaded weights file.",
               label="Weights: pretrained tag or local file"),
        Option("margin", 0.0, "Cosine similarity a concept must beat the class text by.",
               label="Margin (cosine similarity)"),
        Option("device", "cpu", "Where CLIP runs (cpu, cuda).", label="Device"),
    )

    @staticmethod
    def evidence_table(evidence: Mapping[str, Any]):
        return clip_evidence_table(evidence)

    def __init__(self, concepts: Any = (), class_prompts: Mapping[Any, str] | None = None,
                 model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu",
                 template: str = DEFAULT_TEMPLATE, margin: float = 0.0,
                 decision_views: Sequence[str] = DECISION_VIEWS, clip_model: ClipModel | None = None, **common):
        super().__init__(**common)
        self.concepts = parse_concepts(concepts)
        if not self.concepts:
            raise AutoLabelError("name at least one concept the features might look at instead of the class "
                                 "(e.g. 'water', 'a red square').")
        if "{}" not in template:
            raise AutoLabelError(f"the prompt template needs {{}} where the concept goes; got {template!r}.")
        unknown = [v for v in decision_views if v not in VIEWS]
        if unknown or not decision_views:
            raise AutoLabelError(f"decision views must be among {', '.join(VIEWS)}; got {list(decision_views)}.")
        self.class_prompts = {int(k): str(v) for k, v in (class_prompts or {}).items() if str(v).strip()}
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.template = template
        self.margin = float(margin)
        self.decision_views = tuple(decision_views)
        self._clip = clip_model
        self._class_texts: list[str] = []
        self._class_emb: np.ndarray | None = None
        self._concept_emb: np.ndarray | None = None

    def options(self) -> dict[str, Any]:
        return {**super().options(), "concepts": [{"text": c.text, "answer": c.answer} for c in self.concepts],
                "class_prompts": {str(k): v for k, v in self.class_prompts.items()},
                "model_name": self.model_name, "pretrained": self.pretrained, "template": self.template,
                "margin": self.margin, "decision_views": list(self.decision_views)}

    def class_texts(self, class_names: Sequence[str]) -> list[str]:
        return [self.class_prompts.get(c, name) for c, name in enumerate(class_names)]

    def prepare(self, audit, model, input_size) -> None:
        if self._clip is None:
            self._clip = load_clip(self.model_name, self.pretrained, self.device)
        self._class_texts = self.class_texts(audit.class_names)
        self._class_emb = self._clip.encode_texts(self._class_texts, self.template)
        self._concept_emb = self._clip.encode_texts([c.text for c in self.concepts], self.template)

    def judge(self, audit, pair: PairImages) -> Proposal:
        originals = [_load_original(audit.table.path(int(i))) for i in pair.indices]
        views = [nam_views(image, nam) for image, nam in zip(originals, pair.nams)]
        flat = [v[name] for v in views for name in VIEWS]
        image_emb = self._clip.encode_images(flat)
        texts = np.concatenate([self._class_emb[pair.class_index:pair.class_index + 1], self._concept_emb])
        sims = cosine_similarity(image_emb, texts).reshape(len(views), len(VIEWS), len(texts))  # [k, V, 1 + m]
        chosen = [VIEWS.index(v) for v in self.decision_views]
        decision = clip_decision(sims[:, chosen], [c.answer for c in self.concepts], self.margin)
        class_text = self._class_texts[pair.class_index]
        names = [class_text] + [c.text for c in self.concepts]
        best = self.concepts[decision.best_concept].text
        if decision.answer == MAIN_OBJECT:
            reason = (f"'{class_text}' fits the NAM views best: the closest concept '{best}' is "
                      f"{decision.gap:+.3f} from it (needs > {self.margin:+.3f}).")
        else:
            reason = (f"'{best}' fits the NAM views better than '{class_text}' by {decision.gap:.3f} "
                      f"(> margin {self.margin:.3f}) over {len(views)} top images.")
        evidence = {
            "labeler": self.name,
            **pair.base_evidence(),
            "model": self._clip.name,
            "template": self.template,
            "texts": names,
            "text_answers": [MAIN_OBJECT] + [c.answer for c in self.concepts],
            "views": list(VIEWS),
            "decision_views": list(self.decision_views),
            "margin": self.margin,
            "best_concept": best,
            "gap": round(decision.gap, 5),
            "decision_scores": [round(float(s), 5) for s in decision.scores],
            # [view][text]: mean over the images; [image][view][text]: every similarity
            "mean_similarity": {view: [round(float(s), 5) for s in sims[:, v].mean(axis=0)]
                                for v, view in enumerate(VIEWS)},
            "similarity": np.round(sims, 5).tolist(),
        }
        confidence = confidence_from_margin(decision.gap - self.margin, CONFIDENCE_STEP)
        return Proposal(pair.class_index, pair.feature, decision.answer, confidence, reason, evidence)


# ---- per-image concept scores (a second spuriosity ranking) ------------------------------------
CONCEPT_DIR = "concepts"


@dataclass
class ConceptSimilarities:
    """Whole-image CLIP similarities of every dataset image with the named concepts.

    similarity: float32 [N, M]; NaN for images outside the split that was scored.
    """

    similarity: np.ndarray
    concepts: list[str]
    model: str
    template: str
    split: str | None
    created: str

    def columns(self, names: Iterable[str]) -> list[int]:
        wanted = list(names)
        missing = [n for n in wanted if n not in self.concepts]
        if missing:
            raise AutoLabelError(f"concept(s) {', '.join(map(repr, missing))} were not scored; scored: "
                                 f"{', '.join(map(repr, self.concepts))}.")
        return [self.concepts.index(n) for n in wanted]


def _concept_file(project) -> Path:
    return Path(project.cache_dir) / CONCEPT_DIR / "similarities.npz"


def compute_concept_similarities(project, concepts: Any, model_name: str = DEFAULT_MODEL,
                                 pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu",
                                 template: str = DEFAULT_TEMPLATE, split: str | None = None,
                                 batch_size: int = 64, progress: Progress | None = None,
                                 check_cancelled: Callable[[], None] | None = None,
                                 clip_model: ClipModel | None = None) -> ConceptSimilarities:
    """Score every image of `split` (None: all) against the concepts and store them in the project cache.

    Runs CLIP over the whole split: submit it as a job (kind "autolabel.concepts"), not from a page.
    """
    names = [c.text for c in parse_concepts(concepts)]
    if not names:
        raise AutoLabelError("name at least one concept to score.")
    clip = clip_model or load_clip(model_name, pretrained, device)
    report = progress or (lambda fraction, message: None)
    table = project.table
    rows = np.flatnonzero(table.split_mask(split))
    text_emb = clip.encode_texts(names, template)
    sims = np.full((len(table), len(names)), np.nan, dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        if check_cancelled is not None:
            check_cancelled()
        chunk = rows[start:start + batch_size]
        emb = clip.encode_images([_load_original(table.path(int(i))) for i in chunk], batch_size)
        sims[chunk] = cosine_similarity(emb, text_emb)
        report(min(start + batch_size, len(rows)) / max(len(rows), 1),
               f"CLIP concept scores: {min(start + batch_size, len(rows))}/{len(rows)} images")
    result = ConceptSimilarities(sims, names, clip.name, template, split,
                                 time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    save_concept_similarities(project, result)
    return result


def save_concept_similarities(project, result: ConceptSimilarities) -> Path:
    path = _concept_file(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"concepts": result.concepts, "model": result.model, "template": result.template,
            "split": result.split, "created": result.created,
            "table": hashlib.sha1("\n".join(project.table.paths).encode()).hexdigest()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, similarity=result.similarity, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)  # readers never see half a file
    return path


def load_concept_similarities(project) -> ConceptSimilarities | None:
    """The stored similarities, or None when none were computed (or the dataset changed since)."""
    path = _concept_file(project)
    if not path.is_file():
        return None
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        sims = data["similarity"]
    if sims.shape[0] != len(project.table.paths) or \
            meta.get("table") != hashlib.sha1("\n".join(project.table.paths).encode()).hexdigest():
        return None
    return ConceptSimilarities(sims, list(meta["concepts"]), meta["model"], meta["template"], meta["split"],
                               meta["created"])


def concept_spuriosity_scores(project, concepts: Sequence[str] | Mapping[int, Sequence[str]] | None = None,
                              split: str | None = None) -> np.ndarray:
    """CLIP spuriosity per image [N] from the stored similarities (NaN where not scored).

    concepts: concept texts for every class, or {class: texts}; None = every stored concept.
    """
    stored = load_concept_similarities(project)
    if stored is None:
        raise AutoLabelError("no CLIP concept scores stored for this project yet; run the concept-scoring job.")
    if concepts is None:
        cols: Any = list(range(len(stored.concepts)))
    elif isinstance(concepts, Mapping):
        cols = {int(c): stored.columns(texts) for c, texts in concepts.items()}
    else:
        cols = stored.columns(concepts)
    labels = project.table.labels
    mask = project.table.split_mask(split) & np.isfinite(stored.similarity).all(axis=1)
    return concept_spuriosity(np.nan_to_num(stored.similarity), labels, cols, mask)


def concept_scores_job(ctx, project: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Job entry point (kind "autolabel.concepts"): CLIP similarities of every image with the concepts.

    options: concepts (required), model_name, pretrained, device, template, split, batch_size.
    """
    from ..project import Project

    proj = Project.find(project)
    opts = dict(options or {})
    allowed = {"concepts", "model_name", "pretrained", "device", "template", "split", "batch_size"}
    unknown = set(opts) - allowed
    if unknown:
        raise AutoLabelError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}.")
    result = compute_concept_similarities(proj, progress=ctx.progress,
                                          check_cancelled=getattr(ctx, "check_cancelled", None), **opts)
    scored = int(np.isfinite(result.similarity).all(axis=1).sum())
    return {"concepts": result.concepts, "model": result.model, "images": scored,
            "file": str(_concept_file(proj)), "summary": f"{scored} images scored on {len(result.concepts)} concepts"}

