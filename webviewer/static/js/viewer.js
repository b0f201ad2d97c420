// The image viewer: slices, reformats (MPR) and the 3D view, all rendered by the render node.
// The browser only asks for the right picture (slice, window, region, size, format) and shows
// it. The newest request always wins: scrolling aborts stale slice requests, dragging coalesces
// to one request in flight, and neighbouring slices are fetched ahead into a blob-URL cache.

import { h, mount, svg, select, formatBytes, formatDate } from "./dom.js";
import { ApiError } from "./api.js";
import { ImageCache } from "./imagecache.js";
import { patientIdentity, identityPanel, identityLines } from "./identity.js";
import {
  planeInfo, regionFor, fitRect, requestSize, screenToImage, imageToScreen, distanceMm, dragWindow, clamp,
  parseOrientation, parseWindow, stackOrder, planeLocation,
} from "./geometry.js";

const PLANE_LABELS = [["native", "Slices"], ["axial", "Axial"], ["coronal", "Coronal"], ["sagittal", "Sagittal"], ["3d", "3D"]];
const TOOLS = [["browse", "Browse", "B"], ["window", "Window", "W"], ["pan", "Pan", "P"], ["zoom", "Zoom", "Z"], ["measure", "Measure", "M"]];
const VOLUME_MODES = [["mip", "MIP"], ["minip", "MinIP"], ["avg", "Average"], ["dvr", "Volume (DVR)"]];
const FPS_CHOICES = [2, 5, 10, 15, 20, 25, 30];
const SLAB_MODES = [["avg", "Average"], ["mip", "MIP"], ["minip", "MinIP"]];
const MAX_SLAB_MM = 100;   // thicker than any reading slab (the node itself accepts up to 500 mm)
const POLL_MS = 250;
const PREFETCH_WORKERS = 3;
const MAX_ZOOM = 16;
const EDGES = ["top", "right", "bottom", "left"];

/** DICOM DA (YYYYMMDD) as ISO, so dates read the same everywhere in the viewer. */
function dicomDate(value) {
  const m = String(value || "").match(/^(\d{4})-?(\d{2})-?(\d{2})$/);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : value;
}

/** "ct_temporal_bone" -> "CT temporal bone". */
function presetLabel(name) {
  const words = name.split("_");
  const first = /^(ct|mr|pet|us)$/i.test(words[0]) ? words[0].toUpperCase() : words[0][0].toUpperCase() + words[0].slice(1);
  return [first, ...words.slice(1)].join(" ");
}

function wrapDegrees(angle) {
  return ((angle + 180) % 360 + 360) % 360 - 180;
}

/** A node that is down (unreachable, or its proxy answers 502/503/504): try the next one. */
function nodeDown(err) {
  return [0, 502, 503, 504].includes(err.status);
}

/** The record's metadata from the first of its serving nodes that answers (several nodes of an
 *  institution may share one object store; the registry lists them). */
async function openOnServingNode(ctx, nodes, recordPath) {
  let lastError = null;
  for (const node of nodes) {
    try {
      return { node, meta: await ctx.session.fetchJson(node.url, recordPath) };
    } catch (err) {
      if (!nodeDown(err)) throw err;
      lastError = err;
    }
  }
  throw lastError;
}

export async function viewerView(ctx, institutionId, nodeId, recordId, query) {
  let nodes;
  try {
    nodes = await ctx.dir.servingNodes(institutionId, nodeId);
  } catch (err) {
    if (err.status === 403) {
      throw new ApiError(403, "forbidden", "This record is stored at another institution whose render nodes you may not list, so it cannot be opened here.");
    }
    throw err;
  }
  const recordPath = `api/v1/records/${recordId}`;
  const { node, meta } = await openOnServingNode(ctx, nodes, recordPath);
  const [presets, identity] = await Promise.all([
    ctx.session.fetchJson(node.url, "api/v1/presets").catch(() => ({ window: {}, volume: [] })),
    patientIdentity(ctx, institutionId, nodeId, recordId, meta, query),
  ]);
  const viewer = new Viewer(ctx, node, recordPath, meta, presets, query, identity);
  viewer.mount();
  viewer.startLoading();
  return () => viewer.destroy();
}

class Viewer {
  constructor(ctx, node, recordPath, meta, presets, query, identity) {
    this.ctx = ctx;
    this.identity = identity;      // the SIVR patient and the images' patient (identity.js)
    this.node = node;
    this.recordPath = recordPath;
    this.meta = meta;
    this.presets = presets || { window: {}, volume: [] };
    this.cache = new ImageCache();
    this.state = {
      plane: "native",
      index: { native: clamp(Number(query.get("slice")) || 0, 0, Math.max(0, meta.frames - 1)) },
      window: null,          // null: the server's choice (file default or automatic)
      windowChoice: "auto",
      format: ["png", "webp", "jpeg"].includes(query.get("format")) ? query.get("format") : "webp",
      quality: 85,
      zoom: 1, cx: 0.5, cy: 0.5,
      tool: matchMedia("(pointer: coarse)").matches ? "browse" : "window",
      playing: false, fps: 10,
      slab: { mm: 0, mode: "avg" },   // thick reformats: 0 mm is a plain plane
      vol: { mode: "mip", preset: (this.presets.volume || [])[0] || "", azimuth: 30, elevation: 20, roll: 0, zoom: 1 },
    };
    this.load = { state: "unloaded", ready: 0, total: meta.frames };
    this.inflight = null;          // {key, controller, interactive}
    this.pendingInteractive = false;
    this.prefetchController = null;
    this.prefetchSignature = null;   // the view whose slices prefetchController fetches
    this.shown = null;             // geometry of the image on screen
    this.waitingForFrame = false;
    this.measures = new Map();     // "plane:index" -> [{a, b}]
    this.drag = null;
    this.touches = new Map();      // pointerId -> [x, y] of fingers on the viewport (pinch zoom)
    this.timers = new Set();
    this.destroyed = false;
    this.pending = new Map();      // key -> promise of a cache entry being fetched
    this.prefetchQueue = [];
    this.prefetchWorkers = 0;
    this.direction = 1;
    this.viewId = `v${Math.random().toString(36).slice(2, 12)}`;
    this.seq = 0;
    this.viewGeneration = 0;       // raised on every change of view: images asked for before are never shown
  }

