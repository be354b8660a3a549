// The gateway console: one self-contained script, no framework, no build step, no CDN.
//
// Owns: signing in (the key lives in sessionStorage only and is sent as a Bearer header;
// never in a URL or a cookie), the pages (Usage, Requests, Keys, Providers, Jobs,
// Playground) and the SVG charts. What a page shows follows the key's rights: the
// gateway answers 403 to a tenant key on admin routes, and the Keys and Providers pages
// are offered to admin keys only. Text from the server is always set as textContent,
// never as HTML.
"use strict";

(() => {
  const STORE = "umg.console.key";
  const PALETTE = ["#1d4ed8", "#c2410c", "#047857", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d", "#4d7c0f", "#334155"];
  const SVGNS = "http://www.w3.org/2000/svg";
  const state = { me: null, page: null, timers: [] };

  // ---- small helpers ---------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  const key = () => sessionStorage.getItem(STORE);

  async function api(path, options = {}) {
    const headers = { authorization: `Bearer ${key()}` };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    const resp = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
      credentials: "omit",
    });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.error && data.error.message) || `HTTP ${resp.status}`);
      err.status = resp.status;
      err.param = data && data.error ? data.error.param : null;
      throw err;
    }
    return data;
  }

  const qs = (params) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
    const s = p.toString();
    return s ? `?${s}` : "";
  };

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtMs = (n) => (n === null || n === undefined ? "–" : `${Math.round(n).toLocaleString("en-US")} ms`);
  const fmtUsd = (s) => (s === null || s === undefined ? "–" : `$${s}`);
  const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "–");
  const badge = (text) => el("span", { class: `badge ${text}`, text });

  function errorBox(err) {
    return el("p", { class: "error", role: "alert", text: err.param ? `${err.message} (field: ${err.param})` : err.message });
  }

  function table(columns, rows, caption) {
    const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.label })));
    const body = rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = c.value(r);
      return el("td", { class: c.num ? "num" : null }, v instanceof Node ? v : String(v ?? "–"));
    })));
    return el("div", { class: "tablewrap" }, el("table", {}, caption ? el("caption", { class: "note", text: caption }) : null,
      el("thead", {}, head), el("tbody", {}, body)));
  }

  function csvDownload(filename, header, rows) {
    const cell = (v) => {
      const s = v === null || v === undefined ? "" : String(v);
      return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const text = [header, ...rows].map((r) => r.map(cell).join(",")).join("\n") + "\n";
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ---- charts (SVG) ------------------------------------------------------------------
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Stacked bars: buckets x groups -> value; colors by group; <title> on each bar part.
  function stackedBars(buckets, groups, value, { label, format }) {
    const W = 900, H = 260, L = 64, R = 10, T = 10, B = 46;
    const totals = buckets.map((b) => groups.reduce((s, g) => s + value(b, g), 0));
    const max = niceMax(Math.max(0, ...totals));
    const bw = (W - L - R) / Math.max(1, buckets.length);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: ${format(totals.reduce((a, b) => a + b, 0))} in total; the numbers are in the table below` });
    for (let i = 0; i <= 4; i++) {
      const y = T + (H - T - B) * (1 - i / 4);
      root.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e5e7eb" }));
      root.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#374151" }, format((max * i) / 4)));
    }
    const every = Math.max(1, Math.ceil(buckets.length / 8));
    buckets.forEach((b, i) => {
      let y = H - B;
      groups.forEach((g, gi) => {
        const v = value(b, g);
        if (v <= 0) return;
        const h = ((H - T - B) * v) / max;
        y -= h;
        const rect = svg("rect", { x: L + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: PALETTE[gi % PALETTE.length], "data-group": g, "data-bucket": b });
        rect.append(svg("title", {}, `${b} · ${g || "all"}: ${format(v)}`));
        root.append(rect);
      });
      if (i % every === 0) {
        root.append(svg("text", { x: L + i * bw + bw / 2, y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#374151" }, shortBucket(b)));
      }
    });
    root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#6b7280" }));
    return root;
  }

  // Lines: one per series name; points with null values are gaps.
  function lines(buckets, series, { label, format }) {
    const W = 900, H = 220, L = 64, R = 10, T = 10, B = 40;
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    const max = niceMax(Math.max(0, ...all));
    const step = (W - L - R) / Math.max(1, buckets.length);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}; the numbers are in the table below` });
    for (let i = 0; i <= 4; i++) {
      const y = T + (H - T - B) * (1 - i / 4);
      root.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e5e7eb" }));
      root.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#374151" }, format((max * i) / 4)));
    }
    series.forEach((s, si) => {
      const color = PALETTE[si % PALETTE.length];
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null) { return; }
        const x = L + i * step + step / 2;
        const y = T + (H - T - B) * (1 - v / max);
        d += `${d && s.values[i - 1] !== null && s.values[i - 1] !== undefined ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
        const dot = svg("circle", { cx: x, cy: y, r: 3, fill: color });
        dot.append(svg("title", {}, `${buckets[i]} · ${s.name}: ${format(v)}`));
        root.append(dot);
      });
      if (d) root.prepend(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    });
    const every = Math.max(1, Math.ceil(buckets.length / 8));
    buckets.forEach((b, i) => {
      if (i % every === 0) root.append(svg("text", { x: L + i * step + step / 2, y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#374151" }, shortBucket(b)));
    });
    root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#6b7280" }));
    return root;
  }

  function legend(names) {
    return el("ul", { class: "legend", "aria-label": "Legend" }, names.map((n, i) =>
      el("li", {}, el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), n || "all")));
  }

  const shortBucket = (iso) => (iso.endsWith("T00:00:00Z") ? iso.slice(5, 10) : iso.slice(5, 13).replace("T", " ") + "h");

  function bucketRange(from, to, bucket) {
    const step = bucket === "hour" ? 3600e3 : 86400e3;
    const start = new Date(from);
    if (bucket === "hour") start.setUTCMinutes(0, 0, 0); else start.setUTCHours(0, 0, 0, 0);
    const out = [];
    for (let t = start.getTime(); t < new Date(to).getTime() && out.length < 2000; t += step) {
      out.push(new Date(t).toISOString().replace(".000Z", "Z"));
    }
    return out;
  }

  // ---- the shell: sign in, navigation ------------------------------------------------
  async function signIn(candidate) {
    sessionStorage.setItem(STORE, candidate);
    try {
      state.me = await api("/v1/me");
    } catch (err) {
      sessionStorage.removeItem(STORE);
      throw err;
    }
  }

  function signOut() {
    sessionStorage.removeItem(STORE);
    state.me = null;
    stopTimers();
    $("#page").hidden = true;
    $("#nav").hidden = true;
    $("#signout").hidden = true;
    $("#who").textContent = "";
    $("#signin").hidden = false;
    $("#signin-key").value = "";
    $("#signin-key").focus();
  }

  function stopTimers() {
    state.timers.forEach((t) => clearInterval(t));
    state.timers = [];
  }

  function showShell() {
    const me = state.me;
    $("#signin").hidden = true;
    $("#nav").hidden = false;
    $("#page").hidden = false;
    $("#signout").hidden = false;
    $("#who").textContent = `${me.name || me.prefix} · tenant ${me.tenant} · ${me.admin ? "admin key" : "tenant key"}`;
    for (const a of document.querySelectorAll("#nav a[data-admin]")) a.parentElement.hidden = !me.admin;
    route();
  }

  const PAGES = { usage: usagePage, requests: requestsPage, keys: keysPage, providers: providersPage, jobs: jobsPage, playground: playgroundPage };

  function route() {
    if (!state.me) return;
    let name = (location.hash || "#usage").slice(1);
    if (!PAGES[name] || ((name === "keys" || name === "providers") && !state.me.admin)) name = "usage";
    stopTimers();
    state.page = name;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.page === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const page = $("#page");
    page.replaceChildren();
    page.dataset.page = name;
    PAGES[name](page).catch((err) => page.append(errorBox(err)));
  }

  // ---- Usage -------------------------------------------------------------------------
  const RANGES = [["1h", "Last hour", 3600e3], ["24h", "Last 24 hours", 86400e3], ["7d", "Last 7 days", 7 * 86400e3], ["30d", "Last 30 days", 30 * 86400e3]];

  async function usagePage(page) {
    const admin = state.me.admin;
    const form = el("form", { class: "controls card", "aria-label": "Usage filters" },
      el("div", {}, el("label", { for: "u-range", text: "Time range" }),
        el("select", { id: "u-range" }, RANGES.map(([v, t]) => el("option", { value: v, text: t })), el("option", { value: "custom", text: "Custom…" }))),
      el("div", { id: "u-custom", hidden: true }, el("label", { for: "u-from", text: "From (UTC)" }), el("input", { id: "u-from", type: "datetime-local" })),
      el("div", { id: "u-custom2", hidden: true }, el("label", { for: "u-to", text: "To (UTC)" }), el("input", { id: "u-to", type: "datetime-local" })),
      el("div", {}, el("label", { for: "u-bucket", text: "Per" }),
        el("select", { id: "u-bucket" }, el("option", { value: "hour", text: "hour" }), el("option", { value: "day", text: "day" }))),
      el("div", {}, el("label", { for: "u-by", text: "Stack by" }),
        el("select", { id: "u-by" }, ["model", "provider", "project", ...(admin ? ["tenant"] : []), "status", "none"].map((v) => el("option", { value: v, text: v })))),
      admin ? el("div", {}, el("label", { for: "u-tenant", text: "Tenant (blank: all)" }), el("input", { id: "u-tenant", type: "text", size: 12 })) : null,
      el("div", {}, el("button", { type: "submit", text: "Show" })));
    const out = el("div", { id: "usage-out", "aria-live": "polite" });
    page.append(el("h2", { text: "Usage" }), form, out);
    $("#u-range", form).value = "24h";
    $("#u-range", form).addEventListener("change", () => {
      const custom = $("#u-range", form).value === "custom";
      $("#u-custom", form).hidden = !custom;
      $("#u-custom2", form).hidden = !custom;
    });
    form.addEventListener("submit", (e) => { e.preventDefault(); loadUsage(form, out); });
    await loadUsage(form, out);
  }

  function usageWindow(form) {
    const choice = $("#u-range", form).value;
    if (choice === "custom") {
      const f = $("#u-from", form).value, t = $("#u-to", form).value;
      return { from: f ? `${f}:00Z` : "", to: t ? `${t}:00Z` : "" };
    }
    const span = RANGES.find((r) => r[0] === choice)[2];
    const to = new Date(Date.now() + 60e3);
    return { from: new Date(to.getTime() - span).toISOString(), to: to.toISOString() };
  }

  async function loadUsage(form, out) {
    const win = usageWindow(form);
    const bucket = $("#u-bucket", form).value;
    const by = $("#u-by", form).value;
    const tenant = $("#u-tenant", form) ? $("#u-tenant", form).value.trim() : "";
    let data;
    try {
      data = await api(`/v1/usage/series${qs({ ...win, bucket, by, tenant })}`);
    } catch (err) {
      out.replaceChildren(errorBox(err));
      return;
    }
    const buckets = bucketRange(data.from, data.to, data.bucket);
    const groups = [...new Set(data.points.map((p) => p.group))].sort();
    const cell = new Map(data.points.map((p) => [`${p.at}|${p.group}`, p]));
    const get = (b, g, f) => { const p = cell.get(`${b}|${g}`); return p ? f(p) : 0; };
    const t = data.totals;
    const stats = el("div", { class: "stats" },
      [["Requests", fmtInt(t.requests)], ["Errors", fmtInt(t.errors)], ["Tokens", fmtInt(t.total_tokens)], ["Cost", fmtUsd(t.cost_usd)],
        ["Latency p50 / p95", `${fmtMs(t.latency_ms.p50)} / ${fmtMs(t.latency_ms.p95)}`],
        ["TTFT p50 / p95", `${fmtMs(t.ttft_ms.p50)} / ${fmtMs(t.ttft_ms.p95)}`]]
        .map(([k, v]) => el("div", { class: "stat" }, el("div", { class: "k", text: k }), el("div", { class: "v", text: v }))));
    const charts = [
      ["requests", "Requests", (p) => p.requests, fmtInt],
      ["tokens", "Tokens", (p) => p.total_tokens, fmtInt],
      ["cost", "Cost (USD)", (p) => Number(p.cost_usd), (v) => `$${Number(v.toPrecision(4))}`],
    ];
    const sections = charts.map(([id, title, f, format]) => {
      const rows = data.points.map((p) => ({ p }));
      const csvRows = data.points.map((p) => [p.at, p.group, p.requests, p.errors, p.input_tokens, p.output_tokens, p.total_tokens, p.cost_usd]);
      const download = el("button", { type: "button", class: "secondary", text: "Download CSV", "aria-label": `Download CSV of ${title.toLowerCase()} per ${data.bucket}`, onclick: () => csvDownload(`usage-${data.bucket}-${data.by || "all"}.csv`, ["at", "group", "requests", "errors", "input_tokens", "output_tokens", "total_tokens", "cost_usd"], csvRows) });
      return el("section", { class: "card chart", id: `chart-${id}`, "aria-labelledby": `h-${id}` },
        el("h3", { id: `h-${id}`, text: `${title} per ${data.bucket}${data.by ? `, by ${data.by}` : ""}` }),
        legend(groups),
        stackedBars(buckets, groups, (b, g) => get(b, g, f), { label: title, format }),
        el("details", { class: "numbers" }, el("summary", { text: "Numbers behind this chart" }),
          table([
            { label: data.bucket, value: (r) => fmtTime(r.p.at) },
            { label: data.by || "group", value: (r) => r.p.group || "all" },
            { label: "requests", num: true, value: (r) => fmtInt(r.p.requests) },
            { label: "errors", num: true, value: (r) => fmtInt(r.p.errors) },
            { label: "tokens", num: true, value: (r) => fmtInt(r.p.total_tokens) },
            { label: "cost", num: true, value: (r) => fmtUsd(r.p.cost_usd) },
          ], rows)),
        download);
    });
    const latBuckets = buckets;
    const pick = (list, name) => { const m = new Map(list.map((x) => [x.at, x])); return latBuckets.map((b) => (m.has(b) ? m.get(b)[name] : null)); };
    const latency = el("section", { class: "card chart", id: "chart-latency", "aria-labelledby": "h-latency" },
      el("h3", { id: "h-latency", text: `Latency and time to first token per ${data.bucket} (estimated percentiles)` }),
      legend(["latency p50", "latency p95", "latency p99", "TTFT p50", "TTFT p95"]),
      lines(latBuckets, [
        { name: "latency p50", values: pick(data.latency, "p50") },
        { name: "latency p95", values: pick(data.latency, "p95") },
        { name: "latency p99", values: pick(data.latency, "p99") },
        { name: "TTFT p50", values: pick(data.ttft, "p50") },
        { name: "TTFT p95", values: pick(data.ttft, "p95") },
      ], { label: "Latency percentiles", format: fmtMs }),
      el("details", { class: "numbers" }, el("summary", { text: "Numbers behind this chart" }),
        table([
          { label: data.bucket, value: (r) => fmtTime(r.at) },
          { label: "requests", num: true, value: (r) => fmtInt(r.count) },
          { label: "p50", num: true, value: (r) => fmtMs(r.p50) },
          { label: "p90", num: true, value: (r) => fmtMs(r.p90) },
          { label: "p95", num: true, value: (r) => fmtMs(r.p95) },
          { label: "p99", num: true, value: (r) => fmtMs(r.p99) },
          { label: "TTFT p50", num: true, value: (r) => fmtMs(r.ttft ? r.ttft.p50 : null) },
          { label: "TTFT p95", num: true, value: (r) => fmtMs(r.ttft ? r.ttft.p95 : null) },
        ], data.latency.map((r) => ({ ...r, ttft: data.ttft.find((x) => x.at === r.at) })))),
      el("button", { type: "button", class: "secondary", text: "Download CSV", "aria-label": `Download CSV of latency percentiles per ${data.bucket}`, onclick: () => csvDownload(`latency-${data.bucket}.csv`, ["at", "requests", "p50_ms", "p90_ms", "p95_ms", "p99_ms"], data.latency.map((r) => [r.at, r.count, r.p50, r.p90, r.p95, r.p99])) }));
    out.replaceChildren(
      el("p", { class: "note", text: `${fmtTime(data.from)} to ${fmtTime(data.to)}${data.tenant ? ` · tenant ${data.tenant}` : " · all tenants"}` }),
      stats, ...sections, latency);
  }

  // ---- Requests ----------------------------------------------------------------------
  async function requestsPage(page) {
    const admin = state.me.admin;
    const fields = [["model", "Model"], ["provider", "Provider"], ["project", "Project"], ...(admin ? [["tenant", "Tenant"]] : []), ["key_id", "Key id"]];
    const form = el("form", { class: "controls card", "aria-label": "Request filters" },
      fields.map(([n, l]) => el("div", {}, el("label", { for: `r-${n}`, text: l }), el("input", { id: `r-${n}`, name: n, type: "text", size: 14 }))),
      el("div", {}, el("label", { for: "r-status", text: "Status" }),
        el("select", { id: "r-status", name: "status" }, ["", "ok", "error", "rate_limited", "budget_exceeded", "client_closed", "canceled"].map((s) => el("option", { value: s, text: s || "any" })))),
      el("div", {}, el("button", { type: "submit", text: "Filter" })));
    const body = el("tbody");
    const more = el("button", { type: "button", class: "secondary", text: "Load more", hidden: true });
    const status = el("p", { class: "note", "aria-live": "polite" });
    const tbl = el("div", { class: "tablewrap" }, el("table", { id: "requests-table" },
      el("thead", {}, el("tr", {}, ["Time", "Tenant", "Project", "Model", "Provider", "Status", "Tokens", "Cost", "Latency", "Attempts", ""].map((h, i) => el("th", { scope: "col", class: i >= 6 && i <= 9 ? "num" : null, text: h })))),
      body));
    page.append(el("h2", { text: "Requests" }), form, status, tbl, more);
    let after = null;
    const load = async (reset) => {
      const filters = {};
      for (const input of form.querySelectorAll("input, select")) if (input.value.trim()) filters[input.name] = input.value.trim();
      if (reset) { after = null; body.replaceChildren(); }
      const path = admin ? "/v1/admin/requests" : "/v1/requests";
      try {
        const data = await api(`${path}${qs({ ...filters, limit: 50, after })}`);
        data.data.forEach((r) => addRequestRow(body, r));
        after = data.next_after;
        more.hidden = !data.has_more;
        status.textContent = `${body.querySelectorAll("tr.request").length} requests shown${data.has_more ? " (more available)" : ""}`;
      } catch (err) {
        status.replaceChildren(errorBox(err));
      }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
    more.addEventListener("click", () => load(false));
    await load(true);
  }

  function addRequestRow(body, r) {
    const detailsId = `d-${r.id}`;
    const toggle = el("button", { type: "button", class: "secondary", "aria-expanded": "false", "aria-controls": detailsId, text: "Attempts" });
    const row = el("tr", { class: "request", "data-request-id": r.request_id },
      el("td", { text: fmtTime(r.at) }), el("td", { text: r.tenant }), el("td", { text: r.project }), el("td", { text: r.model || "–" }),
      el("td", { text: r.provider || "–" }), el("td", {}, badge(r.status)),
      el("td", { class: "num", text: fmtInt(r.input_tokens + r.output_tokens + r.cached_input_tokens + r.cache_write_tokens) }),
      el("td", { class: "num cost", text: fmtUsd(r.cost_usd) }), el("td", { class: "num", text: fmtMs(r.latency_ms) }),
      el("td", { class: "num", text: r.attempts }), el("td", {}, toggle));
    const attempts = r.attempt_log.length
      ? table([
        { label: "#", value: (a) => a.attempt },
        { label: "deployment", value: (a) => a.deployment },
        { label: "provider", value: (a) => a.provider },
        { label: "outcome", value: (a) => badge(a.outcome === "ok" ? "ok" : a.outcome === "in_flight" ? "running" : "error") },
        { label: "detail", value: (a) => a.outcome },
      ], r.attempt_log)
      : el("p", { class: "note", text: "No provider was called." });
    const detail = el("tr", { class: "row-details", id: detailsId, hidden: true },
      el("td", { colspan: 11 },
        el("p", { class: "mono", text: `request ${r.request_id} · key ${r.key_id} · ${r.endpoint}${r.stream ? " (stream)" : ""} · deployment ${r.deployment || "–"} · input ${r.input_tokens} · output ${r.output_tokens} · TTFT ${fmtMs(r.ttft_ms)}${r.error_code ? ` · error ${r.error_code}` : ""}` }),
        attempts));
    toggle.addEventListener("click", () => {
      const open = detail.hidden;
      detail.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
    });
    body.append(row, detail);
  }

  // ---- Keys (admin) ------------------------------------------------------------------
  async function keysPage(page) {
    const input = (id, label, attrs = {}) => el("div", {}, el("label", { for: id, text: label }), el("input", { id, name: id.slice(2), type: "text", size: 12, ...attrs }));
    const form = el("form", { class: "grid card", id: "key-form", "aria-labelledby": "key-form-title" },
      el("h3", { id: "key-form-title", text: "Create a key", style: "width:100%;margin:0" }),
      input("k-tenant", "Tenant", { required: true }), input("k-project", "Project", { required: true }), input("k-name", "Name"),
      input("k-rpm", "Requests / min", { inputmode: "numeric", size: 8 }), input("k-tpm", "Tokens / min", { inputmode: "numeric", size: 8 }),
      input("k-budget_usd", "Budget (USD)", { inputmode: "decimal", size: 8 }),
      el("div", {}, el("label", { for: "k-budget_period", text: "Budget period" }),
        el("select", { id: "k-budget_period", name: "budget_period" }, ["month", "day", "total"].map((p) => el("option", { value: p, text: p })))),
      el("div", {}, el("label", { for: "k-admin", text: "Admin key" }), el("input", { id: "k-admin", name: "admin", type: "checkbox" })),
      el("div", {}, el("button", { type: "submit", text: "Create key" })));
    const created = el("div", { id: "key-created", "aria-live": "polite" });
    const list = el("div", { id: "key-list" });
    page.append(el("h2", { text: "Keys" }), form, created, el("h3", { text: "All keys" }), list);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = { tenant: $("#k-tenant").value.trim(), project: $("#k-project").value.trim(), budget_period: $("#k-budget_period").value, admin: $("#k-admin").checked };
      if ($("#k-name").value.trim()) body.name = $("#k-name").value.trim();
      for (const n of ["rpm", "tpm"]) {
        const v = $(`#k-${n}`).value.trim();
        if (v) body[n] = /^\d+$/.test(v) ? Number(v) : v;
      }
      if ($("#k-budget_usd").value.trim()) body.budget_usd = $("#k-budget_usd").value.trim();
      try {
        const made = await api("/v1/admin/keys", { method: "POST", body });
        created.replaceChildren(el("div", { class: "card" },
          el("p", {}, el("strong", { text: "New key — shown once. Copy it now; the gateway cannot show it again." })),
          el("p", { class: "secret", id: "new-key", text: made.key }),
          el("p", { class: "note", text: `id ${made.id} · tenant ${made.tenant} · project ${made.project}` })));
        form.reset();
        await loadKeys(list);
      } catch (err) {
        created.replaceChildren(errorBox(err));
      }
    });
    await loadKeys(list);
  }

  async function loadKeys(list) {
    const data = await api("/v1/admin/keys");
    const spend = (k) => {
      if (!k.spend) return el("span", { class: "note", text: "no budget" });
      const used = Number(k.spend.spent_usd), limit = Number(k.spend.limit_usd);
      const share = limit > 0 ? Math.min(1, used / limit) : 1;
      return el("div", {},
        el("div", { class: `bar${used >= limit ? " over" : ""}`, role: "img", "aria-label": `${Math.round(share * 100)}% of budget spent` }, el("span", { style: `width:${(share * 100).toFixed(1)}%` })),
        el("span", { class: "note", text: `$${k.spend.spent_usd} of $${k.spend.limit_usd} / ${k.spend.period}` }));
    };
    const revoke = (k) => {
      if (k.revoked_at) return badge("revoked");
      const btn = el("button", { type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke key ${k.name || k.prefix}` });
      btn.addEventListener("click", async () => {
        if (!btn.classList.contains("armed")) {
          btn.classList.add("armed");
          btn.textContent = "Confirm revoke";
          return;
        }
        btn.disabled = true;
        try {
          await api(`/v1/admin/keys/${encodeURIComponent(k.id)}/revoke`, { method: "POST" });
          await loadKeys(list);
        } catch (err) {
          btn.after(errorBox(err));
        }
      });
      return btn;
    };
    list.replaceChildren(table([
      { label: "Name", value: (k) => k.name || "–" },
      { label: "Id / prefix", value: (k) => el("span", { class: "mono", text: `${k.id} (${k.prefix})` }) },
      { label: "Tenant / project", value: (k) => `${k.tenant} / ${k.project}` },
      { label: "Role", value: (k) => (k.admin ? "admin" : "tenant") },
      { label: "rpm", num: true, value: (k) => k.rpm ?? "–" },
      { label: "tpm", num: true, value: (k) => k.tpm ?? "–" },
      { label: "Spend vs budget", value: spend },
      { label: "Created", value: (k) => fmtTime(k.created_at) },
      { label: "Status", value: revoke },
    ], data.data));
  }

  // ---- Providers (admin, live) -------------------------------------------------------
  async function providersPage(page) {
    const stamp = el("p", { class: "note", "aria-live": "polite" });
    const holder = el("div", { id: "providers-table" });
    page.append(el("h2", { text: "Providers" }),
      el("p", { class: "note", text: "Each deployment's health as this gateway process sees it (rolling window, breaker). Refreshed every 2 seconds." }),
      stamp, holder);
    const load = async () => {
      try {
        const data = await api("/v1/admin/providers");
        const open = data.data.filter((d) => d.circuit !== "closed").length;
        holder.replaceChildren(table([
          { label: "Deployment", value: (d) => el("span", { class: "mono", text: d.deployment }) },
          { label: "Model", value: (d) => d.model },
          { label: "Provider", value: (d) => d.provider },
          { label: "Breaker", value: (d) => badge(d.circuit) },
          { label: "Available", value: (d) => (d.available ? "yes" : "no") },
          { label: "Error rate", num: true, value: (d) => (d.error_rate === null ? "–" : `${(d.error_rate * 100).toFixed(0)}%`) },
          { label: "Window", num: true, value: (d) => d.window },
          { label: "Consecutive failures", num: true, value: (d) => d.consecutive_failures },
          { label: "Latency (EWMA)", num: true, value: (d) => fmtMs(d.latency_ms) },
          { label: "Cooldown left", num: true, value: (d) => (d.cooldown_left_s === null ? "–" : `${d.cooldown_left_s.toFixed(1)} s`) },
        ], data.data));
        stamp.replaceChildren(el("span", { class: "live", text: "● live" }), ` · updated ${new Date().toISOString().slice(11, 19)} UTC · ${data.data.length} deployments, ${open} not closed`);
      } catch (err) {
        stamp.replaceChildren(errorBox(err));
      }
    };
    await load();
    state.timers.push(setInterval(() => { if (state.page === "providers") load(); }, 2000));
  }

  // ---- Jobs --------------------------------------------------------------------------
  function jobText(job) {
    if (!job.result || !job.result.output) return "";
    return job.result.output.flatMap((o) => o.content || []).filter((c) => c.type === "output_text").map((c) => c.text).join("");
  }

  async function jobsPage(page) {
    const models = await api("/v1/models");
    const form = el("form", { class: "grid card", "aria-labelledby": "job-form-title" },
      el("h3", { id: "job-form-title", text: "New job", style: "width:100%;margin:0" }),
      el("div", {}, el("label", { for: "j-model", text: "Model" }), el("select", { id: "j-model" }, models.data.map((m) => el("option", { value: m.id, text: m.id })))),
      el("div", { style: "flex:1" }, el("label", { for: "j-input", text: "Prompt" }), el("input", { id: "j-input", type: "text", required: true, size: 40 })),
      el("div", {}, el("button", { type: "submit", text: "Queue job" })));
    const filter = el("div", { class: "controls" }, el("div", {}, el("label", { for: "j-status", text: "Status" }),
      el("select", { id: "j-status" }, ["", "queued", "running", "succeeded", "failed", "canceled"].map((s) => el("option", { value: s, text: s || "any" })))));
    const holder = el("div", { id: "jobs-list", "aria-live": "polite" });
    const detail = el("div", { id: "job-detail" });
    page.append(el("h2", { text: "Jobs" }), form, filter, holder, detail);
    const load = async () => {
      try {
        const data = await api(`/v1/jobs${qs({ limit: 50, status: $("#j-status").value })}`);
        holder.replaceChildren(data.data.length ? table([
          { label: "Job", value: (j) => el("button", { type: "button", class: "secondary", text: j.id, onclick: () => showJob(detail, j.id, load) }) },
          { label: "Status", value: (j) => badge(j.status) },
          { label: "Model", value: (j) => (j.request && j.request.model) || "–" },
          { label: "Created", value: (j) => fmtTime(j.created_at) },
          { label: "Attempts", num: true, value: (j) => j.attempts },
          { label: "Cost", num: true, value: (j) => fmtUsd(j.cost_usd) },
        ], data.data) : el("p", { class: "note", text: "No jobs." }));
      } catch (err) {
        holder.replaceChildren(errorBox(err));
      }
    };
    $("#j-status").addEventListener("change", load);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const job = await api("/v1/jobs", { method: "POST", body: { request: { model: $("#j-model").value, input: $("#j-input").value } } });
        $("#j-input").value = "";
        await load();
        await showJob(detail, job.id, load);
      } catch (err) {
        holder.prepend(errorBox(err));
      }
    });
    await load();
    state.timers.push(setInterval(() => { if (state.page === "jobs") load(); }, 3000));
  }

  async function showJob(detail, id, reload) {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    const cancellable = job.status === "queued" || job.status === "running";
    detail.replaceChildren(el("section", { class: "card", "aria-labelledby": "job-title" },
      el("h3", { id: "job-title", text: `Job ${job.id}` }),
      el("p", {}, badge(job.status), ` · attempts ${job.attempts} · cost ${fmtUsd(job.cost_usd)} · created ${fmtTime(job.created_at)}`),
      jobText(job) ? el("div", {}, el("h4", { text: "Result" }), el("div", { class: "answer", text: jobText(job) })) : null,
      job.error ? el("p", { class: "error", text: `${job.error.code || "error"}: ${job.error.message}` }) : null,
      cancellable ? el("button", { type: "button", class: "danger", text: "Cancel job", onclick: async () => {
        try { await api(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }); } catch (err) { detail.append(errorBox(err)); }
        await reload();
        await showJob(detail, id, reload);
      } }) : null));
  }

  // ---- Playground --------------------------------------------------------------------
  async function playgroundPage(page) {
    const models = await api("/v1/models");
    const form = el("form", { class: "card", id: "play-form", "aria-label": "Playground" },
      el("div", { class: "controls" },
        el("div", {}, el("label", { for: "p-model", text: "Model" }), el("select", { id: "p-model" }, models.data.map((m) => el("option", { value: m.id, text: m.id })))),
        el("div", {}, el("label", { for: "p-strategy", text: "Routing strategy" }), el("select", { id: "p-strategy" }, ["cost", "latency", "reliability", "weighted"].map((s) => el("option", { value: s, text: s })))),
        el("div", {}, el("label", { for: "p-max", text: "Max output tokens" }), el("input", { id: "p-max", type: "number", min: 1, max: 4096, value: 200, size: 6 }))),
      el("div", { style: "margin-top:10px" }, el("label", { for: "p-input", text: "Prompt" }), el("textarea", { id: "p-input", required: true }, "Say hello to the gateway")),
      el("div", { style: "margin-top:10px" }, el("button", { type: "submit", id: "p-send", text: "Send (streamed)" })));
    const answer = el("div", { class: "answer", id: "p-answer", "aria-live": "polite", "aria-label": "Answer" });
    const info = el("pre", { id: "p-gateway", "aria-label": "Gateway block" });
    page.append(el("h2", { text: "Playground" }), form, el("h3", { text: "Answer" }), answer, el("h3", { text: "Gateway" }), info);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const send = $("#p-send");
      send.disabled = true;
      answer.textContent = "";
      info.textContent = "waiting…";
      try {
        await streamAnswer({
          model: $("#p-model").value,
          input: $("#p-input").value,
          max_output_tokens: Number($("#p-max").value) || undefined,
          constraints: { routing: { strategy: $("#p-strategy").value } },
        }, answer, info);
      } catch (err) {
        info.textContent = "";
        answer.append(errorBox(err));
      } finally {
        send.disabled = false;
      }
    });
  }

  async function streamAnswer(body, answer, info) {
    const resp = await fetch("/v1/responses/stream", {
      method: "POST",
      headers: { authorization: `Bearer ${key()}`, "content-type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    if (!resp.ok) {
      const data = await resp.json().catch(() => null);
      const err = new Error((data && data.error && data.error.message) || `HTTP ${resp.status}`);
      err.param = data && data.error ? data.error.param : null;
      throw err;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = frame.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data || data === "[DONE]") continue;
        let event;
        try { event = JSON.parse(data); } catch (_) { continue; }
        if (event.type === "response.output_text.delta") answer.append(document.createTextNode(event.delta));
        else if (event.type === "response.completed" || event.type === "response.failed" || event.type === "response.incomplete") {
          const r = event.response || {};
          info.textContent = JSON.stringify({ status: r.status, usage: r.usage, gateway: r.gateway, error: r.error || undefined }, null, 2);
        } else if (event.type === "error") {
          answer.append(errorBox(new Error(event.message || (event.error && event.error.message) || "stream error")));
        }
      }
    }
  }

  // ---- start -------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    $("#signin-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const msg = $("#signin-error");
      msg.textContent = "";
      try {
        await signIn($("#signin-key").value.trim());
        $("#signin-key").value = "";
        showShell();
        $("#main").focus();
      } catch (err) {
        msg.textContent = err.status === 401 ? "That key was not accepted (unknown, malformed or revoked)." : err.message;
      }
    });
    $("#signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", route);
    if (key()) {
      try {
        state.me = await api("/v1/me");
        showShell();
        return;
      } catch (_) {
        sessionStorage.removeItem(STORE);
      }
    }
    $("#signin-key").focus();
  });
})();
