// Drive the system Chromium (no browser download) with puppeteer-core over the DevTools
// protocol: a fake microphone plays a WAV file, the page joins a LiveKit room, and once the
// expected words are on the page this prints a JSON report and saves a screenshot.
//
//   node drive.mjs '{"mode": "captions"|"playground", "pageUrl": ..., "wav": ..., "words": [...],
//                    "minFraction": 0.8,
//                    "screenshot": ..., "chromium": "/usr/bin/chromium", "timeoutS": 90,
//                    "viewport": {"width", "height"}, "settleS": 3,
//                    "livekitUrl": ..., "token": ...}'   (the last two: playground mode only)

import puppeteer from "puppeteer-core";

const cfg = JSON.parse(process.argv[2]);
const timeoutMs = (cfg.timeoutS ?? 90) * 1000;

const normalise = (text) =>
  text.toLowerCase().replace(/[^a-z0-9' ]+/g, " ").split(/\s+/).filter(Boolean);
// Most of the words (tiny.en may mishear one or two; the test scores the WER itself).
const hasWords = (text, words) => {
  const seen = new Set(normalise(text));
  const wanted = [...new Set(words)];
  return wanted.filter((w) => seen.has(w)).length >= (cfg.minFraction ?? 0.8) * wanted.length;
};

const args = [
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  // %noloop: play the file once, then silence (the default loops it)
  `--use-file-for-fake-audio-capture=${cfg.wav}%noloop`,
  "--autoplay-policy=no-user-gesture-required",
  "--window-size=1400,900",
];
if (process.getuid && process.getuid() === 0) args.push("--no-sandbox"); // root refuses otherwise

const browser = await puppeteer.launch({
  executablePath: cfg.chromium ?? "/usr/bin/chromium",
  headless: true,
  args,
  defaultViewport: cfg.viewport ?? { width: 1400, height: 900 },
});
const consoleLines = [];
const report = { ok: false, consoleLines };
try {
  const page = await browser.newPage();
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(cfg.pageUrl, { waitUntil: "load" });

  if (cfg.mode === "playground") {
    // the playground's manual connection: URL + token, then Connect
    await page.waitForSelector('input[placeholder="wss://url"]');
    await page.type('input[placeholder="wss://url"]', cfg.livekitUrl);
    await page.type('textarea[placeholder="room token..."]', cfg.token);
    const [button] = await page.$$("xpath/.//button[normalize-space()='Connect']");
    await button.click();
  }

  // Done once the words are there, no caption is still an interim, and the page has not
  // changed for `settleS` (the sentence may end in a later segment than the words).
  const deadline = Date.now() + timeoutMs;
  const started = Date.now();
  const settleMs = (cfg.settleS ?? 3) * 1000;
  let last = "";
  let lastChange = Date.now();
  for (;;) {
    const snap = await snapshot(page, cfg.mode);
    report.snapshot = snap;
    if (snap.error) break;
    const key = JSON.stringify(snap.texts) + snap.pending;
    if (key !== last) [last, lastChange] = [key, Date.now()];
    report.wordsSeen = snap.texts.length > 0 && snap.texts.every((t) => hasWords(t, cfg.words));
    if (report.wordsSeen && !snap.pending && Date.now() - lastChange >= settleMs) {
      report.ok = true;
      break;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  report.elapsedS = (Date.now() - started) / 1000;
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot });
} catch (err) {
  report.exception = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");

// What the page shows. `texts`: one string per place that must show the words (each of the
// three channels of our page; the playground's chat transcript).
async function snapshot(page, mode) {
  if (mode === "playground") {
    return page.evaluate(() => {
      // ChatMessage renders each message in a `whitespace-pre-line` div, its speaker's name
      // in the uppercase div before it
      const messages = [...document.querySelectorAll("div.whitespace-pre-line")].map((el) => ({
        text: el.textContent,
        name: el.previousElementSibling ? el.previousElementSibling.textContent : null,
      }));
      const chat = messages.map((m) => m.text).join(" ");
      return {
        messages,
        texts: chat ? [chat] : [],
        pending: false, // the chat shows no interim/final distinction
        body: document.body.innerText,
        error: null,
      };
    });
  }
  return page.evaluate(() => {
    const s = window.captionState;
    const finals = (ch) =>
      Object.values(s.captions[ch])
        .filter((c) => c.final)
        .map((c) => c.text)
        .join(" ");
    const channels = ["text-stream", "legacy", "data"];
    return {
      state: s,
      texts: channels.map(finals).every(Boolean) ? channels.map(finals) : [],
      pending: channels.some((ch) => Object.values(s.captions[ch]).some((c) => !c.final)),
      shown: Object.fromEntries(channels.map((ch) => [ch, document.getElementById(ch).innerText])),
      body: document.body.innerText,
      error: s.error,
    };
  });
}
