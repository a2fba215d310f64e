// The Reprise console: plain JavaScript, no build step. It calls the same
// API as every other client, over Connect JSON on this origin, with the
// bearer token of this tab. Text from the server is only ever set as text
// (textContent), never parsed as HTML.
'use strict';

const TOKEN_KEY = 'reprise.token';
const PAGE_SIZE = 20;
const STATUSES = ['QUEUED', 'RUNNING', 'PAUSED', 'SUCCEEDED', 'FAILED', 'ABORTED', 'EXPIRED', 'REJECTED'];
const FINAL = new Set(['SUCCEEDED', 'FAILED', 'ABORTED', 'EXPIRED', 'REJECTED']);

// ---------------------------------------------------------------- helpers

const $ = (selector, root = document) => root.querySelector(selector);

/** An element: attributes (booleans, numbers and handlers such as onclick set as
 * properties) and children (strings become text nodes, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const short = (s, n = 8) => (s || '').slice(0, n);
const strip = (value, prefix) => (value || '').replace(prefix, '');
const status = (e) => strip(e.status, 'EXECUTION_STATUS_');
const stageStatus = (s) => strip(s.status, 'STAGE_STATUS_');
const workflowStatus = (w) => strip(w.status, 'WORKFLOW_STATUS_');
const badge = (text) => el('span', { class: `badge s-${text.toLowerCase()}`, text });
const when = (t) => (t ? new Date(t).toLocaleString() : '');

function duration(start, end) {
  if (!start) return '';
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function requestId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details || [];
  }
}

function headers(contentType) {
  const h = { 'Content-Type': contentType, 'Connect-Protocol-Version': '1' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

/** A unary call: `service` like `ExecutionService`, JSON in, JSON out. */
async function call(service, method, body = {}) {
  const response = await fetch(`/reprise.v1.${service}/${method}`, {
    method: 'POST',
    headers: headers('application/json'),
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let json = {};
  try { json = text ? JSON.parse(text) : {}; } catch (_) { json = { message: text }; }
  if (!response.ok) throw failure(json.code || 'unknown', json.message || response.statusText, json.details);
  return json;
}

function failure(code, message, details) {
  const error = new ApiError(code, message, details);
  if (code === 'unauthenticated') askForToken(message);
  return error;
}

/** A server stream (Connect, enveloped JSON): calls `onMessage` per message until it ends. */
async function stream(service, method, body, onMessage, signal) {
  const json = new TextEncoder().encode(JSON.stringify(body));
  const request = new Uint8Array(5 + json.length);
  new DataView(request.buffer).setUint32(1, json.length);
  request.set(json, 5);
  const response = await fetch(`/reprise.v1.${service}/${method}`, {
    method: 'POST', headers: headers('application/connect+json'), body: request, signal,
  });
  if (!response.ok || !response.body) throw failure('unavailable', `stream refused: HTTP ${response.status}`);
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + length) break;
      const flags = buffer[0];
      const message = JSON.parse(new TextDecoder().decode(buffer.subarray(5, 5 + length)));
      buffer = buffer.slice(5 + length);
      if (flags & 2) {
        if (message.error) throw failure(message.error.code, message.error.message, message.error.details);
        return;
      }
      onMessage(message);
    }
  }
}

// ------------------------------------------------------------ page state

/** What the current view runs in the background, stopped when it changes. */
let running = { abort: new AbortController(), timers: [] };

function stopBackground() {
  running.abort.abort();
  running.timers.forEach(clearInterval);
  running = { abort: new AbortController(), timers: [] };
  setLive('');
}

function every(ms, fn) { running.timers.push(setInterval(fn, ms)); }

/** A check that the view that called it is still the one shown: a page
 * whose awaits return after the reader moved on must not draw or start
 * timers over the new page. */
function current() {
  const mine = running;
  return () => mine === running;
}

function setLive(text) { $('#live').textContent = text; }

function showError(error) {
  const box = $('#error');
  if (!error) { box.hidden = true; box.textContent = ''; return; }
  box.hidden = false;
  box.textContent = error.code ? `${error.code}: ${error.message}` : String(error.message || error);
}

function askForToken(why) {
  $('#token-form').hidden = false;
  $('#token-why').textContent = why || 'This server needs a bearer token.';
  $('#token-input').focus();
}

