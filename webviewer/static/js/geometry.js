// Pure geometry of the viewer: which part of the image is asked for, where it lands on screen,
// and distances in millimetres. No pixels are touched here: the server renders, the browser only
// places the picture and draws measurement lines over it.

import { MAX_WINDOW_VALUE } from "./limits.js";
import { stackOfFrame } from "./stacks.js";

export const PLANES = ["native", "axial", "coronal", "sagittal"];

/**
 * @typedef {object} PlaneInfo
 * @property {number} count indexes run 0..count-1
 * @property {number} columns image width in pixels
 * @property {number} rows image height in pixels
 * @property {number} width the whole image's width in mm (in pixels when not measurable)
 * @property {number} height the whole image's height in mm (in pixels when not measurable)
 * @property {boolean} measurable false when the pixel size is unknown
 * @property {string|null} indexDirection patient direction the index runs towards
 * @property {{first: number, step: number}|null} location plane position on its patient axis: first + index * step
 * @property {number|null} spacing mm between consecutive indexes
 * @property {{top: string, right: string, bottom: string, left: string}|null} edges patient direction at each image edge
 */

/**
 * One plane of a record as the node publishes it (RecordMeta.planes, docs/API.md): index count,
 * physical size (mm) of the whole image, whether distances are in mm, the patient direction the
 * index runs towards, the plane's position on its patient axis and the spacing of its indexes.
 * Nothing here is derived from the acquisition: the node computes it with the function it cuts
 * its reformats with, for axial, coronal, sagittal and oblique acquisitions alike.
 * A record from a node older than `planes` has its stored frames only, measured in pixels.
 * A stored frame (`frame` given) has the size and pixel spacing of its own stack (a series may mix
 * them: stacks.js stackOfFrame); its index range and positions stay the record's.
 * @param {any} meta RecordMeta
 * @param {string} plane "native" (the stored slices), "axial", "coronal" or "sagittal"
 * @param {number|null} [frame] the stored frame shown (native only)
 * @returns {PlaneInfo}
 */
export function planeInfo(meta, plane, frame = null) {
  const served = meta.planes && meta.planes[plane === "native" ? "slices" : plane];
  if (!served) {
    return { count: plane === "native" ? meta.frames : 0, columns: meta.columns, rows: meta.rows,
      width: meta.columns, height: meta.rows, measurable: false,
      indexDirection: null, location: null, spacing: null, edges: null };
  }
  const stack = plane === "native" && frame != null ? stackOfFrame(meta, Number(frame)) : null;
  const size = (stack && stack.planes && stack.planes.slices) || served;
  return {
    count: served.count, columns: size.columns, rows: size.rows, width: size.width_mm, height: size.height_mm,
    measurable: size.measurable, indexDirection: served.index_direction, location: served.location_mm,
    spacing: served.spacing_mm, edges: served.edges || null,
  };
}

/**
 * Where plane `index` lies on the plane's patient axis (mm, LPS), or null when the node does not know.
 * @param {PlaneInfo} info
 * @param {number} index
 * @returns {number|null}
 */
export function planeLocation(info, index) {
  return info.location ? info.location.first + index * info.location.step : null;
}

// The patient axis (LPS) a direction letter lies along.
const AXIS_OF = { L: "x", R: "x", A: "y", P: "y", S: "z", I: "z" };

/**
 * The patient axis ("x", "y" or "z") a plane's index runs along, from the first (strongest)
 * letter of its index direction; null when the node does not know it. Two views whose indexes run
 * along the same axis show parallel planes (the acquired slices of an axial CT and its axial
 * reformat alike): synchronised scrolling links them, and neither draws a reference line on the other.
 * @param {PlaneInfo} info
 * @returns {string|null}
 */
export function planeAxis(info) {
  return info.indexDirection ? AXIS_OF[info.indexDirection[0]] || null : null;
}

/**
 * The (fractional) index of a plane at patient position `mm` on its axis: the inverse of
 * planeLocation. Null when the node gives no position.
 * @param {PlaneInfo} info @param {number} mm
 * @returns {number|null}
 */
export function indexAt(info, mm) {
  return info.location && info.location.step ? (mm - info.location.first) / info.location.step : null;
}

