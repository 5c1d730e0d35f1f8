// infergate experiments console: plain DOM, no framework, no build step.
// Every value from the API is put in the page as text (textContent / createTextNode), never as
// markup: experiment, variant and unit names are user input.
"use strict";
(() => {
  const KEY = "infergate.console.token";      // sessionStorage only: never a URL or cookie
  const POLL_MS = 1000, LIST_MS = 2000, SERIES_S = 300, WINDOW_S = 30;
  const $ = (id) => document.getElementById(id);
  const S = { list: [], name: null, state: null, series: null, history: [], draft: null,
              base: null, dirty: false, previewTimer: null, pending: null, timers: [] };

  // ---- DOM helpers ---------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v; else e.setAttribute(k, String(v));
    }
    for (const c of kids) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
    return e;
  }
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); return node; };
  const text = (node, s) => { node.textContent = s === null || s === undefined ? "" : String(s); return node; };
  const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);
  const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(2) + " %";
  const pval = (p) => p === null || p === undefined ? "no data yet" : (p < 0.001 ? p.toExponential(2) : p.toFixed(3));
  const when = (t) => t ? new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
  const target = (t) => t ? `${t.model}:${t.version || "latest"}` : "–";

  // ---- API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, doc) { super((doc && doc.message) || `HTTP ${status}`); this.status = status; this.doc = doc || {}; }
  }
  async function api(method, path, body, headers) {
    const token = sessionStorage.getItem(KEY);
    if (!token) throw new ApiError(401, { error: "unauthorized", message: "not signed in" });
    const h = Object.assign({ authorization: "Bearer " + token }, headers || {});
    if (body !== undefined) h["content-type"] = "application/json";
    let r;
    try {
      r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
                               cache: "no-store", credentials: "omit", redirect: "error" });
    } catch (e) {
      throw new ApiError(0, { error: "unreachable", message: "the gateway did not answer" });
    }
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = null; }
    if (r.status === 401) { signOut("The gateway refused the token (wrong or expired)."); }
    if (!r.ok) throw new ApiError(r.status, doc);
    return doc;
  }
  const expPath = (name, rest) => "/admin/experiments/" + encodeURIComponent(name) + (rest || "");

  // ---- sign in / out -------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(KEY);
    for (const t of S.timers) clearInterval(t);
    S.timers = []; S.list = []; S.name = null; S.state = null; S.draft = null; S.dirty = false;
    clear($("experiments").tBodies[0]);
    $("detail").hidden = true; $("app").hidden = true; $("logout").hidden = true;
    text($("signed-in"), "");
    $("login").hidden = false;
    text($("login-error"), message || "");
    $("token").value = "";
  }
  async function signIn(token) {
    sessionStorage.setItem(KEY, token);
    try {
      await loadList();
    } catch (e) {
      if (e.status !== 401) { sessionStorage.removeItem(KEY); text($("login-error"), e.message); }
      return;
    }
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    text($("signed-in"), "signed in");
    S.timers.push(setInterval(() => loadList().catch(showListError), LIST_MS));
    S.timers.push(setInterval(() => { if (S.name) refresh().catch(showListError); }, POLL_MS));
    const fromHash = decodeURIComponent(location.hash.slice(1));
    if (fromHash && S.list.some((x) => x.name === fromHash)) select(fromHash);
  }
  const showListError = (e) => text($("list-error"), e.status === 401 ? "" : e.message);

  // ---- experiments list ----------------------------------------------------------------
  async function loadList() {
    const doc = await api("GET", "/admin/experiments");
    S.list = doc.experiments;
    text($("list-error"), "");
    const tb = clear($("experiments").tBodies[0]);
    for (const x of S.list) {
      const c = x.config;
      const variants = el("span");
      c.variants.forEach((v, i) => {
        if (i) variants.append(el("br"));
        variants.append(`${v.name} ${fmt(v.weight, 2)} % → ${target(v.target)}${v.name === c.control ? " (control)" : ""}`);
      });
      if (c.shadow) { variants.append(el("br")); variants.append(`shadow ${c.shadow.variant} ${fmt(c.shadow.share, 2)} % → ${target(c.shadow.target)}`); }
      const srm = x.srm.flagged ? el("span", { class: "badge srm-flagged" }, "SRM p=" + pval(x.srm.p_value))
                                : el("span", { class: "badge srm-ok" }, "p=" + pval(x.srm.p_value));
      const row = el("tr", { "data-name": x.name, class: x.name === S.name ? "selected" : "" },
        el("td", {}, el("strong", {}, x.name)), el("td", {}, el("span", { class: "badge " + c.status }, c.status)),
        el("td", {}, c.model), el("td", {}, variants), el("td", {}, srm),
        el("td", {}, el("span", { class: "badge " + x.guardrails.state }, x.guardrails.state)), el("td", {}, x.version));
      row.addEventListener("click", () => select(x.name));
      tb.append(row);
    }
  }

  // ---- one experiment --------------------------------------------------------------------
  async function select(name) {
    S.name = name; S.dirty = false; S.draft = null; S.series = null; S.shown = null;
    history.replaceState(null, "", "#" + encodeURIComponent(name));
    for (const tr of $("experiments").tBodies[0].rows) tr.classList.toggle("selected", tr.getAttribute("data-name") === name);
    $("e-confirm").hidden = true; $("e-conflict").hidden = true; text($("e-saved"), ""); clearFieldErrors();
    clearPreview(); $("e-reason").value = "";
    $("detail").hidden = false;
    await refresh();
    await loadHistory();
  }

  async function refresh() {
    const name = S.name;
    const [state, series] = await Promise.all([
      api("GET", expPath(name)), api("GET", expPath(name, `/series?seconds=${SERIES_S}&window=${WINDOW_S}`))]);
    if (name !== S.name) return;
    const versionChanged = S.state && S.state.version !== state.version;
    S.state = state; S.series = series;
    // Rebuild the form only when the stored config changed: a rebuild every poll would take the
    // focus and the allowlist's variant choice from someone about to type.
    const shown = JSON.stringify([state.version, state.config]);
    if (!S.dirty && shown !== S.shown) {
      S.draft = structuredClone(state.config); S.base = state.version; S.shown = shown; renderEdit();
    }
    renderDetail();
    drawCharts();
    if (versionChanged) loadHistory().catch(showListError);
  }

  function renderDetail() {
    const st = S.state, c = st.config;
    text($("d-title"), st.name);
    text($("d-meta"), `model ${c.model} · salt ${c.salt} · bucket_version ${c.bucket_version} · version ${st.version}` +
      (st.updated_at ? ` · changed ${when(st.updated_at)} by ${st.token_id}` + (st.reason ? ` (${st.reason})` : "") : " · never changed (initial config)"));
    const status = $("d-status"); status.className = "badge " + c.status; text(status, c.status);
    const srm = $("d-srm"); srm.className = "badge " + (st.srm.flagged ? "srm-flagged" : "srm-ok");
    text(srm, st.srm.flagged ? "SRM FLAGGED" : "SRM ok");
    const g = $("d-guard"); g.className = "badge " + st.guardrails.state; text(g, "guardrails " + st.guardrails.state);

    const sum = (S.series && S.series.summary.variants) || {};
    text($("d-window"), S.series ? `(last ${fmt(S.series.summary.window_s, 0)} s of this gateway process; SRM and guardrails: all replicas)` : "");
    const units = st.units.counts, totalUnits = Object.values(units).reduce((a, b) => a + b, 0);
    const exps = st.exposures.counts, totalReq = Object.values(exps).reduce((a, b) => a + b, 0);
    const tb = clear($("d-live").tBodies[0]);
    c.variants.forEach((v) => {
      const f = sum[v.name] || {};
      const errs = Object.entries(f.errors || {}).map(([k, n]) => `${k}: ${n}`).join(", ") || "none";
      const gv = st.guardrails.variants[v.name] || {};
      tb.append(el("tr", { "data-variant": v.name },
        el("td", {}, v.name + (v.name === c.control ? " (control)" : "")), el("td", {}, target(v.target)),
        el("td", {}, fmt(v.weight, 2) + " %"),
        el("td", { class: "units-share" }, (totalUnits ? pct(units[v.name] / totalUnits) : "–") + ` (${units[v.name] || 0} units)`),
        el("td", {}, totalReq ? pct(exps[v.name] / totalReq) : "–"),
        el("td", { class: "rps" }, fmt(f.rps, 1)), el("td", {}, fmt(f.p50_ms, 2)), el("td", {}, fmt(f.p99_ms, 2)),
        el("td", { class: "errors" }, errs),
        el("td", {}, gv.requests ? `${gv.requests} req, ${pct(gv.error_rate)} err, p99 ${fmt(gv.p99_ms, 1)} ms` : "–")));
    });

    const box = clear($("d-srm-box"));
    box.className = "box " + (st.srm.flagged ? "srm-flagged" : "");
    box.append(el("strong", {}, "Sample ratio mismatch (distinct units)"), el("br"),
      `p = ${pval(st.srm.p_value)} (flagged below ${st.srm.alpha}) over ${st.srm.total} units`,
      el("br"), st.srm.flagged ? "FLAGGED: the observed split does not match the weights; do not trust the results"
                               : "no mismatch detected");
    const sh = clear($("d-shadow-box"));
    sh.append(el("strong", {}, "Shadow"), el("br"));
    if (!st.shadow) sh.append("no shadow variant");
    else sh.append(`${st.shadow.variant} mirrors ${fmt(st.shadow.share, 2)} % of units: ${st.shadow.calls} calls, ` +
                   `mean latency ${fmt(st.shadow.latency_ms_mean, 2)} ms, mean |prediction diff| ${fmt(st.shadow.diff_mean, 4)}`);
    const gb = clear($("d-guard-box"));
    gb.append(el("strong", {}, "Guardrails: " + st.guardrails.state), el("br"));
    const conf = st.guardrails.configured;
    gb.append(conf ? `max error rate ${conf.max_error_rate ?? "–"}, max p99 ${conf.max_p99_ms ?? "–"} ms, window ${st.guardrails.window_s} s, min ${st.guardrails.min_requests} requests`
                   : "none configured");
    const lr = st.guardrails.last_rollback;
    if (lr) { gb.append(el("br"), `last rollback ${when(lr.at)}: ${lr.reason}`); }
  }

  // ---- charts (SVG, drawn from the series route) ---------------------------------------------
  const SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) { const e = document.createElementNS(SVGNS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); return e; }
  function drawCharts() {
    const names = S.state.config.variants.map((v) => v.name);
    const pts = (S.series && S.series.points) || [];
    chart($("chart-rps"), names, pts, (f) => f.rps);
    chart($("chart-p99"), names, pts, (f) => f.p99_ms);
    const lg = clear($("chart-legend"));
    names.forEach((n, i) => lg.append(el("span", {}, el("span", { class: "swatch c" + (i % 6) }), n)));
  }
  function chart(node, names, pts, get) {
    clear(node);
    const W = 600, H = 180, L = 44, B = 18, T = 8;
    const now = pts.length ? pts[pts.length - 1].t : Date.now() / 1000, t0 = now - SERIES_S;
    let max = 0;
    for (const p of pts) for (const n of names) { const f = p.variants[n]; const y = f ? get(f) : null; if (y !== null && y > max) max = y; }
    max = max > 0 ? max * 1.1 : 1;
    node.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const label = (x, y, s, anchor) => { const t = svg("text", { x, y, "text-anchor": anchor || "end" }); t.textContent = s; node.append(t); };
    label(L - 4, T + 10, max >= 10 ? max.toFixed(0) : max.toFixed(2)); label(L - 4, H - B, "0");
    label(L, H - 4, "-5 min", "start"); label(W - 2, H - 4, "now");
    names.forEach((n, i) => {
      const xy = [];
      for (const p of pts) {
        const f = p.variants[n]; const y = f ? get(f) : null;
        if (y === null || y === undefined) continue;
        xy.push(`${(L + (p.t - t0) / SERIES_S * (W - L)).toFixed(1)},${(H - B - y / max * (H - B - T)).toFixed(1)}`);
      }
      node.append(svg("polyline", { points: xy.join(" "), class: "c" + (i % 6), "data-variant": n }));
    });
  }

  // ---- edit --------------------------------------------------------------------------------
  const hundredths = (w) => Math.round(Number(w) * 100);
  function balanceControl() {
    const d = S.draft;
    const others = d.variants.filter((v) => v.name !== d.control).reduce((a, v) => a + hundredths(v.weight), 0);
    d.variants.find((v) => v.name === d.control).weight = (10000 - others) / 100;
  }
  function renderEdit() {
    const d = S.draft;
    const tb = clear($("e-weights").tBodies[0]);
    d.variants.forEach((v, i) => {
      const isControl = v.name === d.control;
      const num = el("input", { type: "number", step: "0.01", min: "0", max: "100", value: v.weight,
                                "data-field": `variants[${i}].weight`, "aria-label": "weight of " + v.name });
      const range = el("input", { type: "range", step: "0.01", min: "0", max: "100", value: v.weight, "aria-label": "slider " + v.name });
      if (isControl) { num.readOnly = true; range.disabled = true; num.title = "control takes what the others leave: the weights always sum to 100"; }
      const onInput = (src) => () => {
        v.weight = src.value === "" ? 0 : Number(src.value);
        (src === num ? range : num).value = src.value;
        balanceControl(); markDirty(); updateWeights();
      };
      num.addEventListener("input", onInput(num)); range.addEventListener("input", onInput(range));
      tb.append(el("tr", { "data-variant": v.name },
        el("td", {}, v.name + (isControl ? " (control)" : "")),
        el("td", {}, num, el("p", { class: "field-error", "data-field": `variants[${i}].weight`, role: "alert" })),
        el("td", {}, range), el("td", { class: "buckets" }, "")));
    });
    text($("e-status"), d.status);
    const tbA = clear($("e-allow").tBodies[0]);
    for (const [unit, variant] of Object.entries(d.allowlist || {})) {
      const rm = el("button", { type: "button" }, "Remove");
      rm.addEventListener("click", () => { delete d.allowlist[unit]; markDirty(); renderEdit(); });
      tbA.append(el("tr", {}, el("td", {}, unit), el("td", {}, "→ " + variant), el("td", {}, rm)));
    }
    const sel = $("e-allow-variant"), chosen = sel.value;
    clear(sel);
    for (const v of d.variants) sel.append(el("option", { value: v.name }, v.name));
    if (d.variants.some((v) => v.name === chosen)) sel.value = chosen;
    updateWeights();
  }
  function updateWeights() {
    const d = S.draft;
    const total = d.variants.reduce((a, v) => a + hundredths(v.weight), 0) / 100;
    text($("e-sum"), total.toFixed(2) + " %");
    const rows = $("e-weights").tBodies[0].rows;
    d.variants.forEach((v, i) => {
      const r = rows[i]; if (!r) return;
      if (v.name === d.control) { r.querySelector("input[type=number]").value = v.weight; r.querySelector("input[type=range]").value = v.weight; }
      text(r.querySelector(".buckets"), hundredths(v.weight));
    });
  }
  function clearPreview() { text($("e-preview"), ""); $("e-preview").removeAttribute("data-buckets"); }
  function markDirty() {
    S.dirty = true; text($("e-saved"), ""); $("e-conflict").hidden = true; $("e-confirm").hidden = true;
    clearTimeout(S.previewTimer); S.previewTimer = setTimeout(() => preview().catch(() => {}), 250);
  }
  function clearFieldErrors() {
    for (const p of document.querySelectorAll("p.field-error")) text(p, "");
    for (const i of document.querySelectorAll("input.invalid")) i.classList.remove("invalid");
  }
  // A server message names the field by its path ("body.variants[1].weight: ..."): show it there,
  // or by the nearest enclosing field shown on the page.
  function showFieldError(doc) {
    clearFieldErrors();
    const msg = (doc && doc.message) || "refused";
    let path = (msg.match(/^body\.([^:]+):/) || [])[1] || "";
    if (doc && doc.error === "invalid_header") path = msg.startsWith("x-change-reason") ? "reason" : "_";
    let spot = null;
    while (path) {
      spot = document.querySelector(`p.field-error[data-field="${CSS.escape(path)}"]`);
      if (spot) break;
      const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      path = cut > 0 ? path.slice(0, cut) : "";
    }
    spot = spot || document.querySelector('p.field-error[data-field="_"]');
    text(spot, msg);
    const input = document.querySelector(`input[data-field="${CSS.escape(path)}"]`);
    if (input) input.classList.add("invalid");
  }
  function body() { const b = structuredClone(S.draft); delete b.name; return b; }
  async function preview() {
    if (!S.dirty) return null;
    try {
      const r = await api("POST", expPath(S.name, "/preview"), body());
      clearFieldErrors();
      const moves = r.transitions.map((t) => `${t.from}→${t.to} ${t.buckets}`).join(", ");
      text($("e-preview"), r.buckets_moved ? `This change moves ${r.buckets_moved} of 10000 buckets (${pct(r.share_moved)} of units; ` +
        `≈ ${r.units_moved_estimate} of the ${r.units_seen} units seen so far): ${moves}` + (r.resets_counts ? ". SRM counts start afresh." : ".")
        : "This change moves no units.");
      $("e-preview").setAttribute("data-buckets", r.buckets_moved);
      return r;
    } catch (e) {
      clearPreview();
      showFieldError(e.doc);
      return null;
    }
  }
  async function save(confirmed) {
    const reason = $("e-reason").value.trim();
    if (/[^\x20-\x7e\xa0-\xff]/.test(reason)) { showFieldError({ error: "invalid_header", message: "x-change-reason: use Latin-1 characters only" }); return; }
    if (!confirmed) {
      const r = await preview();
      if (!r) return;
      if (r.confirm) {
        text($("e-confirm-text"), `This change moves ${pct(r.share_moved)} of units (${r.buckets_moved} buckets, ≈ ${r.units_moved_estimate} units seen so far), more than 10 %. Save it?`);
        $("e-confirm").hidden = false;
        return;
      }
    }
    $("e-confirm").hidden = true;
    const headers = { "if-match": String(S.base) };
    if (reason) headers["x-change-reason"] = reason;
    try {
      const r = await api("PUT", expPath(S.name), body(), headers);
      S.dirty = false; clearFieldErrors(); clearPreview(); $("e-reason").value = "";
      text($("e-saved"), `Saved as version ${r.version}.`);
      await refresh(); await loadHistory();
    } catch (e) {
      if (e.doc && e.doc.error === "version_conflict") return conflict(e.doc);
      showFieldError(e.doc);
    }
  }
  async function conflict(doc) {
    $("e-conflict").hidden = false;
    text($("e-conflict-text"), `Not saved: someone changed this experiment meanwhile. You edited version ${S.base}; ` +
      `the stored version is now ${doc.current_version}. ${doc.message}`);
    try {
      const newer = await api("GET", expPath(S.name));
      text($("e-conflict-config"), `version ${newer.version} by ${newer.token_id || "–"} at ${when(newer.updated_at)}` +
        (newer.reason ? ` (${newer.reason})` : "") + ": " + newer.config.variants.map((v) => `${v.name} ${fmt(v.weight, 2)} %`).join(", ") +
        `, status ${newer.config.status}`);
    } catch (e) { text($("e-conflict-config"), e.message); }
  }

  // ---- history -------------------------------------------------------------------------------
  function describe(cfg, prev) {
    if (!prev) return "stored: " + cfg.variants.map((v) => `${v.name} ${v.weight} %`).join(", ");
    const out = [];
    const pw = Object.fromEntries(prev.variants.map((v) => [v.name, v]));
    for (const v of cfg.variants) {
      const o = pw[v.name];
      if (!o) out.push(`+${v.name} ${v.weight} %`);
      else {
        if (o.weight !== v.weight) out.push(`${v.name} ${o.weight}→${v.weight} %`);
        if (target(o.target) !== target(v.target)) out.push(`${v.name} → ${target(v.target)}`);
      }
    }
    for (const n of Object.keys(pw)) if (!cfg.variants.some((v) => v.name === n)) out.push(`-${n}`);
    if (prev.status !== cfg.status) out.push(`status ${prev.status}→${cfg.status}`);
    const pa = JSON.stringify(prev.allowlist || {}), ca = JSON.stringify(cfg.allowlist || {});
    if (pa !== ca) out.push(`allowlist ${Object.keys(prev.allowlist || {}).length}→${Object.keys(cfg.allowlist || {}).length} entries`);
    if (JSON.stringify(prev.shadow) !== JSON.stringify(cfg.shadow)) out.push("shadow changed");
    if (JSON.stringify(prev.guardrails) !== JSON.stringify(cfg.guardrails)) out.push("guardrails changed");
    if (prev.salt !== cfg.salt || prev.bucket_version !== cfg.bucket_version) out.push("re-randomised");
    return out.join("; ") || "no change";
  }
  async function loadHistory() {
    const name = S.name;
    const doc = await api("GET", expPath(name, "/history?limit=50"));
    if (name !== S.name) return;
    const tb = clear($("d-history").tBodies[0]);
    doc.history.forEach((h, i) => {
      const prev = doc.history[i + 1];
      tb.append(el("tr", {}, el("td", {}, h.version), el("td", {}, when(h.at)), el("td", {}, h.token_id),
        el("td", {}, describe(h.config, prev && prev.config)), el("td", {}, h.reason || "")));
    });
  }

  // ---- wiring --------------------------------------------------------------------------------
  function setStatus(s) { S.draft.status = s; text($("e-status"), s); markDirty(); }
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (!t) { text($("login-error"), "Enter a token."); return; }
      signIn(t);
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("edit").addEventListener("submit", (ev) => { ev.preventDefault(); save(false); });
    $("e-confirm-yes").addEventListener("click", () => save(true));
    $("e-confirm-no").addEventListener("click", () => { $("e-confirm").hidden = true; });
    $("e-reset").addEventListener("click", () => { S.dirty = false; S.shown = null; clearFieldErrors(); clearPreview();
      $("e-conflict").hidden = true; $("e-confirm").hidden = true; refresh().catch(showListError); });
    $("e-conflict-load").addEventListener("click", () => { S.dirty = false; S.shown = null; $("e-conflict").hidden = true; clearFieldErrors();
      clearPreview(); refresh().catch(showListError); });
    $("e-pause").addEventListener("click", () => setStatus("paused"));
    $("e-stop").addEventListener("click", () => setStatus("stopped"));
    $("e-resume").addEventListener("click", () => setStatus("running"));
    $("e-allow-add").addEventListener("click", () => {
      const unit = $("e-allow-unit").value.trim();
      if (!unit) return;
      S.draft.allowlist = Object.assign({}, S.draft.allowlist || {}, { [unit]: $("e-allow-variant").value });
      $("e-allow-unit").value = ""; markDirty(); renderEdit();
    });
    const token = sessionStorage.getItem(KEY);
    if (token) signIn(token); else signOut("");
  });
})();
