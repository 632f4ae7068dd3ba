// The admin console: plain browser JavaScript over this server's /admin API, with the admin key the
// operator types (kept in this browser's localStorage, sent to this server only). Model states and
// queues refresh every two seconds; keys, accounts and usage after every change.

const $ = (selector) => document.querySelector(selector);
const ADMIN_STORAGE = 'infera.adminKey';
const API_STORAGE = 'infera.apiKey';
const keyInput = $('#admin-key');
keyInput.value = localStorage.getItem(ADMIN_STORAGE) ?? '';
keyInput.addEventListener('change', () => {
  localStorage.setItem(ADMIN_STORAGE, keyInput.value.trim());
  refreshAll();
});

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function row(...cells) {
  const tr = element('tr');
  for (const cell of cells) {
    const td = element('td');
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell ?? '';
    tr.append(td);
  }
  return tr;
}

function status(message, isError = false) {
  const node = $('#console-status');
  node.className = isError ? 'status error' : 'status';
  node.textContent = message;
}

async function admin(method, path, body) {
  const response = await fetch(`/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${keyInput.value.trim()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!response.ok) throw new Error(json?.error?.message ?? `${response.status} ${response.statusText}`);
  return json;
}

/** Bytes in binary units, as `infera ps` prints them. */
function size(bytes) {
  if (bytes === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let unit = 0;
  while (bytes >= 1024 && unit < units.length - 1) {
    bytes /= 1024;
    unit++;
  }
  return `${unit === 0 ? bytes : bytes.toFixed(bytes >= 100 ? 0 : bytes >= 10 ? 1 : 2)} ${units[unit]}`;
}

/** When a loaded model unloads: at a time, after its requests (keep-alive 0), or never (-1). */
function unloads(model) {
  if (model.state !== 'ready' || model.unloading) return model.unloading ? 'now' : '';
  if (model.expiresAt) return new Date(model.expiresAt).toLocaleTimeString();
  return model.keepAlive < 0 ? 'never' : 'after use';
}

async function refreshModels() {
  const { data } = await admin('GET', '/models');
  $('#models tbody').replaceChildren(
    ...data.map((model) => {
      const state = element('span', `state-${model.state}`, model.state);
      const cell = element('span');
      cell.append(state);
      if (model.state === 'loading') {
        const bar = element('progress');
        bar.max = 1;
        bar.value = model.progress;
        cell.append(' ', bar);
      }
      const note = model.state === 'failed' ? `${model.error ?? ''}${model.retryAt ? ` (retry after ${model.retryAt})` : ''}` : model.aliases.join(', ');
      const tr = row(model.id, model.type, cell, size(model.memory), unloads(model), String(model.inFlight), String(model.queued), note);
      tr.dataset.model = model.id;
      tr.dataset.state = model.state;
      if (model.memory !== undefined) tr.dataset.memory = String(model.memory);
      return tr;
    }),
  );
}

async function refreshDeployments() {
  const { data } = await admin('GET', '/deployments');
  // A server that routes nothing shows no empty section.
  $('#deployments-section').hidden = data.length === 0;
  $('#deployments tbody').replaceChildren(
    ...data.flatMap((model) =>
      model.deployments.map((deployment) => {
        const health = deployment.healthy ? (deployment.available ? 'healthy' : 'full') : 'unhealthy';
        const breaker = deployment.breaker === 'open' ? `ejected until ${new Date(deployment.ejectedUntil).toLocaleTimeString()}` : deployment.breaker;
        const cap = deployment.maxConcurrent ? ` / ${deployment.maxConcurrent}` : '';
        const tr = row(
          model.id,
          deployment.url ? `${deployment.name} (${deployment.url})` : deployment.name,
          element('span', deployment.healthy ? 'state-ready' : 'state-failed', health),
          element('span', deployment.breaker === 'closed' ? 'state-ready' : 'state-failed', breaker),
          `${deployment.inFlight}${cap}`,
          `${deployment.priority} / ${deployment.weight}`,
          `${deployment.requests} / ${deployment.failures} / ${deployment.ejections}`,
          deployment.lastError ?? '',
        );
        tr.dataset.model = model.id;
        tr.dataset.deployment = deployment.name;
        tr.dataset.healthy = String(deployment.healthy && deployment.breaker !== 'open');
        return tr;
      }),
    ),
  );
}

async function refreshKeys() {
  const { data } = await admin('GET', '/keys');
  $('#keys tbody').replaceChildren(
    ...data.map((key) => {
      const revoke = element('button', 'revoke', key.disabled ? 'revoked' : 'Revoke');
      revoke.type = 'button';
      revoke.disabled = key.disabled;
      revoke.addEventListener('click', () => act(() => admin('DELETE', `/keys/${encodeURIComponent(key.id)}`), `Revoked ${key.id}.`));
      const limits = key.limits ? Object.entries(key.limits).map(([name, value]) => `${name} ${value}`).join(', ') : '';
      const tr = row(key.id, key.name, key.accountId, key.prefix, key.models ? key.models.join(', ') : 'all', limits, key.expiresAt ?? 'never', revoke);
      tr.dataset.key = key.id;
      tr.dataset.disabled = String(key.disabled);
      return tr;
    }),
  );
}

async function refreshAccounts() {
  const { data } = await admin('GET', '/accounts');
  $('#accounts tbody').replaceChildren(
    ...data.map((account) => {
      const tr = row(account.id, account.name, account.balance);
      tr.dataset.account = account.id;
      tr.dataset.balance = account.balance;
      return tr;
    }),
  );
}

/** A horizontal bar per row, scaled to the largest value. */
function bars(list, rows, label, value) {
  const largest = Math.max(1, ...rows.map(value));
  list.replaceChildren(
    ...rows.map((entry) => {
      const item = element('li');
      item.dataset.group = entry.group;
      item.dataset.value = String(value(entry));
      const bar = element('div', 'bar');
      bar.style.width = `${Math.max(1, Math.round((value(entry) / largest) * 100))}%`;
      item.append(element('div', 'label', label(entry)), bar);
      return item;
    }),
  );
}

async function refreshUsage() {
  const byModel = (await admin('GET', '/usage?by=model&since=30d')).data.sort((a, b) => b.requests - a.requests);
  bars($('#usage-by-model'), byModel, (entry) => `${entry.group}: ${entry.requests} requests, cost ${entry.cost}`, (entry) => entry.requests);
  const byDay = (await admin('GET', '/usage?by=day&since=30d')).data.sort((a, b) => String(a.group).localeCompare(String(b.group)));
  const tokens = (entry) => (entry.promptTokens ?? 0) + (entry.completionTokens ?? 0);
  bars($('#usage-by-day'), byDay, (entry) => `${entry.group}: ${tokens(entry)} tokens, ${entry.requests} requests`, tokens);
}

async function refreshAll() {
  if (!keyInput.value.trim()) {
    status('Type the admin key (server.adminKey) to see this server.');
    return;
  }
  try {
    await Promise.all([refreshModels(), refreshDeployments(), refreshKeys(), refreshAccounts(), refreshUsage()]);
    status('');
    document.body.dataset.loaded = 'true';
  } catch (error) {
    status(error.message, true);
  }
}

async function act(action, done) {
  try {
    await action();
    status(done);
    await refreshAll();
  } catch (error) {
    status(error.message, true);
  }
}

$('#key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const body = { name: $('#key-name').value.trim() };
  const account = $('#key-account').value.trim();
  const models = $('#key-models').value.split(',').map((model) => model.trim()).filter(Boolean);
  const expires = $('#key-expires').value.trim();
  const limits = {};
  // Every dimension the platform enforces (src/platform/config.ts limitsSchema).
  for (const name of ['rpm', 'rph', 'rpd', 'tpm', 'tpd', 'ipm', 'ipd']) {
    const value = $(`#key-${name}`).value.trim();
    if (value !== '') limits[name] = Number(value);
  }
  if (account) body.account = account;
  if (models.length) body.models = models;
  if (Object.keys(limits).length) body.limits = limits;
  if (expires && expires !== 'never') body.expires_at = expires;
  act(async () => {
    const created = await admin('POST', '/keys', body);
    $('#new-key-secret').textContent = created.secret;
    $('#new-key').hidden = false;
  }, `Created ${body.name}.`);
});

$('#use-key').addEventListener('click', () => {
  localStorage.setItem(API_STORAGE, $('#new-key-secret').textContent);
  location.href = '/';
});

$('#account-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('#account-id').value.trim();
  act(() => admin('POST', '/accounts', { id }), `Created account ${id}.`);
});

$('#topup-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('#topup-account').value.trim();
  act(() => admin('POST', `/accounts/${encodeURIComponent(id)}/topup`, { amount: $('#topup-amount').value.trim() }), `Topped up ${id}.`);
});

refreshAll();
setInterval(() => {
  if (keyInput.value.trim()) Promise.all([refreshModels(), refreshDeployments()]).catch(() => undefined);
}, 2000);
