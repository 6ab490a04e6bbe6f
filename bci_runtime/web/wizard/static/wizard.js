// The calibration wizard's page: draws the current step from /api/state, so a reload
// (or a browser closed and opened again) resumes where the wizard is.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;        // the signal check's live traces
let feed = null;          // the run feed: cues, progress, decisions, status
let lastStep = null;
let state = null;
const ARROWS = {left: "\u2190", right: "\u2192", feet: "\u2193", tongue: "\u2191"};
const PARADIGMS = {mi: "motor imagery", ssvep: "SSVEP", cursor: "continuous cursor"};
const CUE_WORDS = {left: "Left hand", right: "Right hand", feet: "Feet", tongue: "Tongue"};

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) {
    throw new Error(data.error + (data.hint ? ` (${data.hint})` : ""));
  }
  return data;
}

function say(text) { $("message").textContent = text || ""; }

function show(newState) {
  state = newState;
  for (const li of $("steps").children) {
    const i = state.steps.indexOf(li.dataset.step), current = state.steps.indexOf(state.step);
    li.toggleAttribute("aria-current", i === current);
    if (i === current) li.setAttribute("aria-current", "step");
    li.classList.toggle("done", i < current);
  }
  for (const step of state.steps) {
    const section = $(`step-${step}`);
    if (section) section.hidden = step !== state.step;
  }
  $("session").textContent = state.session_dir ? `Session: ${state.session_dir}` : "";
  showParadigm();
  if (state.signal_error) say(`The signal stopped: ${state.signal_error}`);
  if (state.step === "signal") startSignal(); else stopSignal();
  if (["calibration", "training", "online"].includes(state.step)) openFeed(); else closeFeed();
  placeStage();
  showCalibration();
  showTraining();
  showOnline();
  showDone();
  if (state.step !== lastStep) {  // a screen reader hears the new step's title
    lastStep = state.step;
    const title = $(`${state.step}-title`);
    if (title && state.step !== "patient") title.focus();
  }
}

