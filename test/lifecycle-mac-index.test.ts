import t from 'tap';
import { macFromBytes } from '../src/inventory/mac.js';
import { MacEventIndex } from '../src/lifecycle/mac-index.js';

const macOf = (index: number) => macFromBytes(Buffer.from([0x52, 0x54, 0, 0, index >> 8, index & 0xff]));
const [a, b] = [macOf(1), macOf(2)];

t.test('after and latest: ascending ids of one MAC, bounded by id, limit and what is pruned', async (t) => {
  const index = new MacEventIndex(1000);
  for (let id = 1; id <= 20; id += 1) index.add(id % 2 ? a : b, id);
  t.same(index.after(a, 0, 20, 100), [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
  t.same(index.after(a, 5, 20, 3), [7, 9, 11], 'above the id, at most the limit');
  t.same(index.after(a, 5, 10, 100), [7, 9], 'not above throughId (events not yet durable)');
  t.same(index.latest(b, 20, 3), [16, 18, 20], 'newest, oldest of them first');
  t.same(index.latest(b, 15, 2), [12, 14]);
  t.same(index.latest(macOf(3), 20, 5), [], 'a MAC never seen');
  index.prune(12);
  t.same(index.after(a, 0, 20, 100), [13, 15, 17, 19], 'pruned ids are gone');
  t.same(index.latest(b, 20, 100), [14, 16, 18, 20]);
  t.same(index.latest(b, 13, 100), [], 'nothing left at or below a pruned id');
});

t.test('memory stays bounded: pruned ids of MACs gone quiet are swept', async (t) => {
  const retention = 100;
  const index = new MacEventIndex(2 * retention);
  let id = 0;
  let mostHeld = 0;
  // 500 MACs each get 50 events in turn and then go quiet; retention keeps the newest 100 ids.
  for (let machine = 0; machine < 500; machine += 1) {
    for (let event = 0; event < 50; event += 1) {
      id += 1;
      index.add(macOf(machine), id);
      index.prune(id - retention);
      mostHeld = Math.max(mostHeld, index.size);
    }
  }
  // Live ids are at most retention + 1 (pruning follows the add); pruned ones at most as many again.
  t.ok(mostHeld <= 2 * (retention + 1), `at most ${2 * (retention + 1)} of 25,000 ids held (${mostHeld})`);
  t.same(index.latest(macOf(499), id, 100).length, 50);
  t.same(index.latest(macOf(498), id, 100).length, 50, 'the newest 100 ids are all still there');
  t.same(index.latest(macOf(497), id, 100), []);
});

t.test('ids kept while retention is not reached never make every add sweep', async (t) => {
  const index = new MacEventIndex(10);
  for (let id = 1; id <= 10_000; id += 1) index.add(macOf(id % 1000), id);
  t.equal(index.size, 10_000, 'nothing pruned, nothing lost');
  t.same(index.after(macOf(7), 0, 10_000, 3), [7, 1007, 2007]);
});

t.test('forget drops the ids of a failed write, wherever they sit among newer ones', async (t) => {
  const index = new MacEventIndex(1000);
  for (let id = 1; id <= 12; id += 1) index.add(id % 2 ? a : b, id);
  index.forget([
    { id: 5, mac: a },
    { id: 6, mac: b },
    { id: 7, mac: a },
    { id: 8, mac: undefined },
  ]);
  t.same(index.after(a, 0, 12, 100), [1, 3, 9, 11]);
  t.same(index.after(b, 0, 12, 100), [2, 4, 8, 10, 12], 'an event without a MAC is in no list');
  t.equal(index.size, 9);
});
