// The dashboard's other pages — a node's charts, environments, the network, VPSs — on the
// helpers of app.js (loaded first).
"use strict";

// A line chart of `points` ([ms, value]) over the last hour, 0…`max`, as SVG (no library).
function chart(key, title, points, max, label) {
  const W = 560, H = 120, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("data-chart", key);
  const el = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    svg.append(e);
    return e;
  };
  el("rect", { x: 0, y: 0, width: W, height: H, fill: "#fff", stroke: "#e5e7eb" });
  const now = Date.now(), span = 3600 * 1000;
  const xy = ([t, v]) => `${(((t - now + span) / span) * W).toFixed(1)},${(H - (Math.min(v, max) / (max || 1)) * (H - 16) - 4).toFixed(1)}`;
  if (points.length) {
    el("polyline", { points: points.map(xy).join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 1.5 });
    const [cx, cy] = xy(points[points.length - 1]).split(",");
    el("circle", { cx, cy, r: 3, fill: "#2563eb" });
  }
  const last = points.length ? label(points[points.length - 1][1]) : "no samples yet";
  el("text", { x: 6, y: 13, "font-size": 11, fill: "#6b7280" }).textContent = `${title} — now ${last} (last hour)`;
  return svg;
}

async function envsPage(gen) {
  const envs = await api("/api/envs");
  const remove = (e) => h("button", { class: "danger", "data-remove-env": e.name, onclick: async (ev) => {
    if (!confirm(`Remove environment ${e.name} with all its versions?`)) return;
    ev.target.disabled = true;
    try { await api(`/api/envs/${encodeURIComponent(e.name)}`, { method: "DELETE" }); render(); } catch (err) { ev.target.after(fail(err)); }
  } }, "Remove");
  const mine = (e) => state.role === "operator" || state.role === "admin" || e.owner === state.me;
  const rows = envs.flatMap((e) => e.versions.map((v, i) => h("tr", { "data-env": e.name },
    h("td", {}, `${e.name}:v${v.version}`),
    h("td", {}, v.image),
    h("td", {}, v.archive ? bytes(v.archive.size) : "–"),
    h("td", {}, v.fetches),
    h("td", {}, (v.created_by || e.owner || "").replace(/^user /, "")),
    h("td", {}, when(v.created_at_ms)),
    h("td", {}, v.message || ""),
    h("td", {}, i === 0 && mine(e) ? remove(e) : ""))));
  const name = h("input", { id: "env-name", placeholder: "name" });
  const from = h("input", { id: "env-from", placeholder: "image, e.g. pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime" });
  const make = state.role === "viewer" ? "" : h("div", { class: "actions" }, name, from,
    h("button", { id: "env-create", onclick: async (ev) => {
      ev.target.disabled = true;
      ev.target.textContent = "Saving the image…";
      try {
        await api("/api/envs", { method: "POST", json: { name: name.value.trim(), from: from.value.trim() } });
        render();
      } catch (err) {
        ev.target.disabled = false;
        ev.target.textContent = "Create";
        document.getElementById("env-result").replaceChildren(fail(err));
      }
    } }, "Create"));
  show(gen, h("h2", {}, `Environments (${envs.length})`), make, h("div", { id: "env-result" }),
    rows.length ? h("table", { id: "envs" },
      h("thead", {}, h("tr", {}, ["Version", "Image", "Archive", "Fetches", "By", "Made", "Message", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "None."),
    h("p", { class: "muted" }, "Make one with `river env create NAME --from IMAGE`; change one in a shell with `river env shell NAME`."));
}

// The overlay network and its reserved addresses; a cluster without the overlay says so.
async function networkPage(gen) {
  let [overlay, ips] = await Promise.all([api("/api/overlay"), api("/api/ips").catch((e) => e)]);
  if (!overlay.enabled) {
    const why = ips instanceof Error ? ips.message : "The overlay network is off on this cluster.";
    return show(gen, h("h2", {}, "Network"), h("p", { class: "muted", id: "overlay-off" }, why));
  }
  if (ips instanceof Error) ips = [];
  const members = overlay.members.map((m) => h("tr", { "data-member": m.name, class: m.health && !m.health.ok ? "bad" : null },
    h("td", {}, m.name), h("td", {}, m.subnet), h("td", {}, m.address), h("td", {}, m.underlay || "–"),
    h("td", {}, stateCell(m.state)), h("td", {}, m.containers),
    h("td", {}, m.health ? (m.health.ok ? "ok" : "failing") : "–")));
  const mine = (r) => r.owner === state.me || ["operator", "admin"].includes(state.role);
  const reserved = ips.map((r) => h("tr", { "data-ip": r.ip },
    h("td", {}, r.ip), h("td", {}, r.node), h("td", {}, r.owner.replace(/^user /, "")),
    h("td", {}, r.task ? h("a", { href: "#/tasks/" + r.task }, String(r.task)) : "–"), h("td", {}, when(r.expires_at_ms)),
    h("td", {}, mine(r) && state.role !== "viewer" ? h("button", { class: "danger", "data-release": r.ip, onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(`/api/ips/${encodeURIComponent(r.ip)}`, { method: "DELETE" }); render(); } catch (e) { ev.target.after(fail(e)); }
    } }, "Release") : "")));
  // A reservation's token is shown once, as `river ip reserve` prints it.
  const made = state.secret && state.secret.ip ? h("p", { class: "error", id: "secret" }, `Reserved ${state.secret.ip.ip} on ${state.secret.ip.node} until ${when(state.secret.ip.expires_at_ms)}; submit with `,
    h("code", { id: "secret-token" }, `--ip-token ${state.secret.ip.token}`)) : "";
  const node = h("select", { id: "ip-node" }, h("option", { value: "" }, "any node"), overlay.members.map((m) => h("option", { value: m.name }, m.name)));
  const addr = h("input", { id: "ip-address", placeholder: "address (optional)" });
  const minutes = h("input", { id: "ip-minutes", type: "number", min: 1, value: 10 });
  const reserve = state.role === "viewer" ? "" : h("div", { class: "actions" }, node, addr, h("label", { for: "ip-minutes" }, "minutes"), minutes,
    h("button", { id: "ip-reserve", onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api("/api/ips", { method: "POST", json: { node: node.value || null, ip: addr.value.trim() || null, ttl_secs: parseInt(minutes.value, 10) * 60 } });
        state.secret = { ip: r };
        render();
      } catch (e) { ev.target.disabled = false; ev.target.after(fail(e)); }
    } }, "Reserve"));
  show(gen, h("h2", {}, `Overlay ${overlay.range} (VXLAN ${overlay.vni}, port ${overlay.port})`),
    h("table", { id: "overlay" },
      h("thead", {}, h("tr", {}, ["Member", "Subnet", "Address", "Underlay", "State", "Containers", "Last reconcile"].map((x) => h("th", {}, x)))),
      h("tbody", {}, members)),
    h("h2", {}, `Reserved addresses (${ips.length})`), made, reserve,
    reserved.length ? h("table", { id: "ips" },
      h("thead", {}, h("tr", {}, ["Address", "Node", "Owner", "Task", "Expires", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, reserved)) : h("p", { class: "muted", id: "ips" }, "None."));
}

// A VPS's page: how to log in, and its snapshots (take, restore when stopped, remove).
async function vpsSection(t) {
  const id = t.id;
  const may = mayAct(t);
  const [snaps, shares] = await Promise.all([api(`/api/tasks/${id}/snapshots`).catch(() => null),
    may ? api(`/api/tasks/${id}/shares`).catch(() => null) : null]);
  const post = (path, method) => async (ev) => {
    ev.target.disabled = true;
    try { await api(path, { method: method || "POST" }); render(); } catch (e) { ev.target.after(fail(e)); }
  };
  const rows = (snaps || []).map((s) => h("tr", { "data-snapshot": s.seq },
    h("td", {}, `#${s.seq}${s.auto ? " (at stop)" : ""}`),
    h("td", {}, when(s.created_at_ms)),
    h("td", {}, s.created_by.replace(/^user /, "")),
    h("td", {}, bytes(s.archive.size)),
    h("td", {}, s.message || ""),
    h("td", {}, may && t.state === "stopped" ? h("button", { "data-restore": s.seq, onclick: post(`/api/tasks/${id}/snapshots/${s.seq}/restore`) }, "Restore") : "",
      may ? h("button", { class: "danger", "data-remove-snapshot": s.seq, onclick: post(`/api/tasks/${id}/snapshots/${s.seq}`, "DELETE") }, "Remove") : "")));
  const message = h("input", { id: "snapshot-message", placeholder: "what this snapshot is (optional)" });
  const take = may && ["running", "stopped"].includes(t.state) ? h("div", { class: "actions" }, message,
    h("button", { id: "take-snapshot", onclick: async (ev) => {
      ev.target.disabled = true;
      ev.target.textContent = "Taking…";
      const q = message.value.trim() ? `?message=${encodeURIComponent(message.value.trim())}` : "";
      try { await api(`/api/tasks/${id}/snapshot${q}`, { method: "POST" }); render(); } catch (e) { ev.target.after(fail(e)); }
    } }, "Take a snapshot")) : "";
  const keys = t.spec.vps.ssh_keys || [];
  const keyList = keys.map((k) => h("li", { "data-key": k.split(" ")[1] || k },
    h("code", {}, k.length > 60 ? `${k.slice(0, 30)}…${k.slice(-24)}` : k), " ",
    may ? h("button", { class: "danger", onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(`/api/tasks/${id}/keys`, { method: "POST", json: { remove: [k] } }); render(); } catch (e) { ev.target.after(fail(e)); }
    } }, "Remove") : ""));
  const newKeys = h("textarea", { id: "vps-add-keys", rows: 2, placeholder: "more public keys, one per line" });
  const addKeys = may ? h("div", { class: "actions" }, newKeys, h("button", { id: "vps-add-key", onclick: async (ev) => {
    ev.target.disabled = true;
    const add = newKeys.value.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    try { await api(`/api/tasks/${id}/keys`, { method: "POST", json: { add } }); render(); } catch (e) { ev.target.disabled = false; ev.target.after(fail(e)); }
  } }, "Add keys")) : "";
  return [
    h("h2", {}, "Log in"),
    h("p", {}, "With your own SSH client and key, through the mesh: ", h("code", { id: "ssh-line" }, `river ssh ${id}`),
      " — or ", h("code", {}, "river ssh-config"), " once, then ", h("code", {}, `ssh river-${id}`), "."),
    h("h3", {}, "Keys that may log in (from the next login on)"),
    h("ul", { id: "vps-keys" }, keyList), addKeys,
    ...(shares === null ? [] : sharing(id, shares)),
    h("h2", {}, "Snapshots"),
    take,
    snaps === null ? h("p", { class: "muted" }, "Only its owner and those it is shared with see its snapshots.")
      : rows.length ? h("table", { id: "snapshots" },
        h("thead", {}, h("tr", {}, ["Snapshot", "Taken", "By", "Size", "Message", ""].map((x) => h("th", {}, x)))),
        h("tbody", {}, rows)) : h("p", { class: "muted", id: "snapshots" }, "None yet."),
  ];
}

