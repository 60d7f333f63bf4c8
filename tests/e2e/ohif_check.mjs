// Drive the real OHIF 3.13.2 viewer in headless Chromium on one study and record what it shows.
//
//   node tests/e2e/ohif_check.mjs SPEC.json
//
// SPEC: {url, studyUID, photoSOPInstanceUID, segSeriesUID, srSeriesUID, hideSegmentLabels,
//        measurementLabel, outDir, timeoutS (page load), stepTimeoutS (each later step), chromium}
//
// What it does, as a user would (tests/e2e/README.md has the why of each step):
//   1. opens /viewer?StudyInstanceUIDs=<study> (OHIF's Basic Viewer, longitudinal mode) and
//      waits until a Cornerstone viewport shows the photograph: screenshot 1-photo.png;
//   2. double-clicks the SEG series in the study browser; OHIF previews it and asks "Do you
//      want to open this Segmentation?": clicks "Yes" (hydration onto the photo's viewport)
//      and waits for the segmentation representation: 2-seg.png;
//   3. hides the segments named in hideSegmentLabels (e.g. the face-skin denominator) with
//      OHIF's segmentationService (what the eye toggle of the segment panel calls): 3-lesion.png;
//   4. double-clicks the SR series; OHIF's SR viewport draws each measurement group's
//      outline and its measurement texts (SVG); waits for measurementLabel: 4-sr.png.
// For each screenshot it records where the photograph lies on the page (from Cornerstone:
// the screen position of image points (0,0), (columns,0) and (0,rows)), so the caller can
// map screenshot pixels to photo pixels. A step ends early when the page logs an error.
// The SEG phase and the SR phase run independently, so one report shows every fault.
// report.json in outDir: steps reached, geometry, SR texts with their boxes, every console
// message, page errors, failed requests, HTTP errors, OHIF notifications, and srNudges
// (when a render had to be forced to draw the SR). Judging is the caller's job
// (tests/e2e/e2e_ohif.py:judge); this script exits 0 whenever it could write the report.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import puppeteer from 'puppeteer-core';

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const outDir = spec.outDir;
fs.mkdirSync(outDir, { recursive: true });
const timeoutMs = (spec.timeoutS ?? 180) * 1000; // page load, first image
const stepTimeoutMs = (spec.stepTimeoutS ?? 60) * 1000; // each UI step after that
const WIDTH = 1600;
const HEIGHT = 1000;

const report = {
  spec,
  steps: {},
  failure: null,
  screenshots: {},
  geometry: {},
  srTexts: [],
  console: [],
  errors: [],
  notifications: [],
  timings: {},
};
const t0 = Date.now();
const elapsed = () => Number(((Date.now() - t0) / 1000).toFixed(1));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function writeReport() {
  report.timings.total_s = elapsed();
  fs.writeFileSync(path.join(outDir, 'report.json'), JSON.stringify(report, null, 1));
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dermpacs-chromium-'));
const browser = await puppeteer.launch({
  executablePath: spec.chromium || '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', `--window-size=${WIDTH},${HEIGHT}`,
  ],
  defaultViewport: { width: WIDTH, height: HEIGHT, deviceScaleFactor: 1 },
  protocolTimeout: timeoutMs + 60000,
});

