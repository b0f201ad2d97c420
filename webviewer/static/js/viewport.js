// One image view of the viewer: its view (plane), slice, window, zoom and pan, 3D rotation, its
// measurements, its image on a canvas and its own requests (scheduler.js). Every viewport of a
// layout has all of these to itself, its record (series.js) too: the series panel or a prior
// comparison puts another series of the patient into a viewport (setRecord), with its own node.
// The viewer shell (viewer.js) says which one is active.

import { h } from "./dom.js";
import { planeInfo, regionFor, fitRect, requestSize, clamp, NO_TURN, sideways, turnedEdges, turnTransform, parseWindow } from "./geometry.js";
import { MAX_WINDOW_VALUE } from "./limits.js";
import { Overlay } from "./overlay.js";
import { RequestScheduler } from "./scheduler.js";
import { frameAtTime, timeOf } from "./stacks.js";
import { Timers } from "./timers.js";
import { bindPointer } from "./tools.js";
import { MAX_ELEVATION, MAX_SLAB_MM, SLAB_MODES, planeLabel, presetLabel, slabShown, startPreset, zoomBounds } from "./viewoptions.js";
import { nodeAway } from "./noderetry.js";

/** Slice steps closer together than this are a fast scroll: previews until the hand stops. */
const FAST_STEP_MS = 150;
/** How long after the last step of a fast scroll the full-quality slice is asked for. */
export const SETTLE_MS = 200;

function wrapDegrees(angle) {
  return ((angle + 180) % 360 + 360) % 360 - 180;
}

/** A number a field of the address holds (viewer.js `applyView`), or null where it holds none
 *  (nothing, blanks, or no finite number). @param {string | null | undefined} text @returns {number | null} */
export function keptNumber(text) {
  return text != null && text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : null;
}

/**
 * The turn of a 3D view kept in the address (viewer.js `writeReading`): the azimuth taken round as
 * every request sends it (wrapDegrees), the elevation within the poles (MAX_ELEVATION); either is
 * null where the address holds no finite number of degrees for it (the view's own is then kept).
 * @param {string | null} azimuth @param {string | null} elevation
 * @returns {{azimuth: number | null, elevation: number | null}}
 */
export function keptTurn(azimuth, elevation) {
  const a = keptNumber(azimuth);
  const e = keptNumber(elevation);
  return { azimuth: a == null ? null : wrapDegrees(a), elevation: e == null ? null : clamp(e, -MAX_ELEVATION, MAX_ELEVATION) };
}

/** A slab's thickness in whole millimetres, 0 (a plain plane) to MAX_SLAB_MM, from what the toolbar's
 *  field or the address holds. @param {string | null | undefined} value @returns {number} */
export function slabWidth(value) {
  return clamp(Math.round(keptNumber(value) ?? 0), 0, MAX_SLAB_MM);
}

/** A slab as the address keeps it (viewer.js `writeReading`): `mm,mode`. @param {{mm: number, mode: string}} slab */
export function slabParam(slab) {
  return `${slab.mm},${slab.mode}`;
}

/**
 * The slab kept in the address (slabParam), or null where it holds none the toolbar could have
 * made: a thickness above 0 (slabWidth) and a mode of SLAB_MODES. @param {string | null} value
 * @returns {{mm: number, mode: string} | null}
 */
export function keptSlab(value) {
  const [mm, mode, ...rest] = String(value || "").split(",");
  const width = slabWidth(mm);
  return width > 0 && !rest.length && SLAB_MODES.some(([offered]) => offered === mode) ? { mm: width, mode } : null;
}

/** A 2D picture's rotate and flip (geometry.js Turn) as the address keeps it: quarter turns 0-3,
 *  then `h` and `v` where it is flipped: `1h`. @param {import("./geometry.js").Turn} turn */
export function turnParam(turn) {
  return `${turn.rotate}${turn.flipH ? "h" : ""}${turn.flipV ? "v" : ""}`;
}

/** The rotate and flip kept in the address (turnParam), or null where it holds none.
 *  @param {string | null} value @returns {import("./geometry.js").Turn | null} */