  // ---------- layout ----------

  mount() {
    const m = this.meta;
    const s = this.state;
    // The picture is a <canvas> with a "bitmaprenderer" context: each image is decoded once
    // with createImageBitmap and handed over whole (no pixel is touched here), and the previous
    // bitmap is released at once. With <img> elements Chromium keeps every decoded slice in a
    // purgeable cache, some 600 MB after paging through 500 slices.
    this.img = h("canvas", { class: "view-image", "aria-hidden": "true" });
    this.bitmapContext = this.img.getContext("bitmaprenderer");
    this.showToken = 0;
    this.overlay = svg("svg", { class: "view-overlay", "aria-hidden": "true" });
    this.cornerTL = h("div", { class: "corner tl" });
    this.cornerBL = h("div", { class: "corner bl", id: "view-info" });
    this.cornerBR = h("div", { class: "corner br", id: "image-info" });
    this.message = h("div", { class: "view-message", id: "view-message", hidden: true });
    // Patient direction at the middle of each edge, from the node's X-Orientation of the image shown.
    this.markers = Object.fromEntries(EDGES.map((edge) => [edge, h("div", { class: `orient orient-${edge}`, id: `orient-${edge}`, hidden: true })]));
    this.viewport = h("div", {
      class: "viewport", id: "viewport", tabindex: "0", role: "img",
      "aria-roledescription": "medical image viewer",
      "aria-label": "Image. Up and down arrows change slice, plus and minus zoom, space plays, 0 resets.",
    }, this.img, this.overlay, Object.values(this.markers), this.cornerTL, this.cornerBL, this.cornerBR, this.message);

    this.planeSelect = select("plane", PLANE_LABELS, s.plane);
    this.planeSelect.id = "plane";
    this.planeSelect.addEventListener("change", () => this.setPlane(this.planeSelect.value));

    this.toolButtons = TOOLS.map(([tool, label, key]) => h("button", {
      type: "button", class: "btn btn-tool", "aria-pressed": String(tool === s.tool), dataset: { tool },
      title: `${label} (${key})`, text: label, onclick: () => this.setTool(tool),
    }));

    this.windowSelect = h("select", { id: "window-preset", name: "window" });
    this.fillWindowChoices();
    this.windowSelect.addEventListener("change", () => this.chooseWindow(this.windowSelect.value));

    this.formatSelect = select("format", [["webp", "WebP"], ["jpeg", "JPEG"], ["png", "PNG (lossless)"]], s.format);
    this.formatSelect.id = "format";
    this.qualityInput = h("input", { type: "range", id: "quality", min: 10, max: 100, step: 5, value: s.quality });
    this.qualityOut = h("output", { for: "quality", text: String(s.quality) });
    this.formatSelect.addEventListener("change", () => { s.format = this.formatSelect.value; this.syncControls(); this.requestView(); });
    this.qualityInput.addEventListener("change", () => { s.quality = Number(this.qualityInput.value); this.requestView(); });
    this.qualityInput.addEventListener("input", () => { this.qualityOut.textContent = this.qualityInput.value; });

    this.playButton = h("button", { type: "button", class: "btn", id: "play", "aria-pressed": "false", text: "▶ Play", onclick: () => this.togglePlay() });
    this.fpsSelect = select("fps", FPS_CHOICES.map((f) => [f, `${f} fps`]), s.fps);
    this.fpsSelect.id = "fps";
    this.fpsSelect.addEventListener("change", () => { s.fps = Number(this.fpsSelect.value); });

    this.modeSelect = select("mode", VOLUME_MODES, s.vol.mode);
    this.modeSelect.id = "volume-mode";
    this.modeSelect.addEventListener("change", () => {
      s.vol.mode = this.modeSelect.value;
      this.syncControls();
      this.clearImage();   // a MIP is not shown under the DVR label while the rendering is on its way
      this.requestView();
    });
    this.volPresetSelect = select("volume-preset", (this.presets.volume || []).map((p) => [p, presetLabel(p)]), s.vol.preset);
    this.volPresetSelect.id = "volume-preset";
    this.volPresetSelect.addEventListener("change", () => { s.vol.preset = this.volPresetSelect.value; this.requestView(); });

    this.slabInput = h("input", { type: "number", id: "slab", min: 0, max: MAX_SLAB_MM, step: 1, value: s.slab.mm, inputmode: "numeric" });
    this.slabModeSelect = select("slab-mode", SLAB_MODES, s.slab.mode);
    this.slabModeSelect.id = "slab-mode";
    this.slabInput.addEventListener("change", () => {
      s.slab.mm = clamp(Math.round(Number(this.slabInput.value) || 0), 0, MAX_SLAB_MM);
      this.slabInput.value = String(s.slab.mm);
      this.syncControls();
      this.requestView();
    });
    this.slabModeSelect.addEventListener("change", () => { s.slab.mode = this.slabModeSelect.value; this.requestView(); });

    this.slider = h("input", { type: "range", id: "slice", min: 0, max: Math.max(0, m.frames - 1), value: s.index.native, "aria-label": "Slice" });
    this.sliderOut = h("output", { for: "slice", id: "slice-out" });
    this.slider.addEventListener("input", () => this.setIndex(Number(this.slider.value)));

    this.progress = h("progress", { id: "load-progress", max: Math.max(1, m.frames), value: 0, "aria-label": "Slices loaded" });
    this.progressText = h("span", { id: "load-text", class: "muted", text: "Starting to load…" });
    this.loadErrors = h("ul", { class: "problems", id: "load-errors", hidden: true });
    // what the upload found (e.g. unknown pixel spacing: measurements are then in pixels)
    const warnings = Array.isArray(m.warnings) ? m.warnings : [];
    this.recordWarnings = h("ul", { class: "problems", id: "record-warnings", hidden: !warnings.length },
      ...warnings.map((text) => h("li", { text })));

    const label = (text, control) => h("label", { class: "tb-field" }, h("span", { text }), control);
    this.volumeGroup = h("div", { class: "tb-group", hidden: true, "aria-label": "3D settings", role: "group" },
      label("Mode", this.modeSelect), this.volPresetLabel = label("Preset", this.volPresetSelect));
    this.cineGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Cine playback" }, this.playButton, label("Rate", this.fpsSelect));
    this.slabGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Slab (thick reformat)", hidden: true },
      label("Slab mm", this.slabInput), this.slabModeLabel = label("Slab mode", this.slabModeSelect));

