// The chronis dashboard: plain DOM code over the JSON API under /api/
// (docs/http.md). Every value from the server goes into the page through
// textContent or attributes, never as HTML: job names, ids and metadata
// are anyone's text.
'use strict';

const $ = (id) => document.getElementById(id);
const STATUSES = ['scheduled', 'pending', 'running', 'paused', 'failed', 'completed'];
const PAGE = 50;
const POLL_MS = 2000;
const TOKEN_KEY = 'chronis.token';

const state = {
  route: 'list',                // 'list', 'failed' or 'job'
  jobId: null,
  filters: { status: '', handler: '', name: '', meta: '' },
  offset: 0,
  scheduler: '',
  auth: 'checking',             // 'write', 'read_only', 'unauthorized', 'wrong_token', 'unknown', 'checking'
  busy: false,
  again: false,
  shown: null,                  // the list query whose rows are on screen
  errorFrom: null,              // what the error shown came from: 'action', 'load'
};

// ---- small DOM helpers ----

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function show(node, on) { node.hidden = !on; }

// ---- times ----

function ago(iso) {
  if (!iso) return '';
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.round(a / 60)}m`
    : a < 86400 ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

// A time as the reader's local time with "in 5m" / "3s ago"; the ISO text on hover.
function timeNode(iso) {
  if (!iso) return el('span', { class: 'muted', textContent: '—' });
  const d = new Date(iso);
  return el('time', { dateTime: iso, title: iso, textContent: `${d.toLocaleString()} (${ago(iso)})` });
}

function duration(sec) {
  if (typeof sec !== 'number') return '—';
  if (sec < 0.001) return '<1ms';
  if (sec < 1) return `${Math.round(sec * 1000)}ms`;
  if (sec < 60) return `${sec.toFixed(1)}s`;
  return `${Math.floor(sec / 60)}m${Math.round(sec % 60)}s`;
}

// ---- the API ----

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

async function api(method, path, params) {
  const url = new URL('/api' + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== '' && v !== undefined) url.searchParams.set(k, v);
  if (state.scheduler) url.searchParams.set('scheduler', state.scheduler);
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = 'Bearer ' + token();
  const res = await fetch(url, { method, headers, cache: 'no-store', credentials: 'omit' });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON: the status says it */ }
  if (!res.ok) {
    const err = (body && body.error) || {};
    const e = new Error(err.message || err.code || `${res.status} ${res.statusText}`);
    e.status = res.status;
    e.code = err.code;
    throw e;
  }
  return body;
}

// Shows an error, or clears it. A failed action's error stays until the
// next action (the refresh after it must not hide it); a failed load's
// until the next load.
function showError(e, fromAction) {
  if (!e && !fromAction && state.errorFrom === 'action') return;
  state.errorFrom = e ? (fromAction ? 'action' : 'load') : null;
  $('error').textContent = e ? `Error: ${e.message}` : '';
  show($('error'), !!e);
}

// Whether this page may change jobs: /api/access says, and the server
// refuses a wrong token itself (401) before the API sees it.
async function probeAuth() {
  try {
    const a = await api('GET', '/access');
    state.auth = a.can_write ? 'write' : a.read_only ? 'read_only' : 'unauthorized';
  } catch (e) {
    state.auth = e.status === 401 ? (token() ? 'wrong_token' : 'unauthorized') : 'unknown';
  }
  renderAuth();
}

const AUTH_TEXT = {
  read_only: 'Read-only: this server has no access token configured (--http-token), so jobs cannot be changed from here.',
  unauthorized: 'Enter the access token in the Token field to pause, resume, run, retry or delete jobs.',
  wrong_token: 'The server refused this token: enter the right one, or clear the field to read only.',
  unknown: 'The server does not answer: actions are off until it does.',
};

function canWrite() { return state.auth === 'write'; }

function renderAuth() {
  const text = AUTH_TEXT[state.auth] || '';
  $('auth').textContent = text;
  show($('auth'), !!text);
  for (const b of document.querySelectorAll('button.act')) {
    b.disabled = !canWrite();
    b.title = text;
  }
}

// Runs an action, then refreshes what is shown.
async function act(method, path, params) {
  try {
    const r = await api(method, path, params);
    showError(null, true);
    return r;
  } catch (e) {
    if (e.status === 401 || e.status === 403) await probeAuth();
    showError(e, true);
    return null;
  } finally {
    await refresh();
  }
}

function confirmDelete(id) {
  const d = $('confirm');
  $('confirm-text').textContent = `Delete job "${id}"? Its schedule is removed for good.`;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true }));
}

const jobPath = (id) => '/jobs/' + encodeURIComponent(id);

// The action buttons that apply to a job in its status.
function actionButtons(job, all) {
  const id = job.job_id;
  const b = (label, fn, cls) => el('button', { type: 'button', class: 'act ' + (cls || ''), textContent: label, onclick: fn });
  const out = [];
  if (job.status === 'scheduled' || job.status === 'pending') out.push(b('Pause', () => act('POST', jobPath(id) + '/pause')));
  if (job.status === 'paused') out.push(b('Resume', () => act('POST', jobPath(id) + '/resume')));
  if (job.status === 'failed') out.push(b('Retry', () => act('POST', jobPath(id) + '/retry')));
  if (all) {
    if (job.status !== 'running') out.push(b('Run now', () => act('POST', jobPath(id) + '/run')));
    out.push(b('Delete', async () => {
      if (!(await confirmDelete(id))) return;
      if (await act('DELETE', jobPath(id))) location.hash = '#/';
    }, 'danger'));
  }
  return out;
}

function badge(status) { return el('span', { class: 'badge s-' + status, textContent: status }); }

// ---- the list ----

function listParams() {
  const f = state.filters;
  const p = { limit: PAGE, offset: state.offset, handler: f.handler, name: f.name };
  p.status = state.route === 'failed' ? 'failed' : f.status;
  const m = f.meta.match(/^\s*([^=\s]+)\s*=\s*(.*?)\s*$/);
  if (m) p['meta.' + m[1]] = m[2];
  return p;
}

function renderCounts(stats) {
  const by = (stats.jobs && stats.jobs.by_status) || {};
  const cur = state.route === 'failed' ? 'failed' : state.filters.status;
  const box = $('counts');
  box.replaceChildren(...['', ...STATUSES].map((s) => el('button', {
    type: 'button', class: 'count' + (s === cur ? ' on' : '') + (s ? ' s-' + s : ''),
    onclick: () => { setFilters({ ...state.filters, status: s === cur ? '' : s }, s === 'failed' ? 'failed' : 'list'); },
  }, el('strong', { textContent: String(s ? by[s] || 0 : (stats.jobs && stats.jobs.total) || 0) }), el('span', { textContent: s || 'all' }))));
}

// A table cell; on a phone its label shows before its one block of content.
function cell(label, ...content) { return el('td', { data: { label } }, el('div', {}, ...content)); }

function renderRows(data) {
  const rows = data.jobs.map((job) => el('tr', { data: { id: job.job_id } },
    cell('Job', el('a', { href: '#' + jobPath(job.job_id), textContent: job.name || job.job_id }),
      el('div', { class: 'muted small', textContent: job.job_id })),
    cell('Status', badge(job.status)),
    cell('Handler', el('code', { textContent: job.func_name || '' })),
    cell('Schedule', job.trigger_text || job.trigger_type || ''),
    cell('Next run', timeNode(job.next_run_time)),
    cell('Last run', job.last_outcome ? el('span', { class: 'o-' + job.last_outcome, textContent: job.last_outcome + ' ' }) : '',
      job.last_run_at ? el('span', { class: 'muted small', textContent: ago(job.last_run_at) }) : ''),
    cell('', el('div', { class: 'actions' }, ...actionButtons(job, false)))));
  $('rows').replaceChildren(...rows);
  show($('empty'), rows.length === 0);
  const end = data.offset + data.jobs.length;
  $('range').textContent = data.total ? `${data.offset + 1}–${end} of ${data.total}` : '';
  $('prev').disabled = data.offset <= 0;
  $('next').disabled = end >= data.total;
  if (state.route === 'failed') $('failed-text').textContent = `${data.total} failed job${data.total === 1 ? '' : 's'} match.`;
  $('retry-all').hidden = state.route !== 'failed' || !data.total;
}

async function loadList() {
  const params = listParams();
  const [stats, data] = await Promise.all([api('GET', '/stats'), api('GET', '/jobs', params)]);
  // The route or the filters changed meanwhile: the next load shows them.
  if (state.route === 'job' || JSON.stringify(listParams()) !== JSON.stringify(params)) return;
  renderCounts(stats);
  renderRows(data);
  state.shown = JSON.stringify(params);
}

// ---- one job ----

function field(dl, name, value) {
  if (value === undefined || value === null || value === '') return;
  dl.append(el('dt', { textContent: name }), el('dd', {}, value));
}

function json(v) { return el('pre', { textContent: JSON.stringify(v, null, 2) }); }

function renderJob(data) {
  const job = data.job;
  document.title = `${job.name || job.job_id} · chronis`;
  $('j-name').textContent = job.name || job.job_id;
  $('j-id').textContent = job.job_id;
  $('j-status').replaceWith(Object.assign(badge(job.status), { id: 'j-status' }));
  $('j-actions').replaceChildren(...actionButtons(job, true));
  const p = job.progress;
  show($('j-progress'), !!p);
  if (p) {
    const n = typeof p.value === 'number' ? p.value : null;
    if (n === null) $('j-bar').removeAttribute('value'); else $('j-bar').value = Math.max(0, Math.min(100, n));
    $('j-ptext').textContent = [n === null ? p.value : `${n}%`, p.message].filter((x) => x !== undefined && x !== '').join(' — ');
  }
  const e = job.last_error;
  show($('j-error'), !!e);
  if (e) {
    $('j-etime').replaceChildren(timeNode(e.at), ` · attempt ${e.attempt || '?'} · ${e.code || ''}`);
    $('j-emsg').textContent = e.message || '';
  }
  const dl = $('j-fields');
  dl.replaceChildren();
  field(dl, 'Handler', el('code', { textContent: job.func_name || '' }));
  field(dl, 'Schedule', job.trigger_text || job.trigger_type);
  field(dl, 'Time zone', job.timezone);
  field(dl, 'Next run', job.next_run_time ? timeNode(job.next_run_time) : null);
  field(dl, 'Last run', job.last_run_at ? el('span', {}, timeNode(job.last_run_at), ' ',
    el('span', { class: 'o-' + job.last_outcome, textContent: job.last_outcome || '' })) : null);
  field(dl, 'Priority', String(job.priority ?? ''));
  field(dl, 'Retries', `${job.retry_count || 0} of ${job.max_retries || 0} used`);
  field(dl, 'Failures', job.failure_count ? `${job.failure_count} in all, ${job.consecutive_failures || 0} in a row` : null);
  if (job.timeout) field(dl, 'Timeout', `${job.timeout}s`);
  if (job.metadata && Object.keys(job.metadata).length) {
    field(dl, 'Metadata', el('ul', { class: 'meta' }, ...Object.entries(job.metadata).map(([k, v]) =>
      el('li', {}, el('code', { textContent: k }), ' = ', typeof v === 'string' ? v : JSON.stringify(v)))));
  }
  if (job.args && job.args.length) field(dl, 'Args', json(job.args));
  if (job.kwargs && Object.keys(job.kwargs).length) field(dl, 'Kwargs', json(job.kwargs));
  field(dl, 'Created', timeNode(job.created_at));
  field(dl, 'Updated', timeNode(job.updated_at));
  const next = data.next_runs || [];
  $('j-next').replaceChildren(...(next.length ? next.map((t) => el('li', {}, timeNode(t)))
    : [el('li', { class: 'muted none', textContent: 'none known' })]));
  const runs = data.runs || [];
  $('j-runs').replaceChildren(...runs.map((r) => el('tr', {},
    cell('Started', timeNode(r.started_at)),
    cell('Outcome', el('span', { class: 'o-' + r.outcome, textContent: r.outcome })),
    cell('Duration', duration(r.duration)),
    cell('Attempt', String(r.attempt ?? '')),
    cell('Error', r.error_message ? el('span', { class: 'err', textContent: r.error_message }) : ''))));
  $('j-noruns').textContent = data.no_history ? `No run history: ${data.no_history}` : 'No runs recorded.';
  show($('j-noruns'), runs.length === 0);
}

async function loadJob() {
  const id = state.jobId;
  try {
    const data = await api('GET', jobPath(id));
    if (state.route === 'job' && state.jobId === id) renderJob(data);
  } catch (e) {
    if (state.jobId !== id) return;
    if (e.status !== 404) throw e;
    clearJob('No such job');
  }
}

// Empties the job page but for its title.
function clearJob(title) {
  $('j-name').textContent = title;
  $('j-id').textContent = state.jobId;
  $('j-status').textContent = '';
  for (const x of ['j-actions', 'j-fields', 'j-next', 'j-runs']) $(x).replaceChildren();
  for (const x of ['j-progress', 'j-error', 'j-noruns']) show($(x), false);
}

// ---- schedulers ----

async function loadSchedulers() {
  const data = await api('GET', '/schedulers');
  const list = data.schedulers || [];
  const cur = list.find((s) => String(s.index) === state.scheduler) || list[0];
  $('node').textContent = cur ? `${cur.node_id} · ${cur.state}` : '';
  const sel = $('scheduler');
  show(sel, list.length > 1);
  if (list.length > 1 && sel.options.length !== list.length) {
    sel.replaceChildren(...list.map((s) => el('option', { value: String(s.index), textContent: `${s.index}: ${s.node_id}` })));
    sel.value = state.scheduler || '1';
  }
}

// ---- routing, refresh ----

// The route and the filters live in the hash (#/?status=failed&meta=tenant%3Dacme,
// #/failed, #/jobs/ID), so that a reload or a shared link shows the same page.
function parseHash() {
  const h = location.hash.replace(/^#/, '') || '/';
  const [path, query] = h.split('?');
  const q = new URLSearchParams(query || '');
  const m = path.match(/^\/jobs\/(.+)$/);
  state.route = m ? 'job' : path === '/failed' ? 'failed' : 'list';
  state.jobId = m ? decodeURIComponent(m[1]) : null;
  state.filters = { status: q.get('status') || '', handler: q.get('handler') || '', name: q.get('name') || '', meta: q.get('meta') || '' };
  state.offset = Math.max(0, parseInt(q.get('offset') || '0', 10) || 0);
}

function setFilters(filters, route) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v && !(route === 'failed' && k === 'status')) q.set(k, v);
  if (state.offset && route === state.route) q.set('offset', state.offset);
  const qs = q.toString();
  location.hash = (route === 'failed' ? '#/failed' : '#/') + (qs ? '?' + qs : '');
}

function fillFilterForm() {
  const f = state.filters;
  $('f-status').value = state.route === 'failed' ? 'failed' : f.status;
  $('f-status').disabled = state.route === 'failed';
  $('f-handler').value = f.handler;
  $('f-name').value = f.name;
  $('f-meta').value = f.meta;
}

// One load at a time: a refresh asked for during one (a click, a route
// change) runs once it ends, so what is shown is never older than the ask.
async function refresh() {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try {
    do {
      state.again = false;
      try {
        if (state.route === 'job') await loadJob(); else await loadList();
        // The server answers again: ask once more what it allows.
        if (state.auth === 'unknown') await probeAuth();
        renderAuth();
        showError(null);
        $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      } catch (e) {
        showError(e);
      }
    } while (state.again);
  } finally {
    state.busy = false;
  }
}

function route() {
  parseHash();
  const list = state.route !== 'job';
  show($('list-view'), list);
  show($('job-view'), !list);
  if (!list && $('job-view').dataset.id !== state.jobId) {
    // Another job: nothing of the last one stays on screen while it loads.
    $('job-view').dataset.id = state.jobId;
    clearJob(state.jobId);
  }
  show($('failed-bar'), state.route === 'failed');
  $('nav-jobs').classList.toggle('on', state.route === 'list');
  $('nav-failed').classList.toggle('on', state.route === 'failed');
  if (list && JSON.stringify(listParams()) !== state.shown) {
    // Other filters: no row of the last ones stays on screen while they load.
    $('rows').replaceChildren();
    $('range').textContent = '';
    show($('empty'), false);
    state.shown = null;
  }
  if (list) {
    document.title = state.route === 'failed' ? 'Failed jobs · chronis' : 'chronis';
    fillFilterForm();
  }
  refresh();
}

function readFilterForm() {
  return { status: $('f-status').value, handler: $('f-handler').value.trim(), name: $('f-name').value.trim(), meta: $('f-meta').value.trim() };
}

function init() {
  $('token').value = token();
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    probeAuth().then(refresh);
  });
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.offset = 0;
    const f = readFilterForm();
    setFilters(f, state.route);
  });
  $('f-status').addEventListener('change', () => $('filters').requestSubmit());
  $('f-clear').addEventListener('click', () => { state.offset = 0; setFilters({}, state.route); });
  $('prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); setFilters(state.filters, state.route); });
  $('next').addEventListener('click', () => { state.offset += PAGE; setFilters(state.filters, state.route); });
  $('retry-all').addEventListener('click', async () => {
    // The failed jobs the filters match (the route knows no status).
    const p = listParams();
    delete p.limit; delete p.offset; delete p.status;
    const r = await act('POST', '/jobs/retry', p);
    if (r) $('updated').textContent = `retried ${r.retried} job${r.retried === 1 ? '' : 's'}`;
  });
  $('scheduler').addEventListener('change', (ev) => { state.scheduler = ev.target.value; loadSchedulers().then(refresh); });
  $('live').addEventListener('change', () => { if ($('live').checked) refresh(); });
  window.addEventListener('hashchange', () => { showError(null, true); route(); });
  // Live refresh: every POLL_MS while the box is ticked and the tab is seen.
  setInterval(() => { if ($('live').checked && !document.hidden) refresh(); }, POLL_MS);
  loadSchedulers().catch(showError);
  probeAuth();
  route();
}

init();
