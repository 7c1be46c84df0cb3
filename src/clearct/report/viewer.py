"""``viewer.html``: one self-contained page per scan (inline CSS and JS, images as data URIs, no network) to page
through the slices in each HU window, see the attention curve over z, the in-slice heatmap of the current slice,
lesion boxes, the predictions with their thresholds, and which model and encoder made them.

Pure rendering: callers pass arrays, tables and provenance (``predict``, ``attention`` and the error review in
``inference``); nothing here loads a model. Slices are stored at display resolution (≤ ``max_px``) as lossy WebP
(or JPEG) at ``quality``; heatmaps as small RGBA WebP images whose alpha is the map value, so cold regions stay
transparent and the opacity control scales the rest.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.io.heatmaps import ScanHeatmaps
from clearct.io.tables import LesionBox

FORMATS = {"webp": "image/webp", "jpeg": "image/jpeg"}
VIEW_PX = 512  # CSS pixels of the longer side of the shown slice
OVERLAY_PX = 256  # heatmaps are smooth (Gaussian-smoothed, or upsampled from a coarse grid): 256 px shows them
_CMAP = colormaps["inferno"]


@dataclass
class AttentionProfile:
    """MIL attention per instance: ``slice_index``, ``window`` (index into ``windows``) and ``values``."""

    slice_index: np.ndarray
    window: np.ndarray
    values: np.ndarray
    windows: Sequence[str]


@dataclass
class Prediction:
    """One model output: its score, the threshold it is called at (None for multiclass/regression) and the call."""

    name: str
    score: float
    threshold: float | None = None
    call: str | bool | None = None


@dataclass
class ViewerScan:
    """What one viewer shows. ``hu`` is (Z, Y, X) int16 in the CTVolume contract orientation."""

    scan_id: str
    hu: np.ndarray
    z_mm: np.ndarray
    spacing_mm: Sequence[float]
    windows: Sequence[Sequence]  # [name, lo, hi] …
    attention: AttentionProfile | None = None
    heatmaps: ScanHeatmaps | None = None
    lesions: Sequence[LesionBox] = ()
    predictions: Sequence[Prediction] = ()
    identity: dict[str, str] = field(default_factory=dict)  # label → value, shown as given
    notes: Sequence[str] = ()  # warnings shown under the identity


def _data_uri(image: Image.Image, fmt: str, quality: int) -> str:
    buffer = io.BytesIO()
    if fmt == "webp":
        # method 2: within 5 % of the size of the default method 4 at 2.5× its speed (benchmarks/viewer.py)
        image.save(buffer, format="WEBP", quality=quality, method=2)
    else:
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return f"data:{FORMATS[fmt]};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def display_size(shape: tuple[int, int], spacing_yx: Sequence[float], max_px: int) -> tuple[int, int]:
    """(width, height) in pixels of a slice shown with square physical pixels, the longer side ≤ ``max_px``."""
    rows, cols = shape
    height_mm, width_mm = rows * float(spacing_yx[0]), cols * float(spacing_yx[1])
    scale = min(max_px / max(height_mm, width_mm), max(rows, cols) / max(height_mm, width_mm))
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def slice_images(hu: np.ndarray, lo: float, hi: float, size: tuple[int, int], *, fmt: str = "webp",
                 quality: int = 80) -> list[str]:
    """Every slice of ``hu`` in the window [lo, hi] as a grey data URI of ``size`` (width, height)."""
    uris = []
    for plane in hu:
        grey = np.clip((plane.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        uris.append(_data_uri(image, fmt, quality))
    return uris


def overlay_image(values: np.ndarray, size: tuple[int, int], quality: int = 80) -> str:
    """A map with values in [0, 1] as an RGBA WebP data URI: colour from the inferno map, alpha = value."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    rgba = (_CMAP(v) * 255).astype(np.uint8)
    rgba[..., 3] = (v * 255).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return _data_uri(image, "webp", quality)


