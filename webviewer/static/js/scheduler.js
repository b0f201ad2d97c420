// Request scheduling for one viewport. Scrolling or dragging fast asks for small lossy previews,
// PREVIEW_FLIGHTS in flight (so the link's latency is paid once for several; image GETs carry their
// token in the query, so no CORS preflight doubles it), the newest state asked for next as soon as
// one lands; when the hand stops, the full-quality image (viewport.js SETTLE_MS). Work that can
// still paint something newer than the screen is never cancelled; work overtaken by a newer image
// on screen is. The previews are sized for the link measured on this viewport's own answers.
// Neighbouring slices are fetched ahead into the shared cache, as deep as the link can carry in
// PREFETCH_SECONDS; on a link that cannot carry full-quality slices as fast as a hand scrolls, not
// while the hand moves, so the slice under the cursor comes first (on a fast one they arrive at
// full quality before the hand). Each viewport has its own scheduler, so no viewport ever cancels
// another's requests; only the cache of fetched images is shared.

import { ApiError, readImage } from "./api.js";
import { parseOrientation, parseWindow } from "./geometry.js";
import { askedBox } from "./imagesize.js";
import { nodeAway } from "./noderetry.js";

const PREFETCH_WORKERS = 3;
/** Most slices fetched ahead, and the link time they may take (the byte budget of prefetch). */
const PREFETCH_DEPTH = 8;
const PREFETCH_SECONDS = 1.5;
/** Slices a second of a fast hand (wheel, held key): a link that carries fewer full-quality
 *  slices than this is slow, and the hand gets previews. */
export const HAND_RATE = 20;
/** Longest side of a preview, by the bytes one may take at the measured throughput. */
const PREVIEW_SIZES = [[24000, 512], [12000, 384], [6000, 256], [0, 192]];
/** The link time one preview may take, in seconds: the link carries previews at the hand's rate. */
const PREVIEW_BUDGET_S = 1 / HAND_RATE;
/** Previews in flight at once: each costs a round trip before its bytes, so on a slow link the
 *  second and third keep the link busy meanwhile. */
const PREVIEW_FLIGHTS = 3;
/** 3D previews in flight: the node renders one view's frames in turn and drops a queued one when a
 *  newer one arrives (409 superseded), so a third would only be dropped. */
const VOLUME_PREVIEW_FLIGHTS = 2;
/** Answers the link is measured over: the last few, so a link that slows is seen at once. */
const METER_ANSWERS = 4;

