// spoolq dashboard: plain JavaScript, no framework, no build step, nothing from the internet.
//
// Rules: every value from the node is put in the page as text (textContent, never innerHTML), so a
// message body cannot inject anything; the token travels only in the Authorization header and lives in
// this tab's sessionStorage; the page polls the node (history every 1.5 s) and stops when the token is
// refused.
"use strict";

(() => {
  const POLL_MS = 1500;
  const HOUR = 3600;
  const TOKEN_KEY = "spoolq.token";
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    samples: [],      // history samples, oldest first (last hour)
    lastT: null,      // t of the newest sample we have
    timer: null,
    authFailed: false,
    seq: 0,           // bumped on every navigation: late answers for an old view are dropped
  };

  // -- small helpers ----------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  const num = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"));
  const rate = (r) => (r ? (r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US")) : "0");

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const v = Math.max(0, seconds);
    if (v < 1) return "<1s";
    if (v < 90) return Math.round(v) + "s";
    if (v < 5400) return Math.round(v / 60) + "m";
    if (v < 172800) return (v / 3600).toFixed(1) + "h";
    return (v / 86400).toFixed(1) + "d";
  }

  const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "");
  const since = (epoch) => (epoch ? age(Date.now() / 1000 - epoch) + " ago" : "");
  const until = (epoch) => (epoch ? (epoch * 1000 > Date.now() ? "in " + age(epoch - Date.now() / 1000) : "now") : "");
  const badge = (st) => h("span", { class: "state state-" + st }, st);
  const enc = encodeURIComponent;

  function show(el, on) { el.hidden = !on; }

  function notice(text) {
    const n = $("#notice");
    n.textContent = text;
    show(n, true);
    clearTimeout(notice.timer);
    notice.timer = setTimeout(() => show(n, false), 6000);
  }

  function showError(e, from) {
    state.errorFrom = from || "view";
    const box = $("#error");
    box.replaceChildren(h("strong", {}, e.message || String(e)), e.hint ? h("span", { class: "hint" }, e.hint) : null);
    show(box, true);
  }

  // an error stays until what caused it works again (the poller clears only its own errors)
  function clearError(from) {
    if (!state.authFailed && state.errorFrom === (from || "view")) show($("#error"), false);
  }

  // -- talking to the node ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, hint) {
      super(message);
      this.status = status;
      this.code = code;
      this.hint = hint;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "unreachable", "Cannot reach the node: " + err.message, "Is it running? The page retries by itself.");
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      // the node's error shape: {"error": code, "message", "hint"} (or {"error": {"code", "message", "hint"}})
      const err = data && data.error;
      const inner = err && typeof err === "object" ? err : data || {};
      const e = new ApiError(resp.status, (typeof err === "string" ? err : inner.code) || String(resp.status),
        inner.message || resp.statusText || "HTTP " + resp.status, inner.hint);
      if (resp.status === 401 || resp.status === 403) refused(e);
      throw e;
    }
    return data;
  }

  function refused(e) {
    state.authFailed = true;
    stopPolling();
    const what = e.status === 403 ? "This token may not use the dashboard (" + e.message + ")."
      : state.token ? "The node refused this token (" + e.message + ")."
        : "This node needs a token (" + e.message + ").";
    showError(new ApiError(e.status, e.code, what, "Enter a token with the admin scope from the node's [tokens] section."));
    show($("#login"), true);
    show($("#logout"), false);
    $("#main").replaceChildren();
    $("#token").focus();
  }

  function useToken(token) {
    state.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    state.authFailed = false;
    show($("#error"), false);
    show($("#login"), false);
    show($("#logout"), !!token);
    state.samples = [];
    state.lastT = null;
    start();
  }

  // -- history polling (overview and charts) -------------------------------------------------------

  async function poll() {
    try {
      const q = state.lastT === null ? "seconds=" + HOUR : "since=" + state.lastT;
      const data = await api("GET", "/v1/admin/history?" + q);
      const fresh = data.samples || [];
      if (fresh.length) {
        state.samples.push(...fresh);
        state.lastT = fresh[fresh.length - 1].t;
        const cut = state.lastT - HOUR;
        while (state.samples.length && state.samples[0].t < cut) state.samples.shift();
      }
      clearError("poll");
      const view = route().view;
      if (view === "overview") renderOverview();
      else if (view === "peers") renderPeers();
    } catch (e) {
      if (!state.authFailed) showError(e, "poll");
    }
    if (!state.authFailed) state.timer = setTimeout(poll, POLL_MS);
  }

  function stopPolling() { clearTimeout(state.timer); state.timer = null; }

  async function start() {
    stopPolling();
    try {
      const st = await api("GET", "/v1/stats");
      $("#node").textContent = "node " + st.node_id;
    } catch (e) {
      if (!state.authFailed) showError(e);
    }
    if (state.authFailed) return;
    await poll();
    render();
  }

  // -- charts: hand-drawn SVG ----------------------------------------------------------------------

  function chart(title, series, id, fmt) {
    const W = 600, H = 170, L = 44, R = 8, T = 8, B = 22;
    const all = series.flatMap((x) => x.points);
    const t1 = state.lastT || Date.now() / 1000;
    const t0 = Math.min(t1 - 60, all.length ? Math.min(...all.map((p) => p[0])) : t1 - 60);
    let vmax = Math.max(1, ...all.map((p) => p[1]));
    const mag = Math.pow(10, Math.floor(Math.log10(vmax)));
    vmax = Math.ceil(vmax / mag) * mag;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / vmax) * (H - T - B);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, id });
    for (const f of [0, 0.5, 1]) {
      const v = vmax * f;
      svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      const label = s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = v >= 1000 ? (v / 1000).toFixed(v % 1000 ? 1 : 0) + "k" : String(+v.toFixed(2));
      svg.append(label);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      const label = s("text", { x: x(t), y: H - 6, "text-anchor": anchor });
      label.textContent = t === t1 ? "now" : "-" + age(t1 - t0);
      svg.append(label);
    }
    for (const ser of series) {
      const pts = ser.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
      svg.append(s("polyline", { class: "line " + ser.cls, points: pts }));
    }
    const last = series.map((ser) => (ser.points.length ? ser.points[ser.points.length - 1][1] : 0));
    svg.setAttribute("data-points", String(series[0] ? series[0].points.length : 0));
    svg.setAttribute("data-last", last.join(","));
    svg.setAttribute("data-max", String(Math.max(0, ...all.map((p) => p[1]))));
    const legend = h("div", { class: "legend" }, series.map((ser, i) => h("span", { class: ser.cls }, ser.name + " " + fmt(last[i]))));
    return h("section", { class: "card chart" }, h("h2", {}, title), legend, svg);
  }

  // -- views ---------------------------------------------------------------------------------------

  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    if (parts[0] === "channel" && parts[1]) return { view: "channel", channel: parts[1], params };
    if (parts[0] === "peer" && parts[1]) return { view: "channel", peer: parts[1], params };
    if (parts[0] === "msg" && parts[1]) return { view: "message", id: parts[1], params };
    if (parts[0] === "dead") return { view: "dead", params };
    if (parts[0] === "peers") return { view: "peers", params };
    return { view: "overview", params };
  }

  function render() {
    if (state.authFailed) return;
    state.seq += 1;
    if (state.errorFrom !== "poll") show($("#error"), false);  // a new view: the last one's error is moot
    const r = route();
    for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === r.view);
    if (r.view === "overview") renderOverview();
    else if (r.view === "channel") renderMessages(r);
    else if (r.view === "message") renderMessage(r);
    else if (r.view === "dead") renderDead(r);
    else if (r.view === "peers") renderPeers();
  }

  function table(headers, rows, empty) {
    const head = h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label)));
    const body = rows.length ? rows : [h("tr", { class: "empty" }, h("td", { colspan: headers.length }, empty))];
    return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
  }

  function renderOverview() {
    const main = $("#main");
    const latest = state.samples[state.samples.length - 1];
    if (!latest) {
      main.replaceChildren(h("section", { class: "card" }, h("p", { class: "muted" }, "Waiting for the node's first sample...")));
      return;
    }
    const chans = Object.entries(latest.channels).sort((a, b) => a[0].localeCompare(b[0]));
    const rows = chans.map(([name, c]) => h("tr", { "data-channel": name },
      h("td", {}, h("a", { href: "#/channel/" + enc(name) }, name)),
      h("td", { class: "num depth" }, num(c.depth)),
      h("td", { class: "num ready hide-narrow" }, num(c.ready)),
      h("td", { class: "num delayed hide-narrow" }, num(c.delayed)),
      h("td", { class: "num leased hide-narrow" }, num(c.leased)),
      h("td", { class: "num held hide-narrow" }, num(c.held)),
      h("td", { class: "num dead" }, c.dead ? h("a", { href: "#/dead?channel=" + enc(name) }, num(c.dead)) : "0"),
      h("td", { class: "num in" }, rate(c.in_rate)),
      h("td", { class: "num out" }, rate(c.out_rate)),
      h("td", { class: "num oldest" }, age(c.oldest_age))));
    const peers = Object.entries(latest.peers).sort((a, b) => a[0].localeCompare(b[0]));
    const prow = peers.map(([name, p]) => h("tr", { "data-peer": name },
      h("td", {}, h("a", { href: "#/peer/" + enc(name) }, name)),
      h("td", { class: "num" }, num(p.waiting)), h("td", { class: "num" }, rate(p.rate))));
    const sum = (f) => state.samples.map((smp) => [smp.t, Object.values(smp.channels).reduce((a, c) => a + (c[f] || 0), 0)]);
    const fwd = state.samples.map((smp) => [smp.t, Object.values(smp.peers).reduce((a, p) => a + (p.rate || 0), 0)]);
    const outTotal = sum("out_rate").map(([t, v], i) => [t, v + fwd[i][1]]);
    main.replaceChildren(
      h("div", { class: "charts" },
        chart("Depth (messages)", [{ name: "depth", cls: "s-depth", points: sum("depth") }], "chart-depth", num),
        chart("Throughput (messages/s)", [
          { name: "in", cls: "s-in", points: sum("in_rate") },
          { name: "out", cls: "s-out", points: outTotal }], "chart-rate", rate)),
      h("section", { class: "card" }, h("h2", {}, "Channels"),
        table([["channel"], ["depth", "num"], ["ready", "num hide-narrow"], ["delayed", "num hide-narrow"],
          ["leased", "num hide-narrow"], ["held", "num hide-narrow"], ["dead", "num"], ["in/s", "num"],
          ["out/s", "num"], ["oldest", "num"]], rows, "No channels yet."),
        h("p", { class: "muted" }, "Sampled every " + age(latestInterval()) + " by the node; last " + when(latest.t) + ".")),
      h("section", { class: "card" }, h("h2", {}, "Peers (outbox)"),
        table([["peer"], ["waiting", "num"], ["forwarded/s", "num"]], prow, "No outbox peers."),
        h("p", {}, h("a", { href: "#/peers" }, "Peer health: state, last error, next retry"))));
  }

  function latestInterval() {
    const n = state.samples.length;
    return n > 1 ? state.samples[n - 1].t - state.samples[n - 2].t : 2;
  }

  function needsAdminApi(e, what) {
    if (e.status === 404 && /no route/.test(e.message || "")) {
      return new ApiError(404, "not_found", what + " needs the node's admin API, which this node does not have.",
        "Upgrade the node to a spoolq with /v1/admin/.");
    }
    return e;
  }

  function selectionTable(items, headers, cells, empty) {
    const all = h("input", { type: "checkbox", "aria-label": "select all" });
    const boxes = items.map((m) => h("input", { type: "checkbox", class: "pick", value: m.id, "aria-label": "select " + m.id }));
    all.addEventListener("change", () => boxes.forEach((b) => { b.checked = all.checked; }));
    const rows = items.map((m, i) => h("tr", { "data-id": m.id }, h("td", {}, boxes[i]), cells(m)));
    const tbl = table([[all], ...headers], rows, empty);
    tbl.picked = () => boxes.filter((b) => b.checked).map((b) => b.value);
    return tbl;
  }

  async function act(action, ids, after) {
    try {
      const r = await api("POST", "/v1/admin/" + action, { ids });
      notice(action + ": " + r.changed + " of " + r.matched + " message(s) changed.");
      after();
    } catch (e) {
      showError(needsAdminApi(e, action));
    }
  }

  function confirmThen(text, fn) {
    $("#confirm-text").textContent = text;
    show($("#confirm"), true);
    const yes = $("#confirm-yes"), no = $("#confirm-no");
    const close = () => { show($("#confirm"), false); yes.onclick = null; no.onclick = null; };
    yes.onclick = () => { close(); fn(); };
    no.onclick = close;
    no.focus();
  }

  function actionButtons(getIds, after) {
    const btn = (label, action, danger) => h("button", {
      type: "button", class: danger ? "danger" : null, "data-action": action,
      onclick: () => {
        const ids = getIds();
        if (!ids.length) { showError(new ApiError(0, "", "Select messages first.", "Tick the boxes of the messages to act on.")); return; }
        if (danger) confirmThen("Delete " + ids.length + " message(s) for good? This cannot be undone.", () => act(action, ids, after));
        else act(action, ids, after);
      },
    }, label);
    return [btn("Hold", "hold"), btn("Release", "release"), btn("Requeue", "requeue"), btn("Delete", "delete", true)];
  }

  async function renderMessages(r) {
    const seq = state.seq;
    const main = $("#main");
    const stateSel = r.params.get("state") || "";
    const after = r.params.get("after");
    const q = new URLSearchParams({ limit: "100" });
    if (r.channel) q.set("channel", r.channel);
    if (r.peer) q.set("peer", r.peer);
    if (stateSel) q.set("state", stateSel);
    if (after) q.set("after", after);
    const title = r.channel ? "Channel " + r.channel : "Outbox for peer " + r.peer;
    const base = r.channel ? "#/channel/" + enc(r.channel) : "#/peer/" + enc(r.peer);
    const select = h("select", { "aria-label": "state", onchange: (ev) => { location.hash = base + (ev.target.value ? "?state=" + ev.target.value : ""); } },
      ["", "ready", "delayed", "leased", "held"].map((v) => h("option", { value: v, selected: v === stateSel }, v || "any state")));
    main.replaceChildren(h("section", { class: "card" }, h("h2", {}, title), h("p", { class: "muted" }, "Loading...")));
    let data;
    try {
      data = await api("GET", "/v1/admin/messages?" + q);
    } catch (e) {
      if (seq === state.seq && !state.authFailed) {
        showError(needsAdminApi(e, "Browsing messages"));
        main.replaceChildren(h("section", { class: "card" }, h("h2", {}, title)));
      }
      return;
    }
    if (seq !== state.seq) return;
    clearError();
    const items = data.messages || [];
    const tbl = selectionTable(items, [["id"], ["state"], ["priority", "num"], ["attempts", "num"], ["age", "num"],
      ["size", "num hide-narrow"], ["due", "hide-narrow"], ["body"]], (m) => [
      h("td", { class: "mono" }, h("a", { href: "#/msg/" + enc(m.id) }, m.id)),
      h("td", {}, badge(m.state)), h("td", { class: "num" }, m.priority), h("td", { class: "num" }, m.attempts),
      h("td", { class: "num" }, age(m.age)), h("td", { class: "num hide-narrow" }, num(m.size)),
      h("td", { class: "hide-narrow" }, until(m.due || m.lease_until)),
      h("td", { class: "preview mono" }, m.preview)], "No messages here.");
    const more = data.next ? h("a", { href: base + "?" + new URLSearchParams({ ...(stateSel ? { state: stateSel } : {}), after: data.next }) }, "Next page") : null;
    main.replaceChildren(h("section", { class: "card" }, h("h2", {}, title),
      h("div", { class: "toolbar" }, select, actionButtons(() => tbl.picked(), render)),
      tbl, h("div", { class: "toolbar" }, after ? h("a", { href: base }, "First page") : null, more)));
  }

  function dl(pairs) {
    return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function headersOf(headers) {
    const pairs = Object.entries(headers || {});
    return pairs.length ? dl(pairs) : h("p", { class: "muted" }, "none");
  }

  function bodyOf(m) {
    if (m.body_json !== null && m.body_json !== undefined) return JSON.stringify(m.body_json, null, 2);
    if (m.body_text !== null && m.body_text !== undefined) return m.body_text;
    return "(binary, base64) " + (m.body_b64 || m.body_base64 || "");
  }

  async function renderMessage(r) {
    const seq = state.seq;
    const main = $("#main");
    const parts = [];
    let found = false;
    try {
      const data = await api("GET", "/v1/admin/messages/" + enc(r.id));
      for (const m of data.messages || []) {
        found = true;
        parts.push(h("section", { class: "card" }, h("h2", {}, "Message ", h("span", { class: "mono" }, m.id)),
          h("div", { class: "toolbar" }, actionButtons(() => [m.id], render)),
          dl([["state", badge(m.state)], ["place", m.place], ["channel", m.channel], ["peer", m.peer],
            ["priority", String(m.priority)], ["attempts", String(m.attempts)], ["age", age(m.age)],
            ["size", num(m.size) + " bytes"], ["due", when(m.due)], ["lease until", when(m.lease_until)]]),
          h("h3", {}, "Headers"), headersOf(m.headers),
          h("h3", {}, "Body"), h("pre", { class: "body" }, bodyOf(m))));
      }
    } catch (e) {
      if (state.authFailed) return;
      if (e.status !== 404) { if (seq === state.seq) showError(needsAdminApi(e, "Showing a message")); }
    }
    if (!found) {
      try {
        const d = await api("GET", "/v1/dead/" + enc(r.id));
        found = true;
        parts.push(h("section", { class: "card" }, h("h2", {}, "Dead letter ", h("span", { class: "mono" }, d.id)),
          h("div", { class: "toolbar" }, deadButtons(() => [d.id], () => { location.hash = "#/dead"; })),
          dl([["state", badge("dead")], ["channel", d.channel], ["peer", d.peer], ["reason", d.reason], ["detail", d.detail],
            ["attempts", String(d.attempts)], ["died", when(d.died_at)], ["size", num(d.size) + " bytes"]]),
          h("h3", {}, "Headers"), headersOf(d.headers),
          h("h3", {}, "Body"), h("pre", { class: "body" }, decodeB64(d.body_base64))));
      } catch (e) {
        if (state.authFailed) return;
        if (e.status !== 404 && seq === state.seq) showError(e);
      }
    }
    if (!found) parts.push(h("section", { class: "card" }, h("h2", {}, "Message ", h("span", { class: "mono" }, r.id)),
      h("p", {}, "Not in this node's inbox, outbox, held or dead letters (it may have been acked, or never came here).")));
    parts.push(await traceCard(r.id));
    if (seq === state.seq) main.replaceChildren(...parts);
  }

  function decodeB64(b64) {
    try {
      const bytes = Uint8Array.from(atob(b64 || ""), (c) => c.charCodeAt(0));
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (_) {
      return "(binary, base64) " + (b64 || "");
    }
  }

  function detailText(d) {
    if (d === null || d === undefined) return "";
    if (typeof d !== "object") return String(d);
    return Object.entries(d).map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join("  ");
  }

  async function traceCard(id) {
    const card = h("section", { class: "card", id: "trace" }, h("h2", {}, "Trace"));
    try {
      const t = await api("GET", "/v1/admin/trace/" + enc(id));
      if (t.trace === false) card.append(h("p", { class: "muted" }, "The event log is off on this node."));
      const rows = (t.events || []).map((ev) => h("tr", {}, h("td", {}, when(ev.at)),
        h("td", { class: "mono hide-narrow" }, ev.node || t.node), h("td", {}, ev.kind),
        h("td", { class: "wrap" }, detailText(ev.detail))));
      card.append(table([["at"], ["node", "hide-narrow"], ["event"], ["detail"]], rows, "No events recorded for this id on this node."));
      const hops = (t.next || []).map((x) => (typeof x === "string" ? { peer: x } : x));
      if (hops.length) {
        // each hop's own dashboard (another origin: it asks for its own token)
        card.append(h("p", {}, "Next hops: ", hops.map((x, i) => [i ? ", " : "",
          x.url && /^https?:[/][/]/.test(x.url) ? h("a", { href: x.url + "/ui/#/msg/" + enc(id), rel: "noopener noreferrer" }, x.peer) : x.peer,
          x.forwarded === false ? " (not forwarded yet)" : ""])));
      }
    } catch (e) {
      if (e.status === 404) card.append(h("p", { class: "muted", "data-trace": "unavailable" }, "Trace not available for this id on this node."));
      else card.append(h("p", { class: "muted" }, "Trace: " + e.message));
    }
    return card;
  }

  function deadButtons(getIds, after) {
    const run = (what) => {
      const ids = getIds();
      if (!ids.length) { showError(new ApiError(0, "", "Select dead letters first.", "Tick the boxes of the dead letters to act on.")); return; }
      const text = what === "retry"
        ? "Retry " + ids.length + " dead letter(s)? They go back to their channel (or outbox) as new."
        : "Purge " + ids.length + " dead letter(s) for good? This cannot be undone.";
      confirmThen(text, async () => {
        try {
          const r = await api("POST", "/v1/dead/" + what, { ids });
          notice(what === "retry" ? "Retried " + r.retried.length + " dead letter(s)." : "Purged " + r.purged + " dead letter(s).");
          after();
        } catch (e) { showError(e); }
      });
    };
    return [h("button", { type: "button", "data-action": "retry", onclick: () => run("retry") }, "Retry"),
      h("button", { type: "button", class: "danger", "data-action": "purge", onclick: () => run("purge") }, "Purge")];
  }

  async function renderDead(r) {
    const seq = state.seq;
    const main = $("#main");
    const channel = r.params.get("channel") || "";
    const q = new URLSearchParams({ limit: "200" });
    if (channel) q.set("channel", channel);
    let data;
    try {
      data = await api("GET", "/v1/dead?" + q);
    } catch (e) {
      if (seq === state.seq && !state.authFailed) showError(e);
      return;
    }
    if (seq !== state.seq) return;
    clearError();
    const items = data.dead || [];
    const tbl = selectionTable(items, [["id"], ["channel"], ["reason"], ["attempts", "num"], ["died", "num"], ["detail", "hide-narrow"]], (d) => [
      h("td", { class: "mono" }, h("a", { href: "#/msg/" + enc(d.id) }, d.id)),
      h("td", {}, d.channel + (d.peer ? " \u2192 " + d.peer : "")), h("td", {}, d.reason),
      h("td", { class: "num" }, d.attempts), h("td", { class: "num" }, since(d.died_at)),
      h("td", { class: "wrap hide-narrow" }, d.detail)], "No dead letters" + (channel ? " in " + channel : "") + ".");
    main.replaceChildren(h("section", { class: "card", id: "dead" },
      h("h2", {}, "Dead letters" + (channel ? " of " + channel : "")),
      h("div", { class: "toolbar" }, deadButtons(() => tbl.picked(), render),
        channel ? h("a", { href: "#/dead" }, "all channels") : null,
        h("span", { class: "muted" }, items.length + " shown")),
      tbl));
  }

  async function renderPeers() {
    const seq = state.seq;
    const main = $("#main");
    let rows, rich = true;
    try {
      rows = (await api("GET", "/v1/admin/outbox")).peers || [];
    } catch (e) {
      if (state.authFailed) return;
      if (e.status !== 404) { if (seq === state.seq) showError(e); return; }
      rich = false;
      try {
        const p = (await api("GET", "/v1/peers")).peers || {};
        rows = Object.entries(p).map(([name, v]) => ({
          peer: name, state: v.up ? "up" : v.backoff_seconds > 0 ? "backing_off" : "unreachable",
          last_error: v.last_error, next_retry: v.backoff_seconds > 0 ? Date.now() / 1000 + v.backoff_seconds : null,
          forwarded: v.forwarded,
        }));
        const latest = state.samples[state.samples.length - 1];
        for (const row of rows) if (latest && latest.peers[row.peer]) row.waiting = latest.peers[row.peer].waiting;
      } catch (e2) { if (seq === state.seq && !state.authFailed) showError(e2); return; }
    }
    if (seq !== state.seq) return;
    clearError();
    const latest = state.samples[state.samples.length - 1];
    const rateOf = (p) => (p.rate !== undefined ? p.rate : latest && latest.peers[p.peer] ? latest.peers[p.peer].rate : 0);
    const body = rows.map((p) => h("tr", { "data-peer": p.peer },
      h("td", {}, h("a", { href: "#/peer/" + enc(p.peer) }, p.peer)), h("td", {}, badge(p.state)),
      h("td", { class: "num" }, num(p.waiting)), h("td", { class: "num hide-narrow" }, num(p.in_flight)),
      h("td", { class: "num hide-narrow" }, age(p.oldest_age)), h("td", { class: "num" }, rate(rateOf(p))),
      h("td", { class: "hide-narrow" }, since(p.last_success)), h("td", {}, until(p.next_retry)),
      h("td", { class: "wrap" }, p.last_error || ""),
      rich ? h("td", {}, h("button", { type: "button", onclick: () => flush(p.peer) }, "Retry now")) : h("td", {})));
    main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Peers"),
      table([["peer"], ["state"], ["waiting", "num"], ["in flight", "num hide-narrow"], ["oldest", "num hide-narrow"],
        ["rate/s", "num"], ["last success", "hide-narrow"], ["next retry"], ["last error"], [""]], body, "No peers in the outbox.")));
  }

  async function flush(peer) {
    try {
      const r = await api("POST", "/v1/admin/flush", { peer });
      notice("Retrying now: " + (r.flushed || []).join(", "));
      render();
    } catch (e) { showError(e); }
  }

  // -- start -----------------------------------------------------------------------------------------

  function tokenFromFragment() {
    const m = location.hash.match(/[#&]token=([^&]*)/);
    if (!m) return;
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search + "#/");  // out of the address bar
  }

  document.addEventListener("DOMContentLoaded", () => {
    tokenFromFragment();
    $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); useToken($("#token").value.trim()); });
    $("#logout").addEventListener("click", () => { useToken(""); });
    $("#search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("#search-id").value.trim();
      if (id) location.hash = "#/msg/" + enc(id);
    });
    window.addEventListener("hashchange", () => { if (location.hash.includes("token=")) { tokenFromFragment(); useToken(state.token); } else render(); });
    show($("#logout"), !!state.token);
    start();
  });
})();
