// Talking to the SIVR layers (docs/API.md): one session with a bearer token, renewed in the
// background, sent only in the Authorization header (never in a URL, where it would end up in
// logs and browser history).

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
const RENEW_FRACTION = 0.7;   // renew when 70 % of a token's life has passed
const RETRY_RENEW_MS = 5000;

/** Turn any failed fetch or error body into an ApiError whose message a person can act on. */
export async function errorFromResponse(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: fall through */ }
  const err = body && body.error;
  if (err && err.code) {
    const { code, message, ...details } = err;
    if (response.headers.get("Retry-After")) details.retryAfter = Number(response.headers.get("Retry-After"));
    return new ApiError(response.status, code, message || code, details, details.request_id || response.headers.get("X-Request-Id"));
  }
  return new ApiError(response.status, "http_error", `the server answered ${response.status} ${response.statusText}`.trim(),
    {}, response.headers.get("X-Request-Id"));
}

export function unreachable(baseUrl, cause) {
  if (cause && cause.name === "AbortError") return cause;
  if (cause && cause.name === "TimeoutError") return new ApiError(0, "timeout", `${hostOf(baseUrl)} did not answer in time`);
  return new ApiError(0, "unreachable", `${hostOf(baseUrl)} could not be reached`);
}

export function hostOf(url) {
  try { return new URL(url).host; } catch { return url; }
}

/** Join a server base URL, a path and query parameters (undefined/null/"" values are left out). */
export function buildUrl(base, path, params = {}) {
  const url = new URL(path, base.endsWith("/") ? base : `${base}/`);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.toString();
}

export class Session {
  constructor(toplevelUrl) {
    this.toplevelUrl = toplevelUrl;
    this.token = null;
    this.user = null;
    this.expiresAt = 0;
    this.renewTimer = null;
    this.onExpired = () => {};
    this.onRenewed = () => {};
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
      method: "POST", json: { username, password }, auth: false,
    });
    this._adopt(body.access_token, body.user, body.expires_in);
    return body.user;
  }

  async renew() {
    const body = await this.fetchJson(this.toplevelUrl, "api/v1/auth/renew", { method: "POST", renewing: true });
    this._adopt(body.access_token, body.user, body.expires_in);
    this.onRenewed(this);
  }

  async logout() {
    const token = this.token;
    this._clear();
    if (!token) return;
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
    this.renewTimer = setTimeout(() => this._renewInBackground(), Math.max(1000, delayMs));
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
    this.token = null;
    this.user = null;
    sessionStorage.removeItem(STORAGE_KEY);
  }

  authHeaders() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /**
   * fetch() with the bearer token; answers the Response or throws an ApiError.
   * A 401 that means the session is over ends the session (the UI shows why).
   */
  async fetchRaw(base, path, { method = "GET", params, json, body, signal, auth = true, renewing = false, headers = {} } = {}) {
    const init = { method, signal, credentials: "omit", headers: { ...headers }, cache: "no-store" };
    if (auth) Object.assign(init.headers, this.authHeaders());
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(buildUrl(base, path, params), init);
    } catch (cause) {
      throw unreachable(base, cause);
    }
    if (!response.ok) {
      const err = await errorFromResponse(response);
      if (auth && !renewing && err.isAuthFailure && this.token) this._expire(err);
      throw err;
    }
    return response;
  }

  async fetchJson(base, path, options = {}) {
    const response = await this.fetchRaw(base, path, options);
    if (response.status === 204) return null;
    return response.json();
  }

  toplevel(path, options) { return this.fetchJson(this.toplevelUrl, path, options); }
}

/** Every item of a list endpoint, following `offset` until `total` is reached. */
export async function listAll(session, base, path, params = {}, options = {}) {
  const items = [];
  const limit = 500;
  for (let offset = 0; ; offset += limit) {
    const page = await session.fetchJson(base, path, { ...options, params: { ...params, limit, offset } });
    items.push(...page.items);
    if (page.items.length === 0 || items.length >= page.total) return items;
  }
}
