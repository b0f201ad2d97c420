// A record's stacks as the node publishes them (RecordMeta.stacks, docs/API.md): a file or series
// that holds several stacks (magnitude and phase, b-values, stack ids, orientations) is one volume
// per stack, so reformats and 3D views name the stack they show; a stack's time points (phases)
// are a cine axis: over the frames of one position in the slices view, over the time points' own
// volumes in reformats and 3D views (the node's `phase`, 0-based; each viewport keeps its own,
// viewport.js). The viewer shell keeps the chosen stack.

/** The record's stacks (none from a node older than `stacks`). @returns {any[]} */
export function recordStacks(meta) {
  return Array.isArray(meta.stacks) ? meta.stacks : [];
}

/** Plane geometry with the reformats of `stack`; the stored frames stay the whole record's. */
export function planesFor(recordPlanes, stack) {
  return stack && stack.planes ? { ...stack.planes, slices: (recordPlanes || {}).slices } : recordPlanes;
}

/** The time point (phase) of `stack` that holds record frame `frame`, or -1. */
export function timeOf(stack, frame) {
  return stack ? stack.phases.findIndex((phase) => phase.includes(frame)) : -1;
}

/** The frame at the position of `frame` in time point `time` of `stack`, or null. */
export function frameAtTime(stack, frame, time) {
  const now = timeOf(stack, frame);
  if (now < 0 || !stack.phases[time]) return null;
  return stack.phases[time][stack.phases[now].indexOf(frame)] ?? null;
}

/** The frame a stack opens on in the stored-slices view: the middle of its first time point. */
export function middleFrame(stack) {
  return stack.frames[Math.floor(stack.frames.length / 2)];
}