export function keptPictureTurn(value) {
  const kept = /^([0-3])(h?)(v?)$/.exec(String(value || ""));
  return kept ? { rotate: Number(kept[1]), flipH: kept[2] === "h", flipV: kept[3] === "v" } : null;
}

/**
 * A custom window written as `center,width` (the address of a reading, viewer.js `writeReading`),
 * or null: the node's own `X-Window` rule (geometry.js parseWindow: two finite numbers, a width
 * above 0) and its bound (MAX_WINDOW_VALUE), so a window from an edited link is never one every
 * image of the viewport would be refused for. @param {string | null} value
 * @returns {{center: number, width: number} | null}
 */
export function customWindow(value) {
  const w = parseWindow(value);
  return w && Math.abs(w.center) < MAX_WINDOW_VALUE && w.width < MAX_WINDOW_VALUE ? w : null;
}

/** A window as the viewer asks the node for it (`window=` of an image, the reading's address).
 *  @param {{center: number, width: number}} w */
export function windowParam(w) {
  return `${Math.round(w.center)},${Math.max(1, Math.round(w.width))}`;
}

/**
 * The named windows offered for a record, as window choices (chooseWindow) with their labels: the
 * file's own, then the node's presets of its modality (a CT window means nothing on an MR). The
 * window chooser offers these (viewer.js fillWindowChoices), and a window read from the address is
 * named by them (restoreWindow), so a bone window comes back as the bone preset, not as a custom one.
 * @param {{window?: Record<string, any>}} presets @param {any} meta
 * @returns {[string, string, {center: number, width: number}][]}
 */
export function namedWindows(presets, meta) {
  /** @type {[string, string, {center: number, width: number}][]} */
  const named = meta.default_window ? [["file", "From the file", meta.default_window]] : [];
  for (const [name, w] of Object.entries(presets.window || {})) {
    if (w.modality && w.modality !== (meta.modality || "").toUpperCase()) continue;
    named.push([`preset:${name}`, `${presetLabel(name)} (W ${w.width} L ${w.center})`, w]);
  }
  return named;
}

/**
 * The kind of picture a window is chosen for. The slices and the reformats show the same voxels'
 * values, so one window serves them all; each 3D projection has values of its own (a MIP's are
 * the brightest along each ray, a MinIP's the darkest), so a window dragged on one of them, or on
 * the slices, turned another into a white or a black blob. @param {{plane: string, vol: {mode: string}}} s
 */
function windowKind(s) {
  return s.plane === "3d" ? `3d:${s.vol.mode}` : "slices";
}

/** What a viewport shows, all of it its own; its DVR preset is its record's modality's default
 *  ("" until the node said it: the node then applies that default itself). */
function initialState(plane, index, volumePresets) {
  return {
    plane,
    index: index == null ? {} : { native: index },   // none: the middle slice
    window: null,          // null: the server's choice (file default or automatic)
    windowChoice: "auto",
    windows: {},           // the window chosen for each other kind of picture (windowKind), kept for it
    zoom: 1, cx: 0.5, cy: 0.5,
    turn: NO_TURN,         // rotate and flip of the 2D picture on screen (geometry.js Turn)
    invert: false,         // rendered inverted by the node (invert=true)
    playing: false,
    time: 0,               // the time point reformats and 3D views show (stacks.js); a stored slice is its own
    slab: { mm: 0, mode: "avg" },   // thick reformats: 0 mm is a plain plane
    vol: { mode: "mip", preset: startPreset(volumePresets), azimuth: 30, elevation: 20, roll: 0, zoom: 1 },
  };
}

