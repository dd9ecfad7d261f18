// auditgen's live console: polls ./state, follows ./tail (Server-Sent Events), and drives the API.
// No build step and no inline script: the page's Content-Security-Policy allows only files of this origin.

const API = new URL("..", document.baseURI); // the console lives at /console/, the API at /
const POLL_MS = 1000;
const HISTORY = 300; // points kept by the page (5 minutes at one a second); the service keeps none
const TAIL_MAX = 200;

const $ = (id) => document.getElementById(id);
const api = (path) => new URL(path, API);

// -- Formatting ----------------------------------------------------------------------------------------
const number = (v, digits = 1) =>
  v == null || Number.isNaN(v) ? "–" : v >= 1000 ? Math.round(v).toLocaleString("en") : v.toFixed(digits);
const bytes = (v) => {
  if (v == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const duration = (s) => {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
};

// -- The API token: asked for when the service requires one, sent on every change ----------------------
const token = {
  get: () => sessionStorage.getItem("auditgen-token") || $("token").value.trim(),
  show(required) {
    $("token-form").hidden = !required;
  },
};
$("token").addEventListener("change", () => sessionStorage.setItem("auditgen-token", $("token").value.trim()));
$("token-form").addEventListener("submit", (e) => e.preventDefault());

async function change(method, path, body) {
  const headers = { "content-type": "application/json" };
  const t = token.get();
  if (t) headers.authorization = `Bearer ${t}`;
  const response = await fetch(api(path), { method, headers, body: JSON.stringify(body ?? {}) });
  let answer = {};
  try { answer = await response.json(); } catch { /* not JSON: keep {} */ }
  if (response.status === 401) {
    token.show(true);
    throw new Error(`refused: ${answer.error || "this change needs the API token"}`);
  }
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

function say(element, text, ok) {
  element.textContent = text;
  element.className = `result ${ok ? "ok" : "bad"}`;
}

// -- Charts --------------------------------------------------------------------------------------------
const history = { t: [], accepted: [], confirmed: [], refused: [], target: [], achieved: [], outbox: [], unconfirmed: [], latency: [], p99: [] };

function chart(id, series) {
  const element = $(id);
  const opts = {
    width: element.clientWidth || 400,
    height: 180,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 60 }],
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: false } }))],
  };
  const plot = new uPlot(opts, [[], ...series.map(() => [])], element);
  return { plot, element, keys: series.map(([, , key]) => key) };
}

const charts = [
  chart("chart-flow", [["accepted", "#2f6fde", "accepted"], ["confirmed", "#1a7f37", "confirmed"], ["refused", "#b42318", "refused"]]),
  chart("chart-rate", [["target", "#98a2b3", "target"], ["achieved", "#2f6fde", "achieved"]]),
  chart("chart-queue", [["outbox", "#b54708", "outbox"], ["unconfirmed", "#7a5af8", "unconfirmed"]]),
  chart("chart-latency", [["mean", "#2f6fde", "latency"], ["p99", "#b42318", "p99"]]),
];

function redraw() {
  for (const { plot, element, keys } of charts) {
    plot.setData([history.t, ...keys.map((k) => history[k])]);
    element.dataset.points = String(history.t.length); // how far the chart has moved (tests read it)
  }
}

window.addEventListener("resize", () => {
  for (const { plot, element } of charts) plot.setSize({ width: element.clientWidth, height: 180 });
});

// The p99 of the confirms between two snapshots, from the histogram's cumulative buckets.
function p99(before, after) {
  const count = after.count - before.count;
  if (count <= 0) return null;
  const bounds = Object.keys(after.buckets).filter((b) => b !== "+Inf").map(Number).sort((a, b) => a - b);
  for (const bound of bounds) {
    const key = Object.keys(after.buckets).find((k) => Number(k) === bound);
    if (after.buckets[key] - (before.buckets[key] ?? 0) >= 0.99 * count) return bound * 1000;
  }
  return null;
}

// -- State: poll, derive rates, show -----------------------------------------------------------------
let previous = null;

