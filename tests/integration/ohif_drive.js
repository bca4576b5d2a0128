// Drives the OHIF viewer in headless chromium for test_ohif.py (playwright-core, no browser download: the
// system's chromium). Prints one JSON object: the study list's text, the share of non-black pixels in the
// centre of the first viewport (corners hold text overlays), the browser's console and failed requests, and
// the URL of every request the page and its workers made.
const { chromium } = require('playwright-core');

async function nonBlank(page, png) {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const x0 = Math.floor(img.width * 0.25), y0 = Math.floor(img.height * 0.25);
    const d = g.getImageData(x0, y0, Math.floor(img.width / 2), Math.floor(img.height / 2)).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 24 || d[i + 1] > 24 || d[i + 2] > 24) lit++;
    return lit / (d.length / 4);
  }, png.toString('base64'));
}

(async () => {
  const a = JSON.parse(process.argv[2]);
  const out = { log: [], requests: [] };
  const browser = await chromium.launch({
    executablePath: a.chromium,
    headless: true,
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  // On the context, so that requests of the viewer's web workers are seen too.
  page.context().on('request', (r) => out.requests.push(r.url()));
  page.on('console', (m) => out.log.push('console ' + m.type() + ': ' + m.text().slice(0, 300)));
  page.on('requestfailed', (r) => out.log.push('failed ' + r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('response', (r) => { if (r.status() >= 400) out.log.push('HTTP ' + r.status() + ' ' + r.url()); });
  try {
    await page.goto(a.app + '/', { waitUntil: 'load', timeout: 120000 });
    for (const n of a.names) await page.getByText(n).first().waitFor({ timeout: 120000 });
    out.studyList = await page.locator('body').innerText();
    await page.screenshot({ path: a.shots + '/ohif-study-list.png' });
    await page.goto(a.app + '/viewer?StudyInstanceUIDs=' + a.study, { waitUntil: 'load', timeout: 120000 });
    await page.waitForSelector('canvas', { timeout: 120000 });
    const vp = page.locator('.viewport-element, [data-cy="viewport-pane"]').first();
    const end = Date.now() + 90000;
    out.nonBlank = 0;
    while (Date.now() < end) {
      await page.waitForTimeout(1000);
      const png = await vp.screenshot();
      out.nonBlank = await nonBlank(page, png);
      if (out.nonBlank > 0.2) {
        await page.waitForTimeout(1000);
        await vp.screenshot({ path: a.shots + '/ohif-viewport.png' });
        break;
      }
    }
    await page.screenshot({ path: a.shots + '/ohif-viewer.png' });
  } catch (e) {
    out.error = String(e);
    await page.screenshot({ path: a.shots + '/ohif-error.png' }).catch(() => {});
  }
  await browser.close();
  console.log(JSON.stringify(out));
})();