export class Viewport {
  /**
   * @param {any} shell the viewer (viewer.js): ctx, record, presets (named windows), cache, settings (format,
   *   quality, tool, fps), and activate()/changed()/scrolled() callbacks
   * @param {number} slot position in the layout (0 is the upper left)
   * @param {string} plane the view it starts with
   * @param {number} [index] the slice it starts on (native slices): a whole index of the record's
   *   (a link's `?slice=1.5` asked the node for `frames/1.5`, a 404 in place of the image)
   */
  constructor(shell, slot, plane, index = 0) {
    this.shell = shell;
    this.ctx = shell.ctx;
    this.presets = shell.presets;
    this.settings = shell.settings;
    this.slot = slot;
    this.useRecord(shell.record);
    this.state = initialState(plane, clamp(Math.round(index) || 0, 0, Math.max(0, this.meta.frames - 1)), this.record.volumePresets);
    this.timers = new Timers();
    this.shown = null;             // the request whose image is on screen
    this.shownEntry = null;
    this.showToken = 0;
    this.viewGeneration = 0;       // raised on every change of view: images asked for before are never shown
    this.waitingForFrame = false;
    this.measures = new Map();     // "plane:index" -> [{a, b}]
    this.drag = null;
    /** @type {import("./angle.js").AngleDraft|null} */
    this.angleDraft = null;        // an angle being placed (tools.js)
    this.touches = new Map();      // pointerId -> [x, y] of fingers on the viewport (pinch zoom)
    this.direction = 1;
    this.lastStep = -Infinity;     // when the slice last changed (performance.now())
    this.destroyed = false;
    this.active = false;
    // The picture is a <canvas> with a "bitmaprenderer" context: each image is decoded once
    // with createImageBitmap and handed over whole (no pixel is touched here), and the previous
    // bitmap is released at once. With <img> elements Chromium keeps every decoded slice in a
    // purgeable cache, some 600 MB after paging through 500 slices.
    this.img = h("canvas", { class: "view-image", "aria-hidden": "true" });
    this.bitmapContext = /** @type {ImageBitmapRenderingContext} */ (this.img.getContext("bitmaprenderer"));
    this.overlay = new Overlay();
    this.root = h("div", {
      class: "viewport", id: "viewport", tabindex: "0", role: "img", dataset: { slot: String(slot) },
      "aria-roledescription": "medical image viewer",
    }, this.img, this.overlay.elements());
    this.root.addEventListener("focus", () => this.activate());
    bindPointer(this);
    this.resizeObserver = new ResizeObserver(() => this.timers.later("resize", 120, () => this.requestView()));
    this.resizeObserver.observe(this.root);
    this.syncDataset();
  }

  /**
   * Show `record` (an OpenRecord of series.js) from now on: its node, meta and patient, with a
   * scheduler of its own (the old one's requests stop).
   * @param {import("./series.js").OpenRecord} record
   */
  useRecord(record) {
    if (this.scheduler) this.scheduler.abort();
    this.record = record;
    this.node = record.node;
    this.meta = record.meta;
    this.identity = record.identity;
    this.recordPath = record.path;
    this.scheduler = new RequestScheduler(this, this.ctx, record.node, this.shell.cache, () => this.settings.fps);
  }

  /**
   * Put another series into this viewport: it opens on `plane` at its middle slice, with its
   * own window; measurements of the series shown before go with it.
   * @param {import("./series.js").OpenRecord} record @param {string} [plane]
   */
  setRecord(record, plane = "native") {
    this.stopPlay();
    this.useRecord(record);
    this.state = initialState(plane, null, record.volumePresets);
    this.measures.clear();
    this.changed();
    this.clearImage();
    if (record.load.state !== "unloaded") this.requestView();
  }

  /** What the overlay says of this viewport's link to the active one (linking.js), or null. */
  linkNote() {
    return this.shell.linkNote(this);
  }

  /** Make this the viewport the toolbar and keys act on. @returns {void} */
  activate() {
    if (!this.active) this.shell.activate(this);
  }

  /** The record's DVR presets arrived: a view that has none yet takes the record's default. */
  volumePresetsKnown() {
    if (!this.state.vol.preset) this.state.vol.preset = startPreset(this.record.volumePresets);
  }

  /** Tell the shell this viewport's state changed (it updates the toolbar if this one is active). */
  changed() {
    this.syncDataset();
    this.shell.changed(this);
  }

  /**
   * Active or not. The element ids the page and its tests know (#viewport, #view-info, ...) are
   * the active viewport's; the others keep theirs as data-id, so every id stays unique.
   */
  setActive(active) {
    this.active = active;
    this.root.classList.toggle("active", active);
    this.applyIds();
  }

