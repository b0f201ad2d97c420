// The mouse, pen and touch tools of a viewport: browse, window, pan, zoom, measure, angle
// (angle.js), the value probe and the rectangle and ellipse ROIs (readings.js), (and in 3D rotate,
// or window a projection with the window tool), pinch zoom with two
// fingers, the wheel. The tool is the viewer's (one for all viewports);
// a drag acts on the viewport it starts in, which becomes the active one.

import { screenToImage, distanceMm, dragWindow, clamp, planeInfo } from "./geometry.js";
import { MAX_ELEVATION, zoomBounds } from "./viewoptions.js";
import { Probe, ROI_SHAPES, roiStats } from "./readings.js";
import { AngleDraft, angleDegrees } from "./angle.js";

/** Wire pointer and wheel input of viewport `vp` (viewport.js). @param {any} vp */
export function bindPointer(vp) {
  const el = vp.root;
  const probe = new Probe(vp);
  /** The pointer's image fractions, or null off the image. @param {PointerEvent} e */
  const imagePoint = (e) => {
    if (!vp.shown) return null;
    const box = el.getBoundingClientRect();
    return screenToImage(e.clientX - box.left, e.clientY - box.top, vp.shown.rect, vp.shown.region);
  };
  // the mouse leaving the image ends the reading; a finger lifted leaves it where the finger was
  el.addEventListener("pointerleave", (e) => { if (e.pointerType !== "touch") probe.at(null); });
  el.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    vp.activate();
    if (e.pointerType === "touch") {
      vp.touches.set(e.pointerId, [e.clientX, e.clientY]);
      if (vp.touches.size >= 2) {
        el.setPointerCapture(e.pointerId);
        if (vp.touches.size === 2) startPinch(vp);
        return;
      }
    }
    el.setPointerCapture(e.pointerId);
    el.focus({ preventScroll: true });
    const s = vp.state;
    const box = el.getBoundingClientRect();
    const x = e.clientX - box.left;
    const y = e.clientY - box.top;
    vp.drag = {
      tool: vp.dragTool(), x0: e.clientX, y0: e.clientY, x, y, box,
      index: vp.index(), window: vp.currentWindow(), vol: { ...s.vol }, moved: false,
      start: vp.shown ? screenToImage(x, y, vp.shown.rect, vp.shown.region) : null,
    };
    if (vp.drag.tool === "rotate" || vp.drag.tool === "window") vp.stopPlay();
    if (vp.drag.tool === "probe") probe.at(vp.drag.start);
  });
  el.addEventListener("pointermove", (e) => {
    if (vp.touches.has(e.pointerId)) vp.touches.set(e.pointerId, [e.clientX, e.clientY]);
    const d = vp.drag;
    if (vp.settings.tool === "probe" && vp.state.plane !== "3d" && (!d || d.tool === "probe")) probe.at(imagePoint(e));
    if (!d && vp.angleDraft && vp.settings.tool === "angle") previewAngle(vp, imagePoint(e));
    if (!d) return;
    if (d.tool === "pinch") {
      pinchMove(vp, d);
      return;
    }
    const dx = e.clientX - d.x0;
    const dy = e.clientY - d.y0;
    if (Math.abs(dx) + Math.abs(dy) > 2) d.moved = true;
    const s = vp.state;
    switch (d.tool) {
      case "browse":
        vp.setIndex(d.index + Math.round(dy / 8));
        break;
      case "window":
        if (!d.window) break;   // no window is known for this image (a VOI LUT): nothing to drag from
        s.window = dragWindow(d.window, dx, dy);
        s.windowChoice = "custom";
        vp.changed();
        vp.requestView({ interactive: true });
        break;
      case "pan":
        d.dx = dx;
        d.dy = dy;
        vp.img.style.transform = vp.imageTransform(`translate(${dx}px, ${dy}px)`);
        vp.overlay.svg.style.transform = `translate(${dx}px, ${dy}px)`;
        break;
      case "zoom": {
        const [low, high] = zoomBounds(s.plane);   // the zoom on release (Viewport zoomTo), previewed
        const f = clamp(Math.exp(-dy / 150), low / s.zoom, high / s.zoom);
        vp.img.style.transform = vp.imageTransform(`scale(${f})`);
        d.factor = f;
        break;
      }
      case "measure":
      case "rect":
      case "ellipse":
        if (d.start && vp.shown) {
          const b = screenToImage(e.clientX - d.box.left, e.clientY - d.box.top, vp.shown.rect, vp.shown.region);
          d.end = b;
          vp.overlay.drawMeasures(vp, { a: d.start, b, shape: ROI_SHAPES[d.tool] });
        }
        break;
      case "rotate":
        s.vol.azimuth = (d.vol.azimuth + dx * 0.5) % 360;
        s.vol.elevation = clamp(d.vol.elevation - dy * 0.5, -MAX_ELEVATION, MAX_ELEVATION);
        vp.requestView({ interactive: true });
        break;
      case "angle":
        if (d.start && vp.shown) {
          d.end = screenToImage(e.clientX - d.box.left, e.clientY - d.box.top, vp.shown.rect, vp.shown.region);
          const draft = currentDraft(vp);
          previewAngle(vp, d.end, draft && draft.points.length ? null : d.start);
        }
        break;
      default:
    }
  });
  const finish = (e) => {
    vp.touches.delete(e.pointerId);
    const d = vp.drag;
    if (!d) return;
    vp.drag = null;
    if (d.tool === "pinch" && !d.moved) vp.img.style.transform = vp.imageTransform();
    if (d.tool === "angle") placeAngle(vp, d);
    else if (d.moved) finishDrag(vp, d);
  };
  el.addEventListener("pointerup", finish);
  el.addEventListener("pointercancel", finish);
  let wheelAcc = 0;
  el.addEventListener("wheel", (e) => {
    e.preventDefault();
    vp.activate();
    if (vp.state.plane === "3d" || e.ctrlKey) {
      vp.zoomBy(Math.exp(-e.deltaY / 500));
      return;
    }
    wheelAcc += e.deltaMode === 1 ? e.deltaY * 33 : e.deltaY;
    const steps = Math.trunc(wheelAcc / 100);
    if (steps) {
      probe.at(null);   // the reading was of the slice scrolled away from; the next move reads again
      wheelAcc -= steps * 100;
      vp.stopPlay();
      vp.setIndex(vp.index() + steps);
    }
  }, { passive: false });
}

