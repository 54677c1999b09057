/**
 * A whole number from `min` to `max` typed as an option's value, or undefined. `Number('')` is 0, so
 * `--subnet "$SUBNET"` with the variable unset would pass as 0: blank text is never a number here.
 */
export function wholeNumberIn(text: string, min: number, max: number): number | undefined {
  if (text.trim() === '') return undefined;
  const value = Number(text);
  return Number.isInteger(value) && value >= min && value <= max ? value : undefined;
}
