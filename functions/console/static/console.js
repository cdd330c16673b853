'use strict';
// The lethe dev console: the edge's own API, a pasted token, nothing else.
(() => {
  const $ = (id) => document.getElementById(id);
  let token = '';
  let poller = null;

  function log(msg) {
    const line = new Date().toISOString().slice(11, 19) + ' ' + msg + '\n';
    $('log').textContent = (line + $('log').textContent).slice(0, 8000);
  }

  async function api(method, path, body, contentType) {
    const headers = { Authorization: 'Bearer ' + token };
    let payload = body;
    if (body !== undefined && !(body instanceof Blob) && !(body instanceof ArrayBuffer)) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    } else if (contentType) {
      headers['Content-Type'] = contentType;
    }
    const res = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
    let data = null;
    const ct = res.headers.get('Content-Type') || '';
    if (ct.startsWith('application/json')) data = await res.json();
    if (!res.ok) {
      const why = data && data.error ? (data.error.code || data.error) + ': ' + (data.error.message || '') : res.status;
      throw new Error(method + ' ' + path.split('?')[0] + ' → ' + res.status + ' ' + why);
    }
    return data;
  }

  function cid() {
    const v = $('cid').value.trim();
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(v)) throw new Error('conversation id must match [A-Za-z0-9_-]{1,64}');
    return v;
  }

  // Sign in: the token is checked by reading the user's retention policy.
  $('signin-btn').addEventListener('click', async () => {
    token = $('token').value.trim();
    $('token').value = '';
    try {
      const pol = await api('GET', '/v1/me/retention');
      document.body.classList.add('signed-in');
      $('whoami').textContent = 'signed in';
      for (const k of ['audio_days', 'transcript_days', 'vector_days', 'export_days']) $(k).value = pol[k];
      if (!$('cid').value) $('cid').value = 'console-' + Date.now().toString(36);
      log('token accepted');
    } catch (e) {
      document.body.classList.remove('signed-in');
      $('whoami').textContent = 'not signed in';
      log(e.message);
    }
  });

  // Stages: the conversation's chunks and transcript, read from the stores.
  let lastSeq = -1;
  async function refresh() {
    let conv;
    try {
      conv = await api('GET', '/v1/conversations/' + encodeURIComponent(cid()));
    } catch (e) {
      return;
    }
    const rows = (conv.chunks || []).map((c) => {
      lastSeq = Math.max(lastSeq, c.seq);
      return '<tr data-seq="' + c.seq + '"><td>' + c.seq + '</td><td class="' + c.status + '">' + c.status + '</td></tr>';
    });
    $('chunks').innerHTML = rows.join('');
    $('transcript').textContent = conv.transcript || '';
  }
  function watch() {
    if (!poller) poller = setInterval(refresh, 1000);
    refresh();
  }

  // Recording: microphone → 16 kHz PCM16 → /v1/listen. The token goes as the
  // "bearer.<token>" subprotocol, since a browser cannot set headers.
  let rec = null;
  $('rec-start').addEventListener('click', async () => {
    try {
      const id = cid();
      const media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      const ctx = new AudioContext({ sampleRate: 16000 });
      await ctx.audioWorklet.addModule('/console/pcm-worklet.js');
      const src = ctx.createMediaStreamSource(media);
      const node = new AudioWorkletNode(ctx, 'pcm16');
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const url = scheme + '//' + location.host + '/v1/listen?conversation_id=' + encodeURIComponent(id) +
        '&codec=pcm16&sample_rate=16000';
      const ws = new WebSocket(url, ['lethe.v1', 'bearer.' + token]);
      ws.binaryType = 'arraybuffer';
      rec = { media, ctx, ws, acked: 0 };
      node.port.onmessage = (e) => { if (ws.readyState === WebSocket.OPEN) ws.send(e.data); };
      ws.onopen = () => { src.connect(node); $('rec-status').textContent = 'recording'; log('streaming ' + id); };
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'ack') { rec && (rec.acked = m.seq + 1); $('rec-status').textContent = 'chunk ' + m.seq + ' durable (' + m.end_ms + ' ms)'; refresh(); }
        if (m.type === 'transcript') log('transcript of chunk ' + m.seq + ' arrived');
        if (m.type === 'hello') log('hello: last seq ' + m.last_seq);
      };
      ws.onclose = (e) => {
        $('rec-status').textContent = e.code === 1000 ? 'stopped: every chunk acked' : 'closed ' + e.code + ' ' + e.reason;
        log('stream closed ' + e.code);
        media.getTracks().forEach((t) => t.stop());
        ctx.close();
        $('rec-start').disabled = false;
        $('rec-stop').disabled = true;
        rec = null;
      };
      $('rec-start').disabled = true;
      $('rec-stop').disabled = false;
      watch();
    } catch (e) {
      log(e.message);
      $('rec-status').textContent = 'could not record: ' + e.message;
    }
  });
  $('rec-stop').addEventListener('click', () => {
    if (!rec) return;
    rec.media.getTracks().forEach((t) => t.stop());
    rec.ws.send(JSON.stringify({ type: 'end' }));
    $('rec-status').textContent = 'finishing';
  });

  // Upload a file as the conversation's next chunk.
  $('upload-btn').addEventListener('click', async () => {
    const f = $('file').files[0];
    if (!f) return;
    try {
      await refresh();
      const seq = lastSeq + 1;
      let type = f.type || 'audio/wav';
      if (/\.(opus|ogg)$/i.test(f.name)) type = 'audio/ogg';
      const r = await api('PUT', '/v1/conversations/' + encodeURIComponent(cid()) + '/chunks/' + seq, f, type);
      $('upload-status').textContent = 'chunk ' + r.seq + ' ' + r.status;
      watch();
    } catch (e) {
      $('upload-status').textContent = e.message;
      log(e.message);
    }
  });

  $('search-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('POST', '/v1/search', { q: $('query').value });
      $('results').innerHTML = '';
      for (const hit of r.results || []) {
        const li = document.createElement('li');
        li.dataset.conversation = hit.conversation_id;
        li.textContent = hit.conversation_id + ' (' + hit.score.toFixed(3) + '): ' + (hit.snippets || []).join(' … ');
        $('results').appendChild(li);
      }
      if (!(r.results || []).length) $('results').innerHTML = '<li class="none">no results</li>';
    } catch (e) {
      log(e.message);
    }
  });

  $('retention-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const k of ['audio_days', 'transcript_days', 'vector_days', 'export_days']) body[k] = Number($(k).value);
    try {
      await api('PUT', '/v1/me/retention', body);
      $('retention-status').textContent = 'saved';
    } catch (e) {
      $('retention-status').textContent = e.message;
    }
  });

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  $('export-btn').addEventListener('click', async () => {
    try {
      let x = await api('POST', '/v1/me/export');
      $('export-status').textContent = 'export ' + x.state;
      while (x.state !== 'done' && x.state !== 'failed') {
        await sleep(1000);
        x = await api('GET', '/v1/me/export/' + encodeURIComponent(x.id));
        $('export-status').textContent = 'export ' + x.state;
      }
      if (x.state === 'done' && x.download_url) {
        const res = await fetch(x.download_url, { headers: { Authorization: 'Bearer ' + token } });
        if (!res.ok) throw new Error('download → ' + res.status);
        const a = document.createElement('a');
        a.href = URL.createObjectURL(await res.blob());
        a.download = 'lethe-export-' + x.id + '.zip';
        a.click();
        $('export-status').textContent = 'downloaded (' + (x.manifest ? x.manifest.files + ' files' : 'zip') + ')';
      }
    } catch (e) {
      $('export-status').textContent = e.message;
    }
  });

  $('erase-btn').addEventListener('click', async () => {
    if (!$('erase-confirm').checked) {
      $('erase-status').textContent = 'tick the box first';
      return;
    }
    try {
      let e = await api('DELETE', '/v1/me');
      $('erase-status').textContent = 'erasure ' + e.state;
      while (e.state !== 'done' && e.state !== 'failed') {
        await sleep(1000);
        e = await api('GET', '/v1/me/erasure/' + encodeURIComponent(e.id));
        $('erase-status').textContent = 'erasure ' + e.state;
      }
      const stores = e.receipt && e.receipt.stores ? Object.entries(e.receipt.stores) : [];
      const left = stores.reduce((n, [, s]) => n + (s.remaining || 0), 0);
      $('erase-status').textContent = 'erasure ' + e.state + ': ' + stores.length + ' stores checked, ' + left + ' items remaining';
      if (poller) clearInterval(poller);
      poller = null;
    } catch (err) {
      $('erase-status').textContent = err.message;
    }
  });
})();
