import { startTestServer } from './harness.js';

/**
 * The TFTP server as its own process, for tests and benchmarks that run it inside a network
 * namespace (`ip netns exec … node --import tsx test/tftp/serve.ts '{"root": …}'`) or need it
 * off the client's event loop. Prints `{"listening": port}`; on SIGTERM prints
 * `REPORT {"stats": …, "events": […]} END` (markers, so a reader never parses half a line) and exits.
 */
const settings = JSON.parse(process.argv[2] ?? '{}') as {
  root: string;
  listen?: string;
  tftp?: Record<string, number>;
};
const running = await startTestServer(settings.root, {
  ...(settings.listen === undefined ? {} : { listen: settings.listen }),
  ...(settings.tftp === undefined ? {} : { tftp: settings.tftp }),
});
process.stdout.write(`${JSON.stringify({ listening: running.port })}\n`);
process.once('SIGTERM', () => {
  const stats = running.server.stats();
  running.server.close().finally(() => {
    // No process.exit: with every socket and timer closed the process ends by itself, which also
    // lets --cpu-prof write its profile.
    process.stdout.write(
      `REPORT ${JSON.stringify({ stats, events: running.events.map((event) => event.detail) })} END\n`,
    );
  });
});
