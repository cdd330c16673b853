// The dev console end to end in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser download). Run by cmd/lethe
// TestConsoleInBrowser, which starts lethe and passes:
//   LETHE_URL    the console's address
//   LETHE_TOKEN  a token of the local issuer
//   FAKE_AUDIO   a WAV file Chromium plays as the microphone
//   CID          the conversation id to record into
// It signs in, records from the (fake) microphone over the WebSocket, waits
// for the transcript, finds it by search and erases the account. Exit 0 on
// success; each step prints one JSON line.
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env('LETHE_URL'), token = env('LETHE_TOKEN'), audio = env('FAKE_AUDIO');
const cid = env('CID');
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${audio}%noloop`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let failed = false;
try {
  const ctx = await browser.newContext();
  await ctx.grantPermissions(['microphone'], { origin: url });
  const page = await ctx.newPage();
  const consoleErrors = [];
  // Script errors fail the test; a 404 or 410 the console expects (a
  // conversation not there yet, an erased account) is only logged.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  await page.goto(url);
  step('loaded', { title: await page.title() });

  await page.fill('#token', token);
  await page.click('#signin-btn');
  await page.waitForSelector('body.signed-in', { timeout: 15000 });
  step('signed-in');

  await page.fill('#cid', cid);
  await page.click('#rec-start');
  await page.waitForFunction(() => document.getElementById('rec-status').textContent.includes('durable'), null, { timeout: 60000 });
  step('first-ack', { status: await page.textContent('#rec-status') });
  await page.click('#rec-stop');
  await page.waitForFunction(() => document.getElementById('rec-status').textContent.startsWith('stopped'), null, { timeout: 60000 });
  step('stopped', { status: await page.textContent('#rec-status') });

  // Every chunk indexed, and words in the transcript.
  await page.waitForFunction(() => {
    const st = [...document.querySelectorAll('#chunks td:nth-child(2)')].map((td) => td.textContent);
    return st.length > 0 && st.every((s) => s === 'indexed') &&
      document.getElementById('transcript').textContent.trim().split(/\s+/).length >= 2;
  }, null, { timeout: 120000 });
  const transcript = await page.textContent('#transcript');
  const query = transcript.trim().split(/\s+/).slice(0, 2).join(' ');
  const stages = await page.$$eval('#chunks tr', (rows) => rows.map((r) => r.children[1].textContent));
  step('transcript', { transcript, stages });

  await page.fill('#query', query);
  await page.click('#search-form button');
  await page.waitForSelector(`#results li[data-conversation="${cid}"]`, { timeout: 30000 });
  step('found', { query, result: await page.textContent('#results li') });

  await page.check('#erase-confirm');
  await page.click('#erase-btn');
  await page.waitForFunction(() => /erasure (done|failed)/.test(document.getElementById('erase-status').textContent), null, { timeout: 120000 });
  const erased = await page.textContent('#erase-status');
  step('erased', { status: erased });
  if (!erased.startsWith('erasure done') || !erased.includes(' 0 items remaining')) throw new Error(`erasure: ${erased}`);
  if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.join(' | ')}`);
} catch (e) {
  failed = true;
  step('failed', { error: String(e && e.message || e) });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
