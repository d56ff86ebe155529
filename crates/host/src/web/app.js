// river's dashboard: one page, hash routes, the host's API as the data, its event stream as the
// clock. Every value from the API is put in the page as text (never as HTML).
"use strict";

// `gen` counts renders: only the latest may draw (an older one still waiting for the API gives
// way). `follow` is the output being followed on a task's page.
const state = { me: null, role: null, timer: null, usageTimer: null, gen: 0, follow: null };

// ---- small helpers --------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The page's anti-forgery token: `river ui`'s (named for its port), or the host's own address's.
function csrf() {
  for (const name of ["river_csrf_" + location.port + "=", "__Host-river_csrf="]) {
    const c = document.cookie.split("; ").find((x) => x.startsWith(name));
    if (c) return c.slice(name.length);
  }
  return "";
}

// This browser's session at the host's own address (its token starts with the session's id).
function mySession() {
  return document.cookie.includes("__Host-river_csrf=") ? csrf().split(".")[0] : null;
}

async function api(path, opts) {
  const o = Object.assign({ headers: {} }, opts || {});
  if (o.method && o.method !== "GET") o.headers["X-River-CSRF"] = csrf();
  if (o.json !== undefined) {
    o.headers["Content-Type"] = "application/json";
    o.body = JSON.stringify(o.json);
  }
  const r = await fetch(path, o);
  const text = await r.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* plain text */ }
  if (!r.ok) throw new Error((body && body.error) || text || r.statusText);
  return body;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function when(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleString();
}

// The same sizes, and the same message, as the CLI's `--memory`.
function parseSize(s) {
  const t = s.trim();
  const bad = () => new Error(`invalid size "${s}": use a number with an optional unit, like 512M, 8G or 1.5T`);
  const m = /^(\d*\.?\d*)\s*([a-zA-Z]*)$/.exec(t);
  if (!m || m[1] === "" || m[1] === ".") throw bad();
  const shifts = { "": 0, b: 0, k: 10, kb: 10, kib: 10, m: 20, mb: 20, mib: 20, g: 30, gb: 30, gib: 30, t: 40, tb: 40, tib: 40 };
  const shift = shifts[m[2].toLowerCase()];
  if (shift === undefined) throw bad();
  return Math.round(parseFloat(m[1]) * Math.pow(2, shift));
}

const FINAL = ["completed", "failed", "killed", "oom", "lost", "stopped"];
const ACTIVE = ["pending_approval", "queued", "assigned", "running", "paused"];

function mayAct(task) {
  if (!state.role || state.role === "viewer") return false;
  return task.owner === state.me || state.role === "operator" || state.role === "admin";
}

function stateCell(s) {
  return h("span", { class: "state " + s }, s);
}

function command(t) {
  const c = (t.spec && t.spec.command) || [];
  if (c.length === 3 && c[0] === "/bin/sh" && c[1] === "-c") return c[2];
  return c.join(" ");
}

// Draws the view, unless a newer render has begun meanwhile.
function show(gen, ...nodes) {
  if (gen !== state.gen) return;
  document.getElementById("view").replaceChildren(...nodes);
}

function fail(e) {
  return h("p", { class: "error", role: "alert" }, e.message || String(e));
}

// ---- views ----------------------------------------------------------------------------------

function nodesTable(nodes) {
  return h("table", { id: "nodes" },
    h("thead", {}, h("tr", {}, ["Node", "State", "Cores", "CPU", "Memory", "GPUs"].map((x) => h("th", {}, x)))),
    h("tbody", {}, nodes.map((n) => {
      const u = n.usage || {};
      const gpus = (n.info.gpus || []).map((g) => {
        const gu = (u.gpus || []).find((x) => x.index === g.index) || {};
        const temp = gu.temperature_c !== undefined && gu.temperature_c !== null ? ` ${gu.temperature_c}°C` : "";
        return h("span", { class: "gpu" }, `#${g.index} ${g.name}: ${gu.util_percent ?? "–"}% · ${bytes(gu.memory_used_bytes)} / ${bytes(g.memory_bytes)}${temp}`);
      });
      return h("tr", { "data-node": n.name, class: n.state === "offline" ? "bad" : null },
        h("td", {}, h("a", { href: "#/nodes/" + encodeURIComponent(n.name) }, n.name)),
        h("td", {}, stateCell(n.state)),
        h("td", {}, n.info.cores),
        h("td", {}, u.cpu_percent !== undefined ? u.cpu_percent.toFixed(0) + "%" : "–"),
        h("td", {}, `${bytes(u.memory_used_bytes)} / ${bytes(n.info.memory_bytes)}`),
        h("td", {}, gpus.length ? gpus : h("span", { class: "muted" }, "none")));
    })));
}

