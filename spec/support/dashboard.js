// Drives the dashboard (lua/chronis/web/) in headless Chromium as a
// person would, for spec/dashboard_spec.lua: it clicks, types and reads
// the page, and prints one JSON document of what it saw on stdout. The
// spec checks the store afterwards. A step that does not see what it
// waits for ends the script with exit status 1 and a message naming it.
//
//   DASH_URL=http://127.0.0.1:PORT DASH_TOKEN=T CHRONIS_BIN=build/chronis \
//   DASH_STORAGE=sqlite:/tmp/x.db [SCREENSHOT_DIR=docs/img] node spec/support/dashboard.js
//
// The page's jobs, as the spec makes them: spec-job, xss (a name and
// metadata holding HTML), runner, flaky and flaky-2 (failed once, with
// their runs), paused-job, slow (running, with progress). The script adds live-job with the command line while the
// page is open, and deletes it through the page.
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BASE = process.env.DASH_URL;
const TOKEN = process.env.DASH_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR;
const WAIT_MS = 15000;

function fail(msg) {
  process.stderr.write(`dashboard: ${msg}\n`);
  process.exit(1);
}

if (!BASE || !TOKEN || !process.env.CHRONIS_BIN || !process.env.DASH_STORAGE) {
  fail('DASH_URL, DASH_TOKEN, CHRONIS_BIN and DASH_STORAGE must be set');
}
if (!fs.existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: apt-get install chromium`);
let puppeteer;
try {
  puppeteer = require('puppeteer-core');
} catch (e) {
  fail('puppeteer-core is not installed: run npm ci --prefix spec (make deps does)');
}

// What every page saw that it must not: native dialogs (alert, confirm:
// the page asks with a <dialog> element of its own), uncaught errors,
// and the browser refusing something under the server's CSP.
const trouble = { dialogs: [], page_errors: [], csp: [] };

async function newPage(context, viewport) {
  const page = await context.newPage();
  await page.setViewport(viewport);
  page.on('dialog', (d) => { trouble.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => trouble.page_errors.push(e.message));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) trouble.csp.push(m.text()); });
  return page;
}

// Waits until fn(arg) is true in the page; else fails naming `what`.
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 100 }, arg);
  } catch (e) {
    const seen = await page.evaluate(() => document.body.innerText.slice(0, 600)).catch(() => '?');
    fail(`${what}: not seen within ${WAIT_MS / 1000} s (${e.message.split('\n')[0]}); the page showed: ${seen}`);
  }
}

const rowShown = (id) => !!document.querySelector(`tr[data-id="${CSS.escape(id)}"]`);

async function clickInRow(page, id, label) {
  const ok = await page.evaluate((id, label) => {
    const row = document.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    const b = row && [...row.querySelectorAll('button')].find((x) => x.textContent === label);
    if (!b || b.disabled) return false;
    b.click();
    return true;
  }, id, label);
  if (!ok) fail(`no enabled '${label}' button in the row of ${id}`);
}

async function clickAction(page, label) {
  const ok = await page.evaluate((label) => {
    const b = [...document.querySelectorAll('#j-actions button')].find((x) => x.textContent === label);
    if (!b || b.disabled) return false;
    b.click();
    return true;
  }, label);
  if (!ok) fail(`no enabled '${label}' button on the job page`);
}

// A picture of the screen, or of the whole page (the window made as tall
// as the page for it).
async function shot(page, name, whole) {
  if (!SHOTS) return;
  const viewport = page.viewport();
  if (whole) {
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    await page.setViewport({ ...viewport, height });
  }
  await page.screenshot({ path: path.join(SHOTS, name), type: 'png' });
  if (whole) await page.setViewport(viewport);
}

const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844, isMobile: true, hasTouch: true };

async function main() {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'],
  });
  const out = {};
  try {
    // ---- no token: every action button off, and the page says why ----
    const anon = await browser.createBrowserContext();
    let page = await newPage(anon, LAPTOP);
    await page.goto(BASE + '/#/');
    await until(page, 'rows and the token notice without a token',
      () => document.querySelector('#rows button') && !document.getElementById('auth').hidden);
    out.no_token = await page.evaluate(() => {
      const bs = [...document.querySelectorAll('button.act')];
      return { buttons: bs.length, enabled: bs.filter((b) => !b.disabled).length,
        notice: document.getElementById('auth').textContent, title: bs[0] && bs[0].title };
    });
    await page.goto(BASE + '/#/jobs/runner');
    await until(page, 'the actions of runner without a token', () => document.querySelectorAll('#j-actions button').length > 0);
    out.no_token.job_enabled = await page.evaluate(() =>
      [...document.querySelectorAll('#j-actions button')].filter((b) => !b.disabled).length);
    await anon.close();

    // ---- with the token ----
    const ctx = await browser.createBrowserContext();
    page = await newPage(ctx, LAPTOP);
    const apiCalls = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/api/')) apiCalls.push({ auth: r.headers().authorization || '', cookie: r.headers().cookie || '' });
    });
    await page.goto(BASE + '/#/');
    await page.type('#token', TOKEN);
    await page.click('#token-form button');
    await until(page, 'actions on once the token is given',
      () => document.getElementById('auth').hidden && [...document.querySelectorAll('#rows button.act')].some((b) => !b.disabled));
    const mark = apiCalls.length; // every call from here on carries the token
    await until(page, 'the rows of spec-job and xss', () =>
      ['spec-job', 'xss'].every((id) => document.querySelector(`tr[data-id="${id}"]`)));
    out.overview = await page.evaluate(() => ({
      ids: [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.id),
      counts: Object.fromEntries([...document.querySelectorAll('#counts button')].map((b) =>
        [b.querySelector('span').textContent, Number(b.querySelector('strong').textContent)])),
      token_stored: sessionStorage.getItem('chronis.token'),
      cookie: document.cookie,
    }));
    await shot(page, 'dashboard-laptop.png');

    // ---- a name and metadata holding HTML stay text ----
    out.xss = await page.evaluate(() => ({
      row_text: document.querySelector('tr[data-id="xss"] a').textContent,
      images: document.images.length,
      scripts: document.scripts.length,
    }));
    await page.goto(BASE + '/#/jobs/xss');
    await until(page, 'the job page of xss', () => document.getElementById('j-fields').textContent.includes('onerror'));
    Object.assign(out.xss, await page.evaluate(() => ({
      title_text: document.getElementById('j-name').textContent,
      meta_text: document.querySelector('.meta').textContent,
      page_images: document.images.length,
      page_scripts: document.scripts.length,
    })));

    // ---- pause from the list ----
    await page.goto(BASE + '/#/');
    await until(page, 'the row of spec-job', rowShown, 'spec-job');
    await clickInRow(page, 'spec-job', 'Pause');
    await until(page, 'spec-job shown paused', () =>
      document.querySelector('tr[data-id="spec-job"] .badge').textContent === 'paused');
    out.pause = { badge: 'paused' };

    // ---- retry from the failed view ----
    await page.goto(BASE + '/#/failed');
    await until(page, 'flaky in the failed view', rowShown, 'flaky');
    out.retry = await page.evaluate(() => ({ listed: [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.id),
      bar: document.getElementById('failed-text').textContent }));
    await clickInRow(page, 'flaky', 'Retry');
    await until(page, 'flaky gone from the failed view', (id) => !document.querySelector(`tr[data-id="${id}"]`), 'flaky');
    out.retry.gone = true;
    await until(page, 'the failed view counting one job', () => document.getElementById('failed-text').textContent.startsWith('1 '));
    const retryAll = await page.$('#retry-all');
    if (!retryAll || await retryAll.evaluate((b) => b.hidden || b.disabled)) fail('no enabled Retry all button');
    await retryAll.click();
    await until(page, 'the failed view empty after Retry all', () => !document.querySelector('#rows tr')
      && !document.getElementById('empty').hidden);
    out.retry.all_done = true;

    // ---- run now: the history on the job page grows by itself ----
    await page.goto(BASE + '/#/jobs/runner');
    await until(page, 'the job page of runner', () => document.getElementById('j-name').textContent === 'Runner'
      && document.querySelectorAll('#j-actions button').length > 0);
    const before = await page.evaluate(() => document.querySelectorAll('#j-runs tr').length);
    await clickAction(page, 'Run now');
    await until(page, 'a new run of runner', (n) => document.querySelectorAll('#j-runs tr').length > n, before);
    out.run = await page.evaluate((n) => ({ before: n, after: document.querySelectorAll('#j-runs tr').length,
      outcome: document.querySelector('#j-runs tr td:nth-child(2)').textContent }), before);

    // ---- progress of a running job ----
    await page.goto(BASE + '/#/jobs/slow');
    await until(page, 'the progress of slow', () => !document.getElementById('j-progress').hidden);
    out.progress = await page.evaluate(() => ({ value: document.getElementById('j-bar').value,
      text: document.getElementById('j-ptext').textContent, status: document.getElementById('j-status').textContent,
      actions: [...document.querySelectorAll('#j-actions button')].map((b) => b.textContent).filter((t) => t !== 'Delete') }));

    // ---- live refresh keeps the filter typed and shows a job added elsewhere ----
    await page.goto(BASE + '/#/');
    await until(page, 'the row of runner', rowShown, 'runner');
    await page.type('#f-handler', 'ok');
    await page.keyboard.press('Enter');
    await until(page, 'the handler filter applied', () => location.hash.includes('handler=ok')
      && !document.querySelector('tr[data-id="flaky"]'));
    // Live off: a job added now stays unseen over two polls' time.
    await page.click('#live');
    execFileSync(process.env.CHRONIS_BIN, ['jobs', 'add', 'ok', '--every', '1h', '--id', 'live-job', '--name', 'Live job',
      '--storage', process.env.DASH_STORAGE], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 4500));
    const whileOff = await page.evaluate(rowShown, 'live-job');
    await page.click('#live');
    await until(page, 'live-job appearing without a reload', rowShown, 'live-job');
    out.live = await page.evaluate(() => ({ filter: document.getElementById('f-handler').value, hash: location.hash }));
    out.live.shown_while_off = whileOff;

    // ---- delete asks first ----
    await page.goto(BASE + '/#/jobs/live-job');
    await until(page, 'the job page of live-job', () => document.getElementById('j-name').textContent === 'Live job'
      && document.querySelectorAll('#j-actions button').length > 0);
    await clickAction(page, 'Delete');
    await until(page, 'the delete confirmation', () => document.getElementById('confirm').open);
    await page.click('#confirm button[value="cancel"]');
    await until(page, 'the confirmation closed', () => !document.getElementById('confirm').open);
    await new Promise((r) => setTimeout(r, 500));
    out.delete = { kept_after_cancel: await page.evaluate(() => location.hash === '#/jobs/live-job'
      && document.getElementById('j-name').textContent === 'Live job') };
    await clickAction(page, 'Delete');
    await until(page, 'the delete confirmation', () => document.getElementById('confirm').open);
    await page.click('#confirm-ok');
    await until(page, 'back on the list after the delete', () => location.hash === '#/' && !document.querySelector('tr[data-id="live-job"]')
      && document.querySelector('tr[data-id="runner"]'));
    out.delete.done = true;

    // ---- a metadata filter, and a count as a filter ----
    await page.goto(BASE + '/#/');
    await until(page, 'the row of runner', rowShown, 'runner');
    await page.type('#f-meta', 'tenant=acme');
    await page.keyboard.press('Enter');
    await until(page, 'the metadata filter applied', () => location.hash.includes('meta=tenant%3Dacme')
      && document.querySelectorAll('#rows tr').length === 1);
    out.filters = { meta: await page.evaluate(() => [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.id)) };
    await page.click('#f-clear');
    await until(page, 'the filters cleared', () => document.querySelectorAll('#rows tr').length > 1);
    await page.evaluate(() => [...document.querySelectorAll('#counts button')].find((b) => b.textContent.endsWith('paused')).click());
    await until(page, 'the paused count as a filter', () => location.hash.includes('status=paused')
      && [...document.querySelectorAll('#rows .badge')].every((b) => b.textContent === 'paused'));
    out.filters.paused = await page.evaluate(() => [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.id).sort());

    await page.goto(BASE + '/#/jobs/flaky');
    await until(page, 'the runs of flaky', () => document.querySelectorAll('#j-runs tr').length >= 2);
    await shot(page, 'dashboard-job-laptop.png', true);

    // ---- a phone: cards, nothing wider than the screen ----
    const phone = await newPage(ctx, PHONE);
    await phone.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
    await phone.goto(BASE + '/#/');
    // The token is kept per tab, as sessionStorage is.
    await phone.type('#token', TOKEN);
    await phone.click('#token-form button');
    await until(phone, 'the rows on a phone, actions on', () => document.getElementById('auth').hidden
      && document.querySelector('tr[data-id="runner"] button.act:not(:disabled)'));
    const fits = () => ({ scroll: document.documentElement.scrollWidth, width: document.documentElement.clientWidth,
      head: getComputedStyle(document.querySelector('thead')).display,
      cell: getComputedStyle(document.querySelector('#rows td')).display });
    out.phone = { overview: await phone.evaluate(fits) };
    await shot(phone, 'dashboard-phone.png');
    // Scrolled down, the page stays there over a live refresh.
    const stamp = await phone.evaluate(() => { window.scrollTo(0, 400); return document.getElementById('updated').textContent; });
    await until(phone, 'a live refresh on the phone', (t) => document.getElementById('updated').textContent !== t, stamp);
    out.phone.scroll_y = await phone.evaluate(() => window.scrollY);
    await phone.goto(BASE + '/#/jobs/xss');
    await until(phone, 'the job page of xss on a phone', () => document.getElementById('j-fields').textContent.includes('onerror'));
    out.phone.job = await phone.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: document.documentElement.clientWidth }));
    await phone.goto(BASE + '/#/jobs/flaky');
    await until(phone, 'the runs of flaky on a phone', () => document.querySelectorAll('#j-runs tr').length >= 2);
    await shot(phone, 'dashboard-job-phone.png');

    const withToken = apiCalls.slice(mark);
    out.api_calls = withToken.length;
    out.api_calls_without_token = withToken.filter((c) => c.auth !== 'Bearer ' + TOKEN).length;
    out.api_calls_with_cookie = withToken.filter((c) => c.cookie !== '').length;
    Object.assign(out, trouble);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => fail(e.stack || String(e)));