const pipelines = new Map();
/** The pipeline (name, latest version), cached for the page's life. */
async function pipeline(id) {
  if (!pipelines.has(id)) {
    pipelines.set(id, call('PipelineService', 'GetPipeline', { pipelineId: id }).then((r) => r.pipeline).catch(() => null));
  }
  return pipelines.get(id);
}

// ------------------------------------------------------------ Deployments

const filters = { application: '', pipelineId: '', status: '' };
let pages = [''];

async function deployments(view) {
  const form = el('form', { id: 'filters', class: 'filters' },
    el('label', {}, 'Application ', el('input', { id: 'f-application', value: filters.application, size: 16 })),
    el('label', {}, 'Pipeline ', pipelineChoice()),
    el('label', {}, 'Status ', el('select', { id: 'f-status' },
      el('option', { value: '', text: 'any' }),
      STATUSES.map((s) => el('option', { value: s, text: s, selected: filters.status === s }))),
    ),
    el('button', { type: 'submit', text: 'Filter' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    filters.application = $('#f-application').value.trim();
    filters.pipelineId = $('#f-pipeline').value;
    filters.status = $('#f-status').value;
    pages = [''];
    render();
  });
  const table = el('table', { id: 'deployments' });
  const pager = el('div', { class: 'pager' });
  view.replaceChildren(el('h1', { text: 'Deployments' }),
    el('p', { class: 'hint', text: 'The latest execution of each chain, newest first. A resumed chain shows its attempt and a history button.' }),
    form, table, pager);

  const alive = current();
  const load = async () => {
    const request = { pageSize: PAGE_SIZE, pageToken: pages[pages.length - 1] };
    if (filters.application) request.application = filters.application;
    if (filters.pipelineId) request.pipelineId = filters.pipelineId;
    if (filters.status) request.status = `EXECUTION_STATUS_${filters.status}`;
    const page = await call('ExecutionService', 'ListExecutions', request);
    const rows = await Promise.all((page.executions || []).map(deploymentRow));
    if (!alive()) return;
    table.replaceChildren(
      el('thead', {}, el('tr', {}, ['Status', 'Application', 'Pipeline', 'Execution', 'Attempt', 'Created', 'Triggered by', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, text: 'No executions.' }))));
    pager.replaceChildren(
      el('button', { id: 'prev', type: 'button', text: '← Newer', disabled: pages.length < 2, onclick: () => { pages.pop(); render(); } }),
      el('span', { text: ` page ${pages.length} ` }),
      el('button', { id: 'next', type: 'button', text: 'Older →', disabled: !page.nextPageToken, onclick: () => { pages.push(page.nextPageToken); render(); } }));
    showError(null);
  };
  await load();
  if (!alive()) return;
  setLive('● live');
  every(2000, () => load().catch(showError));
}

/** The pipelines the caller may read (first 100), to filter by name. */
function pipelineChoice() {
  const select = el('select', { id: 'f-pipeline' }, el('option', { value: '', text: 'any' }));
  const chosen = filters.pipelineId ? el('option', { value: filters.pipelineId, text: short(filters.pipelineId), selected: true }) : null;
  if (chosen) select.append(chosen);
  call('PipelineService', 'ListPipelines', { pageSize: 100 }).then((page) => {
    for (const p of page.pipelines || []) {
      if (chosen && p.id === chosen.value) { chosen.textContent = `${p.application}/${p.name}`; continue; }
      select.append(el('option', { value: p.id, text: `${p.application}/${p.name}` }));
    }
  }).catch(() => {});
  return select;
}

async function deploymentRow(e) {
  const p = await pipeline(e.pipelineId);
  const attempt = e.attempt || 1;
  return el('tr', { 'data-execution-id': e.id, 'data-status': status(e) },
    el('td', {}, badge(status(e))),
    el('td', { text: e.application }),
    el('td', { text: p ? `${p.name} v${e.pipelineVersion}` : short(e.pipelineId) }),
    el('td', {}, el('a', { href: `#/executions/${e.id}`, class: 'execution-link', text: short(e.id, 13) })),
    el('td', { class: 'attempt' }, attempt > 1 ? el('span', { class: 'counter', text: `attempt ${attempt}`, title: `resumed ${e.resumeCount} time(s)` }) : '1'),
    el('td', { text: when(e.createTime) }),
    el('td', { text: e.triggeredBy }),
    el('td', {}, attempt > 1 ? el('a', { class: 'button history', href: `#/history/${e.id}`, text: 'History' }) : ''));
}

// ------------------------------------------------------------ Execution

