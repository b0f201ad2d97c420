// The angle tool: three points (click, click, click; or drag the first arm, then click the
// third point), the angle at the middle one. Measured in millimetres on the patient, not on the
// screen: image fractions are scaled by the plane's physical width and height (planeInfo), so
// non-square pixels and any zoom, rotation or flip of the picture leave the angle unchanged.

import { svg } from "./dom.js";
import { imageToScreen } from "./geometry.js";

/**
 * The angle at `vertex` between the arms to `a` and `c` (image fractions), in degrees, for an
 * image of physW × physH (mm, or pixels without pixel spacing); null for a zero-length arm.
 * @param {number[]} a @param {number[]} vertex @param {number[]} c @param {number} physW @param {number} physH
 * @returns {number|null}
 */
export function angleDegrees(a, vertex, c, physW, physH) {
  const ux = (a[0] - vertex[0]) * physW;
  const uy = (a[1] - vertex[1]) * physH;
  const vx = (c[0] - vertex[0]) * physW;
  const vy = (c[1] - vertex[1]) * physH;
  const lengths = Math.hypot(ux, uy) * Math.hypot(vx, vy);
  if (!lengths) return null;
  return (Math.acos(Math.max(-1, Math.min(1, (ux * vx + uy * vy) / lengths))) * 180) / Math.PI;
}

/**
 * An angle being drawn: the points placed so far (image fractions) on the slice `key` of a
 * viewport. Click-drag places the first two points at once; the third completes it.
 */
export class AngleDraft {
  /** @param {string} key the viewport's measureKey when the first point was placed */
  constructor(key) {
    this.key = key;
    /** @type {number[][]} */
    this.points = [];
  }

  /** The measurement as drawn, with `pointer` (the pointer's position) as the next point. @param {number[]|null} [pointer] */
  preview(pointer) {
    return { shape: "angle", points: pointer ? [...this.points, pointer] : [...this.points] };
  }
}

/**
 * The SVG of an angle (its arms as the measure tool draws its line, and its value at the vertex)
 * on the image shown; a draft of one or two points draws what there is.
 * @param {any} shown the viewport's shown request (rect, region) @param {{points: number[][]}} angle
 * @param {{width: number, height: number}} info the plane's physical size (planeInfo)
 * @returns {SVGElement[]}
 */
export function angleElements(shown, angle, info) {
  const screen = angle.points.map((p) => imageToScreen(p[0], p[1], shown.rect, shown.region));
  const elements = [];
  if (screen.length > 1) {
    elements.push(svg("polyline", { points: screen.map((p) => p.join(",")).join(" "), class: "measure-line angle-line" }));
  }
  for (const [cx, cy] of screen) elements.push(svg("circle", { cx, cy, r: 3, class: "measure-end" }));
  if (screen.length === 3) {
    const [a, b, c] = angle.points;
    const degrees = angleDegrees(a, b, c, info.width, info.height);
    const label = svg("text", { x: screen[1][0] + 10, y: screen[1][1] - 10, class: "measure-label angle-label" });
    label.textContent = degrees == null ? "–" : `${degrees.toFixed(1)}°`;
    elements.push(label);
  }
  return elements;
}