    // On a phone the toolbar folds into one "Tools" button under the image and slider (CSS shows
    // the button on narrow screens only; on a desktop every group is always shown).
    this.toolsToggle = h("button", {
      type: "button", class: "btn tools-toggle", id: "tools-toggle", "aria-expanded": "false", "aria-controls": "viewer-tools",
      text: "☰ Tools", onclick: () => this.toggleTools(),
    });
    const toolbar = h("div", { class: "toolbar", id: "viewer-tools", role: "toolbar", "aria-label": "Viewer tools" },
      this.toolsToggle,
      h("div", { class: "tb-group", role: "group", "aria-label": "View choice" }, label("View", this.planeSelect)),
      this.toolGroup = h("div", { class: "tb-group tools", role: "group", "aria-label": "Mouse and touch tool" }, this.toolButtons),
      this.windowGroup = h("div", { class: "tb-group", role: "group", "aria-label": "Window and level" }, label("Window", this.windowSelect)),
      this.cineGroup,
      this.slabGroup,
      this.volumeGroup,
      h("div", { class: "tb-group", role: "group", "aria-label": "Image encoding" },
        label("Format", this.formatSelect), this.qualityLabel = label("Quality", h("span", { class: "range" }, this.qualityInput, this.qualityOut))),
      h("div", { class: "tb-group", role: "group", "aria-label": "Reset and clear" },
        h("button", { type: "button", class: "btn", id: "reset", text: "Reset view", onclick: () => this.resetView() }),
        h("button", { type: "button", class: "btn", id: "clear-measures", text: "Clear measurements", onclick: () => { this.measures.clear(); this.drawOverlay(); } })));

    const title = [m.modality, m.description].filter(Boolean).join(" · ") || "Record";
    mount(this.ctx.main, h("section", { class: "viewer-page" },
      h("div", { class: "viewer-head" },
        h("button", { type: "button", class: "btn btn-quiet", text: "← Back", onclick: () => (history.length > 1 ? history.back() : this.ctx.navigate("#/patients")) }),
        h("h1", { text: title }),
        h("span", { class: "muted", text: `${m.columns}×${m.rows} · ${m.frames} slice${m.frames === 1 ? "" : "s"} · ${this.node.name}` })),
      identityPanel(this.identity),
      toolbar,
      this.viewport,
      this.sliceRow = h("div", { class: "slice-row" }, h("label", { for: "slice", text: "Slice" }), this.slider, this.sliderOut),
      h("div", { class: "load-row" }, this.progress, this.progressText),
      this.loadErrors, this.recordWarnings));

