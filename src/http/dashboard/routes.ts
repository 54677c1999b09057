import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync } from 'fastify';

const FILES = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
} as const;

/**
 * The static files sit next to this module in src/; the compiled module runs from dist/, and the
 * package ships src/http/dashboard/ (package.json "files"), so look there second.
 */
function dashboardDirectory(): string {
  for (const candidate of ['./', '../../../src/http/dashboard/']) {
    const directory = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(`${directory}index.html`)) return directory;
  }
  throw new Error('dashboard files not found next to src/http/dashboard/routes.ts');
}

/**
 * The page keeps the operator token (localStorage) and has a Reprovision button: no other site may
 * frame it (a framed page can be clicked through by one that draws over it), and it loads nothing
 * but its own files.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** `GET /` and its two assets, read once at startup: a handful of kilobytes, no build step, no CDN. */
export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  const directory = dashboardDirectory();
  const serve = (name: keyof typeof FILES, path: string) => {
    const body = readFileSync(`${directory}${name}`);
    app.get(path, async (_request, reply) =>
      reply.type(FILES[name]).header('cache-control', 'no-cache').headers(SECURITY_HEADERS).send(body),
    );
  };
  serve('index.html', '/');
  serve('app.js', '/dashboard/app.js');
  serve('style.css', '/dashboard/style.css');
};
