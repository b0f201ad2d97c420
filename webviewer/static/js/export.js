// Export of the current view as a PNG file: the node's lossless PNG of exactly the image on
// screen (its request, format=png), turned as the screen shows it, with the overlay written over
// it as the viewer shows it: the measurements, ROIs, angles and reference lines (the overlay's
// own SVG), the corner text and the orientation markers. Drawing a finished picture and text on
// a canvas is composition, not pixel processing: no value of the image is computed here.

import { readImage } from "./api.js";
import { h } from "./dom.js";
import { sideways } from "./geometry.js";
import { askedBox } from "./imagesize.js";
import { planeLabel } from "./viewoptions.js";

// what the page's stylesheet gives the overlay's SVG, written into the copy drawn on the canvas
const SVG_STYLE = ["stroke", "stroke-width", "stroke-dasharray", "fill", "opacity", "font-size", "font-weight",
  "font-family", "paint-order"];

/** "CT_chest_Axial_12.png": series, view and slice (1-based), safe as a file name. @param {any} vp @param {any} shown */
export function exportName(vp, shown) {
  const m = vp.meta;
  const series = m.series_description || m.description || m.modality || "image";
  const where = shown.plane === "3d" ? "3D" : `${planeLabel(shown.plane)}_${shown.index + 1}`;
  return `${series}_${where}.png`.replace(/[^A-Za-z0-9._-]+/g, "_");
}

/**
 * Download the image `vp` (viewport.js) shows as a PNG named after its series and slice; resolves
 * to the picture's size, or null when no image is on screen.
 * @param {any} vp @returns {Promise<{width: number, height: number, name: string}|null>}
 */
export async function exportView(vp) {
  const shown = vp.shown;
  if (!shown) return null;
  /** @type {Record<string, string>} */
  const params = {};
  for (const [k, v] of Object.entries({ ...shown.params, format: "png", quality: undefined })) {
    if (v !== undefined) params[k] = String(v);
  }
  if (shown.plane === "3d") params.render = "still";   // never a quick preview
  const response = await vp.ctx.session.fetchRaw(vp.node.url, shown.path, { params });
  const bitmap = await createImageBitmap(await readImage(response, askedBox(params.size)));
  const turn = shown.rect.turn;
  const canvas = document.createElement("canvas");
  canvas.width = sideways(turn) ? bitmap.height : bitmap.width;
  canvas.height = sideways(turn) ? bitmap.width : bitmap.height;
  const g = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  g.save();
  g.translate(canvas.width / 2, canvas.height / 2);
  if (turn) {
    g.rotate((turn.rotate * Math.PI) / 2);
    g.scale(turn.flipH ? -1 : 1, turn.flipV ? -1 : 1);
  }
  g.drawImage(bitmap, -bitmap.width / 2, -bitmap.height / 2);
  g.restore();
  bitmap.close();
  const scale = canvas.width / shown.rect.width;
  await drawOverlaySvg(g, vp, shown.rect, scale);
  drawText(g, vp, canvas, scale);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const name = exportName(vp, shown);
  const link = h("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  return { width: canvas.width, height: canvas.height, name };
}

/** The overlay's SVG (in viewport coordinates) over the picture, which lies at `rect` on screen. */
async function drawOverlaySvg(g, vp, rect, scale) {
  const source = vp.overlay.svg;
  if (!source.childElementCount) return;
  const copy = /** @type {SVGSVGElement} */ (source.cloneNode(true));
  const from = source.querySelectorAll("*");
  copy.querySelectorAll("*").forEach((el, i) => {
    const style = getComputedStyle(from[i]);
    el.setAttribute("style", SVG_STYLE.map((p) => `${p}:${style.getPropertyValue(p)}`).join(";"));
  });
  const width = vp.root.clientWidth;
  const height = vp.root.clientHeight;
  copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  copy.setAttribute("width", String(width));
  copy.setAttribute("height", String(height));
  copy.removeAttribute("style");
  const picture = new Image();
  picture.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(new XMLSerializer().serializeToString(copy))}`;
  await picture.decode();
  g.drawImage(picture, -rect.left * scale, -rect.top * scale, width * scale, height * scale);
}

/** The corner text and the orientation markers, where the viewer shows them, in the picture's corners. */
function drawText(g, vp, canvas, scale) {
  const size = Math.max(11, Math.round(13 * Math.min(scale, 2)));
  const pad = Math.round(size * 0.6);
  g.font = `${size}px sans-serif`;
  g.lineWidth = Math.max(2, size / 5);
  g.strokeStyle = "#000";
  g.lineJoin = "round";
  const write = (text, x, y, align, colour) => {
    g.textAlign = align;
    g.fillStyle = colour;
    g.strokeText(text, x, y);
    g.fillText(text, x, y);
  };
  const lines = (el) => [...el.children].map((c) => c.textContent || "").filter(Boolean);
  const o = vp.overlay;
  const line = size * 1.3;
  g.textBaseline = "top";
  lines(o.cornerTL).forEach((t, i) => write(t, pad, pad + i * line, "left", "#e9eef3"));
  g.textBaseline = "bottom";
  const bl = lines(o.cornerBL);
  bl.forEach((t, i) => write(t, pad, canvas.height - pad - (bl.length - 1 - i) * line, "left", "#e9eef3"));
  const br = ["PNG (lossless)"];   // the screen's corner names the encoding shown, not this file's
  br.forEach((t, i) => write(t, canvas.width - pad, canvas.height - pad - (br.length - 1 - i) * line, "right", "#e9eef3"));
  const m = o.markers;
  if (m.top.hidden) return;
  g.font = `bold ${Math.round(size * 1.2)}px sans-serif`;
  g.textBaseline = "top";
  write(m.top.textContent, canvas.width / 2, pad, "center", "#ffe28a");
  g.textBaseline = "bottom";
  write(m.bottom.textContent, canvas.width / 2, canvas.height - pad, "center", "#ffe28a");
  g.textBaseline = "middle";
  write(m.left.textContent, pad, canvas.height / 2, "left", "#ffe28a");
  write(m.right.textContent, canvas.width - pad, canvas.height / 2, "right", "#ffe28a");
}
