// How viewports follow each other: synchronised scrolling by patient position and reference
// lines (where the active viewport's slice cuts the others). Positions come from one definition,
// planeLocation of geometry.js (the node's published plane geometry), as the overlay's "Loc" does.
// Today every viewport shows the same record, so they share one frame of reference; a prior
// opened beside it would be linked by position the same way when its FrameOfReferenceUID is the
// same, and by an offset (mm) chosen when linking otherwise (docs/viewer.md).

import { planeInfo, planeLocation, planeAxis, indexAt, referenceLine, clamp } from "./geometry.js";

/**
 * @typedef {{axis: string, mm: number, info: import("./geometry.js").PlaneInfo}} SlicePosition
 * the patient axis a viewport's index runs along, the position (mm) of its slice on it, and its plane
 */

/**
 * Where the slice a viewport shows lies, or null (3D, or a record without positions).
 * @param {any} vp a Viewport @returns {SlicePosition|null}
 */
export function slicePosition(vp) {
  if (vp.state.plane === "3d") return null;
  const info = planeInfo(vp.meta, vp.state.plane);
  const axis = planeAxis(info);
  const mm = planeLocation(info, vp.index());
  return axis && mm != null ? { axis, mm, info } : null;
}

/**
 * The slice `vp` shows to follow `pos` (the nearest, within its range), or null when `vp` does
 * not show a plane parallel to it: views of other planes are left alone.
 * @param {any} vp a Viewport @param {SlicePosition} pos @returns {number|null}
 */
export function followingIndex(vp, pos) {
  if (vp.state.plane === "3d") return null;
  const info = planeInfo(vp.meta, vp.state.plane);
  if (planeAxis(info) !== pos.axis) return null;
  const k = indexAt(info, pos.mm);
  return k == null ? null : clamp(Math.round(k), 0, info.count - 1);
}

/**
 * Where the active viewport's slice cuts the image `target` shows (see referenceLine), or null:
 * none on the active viewport itself, on 3D, or on a parallel plane.
 * @param {any} active the active Viewport @param {any} target a Viewport with an image on screen
 */
export function referenceOn(active, target) {
  if (!active || active === target || !target.shown || target.shown.plane === "3d") return null;
  const pos = slicePosition(active);
  if (!pos) return null;
  return referenceLine(pos.mm, pos.axis, pos.info, planeInfo(target.meta, target.shown.plane));
}