function text(tag, content, attrs = {}) {
  const el = document.createElement(tag);
  el.textContent = content;
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function pct(x) { return x == null ? "—" : `${(100 * x).toFixed(0)}%`; }
function rsq(x) { return x == null ? "—" : x.toFixed(2); }  // an R² or a correlation

function paradigm() { return state && state.choice ? state.choice.paradigm : "mi"; }
function isCursor() { return paradigm() === "cursor"; }

// what only some paradigms have (data-paradigms="mi ssvep"), shown for the session's
function showParadigm() {
  const p = paradigm();
  for (const el of document.querySelectorAll("[data-paradigms]")) {
    el.hidden = !el.dataset.paradigms.split(" ").includes(p);
  }
  $("stage-box").classList.toggle("cursor", p === "cursor");
  $("stage-box").setAttribute("aria-label", p === "cursor" ? "Cursor task" : "Cues");
}

// -- step 1 ---------------------------------------------------------------------------
let profileLookup = null;
function lookUpProfiles() {
  clearTimeout(profileLookup);
  profileLookup = setTimeout(async () => {
    const subject = $("subject").value.trim(), select = $("profile");
    select.replaceChildren(new Option("A new calibration", ""));
    if (!/^[A-Za-z0-9]{1,32}$/.test(subject)) return;
    try {
      const {profiles} = await api(`/api/profiles?subject=${encodeURIComponent(subject)}`);
      for (const p of profiles) {
        if (p.error) continue;
        const what = [p.paradigm, (p.classes || []).join("/")].filter(Boolean).join(" ");
        const score = p.r2 != null ? `R² ${rsq(p.r2)} (chance ${rsq(p.chance_r2)})` :
          `accuracy ${pct(p.accuracy)}`;
        const label = `Profile of ${p.created.slice(0, 10)} (${p.session}, ${p.origin}): ` +
          `${what}, ${score}`;
        select.add(new Option(label, p.id));
      }
      showUnfinished(subject, (await api(
        `/api/unfinished?subject=${encodeURIComponent(subject)}`)).sessions);
    } catch (error) { say(error.message); }
  }, 250);
}

// the fields of the paradigm ticked: classes (MI), frequencies (SSVEP), none (cursor)
function showParadigmFields() {
  const chosen = $("patient-form").paradigm.value;
  $("classes-field").hidden = chosen !== "mi";
  $("freqs-field").hidden = chosen !== "ssvep";
  $("cursor-help").hidden = chosen !== "cursor";
}

// sessions a wizard left before the end (closed, crashed): one button each to go on
function showUnfinished(subject, sessions) {
  const box = $("unfinished");
  box.hidden = !sessions.length;
  $("unfinished-list").replaceChildren(...sessions.map((s) => {
    const li = document.createElement("li");
    const recorded = Object.entries(s.recorded).map(([c, n]) => `${c} ${n}`).join(", ");
    const button = text("button", `Resume ${s.session}`, {type: "button"});
    button.disabled = s.in_use;
    button.addEventListener("click", async () => {
      say("");
      try { show(await api("/api/resume", {subject, session: s.session})); }
      catch (error) { say(error.message); }
    });
    li.append(button, text("span", ` ${PARADIGMS[s.paradigm] || s.paradigm}, left at ${s.step}` +
      (recorded ? `; trials recorded: ${recorded}` : "") +
      (s.in_use ? " (open in another wizard)" : "")));
    return li;
  }));
}

// -- step 3 ---------------------------------------------------------------------------
function recordedText() {
  if (isCursor()) {
    const {seconds = 0, hits = 0} = state.recorded_cursor || {};
    return seconds ? `Recorded so far: ${Math.round(seconds)} s of cursor calibration, ` +
      `${hits} target${hits === 1 ? "" : "s"} reached.` : "";
  }
  const parts = Object.entries(state.recorded || {}).map(([c, n]) => `${c} ${n}`);
  return parts.length ? `Trials recorded so far: ${parts.join(", ")}.` : "";
}

// the trials recorded over every calibration run, this one's as far as it got
function recordedDuring(run) {
  const recorded = {};
  for (const r of state.calibration_runs) {
    const counts = r.folder === run.folder ? run.per_class : r.per_class;
    for (const [c, n] of Object.entries(counts || {})) recorded[c] = (recorded[c] || 0) + n;
  }
  return recorded;
}

let trialsShown = false;  // the form shows the settings in use (a reload keeps them)
function showTrials(trials) {
  $("trials-per-class").value = trials.trials_per_class;
  $("fixation-s").value = trials.fixation_s;
  $("cue-s").value = trials.cue_s;
  $("rest-s").value = trials.rest_s;
  $("cursor-s").value = trials.cursor_s;
}

function showCalibration() {
  if (state.step !== "calibration" && state.step !== "online") { $("stage-box").hidden = true; }
  if (state.step !== "calibration") return;
  const run = state.run, running = !!run && run.kind === "calibration";
  $("recorded").textContent = recordedText();
  // a cursor run changes it at every frame: read out by the cursor's own status instead
  $("recorded").setAttribute("aria-live", running && isCursor() ? "off" : "polite");
  if (running || !trialsShown) { showTrials(state.trials); trialsShown = true; }
  $("calibration-start").hidden = running;
  $("calibration-stop").hidden = !running;
  $("calibration-form").querySelectorAll("input").forEach((i) => { i.disabled = running; });
  const total = isCursor() ? (state.recorded_cursor || {}).seconds || 0 :
    Object.values(state.recorded || {}).reduce((a, b) => a + b, 0);
  $("train").hidden = running || total === 0;
  $("calibration-start").textContent = state.calibration_runs.length ?
    (isCursor() ? "Record more calibration" : "Record more trials") : "Start the calibration";
  const last = state.calibration_runs[state.calibration_runs.length - 1];
  if (!running && last && last.outcome === "interrupted") {
    say(isCursor() ? `Calibration interrupted: ${last.message}. Check the amplifier, then ` +
        "record more (what was recorded is kept)." :
      `Calibration interrupted: ${last.message}. Check the amplifier, then record the ` +
        "missing trials (the recorded ones are kept).");
  }
  $("stage-box").hidden = !running;
  if (running && isCursor()) showCursor(run.cursor);
  else if (running) { progress(run); showRunCue(run); }
}

async function startCalibration(event) {
  event.preventDefault();
  say("");
  clearStage();
  resetCursor();
  const settings = isCursor() ? {cursor_s: Number($("cursor-s").value)} : {
    trials_per_class: Number($("trials-per-class").value),
    fixation_s: Number($("fixation-s").value), cue_s: Number($("cue-s").value),
    rest_s: Number($("rest-s").value)};
  try { show(await api("/api/calibration/start", settings)); } catch (error) { say(error.message); }
}

function progress(run) {
  const expected = run.expected;
  $("run-progress-label").textContent = expected ?
    `${run.done} of ${expected} trials recorded` :
    `${run.done} trial${run.done === 1 ? "" : "s"}`;
  $("run-progress").max = expected || 1;
  $("run-progress").value = expected ? run.done : 0;
  $("run-progress").hidden = !expected;
  $("run-progress").removeAttribute("aria-valuetext");  // the cursor's: seconds, not trials
}

// the cue display goes with the run: below the calibration's controls, or in the online
// step between its buttons (the emergency stop stays in sight) and the decoder's output
function placeStage() {
  const box = $("stage-box");
  if (state.step === "online") {
    if (box.nextElementSibling !== $("decision")) $("decision").before(box);
  } else if (box.parentElement !== $("step-calibration")) {
    $("step-calibration").append(box);
  }
}

// the cue display: a fixation cross, an arrow, or flickering targets (SSVEP)
let flicker = null;
function clearStage() {
  stopFlicker();
  $("stage").replaceChildren();
  $("stage").setAttribute("aria-label", "rest");
}

function stageTargets(cued) {
  const stage = $("stage");
  stage.replaceChildren(...state.classes.map((c) => {
    const box = text("div", c, {"data-class": c});
    box.className = "target" + (c === cued ? " cued" : "");
    return box;
  }));
}

function startFlicker() {
  stopFlicker();
  const boxes = [...$("stage").querySelectorAll(".target")];
  const freqs = boxes.map((b) => parseFloat(b.dataset.class));
  const frame = (now) => {  // square wave per target, sampled at the screen's frames
    boxes.forEach((box, i) => {
      const on = Math.sin(2 * Math.PI * freqs[i] * now / 1000) >= 0;
      box.style.background = on ? "#fff" : "#000";
    });
    flicker = requestAnimationFrame(frame);
  };
  flicker = requestAnimationFrame(frame);
}

function stopFlicker() {
  if (flicker) cancelAnimationFrame(flicker);
  flicker = null;
  for (const box of $("stage").querySelectorAll(".target")) box.style.background = "";
}

function showCue(cue) {
  const word = CUE_WORDS[cue] || `Look at ${cue}`;
  if (state.choice && state.choice.paradigm === "ssvep") { stageTargets(cue); startFlicker(); }
  else $("stage").replaceChildren(text("span", ARROWS[cue] || cue));
  $("stage").setAttribute("aria-label", word);
  $("cue-text").textContent = word;
}

// a page opened during a cue shows it at once (its display lag is not measured)
function showRunCue(run) {
  if (run.cue && !$("stage").childElementCount) showCue(run.cue);
}

function drawCue(message) {
  const ssvep = state.choice && state.choice.paradigm === "ssvep";
  const stage = $("stage");
  if (message.type === "trial") {
    stopFlicker();
    if (ssvep) stageTargets(null); else stage.replaceChildren(text("span", "+"));
    stage.setAttribute("aria-label", "fixation cross: get ready");
  } else if (message.type === "cue") {
    showCue(message.cue);
    // answered once the frame with the cue is on the screen: the display lag
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (feed && feed.readyState === WebSocket.OPEN) {
        feed.send(JSON.stringify({type: "shown", t: message.t}));
      }
    }));
  } else if (message.type === "cue_end") {
    stopFlicker();
    stage.replaceChildren();
    stage.setAttribute("aria-label", "rest");
    $("cue-text").textContent = "Rest";
  }
}

