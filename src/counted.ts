/** `1 machine`, `2 machines`: a count with its noun, for messages people read. */
export function counted(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
