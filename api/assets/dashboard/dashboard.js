// meshlens dashboard: reads /api/v1 with the bearer token of this tab and draws every section.
// Plain browser JavaScript, no build step and no external resources. Data is inserted as text nodes
// (never as HTML); charts and reports are fetched with the token and shown through object URLs.
"use strict";

(() => {
  const TOKEN_KEY = "meshlens.dashboard.token";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: null,
    window: "1h",
    namespace: "",
    generation: 0,
    namespaces: new Set(),
    chartUrls: new Map(),
    reportUrl: null,
  };

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  /** An element with attributes (`class`, `dataset`, `on*` handlers, others) and children (nodes or text). */
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  /** The same for SVG elements. */
  function s(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(el, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "dataset") Object.assign(el.dataset, value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const integers = new Intl.NumberFormat("en-US");

  function fmtInt(n) {
    return typeof n === "number" ? integers.format(n) : "–";
  }

  /** A share (0..1) as a percentage with one decimal: `99.2 %`. */
  function fmtShare(share) {
    return typeof share === "number" && Number.isFinite(share) ? (share * 100).toFixed(1) + " %" : "–";
  }

  /** A value already in percent: `66.7 %`. */
  function fmtPercent(value) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(1) + " %" : "n/a";
  }

  function fmtRate(rate) {
    if (typeof rate !== "number") return "–";
    const digits = rate >= 100 ? 0 : rate >= 10 ? 1 : 2;
    return rate.toFixed(digits) + " req/s";
  }

  function fmtMs(ms) {
    if (typeof ms !== "number") return "–";
    return (ms >= 100 ? ms.toFixed(0) : ms.toFixed(1)) + " ms";
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  /** A time in the browser's time zone: `2026-11-27 10:04:05`. */
  function fmtTime(iso) {
    if (!iso) return "–";
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return iso;
    return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
      `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  }

  function fmtSpan(startIso, endIso) {
    const seconds = (new Date(endIso) - new Date(startIso)) / 1000;
    if (!Number.isFinite(seconds)) return "–";
    if (seconds % 86400 === 0) return `${seconds / 86400} d`;
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0) return `${seconds / 60} min`;
    return `${Math.round(seconds)} s`;
  }

  /** `reviews.default.svc.cluster.local` → `reviews.default`; other names unchanged. */
  function shortName(id) {
    return id.endsWith(".svc.cluster.local") ? id.slice(0, -".svc.cluster.local".length) : id;
  }

  function truncate(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  const CLASSIFICATIONS = {
    violation: "violation",
    at_risk: "at risk",
    ready_to_tighten: "ready to tighten",
    compliant: "compliant",
  };
  const SEVERITY = { violation: 0, at_risk: 1, ready_to_tighten: 2, compliant: 3 };

  function badge(cls, text) {
    return h("span", { class: `badge ${cls}` }, text);
  }

  function classification(value) {
    return badge(value, CLASSIFICATIONS[value] || value);
  }

  // ---------------------------------------------------------------- API access

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }

    describe() {
      return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "network", `the server did not answer (${e.message})`);
    }
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = response.statusText || "request failed";
      try {
        const body = await response.json();
        code = body.error.code || code;
        message = body.error.message || message;
      } catch (_) {
        // not the API's error body; keep the status line
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }

  async function getJson(path) {
    return (await api(path)).json();
  }

  /** `path?window=..&namespace=..` with the controls' window and namespace and `extra` parameters. */
  function url(path, extra = {}, { windowed = true } = {}) {
    const params = new URLSearchParams();
    if (windowed) params.set("window", state.window);
    if (state.namespace) params.set("namespace", state.namespace);
    for (const [name, value] of Object.entries(extra)) params.set(name, String(value));
    const query = params.toString();
    return query ? `${path}?${query}` : path;
  }

  // ---------------------------------------------------------------- token

  /** Takes `#token=...` out of the address into this tab's session storage; returns the token in force. */
  function adoptTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("token");
    if (token !== null) {
      fragment.delete("token");
      const rest = fragment.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
      if (token.trim()) sessionStorage.setItem(TOKEN_KEY, token.trim());
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function setToken(token) {
    state.token = token || null;
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  function showAuth(message) {
    $("auth").hidden = false;
    $("auth-message").textContent = message;
    $("token-input").value = "";
  }

  function hideAuth() {
    $("auth").hidden = true;
    $("auth-message").textContent = "";
  }

  // ---------------------------------------------------------------- page state

  function setPageState(value, text) {
    document.body.dataset.state = value;
    $("status").textContent = text;
  }

  function sectionError(section, error) {
    const box = document.querySelector(`[data-section-error="${section}"]`);
    if (!box) return;
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    const what = error.status === 403
      ? `Not allowed with this token (${error.describe()}).`
      : `Could not load: ${error instanceof ApiError ? error.describe() : error.message}`;
    box.textContent = what;
    box.hidden = false;
  }

  function fillTable(id, rows, emptyText, columns) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...(rows.length ? rows : [h("tr", { class: "empty" }, h("td", { colspan: columns }, emptyText))]));
  }

  /** Removes every number the page shows (when the token is refused, nothing of an earlier answer stays). */
  function clearData() {
    for (const id of ["overview-mtls", "overview-mtls-detail", "overview-requests", "overview-requests-detail",
      "overview-findings-error", "overview-findings-warning", "overview-findings-info", "overview-gaps"]) {
      $(id).textContent = "";
      delete $(id).dataset.value;
    }
    $("top-gaps").replaceChildren();
    $("graph-container").replaceChildren();
    for (const id of ["mtls-namespaces", "mtls-table", "routes-table", "findings-table", "reports-table"]) {
      $(id).tBodies[0].replaceChildren();
    }
    for (const id of ["routes-summary", "mtls-note", "findings-note", "report-message"]) $(id).textContent = "";
    $("routes-unrouted").replaceChildren();
    $("recommendations-list").replaceChildren();
    for (const [id, objectUrl] of state.chartUrls) {
      URL.revokeObjectURL(objectUrl);
      $(id).removeAttribute("src");
      delete $(id).dataset.loaded;
    }
    state.chartUrls.clear();
    closeReport();
  }

  // ---------------------------------------------------------------- loading

  /** The API answered 401: nothing of earlier answers stays on the page, and the token form shows. */
  function refused(error) {
    clearData();
    showAuth(state.token
      ? `The API refused this token (${error.message}). Enter another token.`
      : `This server needs an API token (${error.message}). Enter a token to see the data.`);
    setPageState("unauthorized", "Not signed in.");
  }

  async function refresh() {
    const generation = ++state.generation;
    setPageState("loading", "Loading…");
    // One cheap request first: without a usable token it is the only one refused.
    try {
      await api("/api/v1/config?limit=1");
    } catch (e) {
      if (generation !== state.generation) return;
      if (e instanceof ApiError && e.status === 401) {
        refused(e);
        return;
      }
      // anything else shows up again below, in the section it concerns
    }
    if (generation !== state.generation) return;
    const requests = {
      coverage: getJson(url("/api/v1/mtls/coverage", { limit: 1000 })),
      findings: getJson(url("/api/v1/findings", { limit: 200 })),
      gaps: getJson(url("/api/v1/resilience/gaps", { limit: 1000 })),
      graph: getJson(url("/api/v1/graph", { limit: 500 })),
      routes: getJson(url("/api/v1/routes", { limit: 1000 })),
      recommendations: getJson(url("/api/v1/recommendations", { limit: 200 })),
      reports: getJson(url("/api/v1/reports", { limit: 50 }, { windowed: false })),
    };
    const names = Object.keys(requests);
    const settled = await Promise.allSettled(Object.values(requests));
    if (generation !== state.generation) return; // a newer refresh started meanwhile
    const data = {};
    const errors = {};
    names.forEach((name, i) => {
      if (settled[i].status === "fulfilled") data[name] = settled[i].value;
      else errors[name] = settled[i].reason;
    });

    const unauthorized = Object.values(errors).find((e) => e instanceof ApiError && e.status === 401);
    if (unauthorized) {
      refused(unauthorized);
      return;
    }
    hideAuth();

    const render = (section, needs, draw) => {
      const failed = needs.map((n) => errors[n]).find(Boolean);
      sectionError(section, failed);
      if (failed) return;
      try {
        draw();
      } catch (e) {
        console.error(e);
        sectionError(section, e);
      }
    };
    render("overview", ["coverage", "findings", "gaps", "graph"], () =>
      drawOverview(data.coverage, data.findings, data.gaps, data.graph));
    render("graph", ["graph"], () => drawGraph(data.graph));
    render("mtls", ["coverage"], () => drawMtls(data.coverage));
    render("routes", ["routes"], () => drawRoutes(data.routes));
    render("findings", ["findings"], () => drawFindings(data.findings));
    render("recommendations", ["recommendations"], () => drawRecommendations(data.recommendations));
    render("reports", ["reports"], () => drawReports(data.reports));
    updateNamespaces(data);

    const failures = Object.keys(errors).length;
    const scope = state.namespace ? `namespace ${state.namespace}` : "all namespaces";
    const windowText = data.coverage
      ? `${fmtTime(data.coverage.window.start)} – ${fmtTime(data.coverage.window.end)}`
      : `last ${state.window}`;
    setPageState(failures ? "error" : "ready",
      `${windowText} · ${scope} · updated ${fmtTime(new Date().toISOString())}` +
      (failures ? ` · ${failures} request(s) failed` : ""));
    loadCharts(generation);
  }

  function updateNamespaces(data) {
    const found = state.namespaces;
    for (const node of (data.graph && data.graph.nodes) || []) if (node.namespace) found.add(node.namespace);
    for (const ns of (data.coverage && data.coverage.namespaces) || []) found.add(ns.namespace);
    // A namespace-scoped token gets its namespace whatever was asked.
    const scoped = data.coverage && data.coverage.namespace;
    if (scoped) found.add(scoped);
    const select = $("namespace-select");
    const selected = state.namespace || scoped || "";
    select.replaceChildren(
      h("option", { value: "" }, "all namespaces"),
      ...[...found].sort().map((ns) => h("option", { value: ns }, ns)));
    select.value = selected;
  }

  // ---------------------------------------------------------------- overview

  function drawOverview(coverage, findings, gaps, graph) {
    const overall = coverage.overall;
    const mtls = $("overview-mtls");
    mtls.textContent = overall.requests ? fmtShare(overall.mutual_share) : "–";
    mtls.dataset.value = String(overall.mutual_share);
    mtls.classList.toggle("good", overall.requests > 0 && overall.plaintext === 0 && overall.unknown === 0);
    mtls.classList.toggle("bad", overall.plaintext > 0);
    $("overview-mtls-detail").textContent = overall.requests
      ? `${fmtInt(overall.mutual)} mutual · ${fmtInt(overall.plaintext)} plaintext · ${fmtInt(overall.unknown)} unknown`
      : "no requests in this window";

    const requests = $("overview-requests");
    requests.textContent = fmtInt(overall.requests);
    requests.dataset.value = String(overall.requests);
    $("overview-requests-detail").textContent =
      `${fmtInt(graph.total)} edges between ${fmtInt(graph.nodes.length)} nodes`;

    for (const level of ["error", "warning", "info"]) {
      const el = $(`overview-findings-${level}`);
      el.textContent = fmtInt(findings.counts[level]);
      el.dataset.value = String(findings.counts[level]);
    }

    const gapsEl = $("overview-gaps");
    gapsEl.textContent = fmtInt(gaps.services_with_gaps);
    gapsEl.dataset.value = String(gaps.services_with_gaps);
    const withGaps = gaps.items.filter((service) => service.gaps.length > 0);
    const top = withGaps.slice(0, 5).map((service) =>
      h("li", { dataset: { testid: "top-gap", service: service.service } },
        h("span", { class: "service" }, shortName(service.service)),
        ` (${fmtInt(service.requests)} requests): `,
        h("span", { class: "gap" }, service.gaps.join("; "))));
    if (gaps.services_with_gaps > top.length) {
      top.push(h("li", { class: "note" }, `… and ${gaps.services_with_gaps - top.length} more (see the API's /resilience/gaps)`));
    }
    for (const chain of gaps.amplification.slice(0, 3)) {
      top.push(h("li", { dataset: { testid: "amplification" } },
        h("span", { class: "service" }, "retry amplification"),
        `: ${chain.chain.map(shortName).join(" → ")} — up to ${fmtInt(chain.worst_case_tries)} tries per request` +
        ` (observed ${fmtInt(chain.observed_max_tries)})`));
    }
    $("top-gaps").replaceChildren(...(top.length ? top : [h("li", { class: "note" }, "No resilience gaps in this window.")]));
  }

  // ---------------------------------------------------------------- service graph

  const NODE_W = 230;
  const NODE_H = 46;
  const COL_GAP = 190;
  const ROW_GAP = 38;
  const PAD = 24;

  /** Columns of nodes: every edge points to a later column where the graph allows (longest path from
   *  the nodes nobody calls); within a column, nodes are ordered by the average row of their callers. */
  function layers(nodes, edges) {
    const layer = new Map(nodes.map((n) => [n.id, 0]));
    const limit = nodes.length;
    for (let round = 0; round < limit; round++) {
      let changed = false;
      for (const e of edges) {
        if (e.source === e.destination || !layer.has(e.source) || !layer.has(e.destination)) continue;
        const next = layer.get(e.source) + 1;
        if (next < limit && next > layer.get(e.destination)) {
          layer.set(e.destination, next);
          changed = true;
        }
      }
      if (!changed) break; // without cycles this ends early; with one, the cap above ends it
    }
    const byLayer = new Map();
    for (const node of nodes) {
      const l = layer.get(node.id);
      if (!byLayer.has(l)) byLayer.set(l, []);
      byLayer.get(l).push(node);
    }
    const columns = [...byLayer.keys()].sort((a, b) => a - b).map((l) => byLayer.get(l));
    const row = new Map();
    const callers = new Map();
    for (const e of edges) {
      if (!callers.has(e.destination)) callers.set(e.destination, []);
      callers.get(e.destination).push(e.source);
    }
    const byName = (a, b) => (a.namespace || "").localeCompare(b.namespace || "") || a.id.localeCompare(b.id);
    const barycenter = (node) => {
      const rows = (callers.get(node.id) || []).filter((c) => row.has(c)).map((c) => row.get(c));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Number.MAX_SAFE_INTEGER;
    };
    columns.forEach((column, index) => {
      if (index === 0) column.sort(byName);
      else {
        const centers = new Map(column.map((n) => [n.id, barycenter(n)]));
        column.sort((a, b) => centers.get(a.id) - centers.get(b.id) || byName(a, b));
      }
      column.forEach((node, i) => row.set(node.id, i));
    });
    return columns;
  }

  function drawGraph(graph) {
    const container = $("graph-container");
    if (!graph.items.length) {
      container.replaceChildren(h("p", { class: "empty", dataset: { testid: "graph-empty" } },
        "No requests in this window."));
      return;
    }
    const columns = layers(graph.nodes, graph.items);
    const tallest = Math.max(...columns.map((c) => c.length));
    const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
    const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * COL_GAP;
    const place = new Map();
    columns.forEach((column, ci) => {
      const offset = ((tallest - column.length) * (NODE_H + ROW_GAP)) / 2;
      column.forEach((node, ri) => {
        place.set(node.id, { x: PAD + ci * (NODE_W + COL_GAP), y: PAD + offset + ri * (NODE_H + ROW_GAP) });
      });
    });

    const svg = s("svg", {
      id: "graph-svg",
      "data-testid": "graph-svg",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Service graph: ${graph.nodes.length} nodes, ${graph.items.length} edges`,
    });
    const defs = s("defs");
    for (const kind of ["mutual", "partial", "plaintext"]) {
      defs.append(s("marker", {
        id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: "auto-start-reverse",
      }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrow-${kind}` })));
    }
    svg.append(defs);

    const edgeLayer = s("g", { class: "edges" });
    const labelLayer = s("g", { class: "edge-labels" });
    for (const e of graph.items) {
      const from = place.get(e.source);
      const to = place.get(e.destination);
      if (!from || !to) continue;
      const kind = e.mtls.plaintext > 0 ? "plaintext" : e.mtls.mutual === e.requests ? "mutual" : "partial";
      let d;
      let mid;
      const sx = from.x + NODE_W;
      const sy = from.y + NODE_H / 2;
      if (e.source === e.destination) {
        d = `M ${sx} ${sy - 8} C ${sx + 60} ${sy - 60}, ${sx + 60} ${sy + 60}, ${sx} ${sy + 8}`;
        mid = { x: sx + 48, y: sy };
      } else {
        const tx = to.x;
        const ty = to.y + NODE_H / 2;
        const bend = Math.max(60, Math.abs(tx - sx) / 2);
        const [c1x, c1y, c2x, c2y] = [sx + bend, sy, tx - bend, ty];
        d = `M ${sx} ${sy} C ${c1x} ${c1y}, ${c2x} ${c2y}, ${tx} ${ty}`;
        mid = { x: (sx + 3 * c1x + 3 * c2x + tx) / 8, y: (sy + 3 * c1y + 3 * c2y + ty) / 8 };
      }
      const detail = `${e.source} → ${e.destination}\n${fmtInt(e.requests)} requests (${fmtRate(e.rate)}), ` +
        `${fmtInt(e.errors)} errors (${fmtShare(e.error_rate)})\n` +
        `mTLS: ${fmtInt(e.mtls.mutual)} mutual, ${fmtInt(e.mtls.plaintext)} plaintext, ${fmtInt(e.mtls.unknown)} unknown\n` +
        `latency p50 ${fmtMs(e.p50_ms)}, p95 ${fmtMs(e.p95_ms)}, p99 ${fmtMs(e.p99_ms)}`;
      const group = s("g", {
        class: `edge ${kind}`,
        "data-testid": "graph-edge",
        "data-source": e.source,
        "data-destination": e.destination,
        "data-mtls": kind,
      }, s("title", {}, detail), s("path", { d, "marker-end": `url(#arrow-${kind})` }));
      edgeLayer.append(group);
      labelLayer.append(s("g", { class: `edge ${kind}` },
        s("text", { class: "label", x: mid.x, y: mid.y - 6, "text-anchor": "middle" },
          s("tspan", { x: mid.x, dy: 0 }, `${fmtRate(e.rate)} · ${fmtShare(e.error_rate)} err`),
          s("tspan", { x: mid.x, dy: 13 }, `mTLS ${fmtShare(e.mtls_share)}`)),
        s("title", {}, detail)));
    }
    svg.append(edgeLayer);

    const nodeLayer = s("g", { class: "nodes" });
    for (const node of graph.nodes) {
      const at = place.get(node.id);
      if (!at) continue;
      const errors = node.errors_in ? ` (${fmtInt(node.errors_in)} err)` : "";
      nodeLayer.append(s("g", {
        class: `node ${node.kind}`,
        "data-testid": "graph-node",
        "data-id": node.id,
        "data-kind": node.kind,
        transform: `translate(${at.x} ${at.y})`,
      },
      s("title", {}, `${node.id} (${node.kind})\nin: ${fmtInt(node.requests_in)} requests${errors}\n` +
        `out: ${fmtInt(node.requests_out)} requests`),
      s("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
      s("text", { class: "name", x: 10, y: 19 }, truncate(shortName(node.id), 32)),
      s("text", { class: "stats", x: 10, y: 36 },
        `in ${fmtInt(node.requests_in)}${errors} · out ${fmtInt(node.requests_out)}`)));
    }
    svg.append(nodeLayer, labelLayer);
    const parts = [svg];
    if (graph.total > graph.items.length) {
      parts.push(h("p", { class: "note" }, `The ${graph.items.length} busiest of ${fmtInt(graph.total)} edges are drawn.`));
    }
    container.replaceChildren(...parts);
    // A plate behind each edge label, sized to the text now that it is laid out.
    for (const text of labelLayer.querySelectorAll("text")) {
      const box = text.getBBox();
      if (!box.width) continue;
      text.before(s("rect", {
        class: "label-bg", x: box.x - 4, y: box.y - 1, width: box.width + 8, height: box.height + 2, rx: 3,
      }));
    }
  }

  // ---------------------------------------------------------------- mTLS

  function countCell(count, requests) {
    const share = requests ? ` (${fmtShare(count / requests)})` : "";
    return h("td", { class: "num" }, `${fmtInt(count)}${share}`);
  }

  function drawMtls(coverage) {
    const namespaces = coverage.namespaces.map((ns) => h("tr", {
      dataset: { testid: "mtls-namespace-row", namespace: ns.namespace, classification: ns.classification },
    },
    h("td", {}, ns.namespace),
    h("td", { class: "num" }, fmtInt(ns.counts.requests)),
    countCell(ns.counts.mutual, ns.counts.requests),
    countCell(ns.counts.plaintext, ns.counts.requests),
    countCell(ns.counts.unknown, ns.counts.requests),
    h("td", {}, ns.modes.join(", ") || "–"),
    h("td", {}, classification(ns.classification)),
    h("td", {}, Object.entries(ns.plaintext_sources).map(([source, n]) => `${source} (${fmtInt(n)})`).join(", ") || "–")));
    fillTable("mtls-namespaces", namespaces, "No requests in this window.", 8);

    const edges = [...coverage.items].sort((a, b) =>
      (SEVERITY[a.classification] ?? 9) - (SEVERITY[b.classification] ?? 9) ||
      a.source.localeCompare(b.source) || a.destination.localeCompare(b.destination));
    const rows = edges.map((e) => h("tr", {
      dataset: { testid: "mtls-row", source: e.source, destination: e.destination, classification: e.classification },
    },
    h("td", {}, e.source),
    h("td", { title: e.destination }, shortName(e.destination)),
    h("td", { class: "num" }, fmtInt(e.counts.requests)),
    countCell(e.counts.mutual, e.counts.requests),
    countCell(e.counts.plaintext, e.counts.requests),
    countCell(e.counts.unknown, e.counts.requests),
    h("td", {}, e.peer_authentication),
    h("td", {}, e.client_tls || "–"),
    h("td", {}, classification(e.classification))));
    fillTable("mtls-table", rows, "No requests in this window.", 9);
    const shown = coverage.total > coverage.items.length ? `${coverage.items.length} of ${fmtInt(coverage.total)} edges shown. ` : "";
    $("mtls-note").textContent = `${shown}PeerAuthentication is the mode configured where the requests arrive; ` +
      `a PERMISSIVE edge is ready to tighten once at least ${fmtInt(coverage.strict_ready_min_requests)} ` +
      "requests were all seen mutual.";
  }

  // ---------------------------------------------------------------- routes

  function drawRoutes(routes) {
    const used = routes.items.filter((r) => r.requests > 0).length;
    const unused = routes.items.length - used;
    const noRoute = routes.no_route.reduce((sum, n) => sum + n.requests, 0);
    const summary = $("routes-summary");
    summary.dataset.unused = String(unused);
    summary.textContent = `${fmtInt(routes.total)} configured routes: ${fmtInt(used)} served requests, ` +
      `${fmtInt(unused)} unused (dead) in this window · ${fmtInt(noRoute)} requests found no route · ` +
      `${fmtInt(routes.default_route_requests)} requests to hosts without routes`;

    const rows = routes.items.map((r) => {
      const split = r.split
        ? h("div", {},
          r.split.destinations.map((d) => h("div", {},
            `${shortName(d.host)}${d.subset ? ` ${d.subset}` : ""}: ${d.weight} % → ${fmtPercent(d.observed_percent)}`)),
          r.split.drift ? badge("drift", `drift, p = ${r.split.p_value.toPrecision(2)}`)
            : r.split.enough_samples ? badge("compliant", "no drift") : badge("", "too few requests"))
        : "–";
      const methods = Object.entries(r.methods).map(([m, n]) => `${m} ${fmtInt(n)}`).join(", ");
      return h("tr", {
        class: r.requests === 0 ? "unused" : null,
        dataset: { testid: "route-row", route: r.route, requests: String(r.requests), unused: String(r.requests === 0) },
      },
      h("td", {}, h("div", {}, r.route), r.requests === 0 ? badge("unused", "unused") : null),
      h("td", {}, r.hosts.join(", ")),
      h("td", { class: "num" }, fmtInt(r.requests)),
      h("td", { class: "num" }, r.requests ? `${fmtInt(r.errors)} (${fmtShare(r.error_rate)})` : "–"),
      h("td", { class: "num" }, r.latency ? fmtMs(r.latency.p95_ms) : "–"),
      h("td", {}, methods || "–"),
      h("td", {}, fmtTime(r.last_seen)),
      h("td", {}, split));
    });
    fillTable("routes-table", rows, "No configured routes (VirtualService or Ingress rules).", 8);

    const extra = [];
    if (routes.no_route.length) {
      extra.push(h("h3", {}, "Requests without a route (NR)"), h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "authority"), h("th", {}, "source"), h("th", { class: "num" }, "requests"),
          h("th", {}, "example path"))),
        h("tbody", {}, routes.no_route.map((n) => h("tr", {}, h("td", {}, n.authority), h("td", {}, n.source),
          h("td", { class: "num" }, fmtInt(n.requests)), h("td", {}, n.example_path || "–")))))));
    }
    if (routes.unmatched.length) {
      extra.push(h("h3", {}, "Requests no route matched"), h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "authority"), h("th", {}, "method"), h("th", {}, "path"),
          h("th", { class: "num" }, "requests"))),
        h("tbody", {}, routes.unmatched.map((u) => h("tr", {}, h("td", {}, u.authority), h("td", {}, u.method || "–"),
          h("td", {}, u.path || "–"), h("td", { class: "num" }, fmtInt(u.requests))))))));
    }
    $("routes-unrouted").replaceChildren(...extra);
  }

  // ---------------------------------------------------------------- findings

  function drawFindings(findings) {
    const rows = findings.items.map((f) => h("tr", { dataset: { testid: "finding-row", level: f.level, code: f.code } },
      h("td", {}, badge(f.level, f.level)),
      h("td", {}, f.code),
      h("td", {}, f.resource, f.origin ? h("div", { class: "note", title: f.origin }, f.origin.split("/").pop()) : null),
      h("td", {}, f.message),
      h("td", {}, f.fix || "–")));
    fillTable("findings-table", rows, "No findings.", 5);
    $("findings-note").textContent = findings.total > findings.items.length
      ? `The ${findings.items.length} most severe of ${fmtInt(findings.total)} findings are listed.` : "";
  }

  // ---------------------------------------------------------------- recommendations

  const KINDS = { timeout: "Timeout", retries: "Retries", outlier_detection: "Outlier detection" };

  function drawRecommendations(recommendations) {
    const list = $("recommendations-list");
    if (!recommendations.items.length) {
      list.replaceChildren(h("p", { class: "note" },
        "No recommendations: not enough observed traffic, or the configuration already matches it."));
      return;
    }
    list.replaceChildren(...recommendations.items.map((r, i) => h("article", {
      class: "recommendation",
      dataset: { testid: "recommendation", kind: r.kind, target: r.target },
    },
    h("h3", {}, `${KINDS[r.kind] || r.kind} for ${r.target}`),
    h("div", { class: "meta" }, `service ${shortName(r.service)} · confidence ${r.confidence} · changes ${r.resource}`),
    h("div", { class: "formula" }, h("strong", {}, "Value: "), h("code", {}, JSON.stringify(r.value))),
    h("div", { class: "formula" }, r.formula),
    r.note ? h("div", { class: "note" }, r.note) : null,
    h("details", { open: i === 0 }, h("summary", {}, `YAML patch (${r.resource})`),
      h("pre", { class: "patch", dataset: { testid: "recommendation-patch" } }, r.patch)))));
  }

  // ---------------------------------------------------------------- charts

  const CHARTS = [
    ["chart-mtls", "/api/v1/charts/mtls-coverage", { by: "namespace" }],
    ["chart-requests", "/api/v1/charts/requests", {}],
    ["chart-latency", "/api/v1/charts/latency", {}],
    ["chart-split-drift", "/api/v1/charts/split-drift", {}],
  ];

  async function loadCharts(generation) {
    const failures = [];
    await Promise.all(CHARTS.map(async ([id, path, extra]) => {
      const img = $(id);
      try {
        const blob = await (await api(url(path, extra))).blob();
        if (generation !== state.generation) return;
        const old = state.chartUrls.get(id);
        const objectUrl = URL.createObjectURL(blob);
        state.chartUrls.set(id, objectUrl);
        delete img.dataset.loaded;
        img.onload = () => { img.dataset.loaded = "true"; };
        img.src = objectUrl;
        if (old) URL.revokeObjectURL(old);
      } catch (e) {
        failures.push(`${id.replace("chart-", "")}: ${e instanceof ApiError ? e.describe() : e.message}`);
      }
    }));
    if (generation !== state.generation) return;
    sectionError("charts", failures.length ? new Error(failures.join("; ")) : null);
  }

  // ---------------------------------------------------------------- reports

  function drawReports(page) {
    const rows = page.reports.map((r) => {
      const verdict = r.passed === null ? "–" : r.passed ? badge("pass", "passed") : badge("fail", "failed");
      return h("tr", { dataset: { testid: "report-row", id: String(r.id) } },
        h("td", {}, `#${r.id}`, r.schedule_id !== null ? h("span", { class: "note" }, ` (schedule ${r.schedule_id})`) : null),
        h("td", {}, fmtTime(r.created_at)),
        h("td", {}, `${fmtSpan(r.window.start, r.window.end)} to ${fmtTime(r.window.end)}`),
        h("td", { class: "num" }, fmtPercent(r.summary.mtls.percent)),
        h("td", { class: "num" }, fmtInt(r.summary.findings.error)),
        h("td", { class: "num" }, fmtInt(r.summary.findings.warning)),
        h("td", {}, verdict),
        h("td", {}, h("button", {
          type: "button",
          class: "secondary",
          dataset: { testid: "report-open", id: String(r.id) },
          onclick: () => openReport(r.id),
        }, "Open")));
    });
    fillTable("reports-table", rows, "No reports yet: create one, or let a schedule make them.", 8);
  }

  async function reloadReports() {
    try {
      drawReports(await getJson(url("/api/v1/reports", { limit: 50 }, { windowed: false })));
      sectionError("reports", null);
    } catch (e) {
      sectionError("reports", e);
    }
  }

  /** `1h`, `24h`, `7d` as the report endpoint's durations (it takes h, m, s). */
  function reportWindow(window) {
    return window.endsWith("d") ? `${parseInt(window, 10) * 24}h` : window;
  }

  async function createReport() {
    const button = $("create-report");
    const message = $("report-message");
    button.disabled = true;
    message.className = "message";
    message.textContent = "Analyzing…";
    try {
      const response = await api("/api/v1/reports", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ window: reportWindow(state.window) }),
      });
      const created = await response.json();
      message.className = "message good";
      message.textContent = `Report #${created.id} created: mTLS ${fmtPercent(created.summary.mtls.percent)}, ` +
        `${fmtInt(created.summary.findings.error)} error findings.`;
      message.dataset.id = String(created.id);
      await reloadReports();
    } catch (e) {
      message.className = "message bad";
      message.textContent = e instanceof ApiError && e.status === 403
        ? `Not allowed: ${e.message}`
        : `Could not create a report: ${e instanceof ApiError ? e.describe() : e.message}`;
      if (e instanceof ApiError && e.status === 401) refresh();
    } finally {
      button.disabled = false;
    }
  }

  async function openReport(id) {
    const viewer = $("report-viewer");
    const frame = $("report-frame");
    const message = $("report-message");
    try {
      const extra = { format: "html" };
      const blob = await (await api(url(`/api/v1/reports/${id}`, extra, { windowed: false }))).blob();
      const objectUrl = URL.createObjectURL(new Blob([blob], { type: "text/html" }));
      if (state.reportUrl) URL.revokeObjectURL(state.reportUrl);
      state.reportUrl = objectUrl;
      delete viewer.dataset.loaded;
      frame.onload = () => { viewer.dataset.loaded = String(id); };
      frame.src = objectUrl;
      $("report-title").textContent = `Report #${id}`;
      const download = $("report-download");
      download.href = objectUrl;
      download.download = `meshlens-report-${id}.html`;
      viewer.dataset.id = String(id);
      viewer.hidden = false;
      viewer.scrollIntoView({ block: "start" });
    } catch (e) {
      message.className = "message bad";
      message.textContent = `Could not open report #${id}: ${e instanceof ApiError ? e.describe() : e.message}`;
    }
  }

  function closeReport() {
    const viewer = $("report-viewer");
    viewer.hidden = true;
    delete viewer.dataset.id;
    delete viewer.dataset.loaded;
    $("report-frame").removeAttribute("src");
    if (state.reportUrl) URL.revokeObjectURL(state.reportUrl);
    state.reportUrl = null;
  }

  // ---------------------------------------------------------------- start

  function start() {
    state.token = adoptTokenFromFragment();
    $("window-select").addEventListener("change", (e) => {
      state.window = e.target.value;
      refresh();
    });
    $("namespace-select").addEventListener("change", (e) => {
      state.namespace = e.target.value;
      closeReport();
      refresh();
    });
    $("refresh").addEventListener("click", () => refresh());
    $("token-button").addEventListener("click", () => {
      if ($("auth").hidden) showAuth(state.token ? "A token is in use in this tab." : "No token is in use.");
      else if (document.body.dataset.state !== "unauthorized") hideAuth();
    });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      setToken(token);
      refresh();
    });
    $("token-forget").addEventListener("click", () => {
      setToken(null);
      refresh();
    });
    $("create-report").addEventListener("click", createReport);
    $("report-close").addEventListener("click", closeReport);
    window.addEventListener("hashchange", () => {
      const token = adoptTokenFromFragment();
      if (token && token !== state.token) {
        state.token = token;
        refresh();
      }
    });
    refresh();
  }

  start();
})();
