// Rendered images kept as blob: URLs, least recently used dropped first. A blob URL pins its
// bytes until revoked, so every eviction revokes, except the image on screen right now.

export class ImageCache {
  constructor(maxBytes = 48 * 1024 * 1024, maxEntries = 300) {
    this.maxBytes = maxBytes;
    this.maxEntries = maxEntries;
    this.entries = new Map();   // key -> {url, bytes}; Map order is recency order
    this.bytes = 0;
    this.pinned = null;
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return null;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry;
  }

  has(key) { return this.entries.has(key); }

  put(key, blob) {
    const existing = this.entries.get(key);
    if (existing) return existing;
    const entry = { url: URL.createObjectURL(blob), bytes: blob.size };
    this.entries.set(key, entry);
    this.bytes += entry.bytes;
    this._evict();
    return entry;
  }

  /** The URL on screen: never revoked while shown. */
  pin(url) { this.pinned = url; }

  _evict() {
    for (const [key, entry] of this.entries) {
      if (this.bytes <= this.maxBytes && this.entries.size <= this.maxEntries) break;
      if (entry.url === this.pinned) continue;
      this.entries.delete(key);
      this.bytes -= entry.bytes;
      URL.revokeObjectURL(entry.url);
    }
  }

  clear() {
    for (const entry of this.entries.values()) URL.revokeObjectURL(entry.url);
    this.entries.clear();
    this.bytes = 0;
    this.pinned = null;
  }
}