// -- the continuous cursor: the center-out task's workspace, y up ------------------------
const WORKSPACE = 1.5, TARGET_R = 0.15, OUTER_R = 0.8, CURSOR_R = 0.05;
let cursorNewest = null;  // the newest position: drawn at the next frame, not per message
let cursorFrame = null;
let cursorSaid = {at: -Infinity, hits: 0};
let cursorShown = "";

function resetCursor() {
  cursorNewest = null;
  cursorSaid = {at: -Infinity, hits: 0};
  cursorShown = "";
  $("cursor-status").textContent = "Waiting for the cursor…";
  $("cursor-said").textContent = "";
}

function showCursor(c) {
  if (!c) return;
  cursorNewest = c;
  if (!cursorFrame) cursorFrame = requestAnimationFrame(drawCursorFrame);
}

function drawCursorFrame(now) {
  cursorFrame = null;
  const c = cursorNewest, run = state.run;
  if (!c || !run) return;
  drawWorkspace(c);
  const calibrating = run.kind === "calibration", seconds = Math.floor(c.seconds);
  const length = state.trials.cursor_s;
  const reached = ` target${c.hits === 1 ? "" : "s"} reached in ${seconds} s` +
    (c.seconds >= 60 ? `, ${c.hits_last_minute} in the last minute` :
     c.seconds >= 5 ? `, about ${Math.round(60 * c.hits / c.seconds)} per minute` : "") +
    (c.timeouts ? `; ${c.timeouts} missed` : "");
  if (reached + c.hits !== cursorShown) {  // the text changes a few times a second at most
    cursorShown = reached + c.hits;
    $("cursor-status").replaceChildren(text("strong", String(c.hits)), reached);
    const label = calibrating ? `${Math.min(seconds, length)} of ${length} s recorded` :
      `${seconds} s in the closed loop`;
    $("run-progress-label").textContent = label;
    $("run-progress").hidden = !calibrating;
    $("run-progress").max = length;
    $("run-progress").value = Math.min(c.seconds, length);
    $("run-progress").setAttribute("aria-valuetext", label);
    if (calibrating) {
      const before = state.calibration_runs.filter((r) => r.folder !== run.folder)
        .map((r) => r.cursor || {});
      state.recorded_cursor = {
        seconds: before.reduce((a, r) => a + (r.seconds || 0), c.seconds),
        hits: before.reduce((a, r) => a + (r.hits || 0), c.hits)};
      $("recorded").textContent = recordedText();
    }
  }
  // a screen reader hears each target reached (once a second at most), else every 10 s
  if (now - cursorSaid.at >= (c.hits !== cursorSaid.hits ? 1000 : 10000)) {
    cursorSaid = {at: now, hits: c.hits};
    $("cursor-said").textContent = `${c.hits} target${c.hits === 1 ? "" : "s"} reached; ` +
      (calibrating ? `${Math.min(seconds, length)} of ${length} seconds recorded.` :
       `${seconds} seconds in the closed loop.`);
  }
}