const ACTIONS = {
  RESUME: 'Resume Pipeline', APPROVE: 'Approve', REJECT: 'Reject', PAUSE: 'Pause', CONTINUE: 'Continue', ABORT: 'Abort',
};

async function executionPage(view, id) {
  let latest = null;
  const alive = current();
  const draw = async () => {
    const [got, history] = await Promise.all([
      call('ExecutionService', 'GetExecution', { executionId: id }),
      call('ExecutionService', 'ListHistory', { executionId: id, pageSize: 100 }).catch(() => ({ entries: [] })),
    ]);
    latest = got;
    const attempts = new Map((history.entries || []).map((h) => [h.executionId, h.attempt]));
    const page = await renderExecution(got, attempts);
    if (alive()) view.replaceChildren(page);
    showError(null);
    return got.execution;
  };
  const e = await draw();
  if (FINAL.has(status(e)) || !alive()) return;
  // Live: each change the watch announces redraws the page (with output
  // tails, which the watch itself does not carry).
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; draw().catch(showError); }, 150);
  };
  setLive('● live');
  // Output arrives with heartbeats, which the watch does not announce:
  // while a workflow runs, its tail is read again every few seconds.
  every(3000, () => {
    const runs = latest && (latest.execution.stages || []).some((s) => (s.workflows || []).some((w) => workflowStatus(w) === 'RUNNING'));
    if (runs) draw().catch(showError);
  });
  const signal = running.abort.signal;
  const watch = () => stream('ExecutionService', 'WatchExecution', { executionId: id }, redraw, signal)
    .then(() => { if (!signal.aborted) { draw().catch(showError); setLive(''); } })
    .catch((error) => {
      if (signal.aborted) return;
      // A broken stream falls back to polling while the execution runs.
      every(2000, () => { if (!latest || !FINAL.has(status(latest.execution))) draw().catch(showError); });
      if (error.code !== 'unavailable') showError(error);
    });
  watch();
}

async function renderExecution(got, attempts) {
  const e = got.execution;
  const allowed = new Map((got.allowedActions || []).map((a) => [strip(a.action, 'EXECUTION_ACTION_'), a]));
  const p = await pipeline(e.pipelineId);
  const newer = p && Number(p.latestVersion || p.version) > Number(e.pipelineVersion);

  const facts = el('dl', { class: 'facts' },
    el('dt', { text: 'Pipeline' }), el('dd', {}, p ? p.name : e.pipelineId, ` — pinned to version ${e.pipelineVersion}`,
      newer ? el('span', { class: 'newer', text: ` (a newer version ${p.latestVersion} exists; a resume keeps version ${e.pipelineVersion})` }) : ' (the latest)'),
    el('dt', { text: 'Application' }), el('dd', { text: e.application }),
    el('dt', { text: 'Attempt' }), el('dd', {}, `${e.attempt || 1}`, e.resumedFrom ? [' — resumed from stage ', el('b', { text: e.resumedFrom.stageName }), ' of ',
      el('a', { href: `#/executions/${e.resumedFrom.executionId}`, text: `attempt ${attempts.get(e.resumedFrom.executionId) || short(e.resumedFrom.executionId)}` }),
      e.resumedFrom.reason ? ` (“${e.resumedFrom.reason}”)` : ''] : ''),
    el('dt', { text: 'Triggered by' }), el('dd', { text: `${e.triggeredBy} at ${when(e.createTime)}` }),
    el('dt', { text: 'Duration' }), el('dd', { text: duration(e.startTime, e.endTime) }),
    e.resumedByExecutionId ? [el('dt', { text: 'Resumed by' }), el('dd', {}, el('a', { id: 'resumed-by', href: `#/executions/${e.resumedByExecutionId}`, text: `attempt ${attempts.get(e.resumedByExecutionId) || short(e.resumedByExecutionId)}` }))] : '',
    el('dt', { text: 'Inputs' }), el('dd', { text: inputs(e) }));

  const why = e.statusMessage ? el('p', { id: 'why', class: `why s-${status(e).toLowerCase()}` },
    e.endStage ? `Ended at stage “${e.endStage.name}”: ` : '', e.statusMessage) : '';

  const bar = el('div', { id: 'actions', class: 'actions' });
  for (const [action, label] of Object.entries(ACTIONS)) {
    const a = allowed.get(action) || { allowed: false, message: 'not offered by this server' };
    const button = el('button', {
      type: 'button', 'data-action': action.toLowerCase(), text: label, disabled: !a.allowed,
      title: a.allowed ? '' : a.message,
    });
    button.addEventListener('click', () => act(action, got).catch(showError));
    bar.append(button);
  }
  bar.append(el('a', { class: 'button', id: 'history-open', href: `#/history/${e.id}`, text: 'History' }));
  const resume = allowed.get('RESUME');
  const reasons = el('div', { id: 'action-reasons', class: 'reasons' },
    resume && !resume.allowed ? el('p', { id: 'resume-why' }, el('b', { text: 'Resume is not available: ' }), resume.message) : '');

  return el('div', { class: 'execution', 'data-status': status(e) },
    el('h1', {}, 'Execution ', el('code', { text: e.id }), ' ', badge(status(e))),
    why, facts, bar, reasons,
    el('h2', { text: 'Stages' }),
    el('div', { id: 'stages' }, (e.stages || []).map((s) => renderStage(s, attempts))));
}