try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on('console', (message) => {
    const entry = { t: elapsed(), type: message.type(), text: message.text() };
    report.console.push(entry);
    if (message.type() === 'error' || message.type() === 'assert') report.errors.push({ ...entry, kind: 'console' });
  });
  page.on('pageerror', (error) => report.errors.push({ t: elapsed(), kind: 'pageerror', text: String(error?.stack || error) }));
  page.on('requestfailed', (request) => {
    const reason = request.failure()?.errorText || '';
    // ERR_ABORTED: OHIF cancels requests it no longer needs (e.g. a frame re-requested by a
    // newer viewport); a real failure (refused, reset, timed out) has another code.
    if (reason !== 'net::ERR_ABORTED') report.errors.push({ t: elapsed(), kind: 'requestfailed', text: `${request.url()} ${reason}` });
  });
  page.on('response', (response) => {
    if (response.status() >= 400) report.errors.push({ t: elapsed(), kind: 'http', text: `${response.status()} ${response.url()}` });
  });
  // The onboarding tour ("Scrolling Through Images", 11 steps) covers the viewport on a
  // fresh profile: mark it as already shown, as OHIF itself does after the first visit.
  await page.evaluateOnNewDocument(() => {
    localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
  });

  // A step ends at once when the page logs an error meanwhile (e.g. OHIF's SEG loader
  // throwing on broken geometry) instead of waiting for its timeout.
  const guarded = async (fn) => {
    const since = report.errors.length;
    let timer;
    const watcher = new Promise((_, reject) => {
      timer = setInterval(() => {
        if (report.errors.length > since) reject(new Error(`the page logged an error: ${report.errors[since].text.slice(0, 300)}`));
      }, 250);
    });
    try {
      return await Promise.race([fn(), watcher]);
    } finally {
      clearInterval(timer);
    }
  };

  const step = async (name, fn) => {
    const start = elapsed();
    try {
      const value = await guarded(fn);
      report.steps[name] = { ok: true, t: elapsed(), duration_s: Number((elapsed() - start).toFixed(1)) };
      return value;
    } catch (error) {
      report.steps[name] = { ok: false, t: elapsed(), error: String(error?.message || error) };
      throw Object.assign(new Error(`${name}: ${error?.message || error}`), { step: name });
    }
  };

  // Where the photograph is on the page: screen coordinates of image points, from Cornerstone.
  const geometry = () => page.evaluate((photoUID) => {
    const cs = window.cornerstone;
    for (const enabled of cs.getEnabledElements()) {
      const viewport = enabled.viewport;
      const imageId = viewport.getCurrentImageId?.();
      if (!imageId || !imageId.includes(photoUID)) continue;
      const plane = cs.metaData.get('imagePlaneModule', imageId) || {};
      const rect = viewport.canvas.getBoundingClientRect();
      const toScreen = (x, y) => {
        const canvas = viewport.worldToCanvas(cs.utilities.imageToWorldCoords(imageId, [x, y]));
        return [rect.left + canvas[0], rect.top + canvas[1]];
      };
      return {
        viewportId: viewport.id,
        imageId,
        rows: plane.rows,
        columns: plane.columns,
        canvas: [rect.left, rect.top, rect.width, rect.height],
        origin: toScreen(0, 0),
        xAxis: toScreen(plane.columns, 0),
        yAxis: toScreen(0, plane.rows),
      };
    }
    return null;
  }, spec.photoSOPInstanceUID);

  // Wait until the page has been quiet (no request in flight for 1.5 s), then one more
  // animation frame pair so Cornerstone has drawn what it loaded.
  const settle = async () => {
    await page.waitForNetworkIdle({ idleTime: 1500, timeout: timeoutMs }).catch(() => {});
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await sleep(1500);
  };

  const shoot = async (name) => {
    await settle();
    const file = path.join(outDir, `${name}.png`);
    report.geometry[name] = await geometry();
    await page.screenshot({ path: file });
    report.screenshots[name] = file;
  };

  const notifications = async () => {
    const texts = await page.evaluate(() => [...document.querySelectorAll('[data-sonner-toast], [role="alert"], [role="status"]')]
      .map((element) => element.innerText.trim()).filter(Boolean));
    for (const text of texts) if (!report.notifications.includes(text)) report.notifications.push(text);
  };

  // Double-click the study-browser entry of the series with this SeriesInstanceUID. (Called
  // once the photo is shown, so the study browser exists; if it is gone, OHIF has crashed.)
  const openSeries = async (seriesUID) => {
    const id = await page.waitForFunction((uid) => {
      if (!document.querySelector('[id^="thumbnail-"]')) return 'crashed';
      const sets = window.services?.displaySetService?.getActiveDisplaySets?.() || [];
      const set = sets.find((s) => s.SeriesInstanceUID === uid);
      return set && document.getElementById(`thumbnail-${set.displaySetInstanceUID}`) ? set.displaySetInstanceUID : false;
    }, { timeout: stepTimeoutMs }, seriesUID).then((handle) => handle.jsonValue());
    if (id === 'crashed') throw new Error('the OHIF page is gone (blank: the app crashed)');
    const thumbnail = await page.$(`[id="thumbnail-${id}"]`);
    await thumbnail.click({ count: 2 });
    return id;
  };

  const clickButton = (label) => page.evaluate((text) => {
    const button = [...document.querySelectorAll('button')].find((b) => b.innerText.trim() === text && b.offsetParent !== null);
    if (!button) return false;
    button.click();
    return true;
  }, label);

  // Each phase runs even when an earlier one failed (the report then shows every fault);
  // only a page that never shows the photograph ends the run.
  const phase = async (fn) => {
    try {
      await fn();
    } catch (error) {
      report.failure = report.failure || String(error?.message || error);
      await page.screenshot({ path: path.join(outDir, 'failure.png') }).catch(() => {});
      report.screenshots.failure = path.join(outDir, 'failure.png');
      return false;
    }
    return true;
  };

  const photoShown = await phase(async () => {
    await step('open viewer', async () => {
      await page.goto(`${spec.url}/viewer?StudyInstanceUIDs=${encodeURIComponent(spec.studyUID)}`, { waitUntil: 'domcontentloaded' });
    });
    await step('photo displayed', async () => {
      await page.waitForFunction((photoUID) => {
        const cs = window.cornerstone;
        if (!cs?.getEnabledElements) return false;
        return cs.getEnabledElements().some((e) => {
          const imageId = e.viewport.getCurrentImageId?.();
          return imageId && imageId.includes(photoUID) && e.viewport.getImageData?.();
        });
      }, { timeout: timeoutMs, polling: 500 }, spec.photoSOPInstanceUID);
      await shoot('1-photo');
    });
  });

  if (photoShown && spec.segSeriesUID) {
    await phase(async () => {
      await step('SEG opened', async () => {
        await openSeries(spec.segSeriesUID);
        // OHIF previews the SEG and asks before hydrating it onto the photo's viewport.
        const deadline = Date.now() + stepTimeoutMs;
        while (!(await clickButton('Yes'))) {
          if (Date.now() > deadline) throw new Error('no "Do you want to open this Segmentation?" prompt');
          await sleep(500);
        }
      });
      const segmentation = await step('SEG hydrated', async () => {
        const handle = await page.waitForFunction((photoUID) => {
          const { segmentationService } = window.services;
          for (const enabled of window.cornerstone.getEnabledElements()) {
            const viewport = enabled.viewport;
            if (!viewport.getCurrentImageId?.()?.includes(photoUID)) continue;
            const reps = segmentationService.getSegmentationRepresentations(viewport.id) || [];
            if (!reps.length) continue;
            const segmentation = segmentationService.getSegmentation(reps[0].segmentationId);
            const segments = Object.values(segmentation?.segments || {}).filter(Boolean)
              .map((s) => ({ index: s.segmentIndex, label: s.label }));
            return { viewportId: viewport.id, segmentationId: reps[0].segmentationId, segments };
          }
          return false;
        }, { timeout: stepTimeoutMs, polling: 500 }, spec.photoSOPInstanceUID);
        return handle.jsonValue();
      });
      report.segmentation = segmentation;
      await shoot('2-seg');
      await step('lesion segments only', async () => {
        const hide = segmentation.segments.filter((s) => (spec.hideSegmentLabels || []).includes(s.label));
        await page.evaluate(({ viewportId, segmentationId, indices }) => {
          for (const index of indices) window.services.segmentationService.setSegmentVisibility(viewportId, segmentationId, index, false);
        }, { viewportId: segmentation.viewportId, segmentationId: segmentation.segmentationId, indices: hide.map((s) => s.index) });
        await shoot('3-lesion');
      });
    });
    await notifications();
  }
  if (photoShown) {
    await phase(async () => {
      await step('SR opened', async () => {
        await openSeries(spec.srSeriesUID);
        const textShown = (ms) => page.waitForFunction((label) => [...document.querySelectorAll('svg text')]
          .some((t) => t.textContent.includes(label)), { timeout: ms, polling: 500 }, spec.measurementLabel)
          .then(() => true, () => false);
        const srState = () => page.evaluate(() => {
          const annotations = window.cornerstoneTools.annotation.state.getAllAnnotations();
          return { annotations: annotations.length, tools: [...new Set(annotations.map((a) => a.metadata?.toolName))] };
        });
        if (!(await textShown(10000))) {
          // OHIF 3.13.2 sometimes (1 run in 3 here) adds the SR's DICOMSRDisplay annotation
          // after the viewport's last render, and nothing draws it until the next render (a
          // user's first interaction). Render once, as that interaction would, and say so.
          report.srNudges = [{ t: elapsed(), what: 'SR annotation not drawn after 10 s: forced one render', ...(await srState()) }];
          await page.evaluate(() => window.cornerstone.getRenderingEngines().forEach((engine) => engine.render()));
        }
        await page.waitForFunction((label) => [...document.querySelectorAll('svg text')]
          .some((t) => t.textContent.includes(label)), { timeout: stepTimeoutMs, polling: 500 }, spec.measurementLabel);
        await shoot('4-sr');
        report.srTexts = await page.evaluate(() => {
          const viewports = [...document.querySelectorAll('.cornerstone-viewport-element, [data-viewport-uid]')]
            .map((e) => e.getBoundingClientRect());
          return [...document.querySelectorAll('svg text tspan, svg text')].map((node) => {
            const r = node.getBoundingClientRect();
            return { tag: node.tagName, text: node.textContent, rect: [r.left, r.top, r.width, r.height], fill: getComputedStyle(node).fill };
          }).concat(viewports.map((r) => ({ tag: 'viewport', text: '', rect: [r.left, r.top, r.width, r.height] })));
        });
      });
    });
  }
  await notifications().catch(() => {});
} finally {
  writeReport();
  await browser.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
