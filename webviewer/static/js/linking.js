// How viewports follow each other: synchronised scrolling by patient position and reference
// lines (where the active viewport's slice cuts the others). Positions come from one definition,
// planeLocation of geometry.js (the node's published plane geometry), as the overlay's "Loc" does.
// Positions compare only within one frame of reference (FrameOfReferenceUID: the same series, or
// series of one acquisition); a prior study is another one, where the same millimetre is another
// place in the patient. Across frames the reader chooses the correspondence: "align" takes the
// slices on screen as the same place and keeps that offset (mm) while scrolling (FrameOffsets).

import { planeInfo, planeLocation, planeAxis, indexAt, referenceLine, clamp } from "./geometry.js";

/**
 * @typedef {{axis: string, mm: number, info: import("./geometry.js").PlaneInfo, frame: string}} SlicePosition
 * the patient axis a viewport's index runs along, the position (mm) of its slice on it, its plane
 * and its frame of reference
 */

/**
 * The frame of reference of a record: its FrameOfReferenceUID, or the record itself when the
 * files name none (or it was stored before the node kept it), so that it links only to itself.
 * @param {any} meta RecordMeta @returns {string}
 */
export function frameOf(meta) {
  return meta.frame_of_reference_uid || `record:${meta.id}`;
}

/**
 * Offsets between frames of reference that the reader aligned: a place at link position p lies at
 * p + offset(frame) in each aligned frame. Frames not aligned have no offset and are not linked.
 */
export class FrameOffsets {
  constructor() {
    /** @type {Map<string, number>} */
    this.offsets = new Map();
  }

  /**
   * What to add to a position in frame `from` for the same place in frame `to`: 0 within one
   * frame, the aligned offset across two aligned frames, null otherwise (positions do not compare).
   * @param {string} from @param {string} to @returns {number|null}
   */
  shift(from, to) {
    if (from === to) return 0;
    const a = this.offsets.get(from);
    const b = this.offsets.get(to);
    return a === undefined || b === undefined ? null : b - a;
  }

  /**
   * Take `others` (positions of parallel views in other frames) as the same place as `pos`.
   * @param {SlicePosition} pos @param {SlicePosition[]} others @returns {number} frames aligned
   */
  align(pos, others) {
    const base = this.offsets.get(pos.frame) ?? 0;
    this.offsets.set(pos.frame, base);
    let aligned = 0;
    for (const other of others) {
      if (other.frame === pos.frame || other.axis !== pos.axis) continue;
      this.offsets.set(other.frame, base + other.mm - pos.mm);
      aligned += 1;
    }
    return aligned;
  }

  /** The offset of `frame` (mm), undefined where it was never aligned. @param {string} frame */
  of(frame) {
    return this.offsets.get(frame);
  }

  /** Take `mm` as the offset of `frame` again (a reading kept in the address, viewer.js
   *  `restoreLinks`). @param {string} frame @param {number} mm */
  keep(frame, mm) {
    this.offsets.set(frame, mm);
  }

  clear() {
    this.offsets.clear();
  }
}

/** The largest offset (mm) kept in the address: far more than any body is long. */
const MAX_OFFSET_MM = 10000;

/**
 * An offset of a viewport's frame of reference written in the address (viewer.js `writeReading`:
 * `offset=`, a group's `o`), or null where it holds no finite number of millimetres within
 * MAX_OFFSET_MM (the viewport is then not aligned). @param {string | null} text @returns {number | null}
 */
export function keptOffset(text) {
  const mm = text != null && text.trim() !== "" ? Number(text) : NaN;
  return Number.isFinite(mm) && Math.abs(mm) <= MAX_OFFSET_MM ? mm : null;
}

/**
 * Where the slice a viewport shows lies, or null (3D, or a record without positions).
 * @param {any} vp a Viewport @returns {SlicePosition|null}
 */
export function slicePosition(vp) {
  if (vp.state.plane === "3d") return null;
  const info = planeInfo(vp.meta, vp.state.plane);
  const axis = planeAxis(info);
  const mm = planeLocation(info, vp.index());
  return axis && mm != null ? { axis, mm, info, frame: frameOf(vp.meta) } : null;
}

/**
 * The slice `vp` shows to follow `pos` (the nearest, within its range), or null when `vp` does
 * not show a plane parallel to it (views of other planes are left alone) or lies in a frame of
 * reference not aligned with it.
 * @param {any} vp a Viewport @param {SlicePosition} pos @param {FrameOffsets} offsets
 * @returns {number|null}
 */
export function followingIndex(vp, pos, offsets) {
  if (vp.state.plane === "3d") return null;
  const info = planeInfo(vp.meta, vp.state.plane);
  const shift = offsets.shift(pos.frame, frameOf(vp.meta));
  if (planeAxis(info) !== pos.axis || shift == null) return null;
  const k = indexAt(info, pos.mm + shift);
  return k == null ? null : clamp(Math.round(k), 0, info.count - 1);
}

/**
 * Where the active viewport's slice cuts the image `target` shows (see referenceLine), or null:
 * none on the active viewport itself, on 3D, on a parallel plane, or across frames of reference
 * not aligned.
 * @param {any} active the active Viewport @param {any} target a Viewport with an image on screen
 * @param {FrameOffsets} offsets
 */
export function referenceOn(active, target, offsets) {
  if (!active || active === target || !target.shown || target.shown.plane === "3d") return null;
  const pos = slicePosition(active);
  const shift = pos ? offsets.shift(pos.frame, frameOf(target.meta)) : null;
  if (!pos || shift == null) return null;
  return referenceLine(pos.mm + shift, pos.axis, pos.info, planeInfo(target.meta, target.shown.plane));
}

/**
 * What a viewport's overlay says of its link to the active one while scrolling is linked: its
 * offset ("offset +12.5 mm") across aligned frames of reference, or that another frame is not
 * linked until aligned; nothing within one frame.
 * @param {any} active @param {any} vp @param {FrameOffsets} offsets @returns {string|null}
 */
export function linkNote(active, vp, offsets) {
  if (!active || active === vp || frameOf(active.meta) === frameOf(vp.meta)) return null;
  const shift = offsets.shift(frameOf(active.meta), frameOf(vp.meta));
  if (shift == null) return "Other frame of reference: not linked (A aligns)";
  return `Linked, offset ${shift < 0 ? "−" : "+"}${Math.abs(shift).toFixed(1)} mm`;
}
