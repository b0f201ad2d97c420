// Named timers: starting one replaces the timer of that name, and all stop together on teardown.

export class Timers {
  constructor() {
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.ids = new Map();
  }

  /** Run `fn` after `ms`, replacing any pending timer called `name`. */
  later(name, ms, fn) {
    this.clear(name);
    this.ids.set(name, setTimeout(() => { this.ids.delete(name); fn(); }, ms));
  }

  clear(name) {
    const id = this.ids.get(name);
    if (id !== undefined) clearTimeout(id);
    this.ids.delete(name);
  }

  clearAll() {
    for (const name of [...this.ids.keys()]) this.clear(name);
  }
}