function inputs(e) {
  const parts = [];
  for (const [k, v] of Object.entries(e.variables || {})) parts.push(`${k}=${v}`);
  for (const [k, v] of Object.entries(e.artifacts || {})) parts.push(`artifact ${k}@${v}`);
  return parts.join(', ') || 'none';
}

function renderStage(s, attempts) {
  const st = stageStatus(s);
  const carried = s.carriedOver
    ? el('span', { class: 'carried', text: ` carried over from attempt ${attempts.get(s.carriedFromExecutionId) || short(s.carriedFromExecutionId)}` })
    : '';
  const env = s.environment ? `${s.environment.name} (${strip(s.environment.type, 'ENVIRONMENT_TYPE_')})` : '';
  const body = [];
  if (s.statusMessage) body.push(el('p', { class: 'stage-message', text: s.statusMessage }));
  if (s.approval && s.decidedBy) body.push(el('p', { text: `Decided by ${s.decidedBy}${s.decisionComment ? `: “${s.decisionComment}”` : ''}` }));
  if ((s.workflows || []).length) {
    body.push(el('table', { class: 'workflows' },
      el('thead', {}, el('tr', {}, ['Workflow', 'Status', 'Exit code', 'Attempts', 'Duration', 'Output (tail)'].map((h) => el('th', { text: h })))),
      el('tbody', {}, s.workflows.map(renderWorkflow))));
  } else if (s.workflowsOmitted) {
    body.push(el('p', { text: 'Too many workflows to show here; the API pages through them (ListWorkflows).' }));
  }
  return el('section', { class: `stage s-${st.toLowerCase()}`, 'data-stage': s.name, 'data-status': st },
    el('h3', {}, `#${s.index || 0} ${s.name} `, badge(st), ` ${duration(s.startTime, s.endTime)} `, el('small', { text: env }), carried),
    body);
}

function renderWorkflow(w) {
  const st = workflowStatus(w);
  const output = el('pre', { class: 'output', text: w.output || '' });
  const full = el('button', { type: 'button', class: 'small', text: 'Full output', hidden: !w.taskId || !w.outputCut });
  full.addEventListener('click', async () => {
    try {
      const page = await call('ExecutionService', 'GetTaskOutput', { taskId: w.taskId, maxChars: 65536 });
      output.textContent = page.output || '';
      full.hidden = true;
    } catch (error) { showError(error); }
  });
  return el('tr', { 'data-workflow': w.name, 'data-status': st },
    el('td', { text: w.name }),
    el('td', {}, badge(st), w.statusMessage ? el('div', { class: 'hint', text: w.statusMessage }) : ''),
    el('td', { class: 'exit-code', text: st === 'QUEUED' || st === 'RUNNING' ? '' : String(w.exitCode || 0) }),
    el('td', { text: String(w.attempt || 0) }),
    el('td', { text: duration(w.startTime, w.endTime) }),
    el('td', {}, output, full));
}

async function act(action, got) {
  const e = got.execution;
  const executionId = e.id;
  if (action === 'RESUME') return openResume(got);
  let request = { executionId };
  if (action === 'ABORT') {
    const reason = prompt('Abort: no new stage starts and running workflows are cancelled. Nothing is rolled back. Reason?');
    if (reason === null) return;
    request.reason = reason;
  } else if (action === 'APPROVE' || action === 'REJECT') {
    const comment = prompt(`${ACTIONS[action]} the waiting approval. Comment?`);
    if (comment === null) return;
    const waiting = (e.stages || []).find((s) => stageStatus(s) === 'WAITING_APPROVAL');
    request = { executionId, comment, stageName: waiting ? waiting.name : '' };
  }
  const method = { ABORT: 'Abort', PAUSE: 'Pause', CONTINUE: 'Continue', APPROVE: 'Approve', REJECT: 'Reject' }[action];
  await call('ExecutionService', method, request);
  render();
}