  /** Its place in the layout (the viewer keeps the viewport being read first when it goes to one
   *  viewport). @param {number} slot */
  setSlot(slot) {
    this.slot = slot;
    this.root.dataset.slot = String(slot);
    this.syncDataset();
  }

  applyIds() {
    for (const el of [this.root, ...this.root.querySelectorAll("[id], [data-id]")]) {
      const node = /** @type {HTMLElement} */ (el);
      if (this.active && node.dataset.id) { node.id = node.dataset.id; delete node.dataset.id; }
      else if (!this.active && node.id) { node.dataset.id = node.id; node.removeAttribute("id"); }
    }
  }

  syncDataset() {
    const ds = this.root.dataset;
    ds.tool = this.dragTool();
    ds.plane = this.state.plane;
    ds.loadState = this.record.load.state;
    ds.record = this.meta.id;
    // a screen reader names the view of each viewport, not just "image"
    this.root.setAttribute("aria-label", `${planeLabel(this.state.plane)} image, viewport ${this.slot + 1}. `
      + "Up and down arrows change slice, plus and minus zoom, space plays, 0 resets, V moves to the next viewport.");
  }

  /**
   * The tool a drag on this viewport uses: the viewer's, except in 3D, where the window tool
   * windows a projection (MIP, MinIP, average) and every other drag rotates.
   * @returns {string}
   */
  dragTool() {
    const s = this.state;
    if (s.plane !== "3d") return this.settings.tool;
    return this.settings.tool === "window" && s.vol.mode !== "dvr" ? "window" : "rotate";
  }

  // ---------- state ----------

  count() {
    return this.state.plane === "3d" ? 1 : planeInfo(this.meta, this.state.plane).count;
  }

  index() {
    const s = this.state;
    if (s.plane === "3d") return 0;
    if (s.index[s.plane] === undefined) s.index[s.plane] = Math.floor(this.count() / 2);
    return s.index[s.plane];
  }

  /** Go to slice `value` of the current view (clamped). @param {number} value @returns {Promise<void>} */
  setIndex(value) {
    const s = this.state;
    if (s.plane === "3d") return Promise.resolve();
    const next = clamp(Math.round(value), 0, this.count() - 1);
    if (next !== this.index()) this.direction = Math.sign(next - this.index());
    s.index[s.plane] = next;
    this.changed();
    this.shell.scrolled(this);
    const now = performance.now();
    // cine keeps its rate: previews when the link cannot carry full-quality frames that fast
    const fast = s.playing ? !this.scheduler.keepsUp(this.settings.fps) : now - this.lastStep < FAST_STEP_MS;
    this.lastStep = now;
    if (!fast) return this.requestView();
    // The hand moves faster than full-quality images arrive on a slow link: paint the newest slice
    // as a small preview, and the full image once the hand stops (or the cine does).
    if (!s.playing) this.timers.later("settle", SETTLE_MS, () => this.requestView());
    return this.requestView({ interactive: true });
  }

  /**
   * The time point shown of the record's stack: a stored slice's own (-1 for a frame outside the
   * stack), else the one reformats and 3D views of this viewport show. @returns {number}
   */
  timePoint() {
    return this.state.plane === "native" ? timeOf(this.record.stack, this.index()) : this.state.time;
  }

  /**
   * Show time point `time` of the record's stack: the stored slice at the same position, or the
   * reformat or 3D view of that time point (the node's `phase`). @param {number} time @returns {Promise<void>}
   */
  setTime(time) {
    const s = this.state;
    if (s.plane === "native") {
      const frame = frameAtTime(this.record.stack, this.index(), time);
      return frame == null ? Promise.resolve() : this.setIndex(frame);
    }
    s.time = time;
    this.changed();
    return this.requestView();
  }

  /** Where the active viewport's slice cuts the image on screen (linking.js), or null. */
  referenceLine() {
    return this.shell.referenceLineOn(this);
  }

