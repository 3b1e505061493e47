"""The side-by-side demo: base greedy, SEED greedy (base + adapter) and SEED + contrastive decoding on the same
images and question, in the terminal and as a self-contained HTML page, with the named objects that are not in the
image marked when a COCO instances file is given.

    seedvlm demo --model runs/base --adapter runs/seed/adapter --image a.png --image b.png \\
        --instances world/instances_val.json --html demo.html

Objects are found with `seedvlm.eval.chair.CHAIR` (the CHAIR protocol's synonyms, phrases and singularization), so
the marks are exactly what CHAIR counts. Every piece of model text
is HTML-escaped before it enters the page (docs/design.md section 8).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import html
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, UnidentifiedImageError

from seedvlm.errors import SeedVLMError
from seedvlm.eval.chair import CHAIR
from seedvlm.eval.runner import generate, load_model
from seedvlm.io import open_image, read_json
from seedvlm.models.families.registry import model_family
from seedvlm.models.prompting import warn_if_not_trained_style

log = logging.getLogger(__name__)

DEFAULT_QUESTION = "Please describe this image in detail."
UNCHECKED = "not checked: this image is not in the instances file"

# ---------------------------------------------------------------------------------------------------------------
# Objects named in a text, with their positions
# ---------------------------------------------------------------------------------------------------------------


def locate_mentions(matcher, text: str) -> list[tuple[int, int, str]]:
    """[(start, end, category)] of the objects a text names, in order, with character offsets: CHAIR's reading of
    the text (`CHAIR.mention_spans`), so that the demo marks the very words CHAIR counts."""
    return [(s, e, c) for s, e, _, c in matcher.mention_spans(text)]


@dataclasses.dataclass
class ObjectChecker:
    """Ground truth from a COCO instances file and the named/hallucinated objects of an answer."""

    matcher: Any  # seedvlm.eval.chair.CHAIR
    by_file: dict[str, Any]
    source: str

    @classmethod
    def from_instances(cls, path: str | os.PathLike) -> "ObjectChecker":
        data = read_json(path, "instances file")
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            raise SeedVLMError(f"{path}: not a COCO instances file (needs lists 'images', 'annotations', "
                               "'categories')")
        matcher = CHAIR(data, None, protocol="corrected")
        by_file: dict[str, Any] = {}
        for im in data["images"]:
            if isinstance(im, dict) and "file_name" in im and "id" in im:
                by_file.setdefault(Path(str(im["file_name"])).name, im["id"])
        return cls(matcher, by_file, str(path))

    def image_id(self, image_path: str | os.PathLike):
        return self.by_file.get(Path(image_path).name)

    def annotated(self, image_id) -> list[str]:
        return sorted(self.matcher.ground_truth(image_id))

    def check(self, image_id, text: str) -> tuple[list[str], list[tuple[int, int, str]]]:
        """(hallucinated categories, spans of the words that name them) for one answer."""
        result = self.matcher.score(image_id, text)
        bad = list(result["hallucinated"])
        spans = [s for s in locate_mentions(self.matcher, text) if s[2] in bad]
        return bad, spans


# ---------------------------------------------------------------------------------------------------------------
# Running the models
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    label: str
    text: str
    hallucinated: list[str] = dataclasses.field(default_factory=list)
    spans: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Row:
    image_path: str
    image: Any  # PIL.Image
    annotated: list[str] | None  # None: no annotations for this image
    answers: list[Answer]


@dataclasses.dataclass
class DemoResult:
    columns: list[str]
    rows: list[Row]
    settings: dict


def column_labels(has_adapter: bool, beta: float) -> list[str]:
    if has_adapter:
        return ["base greedy", "SEED greedy", f"SEED + contrastive (b={beta:g})"]
    return ["base greedy", f"base + contrastive (b={beta:g})"]


def load_images(paths: Sequence[str | os.PathLike]):
    """The images as RGB; a missing, unreadable or oversized one is an error naming it (before any model loads)."""
    return [open_image(p) for p in paths]


def run_demo(model_path: str | os.PathLike, image_paths: Sequence[str | os.PathLike], adapter: str | None = None,
             question: str = DEFAULT_QUESTION, instances: str | None = None, beta: float = 1.0,
             max_new_tokens: int = 64, device: str | None = None, batch_size: int = 8, static_cache: bool = False,
             prompt_style: str | None = None, allow_unverified_adapter: bool = False, options: dict | None = None,
             **decode_kwargs) -> DemoResult:
    """Answer `question` on each image with each decoding; mark hallucinated objects when `instances` is given.
    options: the family's processor options (e.g. Qwen's min/max pixels), as in eval.

    decode_kwargs go to `seedvlm.decode.contrastive_generate` (noise, alpha, plausibility, seed, ...);
    static_cache: every column decodes over a compiled static cache (seedvlm.decode.static)."""
    if not image_paths:
        raise SeedVLMError("no --image given")
    family = model_family(model_path)
    if family is not None and prompt_style not in (None, "hf"):
        raise SeedVLMError(f"{model_path}: --prompt-style {prompt_style} is for LLaVA-1.5 models; {family.name} "
                           f"models answer in their own chat template (--prompt-style hf)")
    images = load_images(image_paths)
    checker = ObjectChecker.from_instances(instances) if instances else None
    warn_if_not_trained_style(adapter, prompt_style)
    model, processor = load_model(str(model_path), adapter=adapter, device=device,
                                  allow_unverified_adapter=allow_unverified_adapter, options=options)
    prompts = [question] * len(images)
    common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False, prompt_style=prompt_style,
                  static_cache=static_cache)
    base_ctx = model.disable_adapter() if adapter else contextlib.nullcontext()
    with base_ctx:
        columns_text = [generate(model, processor, images, prompts, decoding="greedy", desc="base", **common)]
    if adapter:
        columns_text.append(generate(model, processor, images, prompts, decoding="greedy", desc="seed",
                                           **common))
    columns_text.append(generate(model, processor, images, prompts, decoding="contrastive", desc="contrastive",
                                       beta=beta, **common, **decode_kwargs))
    labels = column_labels(bool(adapter), beta)
    rows = []
    for i, (path, image) in enumerate(zip(image_paths, images)):
        image_id = checker.image_id(path) if checker else None
        if checker and image_id is None:
            log.warning("%s is not an image of %s (matched by file name): no objects marked", path, checker.source)
        answers = []
        for label, texts in zip(labels, columns_text):
            a = Answer(label, texts[i])
            if image_id is not None:
                a.hallucinated, a.spans = checker.check(image_id, a.text)
            answers.append(a)
        rows.append(Row(str(path), image, checker.annotated(image_id) if image_id is not None else None, answers))
    settings = {"model": str(model_path), "adapter": str(adapter) if adapter else None, "question": question,
                "beta": beta, "max_new_tokens": max_new_tokens, "instances": str(instances) if instances else None,
                "object_matcher": "CHAIR" if checker else None,
                **{k: v for k, v in decode_kwargs.items()}}
    return DemoResult(labels, rows, settings)


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _marked(text: str, spans: Sequence[tuple[int, int, str]], before: str, after: str, escape) -> str:
    """text with each span wrapped in before/after; every plain and marked piece passed through `escape`."""
    out, pos = [], 0
    for s, e, cat in sorted(spans):
        if s < pos:
            continue
        out.append(escape(text[pos:s]))
        out.append(before.format(category=escape(cat)) + escape(text[s:e]) + after)
        pos = e
    out.append(escape(text[pos:]))
    return "".join(out)


def use_color(mode: str = "auto", stream=None) -> bool:
    """ANSI colors: "always", "never", or "auto" (a terminal, and NO_COLOR unset)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _terminal_safe(s: str) -> str:
    """Model text must not drive the terminal: control characters (ESC included) shown as U+FFFD."""
    return _CONTROL.sub("\ufffd", s)


