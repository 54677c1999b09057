#!/usr/bin/env -S node --max-semi-space-size=8
// The published entry point runs the compiled CLI; `npm ci` builds dist/ through the `prepare` script.
// --max-semi-space-size=8: V8's young generation grows to 32 MiB under a request flood and never
// gives it back, 50 MB more RSS than with 4 MiB for as many boot scripts per second (bench/http);
// under an event flood 2 MiB semi-spaces doubled the GC time (bench/events). 8: RSS 170 MB after load.
import '../dist/cli/main.js';
