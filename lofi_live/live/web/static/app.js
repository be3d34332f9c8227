// lofi-live control surface: the live status over server-sent events, knobs and buttons that POST
// /api/control, the piano roll drawn from the snapshot's recent steps, the recorded sessions.
// No framework, no build step: this file is served as it is.
"use strict";

const TOKEN = document.querySelector('meta[name="lofi-token"]').content;
const ROLL_STEPS = 64;            // grid steps shown: 8 bars of 4/4 at 0.5 beat a step
const STEPS_PER_BAR = 8;
const MIN_ROWS = 24;              // pitch rows shown at least (two octaves)
const SEND_MS = 50;               // a moving knob sends at most 20 values a second
const HOLD_MS = 600;              // the status does not move a knob for this long after the player touched it
const NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
const noteName = (pitch) => NAMES[pitch % 12] + (Math.floor(pitch / 12) - 1);

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + TOKEN }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
}

function say(text) {
  $(".feedback").textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Sending controls: the latest value of each control, at most every SEND_MS

const pending = new Map();
const touched = new Map();        // control name -> when the player last moved it
let sendTimer = null;

function control(name, value) {
  touched.set(name, performance.now());
  pending.set(name, value);
  if (sendTimer === null) {
    flush();
    sendTimer = setInterval(() => { if (pending.size === 0) { clearInterval(sendTimer); sendTimer = null; } else flush(); }, SEND_MS);
  }
}

function flush() {
  for (const [name, value] of pending) {
    pending.delete(name);
    api("/api/control", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name, value }) })
      .then(async (answer) => {
        if (!answer.ok) say((await answer.json().catch(() => ({}))).error || "refused (" + answer.status + ")");
        else if (name === "panic" || name === "mutate") say(name + " sent");
      })
      .catch(() => say("the instrument is not answering"));
  }
}

function recentlyTouched(name) {
  return performance.now() - (touched.get(name) || -1e9) < HOLD_MS;
}

// ---------------------------------------------------------------------------------------------
// Knobs: role="slider", dragged up and down, turned with the wheel or the arrow keys

class Knob {
  constructor(cell, spec) {
    this.name = cell.dataset.knob;
    this.spec = spec;
    this.field = cell.dataset.statusField;
    this.digits = Number(cell.dataset.format || 0);
    this.unit = cell.dataset.unit || "";
    this.value = spec.min;
    const id = "knob-" + this.name;
    cell.innerHTML = "";
    const label = document.createElement("span");
    label.className = "knob-label";
    label.id = id + "-label";
    label.textContent = cell.dataset.label;
    const el = document.createElement("div");
    el.className = "knob";
    el.tabIndex = 0;
    el.setAttribute("role", "slider");
    el.setAttribute("aria-labelledby", label.id);
    el.setAttribute("aria-valuemin", spec.min);
    el.setAttribute("aria-valuemax", spec.max);
    el.setAttribute("aria-orientation", "vertical");
    el.dataset.control = this.name;
    el.innerHTML = '<svg viewBox="0 0 100 100" aria-hidden="true"><circle class="ring" cx="50" cy="50" r="44"/>' +
      '<path class="arc-bg" d=""/><path class="arc" d=""/><circle class="cap" cx="50" cy="50" r="30"/>' +
      '<line class="pointer" x1="50" y1="50" x2="50" y2="24"/></svg>';
    this.readout = document.createElement("span");
    this.readout.className = "lcd knob-value";
    this.readout.setAttribute("aria-hidden", "true");
    cell.append(label, el, this.readout);
    this.el = el;
    $(".arc-bg", el).setAttribute("d", arc(-135, 135));
    this.bind();
    this.show(spec.min);
  }

  step(big) {
    const span = this.spec.max - this.spec.min;
    const unit = this.spec.whole ? 1 : span / 100;
    return big ? Math.max(unit, span / 10) : unit;
  }

