// A render node that went away and came back. A viewport whose image request found its node down
// (unreachable, or its proxy answering 502/503/504) waits here; the node is probed again, by one of
// its waiting viewports asking for its current image, after a bounded, jittered backoff (1 s
// doubling to 30 s), only while the tab is visible, and one probe at a time per node however many
// viewports wait for it. The first answer the node gives (an image, or any error it answers
// itself) ends the wait: every waiting viewport asks for its current image again, so the slice
// on screen is painted without the reader doing anything. A 4xx is the node answering, never
// retried here: the viewport shows it.

/** The first wait before a probe, and the longest (ms). */
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

/** Errors of status 502 the viewer makes itself of what a node did send (api.js badAnswer,
 *  listAll): the node answered, wrongly, and asking again brings the same. */
const ANSWERED_WRONGLY = ["bad_answer", "list_cut"];

/**
 * Whether `err` says the node is away rather than answering: it could not be reached (refused,
 * reset, timed out: api.js unreachable) or its proxy found no node behind it (502/503/504; a
 * node's own 503 `busy` says when to retry and is handled where it comes).
 * @param {any} err
 */
export function nodeAway(err) {
  if (err.status === 0) return err.code === "unreachable" || err.code === "timeout";
  return [502, 503, 504].includes(err.status) && err.code !== "busy" && !ANSWERED_WRONGLY.includes(err.code);
}

/**
 * The wait before probe number `attempt` (0 first): FIRST_DELAY_MS doubled per attempt up to
 * MAX_DELAY_MS, of which a random half is taken away, so the viewers of a node that restarts do
 * not all come back in the same second.
 * @param {number} attempt
 */
export function retryDelay(attempt) {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * What a waiting viewport offers: it asks for its current image (resolving once that is on
 * screen or has failed) and says whether it is gone.
 * @typedef {{requestView: () => Promise<void> | void, destroyed: boolean}} Waiter
 */

/** The retries of one render node, shared by the viewports of one viewer that show its records. */
export class NodeRetry {
  constructor() {
    /** @type {Set<Waiter>} */
    this.waiting = new Set();
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    this.probing = false;
    /** @type {(() => void) | null} */
    this.onVisible = null;
    this.stopped = false;
  }

  /** `waiter`'s request found the node down: it waits for the node, and a probe is planned. @param {Waiter} waiter */
  down(waiter) {
    if (this.stopped) return;
    this.waiting.add(waiter);
    if (!this.probing) this.schedule();
  }

  /** The node answered a request: the wait is over, every waiting viewport asks again now. */
  answered() {
    this.attempt = 0;
    this.cancel();
    const waiters = [...this.waiting];
    this.waiting.clear();
    for (const waiter of waiters) if (!waiter.destroyed) waiter.requestView();
  }

  /** Plan the next probe unless one is planned. */
  schedule() {
    if (this.stopped || this.timer !== null || this.onVisible) return;
    this.timer = setTimeout(() => { this.timer = null; this.probe(); }, retryDelay(this.attempt));
    this.attempt += 1;
  }

  /** One waiting viewport asks again (in a hidden tab: once the tab is shown again). */
  probe() {
    if (this.stopped) return;
    if (document.hidden) {
      this.onVisible = () => {
        if (document.hidden) return;
        document.removeEventListener("visibilitychange", /** @type {() => void} */ (this.onVisible));
        this.onVisible = null;
        this.probe();
      };
      document.addEventListener("visibilitychange", this.onVisible);
      return;
    }
    for (const waiter of this.waiting) if (waiter.destroyed) this.waiting.delete(waiter);
    const [waiter] = this.waiting;
    if (!waiter) return;
    this.waiting.delete(waiter);   // a probe that finds the node down again puts it back (down)
    this.probing = true;
    Promise.resolve(waiter.requestView()).finally(() => {
      this.probing = false;
      if (this.waiting.size) this.schedule();
    });
  }

  cancel() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.onVisible) document.removeEventListener("visibilitychange", this.onVisible);
    this.onVisible = null;
  }

  /** The viewer closed: nothing more is probed. */
  stop() {
    this.stopped = true;
    this.cancel();
    this.waiting.clear();
  }
}