/**
 * Where a slice at patient position `mm` on `axis` cuts the image of `target`, as a line across
 * the whole image: horizontal at `fraction` of its height, or vertical at `fraction` of its width.
 * `along` is the plane of the target's record whose index runs along `axis`: the target image has
 * one pixel per index of it (the volume's own grid), so index k lies at (k + 0.5) / count from the
 * edge its index starts at. Null for a parallel plane, an unknown geometry, or a slice outside the image.
 * @param {number|null} mm @param {string|null} axis @param {PlaneInfo} along @param {PlaneInfo} target
 * @returns {{orientation: "horizontal"|"vertical", fraction: number}|null}
 */
export function referenceLine(mm, axis, along, target) {
  if (mm == null || !axis || !target.edges || !along.indexDirection || planeAxis(target) === axis) return null;
  const k = indexAt(along, mm);
  if (k == null || !along.count) return null;
  for (const [edge, orientation] of /** @type {const} */ ([["top", "horizontal"], ["left", "vertical"]])) {
    const letter = String(target.edges[edge] || "")[0];
    if (AXIS_OF[letter] !== axis) continue;
    const fromStart = (k + 0.5) / along.count;
    // the index runs towards this edge: index 0 is at the opposite one
    const fraction = letter === along.indexDirection[0] ? 1 - fromStart : fromStart;
    return fraction >= 0 && fraction <= 1 ? { orientation, fraction } : null;
  }
  return null;
}

export function clamp(value, lo, hi) {
  return Math.min(hi, Math.max(lo, value));
}

/** The visible part of the image, as fractions [x0, y0, x1, y1], for a zoom factor ≥ 1 and a centre. */
export function regionFor(zoom, cx, cy) {
  const half = 0.5 / Math.max(1, zoom);
  const x = clamp(cx, half, 1 - half);
  const y = clamp(cy, half, 1 - half);
  return [x - half, y - half, x + half, y + half];
}

/** Largest rectangle of the region's physical aspect that fits the viewport, centred. */
export function fitRect(viewW, viewH, physW, physH) {
  const scale = Math.min(viewW / physW, viewH / physH);
  const width = physW * scale;
  const height = physH * scale;
  return { left: (viewW - width) / 2, top: (viewH - height) / 2, width, height };
}

/** Pixel size to ask the server for: the on-screen size times the device pixel ratio, capped. */
export function requestSize(rect, dpr, maxSide) {
  let w = rect.width * dpr;
  let hgt = rect.height * dpr;
  const over = Math.max(w, hgt) / maxSide;
  if (over > 1) { w /= over; hgt /= over; }
  return [Math.max(16, Math.round(w)), Math.max(16, Math.round(hgt))];
}

/**
 * How the picture is turned on screen by the rotate and flip tools: mirrored first (left-right,
 * top-bottom), then turned clockwise by quarter turns. The node renders the image upright; the
 * browser only turns the element that shows it (a CSS transform), and every mapping between the
 * screen and the image (measurements, readings, reference lines, markers) goes through here.
 * @typedef {object} Turn
 * @property {number} rotate clockwise quarter turns, 0..3
 * @property {boolean} flipH mirrored left-right
 * @property {boolean} flipV mirrored top-bottom
 */

/** @type {Turn} */
export const NO_TURN = Object.freeze({ rotate: 0, flipH: false, flipV: false });

/** A quarter or three-quarter turn: the picture's width runs down the screen. @param {Turn} [turn] */
export function sideways(turn) {
  return Boolean(turn && turn.rotate % 2);
}

/**
 * A point of the picture (fractions 0..1 of the part shown, as rendered) to where it lands in
 * the turned box on screen (fractions 0..1 of that box).
 * @param {number} u @param {number} v @param {Turn} [turn] @returns {number[]}
 */
export function turnPoint(u, v, turn) {
  if (!turn) return [u, v];
  let x = turn.flipH ? 1 - u : u;
  let y = turn.flipV ? 1 - v : v;
  for (let q = 0; q < turn.rotate; q++) [x, y] = [1 - y, x];
  return [x, y];
}

/** The inverse of turnPoint. @param {number} x @param {number} y @param {Turn} [turn] @returns {number[]} */
export function unturnPoint(x, y, turn) {
  if (!turn) return [x, y];
  let u = x;
  let v = y;
  for (let q = 0; q < turn.rotate; q++) [u, v] = [v, 1 - u];
  return [turn.flipH ? 1 - u : u, turn.flipV ? 1 - v : v];
}

