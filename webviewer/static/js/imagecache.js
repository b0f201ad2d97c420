// Rendered images as fetched (encoded Blobs), least recently used dropped first. Kept encoded
// (tens of KB each) rather than decoded (a megabyte and more each): decoding one when it is
// shown takes a few milliseconds, and the cache's size is what the bytes say.

export class ImageCache {
  constructor(maxBytes = 32 * 1024 * 1024, maxEntries = 300) {
    this.maxBytes = maxBytes;
    this.maxEntries = maxEntries;
    this.entries = new Map();   // key -> {blob, bytes, orientation, window}; Map order is recency order
    this.bytes = 0;
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return null;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry;
  }

  has(key) { return this.entries.has(key); }

  /** `about` is what the node said of the image (edge orientation, window applied); kept with it. */
  put(key, blob, about = {}) {
    const existing = this.entries.get(key);
    if (existing) return existing;
    const entry = { blob, bytes: blob.size, ...about };
    this.entries.set(key, entry);
    this.bytes += entry.bytes;
    for (const [oldKey, old] of this.entries) {
      if (this.bytes <= this.maxBytes && this.entries.size <= this.maxEntries) break;
      this.entries.delete(oldKey);
      this.bytes -= old.bytes;
    }
    return entry;
  }

  clear() {
    this.entries.clear();
    this.bytes = 0;
  }
}