  /** Show another view; the image on screen goes at once (clearImage). @param {string} plane */
  setPlane(plane) {
    this.stopPlay();
    const s = this.state;
    // the time point goes with the view: reformats of the stored slice's time, the stored slice
    // at the same position of the reformat's
    const stack = this.record.stack;
    if (s.plane === "native" && plane !== "native") s.time = Math.max(0, timeOf(stack, this.index()));
    if (s.plane !== "native" && plane === "native" && s.index.native !== undefined) {
      s.index.native = frameAtTime(stack, s.index.native, s.time) ?? s.index.native;
    }
    const before = windowKind(s);
    s.plane = plane;
    this.keepWindowFor(before);
    s.zoom = 1; s.cx = 0.5; s.cy = 0.5;
    this.changed();
    this.clearImage();
    this.requestView();
  }

  /** Show the 3D view as `mode` (MIP, MinIP, average, DVR); the image on screen goes at once.
   *  @param {string} mode */
  setVolumeMode(mode) {
    const before = windowKind(this.state);
    this.state.vol.mode = mode;
    this.keepWindowFor(before);
    this.changed();
    this.clearImage();   // a MIP is not shown under the DVR label while the rendering is on its way
    this.requestView();
  }

  /**
   * The picture changed kind (windowKind; `before` was the old one): the window chosen for that
   * kind is kept for it, and this one gets back the window chosen for it, or at first the node's
   * own (a projection's measured on that projection). @param {string} before
   */
  keepWindowFor(before) {
    const s = this.state;
    const after = windowKind(s);
    if (after === before) return;
    s.windows[before] = { window: s.window, windowChoice: s.windowChoice };
    const kept = s.windows[after] || { window: null, windowChoice: "auto" };
    s.window = kept.window;
    s.windowChoice = kept.windowChoice;
  }

  /** Open with the window `w` (a reading restored from the address): the file's or a preset's when
   *  it is theirs (namedWindows), else a custom one; a 3D view keeps its own.
   *  @param {{center: number, width: number}} w */
  restoreWindow(w) {
    if (windowKind(this.state) !== "slices") return;
    const named = namedWindows(this.presets, this.meta).find(([, , known]) => windowParam(known) === windowParam(w));
    this.state.window = named ? { ...named[2] } : w;
    this.state.windowChoice = named ? named[0] : "custom";
    this.changed();
  }

  /** "auto", "file", "preset:NAME" or "custom". @param {string} choice */
  chooseWindow(choice) {
    const s = this.state;
    s.windowChoice = choice;
    if (choice === "auto") s.window = null;
    else if (choice === "file") s.window = { ...this.meta.default_window };
    else if (choice.startsWith("preset:")) s.window = { ...this.presets.window[choice.slice(7)] };
    this.changed();
    this.requestView();
  }

  /**
   * The window of the image on screen: the one the node says it applied (its automatic choice
   * included), else the one asked for, else the file's. A drag starts from here, never from a
   * guess that would jump to another window.
   */
  currentWindow() {
    return (this.shownEntry && this.shownEntry.window) || this.state.window || this.meta.default_window || null;
  }

  /** Instance number and position of a stored slice, when the node published them. */
  sliceInfo(index) {
    return Array.isArray(this.meta.slices) ? this.meta.slices[index] || null : null;
  }

  /** What the slice counter says: position in the stack, the scanner's instance number. */
  sliceCounter() {
    const slice = this.state.plane === "native" ? this.sliceInfo(this.index()) : null;
    const counter = `${this.index() + 1} / ${this.count()}`;
    return slice && slice.instance != null ? `${counter} · Im ${slice.instance}` : counter;
  }

  measureKey() {
    return `${this.state.plane}:${this.index()}`;
  }

  clearMeasures() {
    this.measures.clear();
    this.angleDraft = null;
    this.overlay.drawMeasures(this);
  }

  /** The zoom factor of the view: a 2D view's (1 is the whole image), or the 3D camera's. @returns {number} */
  zoomFactor() {
    return this.state.plane === "3d" ? this.state.vol.zoom : this.state.zoom;
  }

