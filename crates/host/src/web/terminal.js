// A terminal in a running task, in its own tab: xterm.js over a WebSocket that the host bridges
// to the task's terminal stream (what `river connect` uses). Keystrokes (Ctrl-C and pastes
// included) go as binary messages, window sizes as `{"resize":…}`; output comes back as binary
// messages, and `{"started"}`, `{"exit"}` or `{"error"}` say what happened.
"use strict";

(async function () {
  const id = parseInt(location.hash.slice(1), 10);
  const status = document.getElementById("term-status");
  const say = (text, cls) => { status.textContent = text; status.className = "live " + cls; };
  const title = document.getElementById("term-title");
  title.textContent = `task ${id}`;
  title.href = `/#/tasks/${id}`;
  document.title = `task ${id} · terminal · river`;
  if (!id) return say("no task: open this from a task's page", "off");

  // A task that cannot be reached says why before any connection is tried.
  const r = await fetch(`/api/tasks/${id}`);
  const t = await r.json().catch(() => ({}));
  if (!r.ok) return say(t.error || r.statusText, "off");
  if (t.state !== "running") return say(`task ${id} is ${t.state}; only a running task has a terminal`, "off");

  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("term"));
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/api/tasks/${id}/terminal?rows=${term.rows}&cols=${term.cols}`);
  ws.binaryType = "arraybuffer";
  const enc = new TextEncoder();
  let ended = false;
  let started = false;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return term.write(new Uint8Array(ev.data));
    const m = JSON.parse(ev.data);
    if (m.started) { started = true; say("connected", "on"); term.focus(); }
    if (m.exit !== undefined) { ended = true; say(`exited with ${m.exit}`, "off"); }
    if (m.error) { ended = true; say(m.error, "off"); }
  };
  ws.onclose = () => {
    if (ended) return;
    say(started ? "disconnected" : "the host refused the terminal: you may not reach this task, or it no longer runs", "off");
  };
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  term.onResize(({ rows, cols }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: { rows, cols } }));
  });
  window.addEventListener("resize", () => fit.fit());
})();
