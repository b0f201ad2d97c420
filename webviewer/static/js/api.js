// Talking to the SIVR layers (docs/API.md): one session with a bearer token, renewed in the
// background, sent only in the Authorization header (never in a URL, where it would end up in
// logs and browser history).
//
// The session token goes to the toplevel alone. Every other server (an institution's server_url,
// a render node) gets its own short-lived token, exchanged at the toplevel for that server's base
// URL (POST api/v1/auth/token): a server, even a hostile one, only ever sees a token that no other
// server accepts. Server tokens are fetched on demand, renewed when most of their life has passed,
// exchanged once at a time per server, and a server's 401 invalid_token/token_expired is retried
// once with a fresh one.
//
// No server is trusted with the page itself: every request ends after REQUEST_TIMEOUT_MS, an answer
// is read up to MAX_JSON_BYTES and must have the shape asked for, and a server's text shown as an
// error or a label is cut to size (limits.js).

import { LIST_PAGE, ShapeError } from "./answers.js";
import { SESSION, renewalShape, serverTokenShape } from "./answers_toplevel.js";
import { SIZE_BYTES, imageSize } from "./imagesize.js";
import { MAX_ERROR_CHARS, MAX_IMAGE_BYTES, MAX_JSON_BYTES, MAX_LABEL_CHARS, MAX_LIST_BYTES, MAX_LIST_PAGES, REQUEST_TIMEOUT_MS } from "./limits.js";

export class ApiError extends Error {
  /** status 0 means the server could not be reached at all. */
  constructor(status, code, message, details = {}, requestId = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    /** The server's id of the request (X-Request-Id): IT finds its log lines with it. */
    this.requestId = requestId || null;
  }
  /** The message for people; a server failure also names the request id to quote to IT. */
  get displayMessage() {
    return this.status >= 500 && this.requestId ? `${this.message} (request id ${this.requestId})` : this.message;
  }
  get isAuthFailure() {
    return this.status === 401 && ["token_expired", "session_expired", "invalid_token", "missing_token"].includes(this.code);
  }
}

const STORAGE_KEY = "sivr.session";
/** Where a tab that logs out tells the viewer's other tabs of this browser (BroadcastChannel). */
const LOGOUT_CHANNEL = "sivr.logout";
const RENEW_FRACTION = 0.7;   // renew when 70 % of a token's life has passed
const RETRY_RENEW_MS = 5000;
const MAX_TIMER_MS = 2 ** 31 - 1;   // setTimeout fires at once for a longer delay
const SERVER_TOKEN_SAFETY_MS = 3000;   // a server token this close to expiry is not sent any more
const RETRY_WITH_NEW_TOKEN = ["invalid_token", "token_expired"];