/** A drag let go: the final request for what the drag changed. */
function finishDrag(vp, d) {
  const s = vp.state;
  switch (d.tool) {
    case "pinch":
      vp.zoomBy(d.factor);
      break;
    case "window":
    case "rotate":
      vp.requestView();
      break;
    case "pan": {
      const shown = vp.shown;
      if (shown) {
        // the image point now at the centre of the box: the drag moved the picture by (dx, dy)
        // on screen, whatever its rotation or flip (screenToImage follows the turn)
        const r = shown.rect;
        const [cx, cy] = screenToImage(r.left + r.width / 2 - (d.dx || 0), r.top + r.height / 2 - (d.dy || 0), r, shown.region);
        vp.panTo(cx, cy);
        if (s.zoom <= 1) vp.img.style.transform = vp.imageTransform();
      }
      vp.requestView();
      break;
    }
    case "zoom":
      vp.zoomBy(d.factor || 1);
      break;
    case "measure":
      if (d.start && d.end) {
        const key = vp.measureKey();
        vp.measures.set(key, [...(vp.measures.get(key) || []), { a: d.start, b: d.end }]);
        vp.overlay.drawMeasures(vp);
        const info = planeInfo(vp.meta, s.plane, vp.shown && vp.shown.index);
        const distance = distanceMm(d.start, d.end, info.width, info.height);
        vp.ctx.announce(info.measurable ? `Distance ${distance.toFixed(1)} millimetres.` : `Distance ${distance.toFixed(0)} pixels.`);
      }
      break;
    case "rect":
    case "ellipse":
      if (d.start && d.end) addRoi(vp, d.tool, d.start, d.end);
      break;
    default:
  }
}

