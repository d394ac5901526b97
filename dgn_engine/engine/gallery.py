"""The gallery: index.html (thumbnails; click for the full image and its loss curve), contact
sheets of up to 100 targets, and summary.json, built from a results folder alone."""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import sys
from statistics import median

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UsageError
from ..files import Folder, finite
from ..records import RunRecord, read_record_in, read_result
from .outputs import png_bytes
from .results_folder import TARGETS, open_results, run_records

SHEET_SIZE = 100  # targets per contact sheet, 10 x 10
CAPTION = 14  # pixels of caption under each tile of a contact sheet


def valid_results(out: Folder, warn, doing: str = "left out of the gallery"):
    """(record, PNG bytes) of each valid result in the folder; a file that is not one is named."""
    folder = out.sub(TARGETS, what="targets folder") if out.kind(TARGETS) == "folder" else None
    for f in folder.names() if folder else []:
        if not f.endswith(".json") or f.startswith("."):
            continue
        try:
            rec, png = read_result(folder, f.removesuffix(".json"))
            if not _decodable(png):
                raise UsageError(f"{folder.where(rec.id + '.png')!r} is not an image Pillow agrees to decode")
        except UsageError as e:
            warn(f"dgn-engine: warning: {doing}: {e}")
            continue
        yield rec, png


def _decodable(png: bytes) -> bool:
    """A PNG of a size Pillow agrees to decode (it refuses a decompression bomb)."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            return im.format == "PNG" and im.size[0] * im.size[1] <= Image.MAX_IMAGE_PIXELS
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _target_order(out: Folder, warn) -> list[str]:
    """The job's target order, from its run record (a shard's holds the whole job's list too)."""
    for name in run_records(out):
        try:
            return list(read_record_in(out, name, RunRecord, "run record").spec.get("targets", []))
        except UsageError as e:
            warn(f"dgn-engine: warning: {e}")
    return []


def _records(out: Folder, warn) -> list[tuple[dict, bytes]]:
    """The valid results of the folder (record, PNG bytes), in the run's target order."""
    records = {rec.target: (rec.model_dump(by_alias=True), png) for rec, png in valid_results(out, warn)}
    ranked = [records.pop(t) for t in _target_order(out, warn) if t in records]
    return ranked + [records[t] for t in sorted(records)]