  set(value) {
    let v = Math.min(this.spec.max, Math.max(this.spec.min, value));
    v = this.spec.whole ? Math.round(v) : Math.round(v * 1000) / 1000;
    if (v === this.value) return;
    this.show(v);
    control(this.name, v);
  }

  show(value) {
    this.value = value;
    const f = Math.min(1, Math.max(0, (value - this.spec.min) / (this.spec.max - this.spec.min || 1)));  // --bpm 40: at the end
    const angle = -135 + 270 * f;
    $(".pointer", this.el).setAttribute("transform", "rotate(" + angle + " 50 50)");
    $(".arc", this.el).setAttribute("d", arc(-135, angle));
    const text = value.toFixed(this.digits) + this.unit;
    this.readout.textContent = text;
    this.el.setAttribute("aria-valuenow", value);
    this.el.setAttribute("aria-valuetext", text);
  }

  follow(status) {
    const value = status[this.field];
    if (typeof value === "number" && !recentlyTouched(this.name) && !this.dragging) this.show(value);
  }

  bind() {
    const el = this.el;
    el.addEventListener("keydown", (event) => {
      const keys = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
      if (event.key in keys) this.set(this.value + Math.sign(keys[event.key]) * this.step(Math.abs(keys[event.key]) > 1));
      else if (event.key === "Home") this.set(this.spec.min);
      else if (event.key === "End") this.set(this.spec.max);
      else return;
      event.preventDefault();
    });
    el.addEventListener("wheel", (event) => {
      event.preventDefault();
      this.set(this.value + (event.deltaY < 0 ? 1 : -1) * this.step(false));
    }, { passive: false });
    el.addEventListener("pointerdown", (event) => {
      el.setPointerCapture(event.pointerId);
      el.focus();
      this.dragging = { y: event.clientY, value: this.value };
    });
    el.addEventListener("pointermove", (event) => {
      if (!this.dragging) return;
      const fine = event.shiftKey ? 0.2 : 1;
      const span = this.spec.max - this.spec.min;
      this.set(this.dragging.value + (this.dragging.y - event.clientY) / 160 * span * fine);
    });
    const end = () => { this.dragging = null; };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
  }
}

function arc(from, to) {
  const point = (deg) => {
    const r = (deg - 90) * Math.PI / 180;
    return (50 + 38 * Math.cos(r)).toFixed(2) + " " + (50 + 38 * Math.sin(r)).toFixed(2);
  };
  if (to - from < 0.5) return "M " + point(from);
  return "M " + point(from) + " A 38 38 0 " + (to - from > 180 ? 1 : 0) + " 1 " + point(to);
}

// ---------------------------------------------------------------------------------------------
// Buttons and switches

function bindSwitches() {
  for (const input of $$('[data-control="mode"] input')) {
    input.addEventListener("change", () => { if (input.checked) control("mode", input.value); });
  }
  const keyLock = $('[data-control="key_lock"]');
  keyLock.addEventListener("click", () => {
    const on = keyLock.getAttribute("aria-pressed") !== "true";
    keyLock.setAttribute("aria-pressed", String(on));
    control("key_lock", on);
  });
  for (const name of ["loop", "mutate", "panic"]) {
    $('[data-control="' + name + '"]').addEventListener("click", () => { touched.set(name, performance.now()); pending.set(name, null); flush(); });
  }
  document.addEventListener("keydown", (event) => {  // Escape anywhere: panic
    if (event.key === "Escape") { pending.set("panic", null); flush(); }
  });
}

function followSwitches(status) {
  if (!recentlyTouched("mode")) for (const input of $$('[data-control="mode"] input')) input.checked = input.value === status.mode;
  if (!recentlyTouched("key_lock")) $('[data-control="key_lock"]').setAttribute("aria-pressed", String(Boolean(status.key_lock)));
  $('[data-control="loop"]').setAttribute("aria-pressed", String(Boolean(status.loop)));
}

// ---------------------------------------------------------------------------------------------
// The piano roll: the last ROLL_STEPS grid steps, bars and beats marked, the newest step on the right