/**
 * The patient directions at the edges of the turned picture: mirroring swaps opposite edges,
 * a clockwise quarter turn brings the left edge to the top. The markers stay anatomically right.
 * @param {{top: string, right: string, bottom: string, left: string}|null} edges @param {Turn} [turn]
 */
export function turnedEdges(edges, turn) {
  if (!edges || !turn) return edges;
  let e = { ...edges };
  if (turn.flipH) e = { ...e, left: e.right, right: e.left };
  if (turn.flipV) e = { ...e, top: e.bottom, bottom: e.top };
  for (let q = 0; q < turn.rotate; q++) e = { top: e.left, right: e.top, bottom: e.right, left: e.bottom };
  return e;
}

/** The CSS transform that turns the picture's element about its centre. @param {Turn} [turn] */
export function turnTransform(turn) {
  if (!turn) return "";
  const parts = [];
  if (turn.rotate) parts.push(`rotate(${turn.rotate * 90}deg)`);
  if (turn.flipH || turn.flipV) parts.push(`scale(${turn.flipH ? -1 : 1}, ${turn.flipV ? -1 : 1})`);
  return parts.join(" ");
}

/**
 * A screen point (relative to the viewport) as fractions of the whole image. `rect` is where the
 * picture lands on screen, with its `turn` (rotate and flip tools) when it has one.
 * @param {number} x @param {number} y @param {{left: number, top: number, width: number, height: number, turn?: Turn}} rect
 * @param {number[]} region
 */
export function screenToImage(x, y, rect, region) {
  const [x0, y0, x1, y1] = region;
  const [u, v] = unturnPoint((x - rect.left) / rect.width, (y - rect.top) / rect.height, rect.turn);
  return [x0 + u * (x1 - x0), y0 + v * (y1 - y0)];
}

/**
 * Fractions of the whole image back to a screen point.
 * @param {number} fx @param {number} fy @param {{left: number, top: number, width: number, height: number, turn?: Turn}} rect
 * @param {number[]} region
 */
export function imageToScreen(fx, fy, rect, region) {
  const [x0, y0, x1, y1] = region;
  const [dx, dy] = turnPoint((fx - x0) / (x1 - x0), (fy - y0) / (y1 - y0), rect.turn);
  return [rect.left + dx * rect.width, rect.top + dy * rect.height];
}

/** Distance in mm between two points given as image fractions, for an image of physW × physH mm. */
export function distanceMm(a, b, physW, physH) {
  return Math.hypot((b[0] - a[0]) * physW, (b[1] - a[1]) * physH);
}

/** The largest centre or width a drag reaches, whole units below the node's bound (the viewer
 *  rounds what it asks for). */
const WINDOW_REACH = MAX_WINDOW_VALUE - 1;

/**
 * Window/level after a drag: right widens, down raises the centre (the usual radiology feel). The
 * step is a share of the starting width, so drags compound; the result stays within what the node
 * renders (MAX_WINDOW_VALUE), never a window every image of the viewport is refused for.
 */
export function dragWindow(start, dx, dy, sensitivity = 1) {
  const step = Math.max(1, start.width) / 256 * sensitivity;
  return { center: clamp(start.center + dy * step, -WINDOW_REACH, WINDOW_REACH),
    width: clamp(start.width + dx * step, 1, WINDOW_REACH) };
}

/** `X-Orientation: top=S,right=L,bottom=I,left=R` as {top, right, bottom, left}; null if absent or malformed. */
export function parseOrientation(value) {
  if (!value) return null;
  const edges = {};
  for (const part of value.split(",")) {
    const [edge, label] = part.split("=").map((t) => t.trim());
    if (["top", "right", "bottom", "left"].includes(edge) && /^[APLRSI]{1,3}$/.test(label || "")) edges[edge] = label;
  }
  return Object.keys(edges).length === 4 ? edges : null;
}

/** `X-Window: center,width` as {center, width}; null if absent or malformed. */
export function parseWindow(value) {
  const parts = String(value || "").split(",").map(Number);
  return parts.length === 2 && parts.every(Number.isFinite) && parts[1] > 0 ? { center: parts[0], width: parts[1] } : null;
}

const STACK_ORDER = {
  S: "feet first (I → S)", I: "head first (S → I)", A: "posterior first (P → A)",
  P: "anterior first (A → P)", L: "right first (R → L)", R: "left first (L → R)",
};

/** How an index runs, from the patient direction the node says it increases towards. */
export function stackOrder(direction) {
  return STACK_ORDER[String(direction || "")[0]] || null;
}