/** A server's audience: its base URL as the toplevel normalizes it (scheme://host[:port][/path]). */
export function audienceOf(url) {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, "")}`;
}

// Bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069). A value
// holding one reorders the text shown after it: a DICOM PatientName ending in U+202E showed the
// patient id and birth date beside it reversed, in the lines a physician checks whose images these
// are. They have no place in a name, an id or a report, so every string a server sends, and the
// patient an uploaded file names (dicom_header.js), is shown with them replaced by U+FFFD, visibly
// (the servers refuse them in what users type:
// shared/validation.py; DICOM values come as the images carry them). tests/webviewer/test_text_rules.py
// holds this class to the servers' one (shared/shown_text.py). The C1 controls and line separators
// too: a Windows modality's O’Brien reads as O\u0092Brien, which the servers refuse when it is sent back.
const NOT_SHOWN = /[\u0080-\u009F\u2028\u2029\u202A-\u202E\u2066-\u2069]/g;

/** A text from a server or a DICOM file as the viewer shows it: its bidirectional controls as U+FFFD. */
export function asShown(text) {
  return text.replace(NOT_SHOWN, "\uFFFD");
}

/** `text` cut to `max` characters (UTF-16 units), the last of them an ellipsis when anything was cut. */
function clipped(text, max) {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text[max - 2]) ? max - 2 : max - 1;   // never half a surrogate pair
  return `${text.slice(0, end)}…`;
}

/**
 * A server's text shown as (part of) an error message: one line, at most MAX_ERROR_CHARS. An
 * error body's message of 4 MiB, shown in a badge's title and a paragraph, froze the patient page
 * for minutes; line breaks would let a server lay out a message that looks like the viewer's own.
 * @param {any} text
 */
export function errorText(text) {
  return clipped(String(text).replace(/\s*[\r\n]+\s*/g, " "), MAX_ERROR_CHARS);
}

/**
 * A name or a description from a server shown as a label: at most MAX_LABEL_CHARS, so a name of
 * 10,000 letters cannot push the identity lines or the image off screen.
 * @param {any} text
 */
export function labelText(text) {
  return clipped(String(text ?? ""), MAX_LABEL_CHARS);
}

/** "host/path" of an answer, naming it in an error (never its query, which may hold a token). */
function answerOf(response) {
  try {
    const url = new URL(response.url);
    return `${url.host}${url.pathname}`;
  } catch {
    return "the server";
  }
}

/** An answer the viewer cannot use (its server is broken or hostile, not down), as an error naming
 *  where it came from. */
export function badAnswer(where, what) {
  return new ApiError(502, "bad_answer", `${where} sent ${what}; the viewer cannot show it (tell IT)`);
}

/**
 * The body of an answer, at most `max` bytes as the page receives it (an ApiError beyond: a server
 * must not make the page hold gigabytes). A declared length (Content-Length) over `max` is refused
 * at once; the body is then read as a stream and its bytes counted as they arrive, decoded: a
 * compressed body's declared length is its compressed size, and a few kilobytes of gzip inflate to
 * gigabytes. (So DevTools keeps no copy of an answer's body, which it does only for a body read
 * whole: IT finds a failed request by the id the viewer shows, in the server's log.) `head`, when
 * given, is called once with the body's first `headBytes` bytes (or all of a shorter body) as soon
 * as they are in, and may refuse the rest by throwing. Reading is bounded in time by the request's
 * signal (fetchRaw).
 * @param {Response} response
 * @param {number} max
 * @param {string} what  the answer as the message names it ("an answer", "an image")
 * @param {{headBytes: number, head: (first: Uint8Array) => void}} [peek]
 * @returns {Promise<{blob: Blob, bytes: number}>}
 */
async function readBounded(response, max, what, peek) {
  const tooLarge = () => badAnswer(answerOf(response), `${what} larger than ${max / 2 ** 20} MiB`);
  const declared = Number(response.headers.get("Content-Length") ?? NaN);
  if (declared > max) throw tooLarge();
  const parts = [];
  let bytes = 0;
  let peeked = !peek;
  const look = () => {
    peeked = true;
    peek?.head(concatenated(parts, peek.headBytes));
  };
  const reader = response.body ? response.body.getReader() : null;
  try {
    for (;;) {
      const { done, value } = reader ? await reader.read() : { done: true, value: undefined };
      if (done) break;
      bytes += value.byteLength;
      if (bytes > max) throw tooLarge();
      parts.push(value);
      if (!peeked && bytes >= /** @type {NonNullable<typeof peek>} */ (peek).headBytes) look();
    }
    if (!peeked) look();
    return { blob: new Blob(parts, { type: response.headers.get("Content-Type") ?? "" }), bytes };
  } catch (cause) {
    reader?.cancel().catch(() => {});
    if (cause instanceof ApiError) throw cause;
    throw unreachable(response.url, cause);
  }
}

/** The first `count` bytes of `parts`, one array. @param {Uint8Array[]} parts @param {number} count */
function concatenated(parts, count) {
  const out = new Uint8Array(Math.min(count, parts.reduce((n, part) => n + part.byteLength, 0)));
  let at = 0;
  for (const part of parts) {
    if (at >= out.length) break;
    const piece = part.subarray(0, out.length - at);
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/**
 * The body of an answer as text, at most MAX_JSON_BYTES (`readBounded`).
 * @param {Response} response
 * @returns {Promise<{text: string, bytes: number}>}
 */
async function readText(response) {
  const { blob, bytes } = await readBounded(response, MAX_JSON_BYTES, "an answer");
  return { text: await blob.text(), bytes };
}

/**
 * A rendered image the node sent for a request that asked for `box`: at most MAX_IMAGE_BYTES,
 * PNG, JPEG or WebP, and no larger than the box (the node never sends a larger one). Its size is
 * read from its header as soon as that has arrived, before anything decodes it and before the rest
 * is read (imagesize.js says why).
 * @param {Response} response
 * @param {{width: number, height: number}} box
 * @returns {Promise<Blob>}
 */
export async function readImage(response, box) {
  const head = (/** @type {Uint8Array} */ first) => {
    const size = imageSize(first);
    if (!size) throw badAnswer(answerOf(response), "an image that is not PNG, JPEG or WebP");
    if (!(size.width >= 1 && size.height >= 1 && size.width <= box.width && size.height <= box.height)) {
      throw badAnswer(answerOf(response), `a ${size.width}×${size.height} image for a box of ${box.width}×${box.height}`);
    }
  };
  return (await readBounded(response, MAX_IMAGE_BYTES, "an image", { headBytes: SIZE_BYTES, head })).blob;
}

/** Whether `err` is the engine running out of stack: a RangeError in Chromium and Safari, an
 *  InternalError ("too much recursion") in Firefox. @param {unknown} err */
function outOfStack(err) {
  return err instanceof RangeError || (err instanceof Error && err.name === "InternalError");
}

/**
 * JSON text from `response`, its strings as shown (`asShown`). Not JSON (an HTML error page), or
 * nested too deeply to read (the reviver recurses: a RangeError), is a bad answer naming its server.
 * @param {string} text
 * @param {Response} response
 */
function parseText(text, response) {
  try {
    return JSON.parse(text, (_key, value) => (typeof value === "string" ? asShown(value) : value));
  } catch (err) {
    throw badAnswer(answerOf(response), outOfStack(err) ? "JSON nested too deeply" : "an answer that is not JSON");
  }
}

/** A server's JSON answer (at most MAX_JSON_BYTES), its strings as shown (`asShown`). */
export async function parseJson(response) {
  return parseText((await readText(response)).text, response);
}

/**
 * `body` if it has `shape` (answers.js), else a bad answer naming the server, the endpoint and the
 * field that is wrong: `null`, an HTML page or a string where a count belongs must not end as a
 * TypeError, a loop of 10^9 or NaN in the viewer's geometry.
 * @param {any} body
 * @param {string} base
 * @param {string} path
 * @param {import("./answers.js").Shape} shape
 */
export function shaped(body, base, path, shape) {
  try {
    shape.check(body);
  } catch (err) {
    // a check walks nested answers (DICOM sequences) by recursion: one nested deeper than the
    // page's stack, yet not too deep for JSON.parse, is as unusable as one of another shape
    const problem = outOfStack(err) ? "nested too deeply to check" : err instanceof ShapeError ? err.message : null;
    if (problem === null) throw err;
    throw badAnswer(`${hostOf(base)} (${path})`, `something else than ${shape.asked} asked for (${problem})`);
  }
  return body;
}

/**
 * A list endpoint's answer `{items: [object], total: number}` as asked for, else a bad answer
 * naming the server and the endpoint.
 * @param {any} body
 * @param {string} base
 * @param {string} path
 * @returns {{items: any[], total: number}}
 */
export function listPage(body, base, path) {
  return shaped(body, base, path, LIST_PAGE);
}

/** Turn any failed fetch or error body into an ApiError whose message a person can act on. */
export async function errorFromResponse(response) {
  let body = null;
  try { body = await parseJson(response); } catch { /* not JSON: fall through */ }
  const err = body && body.error;
  const requestId = (id) => (id ? errorText(id) : null);
  if (err && err.code) {
    const { code, message, ...details } = err;
    if (response.headers.get("Retry-After")) details.retryAfter = Number(response.headers.get("Retry-After"));
    return new ApiError(response.status, errorText(code), errorText(message || code), details,
      requestId(details.request_id || response.headers.get("X-Request-Id")));
  }
  return new ApiError(response.status, "http_error", errorText(`the server answered ${response.status} ${response.statusText}`.trim()),
    {}, requestId(response.headers.get("X-Request-Id")));
}

export function unreachable(baseUrl, cause) {
  if (cause && cause.name === "AbortError") return cause;
  if (cause && cause.name === "TimeoutError") return new ApiError(0, "timeout", `${hostOf(baseUrl)} did not answer in time`);
  return new ApiError(0, "unreachable", `${hostOf(baseUrl)} could not be reached`);
}

export function hostOf(url) {
  try { return new URL(url).host; } catch { return url; }
}

/**
 * An API path with each interpolated value percent-encoded: apiPath`api/v1/records/${id}`. Ids come
 * from servers' answers; encoded, a value can only ever be one path segment, never `../` or a query.
 * An empty value, "." or ".." is refused: URLs read them (even percent-encoded) as no segment or as
 * a step up.
 * @param {TemplateStringsArray} strings
 * @param {...(string|number)} values
 */
export function apiPath(strings, ...values) {
  return strings.reduce((path, text, i) => {
    if (i >= values.length) return path + text;
    const value = String(values[i]);
    if (value === "" || value === "." || value === "..") throw new ApiError(0, "invalid_id", `not an id: ${JSON.stringify(value)}`);
    return path + text + encodeURIComponent(value);
  }, "");
}

/** Join a server base URL, a path and query parameters (undefined/null/"" values are left out). */
export function buildUrl(base, path, params = {}) {
  const url = new URL(path, base.endsWith("/") ? base : `${base}/`);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.toString();
}

/**
 * @typedef {object} RequestOptions
 * @property {string} [method]
 * @property {Record<string, any>} [params] query parameters
 * @property {any} [json] a body sent as JSON
 * @property {BodyInit} [body] a body sent as is (form data, files)
 * @property {AbortSignal} [signal]
 * @property {boolean} [auth] send the bearer token (default true)
 * @property {boolean} [tokenInQuery] send it as `access_token` in the URL, not in a header: for the
 *   image GETs a viewer makes several times a second, which the render node takes so (RFC 6750 §2.3);
 *   a request without an Authorization header needs no CORS preflight, one round trip less per slice
 * @property {boolean} [renewing] the call renews the session itself (no renewal on 401)
 * @property {Record<string, string>} [headers]
 * @property {import("./answers.js").Shape} [shape] what the JSON answer must hold (answers.js):
 *   anything else is a bad answer naming the server (`shaped`)
 * @property {RequestCache} [cache] the browser cache mode (default "no-store": API answers are
 *   patient data that must be current; thumbnails use "default", honouring the node's ETag and Cache-Control)
 */

export class Session {
  constructor(toplevelUrl) {
    this.toplevelUrl = toplevelUrl;
    this.token = null;
    this.user = null;
    this.expiresAt = 0;
    this.renewTimer = null;
    /** @type {(err: ApiError) => void} called when the session ends (the UI says why) */
    this.onExpired = () => {};
    /** @type {(session: Session) => void} called after each renewal of the session token */
    this.onRenewed = () => {};
    this.serverTokens = new Map();   // audience -> { token, expiresAt, renewAt, pending }
    this.generation = 0;             // bumped when the session ends: late exchanges are dropped
    // Each tab keeps a session of its own (sessionStorage), so logging out ended only the tab it
    // was done in: the user's other tabs stayed logged in, patients on screen and renewed in the
    // background for hours, at a shared workstation the user believed they had left.
    this.logouts = typeof BroadcastChannel === "function" ? new BroadcastChannel(LOGOUT_CHANNEL) : null;
    if (this.logouts) this.logouts.onmessage = (event) => this._loggedOutElsewhere(event.data);
  }

  isToplevel(base) { return audienceOf(base) === audienceOf(this.toplevelUrl); }

  /**
   * The bearer token for `base`: the session token for the toplevel, else a token exchanged for
   * that server. A still-valid token is returned while its renewal runs in the background.
   */
  async tokenFor(base) {
    if (!this.token || this.isToplevel(base)) return this.token;
    const audience = audienceOf(base);
    const now = Date.now();
    let entry = this.serverTokens.get(audience);
    if (entry && entry.token && now < entry.renewAt) return entry.token;
    if (!entry || !entry.pending) {
      entry = { token: null, expiresAt: 0, renewAt: 0, ...entry };
      entry.pending = this._exchange(audience, entry);
      this.serverTokens.set(audience, entry);
    }
    if (entry.token && now < entry.expiresAt - SERVER_TOKEN_SAFETY_MS) {
      entry.pending.catch(() => {});   // a failed renewal shows on the next call that needs it
      return entry.token;
    }
    return entry.pending;
  }

  async _exchange(audience, entry) {
    const generation = this.generation;
    try {
      const body = await this.fetchJson(this.toplevelUrl, "api/v1/auth/token", { method: "POST", json: { audience }, shape: serverTokenShape(audience) });
      if (generation !== this.generation) throw new ApiError(401, "session_expired", "the session ended");
      const now = Date.now();
      Object.assign(entry, {
        token: body.access_token,
        expiresAt: now + body.expires_in * 1000,
        renewAt: now + body.expires_in * 1000 * RENEW_FRACTION,
      });
      return body.access_token;
    } finally {
      entry.pending = null;
    }
  }

  /** Drop a server's token that the server refused (unless a newer one replaced it meanwhile). */
  forgetToken(base, token) {
    const entry = this.serverTokens.get(audienceOf(base));
    if (entry && entry.token === token) Object.assign(entry, { token: null, expiresAt: 0, renewAt: 0 });
  }

  /**
   * Run `send(token)` with the token for `base`; a server that refuses it as invalid or expired
   * gets one more try with a freshly exchanged token. `send` throws ApiError on failure.
   */
  async withToken(base, send) {
    const token = await this.tokenFor(base);
    try {
      return await send(token);
    } catch (err) {
      if (!token || this.isToplevel(base) || err.status !== 401 || !RETRY_WITH_NEW_TOKEN.includes(err.code)) throw err;
      this.forgetToken(base, token);
      return send(await this.tokenFor(base));
    }
  }

  get active() { return Boolean(this.token); }

  /** Restore a session kept in sessionStorage (per tab, gone when the tab closes). */
  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      if (saved && saved.toplevelUrl === this.toplevelUrl && saved.expiresAt > Date.now()) {
        this._adopt(saved.token, saved.user, (saved.expiresAt - Date.now()) / 1000);
        return true;
      }
    } catch { /* corrupt entry: ignore */ }
    sessionStorage.removeItem(STORAGE_KEY);
    return false;
  }

  async login(username, password) {
    const body = await this.fetchJson(this.toplevelUrl, "api/v1/auth/login", {
      method: "POST", json: { username, password }, auth: false, shape: SESSION,
    });
    this._adopt(body.access_token, body.user, body.expires_in);
    return body.user;
  }

  async renew() {
    const body = await this.fetchJson(this.toplevelUrl, "api/v1/auth/renew", { method: "POST", renewing: true, shape: renewalShape(this.user.id) });
    this._adopt(body.access_token, body.user, body.expires_in);
    this.onRenewed(this);
  }

  /** End the session here and in every other tab of this browser where the same user is logged in
   *  to the same toplevel (each ends its own session at the toplevel). */
  async logout() {
    const token = this.token;
    const user = this.user;
    this._clear();
    if (!token) return;
    this.logouts?.postMessage({ toplevelUrl: this.toplevelUrl, userId: user && user.id });
    await this._endAtToplevel(token);
  }

  /** Another tab of this browser logged out `message.userId`: so does this tab, if it is that user's. */
  _loggedOutElsewhere(message) {
    const token = this.token;
    if (!token || !message || message.toplevelUrl !== this.toplevelUrl || !this.user || message.userId !== this.user.id) return;
    this._expire(new ApiError(401, "logged_out", "you logged out in another tab"));
    this._endAtToplevel(token);
  }

  /** Tell the toplevel the session of `token` is over (best effort: the local session is gone either way). */
  async _endAtToplevel(token) {
    try {
      await fetch(buildUrl(this.toplevelUrl, "api/v1/auth/logout"), {
        method: "POST", headers: { Authorization: `Bearer ${token}` }, credentials: "omit",
      });
    } catch { /* the local session is gone either way */ }
  }

  _adopt(token, user, expiresIn) {
    this.token = token;
    this.user = user;
    this.expiresAt = Date.now() + expiresIn * 1000;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({
      token, user, expiresAt: this.expiresAt, toplevelUrl: this.toplevelUrl,
    }));
    this._scheduleRenewal(expiresIn * 1000 * RENEW_FRACTION);
  }

  _scheduleRenewal(delayMs) {
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => this._renewInBackground(), Math.min(MAX_TIMER_MS, Math.max(1000, delayMs)));
  }

  async _renewInBackground() {
    if (!this.token) return;
    try {
      await this.renew();
    } catch (err) {
      if (err.isAuthFailure || err.status === 401) {
        this._expire(err);
      } else if (Date.now() + RETRY_RENEW_MS < this.expiresAt) {
        this._scheduleRenewal(RETRY_RENEW_MS);   // the toplevel is briefly away: try again
      } else if (err.code === "bad_answer") {
        this._expire(err);   // the login screen says which answer the renewal could not use
      } else {
        this._expire(new ApiError(401, "token_expired", "your session expired while the server could not be reached"));
      }
    }
  }

  _expire(err) {
    this._clear();
    this.onExpired(err);
  }

  _clear() {
    clearTimeout(this.renewTimer);
    this.generation += 1;
    this.serverTokens.clear();
    this.token = null;
    this.user = null;
    sessionStorage.removeItem(STORAGE_KEY);
  }

  /**
   * fetch() with the bearer token for `base`; answers the Response or throws an ApiError.
   * A 401 from the toplevel that means the session is over ends the session (the UI shows why);
   * the toplevel also refuses the token exchange once the session or the user has ended, so a
   * revoked session ends at the next exchange for any server.
   * @param {string} base
   * @param {string} path
   * @param {RequestOptions} [options]
   * @returns {Promise<Response>}
   */
  async fetchRaw(base, path, { method = "GET", params, json, body, signal, auth = true, renewing = false, headers = {}, cache = "no-store", tokenInQuery = false } = {}) {
    const send = async (token) => {
      // the timeout bounds reading the body too: a node that sends its headers and then stalls
      const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
      /** @type {RequestInit & {headers: Record<string, string>}} */
      const init = { method, signal: signal ? AbortSignal.any([signal, timeout]) : timeout, credentials: "omit", headers: { ...headers }, cache };
      let query = params;
      // never the toplevel's session token, which lives for the session: a server's own lives a minute
      if (auth && token && tokenInQuery && !this.isToplevel(base)) query = { ...params, access_token: token };
      else if (auth && token) init.headers.Authorization = `Bearer ${token}`;
      if (json !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(json);
      } else if (body !== undefined) {
        init.body = body;
      }
      let response;
      try {
        response = await fetch(buildUrl(base, path, query), init);
      } catch (cause) {
        throw unreachable(base, cause);
      }
      if (!response.ok) throw await errorFromResponse(response);
      return response;
    };
    if (!auth) return send(null);
    try {
      return await this.withToken(base, send);
    } catch (err) {
      if (!(err instanceof ApiError) || !err.isAuthFailure) throw err;
      if (this.isToplevel(base)) {
        if (!renewing && this.token) this._expire(err);
        throw err;
      }
      if (!this.token) throw err;   // the exchange found the session over: the login screen says why
      // The toplevel still vouches for the session, so the session goes on; this one server
      // refused a token minted for it (misconfigured audience or key). Say so where it happened.
      throw new ApiError(err.status, "server_refused_token",
        `${hostOf(base)} refused the access token issued for it (${err.message}); ask an administrator to check its token settings`);
    }
  }

  /**
   * @param {string} base
   * @param {string} path
   * @param {RequestOptions} [options]
   */
  async fetchJson(base, path, options = {}) {
    const response = await this.fetchRaw(base, path, options);
    const body = response.status === 204 ? null : await parseJson(response);
    return options.shape ? shaped(body, base, path, options.shape) : body;
  }

  toplevel(path, options) { return this.fetchJson(this.toplevelUrl, path, options); }
}

/**
 * Every item of a list endpoint, following `offset` until `total` is reached; at most
 * MAX_LIST_PAGES pages or MAX_LIST_BYTES, beyond which the list is cut with an error that says so
 * (a server claiming a total of 10^9 was read without end). Partial lists are not returned: a
 * patient's records shown without some of them would read as complete. Each page must have
 * `options.shape` (answers.js `pageOf`: its items checked too), else be a page of objects (`LIST_PAGE`).
 * @param {Session} session
 * @param {string} base
 * @param {string} path
 * @param {Record<string, any>} [params]
 * @param {RequestOptions} [options]
 */
export async function listAll(session, base, path, params = {}, options = {}) {
  const items = [];
  const limit = 500;
  let bytes = 0;
  for (let pages = 0, offset = 0; pages < MAX_LIST_PAGES && bytes < MAX_LIST_BYTES; pages += 1, offset += limit) {
    const response = await session.fetchRaw(base, path, { ...options, params: { ...params, limit, offset } });
    const answer = await readText(response);
    bytes += answer.bytes;
    const page = shaped(parseText(answer.text, response), base, path, options.shape ?? LIST_PAGE);
    items.push(...page.items);
    if (page.items.length === 0 || items.length >= page.total) return items;
  }
  throw new ApiError(502, "list_cut", `${hostOf(base)} (${path}) lists more than the viewer reads: the list was cut `
    + `after ${items.length} items (${Math.round(bytes / 2 ** 20)} MiB); the viewer cannot show it (tell IT)`);
}