function drawWorkspace(c) {
  const canvas = $("cursor-canvas"), ctx = canvas.getContext("2d");
  const size = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1));
  if (size > 0 && canvas.width !== size) { canvas.width = size; canvas.height = size; }
  const n = canvas.width, scale = n / (2 * WORKSPACE + 0.1);  // the clipped cursor in sight
  const circle = (x, y, r) => {
    ctx.beginPath();
    ctx.arc(n / 2 + x * scale, n / 2 - y * scale, r, 0, 2 * Math.PI);
  };
  ctx.clearRect(0, 0, n, n);
  ctx.lineWidth = Math.max(1, n / 320);
  ctx.strokeStyle = "#5f6368";  // where targets appear: the center and 8 around it
  circle(0, 0, TARGET_R * scale); ctx.stroke();
  for (let k = 0; k < 8; k++) {
    circle(OUTER_R * Math.cos(k * Math.PI / 4), OUTER_R * Math.sin(k * Math.PI / 4),
           TARGET_R * scale);
    ctx.stroke();
  }
  const [x, y] = c.cursor, [tx, ty] = c.target;
  circle(tx, ty, TARGET_R * scale);  // green while the cursor dwells in it
  ctx.fillStyle = Math.hypot(x - tx, y - ty) <= TARGET_R ? "#34a853" : "#f0a500";
  ctx.fill();
  circle(x, y, Math.max(4, CURSOR_R * scale));
  ctx.fillStyle = "#fff";
  ctx.fill();
}

function addEvent(message) {
  const list = $("run-events");
  list.prepend(text("li", message.text || message.kind));
  while (list.children.length > 20) list.lastChild.remove();
}

// -- step 4 ---------------------------------------------------------------------------
function showTraining() {
  const t = state.training || {};
  const atTraining = state.step === "training";
  if (!atTraining) return;
  $("training-running").hidden = t.state !== "running";
  $("training-result").hidden = t.state !== "done";
  $("online-go").hidden = t.state === "running";
  $("online-start").hidden = t.state !== "done";
  $("more-trials").textContent = isCursor() ? "Record more calibration" : "Record more trials";
  if (t.state === "failed") say(`${t.error}${t.hint ? ` (${t.hint})` : ""}`);
  if (t.state === "running") {
    $("training-stage").textContent = t.stage || "Training…";
    $("training-progress").value = t.progress || 0;
  }
  if (t.state === "done") showReport(t.report);
}

