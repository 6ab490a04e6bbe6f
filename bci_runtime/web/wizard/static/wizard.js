// The calibration wizard's page: draws the current step from /api/state, so a reload
// (or a browser closed and opened again) resumes where the wizard is.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;

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

function show(state) {
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
  if (state.signal_error) say(`The signal stopped: ${state.signal_error}`);
  if (state.step === "signal") startSignal(); else stopSignal();
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
  try {
    show(await api("/api/patient", {subject: form.subject.value.trim(),
                                    paradigm: form.paradigm.value, classes, source}));
  } catch (error) { say(error.message); }
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
    radio.addEventListener("change", () => { $("classes-field").hidden = radio.value !== "mi"; });
  }
  try {
    show(await api("/api/state"));
    await loadSources();
  } catch (error) { say(error.message); }
});