/** The angle being drawn on the slice shown, or null (a draft of another slice is dropped). */
function currentDraft(vp) {
  if (vp.angleDraft && vp.angleDraft.key !== vp.measureKey()) vp.angleDraft = null;
  return vp.angleDraft;
}

/** Draw the angle being placed with `pointer` as its next point (and `first` before it, in a drag). */
function previewAngle(vp, pointer, first = null) {
  const draft = currentDraft(vp);
  const temp = draft ? draft.preview(pointer) : { shape: "angle", points: [first, pointer].filter(Boolean) };
  vp.overlay.drawMeasures(vp, temp);
}

/**
 * A press of the angle tool let go: a click places the next point, a drag places the first arm
 * (its start and its end) at once; the third point completes the angle, kept per slice with the
 * measurements until cleared.
 */
function placeAngle(vp, d) {
  if (!d.start || !vp.shown) return;
  const draft = currentDraft(vp) || new AngleDraft(vp.measureKey());
  if (!draft.points.length) draft.points.push(d.start);
  if (d.moved && d.end) draft.points.push(d.end);
  else if (draft.points.length > 1 || draft.points[0] !== d.start) draft.points.push(d.start);
  if (draft.points.length < 3) {
    vp.angleDraft = draft;
    vp.overlay.drawMeasures(vp, draft.preview());
    return;
  }
  vp.angleDraft = null;
  const [a, b, c] = draft.points.slice(0, 3);
  const key = vp.measureKey();
  vp.measures.set(key, [...(vp.measures.get(key) || []), { shape: "angle", points: [a, b, c] }]);
  vp.overlay.drawMeasures(vp);
  const info = planeInfo(vp.meta, vp.state.plane, vp.shown.index);
  const degrees = angleDegrees(a, b, c, info.width, info.height);
  if (degrees != null) vp.ctx.announce(`Angle ${degrees.toFixed(1)} degrees.`);
}

/** Keep an ROI drawn on the slice shown and show the node's statistics when they come. */
async function addRoi(vp, shape, a, b) {
  const key = vp.measureKey();
  const roi = { a, b, shape, stats: null };
  vp.measures.set(key, [...(vp.measures.get(key) || []), roi]);
  vp.overlay.drawMeasures(vp);
  try {
    roi.stats = await roiStats(vp, shape, a, b);
  } catch (err) {
    roi.stats = { count: 0 };
    vp.ctx.announce(`The region could not be measured: ${err.message}`);
    return;
  }
  vp.overlay.drawMeasures(vp);
  if (roi.stats && roi.stats.count) {
    const unit = roi.stats.unit ? ` ${roi.stats.unit}` : "";
    vp.ctx.announce(`Mean ${roi.stats.mean.toFixed(1)}${unit}, ${roi.stats.count} pixels.`);
  }
}

/** A second finger turns whatever the first was doing into a pinch zoom, in 2D and 3D alike. */
function startPinch(vp) {
  const [[ax, ay], [bx, by]] = vp.touches.values();
  vp.stopPlay();
  vp.img.style.transform = vp.imageTransform();
  vp.drag = { tool: "pinch", dist0: Math.max(1, Math.hypot(bx - ax, by - ay)), factor: 1, moved: false };
}

/** While pinching the shown image is scaled (no request); the new zoom is asked for on release. */
function pinchMove(vp, d) {
  if (vp.touches.size < 2) return;
  const [[ax, ay], [bx, by]] = vp.touches.values();
  const [low, high] = zoomBounds(vp.state.plane);   // the zoom on release (Viewport zoomTo), previewed
  const zoom = vp.zoomFactor();
  d.factor = clamp(Math.hypot(bx - ax, by - ay) / d.dist0, low / zoom, high / zoom);
  d.moved = d.moved || Math.abs(d.factor - 1) > 0.02;
  vp.img.style.transform = vp.imageTransform(`scale(${d.factor})`);
}
