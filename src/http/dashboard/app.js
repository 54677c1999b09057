// The rackboot dashboard: plain DOM, no build step, no CDN. Every value from the server (some of it
// sent by machines: DHCP vendor class, failure messages) is put in the page as text, never as HTML.
//
// The page is built once and then patched: one row per MAC in each table, created when the machine
// first appears and updated in place when an event touches it, and one button per state filter whose
// label changes. A node that is replaced between mousedown and mouseup loses the click, so nothing an
// operator may be clicking is ever rebuilt while events stream in.

const STATES = ['discovered', 'booting', 'installing', 'installed', 'failed'];
const FILTERS = ['all', ...STATES, 'unseen'];
const TOKEN_KEY = 'rackboot.apiToken';
const LAST_EVENT_ID_HEADER = 'x-rackboot-last-event-id';
/**
 * A variable name as adopt's `vars` accepts it, and the rule in words: src/inventory/names.ts
 * NAME_PATTERN and nameRule (tests keep them equal).
 */
const VAR_NAME = /^(?!(?:__proto__|constructor|prototype)$)[A-Za-z0-9_-]+$/;
const VAR_NAME_RULE =
  'vars names may hold letters, digits, _ and -, except __proto__, constructor, prototype';
/** Back-off before a new stream when EventSource gave up (a 502 from a proxy during a restart). */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
/** Events kept in the open timeline (the server sends the latest 300 with the machine). */
const TIMELINE_LIMIT = 1000;

/**
 * mac → what the server listed (`GET /api/v1/machines` fields) plus `appliedId`: the newest event
 * id already folded into it, so a replayed event or an older fetched view never moves it back.
 */
const machines = new Map();
let filter = 'all';
let selected;
/** The open machine's events, by id: a reconnect's replay and the fetched timeline overlap. */
let selectedEvents = [];
let selectedIds = new Set();
/** The newest id the stream delivered: where a new EventSource resumes. */
let lastEventId = '0';

// What changed since the last frame.
const dirtyMacs = new Set();
let countsDirty = true;
let detailDirty = true;
let timelineDirty = true;
let renderQueued = false;

const $ = (id) => document.getElementById(id);

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

/** Sets a node's text only when it differs: an unchanged cell is not touched at all. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** A table cell's text, also as its tooltip: the grids' columns cut long values short (style.css). */
function setCell(cell, text) {
  if (cell.textContent === text) return;
  cell.textContent = text;
  cell.title = text;
}

