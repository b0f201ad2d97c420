// A record open in the viewer: its render node, its RecordMeta, whose images they are
// (identity.js) and its load status on the node. The viewer opens one when it starts and one
// for every other series of the patient put into a viewport (series panel, priors); each
// viewport shows one, several viewports may show the same one, and each record is loaded and
// polled once however many viewports show it.

import { recordStacks } from "./stacks.js";
import { Timers } from "./timers.js";
import { NO_VOLUME_PRESETS } from "./volumepresets.js";
import { ApiError, apiPath, hostOf } from "./api.js";
import { LOAD_STATUS } from "./answers.js";

const POLL_MS = 250;

/** A node's 404 for a record it was loading: the series was deleted (or moved) meanwhile. */
function gone(node, err) {
  return new ApiError(404, "not_found", `this series is no longer stored on ${node.name || hostOf(node.url)} `
    + `(${err.message}): it was deleted while it was open; go back to the patient's page`);
}

/**
 * @typedef {{state: string, ready: number, total: number}} LoadState
 * @typedef {(record: OpenRecord, status: any, framesChanged: boolean) => void} LoadListener
 */

export class OpenRecord {
  /**
   * @param {any} ctx the app context (session)
   * @param {{id?: string, url: string, name?: string}} node the render node serving it
   * @param {any} meta its RecordMeta (with `slices` and `planes`)
   * @param {any} identity the SIVR patient and the images' patient (identity.js)
   * @param {string} institutionId the institution whose registry lists it
   */
  constructor(ctx, node, meta, identity, institutionId) {
    this.ctx = ctx;
    this.node = node;
    this.meta = meta;
    this.identity = identity;
    this.institutionId = institutionId;
    this.path = apiPath`api/v1/records/${meta.id}`;
    this.planes = meta.planes;             // the record's own; meta.planes follows the chosen stack
    this.stacks = recordStacks(meta);
    this.stack = this.stacks[0] || null;   // the stack its reformats and 3D views show (stacks.js)
    /** @type {import("./volumepresets.js").VolumePresetList} its modality's DVR presets, once the node said them */
    this.volumePresets = NO_VOLUME_PRESETS;
    /** @type {LoadState} */
    this.load = { state: "unloaded", ready: 0, total: meta.frames };
    this.status = null;   // the node's last LoadStatus
    /** @type {Set<LoadListener>} */
    this.listeners = new Set();
    this.timers = new Timers();
    this.closed = false;
  }

  /** Where records are kept by the viewer: one OpenRecord per record and node. */
  static key(nodeId, recordId) {
    return `${nodeId}/${recordId}`;
  }

  /** `fn(record, status, framesChanged)` on every status the node sends. */
  subscribe(fn) {
    this.listeners.add(fn);
  }

  /** Ask the node to load the record into memory (again, after it was unloaded), then poll. */
  async start() {
    this.timers.clear("poll");
    try {
      this.apply(await this.ctx.session.fetchJson(this.node.url, `${this.path}/load`, { method: "POST", shape: LOAD_STATUS }));
    } catch (err) {
      if (!err.isAuthFailure) this.fail(err);
    }
  }

  /** Start loading unless it is loading or loaded already. */
  ensureStarted() {
    if (this.load.state === "unloaded" && !this.status) this.start();
  }

  async poll() {
    try {
      this.apply(await this.ctx.session.fetchJson(this.node.url, `${this.path}/status`, { shape: LOAD_STATUS }));
    } catch (err) {
      // a node briefly away is asked again; one that answers what is no status would be asked for
      // ever, and so would a series deleted while it loads (the bar said "Loading slices: 52 of
      // 100" for good, asking every second)
      if (err.code === "bad_answer") this.fail(err);
      else if (err.status === 404) this.fail(gone(this.node, err));
      else if (!err.isAuthFailure && !this.closed) this.timers.later("poll", POLL_MS * 4, () => this.poll());
    }
  }

  /** The load failed with `err`: the viewer says why, and the node is not asked again. */
  fail(err) {
    if (!this.closed) this.apply({ state: "failed", frames_ready: 0, frames_total: this.meta.frames, error: err });
  }

  apply(status) {
    if (this.closed) return;
    const before = this.load.ready;
    this.status = status;
    this.load = { state: status.state, ready: status.frames_ready, total: status.frames_total };
    const framesChanged = status.frames_ready !== before || status.state === "ready";
    for (const fn of this.listeners) fn(this, status, framesChanged);
    if (status.state === "loading" || status.state === "unloaded") this.timers.later("poll", POLL_MS, () => this.poll());
  }

  close() {
    this.closed = true;
    this.timers.clearAll();
    this.listeners.clear();
  }
}
