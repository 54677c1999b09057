/**
 * Sets `key` as the newest entry of `map` (Map order is insertion order), dropping the oldest when
 * the map already holds `maxKeys` others: a bounded memo whose oldest entry goes first. Returns the
 * dropped entry's value, for a memo whose entries count something that must not be lost with it.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, maxKeys: number): V | undefined {
  map.delete(key);
  let dropped: V | undefined;
  const oldest = map.entries().next();
  if (map.size >= maxKeys && !oldest.done) {
    map.delete(oldest.value[0]);
    dropped = oldest.value[1];
  }
  map.set(key, value);
  return dropped;
}

/** Moves the entry of `key` to the newest end of `map`: a memo hit, kept longest. */
export function markUsed<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
}