function tasksTable(tasks, id) {
  if (!tasks.length) return h("p", { class: "muted", id }, "None.");
  return h("table", { id },
    h("thead", {}, h("tr", {}, ["ID", "Owner", "State", "Node", "Command", "Submitted"].map((x) => h("th", {}, x)))),
    h("tbody", {}, tasks.map((t) => h("tr", { "data-task": t.id, class: ["failed", "oom", "lost"].includes(t.state) ? "bad" : null },
      h("td", {}, h("a", { href: "#/tasks/" + t.id }, String(t.id))),
      h("td", { class: t.owner === state.me ? "mine" : null }, t.owner.replace(/^user /, "")),
      h("td", {}, stateCell(t.state)),
      h("td", {}, (t.placement && t.placement.node) || "–"),
      h("td", {}, t.name ? `${t.name}: ${command(t)}` : command(t)),
      h("td", {}, when(t.submitted_at_ms))))));
}

async function overview(gen) {
  const [nodes, tasks, vpss] = await Promise.all([api("/api/nodes"), api("/api/tasks?limit=200"), api("/api/tasks?vps=true&limit=100")]);
  const mineFirst = (a, b) => (b.owner === state.me) - (a.owner === state.me) || b.id - a.id;
  const active = tasks.filter((t) => ACTIVE.includes(t.state) && !(t.spec && t.spec.vps)).sort(mineFirst);
  const failed = tasks.filter((t) => ["failed", "oom", "lost"].includes(t.state)).slice(0, 10);
  const offline = nodes.filter((n) => n.state === "offline");
  show(gen,
    offline.length ? h("p", { class: "error", id: "offline" }, `Offline: ${offline.map((n) => n.name).join(", ")}`) : "",
    h("h2", {}, `Nodes (${nodes.length})`), nodesTable(nodes),
    h("h2", {}, `Running and queued (${active.length})`), tasksTable(active, "active"),
    h("h2", {}, `VPSs (${vpss.length})`), tasksTable(vpss, "vpss"),
    failed.length ? [h("h2", {}, "Failed recently"), tasksTable(failed, "failed")] : "");
}

async function nodePage(name, gen) {
  const n = await api("/api/nodes/" + encodeURIComponent(name));
  const hist = await api("/api/nodes/" + encodeURIComponent(name) + "/usage").catch(() => []);
  const charts = [
    chart("cpu", "CPU", hist.map((s) => [s.at_ms, s.cpu_percent]), 100, (v) => v.toFixed(0) + "%"),
    chart("memory", "Memory", hist.map((s) => [s.at_ms, s.memory_used_bytes]), n.info.memory_bytes, bytes),
  ];
  for (const g of n.info.gpus || []) {
    const of = (s) => s.gpus.find((x) => x.index === g.index) || {};
    charts.push(chart(`gpu${g.index}`, `GPU ${g.index} utilization`, hist.map((s) => [s.at_ms, of(s).util_percent || 0]), 100, (v) => v + "%"));
    charts.push(chart(`gpu${g.index}-memory`, `GPU ${g.index} memory`, hist.map((s) => [s.at_ms, of(s).memory_used_bytes || 0]), g.memory_bytes, bytes));
  }
  const numa = (n.info.numa || []).map((z) => `node ${z.id}: cpus ${z.cpus.join(",")} · ${bytes(z.memory_bytes)}`);
  const tasks = (await api("/api/tasks?limit=200&node=" + encodeURIComponent(name))).filter((t) => ACTIVE.includes(t.state));
  show(gen, h("h2", {}, `Node ${n.name}`), nodesTable([n]),
    h("dl", {},
      h("dt", {}, "Address"), h("dd", {}, n.address || "–"),
      h("dt", {}, "Version"), h("dd", {}, n.info.version || "–"),
      h("dt", {}, "NUMA"), h("dd", {}, numa.length ? numa.join("; ") : "–"),
      h("dt", {}, "Last heartbeat"), h("dd", {}, when(n.last_heartbeat_ms))),
    h("h2", {}, "Usage"), h("div", { class: "charts" }, charts),
    h("h2", {}, "Running here"), tasksTable(tasks, "node-tasks"));
}

let taskPage = { before: null, query: "" };

