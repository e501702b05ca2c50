"""The Review tab's annotation canvas: a ``gr.HTML`` whose script draws the image, masks and boxes
on a <canvas> that fits the window, with zoom (wheel, + / -), pan (Shift- or right-drag, or drag on
empty space with Space held), drag to draw, handles to resize, Alt+click to add a point that
refines the selected label's mask (Alt+Shift+click: a point outside the object; shown as green / red
dots), a class legend with counts, toggles for labels and masks, undo / redo, an image strip and a
keyboard help overlay (?).

Its value is ``review.canvas_value``'s dict (boxes in original pixels). Every finished gesture is
one ``edit`` event with ``{"action": ..., ...}`` for the server, which saves it and sends the new
value back; the canvas never keeps an edit of its own. Text from the run (class and file names)
is only ever set with ``textContent``.
"""

from __future__ import annotations

import gradio as gr

TEMPLATE = """
<div class="al-review">
  <div class="al-toolbar">
    <button data-act="fit" title="Fit to window (0)">Fit</button>
    <button data-act="zoom-in" title="Zoom in (+)">+</button>
    <button data-act="zoom-out" title="Zoom out (-)">−</button>
    <label><input type="checkbox" data-toggle="labels" checked> labels (l)</label>
    <label><input type="checkbox" data-toggle="masks" checked> masks (m)</label>
    <button data-act="undo" title="Undo (Ctrl+Z)">Undo</button>
    <button data-act="redo" title="Redo (Ctrl+Shift+Z)">Redo</button>
    <button data-act="clear-points" title="Back to the selected label's mask from its box alone">Clear points</button>
    <button data-act="help" title="Keyboard shortcuts (?)">?</button>
    <span class="al-legend"></span>
  </div>
  <div class="al-stage"><canvas></canvas>
    <div class="al-help" hidden>
      <b>Keyboard and mouse</b>
      <ul>
        <li>Drag on the image: draw a box (of the class chosen on the right)</li>
        <li>Click a box: select it · drag it: move · drag a handle: resize</li>
        <li>Alt+click: a point on the selected label's object, Alt+Shift+click: a point off it; its mask is
            remade from its box and points (with "Masks for my boxes (SAM)") · Clear points: its box's mask</li>
        <li>Wheel or + / −: zoom · Shift-drag, right-drag or Space-drag: pan · 0: fit</li>
        <li>Ctrl+Z: undo · Ctrl+Shift+Z or Ctrl+Y: redo · l: labels · m: masks</li>
        <li>n / →: next image · p / ←: previous · a: accept image</li>
        <li>y: accept label · r: reject label · x / Delete: delete label · ?: this help · Esc: close</li>
      </ul>
    </div>
  </div>
  <div class="al-strip"></div>
</div>
"""

CSS = """
.al-review { display: flex; flex-direction: column; gap: 4px; }
.al-toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; font-size: 0.9em; }
.al-toolbar button { padding: 1px 8px; border: 1px solid #999; border-radius: 4px; background: transparent; }
.al-toolbar button:disabled { opacity: 0.4; }
/* Gradio's theme draws every checkbox blank; these are plain browser checkboxes. */
.al-toolbar input[type=checkbox] { appearance: auto; -webkit-appearance: checkbox; accent-color: #f97316; }
.al-legend { display: flex; flex-wrap: wrap; gap: 8px; }
.al-legend span i { display: inline-block; width: 10px; height: 10px; margin-right: 3px; border-radius: 2px; }
.al-stage { position: relative; height: 480px; flex: none; background: #222;
            border-radius: 4px; overflow: hidden; }
.al-stage canvas { width: 100%; height: 100%; display: block; cursor: crosshair; touch-action: none; }
.al-help { position: absolute; inset: 10% 10%; background: rgba(0,0,0,0.85); color: #fff; padding: 12px 16px;
           border-radius: 6px; overflow: auto; font-size: 0.9em; }
/* A fixed height (thumbnails and a thin scrollbar): fitStage gives the stage the rest of the window. */
.al-strip { display: flex; flex: none; gap: 4px; height: 56px; overflow-x: auto; scrollbar-width: thin; }
.al-strip button { flex: none; padding: 0; border: 2px solid transparent; background: #333; height: 48px;
                   min-width: 40px; color: #ddd; font-size: 0.75em; }
.al-strip button.current { border-color: #e69f00; }
.al-strip button.reviewed { opacity: 0.6; }
.al-strip img { height: 44px; display: block; }
"""