    this.toolbar = toolbar;
    this.bindPointer();
    this.bindKeys();
    this.resizeObserver = new ResizeObserver(() => this.later("resize", 120, () => this.requestView()));
    this.resizeObserver.observe(this.viewport);
    this.syncControls();
    this.viewport.focus({ preventScroll: true });
  }

  toggleTools() {
    const open = this.toolsToggle.getAttribute("aria-expanded") !== "true";
    this.toolsToggle.setAttribute("aria-expanded", String(open));
    this.toolbar.classList.toggle("open", open);
  }

  fillWindowChoices() {
    const options = [["auto", "Default (each image its own)"]];
    if (this.meta.default_window) options.push(["file", "From the file"]);
    for (const [name, w] of Object.entries(this.presets.window || {})) {
      if (w.modality && w.modality !== (this.meta.modality || "").toUpperCase()) continue;   // CT windows mean nothing on an MR
      options.push([`preset:${name}`, `${presetLabel(name)} (W ${w.width} L ${w.center})`]);
    }
    options.push(["custom", "Custom (drag)"]);
    mount(this.windowSelect, options.map(([v, t]) => h("option", { value: v, text: t })));
    this.windowSelect.value = this.state.windowChoice;
  }

  syncControls() {
    const s = this.state;
    const is3d = s.plane === "3d";
    const count = this.count();
    for (const b of this.toolButtons) b.setAttribute("aria-pressed", String(b.dataset.tool === s.tool));
    this.toolGroup.hidden = is3d;
    this.cineGroup.hidden = is3d || count < 2;
    this.volumeGroup.hidden = !is3d;
    this.slabGroup.hidden = is3d || s.plane === "native";   // slabs are reformats of the volume
    this.slabModeLabel.hidden = s.slab.mm === 0;
    this.windowGroup.hidden = is3d && s.vol.mode === "dvr";   // DVR colours come from its preset
    this.volPresetLabel.hidden = s.vol.mode !== "dvr" || !(this.presets.volume || []).length;
    this.qualityLabel.hidden = s.format === "png";
    this.sliceRow.hidden = is3d || count < 2;
    this.slider.max = String(Math.max(0, count - 1));
    this.slider.value = String(this.index());
    this.sliderOut.textContent = this.sliceCounter();
    this.windowSelect.value = s.windowChoice;
    const ready = this.load.state === "ready";
    for (const opt of this.planeSelect.options) {
      // a reformat the node publishes no geometry for (a node older than `planes`) is not offered
      if (opt.value !== "native") opt.disabled = !ready || (opt.value !== "3d" && !planeInfo(this.meta, opt.value).count);
    }
    this.viewport.dataset.tool = is3d ? "rotate" : s.tool;
    this.viewport.dataset.plane = s.plane;
  }

  // ---------- state changes ----------

  count() {
    return this.state.plane === "3d" ? 1 : planeInfo(this.meta, this.state.plane).count;
  }

  index() {
    const s = this.state;
    if (s.plane === "3d") return 0;
    if (s.index[s.plane] === undefined) s.index[s.plane] = Math.floor(this.count() / 2);
    return s.index[s.plane];
  }

  setIndex(value) {
    const s = this.state;
    if (s.plane === "3d") return Promise.resolve();
    const count = this.count();
    const next = clamp(Math.round(value), 0, count - 1);
    if (next !== this.index()) this.direction = Math.sign(next - this.index());
    s.index[s.plane] = next;
    this.slider.value = String(s.index[s.plane]);
    this.sliderOut.textContent = this.sliceCounter();
    return this.requestView();
  }

  setPlane(plane) {
    this.stopPlay();
    this.state.plane = plane;
    this.state.zoom = 1; this.state.cx = 0.5; this.state.cy = 0.5;
    this.syncControls();
    this.clearImage();
    this.requestView();
    this.ctx.announce(plane === "3d" ? "3D view. Drag to rotate." : `${PLANE_LABELS.find(([p]) => p === plane)[1]} view.`);
  }

  setTool(tool) {
    this.state.tool = tool;
    this.syncControls();
  }

  chooseWindow(choice) {
    const s = this.state;
    s.windowChoice = choice;
    if (choice === "auto") s.window = null;
    else if (choice === "file") s.window = { ...this.meta.default_window };
    else if (choice.startsWith("preset:")) s.window = { ...this.presets.window[choice.slice(7)] };
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

  /** What the slice counter says: position in the stack, the scanner's instance number, the order. */
  sliceCounter() {
    const slice = this.state.plane === "native" ? this.sliceInfo(this.index()) : null;
    const counter = `${this.index() + 1} / ${this.count()}`;
    return slice && slice.instance != null ? `${counter} · Im ${slice.instance}` : counter;
  }

  /** Instance number and position of a stored slice, when the node published them. */
  sliceInfo(index) {
    return Array.isArray(this.meta.slices) ? this.meta.slices[index] || null : null;
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
    this.overlay.replaceChildren();
    for (const marker of Object.values(this.markers)) marker.hidden = true;
    const ds = this.viewport.dataset;
    ds.shownPlane = "";
    ds.shownKey = "";
    ds.shownIndex = "-1";
    const name = PLANE_LABELS.find(([p]) => p === this.state.plane)[1];
    mount(this.cornerBL, h("div", { text: `${name}: loading…` }));
    this.cornerBR.replaceChildren();
    this.showMessage(`Loading the ${name === "3D" ? name : name.toLowerCase()} view…`);
  }

  resetView() {
    const s = this.state;
    s.zoom = 1; s.cx = 0.5; s.cy = 0.5;
    s.vol = { ...s.vol, azimuth: 30, elevation: 20, roll: 0, zoom: 1 };
    this.chooseWindow("auto");
    this.syncControls();
  }

  togglePlay() {
    if (this.state.playing) this.stopPlay(); else this.startPlay();
  }

  startPlay() {
    if (this.count() < 2) return;
    this.state.playing = true;
    this.playButton.textContent = "❚❚ Pause";
    this.playButton.setAttribute("aria-pressed", "true");
    const tick = async () => {
      if (!this.state.playing || this.destroyed) return;
      const started = performance.now();
      await this.setIndex((this.index() + 1) % this.count());
      const wait = Math.max(0, 1000 / this.state.fps - (performance.now() - started));
      this.later("cine", wait, tick);
    };
    tick();
  }

  stopPlay() {
    if (!this.state.playing) return;
    this.state.playing = false;
    this.playButton.textContent = "▶ Play";
    this.playButton.setAttribute("aria-pressed", "false");
    this.clearLater("cine");
  }

  // ---------- requests ----------

  /** The request for the current state: server path, query, cache key and where it will land. */
  describe(interactive, indexOverride) {
    const s = this.state;
    const vw = Math.max(32, this.viewport.clientWidth);
    const vh = Math.max(32, this.viewport.clientHeight);
    const dpr = window.devicePixelRatio || 1;
    const params = {};
    let path;
    let rect;
    let region = [0, 0, 1, 1];
    if (s.plane === "3d") {
      const v = s.vol;
      path = `${this.recordPath}/volume`;
      rect = { left: 0, top: 0, width: vw, height: vh };
      const [w, hh] = requestSize(rect, interactive ? 1 : dpr, interactive ? 384 : 1024);
      const format = interactive ? "jpeg" : s.format;
      Object.assign(params, {
        mode: v.mode, preset: v.mode === "dvr" ? v.preset : undefined,
        azimuth: wrapDegrees(v.azimuth).toFixed(1), elevation: v.elevation.toFixed(1), roll: v.roll.toFixed(1), zoom: v.zoom.toFixed(2),
        render: interactive ? "interactive" : "still", format, size: `${w}x${hh}`,
        quality: format === "png" ? undefined : (interactive ? 60 : s.quality),
      });
    } else {
      const index = indexOverride ?? this.index();
      const info = planeInfo(this.meta, s.plane);
      path = s.plane === "native" ? `${this.recordPath}/frames/${index}` : `${this.recordPath}/mpr/${s.plane}/${index}`;
      region = regionFor(s.zoom, s.cx, s.cy);
      rect = fitRect(vw, vh, (region[2] - region[0]) * info.width, (region[3] - region[1]) * info.height);
      const [w, hh] = requestSize(rect, dpr, 2048);
      const format = interactive ? "jpeg" : s.format;
      const slab = s.plane !== "native" && s.slab.mm > 0;
      Object.assign(params, {
        format, quality: format === "png" ? undefined : (interactive ? 70 : s.quality), size: `${w}x${hh}`,
        region: s.zoom > 1 ? region.map((f) => f.toFixed(4)).join(",") : undefined,
        slab: slab ? String(s.slab.mm) : undefined, slab_mode: slab ? s.slab.mode : undefined,
        overlays: s.plane === "native" ? "true" : undefined,  // the file's overlay planes (60xx), as dcmtk draws them
      });
    }
    if (s.window && !(s.plane === "3d" && s.vol.mode === "dvr")) {
      params.window = `${Math.round(s.window.center)},${Math.max(1, Math.round(s.window.width))}`;
    }
    const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined)).toString();
    return {
      key: `${path}?${qs}`, path, params, rect, region, plane: s.plane, index: indexOverride ?? this.index(), interactive,
      generation: this.viewGeneration,
    };
  }

  /** Show the current state; resolves once it is on screen (or has failed, or was superseded). */
  async requestView({ interactive = false } = {}) {
    if (this.destroyed) return;
    if (!interactive) this.pendingInteractive = false;   // a final view replaces any queued preview
    const req = this.describe(interactive);
    const cached = this.cache.get(req.key);
    if (cached) {
      if (this.inflight && !this.inflight.interactive) { this.inflight.controller.abort(); this.inflight = null; }
      await this.show(req, cached);
      if (!interactive) this.prefetch();
      return;
    }
    if (this.inflight) {
      if (this.inflight.key === req.key) return this.inflight.promise;
      if (interactive && this.inflight.interactive) { this.pendingInteractive = true; return; }
      this.inflight.controller.abort();
    }
    const controller = new AbortController();
    const flight = { key: req.key, controller, interactive };
    this.inflight = flight;
    flight.promise = (async () => {
      try {
        const entry = await this.obtain(req, controller.signal);
        if (this.inflight === flight) await this.show(req, entry);
        this.waitingForFrame = false;
        if (!interactive) this.prefetch();
      } catch (err) {
        if (err.name === "AbortError") return;
        this.handleImageError(err, req);
      } finally {
        if (this.inflight === flight) this.inflight = null;
        if (interactive && this.pendingInteractive) {
          this.pendingInteractive = false;
          this.requestView({ interactive: true });
        }
      }
    })();
    return flight.promise;
  }

  /** The image for a request: from the cache, from a request already under way, or fetched. */
  obtain(req, signal) {
    const cached = this.cache.get(req.key);
    if (cached) return Promise.resolve(cached);
    let pending = this.pending.get(req.key);
    if (!pending) {
      pending = this.fetchImage(req, signal).finally(() => this.pending.delete(req.key));
      this.pending.set(req.key, pending);
    }
    return pending;
  }

  async fetchImage(req, signal) {
    // 3D requests carry a view id and a rising sequence number: the node drops a queued
    // rendering as soon as a newer one of the same view arrives (409 superseded).
    const params = req.plane === "3d" ? { ...req.params, view_id: this.viewId, seq: ++this.seq } : req.params;
    const response = await this.ctx.session.fetchRaw(this.node.url, req.path, { params, signal });
    const blob = await response.blob();
    return this.cache.put(req.key, blob, {
      orientation: parseOrientation(response.headers.get("X-Orientation")),
      window: parseWindow(response.headers.get("X-Window")),
    });
  }

  handleImageError(err, req) {
    if (err.code === "superseded") return;
    if (err.code === "frame_not_ready" || err.code === "loading") {
      this.waitingForFrame = true;
      this.showMessage(req.plane === "native" ? `Slice ${req.index + 1} is still loading…`
        : "This view needs every slice; it appears when loading has finished.");
    } else if (err.code === "not_loaded") {
      this.showMessage("The record was unloaded from the node's memory; loading it again…");
      this.startLoading();
    } else if (err.code === "busy") {
      this.showMessage("The render node is busy; retrying…");
      this.later("busy", (err.details.retryAfter || 1) * 1000, () => this.requestView({ interactive: req.interactive }));
    } else if (!err.isAuthFailure) {
      this.showMessage(this.ctx.describeError(err));
    }
  }

  async show(req, entry) {
    if (req.generation !== this.viewGeneration) return;   // a late answer for a view already left
    const token = ++this.showToken;
    if (this.shownEntry !== entry) {
      let bitmap;
      try { bitmap = await createImageBitmap(entry.blob); } catch {
        if (token === this.showToken) this.showMessage("The image could not be displayed.");
        return;
      }
      if (this.destroyed || token !== this.showToken || req.generation !== this.viewGeneration) { bitmap.close(); return; }
      this.img.width = bitmap.width;
      this.img.height = bitmap.height;
      this.bitmapContext.transferFromImageBitmap(bitmap);
      this.shownEntry = entry;
    }
    const front = this.img;
    const r = req.rect;
    Object.assign(front.style, { left: `${r.left}px`, top: `${r.top}px`, width: `${r.width}px`, height: `${r.height}px`, transform: "" });
    this.overlay.style.transform = "";
    front.hidden = false;
    this.shown = req;
    this.shownEntry = entry;
    this.showMessage(null);
    for (const edge of EDGES) {
      this.markers[edge].textContent = entry.orientation ? entry.orientation[edge] : "";
      this.markers[edge].hidden = !entry.orientation;
    }
    const ds = this.viewport.dataset;
    ds.shownIndex = String(req.index);
    ds.shownPlane = req.plane;
    ds.shownKey = req.key;
    ds.bytes = String(entry.bytes);
    ds.shownCount = String(Number(ds.shownCount || 0) + 1);
    this.updateCorners(entry);
    this.drawOverlay();
  }

  /**
   * Fetch the slices the reader is about to see: deeper ahead in the direction of scrolling (or
   * of cine), one behind. One queue, replaced on every call, and a small pool of workers, so a
   * slice is never requested twice and the node is not flooded.
   */
  prefetch() {
    const s = this.state;
    if (s.plane === "3d" || this.drag) return;
    const signature = this.describe(false, 0).key.replace(/\/\d+\?/, "?");
    if (!this.prefetchController || this.prefetchSignature !== signature) {
      if (this.prefetchController) this.prefetchController.abort();
      this.prefetchController = new AbortController();
      this.prefetchSignature = signature;
    }
    const count = this.count();
    const here = this.index();
    const d = this.direction || 1;
    const steps = s.playing
      ? Array.from({ length: Math.min(count - 1, Math.max(4, s.fps)) }, (_, i) => i + 1)
      : [d, 2 * d, 3 * d, -d, 4 * d, 5 * d, 6 * d, -2 * d];
    this.prefetchQueue = steps.map((k) => (s.playing ? (here + k) % count : here + k))
      .filter((i) => i >= 0 && i < count)
      .map((i) => this.describe(false, i))
      .filter((req) => !this.cache.has(req.key) && !this.pending.has(req.key));
    while (this.prefetchWorkers < PREFETCH_WORKERS) {
      this.prefetchWorkers += 1;
      this.prefetchWorker(this.prefetchController).finally(() => { this.prefetchWorkers -= 1; });
    }
  }

  async prefetchWorker(controller) {
    while (!controller.signal.aborted && this.prefetchQueue.length) {
      const req = this.prefetchQueue.shift();
      if (this.cache.has(req.key)) continue;
      try { await this.obtain(req, controller.signal); } catch { return; }
    }
  }

  // ---------- loading ----------

  async startLoading() {
    this.clearLater("poll");
    try {
      const status = await this.ctx.session.fetchJson(this.node.url, `${this.recordPath}/load`, { method: "POST" });
      this.applyStatus(status);
      this.requestView();
    } catch (err) {
      if (!err.isAuthFailure) this.progressText.textContent = `Loading failed: ${this.ctx.describeError(err)}`;
    }
  }

  async poll() {
    try {
      const status = await this.ctx.session.fetchJson(this.node.url, `${this.recordPath}/status`);
      this.applyStatus(status);
    } catch (err) {
      if (!err.isAuthFailure) this.later("poll", POLL_MS * 4, () => this.poll());
    }
  }

  applyStatus(status) {
    if (this.destroyed) return;
    const before = this.load.ready;
    this.load = { state: status.state, ready: status.frames_ready, total: status.frames_total };
    this.progress.max = Math.max(1, status.frames_total);
    this.progress.value = status.frames_ready;
    this.viewport.dataset.loadState = status.state;
    if (status.state === "ready" && status.frames_ready < status.frames_total) {
      this.progressText.textContent = `${status.frames_ready} of ${status.frames_total} slices loaded; the others cannot be shown (below).`;
    } else if (status.state === "ready") {
      this.progressText.textContent = `All ${status.frames_total} slices loaded.`;
    } else if (status.state === "error") {
      this.progressText.textContent = `Loading stopped: ${status.frames_ready} of ${status.frames_total} slices could be read.`;
    } else {
      this.progressText.textContent = `Loading slices: ${status.frames_ready} of ${status.frames_total}`;
    }
    if (status.errors && status.errors.length) {
      mount(this.loadErrors, status.errors.slice(0, 20).map((e) => h("li", { text: `Slice ${e.frame + 1}: ${e.message}` })));
      this.loadErrors.hidden = false;
    }
    this.syncControls();
    if (this.waitingForFrame && status.frames_ready !== before) this.requestView();
    if (status.state === "loading" || status.state === "unloaded") this.later("poll", POLL_MS, () => this.poll());
    else if (status.state === "ready") this.ctx.announce(`All ${status.frames_total} slices loaded.`);
  }

  // ---------- overlay ----------

  showMessage(text) {
    this.message.hidden = !text;
    this.message.textContent = text || "";
  }

  updateCorners(entry) {
    const s = this.state;
    const m = this.meta;
    mount(this.cornerTL, identityLines(this.identity), h("div", { text: [m.modality, formatDate(dicomDate(m.study_date))].filter(Boolean).join(" · ") }));
    const win = entry.window || s.window;
    const w = win ? `W ${Math.round(win.width)}  L ${Math.round(win.center)}${s.window ? "" : " (default)"}` : "W/L default";
    if (s.plane === "3d") {
      const v = s.vol;
      mount(this.cornerBL, h("div", { text: `${VOLUME_MODES.find(([k]) => k === v.mode)[1]} · az ${Math.round(v.azimuth)}° el ${Math.round(v.elevation)}°` }),
        h("div", { text: `Zoom ${v.zoom.toFixed(1)}×` }));
    } else {
      const slab = s.plane !== "native" && s.slab.mm > 0
        ? ` · slab ${s.slab.mm} mm ${SLAB_MODES.find(([k]) => k === s.slab.mode)[1]}` : "";
      // the numbers of the image on screen, which may lag the slider while slices are fetched
      const index = this.shown ? this.shown.index : this.index();
      const order = stackOrder(planeInfo(this.meta, s.plane).indexDirection);
      mount(this.cornerBL, h("div", { text: `${PLANE_LABELS.find(([p]) => p === s.plane)[1]} ${index + 1} / ${this.count()}${slab}${order ? ` · ${order}` : ""}` }),
        h("div", { id: "slice-info", text: this.sliceText(index) }),
        h("div", { text: w }), h("div", { text: `Zoom ${s.zoom.toFixed(1)}×` }));
    }
    const fmt = (this.shown && this.shown.params.format) || s.format;
    mount(this.cornerBR, h("div", { text: `${fmt.toUpperCase()} · ${formatBytes(entry.bytes)}` }));
  }

  /**
   * "Im 248 · Loc -123.5 mm · Th 1.25 mm": what a report cites, as the scanner numbered it. A
   * reformat has no instance: its position and thickness (one voxel, or the slab) are the node's.
   */
  sliceText(index) {
    const s = this.state;
    if (s.plane !== "native") {
      const info = planeInfo(this.meta, s.plane);
      const location = planeLocation(info, index);
      const thickness = s.slab.mm > 0 ? s.slab.mm : info.spacing;
      return [
        location != null ? `Loc ${location.toFixed(1)} mm` : null,
        thickness > 0 && info.measurable ? `Th ${thickness.toFixed(thickness < 1 ? 2 : 1)} mm` : null,
      ].filter(Boolean).join(" · ");
    }
    const slice = this.sliceInfo(index);
    const thickness = Number((slice && slice.thickness_mm) || this.meta.slice_thickness);
    return [
      slice && slice.instance != null ? `Im ${slice.instance}` : null,
      slice && slice.location_mm != null ? `Loc ${slice.location_mm.toFixed(1)} mm` : null,
      thickness > 0 ? `Th ${thickness.toFixed(thickness < 1 ? 2 : 1)} mm` : null,
    ].filter(Boolean).join(" · ");
  }

  measureKey() {
    return `${this.state.plane}:${this.index()}`;
  }

  drawOverlay(temp) {
    const shown = this.shown;
    this.overlay.replaceChildren();
    if (!shown || shown.plane === "3d") return;
    const info = planeInfo(this.meta, shown.plane);
    const hasSpacing = info.measurable;
    const lines = [...(this.measures.get(`${shown.plane}:${shown.index}`) || [])];
    if (temp) lines.push(temp);
    for (const { a, b } of lines) {
      const [x1, y1] = imageToScreen(a[0], a[1], shown.rect, shown.region);
      const [x2, y2] = imageToScreen(b[0], b[1], shown.rect, shown.region);
      const mm = distanceMm(a, b, info.width, info.height);
      const text = hasSpacing ? `${mm.toFixed(1)} mm` : `${mm.toFixed(0)} px`;
      this.overlay.append(
        svg("line", { x1, y1, x2, y2, class: "measure-line" }),
        svg("circle", { cx: x1, cy: y1, r: 3, class: "measure-end" }),
        svg("circle", { cx: x2, cy: y2, r: 3, class: "measure-end" }));
      const label = svg("text", { x: (x1 + x2) / 2 + 8, y: (y1 + y2) / 2 - 8, class: "measure-label" });
      label.textContent = text;
      this.overlay.append(label);
    }
  }

  // ---------- input ----------

  bindPointer() {
    const vp = this.viewport;
    vp.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 && e.pointerType === "mouse") return;
      if (e.pointerType === "touch") {
        this.touches.set(e.pointerId, [e.clientX, e.clientY]);
        if (this.touches.size >= 2) {
          vp.setPointerCapture(e.pointerId);
          if (this.touches.size === 2) this.startPinch();
          return;
        }
      }
      vp.setPointerCapture(e.pointerId);
      vp.focus({ preventScroll: true });
      const s = this.state;
      const box = vp.getBoundingClientRect();
      const x = e.clientX - box.left;
      const y = e.clientY - box.top;
      this.drag = {
        tool: s.plane === "3d" ? "rotate" : s.tool, x0: e.clientX, y0: e.clientY, x, y, box,
        index: this.index(), window: this.currentWindow(), vol: { ...s.vol }, moved: false,
        start: this.shown ? screenToImage(x, y, this.shown.rect, this.shown.region) : null,
      };
      if (this.drag.tool === "rotate" || this.drag.tool === "window") this.stopPlay();
    });
    vp.addEventListener("pointermove", (e) => {
      if (this.touches.has(e.pointerId)) this.touches.set(e.pointerId, [e.clientX, e.clientY]);
      const d = this.drag;
      if (!d) return;
      if (d.tool === "pinch") {
        this.pinchMove(d);
        return;
      }
      const dx = e.clientX - d.x0;
      const dy = e.clientY - d.y0;
      if (Math.abs(dx) + Math.abs(dy) > 2) d.moved = true;
      const s = this.state;
      switch (d.tool) {
        case "browse":
          this.setIndex(d.index + Math.round(dy / 8));
          break;
        case "window":
          if (!d.window) break;   // no window is known for this image (a VOI LUT): nothing to drag from
          s.window = dragWindow(d.window, dx, dy);
          s.windowChoice = "custom";
          this.windowSelect.value = "custom";
          this.requestView({ interactive: true });
          break;
        case "pan":
          this.img.style.transform = `translate(${dx}px, ${dy}px)`;
          this.overlay.style.transform = `translate(${dx}px, ${dy}px)`;
          break;
        case "zoom": {
          const f = clamp(Math.exp(-dy / 150), 1 / s.zoom, MAX_ZOOM / s.zoom);
          this.img.style.transform = `scale(${f})`;
          d.factor = f;
          break;
        }
        case "measure":
          if (d.start && this.shown) {
            const b = screenToImage(e.clientX - d.box.left, e.clientY - d.box.top, this.shown.rect, this.shown.region);
            d.end = b;
            this.drawOverlay({ a: d.start, b });
          }
          break;
        case "rotate":
          s.vol.azimuth = (d.vol.azimuth + dx * 0.5) % 360;
          s.vol.elevation = clamp(d.vol.elevation - dy * 0.5, -90, 90);
          this.requestView({ interactive: true });
          break;
        default:
      }
    });
    const finish = (e) => {
      this.touches.delete(e.pointerId);
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      const s = this.state;
      if (d.tool === "pinch" && !d.moved) this.img.style.transform = "";
      if (!d.moved) return;
      switch (d.tool) {
        case "pinch":
          this.zoomBy(d.factor);
          break;
        case "window":
        case "rotate":
          this.requestView();
          break;
        case "pan": {
          const shown = this.shown;
          if (shown) {
            const [x0, y0, x1, y1] = shown.region;
            const dx = parseFloat((this.img.style.transform.match(/translate\(([-\d.]+)px/) || [0, 0])[1]);
            const dy = parseFloat((this.img.style.transform.match(/,\s*([-\d.]+)px\)/) || [0, 0])[1]);
            s.cx = clamp((x0 + x1) / 2 - (dx / shown.rect.width) * (x1 - x0), 0, 1);
            s.cy = clamp((y0 + y1) / 2 - (dy / shown.rect.height) * (y1 - y0), 0, 1);
            if (s.zoom <= 1) this.img.style.transform = "";
          }
          this.requestView();
          break;
        }
        case "zoom":
          s.zoom = clamp(s.zoom * (d.factor || 1), 1, MAX_ZOOM);
          this.requestView();
          break;
        case "measure":
          if (d.start && d.end) {
            const key = this.measureKey();
            this.measures.set(key, [...(this.measures.get(key) || []), { a: d.start, b: d.end }]);
            this.drawOverlay();
            const info = planeInfo(this.meta, s.plane);
            const distance = distanceMm(d.start, d.end, info.width, info.height);
            this.ctx.announce(info.measurable ? `Distance ${distance.toFixed(1)} millimetres.` : `Distance ${distance.toFixed(0)} pixels.`);
          }
          break;
        default:
      }
    };
    vp.addEventListener("pointerup", finish);
    vp.addEventListener("pointercancel", finish);
    let wheelAcc = 0;
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      const s = this.state;
      if (s.plane === "3d" || e.ctrlKey) {
        this.zoomBy(Math.exp(-e.deltaY / 500));
        return;
      }
      wheelAcc += e.deltaMode === 1 ? e.deltaY * 33 : e.deltaY;
      const steps = Math.trunc(wheelAcc / 100);
      if (steps) {
        wheelAcc -= steps * 100;
        this.stopPlay();
        this.setIndex(this.index() + steps);
      }
    }, { passive: false });
  }

  /** A second finger turns whatever the first was doing into a pinch zoom, in 2D and 3D alike. */
  startPinch() {
    const [[ax, ay], [bx, by]] = this.touches.values();
    this.stopPlay();
    this.img.style.transform = "";
    this.drag = { tool: "pinch", dist0: Math.max(1, Math.hypot(bx - ax, by - ay)), factor: 1, moved: false };
  }

  /** While pinching the shown image is scaled (no request); the new zoom is asked for on release. */
  pinchMove(d) {
    if (this.touches.size < 2) return;
    const [[ax, ay], [bx, by]] = this.touches.values();
    const s = this.state;
    const [low, high] = s.plane === "3d" ? [0.25 / s.vol.zoom, 8 / s.vol.zoom] : [1 / s.zoom, MAX_ZOOM / s.zoom];
    d.factor = clamp(Math.hypot(bx - ax, by - ay) / d.dist0, low, high);
    d.moved = d.moved || Math.abs(d.factor - 1) > 0.02;
    this.img.style.transform = `scale(${d.factor})`;
  }

  zoomBy(factor) {
    const s = this.state;
    if (s.plane === "3d") s.vol.zoom = clamp(s.vol.zoom * factor, 0.25, 8);   // the bounds pinchMove previews
    else s.zoom = clamp(s.zoom * factor, 1, MAX_ZOOM);
    this.requestView();
  }

  /** Keys work wherever focus is, except in form controls, which keep their own keys. */
  bindKeys() {
    this.onKey = (e) => {
      if (e.altKey || e.metaKey || e.ctrlKey || e.defaultPrevented) return;
      if (e.target.closest && e.target.closest("input, select, textarea, button, a")) return;
      const s = this.state;
      const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -10, PageDown: 10 }[e.key];
      const tool = TOOLS.find(([, , k]) => k.toLowerCase() === e.key.toLowerCase());
      if (s.plane === "3d" && step !== undefined) {
        if (e.key === "ArrowLeft" || e.key === "ArrowRight") s.vol.azimuth += step * 10;
        else s.vol.elevation = clamp(s.vol.elevation + step * 10, -90, 90);
        this.requestView();
      } else if (step !== undefined) {
        this.stopPlay();
        this.setIndex(this.index() + step);
      } else if (e.key === "Home") this.setIndex(0);
      else if (e.key === "End") this.setIndex(this.count() - 1);
      else if (e.key === "+" || e.key === "=") this.zoomBy(1.25);
      else if (e.key === "-") this.zoomBy(0.8);
      else if (e.key === "0") this.resetView();
      else if (e.key === " ") this.togglePlay();
      else if (tool && s.plane !== "3d") this.setTool(tool[0]);
      else return;
      e.preventDefault();
    };
    document.addEventListener("keydown", this.onKey);
  }

  // ---------- timers and teardown ----------

  later(name, ms, fn) {
    this.clearLater(name);
    const id = setTimeout(() => { this.timers.delete(name); this[`t_${name}`] = null; fn(); }, ms);
    this[`t_${name}`] = id;
    this.timers.add(name);
  }

  clearLater(name) {
    if (this[`t_${name}`]) clearTimeout(this[`t_${name}`]);
    this[`t_${name}`] = null;
    this.timers.delete(name);
  }

  destroy() {
    this.destroyed = true;
    this.state.playing = false;
    for (const name of [...this.timers]) this.clearLater(name);
    if (this.inflight) this.inflight.controller.abort();
    if (this.prefetchController) this.prefetchController.abort();
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (this.onKey) document.removeEventListener("keydown", this.onKey);
    this.cache.clear();
  }
}
