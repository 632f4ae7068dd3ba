// The playground: plain browser JavaScript against this server's own API (same origin, no CDN, no
// build step). The key lives in this browser's localStorage only and is sent to this server only;
// every request is shown as the equivalent curl, with $INFERA_API_KEY in place of the key.

const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = 'infera.apiKey';

const keyInput = $('#key');
keyInput.value = localStorage.getItem(KEY_STORAGE) ?? '';
keyInput.addEventListener('change', () => {
  localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
  loadModels();
});

function headers() {
  const key = keyInput.value.trim();
  return key ? { 'content-type': 'application/json', authorization: `Bearer ${key}` } : { 'content-type': 'application/json' };
}

/** The request as curl: the same URL and body, the key as an environment variable. */
function showCurl(method, path, body) {
  const lines = [`curl ${method === 'GET' ? '' : `-X ${method} `}${location.origin}${path}`, '  -H "Authorization: Bearer $INFERA_API_KEY"'];
  if (body !== undefined) {
    lines.push('  -H "Content-Type: application/json"');
    lines.push(`  -d '${JSON.stringify(body, null, 2).replaceAll("'", "'\\''")}'`);
  }
  $('#curl').textContent = lines.join(' \\\n');
}

/** An answer's error message (OpenAI's shape), or the status line. */
async function failure(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(method, path, body) {
  showCurl(method, path, body);
  const response = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw new Error(await failure(response));
  return response.json();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const number = (selector) => {
  const value = $(selector).value.trim();
  return value === '' ? undefined : Number(value);
};

// Tabs.
for (const button of document.querySelectorAll('nav [data-tab]'))
  button.addEventListener('click', () => {
    for (const other of document.querySelectorAll('nav [data-tab]')) other.setAttribute('aria-selected', String(other === button));
    for (const tab of document.querySelectorAll('.tab')) tab.hidden = tab.id !== `tab-${button.dataset.tab}`;
  });

// Model pickers: the canonical ids /v1/models lists, by SiliconFlow sub_type.
async function loadModels() {
  let models = [];
  try {
    models = (await api('GET', '/v1/models')).data.filter((model) => !model.infera?.alias_of);
  } catch (error) {
    $('#chat-log').replaceChildren(element('div', 'message error', `Could not list models: ${error.message}`));
  }
  for (const select of document.querySelectorAll('select[data-sub-type]')) {
    const kept = select.value;
    select.replaceChildren(
      ...models.filter((model) => model.sub_type === select.dataset.subType).map((model) => {
        const option = element('option', '', model.id);
        option.value = model.id;
        return option;
      }),
    );
    if (kept) select.value = kept;
  }
  document.body.dataset.models = String(models.length);
}

// Chat.
let messages = [];

$('#chat-clear').addEventListener('click', () => {
  messages = [];
  $('#chat-log').replaceChildren();
});

$('#chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('#chat-input').value;
  if (text.trim() === '') return;
  $('#chat-input').value = '';
  messages.push({ role: 'user', content: text });
  const bubble = element('div', 'message user');
  bubble.append(element('div', 'role', 'user'), element('div', 'content', text));
  $('#chat-log').append(bubble);
  complete();
});

function chatBody() {
  const body = { model: $('#chat-model').value, messages, stream: true, stream_options: { include_usage: true } };
  const temperature = number('#chat-temperature');
  const topP = number('#chat-top-p');
  const topK = number('#chat-top-k');
  const maxTokens = number('#chat-max-tokens');
  const seed = number('#chat-seed');
  const budget = number('#chat-budget');
  if (temperature !== undefined) body.temperature = temperature;
  if (topP !== undefined) body.top_p = topP;
  if (topK !== undefined) body.top_k = topK;
  if (seed !== undefined) body.seed = seed;
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  body.enable_thinking = $('#chat-thinking').checked;
  if (budget !== undefined) body.thinking_budget = budget;
  const tools = $('#chat-tools').value.trim();
  if (tools !== '') body.tools = JSON.parse(tools);
  return body;
}

/** Reads an SSE body: one callback per `data:` payload, until [DONE]. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf('\n\n');
      if (!event.startsWith('data: ')) continue;
      const data = event.slice(6);
      if (data === '[DONE]') return;
      onEvent(JSON.parse(data));
    }
  }
}

async function complete() {
  const bubble = element('div', 'message assistant');
  const reasoning = element('details', 'reasoning');
  reasoning.append(element('summary', '', 'Reasoning'));
  const thought = element('div', 'content');
  reasoning.append(thought);
  reasoning.hidden = true;
  const answer = element('div', 'content answer');
  const calls = element('div', 'tool-calls');
  const stats = element('div', 'stats');
  bubble.append(element('div', 'role', 'assistant'), reasoning, answer, calls, stats);
  $('#chat-log').append(bubble);
  $('#chat-send').disabled = true;
  const started = performance.now();
  let firstToken;
  let usage;
  let content = '';
  let thinking = '';
  const toolCalls = [];
  try {
    const body = chatBody();
    showCurl('POST', '/v1/chat/completions', body);
    const response = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await failure(response));
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta;
      if (!delta) return;
      if (firstToken === undefined && (delta.content || delta.reasoning_content || delta.tool_calls)) firstToken = performance.now();
      if (delta.reasoning_content) {
        thinking += delta.reasoning_content;
        thought.textContent = thinking;
        reasoning.hidden = false;
      }
      if (delta.content) {
        content += delta.content;
        answer.textContent = content;
      }
      for (const part of delta.tool_calls ?? []) {
        toolCalls[part.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } };
        const call = toolCalls[part.index];
        if (part.id) call.id = part.id;
        if (part.function?.name) call.function.name += part.function.name;
        call.function.arguments += part.function?.arguments ?? '';
      }
    });
    const message = { role: 'assistant', content: toolCalls.length && content === '' ? null : content };
    if (thinking) message.reasoning_content = thinking;
    if (toolCalls.length) message.tool_calls = toolCalls;
    messages.push(message);
    showToolCalls(calls, toolCalls);
    if (usage) {
      const seconds = (performance.now() - (firstToken ?? started)) / 1000;
      const rate = seconds > 0 ? usage.completion_tokens / seconds : 0;
      stats.textContent =
        `${usage.prompt_tokens} prompt · ${usage.completion_tokens} completion tokens` +
        ` (${usage.completion_tokens_details?.reasoning_tokens ?? 0} reasoning) · ${rate.toFixed(1)} tokens/s`;
      stats.dataset.completionTokens = String(usage.completion_tokens);
    }
    bubble.dataset.done = 'true';
  } catch (error) {
    bubble.append(element('div', 'error', error.message));
    bubble.dataset.done = 'error';
  } finally {
    $('#chat-send').disabled = false;
  }
}

/** Tool calls shown as calls, each with a box for its result; sending the results continues the chat. */
function showToolCalls(container, toolCalls) {
  if (!toolCalls.length) return;
  const boxes = toolCalls.map((call) => {
    const card = element('div', 'tool-call');
    card.dataset.name = call.function.name;
    card.append(element('div', 'call', `${call.function.name}(${call.function.arguments})`));
    const result = element('textarea', 'result');
    result.rows = 2;
    result.placeholder = 'The result to send back (JSON or text)';
    card.append(result);
    container.append(card);
    return { call, result };
  });
  const send = element('button', 'send-results', 'Send results');
  send.type = 'button';
  send.addEventListener('click', () => {
    send.disabled = true;
    for (const { call, result } of boxes) messages.push({ role: 'tool', tool_call_id: call.id, content: result.value });
    complete();
  });
  container.append(send);
}

// Images.
$('#images-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const status = $('#images-status');
  status.className = 'status';
  status.textContent = 'Generating…';
  try {
    const body = {
      model: $('#images-model').value,
      prompt: $('#images-prompt').value,
      image_size: $('#images-size').value.trim(),
      num_inference_steps: number('#images-steps'),
      batch_size: number('#images-batch'),
    };
    const negative = $('#images-negative').value.trim();
    if (negative) body.negative_prompt = negative;
    const guidance = number('#images-guidance');
    if (guidance !== undefined) body.guidance_scale = guidance;
    const seed = number('#images-seed');
    if (seed !== undefined) body.seed = seed;
    const file = $('#images-init').files[0];
    if (file) body.image = await dataUrl(file);
    const started = performance.now();
    const result = await api('POST', '/v1/images/generations', body);
    for (const [index, image] of result.images.entries()) {
      const figure = element('figure');
      const img = element('img');
      img.src = image.url;
      img.alt = body.prompt;
      figure.append(img, element('figcaption', '', `seed ${result.seed} · #${index + 1} · ${result.timings.inference} s`));
      $('#gallery').prepend(figure);
    }
    status.textContent = `${result.images.length} image(s) in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (error) {
    status.className = 'status error';
    status.textContent = error.message;
  }
});

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Embeddings: the cosine similarity of every pair of texts, as a heat-map.
$('#embeddings-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const status = $('#embeddings-status');
  status.className = 'status';
  const texts = $('#embeddings-input').value.split('\n').map((line) => line.trim()).filter(Boolean);
  try {
    const result = await api('POST', '/v1/embeddings', { model: $('#embeddings-model').value, input: texts });
    const vectors = result.data.sort((a, b) => a.index - b.index).map((item) => item.embedding);
    const table = $('#heatmap');
    const head = element('tr');
    head.append(element('th'), ...texts.map((_text, i) => element('th', '', `${i + 1}`)));
    const rows = texts.map((text, i) => {
      const row = element('tr');
      const label = element('th', '', `${i + 1}. ${text}`);
      label.title = text;
      row.append(label);
      for (let j = 0; j < texts.length; j++) {
        const similarity = cosine(vectors[i], vectors[j]);
        const cell = element('td', '', similarity.toFixed(2));
        cell.dataset.row = String(i);
        cell.dataset.column = String(j);
        cell.dataset.value = String(similarity);
        cell.style.background = `hsl(${Math.round(220 - 220 * Math.max(0, similarity))} 80% ${Math.round(90 - 35 * Math.max(0, similarity))}%)`;
        row.append(cell);
      }
      return row;
    });
    table.replaceChildren(head, ...rows);
    status.textContent = `${texts.length} texts · ${result.usage.prompt_tokens} tokens · ${vectors[0]?.length ?? 0} dimensions`;
  } catch (error) {
    status.className = 'status error';
    status.textContent = error.message;
  }
});

function cosine(a, b) {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    normA += a[i] * a[i];
    normB += b[i] * b[i];
  }
  return dot / (Math.sqrt(normA) * Math.sqrt(normB) || 1);
}

// Rerank: the documents as bars, best first (the order the server answers in).
$('#rerank-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const status = $('#rerank-status');
  status.className = 'status';
  const documents = $('#rerank-documents').value.split('\n').map((line) => line.trim()).filter(Boolean);
  try {
    const result = await api('POST', '/v1/rerank', { model: $('#rerank-model').value, query: $('#rerank-query').value, documents, return_documents: true });
    const bars = result.results.map((item) => {
      const entry = element('li');
      entry.dataset.index = String(item.index);
      entry.dataset.score = String(item.relevance_score);
      const bar = element('div', 'bar');
      bar.style.width = `${Math.max(1, Math.round(item.relevance_score * 100))}%`;
      entry.append(element('div', 'label', `${item.relevance_score.toFixed(3)} · ${documents[item.index]}`), bar);
      return entry;
    });
    $('#rerank-bars').replaceChildren(...bars);
    status.textContent = `${documents.length} documents · ${result.tokens.input_tokens} tokens`;
  } catch (error) {
    status.className = 'status error';
    status.textContent = error.message;
  }
});

loadModels();
