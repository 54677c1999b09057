// The rackboot dashboard: plain DOM, no build step, no CDN. Every value from the server (some of it
// sent by machines: DHCP vendor class, failure messages) is put in the page as text, never as HTML.

const STATES = ['discovered', 'booting', 'installing', 'installed', 'failed'];
const TOKEN_KEY = 'rackboot.apiToken';

const machines = new Map();
const profiles = new Set();
let filter = 'all';
let selected;
let selectedEvents = [];
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

function age(time) {
  if (!time) return '';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function duration(milliseconds) {
  if (milliseconds < 1000) return `${milliseconds} ms`;
  const seconds = milliseconds / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function hardware(machine) {
  return [machine.vendor, machine.arch, machine.firmware].filter(Boolean).join(' · ');
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
  if (!token) throw new Error('enter the operator token (server.api_token) first');
  const response = await api(path, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok)
    throw new Error(answer.error ?? answer.rejected ?? answer.message ?? `HTTP ${response.status}`);
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

function render() {
  renderFilters();
  renderFleet();
  renderDiscovered();
  renderDetail();
}

function renderFilters() {
  const counts = new Map([['all', machines.size]]);
  for (const machine of machines.values()) {
    const key = machine.state ?? 'unseen';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const buttons = ['all', ...STATES, 'unseen'].map((key) =>
    element(
      'button',
      {
        type: 'button',
        className: key === filter ? 'active' : '',
        dataset: { filter: key },
        onclick: () => {
          filter = key;
          render();
        },
      },
      `${key} (${counts.get(key) ?? 0})`,
    ),
  );
  $('filters').replaceChildren(...buttons);
}

function renderFleet() {
  const rows = [];
  for (const machine of machines.values()) {
    if (filter !== 'all' && (machine.state ?? 'unseen') !== filter) continue;
    rows.push(
      element(
        'tr',
        {
          dataset: { mac: machine.mac, state: machine.state ?? 'unseen' },
          className: machine.mac === selected ? 'selected' : '',
          onclick: () => select(machine.mac),
        },
        element('td', { className: 'mac' }, machine.mac),
        element('td', {}, machine.hostname ?? ''),
        element('td', {}, machine.profile ?? ''),
        element('td', {}, stateBadge(machine.state)),
        element('td', {}, machine.ip ?? ''),
        element('td', { className: 'hardware' }, hardware(machine)),
        element('td', {}, machine.last_event ?? ''),
        element(
          'td',
          { className: 'age', dataset: { time: machine.updated_at ?? '' } },
          age(machine.updated_at),
        ),
      ),
    );
  }
  $('machines').tBodies[0].replaceChildren(...rows);
  $('empty').hidden = machines.size > 0;
}

/**
 * One row per discovered MAC, kept across renders: every incoming event re-renders, and a rebuilt
 * form would drop what the operator is typing into it (and its focus) during a boot storm.
 */
const discoveredRows = new Map();

function discoveredRow(mac) {
  const profile = element('input', { placeholder: 'profile', required: true, size: 10 });
  profile.setAttribute('list', 'profiles');
  const hostname = element('input', { placeholder: 'hostname', size: 10 });
  const message = element('span', { className: 'message' });
  const form = element(
    'form',
    {
      onsubmit: async (submitted) => {
        submitted.preventDefault();
        try {
          const body = { profile: profile.value.trim() };
          if (hostname.value.trim()) body.hostname = hostname.value.trim();
          await operatorCall(`/api/v1/machines/${mac}/adopt`, body);
          message.textContent = 'added to the config';
          refreshMachine(mac);
        } catch (error) {
          message.textContent = error.message;
        }
      },
    },
    profile,
    hostname,
    element('button', { type: 'submit' }, 'Adopt'),
    message,
  );
  return element(
    'tr',
    { dataset: { mac } },
    element('td', { className: 'mac' }, mac),
    element('td'),
    element('td'),
    element('td', {}, form),
  );
}

function renderDiscovered() {
  const rows = [];
  for (const machine of machines.values()) {
    if (machine.listed) {
      discoveredRows.delete(machine.mac);
      continue;
    }
    let row = discoveredRows.get(machine.mac);
    if (!row) {
      row = discoveredRow(machine.mac);
      discoveredRows.set(machine.mac, row);
    }
    row.cells[1].textContent = hardware(machine);
    row.cells[2].textContent = machine.first_seen_at ? `${age(machine.first_seen_at)} ago` : '';
    rows.push(row);
  }
  const body = $('discovered').tBodies[0];
  // Moving a row out and back in would blur a focused input: only re-attach when the rows changed.
  if (rows.length !== body.rows.length || rows.some((row, index) => body.rows[index] !== row)) {
    body.replaceChildren(...rows);
  }
  $('none-discovered').hidden = rows.length > 0;
  const names = [...profiles].sort();
  const list = $('profiles');
  if (names.join('\n') !== [...list.options].map((option) => option.value).join('\n')) {
    list.replaceChildren(...names.map((name) => element('option', { value: name })));
  }
}

async function select(mac) {
  selected = mac;
  selectedEvents = [];
  $('detail-message').textContent = '';
  const response = await api(`/api/v1/machines/${mac}`);
  if (!response.ok) return;
  const view = await response.json();
  if (selected !== mac) return;
  const { events, ...machine } = view;
  machines.set(mac, machine);
  // Live events that arrived while loading are merged by id.
  const known = new Set(events.map((event) => event.id));
  selectedEvents = [...events, ...selectedEvents.filter((event) => !known.has(event.id))];
  render();
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

function renderDetail() {
  const machine = selected ? machines.get(selected) : undefined;
  $('detail').hidden = !machine;
  if (!machine) return;
  $('detail-title').textContent = machine.hostname ? `${machine.hostname} (${machine.mac})` : machine.mac;
  $('detail-summary').replaceChildren(
    stateBadge(machine.state),
    ` ${machine.profile ?? 'no profile'} · ${hardware(machine) || 'hardware unknown'} · boot ${machine.boot ?? '–'}`,
  );
  $('reprovision').hidden = !(machine.state === 'installed' || machine.state === 'failed');

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
          dataset: { type: event.type, source: event.source },
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

// What events do not say about a machine (its config entry, vendor) comes from the server; a boot
// storm of new machines is fetched a few at a time, and only those fields are merged, so a fetch
// that answers late never rolls back a state the stream already moved on.
const INVENTORY_FIELDS = ['hostname', 'profile', 'listed', 'vendor', 'first_seen_at', 'arch', 'firmware'];
const toFetch = new Set();
let fetching = 0;

function refreshMachine(mac) {
  toFetch.add(mac);
  while (fetching < 4 && toFetch.size > 0) {
    const next = toFetch.values().next().value;
    toFetch.delete(next);
    fetching += 1;
    void fetchInventoryFields(next).finally(() => {
      fetching -= 1;
      if (toFetch.size > 0) refreshMachine(toFetch.values().next().value);
    });
  }
}

async function fetchInventoryFields(mac) {
  const response = await api(`/api/v1/machines/${mac}`);
  if (!response.ok) return;
  const view = await response.json();
  const machine = machines.get(mac);
  if (!machine) return;
  for (const field of INVENTORY_FIELDS) machine[field] = view[field] ?? machine[field] ?? null;
  if (machine.profile) profiles.add(machine.profile);
  queueRender();
}

function apply(event) {
  if (!event.mac) return;
  let machine = machines.get(event.mac);
  if (!machine) {
    machine = { mac: event.mac, listed: false, state: null };
    machines.set(event.mac, machine);
    refreshMachine(event.mac);
  }
  if (event.source !== 'lifecycle') {
    machine.updated_at = event.time;
    machine.last_event = event.type;
    if (event.correlationId) machine.boot = event.correlationId;
    // An operator's address is not the machine's.
    if (event.ip && event.source !== 'operator') machine.ip = event.ip;
  }
  if (event.type === 'state-changed') {
    machine.state = event.detail.to;
    machine.state_since = event.time;
  } else if (event.type === 'adopt') {
    refreshMachine(event.mac);
  }
  if (event.mac === selected) selectedEvents.push(event);
  queueRender();
}

function connect(after) {
  const source = new EventSource(`/api/v1/events?after=${after}`);
  const status = $('connection');
  source.onopen = () => {
    status.dataset.status = 'live';
    status.textContent = 'live';
  };
  source.onerror = () => {
    // EventSource reconnects by itself and resumes with Last-Event-ID.
    status.dataset.status = 'reconnecting';
    status.textContent = 'reconnecting…';
  };
  source.onmessage = (message) => apply(JSON.parse(message.data));
}

async function start() {
  const tokenInput = $('token');
  tokenInput.value = localStorage.getItem(TOKEN_KEY) ?? '';
  tokenInput.addEventListener('change', () => localStorage.setItem(TOKEN_KEY, tokenInput.value.trim()));
  $('reprovision').addEventListener('click', async () => {
    const mac = selected;
    try {
      await operatorCall(`/api/v1/machines/${mac}/reprovision`);
      $('detail-message').textContent = 'it installs again at its next network boot';
    } catch (error) {
      $('detail-message').textContent = error.message;
    }
  });
  const response = await api('/api/v1/machines');
  for (const machine of await response.json()) {
    machines.set(machine.mac, machine);
    if (machine.profile) profiles.add(machine.profile);
  }
  render();
  connect(response.headers.get('x-rackboot-last-event-id') ?? '0');
  // Ages tick without any event.
  setInterval(() => {
    for (const cell of document.querySelectorAll('td.age')) cell.textContent = age(cell.dataset.time);
  }, 5000);
}

void start();
