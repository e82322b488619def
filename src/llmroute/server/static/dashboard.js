/* llmroute dashboard: browser side (served as app.js).
 * Fetches <meta name="llmroute-data">?since=<window> and renders summary tiles, inline SVG
 * charts and tables. Vanilla ES2020, no dependencies, CSP-safe (no inline code or styles,
 * data only ever reaches the DOM through textContent / attributes). */
(() => {
  "use strict";

  const DEFAULT_WINDOW = "1h";
  const REFRESH_MS = 10000;
  const FETCH_TIMEOUT_MS = 20000;
  const DASH = "–";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#b45309"];
  const FIXED_COLORS = { other: "#9ca3af", default: "#64748b", requests: "#2563eb" };
  const COLORS = { p50: "#2563eb", p99: "#dc2626", errors: "#dc2626", cache: "#0d9488", cost: "#7c3aed" };

  const state = { data: null, inFlight: false, pending: false, fetchError: null, renderError: null, emptyWindow: false, spansDays: false, step: 60 };
  const routeColors = new Map();

  // ---------------------------------------------------------------- DOM helpers
  const $ = (id) => document.getElementById(id);

  function build(node, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid != null) node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }
  const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const svg = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);

  function badge(text, tone, title) {
    return el("span", { class: `badge badge-${tone}`, title }, text);
  }

  function colorOf(name) {
    // own keys only: a route may be called "constructor" or "toString"
    if (Object.prototype.hasOwnProperty.call(FIXED_COLORS, name)) return FIXED_COLORS[name];
    if (!routeColors.has(name)) routeColors.set(name, PALETTE[routeColors.size % PALETTE.length]);
    return routeColors.get(name);
  }

  function swatch(color) {
    const s = el("span", { class: "swatch" });
    s.style.background = color; // CSSOM, allowed under CSP
    return s;
  }

  // ---------------------------------------------------------------- formatting
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const arr = (v) => (Array.isArray(v) ? v : []);
  const num0 = (v) => (isNum(v) ? v : 0);
  const pad = (n) => String(n).padStart(2, "0");

  const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH);
  const fmtPct = (v) => (isNum(v) ? `${(v * 100).toFixed(1)}%` : DASH);
  const fmtDec = (v, digits = 3) => (isNum(v) ? v.toFixed(digits) : DASH);

  /** Dollars as `llmroute.money.usd` writes them (report, budget messages): at most four
   *  decimals from a cent up, two significant digits below, a half rounded up, never an
   *  exponent, trailing zeros dropped, thousands grouped as fmtInt groups them ($5, $0.25,
   *  $0.0015, $0.0000006, $12,345.67). */
  function fmtMoney(v) {
    if (!isNum(v)) return DASH;
    const a = Math.abs(v);
    const decimals = a > 0 && a < 0.01 ? Math.min(12, 1 - Math.floor(Math.log10(a))) : 4;
    // toFixed writes an exponent from 1e21 up, where a double is a whole number anyway
    const [whole, fraction = ""] = (a < 1e21 ? a.toFixed(decimals) : BigInt(a).toString()).split(".");
    const digits = fraction.replace(/0+$/, "");
    const text = `${whole.replace(/\B(?=(\d{3})+$)/g, ",")}${digits ? `.${digits}` : ""}`;
    return `${v < 0 && text !== "0" ? "-" : ""}$${text}`;
  }

  function fmtMs(v) {
    if (!isNum(v)) return DASH;
    return v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v).toLocaleString("en-US")} ms`;
  }

  function fmtMsAxis(v) {
    return v >= 1000 ? `${+(v / 1000).toFixed(2)}s` : `${+v.toFixed(1)}ms`;
  }

  function fmtRate(v) {
    if (!isNum(v)) return DASH;
    return v > 0 && v < 0.01 ? v.toPrecision(2) : v.toFixed(v < 10 ? 2 : 1);
  }

  /** Local HH:MM[:SS], prefixed with MM-DD when the window spans days. */
  function fmtTime(ts, seconds = true, withDate = state.spansDays) {
    if (!isNum(ts)) return DASH;
    const d = new Date(ts * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
    return withDate ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
  }

  function fmtDuration(s) {
    if (!isNum(s) || s < 0) return DASH;
    if (s < 60) return `${Math.floor(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  const text = (v) => (v == null || v === "" ? DASH : String(v));
  const yesNo = (v) => (v === true ? "✓" : v === false ? "" : DASH);

  // ---------------------------------------------------------------- window + url
  function currentWindow() {
    const since = new URLSearchParams(location.hash.replace(/^#/, "")).get("since");
    return since && since.trim() ? since.trim() : DEFAULT_WINDOW;
  }

  function syncSelect() {
    const select = $("window-select");
    const win = currentWindow();
    for (const o of [...select.options]) if (o.dataset.custom && o.value !== win) o.remove();
    if (![...select.options].some((o) => o.value === win)) select.append(el("option", { value: win, "data-custom": "1" }, win));
    select.value = win;
  }

  function dataUrl(win) {
    const meta = document.querySelector('meta[name="llmroute-data"]');
    const url = new URL((meta && meta.content) || "data", location.href);
    url.searchParams.set("since", win);
    url.hash = "";
    return url;
  }

  // ---------------------------------------------------------------- charts
  const CW = 640, CH = 200;
  const M = { l: 50, r: 10, t: 10, b: 24 };
  const PW = CW - M.l - M.r, PH = CH - M.t - M.b;

  function niceStep(raw, integer) {
    if (!(raw > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
    return integer ? Math.max(1, Math.ceil(step)) : step;
  }

  const axisLabel = (ts) => (isNum(ts) ? fmtTime(ts, state.step < 60) : "");

  /** Axes, grid and scales for `n` buckets and values up to `top`. */
  function frame(t, top, fmt, integer) {
    const n = t.length;
    const step = niceStep(top / 4, integer);
    const ymax = Math.max(step, Math.ceil(top / step - 1e-9) * step);
    const bw = PW / Math.max(n, 1);
    const f = {
      n, bw,
      x: (i) => M.l + i * bw,
      cx: (i) => M.l + (i + 0.5) * bw,
      y: (v) => M.t + PH - (Math.min(v, ymax) / ymax) * PH,
      root: svg("svg", { viewBox: `0 0 ${CW} ${CH}`, class: "chart-svg", preserveAspectRatio: "xMidYMid meet" }),
    };
    for (let k = 0; k * step <= ymax + step * 1e-6; k++) {
      const v = k * step, y = f.y(v);
      f.root.append(
        svg("line", { x1: M.l, x2: CW - M.r, y1: y, y2: y, class: k === 0 ? "axis" : "grid" }),
        svg("text", { x: M.l - 6, y: y + 3.5, class: "tick", "text-anchor": "end" }, fmt(v)),
      );
    }
    const every = Math.max(1, Math.ceil(n / 6));
    for (let i = 0; i < n; i += every) {
      f.root.append(
        svg("line", { x1: f.x(i), x2: f.x(i), y1: M.t + PH, y2: M.t + PH + 4, class: "axis" }),
        svg("text", { x: f.x(i), y: CH - 6, class: "tick", "text-anchor": i === 0 ? "start" : "middle" }, axisLabel(t[i])),
      );
    }
    return f;
  }

  /** Transparent per-bucket columns carrying a <title> tooltip. */
  function hoverColumns(f, t, tip) {
    for (let i = 0; i < f.n; i++) {
      const end = isNum(t[i]) ? t[i] + state.step : null;
      const title = `${axisLabel(t[i])}–${axisLabel(end)}\n${tip(i)}`;
      f.root.append(svg("rect", { x: f.x(i), y: M.t, width: f.bw, height: PH, class: "hit" }, svg("title", null, title)));
    }
  }

  function emptyNote(f, note) {
    f.root.append(svg("text", { x: M.l + PW / 2, y: M.t + PH / 2, class: "empty-note", "text-anchor": "middle" }, note));
  }

  function mount(id, f, legendItems) {
    if (f) {
      // one image to a screen reader (not each tick label), named by its caption;
      // the tables below hold the same numbers
      const caption = $(id).closest("figure").querySelector("figcaption").textContent;
      f.root.setAttribute("role", "img");
      f.root.setAttribute("aria-label", `${caption} chart, per time bucket; the tables hold the numbers`);
    }
    $(id).replaceChildren(f ? f.root : el("p", { class: "empty-note" }, "no data in this window"));
    const legend = $(id.replace("chart-", "legend-"));
    legend.replaceChildren(...(legendItems || []).map(([name, color]) => el("span", { class: "legend-item" }, swatch(color), name)));
  }

  function bar(f, i, lo, hi, color, slot = 0, slots = 1) {
    const gap = Math.min(1, f.bw * 0.15);
    const w = (f.bw - 2 * gap) / slots;
    const h = f.y(lo) - f.y(hi);
    if (h <= 0) return;
    f.root.append(svg("rect", { x: f.x(i) + gap + slot * w, y: f.y(hi), width: Math.max(w, 0.5), height: h, fill: color }));
  }

  function chartRequests(s, t) {
    let layers = Object.entries(s.routes && typeof s.routes === "object" ? s.routes : {});
    if (!layers.length) layers = [["requests", arr(s.requests)]];
    layers = layers.map(([name, vals]) => [name, arr(vals)]);
    const totals = t.map((_, i) => layers.reduce((a, [, v]) => a + num0(v[i]), 0));
    const f = frame(t, Math.max(0, ...totals), fmtInt, true);
    t.forEach((_, i) => {
      let acc = 0;
      for (const [name, vals] of layers) {
        const v = num0(vals[i]);
        bar(f, i, acc, acc + v, colorOf(name));
        acc += v;
      }
    });
    hoverColumns(f, t, (i) => [`total ${fmtInt(totals[i])}`, ...layers.map(([n, v]) => `${n}: ${fmtInt(v[i])}`)].join("\n"));
    mount("chart-requests", f, layers.map(([n]) => [n, colorOf(n)]));
  }

  function linePath(f, vals) {
    let d = "", pen = false;
    vals.forEach((v, i) => {
      if (!isNum(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${f.cx(i).toFixed(1)},${f.y(v).toFixed(1)}`;
      pen = true;
    });
    return d;
  }

  function chartLatency(s, t) {
    const p50 = arr(s.p50_ms), p99 = arr(s.p99_ms);
    const top = Math.max(0, ...p50.filter(isNum), ...p99.filter(isNum));
    const f = frame(t, top, fmtMsAxis, false);
    for (const [name, vals] of [["p99", p99], ["p50", p50]]) {
      f.root.append(svg("path", { d: linePath(f, vals), class: "line", stroke: COLORS[name] }));
      vals.forEach((v, i) => {
        if (isNum(v)) f.root.append(svg("circle", { cx: f.cx(i), cy: f.y(v), r: 1.8, fill: COLORS[name] }));
      });
    }
    if (!(top > 0)) emptyNote(f, "no latency data");
    hoverColumns(f, t, (i) => `p50 ${fmtMs(p50[i])}\np99 ${fmtMs(p99[i])}`);
    mount("chart-latency", f, [["p50", COLORS.p50], ["p99", COLORS.p99]]);
  }

  function chartErrors(s, t) {
    const errors = arr(s.errors), cache = arr(s.cache_hits);
    const top = Math.max(0, ...errors.map(num0), ...cache.map(num0));
    const f = frame(t, top, fmtInt, true);
    t.forEach((_, i) => {
      bar(f, i, 0, num0(errors[i]), COLORS.errors, 0, 2);
      bar(f, i, 0, num0(cache[i]), COLORS.cache, 1, 2);
    });
    if (!(top > 0)) emptyNote(f, "no errors or cache hits");
    hoverColumns(f, t, (i) => `errors ${fmtInt(errors[i])}\ncache hits ${fmtInt(cache[i])}`);
    mount("chart-errors", f, [["errors", COLORS.errors], ["cache hits", COLORS.cache]]);
  }

  function chartCost(s, t) {
    const cost = arr(s.cost_usd);
    const top = Math.max(0, ...cost.map(num0));
    const axis = (v) => (top >= 0.01 || v === 0 ? fmtMoney(v) : `$${v.toExponential(1)}`);
    const f = frame(t, top, axis, false);
    t.forEach((_, i) => bar(f, i, 0, num0(cost[i]), COLORS.cost));
    if (!(top > 0)) emptyNote(f, "no priced requests");
    hoverColumns(f, t, (i) => `cost ${fmtMoney(cost[i])}`);
    mount("chart-cost", f, [["cost (USD)", COLORS.cost]]);
  }

  function renderCharts(series) {
    const s = series && typeof series === "object" ? series : {};
    const t = arr(s.t);
    state.step = isNum(s.step_s) ? s.step_s : 60;
    const routes = s.routes && typeof s.routes === "object" ? Object.values(s.routes) : [];
    const any = [arr(s.requests), ...routes.map(arr)].some((a) => a.some((v) => v > 0));
    if (!t.length || !any) {
      for (const id of ["chart-requests", "chart-latency", "chart-errors", "chart-cost"]) mount(id, null);
      return;
    }
    chartRequests(s, t);
    chartLatency(s, t);
    chartErrors(s, t);
    chartCost(s, t);
  }

  // ---------------------------------------------------------------- tables
  /** cols: [{h, f(row) -> string|Node|null, num, tip}] */
  function table(id, cols, rows, rowAttrs, emptyText = "no data") {
    const head = el("thead", null, el("tr", null, cols.map((c) => el("th", { class: c.num ? "num" : null, title: c.tip, scope: "col" }, c.h))));
    const body = el("tbody");
    rows = rows.filter((r) => r && typeof r === "object");
    if (!rows.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: cols.length }, emptyText)));
    for (const row of rows) {
      const tr = el("tr", rowAttrs ? rowAttrs(row) : null);
      for (const c of cols) {
        const v = c.f(row);
        tr.append(el("td", { class: c.num ? "num" : null }, v == null ? DASH : v));
      }
      body.append(tr);
    }
    const heading = $(id).closest("section").querySelector("h2");
    if (heading) $(id).setAttribute("aria-label", heading.firstChild.textContent.trim()); // its section's name
    $(id).replaceChildren(head, body);
  }

  const col = (h, f, num = true, tip = null) => ({ h, f, num, tip });

  function shareCell(v) {
    const track = el("span", { class: "sharebar" }, el("span"));
    track.firstChild.style.width = `${Math.max(0, Math.min(1, num0(v))) * 100}%`;
    return el("span", { class: "share" }, track, fmtPct(v));
  }

  function driftBadge(r) {
    const reasons = arr(r.drift_reasons).map(String).join("\n") || null;
    if (r.drift === "flagged") return badge("flagged", "red", reasons);
    if (r.drift === "ok") return badge("ok", "green", reasons);
    if (r.drift === "insufficient") return badge("insufficient", "grey", reasons || "not enough data to compare");
    return r.drift == null ? DASH : badge(String(r.drift), "grey", reasons);
  }

  function feedbackCell(r) {
    if (!isNum(r.feedback_mean_score) && !isNum(r.thumbs_up_share)) return DASH;
    return `${fmtDec(r.feedback_mean_score, 2)} / ${fmtPct(r.thumbs_up_share)}`;
  }

  function renderRoutes(rows) {
    table("routes-table", [
      col("Route", (r) => el("span", { class: "name", title: text(r.name) }, swatch(colorOf(String(r.name))), el("span", null, text(r.name))), false),
      col("Requests", (r) => fmtInt(r.n)),
      col("Share", (r) => fmtPct(r.share)),
      col("p50", (r) => fmtMs(r.p50_ms)),
      col("p99", (r) => fmtMs(r.p99_ms)),
      col("Errors", (r) => fmtPct(r.error_rate), true, "error rate"),
      col("Fallback", (r) => fmtPct(r.fallback_rate), true, "fallback rate"),
      col("Cache hits", (r) => fmtInt(r.cache_hits)),
      col("Spend", (r) => fmtMoney(isNum(r.spend_usd) ? r.spend_usd : r.cost_usd), true, "logged cost, else tokens at the registry price"),
      col("Savings", (r) => fmtPct(r.savings), true, "saved vs the strongest model"),
      col("Margin", (r) => fmtDec(r.median_margin), true, "median margin"),
      col("Confidence", (r) => fmtDec(r.mean_confidence), true, "mean confidence"),
      col("Drift", driftBadge, false, "hover a badge for the reasons"),
      col("Shadow lost", (r) => fmtPct(r.shadow_lost_share), true, "share of judged shadow pairs where the routed answer lost"),
      col("Feedback", feedbackCell, true, "mean score / thumbs-up share"),
    ], rows, (r) => ({ "data-route": text(r.name) }));
  }

  function renderModels(rows) {
    table("models-table", [
      col("Model", (r) => text(r.name), false),
      col("Requests", (r) => fmtInt(r.n)),
      col("Share", (r) => fmtPct(r.share)),
      col("Errors", (r) => fmtPct(r.error_rate), true, "error rate"),
      col("Fallback", (r) => fmtPct(r.fallback_rate), true, "fallback rate"),
      col("p50", (r) => fmtMs(r.p50_ms)),
      col("p99", (r) => fmtMs(r.p99_ms)),
      col("Spend", (r) => fmtMoney(isNum(r.spend_usd) ? r.spend_usd : r.cost_usd)),
    ], rows);
  }

  // Requests, share, errors and spend per name (client key or tag): hidden when empty.
  function renderSpend(kind, label, rows) {
    $(kind + "-section").hidden = !rows.length;
    if (!rows.length) return;
    table(kind + "-table", [
      col(label, (r) => text(r.name), false),
      col("Requests", (r) => fmtInt(r.n)),
      col("Share", (r) => fmtPct(r.share)),
      col("Errors", (r) => fmtPct(r.error_rate), true, "error rate"),
      col("Spend", (r) => fmtMoney(r.spend_usd)),
    ], rows, (r) => ({ ["data-" + kind.replace(/s$/, "")]: text(r.name) }));
  }

  function renderLayers(rows) {
    table("layers-table", [
      col("Layer", (r) => text(r.name), false),
      col("Requests", (r) => fmtInt(r.n)),
      col("Share", (r) => shareCell(r.share)),
    ], rows);
  }

  function renderShadow(shadow) {
    const s = shadow && typeof shadow === "object" ? shadow : {};
    const rows = arr(s.routes);
    const all = s.overall && num0(s.overall.pairs) > 0 ? [{ ...s.overall, overall: true }] : [];
    const ci = (r) => (Array.isArray(r.ci95) && r.ci95.length === 2 ? `${fmtPct(r.ci95[0])} – ${fmtPct(r.ci95[1])}` : DASH);
    table("shadow-table", [
      col("Route", (r) => text(r.route), false),
      col("Pairs", (r) => fmtInt(r.pairs)),
      col("Judged", (r) => fmtInt(r.judged)),
      col("Lost", (r) => fmtInt(r.lost)),
      col("Lost share", (r) => fmtPct(r.lost_share)),
      col("95% CI", ci, true, "Wilson 95% interval of the lost share"),
      col("Judge errors", (r) => fmtInt(r.judge_errors)),
      col("Unjudged", (r) => fmtInt(r.unjudged)),
    ], [...rows, ...all], (r) => (r.overall ? { class: "total" } : null), "no shadow pairs in this window");
  }

  function renderBreakers(live) {
    $("breakers-section").hidden = !live;
    if (!live) return;
    const tone = { closed: "green", half_open: "amber", open: "red" };
    table("breakers-table", [
      col("Model", (r) => text(r.model), false),
      col("Provider", (r) => text(r.provider), false),
      col("Upstream", (r) => text(r.upstream), false),
      col("State", (r) => (r.state == null ? DASH : badge(String(r.state).replace("_", "-"), tone[r.state] || "grey")), false),
      col("Consec. failures", (r) => fmtInt(r.consecutive_failures)),
      col("Window req.", (r) => fmtInt(r.window_requests)),
      col("Window fail.", (r) => fmtInt(r.window_failures)),
    ], arr(live.breakers), (r) => ({ "data-state": text(r.state) }), "no breakers");
    $("breakers-note").textContent = live.breakers_shared
      ? `openings shared through ${live.breakers_shared}`
      : "this process's own (not shared)";
  }

  // Each budget of the registry as counted now (live): hidden without a gateway or budgets.
  function renderBudgets(live) {
    const rows = live ? arr(live.budgets) : [];
    $("budgets-section").hidden = !rows.length;
    if (!rows.length) return;
    const used = (r) => (isNum(r.spent_usd) && isNum(r.usd) && r.usd > 0 ? r.spent_usd / r.usd : null);
    table("budgets-table", [
      col("Of", (r) => `${text(r.kind)} ${text(r.name)}`, false),
      col("Period", (r) => text(r.period), false),
      col("Cap", (r) => (r.hard ? badge("hard", "green", "never passed: calls in flight hold their worst case") : badge("soft", "grey", "calls in flight may pass it")), false),
      col("Spent", (r) => fmtMoney(r.spent_usd), true, "this period (UTC), with the worst cases held by calls in flight for a hard budget"),
      col("Budget", (r) => fmtMoney(r.usd)),
      col("Used", (r) => (used(r) == null ? DASH : shareCell(used(r))), true, "spent / budget"),
    ], rows, (r) => ({ "data-budget": `${text(r.kind)}:${text(r.name)}`, "data-hard": String(!!r.hard) }));
  }

  function statusCell(r) {
    if (!isNum(r.status)) return DASH;
    if (r.status < 400) return String(r.status);
    const code = r.error && typeof r.error === "object" ? r.error.code || r.error.type : r.error;
    return badge(code ? `${r.status} ${code}` : String(r.status), "red");
  }

  function renderRecent(rows) {
    table("recent-table", [
      col("Time", (r) => fmtTime(r.ts), false),
      col("Route", (r) => text(r.route), false),
      col("Model", (r) => text(r.model), false),
      col("Served", (r) => (r.route_only
        ? el("span", { title: "decision only (/v1/route): nothing was dispatched" }, "route only")
        : r.served_model && r.served_model !== r.model
        ? el("span", { class: "fallback", title: "served by another model (fallback)" }, text(r.served_model))
        : text(r.served_model)), false),
      col("Layer", (r) => text(r.layer), false),
      col("Confidence", (r) => fmtDec(r.confidence)),
      col("Margin", (r) => fmtDec(r.margin)),
      col("Status", statusCell, false),
      col("Latency", (r) => fmtMs(r.latency_ms)),
      col("Cache", (r) => yesNo(r.cache_hit), false),
      col("Stream", (r) => yesNo(r.stream), false),
    ], rows, (r) => ({ title: r.id == null ? null : `decision ${r.id}`, class: isNum(r.status) && r.status >= 400 ? "failed" : null }),
    "no decisions in this window");
  }

  // ---------------------------------------------------------------- header, tiles, banner
  function renderLive(live, now) {
    const meta = [];
    if (!live) {
      $("registry-version").textContent = "log only — not attached to a gateway";
      $("registry-version").className = "meta";
    } else {
      $("registry-version").textContent = `registry ${text(live.registry_version)}`;
      $("registry-version").className = "meta-strong";
      meta.push(`pid ${text(live.pid)}`, `${fmtInt(live.in_flight)} in flight`);
      if (isNum(live.started_at)) meta.push(`up ${fmtDuration(now - live.started_at)}`);
      meta.push(live.cache && typeof live.cache === "object" ? `cache: ${text(live.cache.store)}` : "no response cache");
      if (isNum(live.workers) && live.workers > 1) meta.push(`live state is this worker's (1 of ${live.workers})`);
    }
    $("live-meta").textContent = meta.join(" · ");
  }

  function tile(id, value, sub, tone) {
    const node = $(id);
    node.querySelector(".value").textContent = value;
    node.querySelector(".sub").textContent = state.emptyWindow ? "" : sub || "";
    node.classList.remove("tone-red", "tone-amber");
    if (tone) node.classList.add(`tone-${tone}`);
  }

  const toneOf = (v, amber, red) => (isNum(v) ? (v >= red ? "red" : v >= amber ? "amber" : null) : null);

  function renderTiles(summary, drift, live) {
    const s = summary && typeof summary === "object" ? summary : {};
    const d = drift && typeof drift === "object" ? drift : {};
    state.emptyWindow = !(num0(s.requests) > 0);
    tile("tile-requests", fmtInt(s.requests), isNum(s.rate_per_s) ? `${fmtRate(s.rate_per_s)} / s` : "");
    tile("tile-error-rate", fmtPct(s.error_rate), "of dispatched requests failed", toneOf(s.error_rate, 0.01, 0.05));
    tile("tile-p50", fmtMs(s.p50_ms), "median latency");
    tile("tile-p99", fmtMs(s.p99_ms), "tail latency");
    const spend = isNum(s.spend_usd) ? s.spend_usd : s.cost_usd;
    tile("tile-cost", fmtMoney(spend), num0(s.unpriced) > 0 ? `savings exclude ${fmtInt(s.unpriced)} requests without tokens` : "every request priced");
    const strongest = s.strongest_model == null ? "the strongest model" : s.strongest_model;
    tile("tile-savings", fmtPct(s.savings), `${fmtMoney(s.cost_usd)} vs ${fmtMoney(s.counterfactual_usd)} all on ${strongest}`);
    const cache = live && live.cache;
    const cacheNote = !cache || typeof cache !== "object" ? (live ? "no response cache" : "")
      : isNum(cache.entries) ? `${text(cache.store)} store, ${fmtInt(cache.entries)} entries` : `${text(cache.store)} store`;
    tile("tile-cache", fmtPct(s.cache_hit_rate), cacheNote);
    tile("tile-fallback", fmtPct(s.fallback_rate), `escalations ${fmtPct(s.escalation_rate)}`, toneOf(s.fallback_rate, 0.05, 0.2));
    tile("tile-default", fmtPct(s.default_rate), isNum(d.default_rate_baseline) ? `baseline ${fmtPct(d.default_rate_baseline)}` : "",
      d.default_flagged ? "amber" : null);
    tile("tile-margin", fmtDec(s.median_margin), `mean confidence ${fmtDec(s.mean_confidence)}`);
  }

  function renderDrift(drift) {
    const line = $("drift-line");
    if (!drift || typeof drift !== "object") {
      line.replaceChildren(el("strong", null, "Drift"), " no comparison for this window");
      return;
    }
    const flagged = arr(drift.flagged_routes).map(String);
    const baseline = drift.baseline && drift.baseline.text ? drift.baseline.text : DASH;
    const parts = [
      el("strong", null, "Drift"),
      drift.flagged ? badge("flagged", "red") : drift.enough_data === false ? badge("insufficient data", "grey") : badge("ok", "green"),
      flagged.length ? ` flagged routes: ${flagged.join(", ")}` : " no routes flagged",
      " · default rate ",
      el("span", { class: drift.default_flagged ? "warn-text" : null }, `${fmtPct(drift.default_rate_baseline)} → ${fmtPct(drift.default_rate_recent)}`),
      ` (baseline ${baseline})`,
      isNum(drift.mix_tv) ? ` · route mix TV ${fmtDec(drift.mix_tv)}` : "",
    ];
    line.replaceChildren(...parts);
  }

  function renderBanner() {
    const msgs = [];
    const d = state.data;
    if (state.fetchError && state.fetchError.status !== 400) msgs.push(["error", state.fetchError.message]);
    if (state.renderError) msgs.push(["error", `render error: ${state.renderError}`]);
    if (d && d.log && d.log.message) msgs.push(["info", String(d.log.message)]);
    if (d && d.sample && d.sample.truncated) {
      msgs.push(["warn", `Counts, rates, spend and the request charts cover all ${fmtInt(d.sample.in_window)} requests; latency, margins, savings, drift and layers come from the newest ${fmtInt(d.sample.rows)}.`]);
    }
    const banner = $("banner");
    banner.replaceChildren(...msgs.map(([kind, msg]) => el("div", { class: `msg msg-${kind}` }, msg)));
    banner.hidden = msgs.length === 0;
  }

  function renderFooter(d) {
    const parts = [];
    if (d.log && d.log.url) parts.push(`log ${d.log.url}`);
    if (d.sample && isNum(d.sample.rows)) parts.push(`${fmtInt(d.sample.rows)} rows read (max ${fmtInt(d.sample.max_rows)})`);
    if (d.window) parts.push(`window ${text(d.window.text)} since ${fmtTime(d.window.since)}${isNum(d.window.until) ? ` until ${fmtTime(d.window.until)}` : ""}`);
    if (isNum(d.generated_at)) parts.push(`generated ${fmtTime(d.generated_at)}`);
    $("footer").textContent = parts.join(" · ");
  }

  function render(d) {
    const w = d.window && typeof d.window === "object" ? d.window : {};
    const end = isNum(w.until) ? w.until : isNum(d.generated_at) ? d.generated_at : Date.now() / 1000;
    state.spansDays = isNum(w.since) && new Date(w.since * 1000).toDateString() !== new Date(end * 1000).toDateString();
    renderLive(d.live, isNum(d.generated_at) ? d.generated_at : Date.now() / 1000);
    renderTiles(d.summary, d.drift, d.live);
    renderDrift(d.drift);
    renderCharts(d.series);
    renderRoutes(arr(d.routes));
    renderModels(arr(d.models));
    renderSpend("clients", "Key", arr(d.clients));
    renderSpend("tags", "Tag", arr(d.tags));
    const tags = arr(d.tags).filter((t) => t && t.name !== "(untagged)").length; // as tag_count
    $("tags-more").hidden = !(isNum(d.tag_count) && d.tag_count > tags);
    $("tags-more").textContent = `· the ${fmtInt(tags)} costliest of ${fmtInt(d.tag_count)}`;
    renderLayers(arr(d.layers));
    renderSpend("apis", "API", arr(d.apis));
    renderShadow(d.shadow);
    renderBreakers(d.live);
    renderBudgets(d.live);
    renderRecent(arr(d.recent));
    renderFooter(d);
  }

  // ---------------------------------------------------------------- fetch loop
  function setStale(stale) {
    $("stale").hidden = !stale;
    document.body.classList.toggle("is-stale", stale);
  }

  function onData(data) {
    state.data = data;
    document.body.classList.remove("no-data");
    state.fetchError = null;
    state.renderError = null;
    $("window-error").hidden = true;
    try {
      render(data);
      document.body.dataset.state = "ready";
      $("updated").textContent = `updated ${fmtTime(Date.now() / 1000, true, false)}`;
      setStale(false);
    } catch (err) {
      console.error(err);
      state.renderError = err && err.message ? err.message : String(err);
      document.body.dataset.state = "error";
    }
    renderBanner();
  }

  function onFetchError(err) {
    state.fetchError = err;
    if (err.status === 400) {
      $("window-error").textContent = err.message;
      $("window-error").hidden = false;
    }
    if (!state.data) {
      document.body.dataset.state = "error";
      document.body.classList.add("no-data");
      $("registry-version").textContent = "no data";
      $("registry-version").className = "meta";
    }
    setStale(Boolean(state.data));
    renderBanner();
  }

  async function fetchData(win) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(dataUrl(win), { headers: { Accept: "application/json" }, cache: "no-store", signal: ctrl.signal });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        const e = body && body.error && body.error.message ? String(body.error.message) : `HTTP ${res.status}`;
        throw Object.assign(new Error(res.status === 400 ? e : `Could not load dashboard data (${res.status}): ${e}`), { status: res.status });
      }
      if (!body || typeof body !== "object") throw Object.assign(new Error("Could not load dashboard data: not JSON"), { status: res.status });
      return body;
    } catch (err) {
      if (err.name === "AbortError") throw Object.assign(new Error("Could not load dashboard data: timed out"), { status: 0 });
      if (!("status" in err)) err.message = `Could not reach the server: ${err.message}`;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Never stacks: a timer tick during a fetch is skipped; a user action queues one more. */
  async function refresh(userAction = false) {
    if (state.inFlight) {
      if (userAction) state.pending = true;
      return;
    }
    state.inFlight = true;
    document.body.classList.add("is-loading");
    const win = currentWindow();
    try {
      const data = await fetchData(win);
      if (win === currentWindow()) onData(data);
    } catch (err) {
      if (win === currentWindow()) onFetchError(err);
    } finally {
      state.inFlight = false;
      document.body.classList.remove("is-loading");
      if (state.pending) {
        state.pending = false;
        refresh(true);
      }
    }
  }

  function start() {
    document.body.dataset.state = "loading";
    syncSelect();
    $("window-select").addEventListener("change", (e) => {
      history.replaceState(null, "", `#since=${encodeURIComponent(e.target.value)}`);
      refresh(true);
    });
    window.addEventListener("hashchange", () => {
      syncSelect();
      refresh(true);
    });
    $("refresh-now").addEventListener("click", () => refresh(true));
    setInterval(() => {
      if ($("auto-refresh").checked && !document.hidden) refresh(false);
    }, REFRESH_MS);
    refresh(true);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