// Who else may reach the VPS (ssh, connect, forward — with their own keys); its owner or an
// operator shares it and stops sharing it.
function sharing(id, users) {
  const who = h("input", { id: "share-user", placeholder: "user name" });
  const change = (user, method) => async (ev) => {
    ev.target.disabled = true;
    try { await api(`/api/tasks/${id}/shares/${encodeURIComponent(user)}`, { method }); render(); } catch (e) { ev.target.disabled = false; ev.target.after(fail(e)); }
  };
  return [h("h3", {}, "Shared with"),
    users.length ? h("ul", { id: "vps-shares" }, users.map((u) => h("li", { "data-share": u }, u, " ",
      h("button", { class: "danger", "data-unshare": u, onclick: change(u, "DELETE") }, "Stop sharing"))))
      : h("p", { class: "muted", id: "vps-shares" }, "No one: only you and operators reach it."),
    h("div", { class: "actions" }, who, h("button", { id: "share", onclick: (ev) => change(who.value.trim(), "PUT")(ev) }, "Share"))];
}

async function vpsPage(gen) {
  const [vpss, envs] = await Promise.all([api("/api/tasks?vps=true&limit=200"), api("/api/envs").catch(() => [])]);
  const list = tasksTable(vpss, "vps-list");
  if (state.role === "viewer") return show(gen, h("h2", {}, `VPSs (${vpss.length})`), list);
  const keys = h("textarea", { id: "v-keys", rows: 3, placeholder: "ssh-ed25519 AAAA… you@laptop (one per line)" });
  const file = h("input", { id: "v-key-file", type: "file", accept: ".pub,text/plain" });
  file.addEventListener("change", async () => {
    for (const f of file.files) keys.value = (keys.value.trim() + "\n" + (await f.text()).trim()).trim();
  });
  const field = (label, input) => [h("label", { for: input.id }, label), input];
  const form = h("form", { class: "submit", id: "vps-form" },
    field("Environment", h("select", { id: "v-env" }, h("option", { value: "" }, "default"), envs.map((e) => h("option", { value: e.name }, e.name)))),
    field("Image", h("input", { id: "v-image", placeholder: "instead of an environment" })),
    field("Cores", h("input", { id: "v-cores", type: "number", min: 1, value: 1 })),
    field("Memory", h("input", { id: "v-memory", placeholder: "e.g. 8G" })),
    field("GPUs", h("input", { id: "v-gpus", type: "number", min: 0, value: 0 })),
    field("Target", h("input", { id: "v-target", placeholder: "HOST[:NUMA][::GPU,GPU] (optional)" })),
    field("SSH keys", keys), h("span", {}), file,
    h("span", {}), h("div", {}, h("button", { class: "primary", type: "submit", id: "v-create" }, "Create VPS")),
    h("span", {}), h("div", { id: "vps-result" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (id) => document.getElementById(id).value.trim();
    try {
      const ssh_keys = keys.value.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
      if (!ssh_keys.length) throw new Error("give at least one SSH public key (paste it, or choose your ~/.ssh/id_ed25519.pub)");
      const spec = { image: v("v-image"), command: [], vps: { ssh_keys, image_sshd: false, generation: 0 } };
      if (v("v-env")) spec.environment = v("v-env");
      if (v("v-cores")) spec.cores = parseInt(v("v-cores"), 10);
      if (v("v-memory")) spec.memory_bytes = parseSize(v("v-memory"));
      if (v("v-gpus") && v("v-gpus") !== "0") spec.gpus = parseInt(v("v-gpus"), 10);
      if (v("v-target")) spec.targets = [v("v-target")];
      const r = await api("/api/tasks", { method: "POST", json: spec });
      location.hash = "#/tasks/" + r.ids[0];
    } catch (e) {
      document.getElementById("vps-result").replaceChildren(fail(e));
    }
  });
  show(gen, h("h2", {}, `VPSs (${vpss.length})`), list, h("h2", {}, "Create a VPS"), form);
}