// ------------------------------------------------------------ Resume dialog

async function openResume(got) {
  const e = got.execution;
  const dialog = $('#resume-dialog');
  const stages = $('#resume-stages');
  const plan = $('#resume-plan');
  const confirm = $('#resume-confirm');
  confirm.disabled = true;
  plan.replaceChildren();
  $('#resume-reason').value = '';
  stages.replaceChildren(el('legend', { text: 'Resume from' }));
  let chosen = null;
  for (const s of e.stages || []) {
    const point = s.resumePoint || {};
    const input = el('input', { type: 'radio', name: 'from', value: String(s.index || 0), disabled: !point.resumable });
    input.addEventListener('change', async () => {
      chosen = s.index || 0;
      confirm.disabled = true;
      plan.replaceChildren(el('p', { text: 'Checking the plan…' }));
      try {
        const preview = await call('ExecutionService', 'Resume', { executionId: e.id, stageIndex: chosen, validateOnly: true });
        plan.replaceChildren(renderPlan(preview));
        confirm.disabled = false;
      } catch (error) {
        plan.replaceChildren(el('p', { class: 'error', text: `${error.code}: ${error.message}` }));
      }
    });
    stages.append(el('label', { class: `point ${point.resumable ? 'valid' : 'blocked'}`, 'data-stage': s.name },
      input, ` #${s.index || 0} ${s.name} `, badge(stageStatus(s)),
      point.resumable ? '' : el('span', { class: 'why', text: ` — ${point.message || strip(point.block, 'ERROR_REASON_')}` })));
  }
  confirm.onclick = async () => {
    if (chosen === null) return;
    confirm.disabled = true;
    try {
      const reason = $('#resume-reason').value.trim();
      const done = await call('ExecutionService', 'Resume', { executionId: e.id, stageIndex: chosen, requestId: requestId(), reason });
      dialog.close();
      location.hash = `#/executions/${done.execution.id}`;
    } catch (error) {
      plan.append(el('p', { class: 'error', text: `${error.code}: ${error.message}` }));
      confirm.disabled = false;
    }
  };
  dialog.showModal();
}

function renderPlan(preview) {
  const rows = (preview.plan || []).map((p) => {
    const action = strip(p.action, 'PLANNED_ACTION_');
    return el('tr', { class: `plan-${action.toLowerCase()}`, 'data-stage': p.name },
      el('td', { text: `#${p.index || 0}` }), el('td', { text: p.name }),
      el('td', {}, el('b', { text: action === 'CARRY_OVER' ? 'CARRY OVER' : 'RUN' })),
      el('td', { text: action === 'CARRY_OVER'
        ? `kept as ${strip(p.carriedStatus, 'STAGE_STATUS_')}`
        : `runs ${(p.workflows || []).join(', ') || '(approval or no workflows)'}` }));
  });
  const notes = [el('p', { text: `Runs pipeline version ${preview.pipelineVersion}${Number(preview.latestPipelineVersion) > Number(preview.pipelineVersion) ? ` (version ${preview.latestPipelineVersion} exists and is not picked up)` : ''}.` })];
  if ((preview.stagesNotRolledBack || []).length) {
    notes.push(el('p', { class: 'warning', id: 'not-rolled-back', text: `Not rolled back by the abort: ${preview.stagesNotRolledBack.join(', ')}; the resume redeploys over them.` }));
  }
  return el('div', {}, el('h3', { text: 'Plan' }), el('table', { id: 'plan' }, el('tbody', {}, rows)), notes);
}

// ------------------------------------------------------------ History