JS = r"""
const root = element.querySelector('.al-review');
const canvas = root.querySelector('canvas');
const ctx = canvas.getContext('2d');
const help = root.querySelector('.al-help');
const view = {scale: 1, x: 0, y: 0, labels: true, masks: true, fitted: false};
let data = null, image = new Image(), masks = new Image();
let drag = null, space = false;
const HANDLE = 7;
const STRIP_HEIGHT = 60;  // .al-strip's height and the gap above it

function loadValue() {
  fitStage();
  data = props.value && typeof props.value === 'object' ? props.value : null;
  if (!data || !data.image) { draw(); renderSide(); return; }
  const fresh = image.dataset.key !== data.key;
  image = new Image(); image.dataset.key = data.key;
  image.onload = () => { if (fresh) fit(); draw(); };
  image.src = data.image;
  masks = new Image(); masks.onload = draw;
  if (data.masks) masks.src = data.masks;
  renderSide();
}

function fitStage() {
  // The stage takes the window's height from its top down to the image strip (and the page's bottom
  // margin), so the whole image and the strip show at once; where that leaves too little (a canvas
  // far down the page, a tiny window) it keeps a usable height and the page scrolls.
  const stage = root.querySelector('.al-stage');
  if (root.offsetParent === null) return;  // the tab is hidden: nothing to measure
  const top = stage.getBoundingClientRect().top + window.scrollY;
  const room = window.innerHeight - top - STRIP_HEIGHT - 16;
  const h = room >= 240 ? room : 360;
  if (Math.abs(stage.offsetHeight - h) > 1) stage.style.height = `${Math.round(h)}px`;
}

function resizeCanvas() {
  const r = canvas.getBoundingClientRect();
  if (canvas.width !== Math.round(r.width) || canvas.height !== Math.round(r.height)) {
    canvas.width = Math.round(r.width); canvas.height = Math.round(r.height);
    if (!view.fitted) fit();
  }
}

function fit() {
  if (!data) return;
  resizeCanvas();
  const s = Math.min(canvas.width / data.width, canvas.height / data.height);
  view.scale = s; view.x = (canvas.width - data.width * s) / 2; view.y = (canvas.height - data.height * s) / 2;
  view.fitted = canvas.width > 0; draw();
}

function zoom(factor, cx, cy) {
  if (cx === undefined) { cx = canvas.width / 2; cy = canvas.height / 2; }
  const s = Math.min(Math.max(view.scale * factor, 0.05), 40);
  view.x = cx - (cx - view.x) * s / view.scale; view.y = cy - (cy - view.y) * s / view.scale; view.scale = s; draw();
}

const toScreen = (b) => [b[0] * view.scale + view.x, b[1] * view.scale + view.y,
                         b[2] * view.scale + view.x, b[3] * view.scale + view.y];
const toWorld = (px, py) => [(px - view.x) / view.scale, (py - view.y) / view.scale];

function boxes() {
  if (!data) return [];
  if (drag && drag.box) return data.boxes.map(b => b.id === drag.id ? {...b, xyxy: drag.box} : b)
                                    .concat(drag.kind === 'draw' ? [{id: null, xyxy: drag.box, color: '#ff00ff', text: ''}] : []);
  return data.boxes;
}

function draw() {
  resizeCanvas();
  ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!data || !image.complete || !image.naturalWidth) return;
  ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
  ctx.drawImage(image, 0, 0, data.width, data.height);
  // Where the image lands on the canvas (canvas pixels): the layout tests read it.
  root.dataset.imageBox = toScreen([0, 0, data.width, data.height]).map(v => v.toFixed(1)).join(',');
  const showMasks = Boolean(view.masks && data.masks && masks.complete && masks.naturalWidth);
  if (showMasks) ctx.drawImage(masks, 0, 0, data.width, data.height);
  root.dataset.masks = showMasks ? 'drawn' : 'none';  // the browser tests read it too
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.font = '12px sans-serif';
  for (const b of boxes()) {
    const [x0, y0, x1, y1] = toScreen(b.xyxy);
    const selected = b.id !== null && b.id === data.selected;
    ctx.setLineDash(b.rejected ? [5, 4] : []);
    ctx.lineWidth = selected ? 3 : 2; ctx.strokeStyle = b.color; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
    if (selected) {
      ctx.fillStyle = '#fff';
      for (const [hx, hy] of corners([x0, y0, x1, y1])) ctx.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
    }
    if (view.labels && b.text) {
      const w = ctx.measureText(b.text).width + 6, ty = y0 - 16 >= 0 ? y0 - 16 : y0;
      ctx.fillStyle = b.color; ctx.fillRect(x0, ty, w, 16);
      ctx.fillStyle = b.dark_text ? '#000' : '#fff'; ctx.fillText(b.text, x0 + 3, ty + 12);
    }
  }
  const points = data.points || [];
  for (const p of points) {
    const [sx, sy] = toScreen([p.x, p.y, p.x, p.y]);
    ctx.beginPath(); ctx.arc(sx, sy, 5, 0, 2 * Math.PI);
    ctx.fillStyle = p.positive ? '#22c55e' : '#ef4444'; ctx.fill();
    ctx.lineWidth = 1.5; ctx.strokeStyle = '#fff'; ctx.stroke();
  }
  root.dataset.points = String(points.length);  // the browser tests read it
}

const corners = (s) => [[s[0], s[1]], [s[2], s[1]], [s[0], s[3]], [s[2], s[3]]];

function hit(px, py) {
  const list = boxes();
  const sel = list.find(b => b.id === data.selected);
  if (sel) {
    const k = corners(toScreen(sel.xyxy)).findIndex(([hx, hy]) => Math.abs(hx - px) <= HANDLE && Math.abs(hy - py) <= HANDLE);
    if (k >= 0) return {kind: 'resize', id: sel.id, corner: k, start: sel.xyxy.slice()};
  }
  // the smallest box under the pointer, so a box inside another stays reachable
  let best = null;
  for (const b of list) {
    const [x0, y0, x1, y1] = toScreen(b.xyxy);
    if (px >= x0 && px <= x1 && py >= y0 && py <= y1 && (!best || (x1 - x0) * (y1 - y0) < best.area))
      best = {b, area: (x1 - x0) * (y1 - y0)};
  }
  return best ? {kind: 'move', id: best.b.id, start: best.b.xyxy.slice()} : null;
}

function pointer(event) {
  const r = canvas.getBoundingClientRect();
  return [event.clientX - r.left, event.clientY - r.top];
}

canvas.addEventListener('pointerdown', (event) => {
  if (!data) return;
  canvas.setPointerCapture(event.pointerId);
  const [px, py] = pointer(event);
  if (event.altKey && event.button === 0) { addPoint(px, py, !event.shiftKey); return; }
  if (event.button === 2 || event.button === 1 || event.shiftKey || space) {
    drag = {kind: 'pan', px, py, x: view.x, y: view.y}; return;
  }
  const h = hit(px, py);
  const [wx, wy] = toWorld(px, py);
  drag = h ? {...h, px, py, wx, wy, moved: false} : {kind: 'draw', id: null, wx, wy, px, py, box: null, moved: false};
});

canvas.addEventListener('pointermove', (event) => {
  if (!drag) return;
  const [px, py] = pointer(event);
  if (drag.kind === 'pan') { view.x = drag.x + px - drag.px; view.y = drag.y + py - drag.py; draw(); return; }
  if (Math.abs(px - drag.px) + Math.abs(py - drag.py) > 3) drag.moved = true;
  if (!drag.moved) return;
  const [wx, wy] = toWorld(px, py);
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const W = data.width, H = data.height;
  if (drag.kind === 'draw') {
    drag.box = [clamp(Math.min(drag.wx, wx), W), clamp(Math.min(drag.wy, wy), H),
                clamp(Math.max(drag.wx, wx), W), clamp(Math.max(drag.wy, wy), H)];
  } else if (drag.kind === 'move') {
    const s = drag.start, w = s[2] - s[0], h = s[3] - s[1];
    const x0 = clamp(s[0] + wx - drag.wx, W - w), y0 = clamp(s[1] + wy - drag.wy, H - h);
    drag.box = [x0, y0, x0 + w, y0 + h];
  } else if (drag.kind === 'resize') {
    const b = drag.start.slice(), cx = clamp(wx, W), cy = clamp(wy, H);
    if (drag.corner === 0 || drag.corner === 2) b[0] = cx; else b[2] = cx;
    if (drag.corner < 2) b[1] = cy; else b[3] = cy;
    drag.box = [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
  }
  draw();
});

function addPoint(px, py, positive) {
  // A click on the image with a label selected: shown at once, saved (with the new mask) by the server.
  const [wx, wy] = toWorld(px, py);
  if (data.selected === null || data.selected === undefined) return;
  if (wx < 0 || wy < 0 || wx > data.width || wy > data.height) return;
  const point = {x: Math.round(wx * 100) / 100, y: Math.round(wy * 100) / 100, positive};
  data.points = (data.points || []).concat([point]); draw();
  trigger('edit', {action: 'point', id: data.selected, ...point});
}

function finish(event) {
  if (!drag) return;
  const d = drag; drag = null;
  if (d.kind === 'pan') return;
  if (!d.moved || !d.box) {
    if (d.id !== null && d.id !== undefined) { data.selected = d.id; draw(); trigger('edit', {action: 'select', id: d.id}); }
    else draw();
    return;
  }
  if (d.box[2] - d.box[0] < 1 || d.box[3] - d.box[1] < 1) { draw(); return; }
  const box = d.box.map(v => Math.round(v * 100) / 100);
  if (d.kind === 'draw') trigger('edit', {action: 'add', box});
  else trigger('edit', {action: 'move', id: d.id, box});
  // keep the new place on screen until the server's answer replaces it
  data.boxes = data.boxes.map(b => b.id === d.id ? {...b, xyxy: box} : b);
  if (d.kind === 'draw') data.boxes = data.boxes.concat([{id: -1, xyxy: box, color: '#ff00ff', text: ''}]);
  draw();
}
canvas.addEventListener('pointerup', finish);
canvas.addEventListener('pointercancel', () => { drag = null; draw(); });
canvas.addEventListener('contextmenu', (event) => event.preventDefault());
canvas.addEventListener('wheel', (event) => {
  event.preventDefault();
  const [px, py] = pointer(event);
  zoom(Math.exp(-event.deltaY / 500), px, py);
}, {passive: false});

function renderSide() {
  const legend = root.querySelector('.al-legend');
  legend.replaceChildren();
  for (const c of (data && data.legend) || []) {
    const item = document.createElement('span'), swatch = document.createElement('i');
    swatch.style.background = c.color; item.append(swatch, document.createTextNode(`${c.name}: ${c.count}`));
    legend.append(item);
  }
  root.querySelectorAll('[data-toggle]').forEach(box => { box.checked = view[box.dataset.toggle]; });
  root.querySelector('[data-act=undo]').disabled = !(data && data.can_undo);
  root.querySelector('[data-act=redo]').disabled = !(data && data.can_redo);
  root.querySelector('[data-act=clear-points]').disabled = !(data && data.points && data.points.length);
  const strip = root.querySelector('.al-strip');
  strip.replaceChildren();
  for (const s of (data && data.strip) || []) {
    const b = document.createElement('button');
    b.title = s.name; b.dataset.pos = s.pos;
    if (s.current) b.classList.add('current');
    if (s.reviewed) b.classList.add('reviewed');
    if (s.thumb) { const im = document.createElement('img'); im.src = s.thumb; im.alt = s.name; b.append(im); }
    else b.textContent = String(s.pos + 1);
    b.addEventListener('click', () => trigger('edit', {action: 'jump', pos: s.pos}));
    strip.append(b);
  }
}

function act(name) {
  if (name === 'fit') fit();
  else if (name === 'zoom-in') zoom(1.25);
  else if (name === 'zoom-out') zoom(0.8);
  else if (name === 'help') help.hidden = !help.hidden;
  else if ((name === 'undo' || name === 'redo') && data) trigger('edit', {action: name});
  else if (name === 'clear-points' && data && data.selected !== null && data.selected !== undefined)
    trigger('edit', {action: 'clear-points', id: data.selected});
}
root.querySelectorAll('[data-act]').forEach(b => b.addEventListener('click', () => act(b.dataset.act)));
root.querySelectorAll('[data-toggle]').forEach(box => box.addEventListener('change', () => {
  view[box.dataset.toggle] = box.checked; draw();
}));

function toggle(name) {
  const box = root.querySelector(`[data-toggle=${name}]`); box.checked = !box.checked; view[name] = box.checked; draw();
}

document.addEventListener('keydown', (event) => {
  const t = event.target;
  if (root.offsetParent === null) return;  // the Review tab is not shown
  if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
  const key = event.key, mod = event.ctrlKey || event.metaKey;
  if (key === ' ') { space = true; event.preventDefault(); return; }
  let done = true;
  if (mod && key.toLowerCase() === 'z') act(event.shiftKey ? 'redo' : 'undo');
  else if (mod && key.toLowerCase() === 'y') act('redo');
  else if (mod || event.altKey) done = false;
  else if (key === '?') act('help');
  else if (key === 'Escape' && !help.hidden) help.hidden = true;
  else if (key === 'l') toggle('labels');
  else if (key === 'm') toggle('masks');
  else if (key === '0') fit();
  else if (key === '+' || key === '=') zoom(1.25);
  else if (key === '-') zoom(0.8);
  else done = false;
  if (done) event.preventDefault();
});
document.addEventListener('keyup', (event) => { if (event.key === ' ') space = false; });
new ResizeObserver(() => { fitStage(); view.fitted = false; fit(); }).observe(canvas);
window.addEventListener('resize', fitStage);
// Content above the stage (a wrapped legend or status line) moves it: fit again when the page changes.
new ResizeObserver(() => fitStage()).observe(document.body);
fitStage();
watch('value', loadValue);
loadValue();
"""


def review_canvas(elem_id: str = "review-canvas") -> gr.HTML:
    """The canvas component; listen to its ``edit`` event (``canvas.edit(fn, inputs, outputs)``)."""
    return gr.HTML(value=None, html_template=TEMPLATE, css_template=CSS, js_on_load=JS, elem_id=elem_id,
                   apply_default_css=False)
