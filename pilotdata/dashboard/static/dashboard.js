/* pilot-data dashboard: polls api/meta, reloads the panels when the server's refresh generation changes,
   and renders every value as text (never as HTML: names, reasons and logs come from users' programs).
   Every URL is relative to the page, so the access token in the page's path goes with each request. */
"use strict";

(function () {
  const STATES = ["New", "Pending", "StagingInput", "Running", "StagingOutput", "Done", "Failed", "Canceled"];
  const STATE_COLORS = {
    New: "#9aa0a6", Pending: "#f2a600", StagingInput: "#7fb3e6", Running: "#1a73e8",
    StagingOutput: "#4fb6ad", Done: "#1e8e3e", Failed: "#d93025", Canceled: "#5f6368",
  };
  const CATEGORY_COLORS = {
    uploaded: "#8e63ce", replicated: "#e37400", staged: "#1a73e8", output: "#9c5b3b",
    linked: "#81c995", cache_hit: "#1e8e3e",
  };
  const UNBOUND = "(unbound)";
  const HOW = { staged: "copied", linked: "linked", cache_hit: "cache hit", output: "uploaded" };

  const ui = {
    run: null,            // null: follow the current run; "*": every run; else a run id
    meta: null,
    loadedGeneration: -1,
    loadedRun: undefined,
    loading: false,
    bytesBy: "pilot",
    bytes: null,
    table: { filters: {}, limit: 50, newest: false, cursors: [null], sizes: [], first: 0, page: null },
    charts: {},
    pilots: [],
    openCU: null,
  };

  // ------------------------------------------------------------------ helpers
  const $ = (selector, root) => (root || document).querySelector(selector);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function size(n) {
    if (n === null || n === undefined) return "-";
    let value = n;
    for (const unit of ["B", "kB", "MB", "GB", "TB"]) {
      if (value < 1000 || unit === "TB") return unit === "B" ? `${Math.round(value)} B` : `${value.toFixed(1)} ${unit}`;
      value /= 1000;
    }
    return `${n} B`;
  }

  function duration(s) {
    if (s === null || s === undefined) return "-";
    if (s === 0) return "0 s";
    if (s < 0.001) return "< 1 ms";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }

  function clock(epoch, withDate) {
    if (epoch === null || epoch === undefined) return "-";
    const d = new Date(epoch * 1000);
    const pad = (x) => String(x).padStart(2, "0");
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
  }

  function shellWord(word) {
    const text = String(word);
    return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
  }

  function count(n) { return (n || 0).toLocaleString("en-US"); }

  function badge(state) { return el("span", { class: `badge s-${state}` }, state); }

  function cuLink(id, text) {
    return el("a", { href: `#cu=${encodeURIComponent(id)}`, class: "cu-link", dataset: { cu: id },
      onclick: (ev) => { ev.preventDefault(); openDetails(id); } }, text || id);
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" },
      el("td", { colspan: columns }, emptyText))]));
  }

  function panelError(panel, err) {
    const box = $(".error", panel);
    if (!box) return;
    box.hidden = !err;
    box.textContent = err ? String(err.message || err) : "";
  }

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
      else if (value !== null && value !== undefined && value !== "") query.append(key, value);
    }
    const qs = query.toString();
    const response = await fetch(`api/${path}${qs ? "?" + qs : ""}`, { cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  function runParam() { return ui.run === null ? "" : ui.run; }

  // ------------------------------------------------------------------ meta and the refresh loop
  function renderMeta(meta) {
    $("#where").textContent = `namespace ${meta.namespace} · ${meta.coordination}`;
    const select = $("#run");
    const current = meta.current_run;
    const options = [el("option", { value: "" }, current ? `current run (${current})` : "current run (none yet)")];
    for (const r of meta.runs.slice().reverse()) {
      options.push(el("option", { value: r.id }, `${r.id}${r.closed ? "" : " (open)"}`));
    }
    options.push(el("option", { value: "*" }, "every run"));
    const chosen = ui.run === null ? "" : ui.run;
    select.replaceChildren(...options);
    if (![...select.options].some((o) => o.value === chosen)) {
      select.append(el("option", { value: chosen }, chosen));
    }
    select.value = chosen;
    const status = meta.refreshed ? `refreshed ${clock(meta.refreshed)}` : "first refresh under way…";
    $("#refresh").textContent = `${status} · every ${meta.interval} s`;
    const banner = $("#banner");
    banner.hidden = !meta.error;
    banner.textContent = meta.error
      ? `Refreshing fails since ${clock(meta.error_since)}: ${meta.error}. The page shows what was known before.`
      : "";
    document.body.dataset.generation = String(meta.generation);
  }

  async function poll() {
    try {
      const meta = await api("meta");
      if (ui.meta === null && meta.fixed_run) ui.run = meta.fixed_run;
      ui.meta = meta;
      renderMeta(meta);
      if (meta.generation !== ui.loadedGeneration || runParam() !== ui.loadedRun) await loadPanels(meta.generation);
    } catch (err) {
      $("#refresh").textContent = `cannot reach the dashboard server: ${err.message}`;
    }
    const every = ui.meta ? Math.max(1000, ui.meta.interval * 1000) : 2000;
    setTimeout(poll, every);
  }

  async function loadPanels(generation) {
    if (ui.loading) return;
    ui.loading = true;
    const run = runParam();
    try {
      await Promise.all([
        load("pilots", run, renderPilots, "#pilots-panel"),
        load("counts", run, renderCounts, "#counts-panel"),
        load("throughput", run, renderThroughput, "#throughput-panel"),
        load("bytes", run, renderBytes, "#bytes-panel"),
        load("transfers", run, renderTransfers, "#transfers-panel"),
        load("failures", run, renderFailures, "#failures-panel"),
        loadTable(),
      ]);
      if (ui.openCU) await loadDetails(ui.openCU);
      ui.loadedGeneration = generation;
      ui.loadedRun = run;
      document.body.dataset.loadedGeneration = String(generation);
    } finally {
      ui.loading = false;
    }
  }

  async function load(name, run, render, panelSelector) {
    const panel = $(panelSelector);
    try {
      render(await api(name, { run }));
      panelError(panel, null);
    } catch (err) {
      panelError(panel, err);
    }
  }

  // ------------------------------------------------------------------ pilots
  function renderPilots(data) {
    ui.pilots = data.pilots;
    const hidden = data.ended_hidden ? ` (${data.ended_hidden} older ones not listed)` : "";
    $("#pilots-summary").textContent = `${data.live} live, ${count(data.slots)} slots, ${count(data.busy)} busy, ` +
      `${count(data.slots - data.busy)} idle, ${count(data.queued)} queued on pilots; ${data.ended} ended${hidden}`;
    const rows = data.pilots.map((p) => el("tr", { dataset: { pilot: p.id }, class: p.live ? "" : "ended" },
      el("td", {}, p.id), el("td", {}, badge(p.state), p.reason ? el("span", { class: "muted" }, ` ${p.reason}`) : null),
      el("td", {}, p.site || "-"), el("td", { class: "num" }, p.slots ?? "-"),
      el("td", { class: "num", dataset: { field: "busy" } }, p.live ? p.busy : "-"),
      el("td", { class: "num", dataset: { field: "idle" } }, p.idle ?? "-"),
      el("td", { class: "num" }, p.live ? p.claimed : "-"), el("td", { class: "num" }, p.live ? p.queued : "-"),
      el("td", { class: "num" }, p.walltime_left === null ? "-" : duration(p.walltime_left)),
      el("td", { class: "num" }, duration(p.lifetime)), el("td", { class: "muted" }, p.resource || "-")));
    fill($("#pilots-table tbody"), rows, "no pilot", 11);
    const select = $("#f-pilot");
    const chosen = select.value;
    const keep = [...select.options].slice(0, 2);
    select.replaceChildren(...keep, ...data.pilots.map((p) => el("option", { value: p.id }, p.id)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    else if (chosen) { select.append(el("option", { value: chosen }, chosen)); select.value = chosen; }
  }

  // ------------------------------------------------------------------ counts
  function countLink(n, place, state) {
    if (!n) return el("span", { class: "zero" }, "0");
    return el("a", { href: "#cus-panel", class: "count-link", onclick: (ev) => {
      ev.preventDefault();
      setFilters({ state: state || "", pilot: place === null ? "" : (place === "" ? "shared" : place) });
    } }, count(n));
  }

  function renderCounts(data) {
    const states = STATES.filter((s) => data.total[s] || data.places.some((p) => p.counts[s]));
    $("#counts-summary").textContent = `${count(data.all)} ComputeUnits; ${count(data.shared_queue)} waiting on the ` +
      "shared queue";
    const bar = $("#state-bar");
    bar.replaceChildren(...states.map((s) => {
      const part = el("span", { class: `bar-part s-${s}`, title: `${s}: ${count(data.total[s])}` });
      part.style.width = `${(100 * (data.total[s] || 0)) / Math.max(1, data.all)}%`;
      return part;
    }));
    const head = el("tr", {}, el("th", {}, "where"), el("th", {}, "site"), el("th", {}, "pilot state"),
      ...states.map((s) => el("th", { class: "num" }, s)), el("th", { class: "num" }, "all"));
    $("#counts-table thead").replaceChildren(head);
    const rows = data.places.map((p) => {
      const unbound = p.place === UNBOUND;  // never bound: no place to filter the table by
      const cell = (n, state) => (unbound ? count(n || 0) : countLink(n, p.place, state));
      return el("tr", { dataset: { place: p.place } },
        el("td", {}, p.label), el("td", {}, p.site || "-"), el("td", {}, p.pilot_state || "-"),
        ...states.map((s) => el("td", { class: "num", dataset: { place: p.place, state: s } }, cell(p.counts[s], s))),
        el("td", { class: "num", dataset: { place: p.place, state: "all" } }, cell(p.total, "")));
    });
    fill($("#counts-table tbody"), rows, "no ComputeUnit yet", states.length + 4);
    $("#counts-table tfoot").replaceChildren(el("tr", { class: "total" }, el("td", {}, "total"), el("td"), el("td"),
      ...states.map((s) => el("td", { class: "num", dataset: { place: "*", state: s } },
        countLink(data.total[s], null, s))),
      el("td", { class: "num", dataset: { place: "*", state: "all" } }, count(data.all))));
  }

  // ------------------------------------------------------------------ charts
  function chart(id, config) {
    if (typeof Chart === "undefined") return null;
    let c = ui.charts[id];
    if (!c) {
      c = new Chart($(`#${id}`), config);
      ui.charts[id] = c;
    } else {
      c.data.labels = config.data.labels;
      c.data.datasets = config.data.datasets;
      c.update("none");
    }
    return c;
  }

  function renderThroughput(data) {
    const minutes = data.bucket / 60;
    $("#throughput-summary").textContent = data.total
      ? `${count(data.total)} ComputeUnits ended, per ${minutes === 1 ? "minute" : minutes + " minutes"}`
      : "no ComputeUnit ended yet";
    const labels = data.start.map((t) => clock(t).slice(0, 5));
    const datasets = Object.entries(data.series).map(([state, values]) => ({
      label: state, data: values, backgroundColor: STATE_COLORS[state] || "#999", stack: "ended",
    }));
    chart("throughput-chart", {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "ended" } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function renderBytes(data) {
    ui.bytes = data;
    const t = data.total;
    const share = t.inputs ? ` (${Math.round((100 * t.saved) / t.inputs)}% of the inputs)` : "";
    $("#bytes-summary").textContent = `moved ${size(t.moved)}; inputs ${size(t.inputs)}, of which not moved ` +
      `${size(t.saved)}${share}` + (t.linked_replicas ? `; replicas made as links ${size(t.linked_replicas)}` : "");
    drawBytes();
  }

  function drawBytes() {
    const data = ui.bytes;
    if (!data) return;
    const rows = ui.bytesBy === "pilot" ? data.by_pilot : data.by_site;
    const cats = data.categories;
    chart("bytes-chart", {
      type: "bar",
      data: {
        labels: rows.map((r) => r.name),
        datasets: cats.map((c) => ({
          label: `${c.label}${c.moves ? "" : " (not moved)"}`, data: rows.map((r) => r[c.id]),
          backgroundColor: CATEGORY_COLORS[c.id] || "#999", stack: c.moves ? "moved" : "not moved",
        })),
      },
      options: {
        indexAxis: "y", animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: true, beginAtZero: true, ticks: { callback: (v) => size(v) } }, y: { stacked: true } },
        plugins: { legend: { position: "bottom" },
          tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${size(ctx.raw)}` } } },
      },
    });
    $("#bytes-table thead").replaceChildren(el("tr", {}, el("th", {}, ui.bytesBy),
      ...cats.map((c) => el("th", { class: "num" }, c.label)), el("th", { class: "num" }, "moved"),
      el("th", { class: "num" }, "not moved")));
    const body = rows.map((r) => el("tr", { dataset: { name: r.name } }, el("td", {}, r.name),
      ...cats.map((c) => el("td", { class: "num", dataset: { category: c.id } }, size(r[c.id]))),
      el("td", { class: "num", dataset: { category: "moved" } }, size(r.moved)),
      el("td", { class: "num", dataset: { category: "saved" } }, size(r.saved))));
    body.push(el("tr", { class: "total", dataset: { name: "*" } }, el("td", {}, "total"),
      ...cats.map((c) => el("td", { class: "num", dataset: { category: c.id } }, size(data.total[c.id]))),
      el("td", { class: "num", dataset: { category: "moved" } }, size(data.total.moved)),
      el("td", { class: "num", dataset: { category: "saved" } }, size(data.total.saved))));
    $("#bytes-table tbody").replaceChildren(...body);
  }

  // ------------------------------------------------------------------ transfers, failures
  function renderTransfers(data) {
    fill($("#replicas-table tbody"), data.pending_replicas.map((r) => el("tr", { dataset: { du: r.du } },
      el("td", {}, r.name ? `${r.name} (${r.du})` : r.du), el("td", {}, r.pd), el("td", {}, clock(r.since)),
      el("td", { class: "num" }, r.bytes ? size(r.bytes) : "-"), el("td", {}, r.du_state))),
    "none", 5);
    fill($("#staging-table tbody"), data.staging.map((s) => el("tr", { dataset: { place: s.place } },
      el("td", {}, s.label), el("td", {}, s.site || "-"), el("td", { class: "num" }, s.staging_input),
      el("td", { class: "num" }, s.staging_output))), "none", 4);
    $("#not-visible").replaceChildren(...data.not_visible.map((t) => el("li", {}, t)));
    $("#scan-note").textContent = data.scanned
      ? `DataUnits last read at ${clock(data.scanned)} (in ${duration(data.scan_seconds)})` : "DataUnits not read yet";
  }

  function renderFailures(data) {
    $("#failures-summary").textContent = data.failed ? `${count(data.failed)} failed` : "nothing failed";
    fill($("#failures-table tbody"), data.groups.map((g) => el("tr", { class: "failure" },
      el("td", { class: "reason" }, g.reason),
      el("td", { class: "num" }, el("a", { href: "#cus-panel", class: "count-link", onclick: (ev) => {
        ev.preventDefault(); setFilters({ state: "Failed", pilot: "" });
      } }, count(g.count))),
      el("td", {}, ...g.examples.flatMap((id, i) => [i ? " " : null, cuLink(id)])))), "nothing failed", 3);
  }

  // ------------------------------------------------------------------ the table
  function setFilters(changes) {
    const f = ui.table.filters;
    Object.assign(f, changes);
    $("#f-state").value = f.state || "";
    const pilotSelect = $("#f-pilot");
    if (f.pilot && ![...pilotSelect.options].some((o) => o.value === f.pilot)) {
      pilotSelect.append(el("option", { value: f.pilot }, f.pilot));
    }
    pilotSelect.value = f.pilot || "";
    resetPages();
    loadTable().then(() => $("#cus-panel").scrollIntoView({ block: "start" }));
  }

  function readFilters() {
    ui.table.filters = { state: $("#f-state").value, pilot: $("#f-pilot").value, site: $("#f-site").value.trim(),
      name: $("#f-name").value.trim() };
    ui.table.limit = Number($("#f-limit").value);
    ui.table.newest = $("#f-newest").checked;
    resetPages();
  }

  function resetPages() { ui.table.cursors = [null]; ui.table.sizes = []; ui.table.first = 0; }

  async function loadTable() {
    const t = ui.table;
    const panel = $("#cus-panel");
    const f = t.filters;
    try {
      const page = await api("cus", { run: runParam(), state: f.state ? [f.state] : [], pilot: f.pilot, site: f.site,
        name: f.name, limit: t.limit, newest: t.newest ? "1" : "", after: t.cursors[t.cursors.length - 1] });
      panelError(panel, null);
      renderTable(page);
    } catch (err) {
      panelError(panel, err);
    }
  }

  function renderTable(page) {
    const t = ui.table;
    t.page = page;
    fill($("#cus-table tbody"), page.rows.map((r) => el("tr", { dataset: { cu: r.id, state: r.state } },
      el("td", {}, cuLink(r.id)), el("td", {}, r.name || "-"), el("td", {}, badge(r.state)),
      el("td", {}, r.where || "-"), el("td", {}, r.site || "-"), el("td", { class: "num" }, r.attempt),
      el("td", { class: "num" }, duration(r.queue_wait)), el("td", { class: "num" }, duration(r.duration)),
      el("td", { class: "num" }, r.exit_code ?? "-"), el("td", { class: "reason" }, r.reason || ""))),
    "no ComputeUnit matches", 10);
    const first = page.rows.length ? t.first + 1 : t.first;
    const last = t.first + page.rows.length;
    $("#page-info").textContent = `${count(first)}–${count(last)} of ${count(page.total)}`;
    $("#page-prev").disabled = t.cursors.length <= 1;
    $("#page-first").disabled = t.cursors.length <= 1;
    $("#page-next").disabled = last >= page.total || !page.cursor;
  }

  // ------------------------------------------------------------------ one ComputeUnit
  function openDetails(id) {
    ui.openCU = id;
    if (location.hash !== `#cu=${encodeURIComponent(id)}`) history.pushState(null, "", `#cu=${encodeURIComponent(id)}`);
    $("#details").hidden = false;
    loadDetails(id);
  }

  function closeDetails() {
    ui.openCU = null;
    $("#details").hidden = true;
    if (location.hash.startsWith("#cu=")) history.pushState(null, "", location.pathname + location.search);
  }

  async function loadDetails(id) {
    const aside = $("#details");
    try {
      const d = await api(`cu/${encodeURIComponent(id)}`);
      if (ui.openCU !== id) return;
      panelError(aside, null);
      renderDetails(d);
    } catch (err) {
      if (ui.openCU === id) panelError(aside, err);
    }
  }

  function renderDetails(d) {
    $("#details-title").textContent = `ComputeUnit ${d.name ? d.name + " " : ""}(${d.id})`;
    const desc = d.description || {};
    const command = d.description ? [desc.executable, ...(desc.arguments || [])].map(shellWord).join(" ") : "(record removed)";
    const fields = [["state", badge(d.state)], ["reason", d.reason || "-"], ["exit code", d.exit_code ?? "-"],
      ["where", d.where || "-"], ["site", d.site || "-"], ["host", d.host || "-"], ["attempt", d.attempt],
      ["run", d.run || "-"], ["command", command], ["slots", d.slots ?? desc.number_of_processes ?? "-"],
      ["queue wait", duration(d.queue_wait)], ["run time", duration(d.duration)], ["sandbox", d.sandbox || "-"],
      ["placement", d.placement || "-"]];
    $("#details-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k),
      el("dd", { dataset: { field: k } }, v)]));
    const logs = d.logs;
    for (const stream of ["stderr", "stdout"]) {
      const box = $(`#details-${stream}`);
      const s = logs[stream];
      if (!logs.available) box.textContent = `(${logs.note})`;
      else if (s.text === null) box.textContent = `(${s.path}: ${s.note})`;
      else if (s.text === "") box.textContent = "(empty)";
      else box.textContent = (s.truncated ? `… (last ${size(s.text.length)} of ${size(s.size)})\n` : "") + s.text;
    }
    fill($("#details-events tbody"), d.events.filter((e) => e.to).map((e) => {
      const detail = Object.entries(e.detail || {}).filter(([k, v]) =>
        ["reason", "exit_code", "host", "retry"].includes(k) && v !== null && v !== "").map(([k, v]) => `${k}=${v}`);
      return el("tr", {}, el("td", {}, clock(e.time, true)), el("td", {}, badge(e.to)), el("td", {}, e.pilot || "-"),
        el("td", { class: "num" }, e.attempt ?? "-"), el("td", {}, detail.join(", ")));
    }), "no event recorded", 5);
    fill($("#details-inputs tbody"), d.inputs.map((t) => el("tr", {}, el("td", {}, t.du),
      el("td", {}, HOW[t.category] || t.category), el("td", {}, t.source || "-"), el("td", { class: "num" }, size(t.bytes)),
      el("td", { class: "num" }, t.seconds.toFixed(2)), el("td", {}, t.pilot || "-"))), "none recorded", 6);
    fill($("#details-outputs tbody"), d.outputs.map((t) => el("tr", {}, el("td", {}, t.du), el("td", {}, t.destination || "-"),
      el("td", { class: "num" }, size(t.bytes)), el("td", { class: "num" }, t.seconds.toFixed(2)))), "none", 4);
    const b = d.bytes;
    $("#details-bytes").textContent = `moved ${size(b.moved)} (staged ${size(b.staged)}, output ${size(b.output)}); ` +
      `not moved ${size(b.saved)} (linked ${size(b.linked)}, cache hits ${size(b.cache_hit)})`;
    $("#details-description").textContent = d.description ? JSON.stringify(d.description, null, 2) : "(record removed)";
  }

  function fromHash() {
    const m = location.hash.match(/^#cu=(.+)$/);
    if (m) openDetails(decodeURIComponent(m[1]));
    else if (ui.openCU) { ui.openCU = null; $("#details").hidden = true; }
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    if (typeof Chart !== "undefined") {
      Chart.defaults.animation = false;
      Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    }
    const stateSelect = $("#f-state");
    stateSelect.append(...STATES.map((s) => el("option", { value: s }, s)));
    $("#run").addEventListener("change", (ev) => {
      const v = ev.target.value;
      ui.run = v === "" ? null : v;
      resetPages();
      loadPanels(ui.meta ? ui.meta.generation : 0);
    });
    $("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); readFilters(); loadTable(); });
    for (const id of ["#f-state", "#f-pilot", "#f-limit", "#f-newest"]) {
      $(id).addEventListener("change", () => { readFilters(); loadTable(); });
    }
    $("#f-reset").addEventListener("click", () => {
      $("#filters").reset();
      readFilters();
      loadTable();
    });
    $("#page-next").addEventListener("click", () => {
      const t = ui.table;
      if (!t.page || !t.page.cursor) return;
      t.first += t.page.rows.length;
      t.cursors.push(t.page.cursor);
      t.sizes.push(t.page.rows.length);
      loadTable();
    });
    $("#page-prev").addEventListener("click", () => {
      const t = ui.table;
      if (t.cursors.length <= 1) return;
      t.cursors.pop();
      t.first -= t.sizes.pop() || 0;
      loadTable();
    });
    $("#page-first").addEventListener("click", () => { resetPages(); loadTable(); });
    $("#bytes-by-pilot").addEventListener("click", () => { ui.bytesBy = "pilot"; toggleBytes(); });
    $("#bytes-by-site").addEventListener("click", () => { ui.bytesBy = "site"; toggleBytes(); });
    $("#details-close").addEventListener("click", closeDetails);
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && ui.openCU) closeDetails(); });
    window.addEventListener("popstate", fromHash);
    readFilters();
    fromHash();
    poll();
  }

  function toggleBytes() {
    $("#bytes-by-pilot").classList.toggle("on", ui.bytesBy === "pilot");
    $("#bytes-by-site").classList.toggle("on", ui.bytesBy === "site");
    drawBytes();
  }

  init();
})();
