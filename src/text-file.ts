/**
 * The text of a file rackboot reads as YAML or JSON (the config, a template), or why its bytes are
 * not such a text: one problem said before any parser sees them, where a parser given a binary file
 * answers with a screenful of syntax errors quoting its bytes.
 */
export function textOf(bytes: Buffer): { ok: true; text: string } | { ok: false; reason: string } {
  const nul = bytes.indexOf(0);
  if (nul >= 0)
    return {
      ok: false,
      reason: `not a text file (NUL byte at offset ${nul}): rackboot reads it as YAML or JSON text`,
    };
  return { ok: true, text: bytes.toString('utf8') };
}
