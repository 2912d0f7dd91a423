// Entry page of `structome serve`: fragment selector, pdbe-molstar viewer, PAE heatmap, pLDDT plot.
// Test hooks: window.viewerInstance; document.body.dataset.viewerState = loading | loaded | failed
// (+ dataset.viewerMessage); canvas#pae data-drawn="true"; svg#plddt-plot data-drawn="true" with one
// rect.bar per residue.
(function () {
  'use strict';

  const page = JSON.parse(document.getElementById('page-data').textContent);
  const entries = page.entries;
  const SVG = 'http://www.w3.org/2000/svg';
  // matplotlib "Greens_r", AlphaFold DB's PAE colours, as storage/pae_image.py draws the PNG: 0 Å dark green,
  // the maximum error near white; 256 colours, index = min(floor(256 * PAE / max), 255).
  const PAE_RAMP = ['#00441b', '#006d2c', '#238b45', '#41ab5d', '#74c476', '#a1d99b', '#c7e9c0', '#e5f5e0', '#f7fcf5'];
  const VIEWER_OPTIONS = {
    alphafoldView: true,
    bgColor: { r: 255, g: 255, b: 255 },
    hideCanvasControls: ['selection', 'animation', 'controlToggle', 'controlInfo'],
    sequencePanel: true,
    landscape: true,
    leftPanel: false,
    rightPanel: false,
    logPanel: false,
    pdbeLink: false,
  };
  let current = null;
  let viewer = null;
  let viewerShows = null;  // cifUrl of the model shown (or loading); null before the first load
  let viewerQueue = Promise.resolve();

  // A failure is final: its message replaces the viewer.
  function setViewerState(state, message) {
    if (document.body.dataset.viewerState === 'failed') return;
    document.body.dataset.viewerState = state;
    if (message) {
      document.body.dataset.viewerMessage = message;
      const box = document.getElementById('viewer');
      box.classList.add('unavailable');
      box.replaceChildren();
      const p = document.createElement('p');
      p.className = 'viewer-message';
      p.id = 'viewer-message';
      p.textContent = message;
      box.appendChild(p);
    }
  }

  // Viewer loads run one after another (a fragment chosen during a load waits for it), always for the
  // fragment selected when the load starts; the page reports 'loaded' only for the selected one.
  function showStructure() {
    if (document.body.dataset.viewerState === 'failed') return;
    if (!page.viewer) {
      setViewerState('failed', document.getElementById('viewer-message').textContent);
      return;
    }
    if (typeof window.PDBeMolstarPlugin !== 'function') {
      setViewerState('failed', 'The 3D viewer script could not be loaded from this server.');
      return;
    }
    setViewerState('loading');
    viewerQueue = viewerQueue.then(loadSelected).catch(function (error) {
      console.error('viewer:', error);
      setViewerState('failed', 'The 3D viewer could not show this model (' + (error && error.message || error) +
        '). WebGL may be unavailable in this browser.');
    });
  }

  function loadSelected() {
    const entry = current;
    if (viewerShows === entry.cifUrl) {
      setViewerState('loaded');
      return undefined;
    }
    if (viewer === null) {
      viewer = new window.PDBeMolstarPlugin();
      window.viewerInstance = viewer;
    }
    const finished = new Promise(function (resolve) {
      const subscription = viewer.events.loadComplete.subscribe(function (ok) {
        subscription.unsubscribe();
        resolve(ok);
      });
    });
    const options = Object.assign({}, VIEWER_OPTIONS, { customData: { url: entry.cifUrl, format: 'cif', binary: false } });
    const started = viewerShows === null
      ? viewer.render(document.getElementById('viewer'), options)
      : viewer.visual.update(options, true).then(function (accepted) {
        if (accepted === false) throw new Error('viewer options refused');
      });
    viewerShows = entry.cifUrl;
    return Promise.all([finished, started]).then(function (results) {
      if (!results[0]) {
        viewerShows = undefined;
        throw new Error('could not load ' + entry.cifUrl);
      }
      if (current === entry) setViewerState('loaded');
    });
  }

  function fetchJson(url) {
    return fetch(url, { credentials: 'same-origin' }).then(function (response) {
      if (!response.ok) throw new Error(url + ': HTTP ' + response.status);
      return response.json();
    });
  }

  function hexToRgb(hex) {
    const v = parseInt(hex.slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  // 256-entry lookup table interpolating the ramp linearly.
  function rampTable(ramp) {
    const stops = ramp.map(hexToRgb);
    const table = new Uint8ClampedArray(256 * 3);
    for (let k = 0; k < 256; k++) {
      const x = k / 255 * (stops.length - 1);
      const i = Math.min(Math.floor(x), stops.length - 2);
      const f = x - i;
      for (let c = 0; c < 3; c++) table[3 * k + c] = Math.round(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
    }
    return table;
  }

  function niceStep(extent, maxTicks) {
    for (const step of [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000]) {
      if (extent / step <= maxTicks) return step;
    }
    return 10000;
  }

  function axisTicks(container, n, vertical) {
    container.replaceChildren();
    const step = niceStep(n, 8);
    for (let r = step; r <= n; r += step) {
      const tick = document.createElement('span');
      tick.textContent = String(r);
      tick.style[vertical ? 'top' : 'left'] = ((r - 0.5) / n * 100) + '%';
      container.appendChild(tick);
    }
  }

  function drawPae(document_) {
    const canvas = document.getElementById('pae');
    const pae = document_[0].predicted_aligned_error;
    const max = document_[0].max_predicted_aligned_error || 31.75;
    const n = pae.length;
    canvas.width = n;
    canvas.height = n;
    const context = canvas.getContext('2d');
    const image = context.createImageData(n, n);
    const table = rampTable(PAE_RAMP);
    for (let i = 0; i < n; i++) {
      const line = pae[i];
      for (let j = 0; j < n; j++) {
        const k = Math.min(Math.max(Math.floor(256 * line[j] / max), 0), 255);
        const o = 4 * (i * n + j);
        image.data[o] = table[3 * k];
        image.data[o + 1] = table[3 * k + 1];
        image.data[o + 2] = table[3 * k + 2];
        image.data[o + 3] = 255;
      }
    }
    context.putImageData(image, 0, 0);
    axisTicks(document.getElementById('pae-ticks-x'), n, false);
    axisTicks(document.getElementById('pae-ticks-y'), n, true);
    document.getElementById('pae-scale').style.background = 'linear-gradient(to right, ' + PAE_RAMP.join(', ') + ')';
    const scaleTicks = document.getElementById('pae-scale-ticks');
    scaleTicks.replaceChildren();
    for (let v = 0; v <= max; v += 5) {
      const tick = document.createElement('span');
      tick.textContent = String(v);
      tick.style.left = (v / max * 100) + '%';
      scaleTicks.appendChild(tick);
    }
    canvas.dataset.drawn = 'true';
    canvas.dataset.entryId = current.entryId;
    document.getElementById('pae-status').textContent = '';
  }

  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const key in attributes) element.setAttribute(key, attributes[key]);
    if (parent) parent.appendChild(element);
    return element;
  }

  function bandColour(score) {
    for (const band of page.bands) if (band.min === null || score >= band.min) return band.colour;
    return page.bands[page.bands.length - 1].colour;
  }

  function drawPlddt(confidence) {
    const plot = document.getElementById('plddt-plot');
    plot.replaceChildren();
    const scores = confidence.confidenceScore;
    const residues = confidence.residueNumber;
    const n = scores.length;
    const left = 44, right = 10, top = 10, bottom = 40, width = 800 - left - right, height = 260 - top - bottom;
    const y = function (v) { return top + height * (1 - v / 100); };
    for (const v of [0, 50, 70, 90, 100]) {
      svg('line', { x1: left, x2: left + width, y1: y(v), y2: y(v), class: 'grid' }, plot);
      svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, plot).textContent = String(v);
    }
    const w = width / n;
    for (let i = 0; i < n; i++) {
      const bar = svg('rect', { x: left + i * w, y: y(scores[i]), width: Math.max(w, 0.5),
        height: y(0) - y(scores[i]), fill: bandColour(scores[i]), class: 'bar' }, plot);
      svg('title', {}, bar).textContent = 'Residue ' + residues[i] + ': pLDDT ' + scores[i];
    }
    const step = niceStep(n, 10);
    for (let r = step; r <= n; r += step) {
      svg('text', { x: left + (r - 0.5) * w, y: top + height + 16, 'text-anchor': 'middle', class: 'tick' }, plot)
        .textContent = String(r);
    }
    svg('text', { x: left + width / 2, y: 256, 'text-anchor': 'middle', class: 'axis' }, plot).textContent = 'Residue';
    svg('text', { x: 12, y: top + height / 2, 'text-anchor': 'middle', class: 'axis',
      transform: 'rotate(-90 12 ' + (top + height / 2) + ')' }, plot).textContent = 'pLDDT';
    plot.dataset.drawn = 'true';
    plot.dataset.residues = String(n);
    document.getElementById('plddt-status').textContent = '';
  }

  function failed(statusId) {
    return function (error) {
      console.error(error);
      document.getElementById(statusId).textContent = 'Could not load: ' + error.message;
    };
  }

  function show(entryId) {
    const entry = entries.find(function (e) { return e.entryId === entryId; }) || entries[0];
    if (current !== null && current.entryId === entry.entryId) return;
    current = entry;
    for (const section of document.querySelectorAll('section.fragment')) {
      section.hidden = section.dataset.entryId !== entry.entryId;
    }
    const selector = document.getElementById('fragment');
    if (selector) selector.value = entry.entryId;
    document.getElementById('pae').dataset.drawn = 'false';
    document.getElementById('plddt-plot').dataset.drawn = 'false';
    fetchJson(entry.paeDocUrl).then(function (d) { if (current === entry) drawPae(d); }).catch(failed('pae-status'));
    fetchJson(entry.plddtDocUrl).then(function (d) { if (current === entry) drawPlddt(d); })
      .catch(failed('plddt-status'));
    showStructure();
  }

  const selector = document.getElementById('fragment');
  if (selector) {
    selector.addEventListener('change', function () { location.hash = selector.value; });
  }
  function selected() {
    try {
      return decodeURIComponent(location.hash.slice(1)) || page.initial;
    } catch (error) {  // a malformed #fragment
      return page.initial;
    }
  }
  window.addEventListener('hashchange', function () { show(selected()); });
  show(selected());
}());
