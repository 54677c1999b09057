/**
 * Checks `condition` every `intervalMs` until it holds or `timeoutMs` has passed; true when it held.
 * Bounded in time, as every wait in the tests must be; the caller's assertion says what was expected.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (performance.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