function showReport(r) {
  if (r.paradigm === "cursor") showCursorReport(r); else showClassReport(r);
  $("reasons").replaceChildren(...r.reasons.map((x) => text("li", x)));
  const figures = r.patterns.map((p) => {
    const figure = document.createElement("figure");
    const img = text("img", "", {src: `data:image/png;base64,${p.png}`, alt: p.title});
    figure.append(img, text("figcaption", p.title));
    return figure;
  });
  if (r.patterns_note) figures.push(text("p", r.patterns_note));
  $("patterns").replaceChildren(...figures);
  $("online-override").hidden = r.good_enough;
}

// motor imagery and SSVEP: accuracy against chance, and the confusion matrix
function showClassReport(r) {
  $("verdict").textContent = r.good_enough ?
    `Good enough to go online: ${pct(r.accuracy)} correct (chance ${pct(r.chance)}).` :
    `Not good enough to go online yet: ${pct(r.accuracy)} correct (chance ${pct(r.chance)}).`;
  $("verdict").className = r.good_enough ? "good" : "bad";
  $("reasons").replaceChildren(...r.reasons.map((x) => text("li", x)));
  const chart = $("accuracy-chart");
  chart.setAttribute("aria-label", `Cross-validated accuracy ${pct(r.accuracy)}; ` +
    `above ${pct(r.chance_threshold)} is better than chance with ${r.n_trials} trials`);
  const track = text("div", ""); track.className = "bar-track";
  const bar = text("div", ""); bar.className = "bar"; bar.style.width = pct(r.accuracy);
  const mark = text("div", "", {title: "95% chance level"}); mark.className = "bar-mark";
  mark.style.left = pct(r.chance_threshold);
  track.append(bar, mark);
  chart.replaceChildren(text("p", `Accuracy ${pct(r.accuracy)} (folds: ` +
    `${r.fold_accuracies.map(pct).join(", ")}); the red mark is the 95% chance level ` +
    `(${pct(r.chance_threshold)}) for ${r.n_trials} trials.`), track);
  const labels = r.confusion.labels;
  const head = document.createElement("tr");
  head.append(text("th", "cued \\ decoded", {scope: "col"}),
              ...labels.map((l) => text("th", l, {scope: "col"})));
  $("confusion").tHead.replaceChildren(head);
  $("confusion").tBodies[0].replaceChildren(...r.confusion.matrix.map((row, i) => {
    const tr = document.createElement("tr");
    tr.append(text("th", labels[i], {scope: "row"}), ...row.map((n) => text("td", String(n))));
    return tr;
  }));
}

// the continuous cursor: cross-validated R² of the velocity against chance and the minimum
function showCursorReport(r) {
  const scores = `R² ${rsq(r.r2)} (chance ${rsq(r.chance_r2)}, ${rsq(r.min_r2)} needed)`;
  $("verdict").textContent = r.good_enough ? `Good enough to go online: ${scores}.` :
    `Not good enough to go online yet: ${scores}.`;
  $("verdict").className = r.good_enough ? "good" : "bad";
  const chart = $("accuracy-chart");
  chart.setAttribute("aria-label", `Cross-validated R² ${rsq(r.r2)} on a scale from -1 to 1; ` +
    `chance ${rsq(r.chance_r2)}, ${rsq(r.min_r2)} needed`);
  const at = (v) => 50 * (1 + Math.max(-1, Math.min(1, v)));  // % of the track, -1 to 1
  const track = text("div", ""); track.className = "bar-track";
  const bar = text("div", ""); bar.className = "bar from-zero";
  bar.style.left = `${Math.min(at(r.r2), 50)}%`;
  bar.style.width = `${Math.abs(at(r.r2) - 50)}%`;
  const marks = [["zero", 0, "R² 0: no better than the mean velocity"],
                 ["", r.chance_r2, "chance"], ["needed", r.min_r2, "needed"]].map(([kind, v, title]) => {
    const mark = text("div", "", {title}); mark.className = `bar-mark ${kind}`.trim();
    mark.style.left = `${at(v)}%`;
    return mark;
  });
  track.append(bar, ...marks);
  const nulls = (r.null_r2 || []).length;
  chart.replaceChildren(text("p", `R² ${rsq(r.r2)} of the velocity on held-out parts of the ` +
    `calibration (folds: ${r.fold_r2.map(rsq).join(", ")}), on a scale from -1 to 1: the red ` +
    `mark is chance (${rsq(r.chance_r2)}, the 95th percentile of ${nulls} time-shifted ` +
    `velocities), the black one the ${rsq(r.min_r2)} needed, the grey one 0.`), track);
  $("axes").tBodies[0].replaceChildren(...[["Left-right (vx)", "vx"], ["Up-down (vy)", "vy"]]
    .map(([name, axis]) => {
      const tr = document.createElement("tr");
      tr.append(text("th", name, {scope: "row"}), text("td", rsq(r.r2_per_axis[axis])),
                text("td", rsq(r.correlation[axis])));
      return tr;
    }));
}

