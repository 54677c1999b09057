import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { refusalLog } from '../src/http/machine-auth.js';

t.test(
  'the refusals a key left out are counted on a later line when the full memo drops the key',
  async (t) => {
    const lines: Record<string, unknown>[] = [];
    const logger = { warn: (fields: Record<string, unknown>) => lines.push(fields) };
    const log = refusalLog('Ignition refused');
    const refusal = (requester: string) => ({
      mac: '52:54:00:00:00:01' as Mac,
      requester,
      reason: 'token missing',
    });
    log(logger, refusal('10.77.219.1'), 0);
    for (let repeat = 0; repeat < 3; repeat += 1) log(logger, refusal('10.77.219.1'), 1000);
    t.equal(lines.length, 1, 'the repeats are left out');
    // 1,024 new requesters fill the memo (1,024 keys) and drop the first before its next line: 50 of
    // them are logged (the global budget), the rest are owed by keys still in the memo.
    for (let index = 0; index < 1024; index += 1) log(logger, refusal(`fd00::${index.toString(16)}`), 2000);
    t.equal(lines.length, 51);
    t.notOk(
      lines.some((line) => 'suppressedElsewhere' in line),
      'no line logged during the flood came after the drop',
    );
    log(logger, refusal('10.77.221.1'), 60_000);
    t.match(lines.at(-1), { requester: '10.77.221.1', suppressedElsewhere: 3 }, 'the next line counts them');
    t.notOk('suppressed' in (lines.at(-1) ?? {}), 'as refusals of other keys, not of its own');
  },
);