/** The mean of the numbers in `values` after adding `value`, keeping the last METER_ANSWERS. */
function lastMean(values, value) {
  values.push(value);
  if (values.length > METER_ANSWERS) values.shift();
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

/**
 * The link as this viewport's image answers measure it: its latency (seconds from asking to the
 * answer's first byte: the round trip and the node's rendering), its throughput (bytes per second
 * of the answers' bodies) and the usual size of a full-quality image.
 * A body is charged the time from its first byte, or from the previous body's end if that came
 * later: bodies that shared the link (previews and slices fetched ahead together) are charged only
 * the time the link spent on them, so the figure is the link's, not a share of it. The last
 * METER_ANSWERS answers count, all alike, so a link that changes (a tunnel, a congested cell) is
 * measured anew within a few images.
 */
export class LinkMeter {
  constructor() {
    this.bytesPerSecond = null;
    this.latency = null;
    this.fullBytes = null;
    /** @type {number[]} */ this.waits = [];
    /** @type {number[]} */ this.bodyBytes = [];
    /** @type {number[]} */ this.bodySeconds = [];
    this.lastEnd = -Infinity;
  }

  /**
   * @param {number} bytes
   * @param {number} started @param {number} firstByte @param {number} ended when it was asked, its
   *   headers came and its body was in (performance.now(), ms)
   * @param {boolean} full a full-quality image
   */
  add(bytes, started, firstByte, ended, full) {
    if (full) this.fullBytes = this.fullBytes === null ? bytes : 0.7 * this.fullBytes + 0.3 * bytes;
    this.latency = lastMean(this.waits, Math.max(0, firstByte - started) / 1000);
    const since = Math.max(firstByte, this.lastEnd);
    this.lastEnd = Math.max(this.lastEnd, ended);
    if (bytes < 2000) return;   // a tiny body says nothing of throughput
    const total = lastMean(this.bodyBytes, bytes);
    this.bytesPerSecond = total / lastMean(this.bodySeconds, Math.max(0.002, (ended - since) / 1000));
  }

  /**
   * The longest side of a preview for this link (the largest until something was measured).
   * @param {number} seconds the link time one preview may take
   */
  previewSide(seconds = PREVIEW_BUDGET_S) {
    if (this.bytesPerSecond === null) return PREVIEW_SIZES[0][1];
    const budget = this.bytesPerSecond * seconds;
    return (PREVIEW_SIZES.find(([bytes]) => budget >= bytes) || PREVIEW_SIZES[PREVIEW_SIZES.length - 1])[1];
  }

  /** How many full-quality slices the link's throughput carries in `seconds` (`most` until measured). */
  fullImagesIn(seconds, most) {
    if (this.bytesPerSecond === null || !this.fullBytes) return most;
    return Math.max(0, Math.min(most, Math.floor(this.bytesPerSecond * seconds / this.fullBytes)));
  }

  /**
   * Full-quality slices a second that `workers` requests in flight get over this link: bounded by
   * its throughput, and by each request's latency plus transfer (Infinity until measured).
   */
  fullPerSecond(workers) {
    if (this.bytesPerSecond === null || this.latency === null || !this.fullBytes) return Infinity;
    const transfer = this.fullBytes / this.bytesPerSecond;
    return Math.min(1 / transfer, workers / (this.latency + transfer));
  }
}

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
 * @property {number} [seq] order of asking: an image never replaces one asked for later
 */

/**
 * What the scheduler needs of its viewport.
 * @typedef {object} ScheduledView
 * @property {(interactive: boolean, index?: number) => ImageRequest} describe
 * @property {(req: ImageRequest, entry: any) => Promise<void>} show
 * @property {(err: any, req: ImageRequest) => void} handleImageError
 * @property {(node: {url: string}) => void} nodeAnswered the node answered a request (noderetry.js)
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
    this.flights = new Set();      // {req, controller, promise} under way; at most PREVIEW_FLIGHTS previews
    this.pendingInteractive = false;
    this.asked = 0;                // sequence of requests asked for
    this.shownSeq = 0;             // the sequence number of the image on screen
    this.link = new LinkMeter();
    this.prefetchController = null;
    this.prefetchSignature = null;   // the view whose slices prefetchController fetches
    this.pending = new Map();      // key -> promise of a cache entry being fetched
    this.prefetchQueue = [];
    this.ahead = new Map();        // key -> AbortController of a slice being fetched ahead
    this.prefetchWorkers = 0;
    this.viewId = `v${Math.random().toString(36).slice(2, 12)}`;
    this.seq = 0;
  }

  /** Show the view's current state; resolves once it is on screen (or has failed, or was superseded). */
  async request({ interactive = false } = {}) {
    const view = this.view;
    if (view.destroyed) return;
    if (!interactive) this.pendingInteractive = false;   // a final view replaces any queued preview
    let req = view.describe(interactive);
    if (interactive) {   // a full-quality image already fetched (prefetch) beats a preview
      const full = view.describe(false);
      if (this.cache.has(full.key)) req = full;
    }
    req.seq = ++this.asked;
    const cached = this.cache.get(req.key);
    if (cached) {
      await this.paint(req, cached);
      this.fetchAhead(req, interactive);
      return;
    }
    const same = [...this.flights].find((f) => f.req.key === req.key);
    // the same image asked again (after a change of view that came back, say): the answer under
    // way paints for this request, its view generation and seq, not for the one it was asked for
    if (same) { same.req = req; return same.promise; }
    const most = req.plane === "3d" ? VOLUME_PREVIEW_FLIGHTS : PREVIEW_FLIGHTS;
    if (interactive && [...this.flights].filter((f) => f.req.interactive).length >= most) {
      this.pendingInteractive = true;   // the newest state goes when a preview lands
      return;
    }
    if (!interactive) {   // a final view drops the finals asked for before it (previews still paint sooner)
      for (const f of this.flights) if (!f.req.interactive) f.controller.abort();
    }
    const controller = new AbortController();
    /** @type {{req: ImageRequest, controller: AbortController, promise?: Promise<void>}} */
    const flight = { req, controller };
    this.flights.add(flight);
    // on a slow link the slice asked for has the link to itself, moving or stopped (a slice being
    // fetched ahead that it waits on goes on); cine fetches its own frames ahead
    if (this.slowLink() && (interactive || !view.state.playing)) this.stopPrefetch();
    flight.promise = (async () => {
      try {
        const entry = await this.obtain(req, controller.signal);
        await this.paint(flight.req, entry);
        view.waitingForFrame = false;
        this.fetchAhead(flight.req, interactive);
      } catch (err) {
        if (err.name === "AbortError") return;
        view.handleImageError(err, req);
      } finally {
        this.flights.delete(flight);
        if (interactive && this.pendingInteractive) {
          this.pendingInteractive = false;
          this.request({ interactive: true });
        }
      }
    })();
    return flight.promise;
  }

  /** Put an image on screen unless a later one is there already; work that can no longer paint stops. */
  async paint(req, entry) {
    if ((req.seq || 0) < this.shownSeq) return;
    this.shownSeq = req.seq || 0;
    for (const f of this.flights) if ((f.req.seq || 0) < this.shownSeq) f.controller.abort();
    await this.view.show(req, entry);
  }

  /** The longest side of a preview on this viewport's link; `fps` (cine): one preview per frame. */
  previewSide(fps = 0) {
    return this.link.previewSide(fps > 0 ? 1 / fps : PREVIEW_BUDGET_S);
  }

  /**
   * Whether the link is too slow to fetch ahead while the hand moves: its throughput carries fewer
   * full-quality slices a second than a fast hand scrolls (HAND_RATE), so smaller images are what
   * helps. On a faster link the slices ahead arrive at full quality before the hand gets there, and
   * a preview is only a stopgap; latency (rendering on a busy node included) is no reason to stop
   * fetching ahead, since the workers in flight together hide it.
   */
  slowLink() {
    return this.link.fullImagesIn(1, HAND_RATE) < HAND_RATE;
  }

  /**
   * After an image is on screen: fetch ahead of it, unless the reader has asked for another since
   * (ahead of an image already left is behind the reader) or the hand is moving on a slow link
   * (also when what it painted was a full-quality slice fetched before).
   * @param {ImageRequest} req @param {boolean} moving asked while the hand moves
   */
  fetchAhead(req, moving) {
    if (req.seq === this.asked && (!moving || !this.slowLink())) this.prefetch();
  }

  /** Whether the link carries full-quality images at `fps` a second, its latency and throughput
   *  with PREFETCH_WORKERS fetched at once (else cine shows previews). */
  keepsUp(fps) {
    return this.link.fullPerSecond(PREFETCH_WORKERS) > fps;
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
    // a fetch shared with prefetch may be stopped by it (stopPrefetch): then fetch again, for us
    return pending.catch((err) => {
      if (err.name === "AbortError" && !signal.aborted) return this.obtain(req, signal);
      throw err;
    });
  }

  async fetchImage(req, signal) {
    // 3D requests carry a view id and a rising sequence number: the node drops a queued
    // rendering as soon as a newer one of the same view arrives (409 superseded).
    const params = req.plane === "3d" ? { ...req.params, view_id: this.viewId, seq: ++this.seq } : req.params;
    const started = performance.now();
    let response;
    try {
      response = await this.ctx.session.fetchRaw(this.node.url, req.path, { params, signal, tokenInQuery: true });
    } catch (err) {
      if (err instanceof ApiError && !nodeAway(err)) this.view.nodeAnswered(this.node);   // it answered, if not with an image
      throw err;
    }
    this.view.nodeAnswered(this.node);
    const firstByte = performance.now();
    const blob = await readImage(response, askedBox(params.size));
    this.link.add(blob.size, started, firstByte, performance.now(), !req.interactive);
    return this.cache.put(req.key, blob, {
      orientation: parseOrientation(response.headers.get("X-Orientation")),
      window: parseWindow(response.headers.get("X-Window")),
    });
  }

  /**
   * Fetch the slices the reader is about to see: deeper ahead in the direction of scrolling (or
   * of cine), one behind, as many as the link carries in PREFETCH_SECONDS (at least the next
   * one). One queue, replaced on every call, and a small pool of workers, so a slice is never
   * requested twice and the node is not flooded.
   */
  prefetch() {
    const view = this.view;
    const s = view.state;
    if (s.plane === "3d" || view.drag) return;
    const signature = view.describe(false, 0).key.replace(/\/\d+\?/, "?");
    if (!this.prefetchController || this.prefetchSignature !== signature) {
      this.stopPrefetch();
      this.prefetchController = new AbortController();
      this.prefetchSignature = signature;
    }
    const count = view.count();
    const here = view.index();
    const d = view.direction || 1;
    const depth = Math.max(1, this.link.fullImagesIn(PREFETCH_SECONDS, PREFETCH_DEPTH));
    const steps = (s.playing
      ? Array.from({ length: Math.min(count - 1, Math.max(4, this.fps())) }, (_, i) => i + 1)
      : [d, 2 * d, 3 * d, -d, 4 * d, 5 * d, 6 * d, -2 * d]).slice(0, s.playing ? undefined : depth);
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
      const own = new AbortController();   // one per slice: stopPrefetch spares what a flight waits on
      this.ahead.set(req.key, own);
      try { await this.obtain(req, own.signal); } catch { return; } finally { this.ahead.delete(req.key); }
    }
  }

  /**
   * Stop fetching ahead: the queue, and the slices under way unless an image asked for waits on
   * one (`all`: those too). A new queue starts with the next full-quality image on screen.
   */
  stopPrefetch(all = false) {
    if (this.prefetchController) this.prefetchController.abort();
    this.prefetchController = null;
    this.prefetchQueue = [];
    const waited = new Set([...this.flights].map((f) => f.req.key));
    for (const [key, controller] of this.ahead) if (all || !waited.has(key)) controller.abort();
  }

  /** Stop everything this viewport asked for (its requests only). */
  abort() {
    for (const f of this.flights) f.controller.abort();
    this.stopPrefetch(true);
  }
}