const roll = { low: 48, high: 71, summaryAt: 0 };

function drawRoll(status) {
  const svg = $('[data-view="roll"]');
  const width = svg.clientWidth, height = svg.clientHeight;
  if (!width || !height) return;
  const now = status.step, first = now - ROLL_STEPS + 1;
  const cells = new Map();  // "part pitch" -> sorted steps
  let players = 0, models = 0;
  for (const [step, part, pitches] of status.recent) {
    if (step < first || step > now) continue;
    for (const pitch of pitches) {
      const key = (part === "player" ? "player" : "model") + " " + pitch;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(step);
      if (part === "player") players++; else models++;
      if (pitch < roll.low) roll.low = pitch;
      if (pitch > roll.high) roll.high = pitch;
    }
  }
  if (roll.high - roll.low + 1 < MIN_ROWS) roll.high = roll.low + MIN_ROWS - 1;
  const rows = roll.high - roll.low + 1;
  const gutter = 34, cw = (width - gutter) / ROLL_STEPS, rh = height / rows;
  const parts = [];
  for (let pitch = roll.high; pitch >= roll.low; pitch--) {
    const y = (roll.high - pitch) * rh;
    if ([1, 3, 6, 8, 10].includes(pitch % 12)) parts.push(rect("black-key", gutter, y, width - gutter, rh));
    if (pitch % 12 === 0 || rows <= 30 && pitch % 12 === 7) parts.push(text(noteName(pitch), 2, y + rh * 0.8, pitch % 12 === 0 ? "octave" : ""));
  }
  for (let step = first; step <= now; step++) {
    if (step % 2) continue;
    const x = gutter + (step - first) * cw;
    parts.push(line(step % STEPS_PER_BAR === 0 ? "bar" : "beat", x, 0, x, height));
  }
  parts.push(rect("playhead", gutter + (now - first) * cw, 0, cw, height));
  for (const [key, steps] of cells) {
    const [part, p] = key.split(" ");
    const pitch = Number(p);
    steps.sort((a, b) => a - b);
    let start = steps[0], last = steps[0];
    const emit = () => {
      const both = part === "model" && (cells.get("player " + pitch) || []).some((s) => s >= start && s <= last);
      const r = rect("note " + part + (both ? " both" : ""), gutter + (start - first) * cw + 1, (roll.high - pitch) * rh + 1,
        Math.max(2, (last - start + 1) * cw - 2), Math.max(2, rh - 2));
      r.dataset.part = part; r.dataset.pitch = pitch; r.dataset.step = start;
      parts.push(r);
    };
    for (const step of steps.slice(1)) {
      if (part === "model" && step === last + 1) { last = step; continue; }  // a held model note: one bar
      emit(); start = last = step;
    }
    emit();
  }
  svg.replaceChildren(...parts);
  svg.dataset.player = players;
  svg.dataset.model = models;
  if (performance.now() - roll.summaryAt > 2000) {  // a screen reader hears the summary, not every frame
    roll.summaryAt = performance.now();
    svg.setAttribute("aria-label", "Piano roll of the last 8 bars: " + players + " player and " + models +
      " model note steps, " + noteName(roll.low) + " to " + noteName(roll.high));
  }
}

function rect(cls, x, y, w, h) {
  const r = document.createElementNS(SVG, "rect");
  r.setAttribute("class", cls); r.setAttribute("x", x); r.setAttribute("y", y);
  r.setAttribute("width", w); r.setAttribute("height", h);
  return r;
}

function line(cls, x1, y1, x2, y2) {
  const l = document.createElementNS(SVG, "line");
  l.setAttribute("class", cls);
  for (const [k, v] of Object.entries({ x1, y1, x2, y2 })) l.setAttribute(k, v);
  return l;
}