  /**
   * Zoom to `zoom`, kept within the view's bounds (zoomBounds): the one rule for the wheel, the
   * keys, a drag, a pinch and a zoom kept in the address (viewer.js `applyView`); a value that is
   * no finite number changes nothing. The caller asks for the view. @param {number} zoom
   */
  zoomTo(zoom) {
    if (!Number.isFinite(zoom)) return;
    const [low, high] = zoomBounds(this.state.plane);
    if (this.state.plane === "3d") this.state.vol.zoom = clamp(zoom, low, high);
    else this.state.zoom = clamp(zoom, low, high);
  }

  /**
   * Centre the zoomed 2D view on the image point (`cx`, `cy`) (fractions of its width and height),
   * kept within the image: the one rule for a pan drag and a pan kept in the address (viewer.js
   * `applyView`); a value that is no finite number changes nothing. The caller asks for the view.
   * @param {number} cx @param {number} cy
   */
  panTo(cx, cy) {
    if (!Number.isFinite(cx) || !Number.isFinite(cy)) return;
    this.state.cx = clamp(cx, 0, 1);
    this.state.cy = clamp(cy, 0, 1);
  }

  /** Zoom in (`factor` above 1) or out, within the view's bounds (zoomTo). @param {number} factor */
  zoomBy(factor) {
    this.zoomTo(this.zoomFactor() * factor);
    this.requestView();
  }

  resetView() {
    const s = this.state;
    s.zoom = 1; s.cx = 0.5; s.cy = 0.5;
    s.turn = NO_TURN;
    s.invert = false;
    s.windows = {};
    s.vol = { ...s.vol, azimuth: 30, elevation: 20, roll: 0, zoom: 1 };
    this.chooseWindow("auto");
  }

  /**
   * A new view starts blank: the previous image, its measurements and its orientation labels go
   * at once, so nothing is ever shown under the wrong view's label while the new image loads.
   */
  clearImage() {
    this.viewGeneration += 1;
    this.shown = null;
    this.shownEntry = null;
    this.showToken += 1;
    this.img.hidden = true;
    const ds = this.root.dataset;
    ds.shownPlane = "";
    ds.shownKey = "";
    ds.shownIndex = "-1";
    this.overlay.clear(this.state.plane);
    this.applyIds();
  }

  // ---------- cine ----------

  togglePlay() {
    if (!this.state.playing) return this.startPlay();
    this.stopPlay();
    this.requestView();   // the frame it stopped on, at full quality (cine may have shown previews)
  }

  startPlay() {
    if (this.count() < 2) return;
    this.state.playing = true;
    this.changed();
    const tick = async () => {
      if (!this.state.playing || this.destroyed) return;
      const started = performance.now();
      const shown = this.setIndex((this.index() + 1) % this.count());
      if (this.scheduler.keepsUp(this.settings.fps)) await shown;   // previews never hold the rate back
      const wait = Math.max(0, 1000 / this.settings.fps - (performance.now() - started));
      this.timers.later("cine", wait, tick);
    };
    tick();
  }

  stopPlay() {
    if (!this.state.playing) return;
    this.state.playing = false;
    this.timers.clear("cine");
    this.changed();
  }

  // ---------- requests ----------