def merge_results(sources: list[str], into: Folder, warn=None) -> int:
    """Copy the valid results of `sources` (shards of one job) into `into`; returns how many were
    copied. Results of other settings, weights or artifacts (another results key) are refused."""
    warn = warn or _stderr
    targets = into.sub(TARGETS, create=True, what="targets folder")
    seen: dict[str, str] = {}  # results key -> the folder it was first seen in
    copied = 0
    for i, path in enumerate([into.path] + sources):
        with open_results(path, create=False) if i else contextlib.nullcontext(into) as folder:
            if i and os.path.samefile(folder.path, into.path):
                continue
            for rec, png in valid_results(folder, warn, doing="not merged"):
                seen.setdefault(rec.results_key, path)
                if len(seen) > 1:
                    first, other = list(seen.items())[:2]
                    raise UsageError(
                        f"{first[1]!r} and {other[1]!r} hold results made otherwise (results keys {first[0]} and "
                        f"{other[0]}); merge only the shards of one job"
                    )
                if i == 0:  # already there
                    continue
                # the PNG first: a JSON never points at a missing image; fields the run left out stay out
                targets.write(rec.id + ".png", png)
                targets.write_json(rec.id + ".json", rec.model_dump(by_alias=True, exclude_unset=True))
                copied += 1
    return copied


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _number(value, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def _name(rec: dict) -> str:
    return rec.get("name") or rec["target"]


def summarise(records: list[dict]) -> dict:
    finished = [r for r in records if r.get("diverged") is None]
    classy = [r for r in finished if "class:" in r["target"]]
    acts = [r["final_activation"] for r in finished if r.get("final_activation") is not None]
    return {
        "targets": len(records),
        "diverged": len(records) - len(finished),
        "class_targets": len(classy),
        "top1_reached": sum(bool(r.get("top1_is_target")) for r in classy),
        "median_final_activation": median(acts) if acts else None,
        "compute_seconds": round(sum(r.get("seconds", 0.0) for r in records), 3),
    }


def summary_line(s: dict) -> str:
    med = "n/a" if s["median_final_activation"] is None else f"{s['median_final_activation']:.4g}"
    line = (
        f"{s['targets']} targets: {s['top1_reached']} of {s['class_targets']} class targets are the "
        f"classifier's top-1 on their image; median final activation {med}; "
        f"{s['compute_seconds']:.1f} s of compute"
    )
    return line + (f"; {s['diverged']} diverged" if s["diverged"] else "")


def contact_sheet(
    images: list[Image.Image], captions: list[str], columns: int = 10, tile: int | None = None
) -> Image.Image:
    """Tiles of the images (nearest-neighbour scaled to one size) with a caption under each, wrapped
    to the tile's width (at most CAPTION_LINES lines per line of the caption's own)."""
    tile = tile or max(min(max(im.size[0] for im in images), 224), 64)
    cols = min(columns, len(images))
    rows = (len(images) + cols - 1) // cols
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [[w for part in c.split("\n") for w in _wrap(draw, part, tile - 4)] for c in captions]
    height = tile + CAPTION * max(len(w) for w in wrapped)
    sheet = Image.new("RGB", (cols * tile, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (im, lines) in enumerate(zip(images, wrapped)):
        x, y = (j % cols) * tile, (j // cols) * height
        sheet.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST), (x, y))
        for i, line in enumerate(lines):
            draw.text((x + 2, y + tile + 1 + CAPTION * i), line, fill="black")
    return sheet


CAPTION_LINES = 2


def _wrap(draw, text: str, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken after spaces and / _ - + , where it can;
    past CAPTION_LINES lines the last one ends in '...'."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[\s/_\-+,])", text):
        if draw.textlength(line + piece) <= width:
            line += piece
            continue
        if line:
            lines.append(line.rstrip())
        line = piece
        while draw.textlength(line) > width:  # longer than the tile by itself: cut it
            cut = max(k for k in range(1, len(line) + 1) if k == 1 or draw.textlength(line[:k]) <= width)
            lines.append(line[:cut])
            line = line[cut:]
    lines.append(line.rstrip())
    if len(lines) > CAPTION_LINES:
        last = lines[CAPTION_LINES - 1]
        while last and draw.textlength(last + "...") > width:
            last = last[:-1]
        lines = lines[: CAPTION_LINES - 1] + [last + "..."]
    return lines


def _sheets(out: Folder, records: list[tuple[dict, bytes]]) -> list[str]:
    names = []
    for i in range(0, len(records), SHEET_SIZE):
        chunk = records[i : i + SHEET_SIZE]
        images = [Image.open(io.BytesIO(png)) for _, png in chunk]
        sheet = contact_sheet(images, [_name(r) for r, _ in chunk])
        name = f"sheet-{i // SHEET_SIZE + 1:03d}.png"
        out.write(name, png_bytes(np.asarray(sheet)))
        names.append(name)
    return names


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dgn-engine: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
#grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ width: 150px; background: white; border: 1px solid #ddd; padding: 4px; cursor: pointer; font-size: 12px; }}
.card img {{ width: 150px; height: 150px; image-rendering: pixelated; display: block; }}
.card .top1 {{ color: #080; font-weight: bold; }} .card .miss {{ color: #a00; }}
#detail {{ display: none; position: fixed; inset: 0; background: rgba(0,0,0,.6); }}
#detail .box {{ background: white; margin: 3em auto; padding: 1em; width: 760px; }}
#detail img {{ width: 320px; height: 320px; image-rendering: pixelated; float: left; margin-right: 1em; }}
</style></head><body>
<h1>{title}</h1><p id="summary">{summary}</p><p>Contact sheets: {sheets}</p>
<div id="grid">{cards}</div>
<div id="detail"><div class="box"><img id="big" alt=""><h2 id="dtitle"></h2><p id="dtext"></p>
<svg id="curve" width="400" height="220"></svg><p style="clear:both">click anywhere to close</p></div></div>
<script id="data" type="application/json">{data}</script>
<script>
const records = JSON.parse(document.getElementById("data").textContent);
const detail = document.getElementById("detail");
function curve(points) {{
  const svg = document.getElementById("curve"); svg.innerHTML = "";
  if (!points.length) return;
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = x => 40 + 350 * (x - x0) / Math.max(x1 - x0, 1e-9), sy = y => 200 - 180 * (y - y0) / Math.max(y1 - y0, 1e-9);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(p => sx(p[0]) + "," + sy(p[1])).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#0060c0");
  svg.appendChild(line);
  for (const [x, y, t] of [[2, 14, "loss " + y1.toPrecision(4)], [2, 214, "loss " + y0.toPrecision(4) + "   (steps " + x0 + ".." + x1 + ")"]]) {{
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    label.setAttribute("x", x); label.setAttribute("y", y); label.setAttribute("font-size", "11"); label.textContent = t;
    svg.appendChild(label);
  }}
}}
for (const card of document.querySelectorAll(".card")) {{
  card.addEventListener("click", event => {{
    event.preventDefault();
    const r = records[card.dataset.index];
    document.getElementById("big").src = r.png;
    document.getElementById("dtitle").textContent = r.name;
    document.getElementById("dtext").textContent = r.text;
    curve(r.curve);
    detail.style.display = "block";
  }});
}}
detail.addEventListener("click", () => {{ detail.style.display = "none"; }});
</script></body></html>
"""


def _p(probability) -> str:
    """A top-5 entry's probability beside its score, where D's scores precede its softmax."""
    return "" if probability is None else f" (p {_number(probability, '.3g')})"


def build_gallery(out: Folder, warn=_stderr) -> dict:
    """Write index.html, the contact sheets and summary.json for the results in `out`."""
    with_png = _records(out, warn)
    records = [r for r, _ in with_png]
    summary = summarise(records)
    sheets = _sheets(out, with_png)
    cards, data = [], []
    for i, rec in enumerate(records):
        png = f"targets/{rec['id']}.png"
        act = rec.get("final_activation")
        act_text = "diverged" if rec.get("diverged") else _number(act, ".4g")
        act_label = "activation"
        if rec.get("final_probability") is not None and not rec.get("diverged"):  # scores before D's softmax
            act_label, act_text = "score", f"{act_text}, probability {_number(rec['final_probability'], '.3g')}"
        hit = rec.get("top1_is_target")
        mark = (
            ""
            if "class:" not in rec["target"] or rec.get("diverged")
            else ('<span class="top1">top-1</span>' if hit else '<span class="miss">not top-1</span>')
        )
        cards.append(
            f'<a class="card" href="{html.escape(png)}" data-index="{i}"><img src="{html.escape(png)}" '
            f'alt="{html.escape(rec["target"])}" loading="lazy"><div>{html.escape(_name(rec))}</div>'
            f"<div>{html.escape(act_label)} {html.escape(act_text)} {mark}</div></a>"
        )
        top5 = ", ".join(
            f"{t['name']} {_number(t['score'], '.3g')}{_p(t.get('probability'))}" for t in rec.get("top5", [])
        )
        text = (
            f"final {act_label} {act_text}; classifier's top-5 on this image: {top5}; "
            f"{rec['steps']} steps, seed {rec['seed']}, {rec['mode']} mode, {rec['seconds']:.2f} s"
        )
        if rec.get("diverged"):
            text = f"diverged: {rec['diverged']}"
        data.append({"png": png, "name": _name(rec), "text": text, "curve": [c[:2] for c in rec["loss_curve"]]})
    title = os.path.basename(os.path.abspath(out.path))
    page = PAGE.format(
        title=html.escape(title),
        summary=html.escape(summary_line(summary)),
        sheets=" ".join(f'<a href="{s}">{s}</a>' for s in sheets) or "none",
        cards="\n".join(cards),
        # no "<" at all in the embedded data: no label can end the script element or open a comment
        data=json.dumps(finite(data), allow_nan=False).replace("<", "\\u003c"),
    )
    out.write("index.html", page.encode(errors="replace"))  # a folder name that is not UTF-8 shows a "?"
    out.write_json("summary.json", finite(summary))
    return summary