async function tasksPage(gen) {
  const q = taskPage.before ? `&before=${taskPage.before}` : "";
  const tasks = await api("/api/tasks?limit=50" + q);
  const search = h("input", { class: "search", id: "search", placeholder: "Search id, owner, state, command…", value: taskPage.query });
  const list = h("div", {});
  const draw = () => {
    const s = search.value.toLowerCase();
    taskPage.query = search.value;
    const shown = tasks.filter((t) => !s || [String(t.id), t.owner, t.state, t.name || "", command(t)].some((x) => x.toLowerCase().includes(s)));
    list.replaceChildren(tasksTable(shown, "tasks"));
  };
  search.addEventListener("input", draw);
  draw();
  const older = tasks.length === 50 ? h("button", { onclick: () => { taskPage.before = tasks[tasks.length - 1].id; render(); } }, "Older →") : "";
  const newest = taskPage.before ? h("button", { onclick: () => { taskPage.before = null; render(); } }, "← Newest") : "";
  show(gen, h("h2", {}, "Tasks"), search, list, h("div", { class: "actions" }, newest, older));
  search.focus();
}

// A task's output so far, as text (or why it cannot be read, in brackets).
async function output(id, stderr) {
  const r = await fetch(`/api/tasks/${id}/output${stderr ? "?stderr=true" : ""}`);
  const text = await r.text();
  if (r.ok) return text;
  try { return `(${JSON.parse(text).error})`; } catch (_) { return `(${text})`; }
}

// Follows a running task's output into `pre` as the node sends it, until the task ends; then the
// page is drawn again (with the whole output, read once more). Output cut short says so.
function followOutput(id, pre) {
  const ctl = new AbortController();
  const f = { id, pre, ctl };
  state.follow = f;
  fetch(`/api/tasks/${id}/output?follow=true`, { signal: ctl.signal }).then(async (r) => {
    if (!r.ok) {
      pre.textContent = await output(id, false);
      return;
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      pre.textContent = text;
    }
  }).catch((e) => {
    if (e.name !== "AbortError") pre.append(h("span", { class: "error" }, `\n(the output was cut short: ${e.message})`));
  }).finally(() => {
    if (state.follow === f) {
      state.follow = null;
      if (!ctl.signal.aborted) changed();
    }
  });
}

function stopFollowing() {
  if (state.follow) state.follow.ctl.abort();
  state.follow = null;
}

async function taskDetail(id, gen) {
  const t = await api("/api/tasks/" + id);
  // Output followed live while the task runs (kept across redraws), read whole otherwise.
  const following = state.follow && state.follow.id === id && t.state === "running";
  const [out, err, history] = await Promise.all([following ? null : output(id, false), output(id, true),
    api(`/api/tasks/${id}/history`).catch(() => [])]);
  if (gen !== state.gen) return;
  let pre = following ? state.follow.pre : h("pre", { id: "stdout" }, out || "");
  if (!following) {
    stopFollowing();
    if (t.state === "running") followOutput(id, pre);
  }
  const act = (action, label, cls) => h("button", {
    "data-action": action, class: cls,
    onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(`/api/tasks/${id}/${action}`, { method: "POST" }); render(); } catch (e) { ev.target.after(fail(e)); }
    },
  }, label);
  const actions = [];
  if (mayAct(t)) {
    if (t.state === "running") actions.push(act("pause", "Pause"));
    if (t.state === "paused") actions.push(act("resume", "Resume"));
    if (t.spec.vps && t.state === "running") actions.push(act("stop", "Stop"), restartButton(id));
    if (t.spec.vps && t.state === "stopped") actions.push(act("start", "Start"));
    if (t.spec.vps) {
      const remove = act("remove", "Remove VPS", "danger");
      remove.addEventListener("click", (ev) => {
        if (!confirm(`Remove VPS ${id} with its disk and snapshots? This cannot be undone.`)) ev.stopImmediatePropagation();
      }, { capture: true });
      actions.push(remove);
    }
    if (!FINAL.includes(t.state)) actions.push(act("kill", "Kill", "danger"));
    if (t.state === "running") actions.push(h("a", { class: "button", id: "open-terminal", href: `/ui/terminal.html#${id}`, target: "_blank", rel: "noopener" }, "Terminal ↗"));
  }
  const p = t.placement;
  show(gen,
    h("h2", {}, `${t.spec.vps ? "VPS" : "Task"} ${t.id}${t.name ? " · " + t.name : ""}`),
    h("div", { class: "actions", id: "actions" }, actions),
    h("dl", {},
      h("dt", {}, "State"), h("dd", {}, h("span", { id: "task-state", class: "state " + t.state }, t.state), t.message ? " — " + t.message : ""),
      h("dt", {}, "Owner"), h("dd", {}, t.owner.replace(/^user /, "")),
      h("dt", {}, "Command"), h("dd", {}, h("code", {}, command(t))),
      h("dt", {}, "Environment"), h("dd", {}, t.spec.environment || t.spec.image || "default"),
      h("dt", {}, "Placement"), h("dd", {}, p ? `${p.node} · cores ${p.cores.join(",")}${p.gpus.length ? " · GPUs " + p.gpus.join(",") : ""} · ${p.memory_bytes ? bytes(p.memory_bytes) : "memory not limited"}` : "not placed yet"),
      h("dt", {}, "Variables"), h("dd", {}, (t.spec.env || []).map(([k]) => k).join(", ") || "none"),
      h("dt", {}, "Exit code"), h("dd", {}, t.exit_code ?? "–"),
      h("dt", {}, "Submitted"), h("dd", {}, when(t.submitted_at_ms)),
      h("dt", {}, "Started"), h("dd", {}, when(t.started_at_ms)),
      h("dt", {}, "Ended"), h("dd", {}, when(t.finished_at_ms))),
    ...(t.spec.vps ? await vpsSection(t) : []),
    h("h2", {}, "History"),
    h("table", { id: "history" }, h("tbody", {}, history.map((c) => h("tr", { "data-state": c.state },
      h("td", {}, when(c.at_ms)), h("td", {}, h("span", { class: "state " + c.state }, c.state)),
      h("td", {}, c.exit_code === null || c.exit_code === undefined ? "" : `exit ${c.exit_code}`), h("td", {}, c.message || ""))))),
    h("h2", {}, "Output"), pre,
    err ? [h("h2", {}, "Errors"), h("pre", { id: "stderr", class: "stderr" }, err)] : "");
}

