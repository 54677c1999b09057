/**
 * Sets `key` as the newest entry of `map` (Map order is insertion order), dropping the oldest when
 * the map already holds `maxKeys` others: a bounded memo whose oldest entry goes first.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, maxKeys: number): void {
  map.delete(key);
  const oldest = map.keys().next();
  if (map.size >= maxKeys && !oldest.done) map.delete(oldest.value);
  map.set(key, value);
}

/** Moves the entry of `key` to the newest end of `map`: a memo hit, kept longest. */
export function markUsed<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
}
