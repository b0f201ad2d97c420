// Readings of original values: the value probe and the rectangle and ellipse ROIs. The canvas
// holds 8-bit display values after windowing, so nothing is read from it: the node answers from
// the frame's stored values through the Modality LUT (HU for CT; docs/API.md, "Value probe and ROI
// statistics"). Readings are taken on the stored slices and on the axial, coronal and sagittal
// reformats (slab included): image fractions map to pixel coordinates of the frame, or of the
// plane as the node publishes it (meta.planes[plane].columns x rows), and the node cuts the plane
// from the stored values exactly as it cuts the image. 3D views have no value to read.

import { h, svg } from "./dom.js";
import { imageToScreen, planeInfo } from "./geometry.js";
import { ROI_STATS, valueShape } from "./answers.js";

/** The tools that read values, and the ROI shape each draws. */
export const ROI_SHAPES = { rect: "rect", ellipse: "ellipse" };

/**
 * Image fractions (screenToImage) as pixel coordinates of the image shown, clamped to it, with the
 * node path that reads it and the slab and stack it was drawn with (`slab`, query text); null in
 * 3D or before an image is shown.
 * @param {any} vp @param {number[]} fraction @returns {{path: string, index: number, x: number, y: number, slab: string}|null}
 */
export function framePoint(vp, fraction) {
  const shown = vp.shown;
  if (!shown || shown.plane === "3d") return null;
  const plane = shown.plane === "native" ? null : (vp.meta.planes || {})[shown.plane];
  if (shown.plane !== "native" && !plane) return null;
  const { columns, rows } = plane || planeInfo(vp.meta, "native", shown.index);   // a frame: its own stack's size
  const params = shown.params || {};
  const slab = (params.slab ? `&slab=${params.slab}&slab_mode=${params.slab_mode}` : "")
    + (params.stack ? `&stack=${encodeURIComponent(params.stack)}` : "");   // the stack the reformat is of
  const path = plane ? `mpr/${shown.plane}/${shown.index}` : `frames/${shown.index}`;
  return { path, index: shown.index, x: clampTo(fraction[0] * columns, columns), y: clampTo(fraction[1] * rows, rows), slab };
}

function clampTo(value, high) {
  return Math.min(high, Math.max(0, value));
}

/** "40.5 HU" or "1234" (no unit). @param {number|null} value @param {string|null} unit */
function withUnit(value, unit, digits = 1) {
  if (value == null) return "–";
  const text = Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return unit ? `${text} ${unit}` : text;
}

/** The probe's line: "(x, y) 40 HU · stored 1064". @param {any} reading the node's answer */
export function probeText(reading) {
  const stored = reading.stored != null && reading.stored !== reading.value ? ` · stored ${reading.stored}` : "";
  return `(${reading.x}, ${reading.y}) ${withUnit(reading.value, reading.unit)}${stored}`;
}

/** An ROI's lines: mean ± SD, min/max, area (mm² where the pixel size is known). @param {any} stats */
export function roiLines(stats) {
  if (!stats) return ["…"];
  if (!stats.count) return ["no pixel inside"];
  const area = stats.area_mm2 != null ? `${stats.area_mm2.toFixed(1)} mm²` : `${stats.count} px`;
  return [
    `Mean ${withUnit(stats.mean, stats.unit)} ± ${stats.sd.toFixed(1)}`,
    `Min ${withUnit(stats.min, stats.unit)} · Max ${withUnit(stats.max, stats.unit)}`,
    `Area ${area}`,
  ];
}

/**
 * The value under the pointer, asked of the node with at most one request in flight per
 * viewport: points that arrive meanwhile replace each other, and only the last is asked next.
 */
export class Probe {
  /** @param {any} vp the viewport (node, recordPath, ctx.session, root) */
  constructor(vp) {
    this.vp = vp;
    this.pending = null;
    this.busy = false;
    /** The last bad answer said in the status line: told once, not at every move of the pointer. */
    this.told = null;
    this.box = h("div", { class: "corner tr probe-value", "aria-live": "off", hidden: true });
    vp.root.append(this.box);
  }

  /** Read the value at image fractions `fraction` (from screenToImage), or hide the reading. @param {number[]|null} fraction */
  at(fraction) {
    const point = fraction && framePoint(this.vp, fraction);
    if (!point || fraction[0] < 0 || fraction[0] >= 1 || fraction[1] < 0 || fraction[1] >= 1) {
      this.pending = null;
      this.hide();
      return;
    }
    this.pending = point;
    if (!this.busy) this.next();
  }

  hide() {
    this.box.hidden = true;
    this.box.textContent = "";
  }

  async next() {
    const point = this.pending;
    this.pending = null;
    if (!point) return;
    this.busy = true;
    try {
      const vp = this.vp;
      const reading = await vp.ctx.session.fetchJson(vp.node.url,
        `${vp.recordPath}/${point.path}/value?x=${point.x}&y=${point.y}${point.slab}`,
        { tokenInQuery: true, shape: valueShape(Math.floor(point.x), Math.floor(point.y)) });
      if (!this.pending) {
        this.box.textContent = probeText(reading);
        this.box.hidden = false;
      }
    } catch (err) {
      this.box.textContent = err && err.status === 409 ? "loading…" : "no value";
      this.box.hidden = false;
      if (err && err.code === "bad_answer" && err.message !== this.told) {
        this.told = err.message;
        this.vp.ctx.announce(`The value could not be read: ${err.message}`);
      }
    } finally {
      this.busy = false;
      if (this.pending) this.next();
    }
  }
}

/**
 * The node's statistics of an ROI drawn from image fractions `a` to `b` on the slice or reformat
 * shown; null in 3D.
 * @param {any} vp @param {string} shape @param {number[]} a @param {number[]} b
 */
export async function roiStats(vp, shape, a, b) {
  const p = framePoint(vp, a);
  const q = framePoint(vp, b);
  if (!p || !q) return null;
  return vp.ctx.session.fetchJson(vp.node.url,
    `${vp.recordPath}/${p.path}/stats?shape=${shape}&x0=${p.x}&y0=${p.y}&x1=${q.x}&y1=${q.y}${p.slab}`, { tokenInQuery: true, shape: ROI_STATS });
}

/**
 * The SVG of one ROI (its shape and its statistics) on the image shown.
 * @param {any} shown the viewport's shown request (rect, region) @param {{a: number[], b: number[], shape: string, stats?: any}} roi
 * @returns {SVGElement[]}
 */
export function roiElements(shown, roi) {
  const [x1, y1] = imageToScreen(roi.a[0], roi.a[1], shown.rect, shown.region);
  const [x2, y2] = imageToScreen(roi.b[0], roi.b[1], shown.rect, shown.region);
  const left = Math.min(x1, x2);
  const top = Math.min(y1, y2);
  const width = Math.abs(x2 - x1);
  const height = Math.abs(y2 - y1);
  const outline = roi.shape === "ellipse"
    ? svg("ellipse", { cx: left + width / 2, cy: top + height / 2, rx: width / 2, ry: height / 2, class: "measure-line roi" })
    : svg("rect", { x: left, y: top, width, height, class: "measure-line roi" });
  const labels = roiLines(roi.stats).map((line, i) => {
    const text = svg("text", { x: left + width + 6, y: top + 14 + i * 16, class: "measure-label roi-label" });
    text.textContent = line;
    return text;
  });
  return [outline, ...labels];
}