// A VPS's restart: stop it, wait until it has stopped, start it (as `river vps restart`).
function restartButton(id) {
  return h("button", { "data-action": "restart", onclick: async (ev) => {
    ev.target.disabled = true;
    ev.target.textContent = "Restarting…";
    try {
      await api(`/api/tasks/${id}/stop`, { method: "POST" });
      const deadline = Date.now() + 120000;
      for (;;) {
        const t = await api("/api/tasks/" + id);
        if (t.state === "stopped") break;
        if (FINAL.includes(t.state) || Date.now() > deadline) throw new Error(`the VPS did not stop (it is ${t.state})`);
        await new Promise((r) => setTimeout(r, 300));
      }
      await api(`/api/tasks/${id}/start`, { method: "POST" });
      render();
    } catch (e) { ev.target.after(fail(e)); ev.target.textContent = "Restart"; }
  } }, "Restart");
}

async function submitPage(gen) {
  if (state.role === "viewer") return show(gen, h("p", { class: "error" }, "Viewers cannot submit tasks."));
  const envs = await api("/api/envs").catch(() => []);
  const field = (label, input) => [h("label", { for: input.id }, label), input];
  const form = h("form", { class: "submit", id: "submit-form" },
    field("Command", h("input", { id: "f-command", name: "command", required: true, placeholder: "python train.py --epochs 3" })),
    field("Environment", h("select", { id: "f-env", name: "environment" }, h("option", { value: "" }, "default"), envs.map((e) => h("option", { value: e.name }, e.name)))),
    field("Image", h("input", { id: "f-image", name: "image", placeholder: "instead of an environment" })),
    field("On the node itself", h("input", { id: "f-process", name: "no_container", type: "checkbox", title: "no container: the command runs on the node as you, in a cgroup" })),
    field("Cores", h("input", { id: "f-cores", name: "cores", type: "number", min: 1, value: 1 })),
    field("Memory", h("input", { id: "f-memory", name: "memory", placeholder: "e.g. 8G" })),
    field("GPUs", h("input", { id: "f-gpus", name: "gpus", type: "number", min: 0, value: 0 })),
    field("Target", h("input", { id: "f-target", name: "target", placeholder: "HOST[:NUMA][::GPU,GPU] (optional)" })),
    field("Variables", h("textarea", { id: "f-vars", name: "vars", rows: 3, placeholder: "NAME=value, one per line" })),
    h("span", {}), h("div", {}, h("button", { class: "primary", type: "submit", id: "f-submit" }, "Submit")),
    h("span", {}), h("div", { id: "submit-result" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = document.getElementById("submit-result");
    const v = (id) => document.getElementById(id).value.trim();
    try {
      const spec = { image: v("f-image"), command: ["/bin/sh", "-c", v("f-command")] };
      if (v("f-env")) spec.environment = v("f-env");
      if (document.getElementById("f-process").checked) spec.no_container = true;
      if (v("f-cores")) spec.cores = parseInt(v("f-cores"), 10);
      if (v("f-memory")) spec.memory_bytes = parseSize(v("f-memory"));
      if (v("f-gpus") && v("f-gpus") !== "0") spec.gpus = parseInt(v("f-gpus"), 10);
      if (v("f-target")) spec.targets = [v("f-target")];
      spec.env = v("f-vars").split("\n").filter((l) => l.trim()).map((l) => {
        const i = l.indexOf("=");
        if (i < 1) throw new Error(`variable "${l}": write NAME=value`);
        return [l.slice(0, i).trim(), l.slice(i + 1)];
      });
      const r = await api("/api/tasks", { method: "POST", json: spec });
      location.hash = "#/tasks/" + r.ids[0];
    } catch (e) {
      result.replaceChildren(fail(e));
    }
  });
  show(gen, h("h2", {}, "Submit a task"), form);
}

// ---- routing and live updates ---------------------------------------------------------------

async function render() {
  const gen = ++state.gen;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  if (!(parts[0] === "tasks" && state.follow && state.follow.id === parseInt(parts[1], 10))) stopFollowing();
  try {
    if (parts[0] === "tasks" && parts[1]) await taskDetail(parseInt(parts[1], 10), gen);
    else if (parts[0] === "tasks") await tasksPage(gen);
    else if (parts[0] === "nodes" && parts[1]) await nodePage(decodeURIComponent(parts[1]), gen);
    else if (parts[0] === "submit") await submitPage(gen);
    else if (parts[0] === "envs") await envsPage(gen);
    else if (parts[0] === "vps") await vpsPage(gen);
    else if (parts[0] === "admin") await adminPage(gen);
    else if (parts[0] === "account") await accountPage(gen);
    else if (parts[0] === "network") await networkPage(gen);
    else await overview(gen);
  } catch (e) {
    show(gen, fail(e));
  }
}

// A change on the host redraws the page, unless the user is typing in a form.
function changed() {
  if (["#/submit", "#/vps", "#/admin", "#/envs", "#/account", "#/network"].some((p) => location.hash.startsWith(p))) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(render, 50);
}

// A node's usage changed (every heartbeat): its rows are read again, at most every 2 s.
function usage() {
  if (state.usageTimer || !(location.hash === "" || location.hash === "#/" || location.hash.startsWith("#/nodes/"))) return;
  state.usageTimer = setTimeout(async () => {
    state.usageTimer = null;
    // A node's page (its charts) is drawn again whole.
    if (location.hash.startsWith("#/nodes/")) return render();
    const table = document.getElementById("nodes");
    if (!table) return;
    try {
      const name = location.hash.startsWith("#/nodes/") ? decodeURIComponent(location.hash.slice(8)) : null;
      const nodes = name ? [await api("/api/nodes/" + encodeURIComponent(name))] : await api("/api/nodes");
      const now = document.getElementById("nodes");
      if (now === table) table.replaceWith(nodesTable(nodes));
    } catch (_) { /* the next event tries again */ }
  }, 2000);
}

function listen() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { live.className = "live on"; live.textContent = "live"; changed(); });
  for (const kind of ["task", "node", "resync"]) es.addEventListener(kind, changed);
  es.addEventListener("usage", usage);
  es.onerror = () => {
    live.className = "live off"; live.textContent = "reconnecting…";
    // A session that ended (revoked, expired, logged out) says so rather than reconnecting.
    setTimeout(async () => {
      try { await api("/api/whoami"); } catch (e) {
        es.close();
        live.textContent = "logged out";
        show(++state.gen, fail(e));
      }
    }, 500);
  };
}

async function logOut() {
  try { await api("/logout", { method: "POST" }); } catch (_) { /* ended already */ }
  location.href = "/";
}

async function start() {
  try {
    const me = await api("/api/whoami");
    state.me = me.identity;
    state.role = me.role;
    document.getElementById("me").textContent = `${me.identity.replace(/^user /, "")} (${me.role})`;
    if (me.role === "viewer") document.getElementById("nav-submit").remove();
    if (!["operator", "admin"].includes(me.role)) document.getElementById("nav-admin").remove();
  } catch (e) {
    show(state.gen, fail(e));
    return;
  }
  document.getElementById("logout").addEventListener("click", logOut);
  window.addEventListener("hashchange", () => { taskPage.before = null; state.secret = null; state.limitsOf = null; render(); });
  listen();
  render();
}

document.addEventListener("DOMContentLoaded", start);
