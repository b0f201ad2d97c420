// What is written over a viewport's image: the corners (patients, view and slice numbers, window,
// zoom, encoding), the orientation markers from the node's X-Orientation, the measurements and
// the "loading" message. Drawn from the viewport's state; nothing here changes that state.

import { h, mount, svg, formatBytes, formatDate } from "./dom.js";
import { identityLines } from "./identity.js";
import { labelText } from "./api.js";
import { planeInfo, imageToScreen, distanceMm, stackOrder, planeLocation } from "./geometry.js";
import { roiElements } from "./readings.js";
import { timeOf } from "./stacks.js";
import { angleElements } from "./angle.js";
import { VOLUME_MODES, SLAB_MODES, planeLabel, labelOf, dicomDate, slabShown } from "./viewoptions.js";

const EDGES = ["top", "right", "bottom", "left"];

/**
 * The elements of one viewport's overlay. The ids are those of the active viewport (the viewport
 * moves them to data-id attributes while it is not active, so ids stay unique).
 */
export class Overlay {
  constructor() {
    this.svg = svg("svg", { class: "view-overlay", "aria-hidden": "true" });
    this.cornerTL = h("div", { class: "corner tl" });
    this.cornerBL = h("div", { class: "corner bl", id: "view-info" });
    this.cornerBR = h("div", { class: "corner br", id: "image-info" });
    this.message = h("div", { class: "view-message", id: "view-message", hidden: true });
    // Patient direction at the middle of each edge, from the node's X-Orientation of the image shown.
    /** @type {Record<string, HTMLElement>} */
    this.markers = Object.fromEntries(EDGES.map((edge) => [edge, h("div", { class: `orient orient-${edge}`, id: `orient-${edge}`, hidden: true })]));
  }

  /** The elements, in painting order, to put over the image. */
  elements() {
    return [this.svg, ...Object.values(this.markers), this.cornerTL, this.cornerBL, this.cornerBR, this.message];
  }

  showMessage(text) {
    this.message.hidden = !text;
    this.message.textContent = text || "";
  }

  /** A new view starts blank: measurements and markers go, the corner says what is loading. */
  clear(plane) {
    this.svg.replaceChildren();
    for (const marker of Object.values(this.markers)) marker.hidden = true;
    const name = planeLabel(plane);
    mount(this.cornerBL, h("div", { text: `${name}: loading…` }));
    this.cornerBR.replaceChildren();
    this.showMessage(`Loading the ${name === "3D" ? name : name.toLowerCase()} view…`);
  }

  /** The markers of the image shown (none when its files carry no orientation). */
  showOrientation(orientation) {
    for (const edge of EDGES) {
      this.markers[edge].textContent = orientation ? orientation[edge] : "";
      this.markers[edge].hidden = !orientation;
    }
  }

  /** @param {any} vp the viewport (state, meta, identity, shown) @param {any} entry the image shown */
  updateCorners(vp, entry) {
    const s = vp.state;
    const m = vp.meta;
    const link = vp.linkNote();
    mount(this.cornerTL, identityLines(vp.identity), h("div", { text: [m.modality, formatDate(dicomDate(m.study_date))].filter(Boolean).join(" · ") }),
      h("div", { class: "overlay-series", text: seriesLine(m) }),
      link ? h("div", { class: "overlay-link", text: link }) : null);
    const time = timeText(vp);
    const win = entry.window || s.window;
    const w = win ? `W ${Math.round(win.width)}  L ${Math.round(win.center)}${s.window ? "" : " (default)"}` : "W/L default";
    if (s.plane === "3d") {
      const v = s.vol;
      mount(this.cornerBL, h("div", { text: `3D ${labelOf(VOLUME_MODES, v.mode)} · az ${Math.round(v.azimuth)}° el ${Math.round(v.elevation)}°` }),
        v.mode === "dvr" ? null : h("div", { text: w }),   // a projection's window, the node's default measured on it
        time, h("div", { text: `Zoom ${v.zoom.toFixed(1)}×` }));
    } else {
      const slab = slabShown(s) ? ` · slab ${s.slab.mm} mm ${labelOf(SLAB_MODES, s.slab.mode)}` : "";
      // the numbers of the image on screen, which may lag the slider while slices are fetched
      const index = vp.shown ? vp.shown.index : vp.index();
      const order = stackOrder(planeInfo(m, s.plane).indexDirection);
      mount(this.cornerBL, h("div", { text: `${planeLabel(s.plane)} ${index + 1} / ${vp.count()}${slab}${order ? ` · ${order}` : ""}` }),
        h("div", { id: "slice-info", text: sliceText(vp, index) }), time,
        h("div", { text: w }), h("div", { text: `Zoom ${s.zoom.toFixed(1)}×` }));
    }
    const fmt = (vp.shown && vp.shown.params.format) || vp.settings.format;
    mount(this.cornerBR, h("div", { text: `${fmt.toUpperCase()} · ${formatBytes(entry.bytes)}` }));
  }