function age(time) {
  if (!time) return '';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

/**
 * Points an age cell (class `age`) at `time` and shows it; the 5 s tick then updates its text alone
 * (tickAges), so a page of thousands of machines is not re-rendered to move their ages on.
 */
function setAge(cell, time) {
  if (cell.dataset.time !== (time ?? '')) cell.dataset.time = time ?? '';
  setText(cell, ageText(cell));
}

function ageText(cell) {
  const text = age(cell.dataset.time);
  return text && cell.dataset.suffix ? `${text}${cell.dataset.suffix}` : text;
}

function tickAges() {
  for (const cell of document.querySelectorAll('td.age')) setText(cell, ageText(cell));
}

/**
 * A duration for people: `850 ms`, `12.3 s`, `1 min 59 s`, `1 h 0 min 0 s`. Rounded once, to the unit
 * shown, before it is split, so 119,600 ms is `2 min 0 s`, never `1 min 60 s`. Exported for the test.
 */
export function duration(milliseconds) {
  if (!Number.isFinite(milliseconds)) return '';
  if (milliseconds < 0) return `−${duration(-milliseconds)}`;
  if (Math.round(milliseconds) < 1000) return `${Math.round(milliseconds)} ms`;
  const tenths = Math.round(milliseconds / 100);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  const seconds = Math.round(milliseconds / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min ${seconds % 60} s`;
}

/**
 * The adopt form's variables, one `NAME=value` a line (the value is everything after the first `=`,
 * as typed); blank lines are skipped. Throws with the line at fault. Exported for the test.
 */
export function parseVars(text) {
  const vars = new Map();
  for (const [index, line] of text.split('\n').entries()) {
    const content = line.replace(/\r$/, '');
    if (content.trim() === '') continue;
    const equals = content.indexOf('=');
    if (equals < 0) throw new Error(`vars line ${index + 1}: NAME=value expected`);
    const name = content.slice(0, equals).trim();
    if (!VAR_NAME.test(name)) {
      throw new Error(`vars line ${index + 1}: "${name}" is not a variable name (${VAR_NAME_RULE})`);
    }
    if (vars.has(name)) throw new Error(`vars line ${index + 1}: ${name} is set twice`);
    vars.set(name, content.slice(equals + 1));
  }
  return Object.fromEntries(vars);
}

function hardware(machine) {
  return [machine.vendor, machine.arch, machine.firmware].filter(Boolean).join(' · ');
}

/**
 * Shows `text` in a `.message` node; `outcome` (sending, done, warning, error, or undefined for none)
 * colours it (style.css).
 */
function showMessage(node, outcome, text) {
  if (outcome) node.dataset.outcome = outcome;
  else delete node.dataset.outcome;
  setText(node, text);
}

function stateBadge(state) {
  return element('span', { className: 'state', dataset: { state: state ?? 'unseen' } }, state ?? 'not seen');
}

function api(path, options = {}) {
  const headers = { accept: 'application/json', ...(options.headers ?? {}) };
  return fetch(path, { ...options, headers });
}

async function operatorCall(path, body) {
  const token = $('token').value.trim();
  if (!token)
    throw new Error(
      'enter the operator token first: server.api_token, or the file operator-token in server.state',
    );
  const response = await api(path, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    // Fastify's own refusals (a body its schema rejects) say what is wrong in `message`; `error`
    // is only the status text there. rackboot's answers put the reason in `error`.
    const reason = answer.statusCode ? answer.message : (answer.error ?? answer.rejected ?? answer.message);
    throw new Error(reason ?? `HTTP ${response.status}`);
  }
  return answer;
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function touch(mac) {
  dirtyMacs.add(mac);
  countsDirty = true;
  if (mac === selected) detailDirty = true;
  queueRender();
}

function render() {
  for (const mac of dirtyMacs) {
    renderFleetRow(mac);
    renderDiscoveredRow(mac);
  }
  dirtyMacs.clear();
  fitSections();
  if (countsDirty) renderFilters();
  if (detailDirty || timelineDirty) renderDetail();
}

// ---- filters: one button per state, made once ----

const filterButtons = new Map();

function buildFilters() {
  for (const key of FILTERS) {
    filterButtons.set(
      key,
      element('button', { type: 'button', dataset: { filter: key }, onclick: () => setFilter(key) }, key),
    );
  }
  $('filters').replaceChildren(...filterButtons.values());
}

function renderFilters() {
  countsDirty = false;
  const counts = new Map([['all', machines.size]]);
  for (const machine of machines.values()) {
    const key = machine.state ?? 'unseen';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const [key, button] of filterButtons) {
    setText(button, `${key} (${counts.get(key) ?? 0})`);
    button.classList.toggle('active', key === filter);
  }
  $('empty').hidden = machines.size > 0;
}

function matchesFilter(machine) {
  return filter === 'all' || (machine.state ?? 'unseen') === filter;
}

function setFilter(key) {
  if (key === filter) return;
  filter = key;
  for (const [mac, row] of fleetRows) {
    const machine = machines.get(mac);
    // A machine a resync just dropped keeps its row until the next frame removes it.
    if (!machine) continue;
    const hidden = !matchesFilter(machine);
    if (row.hidden !== hidden) row.hidden = hidden;
  }
  for (const section of $('machines').tBodies) fitSection(section);
  renderFilters();
}

// ---- the fleet table: one row per MAC, in MAC order (as the API lists them) ----

const fleetRows = new Map();
const fleetOrder = [];

/**
 * Rows per section (tbody) of either table. style.css lets the browser skip a section out of view
 * as a whole (content-visibility): on every row it watched 10,000 elements per frame, and without it
 * laid out and painted every row per event (bench/dashboard).
 */
const SECTION_ROWS = 100;

/**
 * Inserts `row` where `mac` sorts among the rows of `table`: `order` holds their MACs in order and
 * `rows` their elements (the API lists machines in MAC order, so a first load only appends). A row
 * at the end starts a new section once the last one is full, and a section that grew to twice that
 * is split in two.
 */
function insertSorted(table, order, rows, mac, row) {
  let low = order.length;
  if (low > 0 && order[low - 1] > mac) {
    let high = low;
    low = 0;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (order[middle] < mac) low = middle + 1;
      else high = middle;
    }
  }
  const next = order[low];
  order.splice(low, 0, mac);
  const nextRow = next === undefined ? null : (rows.get(next) ?? null);
  let section = nextRow?.parentNode ?? table.tBodies[table.tBodies.length - 1];
  if (!nextRow && section.rows.length >= SECTION_ROWS) section = addSection(table, section);
  section.insertBefore(row, nextRow);
  if (section.rows.length >= 2 * SECTION_ROWS) {
    const second = addSection(table, section);
    while (section.rows.length > SECTION_ROWS) second.prepend(section.rows[section.rows.length - 1]);
    sectionsToFit.add(second);
  }
  sectionsToFit.add(section);
}

/** A new empty section right after `previous`. */
function addSection(table, previous) {
  const section = element('tbody');
  section.setAttribute('role', 'rowgroup');
  table.insertBefore(section, previous.nextSibling);
  return section;
}

/** Removes the row, and its section if that was its last row (the first section always stays). */
function removeSorted(order, mac, row) {
  const index = order.indexOf(mac);
  if (index >= 0) order.splice(index, 1);
  const section = row.parentNode;
  row.remove();
  if (!section) return;
  if (section.rows.length === 0 && section !== section.parentNode?.tBodies[0]) section.remove();
  else sectionsToFit.add(section);
}

/**
 * Sections whose rows were added, removed or hidden in this render, fitted once each at its end:
 * fitted at each row, a first load of 5,000 machines counted up to 100 rows 10,000 times and queued
 * 20,000 frame callbacks.
 */
const sectionsToFit = new Set();

function fitSections() {
  for (const section of sectionsToFit) if (section.isConnected) fitSection(section);
  sectionsToFit.clear();
}

/**
 * Hides a section without shown rows, and sizes it for while it is out of view and not yet drawn
 * (content-visibility: auto): `--shown-rows` rows' height (style.css). Once drawn, a section out of
 * view keeps the size it had then, so when the count of its shown rows changes it is drawn once more
 * (visible for two frames): otherwise a filter would leave gaps, or rows a section since showed
 * would appear only once it was scrolled to. A section fitted for the first time was never drawn,
 * so it is not: drawing each new one made a first load lay out every row of the page at once.
 */
function fitSection(section) {
  let shown = 0;
  for (const row of section.rows) if (!row.hidden) shown += 1;
  const before = section.style.getPropertyValue('--shown-rows');
  if (before === String(shown)) return;
  section.style.setProperty('--shown-rows', String(shown));
  section.hidden = shown === 0;
  if (before === '') return;
  // Only the newest change's frames end it: an older one's would end the drawing before it is done.
  const change = (sectionChanges.get(section) ?? 0) + 1;
  sectionChanges.set(section, change);
  section.style.contentVisibility = 'visible';
  requestAnimationFrame(() =>
    requestAnimationFrame(() => {
      if (sectionChanges.get(section) === change) section.style.removeProperty('content-visibility');
    }),
  );
}

const sectionChanges = new WeakMap();

function renderFleetRow(mac) {
  const machine = machines.get(mac);
  let row = fleetRows.get(mac);
  if (!machine) {
    if (row) removeSorted(fleetOrder, mac, row);
    fleetRows.delete(mac);
    return;
  }
  if (!row) {
    row = element(
      'tr',
      // Focusable, so the keyboard can open a machine too (Enter or Space, start()).
      { dataset: { mac }, tabIndex: 0 },
      element('td', { className: 'mac' }, mac),
      element('td'),
      element('td'),
      element('td', {}, stateBadge(null)),
      element('td'),
      element('td', { className: 'hardware' }),
      element('td'),
      element('td', { className: 'age' }),
    );
    insertSorted($('machines'), fleetOrder, fleetRows, mac, row);
    fleetRows.set(mac, row);
  }
  const state = machine.state ?? 'unseen';
  if (row.dataset.state !== state) {
    row.dataset.state = state;
    const badge = row.cells[3].firstChild;
    badge.dataset.state = state;
    badge.textContent = machine.state ?? 'not seen';
  }
  setCell(row.cells[1], machine.hostname ?? '');
  setCell(row.cells[2], machine.profile ?? '');
  setCell(row.cells[4], machine.ip ?? '');
  setCell(row.cells[5], hardware(machine));
  setCell(row.cells[6], machine.last_event ?? '');
  setAge(row.cells[7], machine.updated_at);
  row.classList.toggle('selected', mac === selected);
  const hidden = !matchesFilter(machine);
  if (row.hidden !== hidden) {
    row.hidden = hidden;
    sectionsToFit.add(row.parentNode);
  }
}

// ---- discovered machines: one row per MAC, kept while the operator types into its form ----

const discoveredRows = new Map();
const discoveredOrder = [];

function discoveredRow(mac) {
  const profile = element('input', { placeholder: 'profile', required: true, size: 10 });
  profile.setAttribute('list', 'profiles');
  const hostname = element('input', { placeholder: 'hostname', size: 10 });
  const vars = element('textarea', {
    className: 'vars',
    placeholder: 'vars: NAME=value a line',
    rows: 1,
    cols: 16,
    spellcheck: false,
  });
  vars.setAttribute('aria-label', 'template variables, NAME=value a line');
  const message = element('span', { className: 'message' });
  const adopt = async () => {
    try {
      const body = { profile: profile.value.trim() };
      if (!body.profile) throw new Error('name the profile to adopt it as');
      if (hostname.value.trim()) body.hostname = hostname.value.trim();
      const parsed = parseVars(vars.value);
      if (Object.keys(parsed).length > 0) body.vars = parsed;
      showMessage(message, 'sending', 'adding…');
      const { warnings = [] } = await operatorCall(`/api/v1/machines/${encodeURIComponent(mac)}/adopt`, body);
      showMessage(message, 'done', 'added to the config');
      if (warnings.length === 0) refreshMachine(mac);
      else {
        // This row leaves the table once the server lists the machine: its panel stays, and reads it.
        selectMachine(mac);
        const count = warnings.length === 1 ? 'a warning' : `${warnings.length} warnings`;
        showMessage(
          $('detail-message'),
          'warning',
          `added to the config, with ${count}:\n${warnings.join('\n')}`,
        );
        void loadTimeline(mac);
      }
    } catch (error) {
      showMessage(message, 'error', error.message);
    }
  };
  // Not a <form>: Chromium's cost of adding one grows with the forms already in the page, and with
  // one per row 5,000 machines not in the config took 20–35 s to appear. Enter still adopts.
  const form = element(
    'div',
    {
      className: 'adopt',
      onkeydown: (pressed) => {
        if (pressed.key !== 'Enter' || pressed.target.tagName !== 'INPUT') return;
        pressed.preventDefault();
        void adopt();
      },
    },
    profile,
    hostname,
    vars,
    element('button', { type: 'button', onclick: () => void adopt() }, 'Adopt'),
    message,
  );
  return element(
    'tr',
    { dataset: { mac } },
    element('td', { className: 'mac' }, mac),
    element('td'),
    element('td', { className: 'age', dataset: { suffix: ' ago' } }),
    element('td', {}, form),
  );
}

function renderDiscoveredRow(mac) {
  const machine = machines.get(mac);
  let row = discoveredRows.get(mac);
  // Only once the server said it is not in the config: a machine just seen is not known to be either.
  if (machine?.listed !== false) {
    if (row) {
      removeSorted(discoveredOrder, mac, row);
      discoveredRows.delete(mac);
      $('none-discovered').hidden = discoveredRows.size > 0;
    }
    return;
  }
  if (!row) {
    row = discoveredRow(mac);
    insertSorted($('discovered'), discoveredOrder, discoveredRows, mac, row);
    discoveredRows.set(mac, row);
    $('none-discovered').hidden = true;
  }
  setCell(row.cells[1], hardware(machine));
  setAge(row.cells[2], machine.first_seen_at);
}

/** The text beside a profile's name among the suggestions: how it boots, how many machines use it. */
function profileLabel(profile) {
  const machines = profile.machines === 1 ? '1 machine' : `${profile.machines} machines`;
  return `${profile.kind}, ${machines}`;
}

/**
 * Fills the adopt forms' suggestions (#profiles) with the config's profiles, those no machine uses
 * yet too: the usual start of a rack is a profile written first and machines adopted into it. Read
 * with the fleet, which follows every config edit, so a removed or renamed profile goes.
 */
async function loadProfiles() {
  const response = await api('/api/v1/profiles');
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const options = (await response.json()).map((profile) => ({
    value: profile.name,
    label: profileLabel(profile),
  }));
  const list = $('profiles');
  const key = (option) => `${option.value}\n${option.label}`;
  // Left alone when unchanged: rebuilt, an open suggestion list would close under the operator.
  if (options.map(key).join('\n') === [...list.options].map(key).join('\n')) return;
  list.replaceChildren(...options.map((option) => element('option', option)));
}

// ---- the machine's record: merging what the server says with what the stream already applied ----

/** Fields no event changes: the config entry and the NIC/firmware facts. Always taken from a fetch. */
const INVENTORY_FIELDS = ['hostname', 'profile', 'listed', 'vendor', 'first_seen_at', 'arch', 'firmware'];
/** Fields events move: taken from a fetch only if it is at least as new as the stream for this MAC. */
const LIVE_FIELDS = [
  'state',
  'ip',
  'updated_at',
  'state_since',
  'installed_at',
  'boots_from_disk',
  'last_event',
  'boot',
];

/**
 * Folds a machine view from the API into the page. `throughId` is the answer's
 * x-rackboot-last-event-id: the view includes every event up to it (it is read from the server's
 * memory, so it may include newer ones too). If the stream already applied a newer event for this
 * MAC, the view may be older than the page: only its inventory fields are taken, and the live ones
 * fill gaps, so a late answer never rolls a state back.
 */
function mergeView(view, throughId) {
  let machine = machines.get(view.mac);
  if (!machine) {
    machine = { mac: view.mac, listed: false, state: null, appliedId: 0 };
    machines.set(view.mac, machine);
  }
  for (const field of INVENTORY_FIELDS) machine[field] = view[field] ?? null;
  const current = machine.appliedId <= throughId;
  for (const field of LIVE_FIELDS) {
    if (current || machine[field] === undefined || machine[field] === null) {
      machine[field] = view[field] ?? null;
    }
  }
  if (current) machine.appliedId = throughId;
  touch(view.mac);
  return machine;
}

function removeMachine(mac) {
  machines.delete(mac);
  if (selected === mac) selectMachine(undefined);
  touch(mac);
}

const toFetch = new Set();
let fetching = 0;

/**
 * Fetches one machine's view (a storm of new machines a few at a time) and merges it. A MAC the
 * server answers 404 for is not a machine: nothing is added.
 */
function refreshMachine(mac) {
  toFetch.add(mac);
  while (fetching < 4 && toFetch.size > 0) {
    const next = toFetch.values().next().value;
    toFetch.delete(next);
    fetching += 1;
    void fetchMachine(next)
      .catch(() => {})
      .finally(() => {
        fetching -= 1;
        if (toFetch.size > 0) refreshMachine(toFetch.values().next().value);
      });
  }
}

/** The answer's x-rackboot-last-event-id: the newest event the listed views include. */
function throughIdOf(response) {
  return Number(response.headers.get(LAST_EVENT_ID_HEADER) ?? 0);
}

/** Merges the machine's view from the server; its latest events, or undefined when it has none. */
async function fetchMachine(mac) {
  const response = await api(`/api/v1/machines/${encodeURIComponent(mac)}`);
  if (!response.ok) return undefined;
  const { events, ...view } = await response.json();
  mergeView(view, throughIdOf(response));
  return events;
}

// ---- the open machine ----

function selectMachine(mac) {
  const previous = selected;
  if (previous === mac) return;
  selected = mac;
  selectedEvents = [];
  selectedIds = new Set();
  showMessage($('detail-message'), undefined, '');
  if (previous) touch(previous);
  if (mac) touch(mac);
  detailDirty = true;
  timelineDirty = true;
  queueRender();
}

async function select(mac) {
  selectMachine(mac);
  await loadTimeline(mac);
}

async function loadTimeline(mac) {
  const events = await fetchMachine(mac).catch(() => undefined);
  if (!events || selected !== mac) return;
  // Live events that arrived while loading are kept; the overlap is merged by id.
  for (const event of events) addToTimeline(event);
  queueRender();
}

function addToTimeline(event) {
  if (selectedIds.has(event.id)) return;
  selectedIds.add(event.id);
  const last = selectedEvents.at(-1);
  selectedEvents.push(event);
  if (last && last.id > event.id) selectedEvents.sort((a, b) => a.id - b.id);
  if (selectedEvents.length > TIMELINE_LIMIT) {
    for (const dropped of selectedEvents.splice(0, selectedEvents.length - TIMELINE_LIMIT)) {
      selectedIds.delete(dropped.id);
    }
  }
  timelineDirty = true;
  detailDirty = true;
  queueRender();
}

function summary(event) {
  const detail = event.detail ?? {};
  switch (event.type) {
    case 'state-changed':
      return (
        `${detail.from ?? 'new'} → ${detail.to}` + (detail.from ? ` after ${duration(detail.inStateMs)}` : '')
      );
    case 'transition-rejected':
      return `rejected: ${detail.reason}`;
    case 'tftp-transfer':
      return `${detail.file ?? ''} ${detail.outcome ?? ''}${detail.bytes ? ` ${detail.bytes} bytes` : ''}`;
    case 'ipxe-script':
      return `script: ${detail.script ?? ''}`;
    case 'failed':
      return detail.message ?? '';
    default:
      return [detail.firmware, detail.arch, detail.bootFile, detail.reason, detail.message, detail.profile]
        .filter(Boolean)
        .join(' ');
  }
}

/**
 * What a reprovision leads to, as `rackboot reprovision` says it: a machine no longer in the config
 * is served at its next boot as unknown_machines says, which may be not at all.
 */
function afterReprovision(machine) {
  if (machine?.listed !== false) return 'it installs again at its next network boot';
  return machine.profile
    ? `not in the config: its next network boot gets profile ${machine.profile}, as unknown_machines says`
    : 'not in the config and unknown_machines is ignore: its next network boot gets no answer until it is adopted';
}

function renderDetail() {
  detailDirty = false;
  const machine = selected ? machines.get(selected) : undefined;
  $('detail').hidden = !machine;
  if (!machine) return;
  setText($('detail-title'), machine.hostname ? `${machine.hostname} (${machine.mac})` : machine.mac);
  $('detail-summary').replaceChildren(
    stateBadge(machine.state),
    ` ${machine.profile ?? 'no profile'} · ${hardware(machine) || 'hardware unknown'} · boot ${machine.boot ?? '–'}`,
  );
  // A machine whose installer wrote the disk but never reported boots that disk: stuck in
  // installing without this button.
  $('reprovision').hidden = !(
    machine.state === 'installed' ||
    machine.state === 'failed' ||
    machine.boots_from_disk
  );
  if (!timelineDirty) return;
  timelineDirty = false;

  const items = [];
  let boot;
  let previous;
  for (const event of selectedEvents) {
    if (event.correlationId !== boot) {
      boot = event.correlationId;
      previous = undefined;
      items.push(
        element(
          'li',
          { className: 'boot' },
          `boot ${boot ?? '(no boot)'} · ${new Date(event.time).toLocaleString()}`,
        ),
      );
    }
    const since = previous ? `+${duration(Date.parse(event.time) - Date.parse(previous.time))}` : '';
    previous = event;
    items.push(
      element(
        'li',
        {
          dataset: { id: String(event.id), type: event.type, source: event.source },
          className: event.type === 'state-changed' ? 'stage' : '',
        },
        element(
          'time',
          { dateTime: event.time },
          new Date(event.time).toLocaleTimeString([], { hour12: false }),
        ),
        element('span', { className: 'delta' }, since),
        element('span', { className: 'source' }, event.source),
        element('span', { className: 'type' }, event.type),
        element('span', { className: 'summary' }, summary(event)),
      ),
    );
  }
  $('timeline').replaceChildren(...items);
}

// ---- the stream ----

/**
 * Folds one streamed event into its machine. Only machines the server has a record of get a row:
 * a machine is created by its first network boot, which always records a `state-changed` for it; an
 * adopt makes a listed machine of any MAC, so the server is asked. Other events for an unknown MAC
 * (a plain DHCP client, an operator call on a MAC never seen) are history only, as on the server.
 */
const BOOT_TARGET_EVENTS = new Set(['disk-written', 'installed', 'reprovision']);

function apply(event) {
  if (!event.mac) return;
  const machine = machines.get(event.mac);
  if (!machine) {
    if (event.type === 'state-changed') {
      machines.set(event.mac, { mac: event.mac, listed: undefined, state: null, appliedId: 0 });
      // Its arch, vendor, config entry and the event before (which created it) come from the server.
      refreshMachine(event.mac);
      apply(event);
    } else if (event.type === 'adopt') {
      refreshMachine(event.mac);
    }
    return;
  }
  if (event.mac === selected) addToTimeline(event);
  // Already in the record (a reconnect's replay, or a fetched view that included it).
  if (event.id <= machine.appliedId) return;
  // Listed and never seen: the server makes no record of a report, an operator call or a plain
  // DHCP client before its first network boot, whose state-changed then fetches the record.
  if (machine.state === null && event.type !== 'state-changed') return;
  machine.appliedId = event.id;
  if (event.source !== 'lifecycle') {
    machine.updated_at = event.time;
    machine.last_event = event.type;
    if (event.correlationId) machine.boot = event.correlationId;
    // As the server's record (lifecycle/states.ts addressAfter): an operator's address is not the
    // machine's, and a declined or released one no longer is.
    if (event.type === 'dhcp-decline' || event.type === 'dhcp-release') machine.ip = null;
    else if (event.ip && event.source !== 'operator') machine.ip = event.ip;
  }
  // Whether the machine now boots its disk is the server's call (a report can be rejected): asked.
  if (BOOT_TARGET_EVENTS.has(event.type)) refreshMachine(event.mac);
  if (event.type === 'state-changed') {
    // A listed machine's first boot while the page is open: its hardware is on the server only.
    if (machine.state === null || machine.arch == null) refreshMachine(event.mac);
    machine.state = event.detail.to;
    machine.state_since = event.time;
  } else if (event.type === 'adopt') {
    refreshMachine(event.mac);
  }
  touch(event.mac);
}

let resyncRunning = false;
/** undefined, 'again' or 'reset': what the running resync still owes. */
let resyncWanted;

/**
 * Reads the whole fleet again, after the stream skipped history (`history-gap`) or was reopened:
 * machines the page missed appear, and those the server no longer has go, unless the stream has
 * already applied a newer event for them than the answer includes. `reset`: the server's ids
 * started again (its state was wiped), so the ids the page holds mean nothing.
 */
async function resync(reset) {
  resyncWanted = reset || resyncWanted === 'reset' ? 'reset' : 'again';
  if (resyncRunning) return;
  resyncRunning = true;
  try {
    while (resyncWanted) {
      const resetNow = resyncWanted === 'reset';
      resyncWanted = undefined;
      try {
        await resyncOnce(resetNow);
      } catch {
        // The next gap or reopened stream tries again.
      }
    }
  } finally {
    resyncRunning = false;
  }
}

async function resyncOnce(reset) {
  const response = await api('/api/v1/machines');
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const throughId = throughIdOf(response);
  const list = await response.json();
  if (reset) {
    for (const machine of machines.values()) machine.appliedId = 0;
    selectedEvents = [];
    selectedIds = new Set();
    timelineDirty = true;
  }
  const listed = new Set();
  for (const view of list) {
    listed.add(view.mac);
    mergeView(view, throughId);
  }
  for (const [mac, machine] of machines) {
    if (!listed.has(mac) && machine.appliedId <= throughId) removeMachine(mac);
  }
  if (selected) await loadTimeline(selected);
  await loadProfiles();
}

let stream;
let retryDelay = RETRY_MIN_MS;

function showStatus(status, text) {
  const node = $('connection');
  node.dataset.status = status;
  setText(node, text);
}

/**
 * Opens the stream after event `after`. EventSource reconnects by itself after a dropped
 * connection (resuming with Last-Event-ID), but gives up for good on an answer that is not a
 * stream (a proxy's 502 while the server restarts): then a new one is opened after a back-off,
 * from the last id seen (`?after=`: a new EventSource cannot send Last-Event-ID). Either way the
 * fleet is read again once the stream is open: the replay brings the missed machine events, but a
 * `config-changed` sent while it was down (a server restarted on an edited file) is never replayed.
 */
function connect(after, resyncWhenOpen) {
  const source = new EventSource(`/api/v1/events?after=${encodeURIComponent(after)}`);
  stream = source;
  let pendingResync = resyncWhenOpen;
  source.onopen = () => {
    retryDelay = RETRY_MIN_MS;
    showStatus('live', 'live');
    if (pendingResync) {
      pendingResync = false;
      void resync(false);
    }
  };
  source.onerror = () => {
    if (source !== stream) return;
    pendingResync = true;
    if (source.readyState !== EventSource.CLOSED) {
      showStatus('reconnecting', 'reconnecting…');
      return;
    }
    source.close();
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    showStatus('disconnected', `disconnected, retrying in ${Math.round(delay / 1000)} s`);
    setTimeout(() => {
      if (source !== stream) return;
      showStatus('reconnecting', 'reconnecting…');
      connect(lastEventId, true);
    }, delay);
  };
  source.onmessage = (message) => {
    if (message.lastEventId) lastEventId = message.lastEventId;
    apply(JSON.parse(message.data));
  };
  // The config was edited: hostnames, profiles and the listed machines may have changed.
  source.addEventListener('config-changed', () => void resync(false));
  // The server resumed after history it no longer has (pruned, or a wiped state directory): the
  // events in between are gone, so the fleet is read again.
  source.addEventListener('history-gap', (message) => {
    let gap = {};
    try {
      gap = JSON.parse(message.data);
    } catch {
      // Still a gap.
    }
    void resync(gap?.reason === 'reset');
  });
}

/** The first read of the fleet, retried with the stream's back-off while the server cannot answer. */
async function firstFleet() {
  for (let delay = RETRY_MIN_MS; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    try {
      const response = await api('/api/v1/machines');
      if (response.ok) return response;
    } catch {
      // Not reachable yet: retried below.
    }
    showStatus('disconnected', `server unreachable, retrying in ${Math.round(delay / 1000)} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function start() {
  buildFilters();
  const tokenInput = $('token');
  tokenInput.value = localStorage.getItem(TOKEN_KEY) ?? '';
  tokenInput.addEventListener('change', () => localStorage.setItem(TOKEN_KEY, tokenInput.value.trim()));
  // One listener for every row, present and future.
  $('machines').addEventListener('click', (clicked) => {
    const row = clicked.target.closest('tr[data-mac]');
    if (row) void select(row.dataset.mac);
  });
  $('machines').addEventListener('keydown', (pressed) => {
    const row = pressed.target.closest('tr[data-mac]');
    if (!row || (pressed.key !== 'Enter' && pressed.key !== ' ')) return;
    pressed.preventDefault();
    void select(row.dataset.mac);
  });
  const closeDetail = () => {
    const mac = selected;
    selectMachine(undefined);
    // Back where the keyboard was, not at the top of the page.
    if (mac) fleetRows.get(mac)?.focus();
  };
  $('close-detail').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (pressed) => {
    if (pressed.key === 'Escape' && selected) closeDetail();
  });
  $('reprovision').addEventListener('click', async () => {
    const mac = selected;
    // It wipes the machine's disk at its next network boot: one click must not do it.
    const name = machines.get(mac)?.hostname;
    if (
      !window.confirm(
        `Reinstall ${name ? `${name} (${mac})` : mac} at its next network boot? Its disk is overwritten.`,
      )
    )
      return;
    try {
      await operatorCall(`/api/v1/machines/${encodeURIComponent(mac)}/reprovision`);
      showMessage($('detail-message'), 'done', afterReprovision(machines.get(mac)));
    } catch (error) {
      showMessage($('detail-message'), 'error', error.message);
    }
  });
  const response = await firstFleet();
  const throughId = response.headers.get(LAST_EVENT_ID_HEADER) ?? '0';
  for (const view of await response.json()) mergeView(view, Number(throughId));
  render();
  // On failure the suggestions wait for the next read of the fleet (a config edit, a reopened stream).
  loadProfiles().catch(() => {});
  lastEventId = throughId;
  connect(throughId, false);
  // Ages tick without any event.
  setInterval(tickAges, 5000);
}

void start();