  /** The request for the current state: server path, query, cache key and where it will land. */
  describe(interactive, indexOverride) {
    const s = this.state;
    const settings = this.settings;
    const vw = Math.max(32, this.root.clientWidth);
    const vh = Math.max(32, this.root.clientHeight);
    const dpr = window.devicePixelRatio || 1;
    /** @type {Record<string, any>} */
    const params = {};
    let path;
    let rect;
    let region = [0, 0, 1, 1];
    if (s.plane === "3d") {
      const v = s.vol;
      path = `${this.recordPath}/volume`;
      rect = { left: 0, top: 0, width: vw, height: vh };
      const [w, hh] = requestSize(rect, interactive ? 1 : dpr, interactive ? 384 : 1024);
      const format = interactive ? "jpeg" : settings.format;
      Object.assign(params, {
        mode: v.mode, preset: v.mode === "dvr" && v.preset ? v.preset : undefined,
        azimuth: wrapDegrees(v.azimuth).toFixed(1), elevation: v.elevation.toFixed(1), roll: v.roll.toFixed(1), zoom: v.zoom.toFixed(2),
        render: interactive ? "interactive" : "still", format, size: `${w}x${hh}`,
        quality: format === "png" ? undefined : (interactive ? 60 : settings.quality),
      });
    } else {
      const index = indexOverride ?? this.index();
      const info = planeInfo(this.meta, s.plane, index);   // a stored frame: its own stack's size
      path = s.plane === "native" ? `${this.recordPath}/frames/${index}` : `${this.recordPath}/mpr/${s.plane}/${index}`;
      region = regionFor(s.zoom, s.cx, s.cy);
      const physW = (region[2] - region[0]) * info.width;
      const physH = (region[3] - region[1]) * info.height;
      // a quarter turn lays the picture on its side: the box on screen has the other proportions
      const turned = sideways(s.turn);
      rect = { ...fitRect(vw, vh, turned ? physH : physW, turned ? physW : physH), turn: s.turn };
      const picture = turned ? { width: rect.height, height: rect.width } : rect;
      const [w, hh] = interactive ? requestSize(picture, 1, this.scheduler.previewSide(s.playing ? this.settings.fps : 0)) : requestSize(picture, dpr, 2048);
      const format = interactive ? "jpeg" : settings.format;
      const slab = slabShown(s);
      Object.assign(params, {
        format, quality: format === "png" ? undefined : (interactive ? 60 : settings.quality), size: `${w}x${hh}`,
        region: s.zoom > 1 ? region.map((f) => f.toFixed(4)).join(",") : undefined,
        slab: slab ? String(s.slab.mm) : undefined, slab_mode: slab ? s.slab.mode : undefined,
        overlays: s.plane === "native" ? "true" : undefined,  // the file's overlay planes (60xx), as dcmtk draws them
      });
    }
    if (s.plane !== "native" && this.record.stacks.length > 1) params.stack = this.record.stack.id;   // stacks.js
    if (s.plane !== "native" && this.record.stack && this.record.stack.phases.length > 1) params.phase = String(s.time);
    if (s.invert) params.invert = "true";
    if (s.window && !(s.plane === "3d" && s.vol.mode === "dvr")) {
      params.window = windowParam(s.window);
    }
    const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined)).toString();
    return {
      key: `${path}?${qs}`, path, params, rect, region, plane: s.plane, index: indexOverride ?? this.index(), interactive,
      generation: this.viewGeneration,
    };
  }

  /** Show the current state (this viewport's scheduler decides what to fetch and what to drop). */
  requestView({ interactive = false } = {}) {
    this.shell.keepReading();   // a turn or a DVR preset changes the view without changed()
    return this.scheduler.request({ interactive });
  }

  handleImageError(err, req) {
    if (err.code === "superseded") return;
    if (err.code === "frame_not_ready" || err.code === "loading") {
      this.waitingForFrame = true;
      this.overlay.showMessage(req.plane === "native" ? `Slice ${req.index + 1} is still loading…`
        : "This view needs every slice; it appears when loading has finished.");
    } else if (err.code === "not_loaded") {
      this.overlay.showMessage("The record was unloaded from the node's memory; loading it again…");
      this.shell.startRecord(this.record);
    } else if (err.code === "busy") {
      this.overlay.showMessage("The render node is busy; retrying…");
      this.timers.later("busy", (err.details.retryAfter || 1) * 1000, () => this.requestView({ interactive: req.interactive }));
    } else if (nodeAway(err)) {
      // the node is away (restarting, its link down): asked again until it answers (noderetry.js)
      this.overlay.showMessage(`The render node did not answer (${this.ctx.describeError(err)}); trying again automatically…`);
      this.shell.nodeRetry(this.node).down(this);
    } else if (!err.isAuthFailure) {
      this.overlay.showMessage(this.ctx.describeError(err));
    }
  }

  /** `node` answered one of this viewport's requests: viewports that wait for it ask again (noderetry.js).
   *  @param {{url: string}} node */
  nodeAnswered(node) {
    this.shell.nodeRetry(node).answered();
  }

  async show(req, entry) {
    if (req.generation !== this.viewGeneration) return;   // a late answer for a view already left
    const token = ++this.showToken;
    if (this.shownEntry !== entry) {
      let bitmap;
      try { bitmap = await createImageBitmap(entry.blob); } catch {
        if (token === this.showToken) this.overlay.showMessage("The image could not be displayed.");
        return;
      }
      if (this.destroyed || token !== this.showToken || req.generation !== this.viewGeneration) { bitmap.close(); return; }
      this.img.width = bitmap.width;
      this.img.height = bitmap.height;
      this.bitmapContext.transferFromImageBitmap(bitmap);
      this.shownEntry = entry;
    }
    this.placeImage(req.rect);
    this.overlay.svg.style.transform = "";
    this.img.hidden = false;
    this.shown = req;
    this.shownEntry = entry;
    this.overlay.showMessage(null);
    this.overlay.showOrientation(turnedEdges(entry.orientation, req.rect.turn));
    const ds = this.root.dataset;
    ds.shownIndex = String(req.index);
    ds.shownPlane = req.plane;
    ds.shownKey = req.key;
    ds.bytes = String(entry.bytes);
    ds.shownCount = String(Number(ds.shownCount || 0) + 1);
    this.overlay.updateCorners(this, entry);
    this.overlay.drawMeasures(this);
    this.applyIds();
  }

  /**
   * Put the picture's element where `rect` says, turned as `rect.turn` says: a quarter-turned
   * element keeps the picture's own proportions and is turned about the box's centre.
   * @param {{left: number, top: number, width: number, height: number, turn?: import("./geometry.js").Turn}} rect
   */
  placeImage(rect) {
    const turned = sideways(rect.turn);
    const width = turned ? rect.height : rect.width;
    const height = turned ? rect.width : rect.height;
    Object.assign(this.img.style, {
      left: `${rect.left + (rect.width - width) / 2}px`, top: `${rect.top + (rect.height - height) / 2}px`,
      width: `${width}px`, height: `${height}px`, transform: turnTransform(rect.turn),
    });
  }

  /**
   * The picture's CSS transform: `extra` (a drag's preview: pan, zoom, pinch) on screen, then the
   * turn of the image shown. @param {string} [extra]
   */
  imageTransform(extra = "") {
    return [extra, turnTransform(this.shown ? this.shown.rect.turn : this.state.turn)].filter(Boolean).join(" ");
  }

  // ---------- rotate, flip, invert ----------

  /** Turn the 2D picture a quarter clockwise (+1) or anticlockwise (-1). @param {number} quarters */
  rotate(quarters) {
    const t = this.state.turn;
    this.setTurn({ ...t, rotate: (((t.rotate + quarters) % 4) + 4) % 4 });
  }

  /** Mirror the picture as seen on screen: "h" left-right, "v" top-bottom. @param {"h"|"v"} axis */
  flip(axis) {
    const t = this.state.turn;
    // A mirror on screen after the turn equals the inverse turn after the same mirror of the
    // picture (H·R^q = R^-q·H): the picture's own flip toggles and the turn runs the other way.
    const mirrored = axis === "h" ? { ...t, flipH: !t.flipH } : { ...t, flipV: !t.flipV };
    this.setTurn({ ...mirrored, rotate: (4 - t.rotate) % 4 });
  }

  /** @param {import("./geometry.js").Turn} turn */
  setTurn(turn) {
    this.state.turn = Object.freeze({ ...turn });
    this.changed();
    this.requestView();
  }

  toggleInvert() {
    this.state.invert = !this.state.invert;
    this.changed();
    this.requestView();
  }

  /** The record's loading status changed: a view that waited for slices asks again. */
  loadChanged(framesChanged) {
    this.syncDataset();
    if (this.waitingForFrame && framesChanged) this.requestView();
  }

  destroy() {
    this.destroyed = true;
    this.state.playing = false;
    this.timers.clearAll();
    this.scheduler.abort();
    this.resizeObserver.disconnect();
    this.root.remove();
  }
}

