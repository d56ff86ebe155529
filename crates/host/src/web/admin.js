// The admin page (operators and admins; the host decides every action as for the CLI): tasks
// waiting for approval, people and invitations, join tokens, nodes, the audit trail.
"use strict";

async function adminPage(gen) {
  if (!["operator", "admin"].includes(state.role)) return show(gen, h("p", { class: "error" }, "Only operators and admins run the cluster."));
  const admin = state.role === "admin";
  const [pending, users, audit, tokens, nodes] = await Promise.all([
    api("/api/tasks?state=pending_approval&limit=200"),
    api("/api/users"),
    api("/api/audit?limit=50"),
    admin ? api("/api/tokens") : [],
    admin ? api("/api/nodes") : [],
  ]);
  const act = (label, fn, cls) => h("button", { class: cls, onclick: async (ev) => {
    ev.target.disabled = true;
    try { await fn(); render(); } catch (e) { ev.target.after(fail(e)); }
  } }, label);
  const post = (path, json, method) => api(path, { method: method || "POST", json });
  // A new token is shown above everything until the page is left (the redraw after the action
  // keeps it); the host never shows it again.
  const reveal = (what, t) => { state.secret = { what, t }; };
  const s = state.secret;
  // At the host's own address an invitation can also be accepted in a browser: its link.
  const inBrowser = s && s.invite && mySession() !== null ? h("p", {}, "Or, in a browser: ",
    h("code", { id: "secret-link" }, `${location.origin}/login?invite=${s.t.token}`)) : "";
  const secret = h("div", { id: "secret" }, s ? h("p", { class: "error" },
    `${s.what} (shown this once; valid until ${when(s.t.expires_at_ms)}): `, h("code", { id: "secret-token" }, s.t.token)) : "", inBrowser);

  const approvals = pending.length ? h("table", { id: "approvals" },
    h("thead", {}, h("tr", {}, ["Task", "Owner", "Command", "Submitted", ""].map((x) => h("th", {}, x)))),
    h("tbody", {}, pending.map((t) => h("tr", { "data-task": t.id },
      h("td", {}, h("a", { href: "#/tasks/" + t.id }, String(t.id))), h("td", {}, t.owner.replace(/^user /, "")),
      h("td", {}, command(t)), h("td", {}, when(t.submitted_at_ms)),
      h("td", {}, act("Approve", () => post(`/api/tasks/${t.id}/approve`)),
        act("Reject", () => {
          const why = prompt(`Why is task ${t.id} rejected? Its owner reads it.`);
          if (!why) throw new Error("give a reason: its owner reads it");
          return post(`/api/tasks/${t.id}/reject?reason=${encodeURIComponent(why)}`);
        }, "danger")))))) : h("p", { class: "muted" }, "Nothing waits for approval.");

  const roles = ["viewer", "user", "operator", "admin"];
  const me = state.me.replace(/^user /, "");
  const people = h("table", { id: "users" },
    h("thead", {}, h("tr", {}, ["Name", "Role", "Since", "State", ""].map((x) => h("th", {}, x)))),
    h("tbody", {}, users.map((u) => {
      const gone = u.removed_at_ms !== null && u.removed_at_ms !== undefined;
      const select = h("select", { "data-role-of": u.name, disabled: gone || u.name === me }, roles.map((r) => h("option", { value: r, selected: r === u.role }, r)));
      select.addEventListener("change", async () => {
        try { await post(`/api/users/${encodeURIComponent(u.name)}/role`, { role: select.value }); render(); } catch (e) { select.after(fail(e)); }
      });
      return h("tr", { "data-user": u.name, class: gone ? "muted" : null },
        h("td", {}, u.name), h("td", {}, select), h("td", {}, when(u.created_at_ms)),
        h("td", {}, gone ? `removed ${when(u.removed_at_ms)}` : u.disabled ? "disabled" : "active"),
        h("td", {}, gone || u.name === me ? "" : [
          h("button", { "data-limits-of": u.name, onclick: () => { state.limitsOf = u.name; render(); } }, "Limits"),
          act(u.disabled ? "Enable" : "Disable", () => post(`/api/users/${encodeURIComponent(u.name)}/${u.disabled ? "enable" : "disable"}`)),
          act("Remove", () => {
            if (!confirm(`Remove ${u.name}? Their certificates are revoked and the name is never given again.`)) throw new Error("not removed");
            return post(`/api/users/${encodeURIComponent(u.name)}`, undefined, "DELETE");
          }, "danger")]));
    })));
  const inviteName = h("input", { id: "invite-name", placeholder: "name" });
  const inviteRole = h("select", { id: "invite-role" }, roles.filter((r) => admin || r !== "admin").map((r) => h("option", { value: r, selected: r === "user" }, r)));
  const invite = h("div", { class: "actions" }, inviteName, inviteRole, act("Invite", async () => {
    const t = await post("/api/users", { name: inviteName.value.trim(), role: inviteRole.value });
    reveal(`Invitation for ${inviteName.value.trim()}: they run \`river login HOST --token …\` with`, t);
    state.secret.invite = true;
  }));

  const joinTokens = admin ? [h("h2", {}, "Join tokens and invitations"),
    h("div", { class: "actions" }, act("New join token", async () => reveal("Join token for a new node", await post("/api/tokens", {})))),
    h("table", { id: "tokens" },
      h("thead", {}, h("tr", {}, ["Token", "For", "Expires", "Uses left", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, tokens.map((t) => h("tr", { "data-token": t.id, class: t.revoked ? "muted" : null },
        h("td", {}, t.id), h("td", {}, t.purpose === "node" ? "a node" : `invitation: ${t.user || ""}`),
        h("td", {}, when(t.expires_at_ms)), h("td", {}, t.revoked ? "revoked" : t.uses_left),
        h("td", {}, t.revoked ? "" : act("Revoke", () => post(`/api/tokens/${encodeURIComponent(t.id)}`, undefined, "DELETE"), "danger"))))))] : [];

  const nodeRows = admin ? [h("h2", {}, "Nodes"), h("table", { id: "admin-nodes" },
    h("tbody", {}, nodes.map((n) => h("tr", { "data-node": n.name },
      h("td", {}, n.name), h("td", {}, stateCell(n.state)), h("td", {}, n.address || "–"),
      h("td", {}, act("Remove", () => {
        if (!confirm(`Remove node ${n.name}? Its certificate is revoked and its work fails over.`)) throw new Error("not removed");
        return post(`/api/nodes/${encodeURIComponent(n.name)}`, undefined, "DELETE");
      }, "danger"))))))] : [];

  const trail = h("table", { id: "audit" },
    h("thead", {}, h("tr", {}, ["When", "Who", "What", "Detail"].map((x) => h("th", {}, x)))),
    h("tbody", {}, audit.map((e) => h("tr", {}, h("td", {}, when(e.at_ms)), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.detail)))));

  const limits = state.limitsOf ? await limitsEditor(state.limitsOf) : [];

  show(gen, secret,
    h("h2", {}, `Waiting for approval (${pending.length})`), approvals,
    h("h2", {}, "People"), invite, people, ...limits,
    ...joinTokens, ...nodeRows,
    h("h2", {}, "Audit trail (latest 50)"), trail);
}

// One user's limits (what their work may hold at once, what the host keeps for them): their own
// values over the cluster's defaults, set or put back to the defaults here as with
// `river user limits`.
const LIMITS = [["queued", "tasks waiting"], ["running_cores", "cores at once"], ["running_gpus", "GPUs at once"],
  ["vps", "VPSs"], ["archive_mib", "MiB of archives"]];

async function limitsEditor(name) {
  const l = await api(`/api/users/${encodeURIComponent(name)}/limits`);
  const shown = (v) => (v === null || v === undefined ? "cluster default" : v === 0 ? "no limit" : String(v));
  const inputs = LIMITS.map(([k]) => h("input", { id: "limit-" + k, type: "number", min: 0,
    value: l.overrides[k] ?? "", placeholder: `in effect: ${shown(l.effective[k])}` }));
  const send = (json) => async (ev) => {
    ev.target.disabled = true;
    try { await api(`/api/users/${encodeURIComponent(name)}/limits`, { method: "POST", json }); render(); } catch (e) { ev.target.disabled = false; ev.target.after(fail(e)); }
  };
  const values = () => Object.fromEntries(LIMITS.map(([k], i) => [k, inputs[i].value.trim()])
    .filter(([, v]) => v !== "").map(([k, v]) => [k, parseInt(v, 10)]));
  return [h("h3", { id: "limits-of" }, `Limits of ${name}`),
    h("p", { class: "muted" }, "Empty: the cluster's default; 0: no limit."),
    h("table", { id: "limits" }, h("tbody", {}, LIMITS.map(([k, label], i) => h("tr", { "data-limit": k },
      h("td", {}, label), h("td", {}, inputs[i]), h("td", {}, shown(l.effective[k])))))),
    h("div", { class: "actions" },
      h("button", { id: "limits-save", onclick: (ev) => send(values())(ev) }, "Save"),
      h("button", { id: "limits-reset", onclick: send({ reset: true }) }, "Back to the defaults"),
      h("button", { onclick: () => { state.limitsOf = null; render(); } }, "Close"))];
}

// One's own account: API tokens for scripts (`Authorization: Bearer`), made and revoked here,
// and the browsers logged in to the dashboard at the host's own address.
async function accountPage(gen) {
  const [tokens, sessions, limits] = await Promise.all([api("/api/me/tokens"), api("/api/me/sessions"),
    api("/api/me/limits").catch(() => null)]);
  const roles = ["viewer", "user", "operator", "admin"];
  const s = state.secret;
  const secret = h("div", { id: "secret" }, s ? h("p", { class: "error" },
    `${s.what} (shown this once; valid until ${when(s.t.expires_at_ms)}): `, h("code", { id: "secret-token" }, s.t.token)) : "");
  const name = h("input", { id: "token-name", placeholder: "name, e.g. ci" });
  const days = h("input", { id: "token-days", type: "number", min: 1, value: 90 });
  const role = h("select", { id: "token-role" }, roles.slice(0, roles.indexOf(state.role) + 1).map((r) => h("option", { value: r, selected: r === state.role }, r)));
  const create = h("button", { id: "token-create", onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      const t = await api("/api/me/tokens", { method: "POST", json: { name: name.value.trim(), ttl_secs: parseInt(days.value, 10) * 86400, role: role.value } });
      state.secret = { what: `API token ${t.name} (${t.role})`, t };
      render();
    } catch (e) { ev.target.disabled = false; ev.target.after(fail(e)); }
  } }, "Create");
  const rows = tokens.map((t) => h("tr", { "data-api-token": t.name, class: t.revoked_at_ms ? "muted" : null },
    h("td", {}, t.name), h("td", {}, t.role), h("td", {}, when(t.created_at_ms)), h("td", {}, when(t.expires_at_ms)),
    h("td", {}, t.last_used_ms ? when(t.last_used_ms) : "never"),
    h("td", {}, t.revoked_at_ms ? `revoked ${when(t.revoked_at_ms)}` : h("button", { class: "danger", "data-revoke": t.name, onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(`/api/me/tokens/${encodeURIComponent(t.name)}`, { method: "DELETE" }); render(); } catch (e) { ev.target.after(fail(e)); }
    } }, "Revoke"))));
  const mine = mySession();
  const sessionRows = sessions.map((s) => h("tr", { "data-session": s.id },
    h("td", {}, s.id, s.id === mine ? h("span", { class: "muted" }, " (this browser)") : ""),
    h("td", {}, s.address), h("td", {}, s.agent), h("td", {}, when(s.created_at_ms)),
    h("td", {}, s.last_seen_ms ? when(s.last_seen_ms) : "never"), h("td", {}, when(s.expires_at_ms)),
    h("td", {}, h("button", { class: "danger", "data-session-revoke": s.id, onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(`/api/me/sessions/${encodeURIComponent(s.id)}`, { method: "DELETE" }); } catch (e) { ev.target.after(fail(e)); return; }
      if (s.id === mine) location.href = "/"; else render();
    } }, "Log out"))));
  const browsers = [h("h2", {}, "Browsers logged in"),
    h("p", { class: "muted" }, "At the host's own address, from links `river ui --link` printed (`river ui sessions`, `river ui revoke`)."),
    sessionRows.length ? h("table", { id: "web-sessions" },
      h("thead", {}, h("tr", {}, ["Session", "From", "Browser", "Logged in", "Last seen", "Expires", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, sessionRows)) : h("p", { class: "muted", id: "web-sessions" }, "None.")];
  show(gen, secret, h("h2", {}, "API tokens"),
    h("p", { class: "muted" }, "For scripts and CI: `curl -H 'Authorization: Bearer TOKEN' https://HOST:PORT/api/…` acts as you, at most at the token's role."),
    h("div", { class: "actions" }, name, h("label", { for: "token-days" }, "days"), days, role, create),
    rows.length ? h("table", { id: "api-tokens" },
      h("thead", {}, h("tr", {}, ["Name", "Role", "Made", "Expires", "Last used", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, rows)) : h("p", { class: "muted", id: "api-tokens" }, "None."), ...browsers,
    ...(limits ? [h("h2", {}, "Your limits"), h("table", { id: "my-limits" }, h("tbody", {}, LIMITS.map(([k, label]) => h("tr", { "data-limit": k },
      h("td", {}, label), h("td", {}, limits.effective[k] ? String(limits.effective[k]) : "no limit")))))] : []));
}