// -- step 5 ---------------------------------------------------------------------------
function showOnline() {
  if (state.step !== "online") return;
  const run = state.run, running = !!run && run.kind === "online";
  const p = state.profile;
  $("online-profile").textContent = p ? `Decoder ${p.decoder} from profile ${p.id}` +
    (state.profile_reused ? " (reloaded: co-adaptation goes on from it)" : "") : "";
  $("online-settings").hidden = running;
  $("online-running").hidden = !running;
  $("stage-box").hidden = !running;
  if (running && isCursor()) showCursor(run.cursor);
  else if (running) { progress(run); showRunCue(run); }
}

async function startOnline(stimulationBox) {
  say("");
  clearStage();
  resetCursor();
  const reason = $("online-override").hidden ? null : $("online-override-reason").value;
  try {
    show(await api("/api/online/start", {stimulation: $(stimulationBox).checked,
                                         override_reason: reason || null}));
  } catch (error) { say(error.message); }
}

function showDecision(message) {
  const box = $("decision");
  if (box.children.length !== message.classes.length) {
    box.replaceChildren(...message.classes.map((c) => {
      const row = document.createElement("div"); row.className = "class-row";
      const meter = text("meter", "", {min: "0", max: "1", "aria-label": `probability of ${c}`});
      meter.id = `p-${c}`;
      row.append(text("span", CUE_WORDS[c] || c), meter, text("span", "", {id: `pv-${c}`}));
      return row;
    }));
  }
  message.classes.forEach((c, i) => {
    $(`p-${c}`).value = message.p[i];
    $(`pv-${c}`).textContent = pct(message.p[i]);
  });
}

function showStatus(s) {
  const fb = (s.feedback || [])[0] || {}, dec = (s.decoders || [])[0] || {};
  const ev = s.events || {};
  if (isCursor()) showCursorStatus(s); else {
    $("fig-accuracy").textContent = fb.accuracy == null ? "— (waiting for cued trials)" :
      `${pct(fb.accuracy)} of ${fb.scored || fb.decisions} decisions`;
  }
  $("fig-version").textContent = dec.version == null ? "—" : `v${dec.version}` +
    (dec.training ? ` (${dec.training})` : "");
  $("fig-adaptation").textContent = isCursor() ?
    `${dec.updates || 0} updates (the decoder adapts about once a second), ` +
    `${ev.rollbacks || 0} rolled back` :
    `${ev.swaps || 0} updates served, ` +
    `${ev.rollbacks || 0} rolled back, ${ev.drifts || 0} drifts seen`;
  const lat = s.latency_ms || {};
  $("fig-latency").textContent = lat.p50 == null ? "—" :
    `p50 ${lat.p50} ms, p99 ${lat.p99} ms, max ${lat.max} ms (last ` +
    (lat.window_s == null ? "seconds)" : `${Math.round(lat.window_s)} s)`);
  const st = (s.streams || [])[0] || {};
  $("fig-signal").textContent = st.measured_hz == null ? (st.state || "—") :
    `${st.state || ""} ${Number(st.measured_hz).toFixed(0)} Hz, ${st.dropped || 0} samples dropped`;
  const stim = (s.stimulators || [])[0];
  $("arm").hidden = !stim || stim.state === "armed";
  $("estop").hidden = !stim;
  $("fig-stim").textContent = stim ? `${stim.state}; ${stim.delivered || 0} trains delivered` :
    "none in this session";
}

