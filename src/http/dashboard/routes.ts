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

/** `GET /` and its two assets, read once at startup: a handful of kilobytes, no build step, no CDN. */
export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  const directory = dashboardDirectory();
  const serve = (name: keyof typeof FILES, path: string) => {
    const body = readFileSync(`${directory}${name}`);
    app.get(path, async (_request, reply) =>
      reply.type(FILES[name]).header('cache-control', 'no-cache').send(body),
    );
  };
  serve('index.html', '/');
  serve('app.js', '/dashboard/app.js');
  serve('style.css', '/dashboard/style.css');
};