def _attention_data(profile: AttentionProfile, n_slices: int) -> dict[str, Any]:
    """Per window: [slice, attention] pairs in slice order (instances outside the volume, e.g. −1, left out)."""
    curves = []
    for w in range(len(profile.windows)):
        rows = np.flatnonzero((profile.window == w) & (profile.slice_index >= 0) & (profile.slice_index < n_slices))
        rows = rows[np.argsort(profile.slice_index[rows], kind="stable")]
        curves.append([[int(profile.slice_index[i]), float(profile.values[i])] for i in rows])
    return {"windows": [str(w) for w in profile.windows], "curves": curves}


def _heatmap_data(maps: ScanHeatmaps, shape: tuple[int, int], quality: int) -> dict[str, Any]:
    """Overlays of every (instance, target), each target scaled by its maximum over the scan so slices compare."""
    if tuple(maps.maps.shape[2:]) != shape:
        raise ClearctError(f"heatmaps of {maps.scan_id} are {maps.maps.shape[2]}×{maps.maps.shape[3]} but the "
                           f"slices are {shape[0]}×{shape[1]}")
    values = np.maximum(maps.maps.astype(np.float32), 0.0)  # both methods' maps are ReLU'd; negatives mean "not this"
    peak = values.max(axis=(0, 2, 3)) if len(maps) else np.zeros(len(maps.targets), np.float32)
    rows, cols = shape
    scale = min(1.0, OVERLAY_PX / max(rows, cols))
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    items = []
    for k in range(len(maps)):
        items.append({"slice": int(maps.slice_index[k]), "window": maps.windows[int(maps.window[k])][0],
                      "attention": float(maps.attention[k]),
                      "overlays": [overlay_image(values[k, t] / peak[t] if peak[t] > 0 else values[k, t], size,
                                                 quality) for t in range(len(maps.targets))]})
    return {"targets": list(maps.targets), "peak": [float(p) for p in peak], "method": maps.method,
            "layer": maps.layer, "items": items}


def _lesion_data(lesions: Sequence[LesionBox], n_slices: int) -> list[dict[str, Any]]:
    out = []
    for box in lesions:
        first, last = box.extent
        if first >= n_slices:
            continue
        out.append({"slice": box.slice_index, "first": first, "last": min(last, n_slices - 1), "x1": box.x1,
                    "y1": box.y1, "x2": box.x2, "y2": box.y2, "label": box.label})
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _tables(scan: ViewerScan) -> str:
    """The predictions, identity and notes as static HTML (escaped)."""
    e = html.escape
    parts = []
    if scan.predictions:
        rows = "".join(
            f"<tr><td>{e(p.name)}</td><td>{_fmt(p.score)}</td><td>{_fmt(p.threshold)}</td>"
            f"<td class='{'pos' if p.call is True else 'neg' if p.call is False else ''}'>"
            f"{e('positive' if p.call is True else 'negative' if p.call is False else str(p.call or ''))}</td></tr>"
            for p in scan.predictions)
        parts.append("<h2>Predictions</h2><table id='predictions'><tr><th>output</th><th>score</th>"
                     f"<th>threshold</th><th>call</th></tr>{rows}</table>")
    if scan.identity:
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in scan.identity.items())
        parts.append(f"<h2>Model</h2><table id='identity'>{rows}</table>")
    if scan.notes:
        parts.append("<h2>Notes</h2><ul id='notes'>" + "".join(f"<li>{e(n)}</li>" for n in scan.notes) + "</ul>")
    return "\n".join(parts)