function show(state) {
  const broker = state.broker;
  const badge = $("broker");
  badge.textContent = broker.connected ? (broker.blocked ? `blocked: ${broker.address}` : broker.address) : `disconnected: ${broker.address}`;
  badge.className = `badge ${broker.connected ? (broker.blocked ? "warn" : "ok") : "bad"}`;
  $("uptime").textContent = `up ${duration(state.uptime_seconds)}`;
  $("last-error").hidden = !broker.last_error;
  $("last-error").textContent = broker.last_error ? `last broker error: ${broker.last_error}` : "";
  token.show(state.features.token_required);
  $("f-outbox").textContent = `${number(state.outbox_depth, 0)} / ${number(state.outbox_capacity, 0)}`;
  $("f-spool").textContent = bytes(state.spool_bytes);
  $("f-unconfirmed").textContent = number(state.unconfirmed, 0);
  const generator = state.generator;
  $("f-target").textContent = generator ? number(generator.target_rate) : "–";
  $("f-achieved").textContent = generator ? number(generator.achieved_rate) : "–";
  $("campaigns-panel").hidden = !state.features.campaigns;
  if (previous) {
    const dt = state.time - previous.time;
    if (dt > 0) {
      const rate = (key) => Math.max(0, (state[key] - previous[key]) / dt);
      const a = previous.confirm_latency, b = state.confirm_latency;
      const confirms = b.count - a.count;
      const mean = confirms > 0 ? ((b.sum - a.sum) / confirms) * 1000 : null;
      const point = {
        t: state.time, accepted: rate("accepted_total"), confirmed: rate("confirmed_total"), refused: rate("refused_total"),
        target: generator?.target_rate ?? null, achieved: generator?.achieved_rate ?? null,
        outbox: state.outbox_depth, unconfirmed: state.unconfirmed, latency: mean, p99: p99(a, b),
      };
      for (const [key, value] of Object.entries(point)) {
        history[key].push(value);
        if (history[key].length > HISTORY) history[key].shift();
      }
      $("f-accepted").textContent = number(point.accepted);
      $("f-confirmed").textContent = number(point.confirmed);
      $("f-refused").textContent = number(point.refused);
      $("f-latency").textContent = mean == null ? "–" : `${number(mean, 2)} ms`;
      redraw();
    }
  }
  previous = state;
}

async function poll() {
  try {
    const response = await fetch("state", { cache: "no-store" });
    if (response.ok) show(await response.json());
  } catch {
    $("broker").textContent = "the service does not answer";
    $("broker").className = "badge bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// -- Generator controls --------------------------------------------------------------------------------
async function loadGenerator() {
  const form = $("generator-form");
  const response = await fetch(api("generator"));
  if (!response.ok) {
    form.hidden = true;
    say($("generator-result"), "this service has no generator", false);
    return;
  }
  const state = await response.json();
  const openapi = await (await fetch(api("openapi.json"))).json();
  const shapes = openapi.components.schemas.GeneratorChange.properties.shape.enum;
  form.shape.replaceChildren(...shapes.map((s) => new Option(s, s, false, s === state.shape)));
  form.rate.value = state.rate;
  form.paused.checked = state.paused;
}

$("generator-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  try {
    const state = await change("PUT", "generator", {
      rate: Number(form.rate.value), shape: form.shape.value, paused: form.paused.checked,
    });
    say($("generator-result"), `applied: ${state.rate} events/s, ${state.shape}${state.paused ? ", paused" : ""}`, true);
  } catch (error) {
    say($("generator-result"), error.message, false);
  }
});

// -- Scenario forms, built from GET /scenarios ---------------------------------------------------------
function input(parameter) {
  const label = document.createElement("label");
  label.title = parameter.description;
  label.append(`${parameter.name} `);
  let field;
  if (parameter.choices) {
    field = document.createElement("select");
    field.append(new Option("(default)", ""), ...parameter.choices.map((c) => new Option(String(c), JSON.stringify(c))));
  } else if (parameter.type === "boolean") {
    field = document.createElement("select");
    field.append(new Option("(default)", ""), new Option("true", "true"), new Option("false", "false"));
  } else {
    field = document.createElement("input");
    field.type = parameter.type === "string" ? "text" : "number";
    if (parameter.type === "integer") field.step = "1";
    if (parameter.type === "number") field.step = "any";
    if (parameter.minimum != null) field.min = parameter.minimum;
    if (parameter.maximum != null) field.max = parameter.maximum;
    field.placeholder = parameter.default == null ? "drawn" : String(parameter.default);
  }
  field.name = parameter.name;
  field.dataset.type = parameter.type;
  label.append(field);
  return label;
}

function value(field) {
  if (field.value === "") return undefined;
  if (field.tagName === "SELECT") return JSON.parse(field.value);
  return field.dataset.type === "string" ? field.value : Number(field.value);
}