// the cursor's figures: targets reached, and (simulator only) how well it follows the intention
function showCursorStatus(s) {
  const c = (s.run || {}).cursor;
  $("fig-targets").textContent = !c ? "—" :
    `${c.hits} in ${Math.round(c.seconds)} s, ${c.hits_last_minute} in the last minute` +
    (c.timeouts ? `; ${c.timeouts} missed` : "");
  const r2 = c ? c.r2_last_minute : null;
  $("fig-r2-label").hidden = $("fig-r2").hidden = r2 == null;
  $("fig-r2").textContent = r2 == null ? "" : `R² ${rsq(r2)} over the last minute ` +
    "(simulator only: the simulated patient's intention is known)";
}

// -- step 6 ---------------------------------------------------------------------------
function showDone() {
  if (state.step !== "done") return;
  const saved = state.saved_profile;
  $("done-text").textContent = `The session is saved in ${state.session_dir}. ` + (saved ?
    `The newest co-adapted decoder is saved as profile ${saved.id}: choose it next time.` :
    "No decoder version was saved.");
}

// -- the run feed -----------------------------------------------------------------------
function openFeed() {
  if (feed) return;
  feed = new WebSocket(`ws://${location.host}/ws/run`);
  feed.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "state") { const {type, ...rest} = m; show(rest); }
    else if (["trial", "cue", "cue_end"].includes(m.type)) drawCue(m);
    else if (m.type === "progress" && state.run) {
      Object.assign(state.run, m);
      progress(state.run);
      if (state.run.kind === "calibration") {
        state.recorded = recordedDuring(state.run);
        $("recorded").textContent = recordedText();
      }
    }
    else if (m.type === "cursor" && state.run) { state.run.cursor = m; showCursor(m); }
    else if (m.type === "decision") showDecision(m);
    else if (m.type === "event") addEvent(m);
    else if (m.type === "status") showStatus(m);
    else if (m.type === "training") {
      $("training-stage").textContent = m.stage; $("training-progress").value = m.progress;
    } else if (m.type === "run_ended") { clearStage(); if (m.message) addEvent({text: m.message}); }
  };
  feed.onclose = () => {
    feed = null;
    // the server went on without the page: come back when it answers again
    setTimeout(() => api("/api/state").then(show).catch(() => {}), 1000);
  };
}

function closeFeed() { if (feed) { const f = feed; feed = null; f.onclose = null; f.close(); } }

async function post(path) {
  say("");
  try {
    const result = await api(path, {});
    if (result.step) show(result);
    return result;
  } catch (error) { say(error.message); return null; }
}

async function loadSources() {
  const sources = await api("/api/sources");
  const select = $("source");
  select.replaceChildren(new Option(`Simulator (${sources.simulator.preset})`, "simulator"));
  for (const s of sources.lsl) {
    if (s.format === "string") continue;
    select.add(new Option(`LSL: ${s.name} (${s.channels} ch, ${s.srate} Hz, ${s.host})`,
                          JSON.stringify({kind: "lsl", name: s.name, source_id: s.source_id,
                                          channels: s.channels, srate: s.srate})));
  }
  for (const b of sources.boards) {
    if (b.virtual) continue;
    select.add(new Option(`BrainFlow: ${b.name}`, JSON.stringify({kind: "brainflow", name: b.name})));
  }
}

async function submitPatient(event) {
  event.preventDefault();
  say("");
  const form = $("patient-form");
  const source = form.source.value === "simulator" ? {kind: "simulator"} : JSON.parse(form.source.value);
  const classes = [...form.querySelectorAll("input[name=classes]:checked")].map((c) => c.value);
  const freqs = [...form.querySelectorAll("input[name=freqs]:checked")].map((c) => Number(c.value));
  const body = {subject: form.subject.value.trim(), paradigm: form.paradigm.value, source,
                profile: form.profile.value || null};
  if (body.paradigm === "mi") body.classes = classes;
  else if (body.paradigm === "ssvep") body.freqs = freqs;
  try { show(await api("/api/patient", body)); } catch (error) { say(error.message); }
}

