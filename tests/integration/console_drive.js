// Drives the operator's console in headless chromium for test_console_browser.py (playwright-core, the system's
// chromium). Opens argv's page, then answers commands, one JSON object a line on stdin, with one JSON line each on
// stdout, so that the Python test can act on the bridge and its peers between steps:
//   {"op": "eval", "expr": "..."}                      the expression's value in the page (a promise is awaited)
//   {"op": "wait", "expr": "...", "timeout_ms": ms}    waits until the expression is truthy; its value
//   {"op": "click", "selector": "...", "dialog": "accept"|"dismiss"}   the dialog's message, if one opened
//   {"op": "fill", "selector": "...", "value": "..."}
//   {"op": "screenshot", "path": "...", "fullPage": bool}
//   {"op": "log"}                                      console messages, page errors, failed requests, every
//                                                      request, and the status and body of every POST the page made
//   {"op": "quit"}
// Answers: {"ok": true, "value": ...} or {"ok": false, "error": "..."} (with a screenshot kept on a failed wait).
const { chromium } = require('playwright-core');
const readline = require('readline');

(async () => {
  const a = JSON.parse(process.argv[2]);
  const log = { console: [], errors: [], failed: [], posts: [], requests: [] };
  const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  let browser;
  try {
    browser = await chromium.launch({ executablePath: a.chromium, headless: true, args: ['--no-sandbox'] });
  } catch (e) {
    say({ ok: false, error: 'chromium did not start: ' + e });
    process.exit(1);
  }
  const page = await browser.newPage({ viewport: { width: a.width || 1400, height: a.height || 900 } });
  page.on('request', (r) => log.requests.push(r.method() + ' ' + r.url()));
  page.on('console', (m) => log.console.push(m.type() + ': ' + m.text().slice(0, 300)));
  page.on('pageerror', (e) => log.errors.push(String(e).slice(0, 500)));
  page.on('requestfailed', (r) => log.failed.push(r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('response', async (r) => {
    if (r.request().method() !== 'POST') return;
    const entry = { url: r.url(), status: r.status(), headers: r.request().headers(), body: null };
    log.posts.push(entry);
    entry.body = await r.text().catch(() => null);
  });
  let dialog = null;
  page.on('dialog', async (d) => {
    const msg = d.message();
    if (dialog) dialog.seen = msg;
    await (dialog && dialog.action === 'accept' ? d.accept() : d.dismiss()).catch(() => {});
  });
  try {
    await page.goto(a.url, { waitUntil: 'load', timeout: 30000 });
    say({ ok: true, value: page.url() });
  } catch (e) {
    say({ ok: false, error: 'opening ' + a.url + ': ' + e });
  }

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    try {
      let value = null;
      if (c.op === 'eval') {
        value = await page.evaluate(c.expr);
      } else if (c.op === 'wait') {
        // Not page.waitForFunction: it evaluates the string inside the page, which the console's CSP forbids.
        const end = Date.now() + (c.timeout_ms || 30000);
        for (;;) {
          value = await page.evaluate(c.expr);
          if (value) break;
          if (Date.now() > end) throw new Error('still ' + JSON.stringify(value) + ' after ' + c.timeout_ms + ' ms');
          await page.waitForTimeout(100);
        }
      } else if (c.op === 'click') {
        dialog = { action: c.dialog || 'dismiss', seen: null };
        await page.click(c.selector, { timeout: c.timeout_ms || 10000 });
        await page.waitForTimeout(50);
        value = dialog.seen;
      } else if (c.op === 'fill') {
        await page.fill(c.selector, c.value, { timeout: c.timeout_ms || 10000 });
      } else if (c.op === 'screenshot') {
        await page.screenshot({ path: c.path, fullPage: !!c.fullPage });
      } else if (c.op === 'log') {
        value = log;
      } else if (c.op === 'quit') {
        say({ ok: true, value: null });
        break;
      } else {
        throw new Error('unknown op ' + c.op);
      }
      say({ ok: true, value: value === undefined ? null : value });
    } catch (e) {
      const out = { ok: false, error: String(e).slice(0, 2000) };
      if (a.shots) {
        out.screenshot = a.shots + '/console-error-' + Date.now() + '.png';
        await page.screenshot({ path: out.screenshot, fullPage: true }).catch(() => { out.screenshot = null; });
      }
      out.text = await page.locator('body').innerText().catch(() => '');
      say(out);
    }
  }
  await browser.close();
  process.exit(0); // stdin may still be open
})();