async function loadScenarios() {
  const box = $("scenarios");
  const response = await fetch(api("scenarios"));
  if (!response.ok) {
    box.replaceChildren("this service runs no scenarios");
    return;
  }
  const { scenarios } = await response.json();
  box.replaceChildren(...scenarios.map((scenario) => {
    const details = document.createElement("details");
    details.className = "scenario";
    details.dataset.scenario = scenario.name;
    const summary = document.createElement("summary");
    summary.textContent = scenario.name;
    const about = document.createElement("p");
    about.textContent = scenario.description;
    const form = document.createElement("form");
    form.className = "form";
    form.append(...scenario.parameters.map(input));
    const run = document.createElement("button");
    run.type = "submit";
    run.textContent = `Run ${scenario.name}`;
    form.append(run);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const parameters = {};
      for (const field of form.querySelectorAll("input, select")) {
        const v = value(field);
        if (v !== undefined) parameters[field.name] = v;
      }
      try {
        const answer = await change("POST", `scenarios/${encodeURIComponent(scenario.name)}`, parameters);
        say($("scenario-result"), `${scenario.name} accepted: scenario_id ${answer.scenario_id}, ${answer.event_ids.length} events (${answer.status})`, true);
      } catch (error) {
        say($("scenario-result"), `${scenario.name}: ${error.message}`, false);
      }
    });
    details.append(summary, about, form);
    return details;
  }));
}

// -- Campaigns and their scorecard (when the service has them) -----------------------------------------
let following = null;

$("campaign-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const count = Number(e.target.count.value);
  try {
    const { scenarios } = await (await fetch(api("scenarios"))).json();
    // Every scenario, each in its own delivery: the paced ones unfold at their pace (their verdicts come last).
    const answer = await change("POST", "campaigns", { scenarios: Object.fromEntries(scenarios.map((s) => [s.name, count])) });
    say($("campaign-result"), `campaign ${answer.campaign_id} started`, true);
    following = answer.campaign_id;
    followCampaign();
  } catch (error) {
    say($("campaign-result"), error.message, false);
  }
});

async function followCampaign() {
  if (!following) return;
  const response = await fetch(api(`campaigns/${encodeURIComponent(following)}`));
  if (!response.ok) return;
  const campaign = await response.json();
  const rows = (campaign.runs || []).map((run) => {
    const tr = document.createElement("tr");
    const ttd = run.time_to_detect_seconds == null ? "–" : `${number(run.time_to_detect_seconds, 2)} s`;
    const verdict = run.verdict === "pending" && run.delivery === "paced" && run.events_confirmed < run.events ? "pending (paced run under way)" : run.verdict;
    for (const text of [run.scenario, run.scenario_id, run.expect, verdict, ttd]) {
      const td = document.createElement("td");
      td.textContent = text ?? "–";
      tr.append(td);
    }
    tr.children[3].className = `verdict-${run.verdict}`;
    return tr;
  });
  $("scorecard").hidden = false;
  $("scorecard").tBodies[0].replaceChildren(...rows);
  const total = campaign.summary?.total;
  if (total) {
    const rate = total.detection_rate == null ? "–" : `${number(total.detection_rate * 100, 0)}%`;
    say($("campaign-result"), `campaign ${campaign.campaign_id} ${campaign.state}: detection rate ${rate}`, true);
  }
  if (campaign.state !== "finished") setTimeout(followCampaign, 2000);
}

// -- The tail of confirmed events ----------------------------------------------------------------------
let paused = false;
let shown = 0;
let skipped = 0;

function tailStatus(text) {
  $("tail-status").textContent = text ?? `${shown} shown${skipped ? `, ${skipped} skipped (the tail shows at most 100 a second)` : ""}`;
}

function addEvent(raw) {
  if (paused) return;
  let event;
  try { event = JSON.parse(raw); } catch { return; }
  const li = document.createElement("li");
  const scenario = event.details?.scenario_id;
  li.textContent = `${event.timestamp ?? ""} ${event.event_type} ${event.action_result ?? ""} ${event.server_hostname ?? ""}${scenario ? ` scenario ${scenario}` : ""}`;
  if (scenario) li.classList.add("scenario-event");
  li.dataset.eventId = event.event_id;
  li.addEventListener("click", () => {
    for (const other of $("tail").querySelectorAll(".chosen")) other.classList.remove("chosen");
    li.classList.add("chosen");
    $("tail-detail").textContent = JSON.stringify(event, null, 2);
  });
  const list = $("tail");
  list.prepend(li);
  while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
  shown += 1;
  tailStatus();
}

function follow() {
  const source = new EventSource("tail");
  source.onmessage = (message) => addEvent(message.data);
  source.addEventListener("skipped", (message) => { skipped += Number(message.data); tailStatus(); });
  source.onerror = () => tailStatus("reconnecting…");
}

$("tail-pause").addEventListener("click", (e) => {
  paused = !paused;
  e.target.textContent = paused ? "Resume" : "Pause";
  e.target.setAttribute("aria-pressed", String(paused));
});

poll();
follow();
loadGenerator().catch((error) => say($("generator-result"), error.message, false));
loadScenarios().catch((error) => say($("scenario-result"), error.message, false));