async function historyPage(view, id) {
  const alive = current();
  const load = async () => {
    const history = await call('ExecutionService', 'ListHistory', { executionId: id, pageSize: 50 });
    const entries = history.entries || [];
    const executions = await Promise.all(entries.slice(0, 20).map((h) =>
      call('ExecutionService', 'GetExecution', { executionId: h.executionId }).then((r) => r.execution).catch(() => null)));
    if (!alive()) return entries;
    view.replaceChildren(
      el('h1', {}, 'History of chain ', el('code', { text: short(history.chainId, 13) })),
      el('table', { id: 'history' },
        el('thead', {}, el('tr', {}, ['Attempt', 'Status', 'Started by', 'Created', 'Resumed from', 'Reason', 'Ended', ''].map((h) => el('th', { text: h })))),
        el('tbody', {}, entries.map((h) => el('tr', { 'data-attempt': h.attempt, 'data-status': strip(h.status, 'EXECUTION_STATUS_') },
          el('td', { text: String(h.attempt) }),
          el('td', {}, badge(strip(h.status, 'EXECUTION_STATUS_'))),
          el('td', { text: h.triggeredBy }),
          el('td', { text: when(h.createTime) }),
          el('td', { text: h.resumedFrom ? `stage ${h.resumedFrom.stageName}` : '(original)' }),
          el('td', { text: h.resumeReason || '' }),
          el('td', { text: [h.endStage ? `at ${h.endStage.name}` : '', h.statusMessage || ''].filter(Boolean).join(': ') }),
          el('td', {}, el('a', { href: `#/executions/${h.executionId}`, text: 'Open' })))))),
      history.nextPageToken ? el('p', { class: 'hint', text: 'Older attempts exist (the first 50 are shown).' }) : '',
      el('h2', { text: 'Timeline' }),
      el('p', { class: 'hint', text: 'Attempt by attempt, oldest first: which stages ran in that attempt and which were carried over from an earlier one.' }),
      timeline(entries.slice(0, 20), executions));
    showError(null);
    return entries;
  };
  const entries = await load();
  if (alive() && entries.some((h) => !FINAL.has(strip(h.status, 'EXECUTION_STATUS_')))) {
    setLive('● live');
    every(2000, () => load().catch(showError));
  }
}

function timeline(entries, executions) {
  const byAttempt = entries.map((h, i) => [h, executions[i]]).filter(([, e]) => e).reverse();
  const attemptOf = new Map(entries.map((h) => [h.executionId, h.attempt]));
  if (!byAttempt.length) return el('p', { text: 'No attempts to show.' });
  const names = (byAttempt[0][1].stages || []).map((s) => s.name);
  return el('table', { id: 'timeline', class: 'timeline' },
    el('thead', {}, el('tr', {}, el('th', { text: 'Attempt' }), names.map((n) => el('th', { text: n })))),
    el('tbody', {}, byAttempt.map(([h, e]) => el('tr', { 'data-attempt': h.attempt },
      el('th', {}, el('a', { href: `#/executions/${e.id}`, text: `#${h.attempt}` })),
      (e.stages || []).map((s) => {
        const st = stageStatus(s);
        const kind = s.carriedOver ? 'carried' : (st === 'PENDING' || st === 'NOT_RUN' ? 'idle' : 'ran');
        return el('td', { class: `cell ${kind} s-${st.toLowerCase()}`, 'data-stage': s.name, 'data-kind': kind,
          title: `${s.name}: ${st}${s.carriedOver ? ' (carried over)' : ''}` },
          kind === 'carried' ? `carried from #${attemptOf.get(s.carriedFromExecutionId) || '?'} · ${st}`
            : (kind === 'ran' ? `ran · ${st}` : st));
      })))),
    el('tfoot', {}, el('tr', {}, el('td', { colspan: names.length + 1 },
      el('span', { class: 'cell ran legend', text: 'ran in this attempt' }), ' ',
      el('span', { class: 'cell carried legend', text: 'carried over' }), ' ',
      el('span', { class: 'cell idle legend', text: 'not reached' })))));
}

// ------------------------------------------------------------ routing

async function render() {
  stopBackground();
  showError(null);
  const view = $('#view');
  const [, page, id] = (location.hash || '#/').split('/');
  try {
    if (page === 'executions' && id) await executionPage(view, decodeURIComponent(id));
    else if (page === 'history' && id) await historyPage(view, decodeURIComponent(id));
    else await deployments(view);
  } catch (error) {
    showError(error);
  }
}

function setup() {
  $('#token-button').addEventListener('click', () => { const f = $('#token-form'); f.hidden = !f.hidden; });
  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('#token-input').value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    pipelines.clear();
    $('#token-input').value = '';
    $('#token-form').hidden = true;
    render();
  });
  $('#token-clear').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); pipelines.clear(); render(); });
  window.addEventListener('hashchange', render);
  render();
}

setup();