function drawTraces(message) {
  const canvas = $("traces"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rows = message.uv.length;
  if (!rows) return;
  const band = canvas.height / rows;
  ctx.font = "12px system-ui";
  message.uv.forEach((values, row) => {
    const mid = band * (row + 0.5), n = values.length;
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const mean = (lo + hi) / 2, scale = Math.max(hi - lo, 1) / (band * 0.85);
    ctx.strokeStyle = "#0b5cad";
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = 60 + (canvas.width - 70) * i / Math.max(n - 1, 1), y = mid - (v - mean) / scale;
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = "#1b1b1b";
    ctx.fillText(message.channels[row], 4, mid + 4);
  });
}

function showQuality(quality) {
  const body = $("quality").tBodies[0];
  body.replaceChildren(...quality.channels.map((c) => {
    const tr = document.createElement("tr");
    const cells = [c.name, c.status === "good" ? "good" : "bad",
                   c.std_uv == null ? "—" : c.std_uv.toFixed(1),
                   c.line_ratio == null ? "—" : `${(100 * c.line_ratio).toFixed(0)}%`,
                   c.reasons.join("; ") || "—"];
    cells.forEach((text, i) => {
      const td = document.createElement(i ? "td" : "th");
      if (!i) td.scope = "row";
      td.textContent = text;
      if (i === 1) { td.className = text; td.id = `status-${c.name}`; }
      tr.append(td);
    });
    const td = document.createElement("td"), box = document.createElement("input");
    box.type = "checkbox"; box.checked = c.marked_bad; box.id = `leave-out-${c.name}`;
    box.setAttribute("aria-label", `Leave out ${c.name}`);
    box.addEventListener("change", () => api(`/api/channels/${encodeURIComponent(c.name)}`,
                                             {bad: box.checked}).catch((e) => say(e.message)));
    td.append(box); tr.append(td);
    return tr;
  }));
  $("signal-verdict").textContent = quality.message;
  $("signal-verdict").className = quality.enough ? "good" : "bad";
  $("override").hidden = quality.enough;
}

function startSignal() {
  if (socket) return;
  socket = new WebSocket(`ws://${location.host}/ws/signal`);
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "traces") {
      requestAnimationFrame(() => drawTraces(message));
      if (message.quality) showQuality(message.quality);
    } else if (message.type === "error") {
      say(message.error);
    } else if (message.type === "step") {
      api("/api/state").then(show);
    }
  };
  socket.onclose = () => { socket = null; };
}

function stopSignal() { if (socket) { socket.close(); socket = null; } }

async function signalDone() {
  say("");
  const reason = $("override").hidden ? null : $("override-reason").value;
  try { show(await api("/api/signal/done", {override_reason: reason || null})); }
  catch (error) { say(error.message); }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("patient-form").addEventListener("submit", submitPatient);
  $("refresh-sources").addEventListener("click", () => loadSources().catch((e) => say(e.message)));
  $("signal-done").addEventListener("click", signalDone);
  for (const radio of document.querySelectorAll("input[name=paradigm]")) {
    radio.addEventListener("change", showParadigmFields);
  }
  showParadigmFields();  // a reloaded page may keep the paradigm ticked before
  $("subject").addEventListener("input", lookUpProfiles);
  $("subject").addEventListener("change", lookUpProfiles);
  $("calibration-form").addEventListener("submit", startCalibration);
  $("calibration-stop").addEventListener("click", () => post("/api/calibration/stop"));
  $("train").addEventListener("click", () => post("/api/training/start"));
  $("more-trials").addEventListener("click", () => post("/api/training/more"));
  $("online-start").addEventListener("click", () => startOnline("stimulation"));
  $("online-start-reused").addEventListener("click", () => startOnline("stimulation-reused"));
  $("arm").addEventListener("click", async () => {
    const result = await post("/api/online/arm");
    if (result && !Object.values(result.armed).every(Boolean)) {
      say("The stimulator refused to arm: see what happened below.");
    }
  });
  $("estop").addEventListener("click", () => post("/api/online/estop"));
  $("online-stop").addEventListener("click", () => post("/api/online/stop"));
  document.addEventListener("keydown", (event) => {  // like the operator console
    if (event.key === "Escape" && state && state.step === "online" && !$("estop").hidden) {
      event.preventDefault();
      post("/api/online/estop");
    }
  });
  try {
    show(await api("/api/state"));
    await loadSources();
  } catch (error) { say(error.message); }
});