def _json_script(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no '</' or '<!--' can end it early."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def viewer_html(scan: ViewerScan, *, max_px: int = 512, fmt: str = "webp", quality: int = 80) -> str:
    """The page as a string (see :func:`write_viewer`)."""
    if fmt not in FORMATS:
        raise ValueError(f"image format {fmt!r}: use {', '.join(FORMATS)}")
    z, rows, cols = scan.hu.shape
    size = display_size((rows, cols), scan.spacing_mm[1:], max_px)
    windows = [(str(n), float(lo), float(hi)) for n, lo, hi in scan.windows]
    data = {
        "scan_id": scan.scan_id, "shape": [z, rows, cols], "size": list(size), "view_px": VIEW_PX,
        "z_mm": [round(float(v), 3) for v in scan.z_mm], "spacing_mm": [float(s) for s in scan.spacing_mm],
        "windows": [{"name": n, "lo": lo, "hi": hi} for n, lo, hi in windows],
        "slices": [slice_images(scan.hu, lo, hi, size, fmt=fmt, quality=quality) for _, lo, hi in windows],
        "attention": _attention_data(scan.attention, z) if scan.attention is not None else None,
        "heatmaps": _heatmap_data(scan.heatmaps, (rows, cols), quality) if scan.heatmaps is not None else None,
        "lesions": _lesion_data(scan.lesions, z),
    }
    parts = {"TITLE": html.escape(f"{scan.scan_id}: clearct viewer"), "SCAN": html.escape(scan.scan_id),
             "TABLES": _tables(scan), "CSS": _CSS, "JS": _JS, "DATA": _json_script(data)}
    # one pass over the template: text from the tables (ids, labels) is never scanned for placeholders again
    return re.sub(r"\{\{(TITLE|SCAN|TABLES|CSS|JS|DATA)\}\}", lambda m: parts[m[1]], _PAGE)


def write_viewer(target: str | Path, scan: ViewerScan, *, max_px: int = 512, fmt: str = "webp",
                 quality: int = 80) -> Path:
    """Write ``viewer.html`` for one scan atomically; returns its path."""
    target = Path(target)
    atomic_write_text(target, viewer_html(scan, max_px=max_px, fmt=fmt, quality=quality))
    return target


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>{{CSS}}</style>
</head><body>
<header><h1>{{SCAN}}</h1><span class="sub">clearct scan viewer · scroll or drag the slider to page through the
slices, click the curve to jump</span></header>
<main>
<section id="viewer">
 <div id="controls">
  <span id="windowButtons"></span>
  <label id="targetLabel">heatmap <select id="target"></select></label>
  <label id="opacityLabel">opacity <input id="opacity" type="range" min="0" max="100" value="50"></label>
 </div>
 <div id="stage"><img id="ct" alt="CT slice"><img id="overlay" alt="heatmap"><svg id="boxes"></svg></div>
 <div id="sliderRow"><input id="slider" type="range" min="0" value="0" step="1">
  <span id="sliceText">slice <b id="sliceIndex">0</b> / <span id="sliceMax">0</span> · z <span id="sliceZ"></span> mm</span>
 </div>
 <div id="overlayNote"></div>
 <svg id="curve" viewBox="0 0 640 170"></svg>
</section>
<section id="side">{{TABLES}}</section>
</main>
<script id="viewerData" type="application/json">{{DATA}}</script>
<script>{{JS}}</script>
</body></html>
"""

_CSS = """
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#111;color:#ddd}
header{padding:8px 16px;border-bottom:1px solid #333}h1{display:inline;font-size:18px;margin-right:12px}
.sub{color:#888;font-size:12px}main{display:flex;flex-wrap:wrap;gap:16px;padding:12px 16px}
#viewer{flex:0 0 auto}#side{flex:1 1 280px;min-width:260px}
#controls{display:flex;gap:12px;align-items:center;margin-bottom:6px;flex-wrap:wrap}
#windowButtons button{background:#222;color:#ddd;border:1px solid #444;padding:3px 10px;cursor:pointer}
#windowButtons button.on{background:#2d5b8a;border-color:#4a8ad0}
#stage{position:relative;background:#000;overflow:hidden}
#stage img,#stage svg{position:absolute;left:0;top:0;width:100%;height:100%}
#ct{image-rendering:auto}#overlay{pointer-events:none}#boxes{pointer-events:none}
#sliderRow{display:flex;align-items:center;gap:10px;margin:6px 0}#slider{flex:1}
#overlayNote{color:#999;font-size:12px;min-height:1.4em}
#curve{width:640px;height:170px;background:#181818;cursor:crosshair;display:block}
table{border-collapse:collapse;margin-bottom:12px}td,th{border:1px solid #333;padding:3px 8px;text-align:left}
th{color:#aaa;font-weight:normal}h2{font-size:15px;margin:10px 0 6px}.pos{color:#f88}.neg{color:#8c8}
ul{padding-left:18px;color:#cb8}
"""

_JS = r"""
(function(){
"use strict";
const D = JSON.parse(document.getElementById("viewerData").textContent);
const NS = "http://www.w3.org/2000/svg";
const Z = D.shape[0], ROWS = D.shape[1], COLS = D.shape[2];
const $ = id => document.getElementById(id);
const ct = $("ct"), overlay = $("overlay"), boxes = $("boxes"), slider = $("slider"), curve = $("curve");
const stage = $("stage");
// shown at VIEW_PX on the longer side whatever the stored size (the browser interpolates smaller images)
const view = D.view_px / Math.max(D.size[0], D.size[1]);
stage.style.width = Math.round(D.size[0] * view) + "px"; stage.style.height = Math.round(D.size[1] * view) + "px";
boxes.setAttribute("viewBox", "0 0 " + COLS + " " + ROWS);
boxes.setAttribute("preserveAspectRatio", "none");
slider.max = Z - 1; $("sliceMax").textContent = Z - 1;
const state = {slice: Math.floor((Z - 1) / 2), win: 0, target: 0, opacity: 0.5};
const HM = D.heatmaps;
// heatmaps by slice: the entries of each slice, so the overlay of the shown window is found at once
const hmBySlice = {};
if (HM) HM.items.forEach(it => { (hmBySlice[it.slice] = hmBySlice[it.slice] || []).push(it); });

function svg(tag, attrs, parent){
  const el = document.createElementNS(NS, tag);
  for (const k in attrs) el.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(el);
  return el;
}

// window buttons
D.windows.forEach((w, i) => {
  const b = document.createElement("button");
  b.textContent = w.name + " [" + w.lo + ", " + w.hi + "]";
  b.dataset.window = i;
  b.addEventListener("click", () => { state.win = i; show(); });
  $("windowButtons").appendChild(b);
});

// target selector and opacity (hidden without heatmaps)
if (HM && HM.targets.length){
  HM.targets.forEach((t, i) => { const o = document.createElement("option"); o.value = i; o.textContent = t;
    $("target").appendChild(o); });
  $("target").addEventListener("change", e => { state.target = +e.target.value; show(); });
} else { $("targetLabel").style.display = "none"; $("opacityLabel").style.display = "none"; }
$("opacity").addEventListener("input", e => { state.opacity = e.target.value / 100; show(); });

// the attention curve: x = slice index, y = attention, one line per window
const P = {left: 44, right: 628, top: 12, bottom: 140};
const xOf = s => P.left + (Z > 1 ? s / (Z - 1) : 0.5) * (P.right - P.left);
let marker = null;
function drawCurve(){
  svg("rect", {id: "plotArea", x: P.left, y: P.top, width: P.right - P.left, height: P.bottom - P.top,
               fill: "#1d1d1d", stroke: "#333"}, curve);
  const A = D.attention;
  let peak = 0;
  if (A) A.curves.forEach(c => c.forEach(p => { peak = Math.max(peak, p[1]); }));
  const yOf = a => P.bottom - (peak > 0 ? a / peak : 0) * (P.bottom - P.top);
  const colours = ["#4fa3ff", "#ffb347", "#7bd389", "#e377c2", "#bcbd22", "#17becf"];
  D.lesions.forEach(l => svg("line", {x1: xOf(l.slice), x2: xOf(l.slice), y1: P.top, y2: P.bottom,
                                     stroke: "#e44", "stroke-dasharray": "4 3", "stroke-width": 1}, curve));
  if (HM) HM.items.forEach(it => svg("circle", {cx: xOf(it.slice), cy: P.bottom + 4, r: 2.5, fill: "#f0c040"}, curve));
  if (A){
    A.curves.forEach((c, w) => {
      if (!c.length) return;
      svg("polyline", {points: c.map(p => xOf(p[0]).toFixed(1) + "," + yOf(p[1]).toFixed(1)).join(" "),
                       fill: "none", stroke: colours[w % colours.length], "stroke-width": 1.5}, curve);
      const t = svg("text", {x: P.right - 4, y: P.top + 12 + 13 * w, fill: colours[w % colours.length],
                             "text-anchor": "end", "font-size": 11}, curve);
      t.textContent = A.windows[w];
    });
    const lab = svg("text", {x: 4, y: P.top + 10, fill: "#999", "font-size": 10}, curve);
    lab.textContent = peak.toPrecision(2);
  } else {
    const t = svg("text", {x: (P.left + P.right) / 2, y: (P.top + P.bottom) / 2, fill: "#777",
                           "text-anchor": "middle", "font-size": 12}, curve);
    t.textContent = "no attention for this scan";
  }
  const ax = svg("text", {x: (P.left + P.right) / 2, y: 165, fill: "#999", "text-anchor": "middle",
                          "font-size": 11}, curve);
  ax.textContent = "slice (inferior → superior)   z " + D.z_mm[0] + " … " + D.z_mm[Z - 1] + " mm";
  const a0 = svg("text", {x: 4, y: P.bottom, fill: "#999", "font-size": 10}, curve);
  a0.textContent = "attn";
  marker = svg("line", {id: "marker", y1: P.top, y2: P.bottom, stroke: "#fff", "stroke-width": 1.5}, curve);
}
drawCurve();

function goTo(s){
  state.slice = Math.max(0, Math.min(Z - 1, Math.round(s)));
  show();
}

function heatmapFor(slice, win){
  const items = hmBySlice[slice];
  if (!items) return null;
  const name = D.windows[win] ? D.windows[win].name : null;
  return items.find(it => it.window === name) || items[0];
}

function drawBoxes(){
  while (boxes.firstChild) boxes.removeChild(boxes.firstChild);
  D.lesions.forEach(l => {
    if (state.slice < l.first || state.slice > l.last) return;
    const key = state.slice === l.slice;
    svg("rect", {x: l.x1, y: l.y1, width: l.x2 - l.x1, height: l.y2 - l.y1, fill: "none", stroke: "#3f3",
                 "stroke-width": Math.max(1, COLS / 256), "stroke-dasharray": key ? "" : "4 3",
                 "vector-effect": "non-scaling-stroke", class: "lesion"}, boxes);
    const t = svg("text", {x: l.x1, y: Math.max(10, l.y1 - 3), fill: "#3f3", "font-size": Math.max(10, ROWS / 40)},
                  boxes);
    t.textContent = l.label + (key ? "" : " (extent)");
  });
}

function show(){
  const s = state.slice;
  ct.src = D.slices[state.win][s];
  slider.value = s;
  $("sliceIndex").textContent = s;
  $("sliceZ").textContent = D.z_mm[s].toFixed(1);
  document.querySelectorAll("#windowButtons button").forEach(b => b.classList.toggle("on", +b.dataset.window === state.win));
  const it = HM ? heatmapFor(s, state.win) : null;
  if (it){
    overlay.src = it.overlays[state.target];
    overlay.style.display = "";
    overlay.style.opacity = state.opacity;
    overlay.dataset.slice = s;
    const other = D.windows[state.win] && it.window !== D.windows[state.win].name;
    $("overlayNote").textContent = HM.method + " of " + HM.targets[state.target] + " on slice " + s +
      (other ? " (computed in the " + it.window + " window)" : "") + " · attention " + it.attention.toPrecision(3);
  } else {
    overlay.removeAttribute("src");
    overlay.style.display = "none";
    overlay.dataset.slice = "";
    $("overlayNote").textContent = HM ? "no heatmap for this slice (yellow dots on the curve mark those with one)" : "";
  }
  drawBoxes();
  marker.setAttribute("x1", xOf(s)); marker.setAttribute("x2", xOf(s));
}

slider.addEventListener("input", () => goTo(+slider.value));
stage.addEventListener("wheel", e => { e.preventDefault(); goTo(state.slice + (e.deltaY > 0 ? 1 : -1)); },
                       {passive: false});
curve.addEventListener("click", e => {
  const pt = curve.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
  const p = pt.matrixTransform(curve.getScreenCTM().inverse());
  goTo((p.x - P.left) / (P.right - P.left) * (Z - 1));
});
document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  if (e.key === "ArrowUp" || e.key === "ArrowRight") { goTo(state.slice + 1); e.preventDefault(); }
  if (e.key === "ArrowDown" || e.key === "ArrowLeft") { goTo(state.slice - 1); e.preventDefault(); }
});
// start on the most attended slice when there is attention, else the middle one
if (D.attention){
  let best = null;
  D.attention.curves.forEach(c => c.forEach(p => { if (!best || p[1] > best[1]) best = p; }));
  if (best) state.slice = best[0];
}
show();
document.body.dataset.ready = "1";
})();
"""