function text(content, x, y, cls) {
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", x); t.setAttribute("y", y);
  if (cls) t.setAttribute("class", cls);
  t.textContent = content;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Status

const knobs = [];
let lastStatus = null;

function show(status) {
  lastStatus = status;
  const set = (name, value) => { const el = $('[data-status="' + name + '"]'); if (el.textContent !== value) el.textContent = value; };
  document.body.dataset.playing = status.playing ? "yes" : "no";
  $('[data-led="running"]').classList.toggle("on", Boolean(status.playing));
  $('[data-text="transport"]').textContent = status.playing ? "playing" : "stopped";
  const step = Math.max(0, status.step);
  set("position", (Math.floor(step / STEPS_PER_BAR) + 1) + "." + (Math.floor((step % STEPS_PER_BAR) / 2) + 1));
  set("bpm", status.bpm.toFixed(1));
  set("key", status.key || "free");
  set("state", status.state);
  $('[data-status="state"]').dataset.state = status.state;
  set("notes", status.notes.player + " / " + status.notes.model);
  set("clock", status.clock);
  const notice = $('[data-status="notice"]');
  notice.hidden = !status.notice;
  notice.textContent = status.notice || "";
  notice.classList.toggle("gone", (status.notice || "").includes(" is gone: "));
  const variation = $('[data-knob="variation"]');  // shown once the engine has it, never before
  if (typeof status.variation === "number" && knobs.some((knob) => knob.name === "variation")) variation.hidden = false;
  for (const knob of knobs) knob.follow(status);
  followSwitches(status);
  drawRoll(status);
}

function listen() {
  const events = new EventSource("/api/events?token=" + encodeURIComponent(TOKEN));
  events.onmessage = (event) => { document.body.dataset.connected = "yes"; show(JSON.parse(event.data)); };
  events.addEventListener("closed", () => {
    events.close();
    document.body.dataset.connected = "no";
    $('[data-text="transport"]').textContent = "lofi-live ended";
    $('[data-led="running"]').classList.remove("on");
  });
  events.onerror = () => { document.body.dataset.connected = "no"; };
}

// ---------------------------------------------------------------------------------------------
// Sessions

async function loadSessions() {
  const answer = await api("/api/sessions").catch(() => null);
  if (!answer || !answer.ok) return;
  const { folder, sessions } = await answer.json();
  $('[data-status="folder"]').textContent = sessions.length ? "in " + folder : "No recorded sessions in " + folder + " (play with --record FILE.mid).";
  const list = $('[data-view="sessions"]');
  list.replaceChildren(...sessions.map((session) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "session-name";
    name.textContent = session.name;
    const when = document.createElement("span");
    when.className = "session-time";
    when.textContent = new Date(session.modified * 1000).toLocaleString();
    item.append(name, when);
    if (session.recording) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "recording";
      item.append(badge);
    }
    for (const kind of ["mid", "png"]) {
      const link = document.createElement("a");
      link.href = "/api/sessions/" + encodeURIComponent(session.name) + "." + kind + "?token=" + encodeURIComponent(TOKEN);
      link.download = session.name + "." + kind;
      link.className = "hw small";
      link.textContent = kind === "mid" ? ".mid" : "PNG";
      link.setAttribute("aria-label", "Download " + session.name + (kind === "mid" ? " as MIDI" : " as a piano-roll picture"));
      item.append(link);
    }
    return item;
  }));
}

// ---------------------------------------------------------------------------------------------

async function start() {
  const answer = await api("/api/controls");
  const { controls } = await answer.json();
  const specs = new Map(controls.map((spec) => [spec.name, spec]));
  for (const cell of $$("[data-knob]")) {
    const spec = specs.get(cell.dataset.knob);
    if (!spec) { cell.hidden = true; continue; }   // not an action of this engine (yet)
    knobs.push(new Knob(cell, spec));
  }
  bindSwitches();
  listen();
  loadSessions();
  setInterval(loadSessions, 5000);
  $('[data-action="refresh-sessions"]').addEventListener("click", loadSessions);
  new ResizeObserver(() => { if (lastStatus) drawRoll(lastStatus); }).observe($('[data-view="roll"]'));
}

start();