  /**
   * The measurements and ROIs of the image shown, and `temp` (the one being drawn).
   * @param {any} vp @param {any} [temp]
   */
  drawMeasures(vp, temp) {
    const shown = vp.shown;
    this.svg.replaceChildren();
    if (!shown || shown.plane === "3d") return;
    this.drawReference(shown, vp.referenceLine());
    const info = planeInfo(vp.meta, shown.plane, shown.index);
    const lines = [...(vp.measures.get(`${shown.plane}:${shown.index}`) || [])];
    if (temp) lines.push(temp);
    for (const line of lines) {
      if (line.shape) {   // an angle (angle.js), a rectangle or ellipse ROI (readings.js)
        this.svg.append(...(line.shape === "angle" ? angleElements(shown, line, info) : roiElements(shown, line)));
        continue;
      }
      const { a, b } = line;
      const [x1, y1] = imageToScreen(a[0], a[1], shown.rect, shown.region);
      const [x2, y2] = imageToScreen(b[0], b[1], shown.rect, shown.region);
      const mm = distanceMm(a, b, info.width, info.height);
      const label = svg("text", { x: (x1 + x2) / 2 + 8, y: (y1 + y2) / 2 - 8, class: "measure-label" });
      label.textContent = info.measurable ? `${mm.toFixed(1)} mm` : `${mm.toFixed(0)} px`;
      this.svg.append(
        svg("line", { x1, y1, x2, y2, class: "measure-line" }),
        svg("circle", { cx: x1, cy: y1, r: 3, class: "measure-end" }),
        svg("circle", { cx: x2, cy: y2, r: 3, class: "measure-end" }),
        label);
    }
  }

  /**
   * The line where the active viewport's slice cuts this image (linking.js), over the part of
   * the image on screen (it follows zoom and pan); nothing when it lies outside that part.
   * @param {any} shown the request on screen @param {{orientation: string, fraction: number}|null} line
   */
  drawReference(shown, line) {
    if (!line) return;
    const [x0, y0, x1, y1] = shown.region;
    const horizontal = line.orientation === "horizontal";
    const f = line.fraction;
    if (horizontal ? f < y0 || f > y1 : f < x0 || f > x1) return;
    const [ax, ay] = imageToScreen(horizontal ? x0 : f, horizontal ? f : y0, shown.rect, shown.region);
    const [bx, by] = imageToScreen(horizontal ? x1 : f, horizontal ? f : y1, shown.rect, shown.region);
    this.svg.append(svg("line", {
      x1: ax, y1: ay, x2: bx, y2: by, class: "reference-line", "data-orientation": line.orientation, "data-fraction": f.toFixed(4),
    }));
  }
}

/**
 * "Time 2/12" of a stack with time points (stacks.js): the time point of the image on screen (a
 * reformat's or 3D view's `phase`, a stored slice's own), or null.
 * @param {any} vp
 */
function timeText(vp) {
  const stack = vp.record.stack;
  const count = stack ? stack.phases.length : 0;
  const shown = vp.shown;
  if (count < 2 || !shown) return null;
  const time = shown.plane === "native" ? timeOf(stack, shown.index) : Number(shown.params.phase ?? 0);
  return time < 0 ? null : h("div", { id: "time-info", text: `Time ${time + 1}/${count}` });
}

/** Which series a viewport shows (several series of the patient may be side by side). */
function seriesLine(m) {
  return labelText([m.series_number != null ? `Se ${m.series_number}` : null, m.series_description || m.description].filter(Boolean).join(" · "));
}

/**
 * "Im 248 · Loc -123.5 mm · Th 1.25 mm": what a report cites, as the scanner numbered it. A
 * reformat has no instance: its position and thickness (one voxel, or the slab) are the node's.
 * @param {any} vp @param {number} index
 */
export function sliceText(vp, index) {
  const s = vp.state;
  if (s.plane !== "native") {
    const info = planeInfo(vp.meta, s.plane);
    const location = planeLocation(info, index);
    const thickness = s.slab.mm > 0 ? s.slab.mm : info.spacing;
    return [
      location != null ? `Loc ${location.toFixed(1)} mm` : null,
      thickness > 0 && info.measurable ? `Th ${thickness.toFixed(thickness < 1 ? 2 : 1)} mm` : null,
    ].filter(Boolean).join(" · ");
  }
  const slice = vp.sliceInfo(index);
  const thickness = Number((slice && slice.thickness_mm) || vp.meta.slice_thickness);
  return [
    slice && slice.instance != null ? `Im ${slice.instance}` : null,
    slice && slice.location_mm != null ? `Loc ${slice.location_mm.toFixed(1)} mm` : null,
    thickness > 0 ? `Th ${thickness.toFixed(thickness < 1 ? 2 : 1)} mm` : null,
  ].filter(Boolean).join(" · ");
}
