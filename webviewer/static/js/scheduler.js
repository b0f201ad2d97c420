// Request scheduling for one viewport. The newest request always wins: scrolling aborts stale
// slice requests, dragging coalesces to one request in flight, and neighbouring slices are
// fetched ahead into the shared cache. Each viewport has its own scheduler, so no viewport
// ever cancels another's requests; only the cache of fetched images is shared.

import { parseOrientation, parseWindow } from "./geometry.js";

const PREFETCH_WORKERS = 3;

/**
 * @typedef {object} ImageRequest
 * @property {string} key cache key (path and query)
 * @property {string} path
 * @property {Record<string, any>} params
 * @property {{left: number, top: number, width: number, height: number}} rect where it lands
 * @property {number[]} region
 * @property {string} plane
 * @property {number} index
 * @property {boolean} interactive
 * @property {number} generation
 */

/**
 * What the scheduler needs of its viewport.
 * @typedef {object} ScheduledView
 * @property {(interactive: boolean, index?: number) => ImageRequest} describe
 * @property {(req: ImageRequest, entry: any) => Promise<void>} show
 * @property {(err: any, req: ImageRequest) => void} handleImageError
 * @property {() => number} count
 * @property {() => number} index
 * @property {{plane: string, playing: boolean}} state
 * @property {number} direction
 * @property {boolean} destroyed
 * @property {any} drag
 * @property {boolean} waitingForFrame
 */

export class RequestScheduler {
  /**
   * @param {ScheduledView} view
   * @param {{session: any}} ctx
   * @param {{url: string}} node
   * @param {import("./imagecache.js").ImageCache} cache shared by the viewports of one viewer
   * @param {() => number} fps cine rate (prefetch depth while playing)
   */
  constructor(view, ctx, node, cache, fps) {
    this.view = view;
    this.ctx = ctx;
    this.node = node;
    this.cache = cache;
    this.fps = fps;
    this.inflight = null;          // {key, controller, interactive, promise}
    this.pendingInteractive = false;
    this.prefetchController = null;
    this.prefetchSignature = null;   // the view whose slices prefetchController fetches
    this.pending = new Map();      // key -> promise of a cache entry being fetched
    this.prefetchQueue = [];
    this.prefetchWorkers = 0;
    this.viewId = `v${Math.random().toString(36).slice(2, 12)}`;
    this.seq = 0;
  }

  /** Show the view's current state; resolves once it is on screen (or has failed, or was superseded). */
  async request({ interactive = false } = {}) {
    const view = this.view;
    if (view.destroyed) return;
    if (!interactive) this.pendingInteractive = false;   // a final view replaces any queued preview
    const req = view.describe(interactive);
    const cached = this.cache.get(req.key);
    if (cached) {
      if (this.inflight && !this.inflight.interactive) { this.inflight.controller.abort(); this.inflight = null; }
      await view.show(req, cached);
      if (!interactive) this.prefetch();
      return;
    }
    if (this.inflight) {
      if (this.inflight.key === req.key) return this.inflight.promise;
      if (interactive && this.inflight.interactive) { this.pendingInteractive = true; return; }
      this.inflight.controller.abort();
    }
    const controller = new AbortController();
    /** @type {{key: string, controller: AbortController, interactive: boolean, promise?: Promise<void>}} */
    const flight = { key: req.key, controller, interactive };
    this.inflight = flight;
    flight.promise = (async () => {
      try {
        const entry = await this.obtain(req, controller.signal);
        if (this.inflight === flight) await view.show(req, entry);
        view.waitingForFrame = false;
        if (!interactive) this.prefetch();
      } catch (err) {
        if (err.name === "AbortError") return;
        view.handleImageError(err, req);
      } finally {
        if (this.inflight === flight) this.inflight = null;
        if (interactive && this.pendingInteractive) {
          this.pendingInteractive = false;
          this.request({ interactive: true });
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

  /**
   * Fetch the slices the reader is about to see: deeper ahead in the direction of scrolling (or
   * of cine), one behind. One queue, replaced on every call, and a small pool of workers, so a
   * slice is never requested twice and the node is not flooded.
   */
  prefetch() {
    const view = this.view;
    const s = view.state;
    if (s.plane === "3d" || view.drag) return;
    const signature = view.describe(false, 0).key.replace(/\/\d+\?/, "?");
    if (!this.prefetchController || this.prefetchSignature !== signature) {
      if (this.prefetchController) this.prefetchController.abort();
      this.prefetchController = new AbortController();
      this.prefetchSignature = signature;
    }
    const count = view.count();
    const here = view.index();
    const d = view.direction || 1;
    const steps = s.playing
      ? Array.from({ length: Math.min(count - 1, Math.max(4, this.fps())) }, (_, i) => i + 1)
      : [d, 2 * d, 3 * d, -d, 4 * d, 5 * d, 6 * d, -2 * d];
    this.prefetchQueue = steps.map((k) => (s.playing ? (here + k) % count : here + k))
      .filter((i) => i >= 0 && i < count)
      .map((i) => view.describe(false, i))
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

  /** Stop everything this viewport asked for (its requests only). */
  abort() {
    if (this.inflight) this.inflight.controller.abort();
    if (this.prefetchController) this.prefetchController.abort();
  }
}