def render_terminal(result: DemoResult, color: bool = False) -> str:
    """Labelled blocks per image: the annotated objects, then each answer with the objects that are not in the
    image highlighted (bold red) and listed."""
    red, bold, dim, reset = ("\x1b[1;31m", "\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("", "", "", "")
    width = max(len(c) for c in result.columns)
    lines = []
    for k, row in enumerate(result.rows, 1):
        ann = ("annotated: " + ", ".join(row.annotated)) if row.annotated is not None else (
            UNCHECKED if result.settings.get("instances") else "no annotations")
        name = _terminal_safe(row.image_path)
        lines.append(f"{bold}=== image {k}/{len(result.rows)}: {name}{reset}  {dim}({ann}){reset}")
        for a in row.answers:
            text = _marked(a.text, a.spans, red, reset, _terminal_safe) if color else _terminal_safe(a.text)
            lines.append(f"[{a.label:<{width}}] {text}")
            if row.annotated is not None:
                missing = ", ".join(a.hallucinated) if a.hallucinated else "none"
                lines.append(f" {'':<{width}}  {dim}not in the image: {red if a.hallucinated else ''}{missing}"
                             f"{reset}")
        lines.append("")
    if any(r.annotated is not None for r in result.rows):
        how = result.settings.get("object_matcher")
        marked = "highlighted in red and " if color else ""
        lines.append(f"{dim}objects named but not annotated in the image are {marked}listed under each answer "
                     f"({how}){reset}")
    return "\n".join(lines).rstrip() + "\n"


def _png_data_uri(image, max_side: int = 384) -> str:
    im = image.copy()
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 20px; margin: 0 0 6px 0; }
.meta { color: #555; font-size: 13px; margin-bottom: 12px; }
.meta code { background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
.legend { font-size: 13px; margin: 0 0 14px 0; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #ddd; padding: 10px; vertical-align: top; text-align: left; font-size: 14px; }
th { background: #f6f6f8; }
th.image, td.image { width: 220px; }
td.image img { width: 200px; height: auto; image-rendering: pixelated; display: block; border: 1px solid #ccc; }
.file { font-size: 12px; color: #555; word-break: break-all; margin-top: 6px; }
.truth { font-size: 12px; color: #2a6b2a; margin-top: 4px; }
.answer { white-space: pre-wrap; line-height: 1.45; margin: 0; }
.missing { font-size: 12px; color: #a00; margin-top: 8px; }
.none { font-size: 12px; color: #2a6b2a; margin-top: 8px; }
.unchecked { font-size: 12px; color: #8a5a00; background: #fff4d6; padding: 2px 4px; margin-top: 8px; }
mark.halluc { background: #ffc9c9; color: #8a0000; padding: 0 2px; border-radius: 2px; }
"""


def render_html(result: DemoResult, title: str = "seedvlm demo") -> str:
    """A self-contained page: images embedded as base64 PNG, one row per image, one column per decoding,
    hallucinated objects in <mark class="halluc">. All model text and every path or question is escaped."""
    e = html.escape
    s = result.settings
    meta = " &middot; ".join(f"{e(k)}: <code>{e(str(v))}</code>" for k, v in s.items() if v is not None)
    marked = any(r.annotated is not None for r in result.rows)
    legend = ('<mark class="halluc">object</mark> = an object the answer names that is not annotated in the image '
              f'(found with {e(str(s.get("object_matcher")))})' if marked
              else "No image is in the instances file: objects are not checked." if s.get("instances")
              else "No instances file given: objects are not checked.")
    head = "".join(f"<th>{e(c)}</th>" for c in result.columns)
    body = []
    for row in result.rows:
        cells = [f'<td class="image"><img src="{_png_data_uri(row.image)}" alt="{e(Path(row.image_path).name)}">'
                 f'<div class="file">{e(row.image_path)}</div>'
                 + (f'<div class="truth">annotated: {e(", ".join(row.annotated) or "nothing")}</div>'
                    if row.annotated is not None else "") + "</td>"]
        if row.annotated is None and s.get("instances"):
            cells[0] = cells[0][:-len("</td>")] + f'<div class="unchecked">{e(UNCHECKED)}</div></td>'
        for a in row.answers:
            text = _marked(a.text, a.spans, '<mark class="halluc" title="not in the image: {category}">', "</mark>", e)
            extra = ""
            if row.annotated is None and s.get("instances"):
                extra = f'<div class="unchecked">{e(UNCHECKED)}</div>'
            elif row.annotated is not None:
                extra = (f'<div class="missing">not in the image: {e(", ".join(a.hallucinated))}</div>'
                         if a.hallucinated else '<div class="none">no object outside the annotations</div>')
            cells.append(f'<td><p class="answer">{text}</p>{extra}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{e(title)}</h1>\n<div class=\"meta\">{meta} &middot; {e(when)}</div>\n"
        f"<p class=\"legend\">{legend}</p>\n"
        f"<table>\n<thead><tr><th class=\"image\">image</th>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body) + "\n</tbody>\n</table>\n</body>\n</html>\n"
    )
