// The Kiri dashboard: reads the gateway's JSON API (with the token when one is known), follows
// its live events, and draws the last minutes with uPlot. Every text that comes from the API is
// inserted with textContent, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "kiri.token";
  const KEEP_TICKS = 600; // ten minutes of one tick a second, as the gateway keeps
  const REFRESH_MS = 5000;
  const LOG_LINES = 500;

  // ---- the token: from the fragment (never sent to the server) into sessionStorage -------

  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has("token")) return;
    const t = params.get("token").trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  // A token the gateway refused is not sent again until another is entered: wrong tokens count
  // towards the gateway's lockout, which would shut everyone out, the right token included.
  let refused = false;
  const usable = () => (refused ? "" : token());

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (usable()) h.Authorization = "Bearer " + usable();
    return h;
  }

  class ApiError extends Error {
    constructor(status, reason, message) {
      super(message);
      this.status = status;
      this.reason = reason;
    }
  }

  async function api(path, options = {}) {
    const sent = headers(options.headers);
    const resp = await fetch(path, Object.assign({}, options, { headers: sent, cache: "no-store" }));
    if (resp.status === 401 && sent.Authorization) {
      refused = true;
      showTokenState();
    }
    if (!resp.ok) {
      let body = {};
      try {
        body = await resp.json();
      } catch (_) {
        // not JSON: the status says enough
      }
      throw new ApiError(resp.status, body.reason || "", body.error || resp.statusText);
    }
    return resp.json();
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  function explain(e) {
    if (e.status === 401) {
      return refused
        ? "The gateway refused the token: enter the right one above."
        : "This gateway wants its token: enter it above, or open the address `kiri` printed (…/#token=…).";
    }
    if (e.status === 429) return "Too many wrong tokens lately: the gateway refuses tokens for a while.";
    if (e instanceof ApiError) return "The gateway answered " + e.status + ": " + e.message;
    return "Cannot reach the gateway (" + e.message + ").";
  }

  // ---- formatting ------------------------------------------------------------------------

  const int = (n) => (n == null ? "–" : Math.round(n).toLocaleString("en"));
  const rate = (n) => (n == null ? "–" : n < 10 ? n.toFixed(1) : int(n));

  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function duration(ms) {
    if (ms == null) return "–";
    const s = Math.round(ms / 1000);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function micros(us) {
    if (us == null) return "–";
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(1) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }

  function clock(ms) {
    if (ms == null) return "–";
    const d = new Date(ms);
    const sameDay = d.toDateString() === new Date().toDateString();
    const time = d.toLocaleTimeString("en-GB");
    return sameDay ? time : d.toISOString().slice(0, 10) + " " + time;
  }

  // An element with text content (and a class): never HTML.
  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      if (c instanceof Node) {
        const td = document.createElement("td");
        td.appendChild(c);
        tr.appendChild(td);
      } else {
        const [text, cls, title] = Array.isArray(c) ? c : [c];
        const td = el("td", text, cls);
        if (title) td.title = title;
        tr.appendChild(td);
      }
    }
    return tr;
  }

  // ---- charts (uPlot) ----------------------------------------------------------------------

  const CHART_HEIGHT = 170;
  const charts = {};

  // The x axis' labels: HH:MM, or HH:MM:SS when a tick falls within a minute.
  function axisTimes(u, splits) {
    const seconds = splits.some((s) => s % 60 !== 0);
    return splits.map((s) => new Date(s * 1000).toLocaleTimeString("en-GB",
      seconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
        : { hour: "2-digit", minute: "2-digit" }));
  }

  function makeChart(id, series) {
    const node = $(id);
    const opts = {
      width: Math.max(node.clientWidth, 200),
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      // Time on the 24-hour clock, as everywhere else on the page (uPlot's default is 12-hour).
      axes: [{ stroke: "#667", values: axisTimes }, { stroke: "#667", size: 46 }],
      series: [{}].concat(series.map((s) => ({
        label: s.label,
        stroke: s.color,
        fill: s.color + "22",
        width: 1.5,
        points: { show: false },
      }))),
    };
    const chart = new uPlot(opts, [[]].concat(series.map(() => [])), node);
    new ResizeObserver(() => {
      const w = Math.max(node.clientWidth, 200);
      if (w !== chart.width) chart.setSize({ width: w, height: CHART_HEIGHT });
    }).observe(node);
    return chart;
  }

  function setupCharts() {
    charts.events = makeChart("chart-events", [{ label: "events/s", color: "#2563eb" }]);
    charts.invocations = makeChart("chart-invocations", [
      { label: "invocations/s", color: "#16a34a" },
      { label: "errors/s", color: "#dc2626" },
    ]);
    charts.backlog = makeChart("chart-backlog", [{ label: "results held", color: "#d97706" }]);
    // For tests and the curious: the charts, with their data in chart.data.
    window.kiriCharts = charts;
  }

  // ---- ticks: the history, extended live ------------------------------------------------

  let ticks = [];

  // Per-second rate of counter `key` between two ticks; null across a gap or a restart.
  function perSecond(a, b, key) {
    const dt = (b.time_ms - a.time_ms) / 1000;
    if (dt <= 0 || dt > 10 || b[key] < a[key]) return null;
    return (b[key] - a[key]) / dt;
  }

  function mergeHistory(past) {
    const last = past.length ? past[past.length - 1].time_ms : 0;
    ticks = past.concat(ticks.filter((t) => t.time_ms > last)).slice(-KEEP_TICKS);
    redraw();
  }

  function addTick(t) {
    if (ticks.length && t.time_ms <= ticks[ticks.length - 1].time_ms) return;
    ticks.push(t);
    if (ticks.length > KEEP_TICKS) ticks.splice(0, ticks.length - KEEP_TICKS);
    redraw();
  }

  function redraw() {
    const xs = [], events = [], invocations = [], errors = [], backlog = [];
    ticks.forEach((t, i) => {
      xs.push(t.time_ms / 1000);
      backlog.push(t.backlog);
      const p = ticks[i - 1];
      events.push(p ? perSecond(p, t, "events") : null);
      invocations.push(p ? perSecond(p, t, "invocations") : null);
      errors.push(p ? perSecond(p, t, "errors") : null);
    });
    charts.events.setData([xs, events]);
    charts.invocations.setData([xs, invocations, errors]);
    charts.backlog.setData([xs, backlog]);

    const t = ticks[ticks.length - 1];
    if (!t) return;
    $("stat-events").textContent = int(t.events);
    $("stat-invocations").textContent = int(t.invocations);
    $("stat-errors").textContent = int(t.errors);
    $("stat-delivered").textContent = int(t.delivered);
    $("stat-events-rate").textContent = rate(events[events.length - 1]);
    $("stat-invocations-rate").textContent = rate(invocations[invocations.length - 1]);
    $("backlog-depth").textContent = int(t.backlog);
    $("backlog-bytes").textContent = bytes(t.backlog_bytes);
    const minuteAgo = ticks.find((x) => x.time_ms >= t.time_ms - 60000) || t;
    const ran = t.invocations - minuteAgo.invocations;
    const failed = t.errors - minuteAgo.errors;
    $("stat-error-rate").textContent =
      ran > 0 && failed >= 0 ? ((100 * failed) / ran).toFixed(1) + " %" : "none";
  }

  // ---- the overview --------------------------------------------------------------------

  function showUplink(connected, sinceMs, error, errorMs, nextMs) {
    const state = $("uplink-state");
    state.textContent = connected ? "connected" : "down";
    state.className = "big " + (connected ? "ok" : "bad");
    $("uplink-since").textContent = sinceMs ? "since " + clock(sinceMs) : "";
    let err = "";
    // Down: why. Up: an error since the connection began (a result the broker refused).
    if (error && (!connected || (errorMs && sinceMs && errorMs >= sinceMs))) {
      err = "last error" + (errorMs ? " at " + clock(errorMs) : "") + ": " + error;
      if (!connected && nextMs) err += " (next attempt " + clock(nextMs) + ")";
    }
    $("uplink-error").textContent = err;
  }

  async function loadStatus() {
    const s = await api("/api/v1/status");
    $("gateway-id").textContent = s.gateway;
    $("gateway-version").textContent = "v" + s.version + ", up " + duration(s.uptime_ms);
    document.title = "Kiri " + s.gateway;
    const u = s.uplink;
    showUplink(u.connected, u.since_ms, u.last_error, u.last_error_ms, u.next_attempt_ms);
    const unloaded = s.unloaded_functions || [];
    $("unloaded").hidden = unloaded.length === 0;
    $("unloaded").textContent = unloaded.map((u) =>
      "Inactive: " + u.name + " (" + u.module + ") does not load: " + u.error).join("\n");
    const o = s.outbox;
    $("backlog-depth").textContent = int(o.records);
    $("backlog-bytes").textContent = bytes(o.bytes);
    $("backlog-age").textContent = o.oldest_age_ms == null ? "none" : duration(o.oldest_age_ms);
    const drops = o.dropped_full + o.rejected + o.expired + o.corrupt;
    const drop = $("backlog-drops");
    drop.textContent = int(drops);
    drop.title = "full: " + o.dropped_full + ", rejected: " + o.rejected +
      ", expired: " + o.expired + ", corrupt: " + o.corrupt;
    // Inputs held back: the gateway is not acknowledging them (and /readyz says 503).
    const held = o.held_back || {};
    const why = [];
    if (held.disk) why.push("the disk is almost full (outbox.min_free_bytes)");
    if (held.full) why.push("the outbox is full (when_full = block)");
    $("held-back").hidden = why.length === 0;
    $("held-back").textContent = why.length ? "Inputs held back: " + why.join("; ") : "";
    // Damage found in the store at start (what was lost is said; what could be read is kept).
    const damage = (s.store || {}).damage;
    $("store-damage").hidden = !damage;
    $("store-damage").textContent = damage ? "Store: " + damage.message : "";
    // Messages an external site broker dropped (its queue limits): they never reached Kiri.
    const dropped = (s.site_broker || {}).dropped;
    $("site-drops").hidden = !dropped;
    $("site-drops").textContent = dropped ?
      "The site broker reports " + int(dropped) + " messages dropped since it started " +
      "(its queue limits, max_queued_messages / max_queued_bytes): they never reached Kiri" : "";
  }

  // ---- functions -------------------------------------------------------------------------

  async function loadFunctions() {
    const list = await api("/api/v1/functions");
    const body = $("functions-body");
    body.replaceChildren();
    for (const f of list) {
      const s = f.stats;
      const failed = Object.values(s.errors).reduce((a, b) => a + b, 0);
      const byReason = Object.entries(s.errors).map(([k, v]) => k + ": " + v).join(", ");
      const schedule = f.triggers.concat(f.every ? ["every " + f.every] : [],
        f.cron ? ["cron " + f.cron] : [], f.http ? ["http"] : []).join(", ");
      const origin = f.origin === "deployed" ? "deployed v" + f.deployed_version : f.origin;
      body.appendChild(row([
        [f.name, "name"],
        [f.version.slice(0, 12), "mono", f.version],
        origin,
        [schedule, "wrap"],
        [int(s.invocations), "num"],
        [int(failed), failed ? "num bad" : "num", byReason],
        [micros(s.wall_us_p50), "num"],
        [micros(s.wall_us_p99), "num"],
        [int(s.fuel), "num"],
        [bytes(s.memory_peak_bytes), "num"],
        [int(s.cold_starts) + " / " + int(s.warm_starts), "num"],
        [int(s.retries), "num"],
        [int(s.dead_lettered), "num"],
      ]));
    }
    $("functions-empty").hidden = list.length > 0;
    fillLogSelector(list.map((f) => f.name));
  }

  // ---- dead letters ----------------------------------------------------------------------

  const confirmDrop = new Map(); // id -> until when the Drop button waits for a second press
  let actionTimer = null;

  function actionNote(text) {
    $("dead-letters-action").textContent = text;
    clearTimeout(actionTimer);
    actionTimer = setTimeout(() => ($("dead-letters-action").textContent = ""), 10000);
  }

  async function act(what, id) {
    try {
      const out = await api("/api/v1/dead-letters/" + what, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: [id] }),
      });
      const verb = what === "replay" ? "replaying" : "dropped";
      actionNote(out.done.length
        ? verb + " entry " + id
        : "entry " + id + " not " + (what === "replay" ? "replayed" : "dropped") + ": " +
          out.skipped.map((s) => s[1]).join("; "));
    } catch (e) {
      actionNote(explain(e));
    }
    // A replay is done once it commits: look again soon, and a little later.
    loadDeadLetters();
    setTimeout(loadDeadLetters, 500);
    setTimeout(loadDeadLetters, 2000);
  }

  function button(label, cls, onClick, disabled) {
    const b = el("button", label, cls);
    b.type = "button";
    b.disabled = !!disabled;
    b.addEventListener("click", onClick);
    return b;
  }

  async function loadDeadLetters() {
    const body = $("dead-letters-body");
    const note = $("dead-letters-note");
    const table = $("dead-letters-table");
    if (!usable()) {
      table.hidden = true;
      $("dead-letters-count").textContent = "";
      note.textContent = refused
        ? "The gateway refused the token: enter the right one above."
        : "The dead letters need the token: enter it above.";
      return;
    }
    let list;
    try {
      list = await api("/api/v1/dead-letters?limit=200");
    } catch (e) {
      table.hidden = true;
      note.textContent = explain(e);
      return;
    }
    table.hidden = list.length === 0;
    note.textContent = list.length ? "" : "None: every event was processed.";
    $("dead-letters-count").textContent = "(" + list.length + (list.length === 200 ? "+" : "") + ")";
    body.replaceChildren();
    const now = Date.now();
    for (const d of list) {
      const actions = document.createElement("span");
      actions.className = "actions";
      actions.appendChild(button("Replay", "replay", () => act("replay", d.id), !d.replayable));
      const confirming = (confirmDrop.get(d.id) || 0) > now;
      actions.appendChild(button(confirming ? "Confirm drop" : "Drop", "drop", () => {
        if ((confirmDrop.get(d.id) || 0) > Date.now()) {
          confirmDrop.delete(d.id);
          act("drop", d.id);
        } else {
          confirmDrop.set(d.id, Date.now() + 5000);
          loadDeadLetters();
        }
      }));
      const tr = row([
        [d.id, "num"],
        d.function || "(none)",
        [d.topic, "mono"],
        d.reason,
        [d.error, "wrap"],
        [d.attempts, "num"],
        clock(d.received_ms),
        actions,
      ]);
      tr.dataset.id = d.id;
      body.appendChild(tr);
    }
  }

  // ---- deployments -----------------------------------------------------------------------

  async function loadDeployments() {
    const list = await api("/api/v1/deployments?limit=20");
    const body = $("deployments-body");
    body.replaceChildren();
    for (const d of list) {
      body.appendChild(row([
        clock(d.time_ms),
        d.name,
        [d.version == null ? "–" : d.version, "num"],
        d.kind,
        [(d.accepted ? "accepted: " : "refused: ") + d.reason, d.accepted ? "ok" : "bad"],
        d.source,
        [d.detail, "wrap"],
      ]));
    }
    $("deployments-empty").hidden = list.length > 0;
    $("deployments-table").hidden = list.length === 0;
  }

  // ---- the log tail ----------------------------------------------------------------------

  let logFunction = "";
  let logPending = null; // lines that arrived live while the tail was loading

  function fillLogSelector(names) {
    const select = $("log-function");
    const current = Array.from(select.options).map((o) => o.value).join("\n");
    if (current === names.join("\n")) return;
    select.replaceChildren(...names.map((n) => {
      const o = el("option", n);
      o.value = n;
      return o;
    }));
    if (names.includes(logFunction)) select.value = logFunction;
    else if (names.length) selectLogFunction(names[0]);
  }

  function logLine(l) {
    const pre = $("log-lines");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const line = el("div", null, "log " + l.level);
    line.appendChild(el("span", new Date(l.time_ms).toLocaleTimeString("en-GB") + " ", "muted"));
    line.appendChild(el("span", l.level.toUpperCase().padEnd(5) + " ", "level"));
    line.appendChild(el("span", l.text));
    pre.appendChild(line);
    while (pre.childElementCount > LOG_LINES) pre.firstElementChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function selectLogFunction(name) {
    logFunction = name;
    $("log-function").value = name;
    const pre = $("log-lines");
    pre.replaceChildren();
    logPending = [];
    try {
      const lines = await api("/api/v1/functions/" + encodeURIComponent(name) + "/logs?limit=200");
      if (logFunction !== name) return;
      const seen = new Set(lines.map((l) => l.time_ms + "\n" + l.text));
      lines.forEach(logLine);
      logPending.filter((l) => !seen.has(l.time_ms + "\n" + l.text)).forEach(logLine);
    } catch (e) {
      pre.appendChild(el("div", explain(e), "muted"));
    } finally {
      if (logFunction === name) logPending = null;
    }
  }

  // ---- live events -----------------------------------------------------------------------

  let stream = null;

  function onEvent(e) {
    if (e.type === "lagged") return; // ticks are totals: the next one catches up
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    if (ev.type === "tick") addTick(ev);
    else if (ev.type === "uplink") showUplink(ev.connected, ev.time_ms, ev.error, ev.time_ms, null);
    else if (ev.type === "log" && ev.function === logFunction) {
      if (logPending) logPending.push(ev);
      else logLine(ev);
    }
  }

  function startStream() {
    if (stream) stream.close();
    const pill = $("stream-state");
    stream = kiriSse.connect("/api/v1/events", {
      headers,
      onEvent,
      onState(state, detail, status) {
        if (status === 401 && usable()) {
          refused = true; // the next attempt goes without it (see `refused`)
          showTokenState();
        }
        pill.textContent = state === "open" ? "live" : "reconnecting";
        pill.className = "pill " + (state === "open" ? "ok" : "bad");
        // Out of touch with the gateway: its last state is shown greyed, not as current.
        $("cards").classList.toggle("stale", state !== "open");
        $("cards").title = state === "open" ? "" : "the gateway cannot be reached: last known state";
        pill.title = detail || "";
        // (Re)connected: fill what was missed while away.
        if (state === "open") api("/api/v1/history").then((h) => mergeHistory(h.ticks), () => {});
      },
    });
  }

  // ---- putting it together ---------------------------------------------------------------

  async function refresh() {
    const results = await Promise.allSettled([
      loadStatus(), loadFunctions(), loadDeployments(), loadDeadLetters(),
    ]);
    const failed = results.find((r) => r.status === "rejected");
    notice(failed ? explain(failed.reason) : "");
  }

  function showTokenState() {
    $("token-input").placeholder = refused ? "refused" : token() ? "set (hidden)" : "not set";
  }

  // Tries a new token with one request before everything else uses it, so a wrong one costs
  // one attempt; then (re)loads everything.
  async function begin() {
    refused = false;
    showTokenState();
    if (token()) {
      try {
        await api("/api/v1/dead-letters?limit=1");
      } catch (_) {
        // a refused token is marked by api(); anything else shows up in refresh()
      }
    }
    startStream();
    refresh();
    if (logFunction) selectLogFunction(logFunction);
  }

  function useToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    begin();
  }

  function start() {
    takeTokenFromFragment();
    setupCharts();
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = $("token-input");
      const t = input.value.trim();
      input.value = "";
      if (t) useToken(t);
    });
    $("token-forget").addEventListener("click", () => useToken(""));
    $("log-function").addEventListener("change", (e) => selectLogFunction(e.target.value));
    begin();
    setInterval(() => {
      if (!document.hidden) refresh();
    }, REFRESH_MS);
  }

  start();
})();
