// graphstore status page: fills the page from the JSON API and polls it. No build step.
// Everything from the API is inserted as text (textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const body = document.body;
  const page = body.dataset.page;
  const api = body.dataset.api;
  const content = document.getElementById("content");
  const statusLine = document.getElementById("status");
  const query = new URLSearchParams(window.location.search);

  // -- helpers ------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
    if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
    if (s < 120) return `${s.toFixed(2)} s`;
    if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function clock(ts) {
    if (!ts) return "–";
    return new Date(ts * 1000).toLocaleTimeString();
  }

  function num(n, digits) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits ?? 2 });
  }

  function bar(used, total) {
    const fraction = total > 0 ? Math.min(1, used / total) : 0;
    const fill = el("span");
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    const outer = el("span", { class: fraction > 0.8 ? "bar high" : "bar", role: "meter",
      "aria-valuemin": "0", "aria-valuemax": String(total), "aria-valuenow": String(used) },
    fill);
    return el("span", {}, outer, el("span", { class: "bar-text",
      text: `${bytes(used)} / ${bytes(total)} (${(fraction * 100).toFixed(0)}%)` }));
  }

  function chip(state, text) {
    return el("span", { class: `chip state-${state}`, "data-state": state, text });
  }

  function table(columns, rows, emptyText) {
    const head = el("tr", {}, ...columns.map(c => el("th", { class: c.num ? "num" : null,
      text: c.title })));
    const tbody = el("tbody");
    for (const row of rows) {
      const tr = el("tr", row.attrs || {});
      for (const c of columns) {
        const value = c.render(row.data);
        const td = el("td", { class: c.num ? "num" : (c.mono ? "mono" : null) });
        td.append(value instanceof Node ? value : String(value ?? "–"));
        tr.append(td);
      }
      tbody.append(tr);
    }
    if (!rows.length) {
      tbody.append(el("tr", { class: "empty-row" }, el("td", { colspan: String(columns.length),
        class: "empty", text: emptyText || "nothing yet" })));
    }
    return el("table", {}, el("thead", {}, head), tbody);
  }

  function card(label, value, detail, field) {
    return el("div", { class: "card", "data-card": field },
      el("div", { class: "label", text: label }),
      el("div", { class: "value", "data-field": field }, value),
      detail ? el("div", { class: "detail" }, detail) : null);
  }

  function apiUrl(path, keep) {
    const params = new URLSearchParams();
    for (const name of keep || []) {
      if (query.has(name)) params.set(name, query.get(name));
    }
    const text = params.toString();
    return text ? `${path}?${text}` : path;
  }

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  // -- pages --------------------------------------------------------------------------
  const TASK_STATES = ["waiting", "queued", "assigned", "done", "failed"];
  const STATE_NAMES = { assigned: "running" };

  function renderOverview(d) {
    const total = d.resources.total, used = d.resources.used;
    const tasks = d.tasks.by_state;
    const chips = el("div", { class: "chips" }, ...TASK_STATES.map(
      s => chip(s, `${STATE_NAMES[s] || s} ${num(tasks[s] || 0, 0)}`)));
    const cards = el("div", { class: "cards" },
      card("Workers", num(d.workers, 0),
        `${num(d.nodes, 0)} node(s), ${num(d.drivers, 0)} driver(s)`, "workers"),
      card("CPUs in use", `${num(used.CPU || 0)} / ${num(total.CPU || 0)}`,
        null, "cpus"),
      card("Live tasks", num(d.tasks.live, 0),
        `${num(d.tasks.submitted, 0)} submitted, ${num(d.tasks.retried, 0)} retried`,
        "tasks"),
      card("Objects", num(d.objects.count, 0), `${bytes(d.objects.bytes)} in all`,
        "objects"),
      card("Object store", bytes(d.store.used), bar(d.store.used, d.store.capacity),
        "store"),
      card("Spilled", bytes(d.objects.spilled_bytes),
        `${num(d.objects.spilled_objects, 0)} objects now; ` +
        `${bytes(d.store.spilled_bytes_total)} spilled since start`, "spilled"),
    );
    const resources = Object.keys(total).filter(k => !k.startsWith("node:")).sort();
    return [
      cards,
      el("h2", { text: "Tasks by state" }), chips,
      el("h2", { text: "Resources" }),
      table([{ title: "resource", render: r => r },
        { title: "in use", num: true, render: r => num(used[r] || 0) },
        { title: "total", num: true, render: r => num(total[r]) }],
      resources.map(r => ({ data: r, attrs: { "data-resource": r } }))),
      el("h2", { text: "Objects" }),
      table([{ title: "where", render: r => r[0] },
        { title: "bytes", num: true, render: r => bytes(r[1]) }],
      [["inline in the scheduler", d.objects.inline_bytes],
        ["in worker stores", d.objects.stored_bytes],
        ["spilled (a copy on disk or S3)", d.objects.spilled_bytes]].map(r => ({ data: r }))),
      el("p", { class: "detail",
        text: `Scheduler ${d.scheduler.address}, up ${seconds(d.scheduler.uptime)}; ` +
          `task graph holds ${num(d.graph.nodes, 0)} nodes.` }),
    ];
  }

  function renderWorkers(d) {
    const columns = [
      { title: "worker", mono: true, render: w => `pid ${w.pid} @ ${w.hostname}` },
      { title: "node", mono: true, render: w => w.node },
      { title: "CPUs", num: true, render: w => num(w.num_cpus) },
      { title: "running", num: true, render: w => num(w.running, 0) },
      { title: "queued", num: true, render: w => num(w.queued, 0) },
      { title: "store used / capacity", render: w => bar(w.store_used, w.store_capacity) },
      { title: "arenas: allocated / size", render: w => bar(w.store_arena_allocated,
        w.store_arena_bytes) },
      { title: "objects", num: true, render: w => num(w.store_objects, 0) },
      { title: "spilled", num: true, render: w => bytes(w.spilled_bytes) },
      { title: "restored", num: true, render: w => bytes(w.restored_bytes) },
      { title: "last heartbeat", render: w => w.heartbeat_age === null ? "none yet"
        : `${seconds(w.heartbeat_age)} ago` },
      { title: "address", mono: true, render: w => w.address },
    ];
    const rows = d.workers.map(w => ({ data: w, attrs: { "data-worker-pid": String(w.pid),
      class: "worker-row" } }));
    const out = [el("p", { text: `${num(d.total, 0)} worker(s).` }),
      table(columns, rows, "no workers have joined")];
    const errors = d.workers.filter(w => w.last_spill_error);
    for (const w of errors) {
      out.push(el("div", { class: "note warn",
        text: `worker pid ${w.pid}: last spill error: ${w.last_spill_error}` }));
    }
    return out;
  }

  const openFailures = new Set();

  function renderTasks(d) {
    const current = d.state;
    const filters = el("div", { class: "filters" }, "show: ",
      el("a", { href: "/tasks", "aria-current": current ? null : "page", text: "all" }),
      ...TASK_STATES.map(s => el("a", { href: `/tasks?state=${s}`,
        "aria-current": current === s ? "page" : null,
        text: `${STATE_NAMES[s] || s} (${num(d.by_state[s] || 0, 0)})` })));
    const columns = [
      { title: "task", render: t => t.name },
      { title: "state", render: t => chip(t.state, STATE_NAMES[t.state] || t.state) },
      { title: "worker", mono: true, render: t => t.pid ? `pid ${t.pid}` : "–" },
      { title: "node", mono: true, render: t => t.node },
      { title: "submitted", render: t => clock(t.submitted_at) },
      { title: "duration", num: true, render: t => seconds(t.duration) },
      { title: "error", render: t => t.error || "" },
    ];
    const rows = d.tasks.map(t => ({ data: t, attrs: { "data-task-id": t.id,
      "data-task-state": t.state, class: "task-row" } }));
    const failures = d.failures.map(f => {
      const details = el("details", { "data-failure-id": f.id, open: openFailures.has(f.id)
        ? "" : null },
      el("summary", {}, el("strong", { text: f.name }), ` ${clock(f.finished_at)}: `,
        f.error || "failed"),
      el("pre", { class: "traceback", text: f.traceback || "(no traceback)" }));
      details.addEventListener("toggle", () => {
        if (details.open) openFailures.add(f.id); else openFailures.delete(f.id);
      });
      return details;
    });
    return [filters,
      el("h2", { text: current ? `Newest ${STATE_NAMES[current] || current} tasks`
        : "Newest tasks" }),
      table(columns, rows, current ? `no ${current} tasks among the recent ones`
        : "no tasks yet"),
      el("h2", { text: "Failures" }),
      failures.length ? el("div", { class: "failures" }, ...failures)
        : el("p", { class: "empty", text: "no failed tasks among the recent ones" })];
  }

  function renderObjects(d) {
    const columns = [
      { title: "object", mono: true, render: o => o.id },
      { title: "size", num: true, render: o => bytes(o.size) },
      { title: "state", render: o => chip(o.state, o.state) },
      { title: "where", render: o => o.where.join("; ") || "–" },
      { title: "spilled", render: o => o.spilled ? chip("spilled", "spilled") : "no" },
      { title: "produced by", render: o => o.producer || "put" },
      { title: "refs held", num: true, render: o => num(o.holders, 0) },
      { title: "pending tasks", num: true, render: o => num(o.pending_tasks, 0) },
      { title: "inside objects", num: true, render: o => num(o.contained_in, 0) },
    ];
    const rows = d.objects.map(o => ({ data: o, attrs: { "data-object-id": o.id,
      class: "object-row" } }));
    return [el("p", { text: `${num(d.count, 0)} live objects, ${bytes(d.bytes)}; ` +
        `${bytes(d.spilled_bytes)} spilled. Largest first.` }),
    table(columns, rows, "no objects")];
  }

  function renderActors(d) {
    const columns = [
      { title: "actor", mono: true, render: a => a.actor_id },
      { title: "class", render: a => a.class_name },
      { title: "name", render: a => a.name || "–" },
      { title: "state", render: a => a.state },
      { title: "worker", mono: true, render: a => a.worker },
      { title: "node", mono: true, render: a => a.node },
      { title: "pending calls", num: true, render: a => num(a.pending_calls, 0) },
      { title: "restarts", num: true, render: a => num(a.restarts, 0) },
    ];
    const out = [];
    if (!d.actors.length) {
      out.push(el("div", { class: "note", "data-note": "no-actors",
        text: "No actors in this cluster." }));
    }
    out.push(table(columns, d.actors.map(a => ({ data: a, attrs: { class: "actor-row" } })),
      "no actors"));
    return out;
  }

  // The graph page keeps its picture between polls; it reloads it when the graph changes.
  let graphParts = null;

  function renderGraph(d) {
    const info = d.graph;
    if (graphParts === null) {
      const legend = el("div", { class: "legend" }, "tasks: ",
        ...TASK_STATES.map(s => chip(s, STATE_NAMES[s] || s)), " objects: ",
        ...["pending", "ready", "error", "freed"].map(s => chip(s, s)),
        chip("spilled", "spilled"),
        query.get("critical") ? chip("critical", "critical path") : null);
      const image = el("img", { id: "graph-image", alt: "task graph" });
      graphParts = {
        summary: el("p", { id: "graph-summary" }),
        note: el("div", { id: "graph-note", class: "note", hidden: "" }),
        critical: el("div", { id: "critical-path", hidden: "" }),
        legend, image, digest: null,
        frame: el("div", { class: "graph-frame" }, image),
        empty: el("p", { class: "empty", id: "graph-empty",
          text: "No tasks or objects yet." }),
      };
      image.addEventListener("load", () => {
        body.dataset.graphDigest = graphParts.digest;
        if (graphParts.note.classList.contains("warn")) {
          graphParts.note.classList.remove("warn");
          graphParts.note.hidden = true;
        }
      });
      image.addEventListener("error", () => {
        graphParts.note.hidden = false;
        graphParts.note.classList.add("warn");
        graphParts.note.textContent = "The picture could not be rendered (is Graphviz " +
          "installed on the scheduler's host?). The graph is at /api/graph and " +
          "/api/graph.dot.";
      });
      content.replaceChildren(graphParts.summary, graphParts.note, graphParts.critical,
        legend, graphParts.frame, graphParts.empty);
    }
    const parts = graphParts;
    parts.summary.textContent = `${num(d.nodes.length, 0)} of ${num(info.total_nodes, 0)} ` +
      `nodes, ${num(d.edges.length, 0)} edges.`;
    if (info.truncated) {
      parts.note.hidden = false;
      parts.note.classList.remove("warn");
      parts.note.textContent = `Showing the ${num(d.nodes.length, 0)} most recent of ` +
        `${num(info.total_nodes, 0)} nodes (truncated; ?limit= shows up to 500).`;
    } else if (!parts.note.classList.contains("warn")) {
      parts.note.hidden = true;
    }
    parts.empty.hidden = d.nodes.length > 0;
    parts.frame.hidden = d.nodes.length === 0;
    renderCriticalPath(parts.critical, info);
    if (!info.renderable) {
      parts.note.hidden = false;
      parts.note.classList.add("warn");
      parts.note.textContent = "Graphviz (dot) is not installed on the scheduler's host, " +
        "so the graph cannot be drawn here; install it (apt-get install graphviz). " +
        "The graph is at /api/graph and /api/graph.dot.";
      return null;
    }
    if (d.nodes.length && parts.digest !== info.digest) {
      parts.digest = info.digest;
      const q = new URLSearchParams({ limit: Math.min(info.limit, 500),
        digest: info.digest });
      if (query.get("critical")) q.set("critical", query.get("critical"));
      parts.image.src = `/api/graph.svg?${q}`;
    }
    return null;
  }

  // -- status: task stream, progress, workers' load -----------------------------------
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STREAM_MS = 1000;
  const STREAM_KEEP = 20000;      // entries the page holds at most
  const streamWindow = Math.min(300, Math.max(5, Number(query.get("window")) || 30));
  const stream = { since: 0, entries: [], workers: {}, note: null };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // A stable colour per function name: its FNV-1a hash picks from a categorical palette
  // (no reds or oranges: those mark transfers and spills), the same on every poll.
  const PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#7b4173", "#3182bd"];

  function colourOf(name) {
    let hash = 2166136261;
    for (let i = 0; i < name.length; i += 1) {
      hash ^= name.charCodeAt(i);
      hash = Math.imul(hash, 16777619) >>> 0;
    }
    hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b) >>> 0;   // mix the low bits
    hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35) >>> 0;
    return PALETTE[((hash ^ (hash >>> 16)) >>> 0) % PALETTE.length];
  }

  async function loadStatus() {
    const [progress, load, streamData] = await Promise.all([
      fetchJson(apiUrl(api, ["limit"])),
      fetchJson("/api/workers/load"),
      fetchJson(`/api/task-stream?since=${stream.since}`),
    ]);
    if (streamData.seq < stream.since) {   // the scheduler restarted: start again
      stream.entries = [];
    }
    stream.since = streamData.seq;
    Object.assign(stream.workers, streamData.workers);
    stream.note = streamData.note || null;
    const horizon = streamData.now - 300;
    stream.entries = stream.entries.concat(streamData.entries)
      .filter(e => e.stop >= horizon).slice(-STREAM_KEEP);
    stream.now = streamData.now;
    return { progress, load };
  }

  function renderStatus(d) {
    return [
      el("h2", { text: `Task stream (last ${streamWindow} s)` }),
      renderStream(),
      el("h2", { text: "Progress" }),
      renderProgress(d.progress),
      el("h2", { text: `Workers: CPU and memory (last ${Math.round(d.load.seconds / 60)} min)` }),
      renderLoad(d.load),
    ];
  }

  function rowKey(e) { return `${e.worker}:${e.pid}`; }

  function rowLabel(key) {
    const [workerId, pid] = key.split(":");
    const w = stream.workers[workerId] || {};
    if (w.departed) return `pid ${pid} (worker gone)`;
    if (String(w.pid) === pid) return `worker pid ${pid} @ ${w.hostname || "?"}`;
    return `pid ${pid} (of worker ${w.pid})`;
  }

  function renderStream() {
    const width = Math.max(600, content.clientWidth - 2), labelWidth = 190;
    const rowHeight = 22, axis = 22;
    const end = stream.now || Date.now() / 1000;
    const start = end - streamWindow;
    const visible = stream.entries.filter(e => e.stop >= start);
    const keys = [...new Set(stream.entries.map(rowKey))].sort();
    const rows = new Map(keys.map((k, i) => [k, i]));
    const height = axis + Math.max(1, keys.length) * rowHeight + 4;
    const plot = width - labelWidth - 8;
    const x = t => labelWidth + Math.max(0, (t - start) / streamWindow * plot);
    const chart = svg("svg", { id: "task-stream", class: "stream", width, height,
      viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `task stream: ${visible.length} bars on ${keys.length} rows` },
    svg("defs", {}, svg("pattern", { id: "hatch-spill", width: 6, height: 6,
      patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
    svg("rect", { width: 6, height: 6, fill: "#fdd0a2" }),
    svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#e6550d", "stroke-width": 3 }))));
    // The time axis: a grid line every round number of seconds before now.
    const step = [1, 2, 5, 10, 15, 30, 60].find(v => v >= streamWindow / 6) || 60;
    for (let ago = 0; ago <= streamWindow; ago += step) {
      const gx = x(end - ago);
      chart.append(svg("line", { x1: gx, x2: gx, y1: axis - 4, y2: height, class: "grid" }),
        svg("text", { x: gx, y: 12, class: "tick", "text-anchor": ago === 0 ? "end" : "middle",
          text: ago === 0 ? "now" : `-${ago} s` }));
    }
    keys.forEach((key, i) => chart.append(svg("text", { x: 4, y: axis + i * rowHeight + 15,
      class: "row-label", text: rowLabel(key) })));
    for (const e of visible) {
      const row = rows.get(rowKey(e));
      const left = x(Math.max(e.start, start));
      const w = Math.max(1.5, x(e.stop) - left);
      const moving = e.kind === "transfer" || e.kind === "fetch";
      const disk = e.kind === "spill" || e.kind === "restore";
      const y = axis + row * rowHeight + (moving || disk ? 9 : 2);
      const h = moving || disk ? 10 : rowHeight - 4;
      const title = `${e.name} (${e.kind}) ${seconds(e.stop - e.start)}` +
        (e.nbytes ? `, ${bytes(e.nbytes)}` : "") + (e.peer ? ` ${e.peer}` : "");
      chart.append(svg("rect", { x: left.toFixed(1), y, width: w.toFixed(1), height: h,
        rx: 2, class: `stream-bar kind-${e.kind}`, "data-kind": e.kind, "data-name": e.name,
        fill: disk ? "url(#hatch-spill)" : moving ? "#d62728" : colourOf(e.name) },
      svg("title", { text: title })));
    }
    const names = [...new Set(visible.filter(e => e.kind === "task" || e.kind === "actor-call")
      .map(e => e.name))].sort().slice(0, 30);
    const legend = el("div", { class: "legend stream-legend" },
      ...names.map(n => { const swatch = el("span", { class: "swatch" });
        swatch.style.background = colourOf(n);
        return el("span", { class: "legend-item", "data-name": n }, swatch, n); }),
      el("span", { class: "legend-item" }, el("span", { class: "swatch transfer" }),
        "transfer / fetch"),
      el("span", { class: "legend-item" }, el("span", { class: "swatch spill" }),
        "spill / restore"));
    const out = el("div", { class: "stream-frame" }, chart);
    const parts = [out, legend];
    if (stream.note) {
      parts.unshift(el("div", { class: "note", "data-note": "no-stream", text:
        `No task stream: ${stream.note}.` }));
    } else if (!keys.length) {
      parts.push(el("p", { class: "empty", text: "no task has run yet" }));
    }
    return el("div", { id: "stream-pane" }, ...parts);
  }

  const PROGRESS_PARTS = [["done", "done"], ["assigned", "running"], ["queued", "queued"],
    ["failed", "failed"]];

  function renderProgress(d) {
    if (!d.functions.length) return el("p", { class: "empty", text: "no tasks yet" });
    const rows = d.functions.map(f => {
      const queued = f.queued + f.waiting;
      const parts = { done: f.done, assigned: f.assigned, queued, failed: f.failed };
      const barNode = el("div", { class: "progress-bar", role: "img",
        "aria-label": `${f.name}: ${f.done} of ${f.total} done` });
      for (const [state] of PROGRESS_PARTS) {
        if (!parts[state]) continue;
        const piece = el("span", { class: `state-${state}`, "data-part": state });
        piece.style.width = `${(parts[state] / Math.max(1, f.total) * 100).toFixed(2)}%`;
        barNode.append(piece);
      }
      const counts = el("span", { class: "progress-counts" },
        ...PROGRESS_PARTS.map(([state, label]) => el("span", { "data-count": state,
          class: parts[state] ? null : "zero", text: `${label} ${num(parts[state], 0)}` })));
      const name = el("span", { class: "progress-name", text: f.name });
      name.prepend(el("span", { class: "swatch" }));
      name.firstChild.style.background = colourOf(f.name);
      return el("div", { class: "progress-row", "data-name": f.name,
        "data-done": String(f.done), "data-failed": String(f.failed),
        "data-running": String(f.assigned), "data-queued": String(queued) },
      name, barNode, counts);
    });
    const more = d.names > d.functions.length
      ? el("p", { class: "detail", text: `${d.names - d.functions.length} more names ` +
        "(?limit= shows up to 1000)" }) : null;
    return el("div", { id: "progress-pane" }, ...rows, more);
  }

  function lineChart(series, span, top, label) {
    const width = 300, height = 64;
    const chart = svg("svg", { class: "load-chart", width, height,
      viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
      "aria-label": label });
    chart.append(svg("rect", { x: 0, y: 0, width, height, class: "chart-back" }));
    for (const s of series) {
      const points = [];
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const px = width - Math.min(1, s.ages[i] / span) * width;
        const py = height - 2 - Math.min(1, v / top) * (height - 6);
        points.push(`${px.toFixed(1)},${py.toFixed(1)}`);
      });
      chart.append(svg("polyline", { points: points.join(" "), class: `line ${s.name}`,
        "data-series": s.name, "data-points": points.length, fill: "none" }));
    }
    return chart;
  }

  function last(values) {
    for (let i = values.length - 1; i >= 0; i -= 1) {
      if (values[i] !== null && values[i] !== undefined) return values[i];
    }
    return null;
  }

  function renderLoad(d) {
    if (!d.workers.length) return el("p", { class: "empty", text: "no workers have joined" });
    const cards = d.workers.map(w => {
      const s = w.samples;
      const cpuTop = Math.max(w.num_cpus || 1, ...s.cpu.filter(v => v !== null));
      const memTop = Math.max(1, ...s.memory.filter(v => v !== null),
        ...s.store_used.filter(v => v !== null));
      const cpuNow = last(s.cpu), memNow = last(s.memory), storeNow = last(s.store_used);
      // The time axis spans what was sampled (at least a minute), up to the window.
      const span = Math.min(d.seconds, Math.max(60, ...s.age));
      return el("div", { class: "load-card", "data-worker-pid": String(w.pid) },
        el("div", { class: "label", text: `worker pid ${w.pid} @ ${w.hostname}` }),
        el("div", { class: "detail", text: `last ${Math.round(span)} s` }),
        el("div", { class: "detail", text: `CPU ${cpuNow === null ? "–"
          : `${Math.round(cpuNow * 100)}%`} of ${num(w.num_cpus)} (scale ` +
          `${Math.round(cpuTop * 100)}%)` }),
        lineChart([{ name: "cpu", values: s.cpu, ages: s.age }], span, cpuTop,
          `CPU of worker pid ${w.pid}`),
        el("div", { class: "detail", text: `memory ${bytes(memNow)}, store ${bytes(storeNow)}` +
          ` (scale ${bytes(memTop)})` }),
        lineChart([{ name: "memory", values: s.memory, ages: s.age },
          { name: "store", values: s.store_used, ages: s.age }], span, memTop,
        `memory and store use of worker pid ${w.pid}`));
    });
    const more = d.total > d.workers.length ? el("p", { class: "detail",
      text: `${d.total - d.workers.length} more workers not shown` }) : null;
    return el("div", {}, el("div", { class: "legend" },
      el("span", { class: "legend-item" }, el("span", { class: "swatch cpu" }), "CPU"),
      el("span", { class: "legend-item" }, el("span", { class: "swatch memory" }),
        "memory of its processes"),
      el("span", { class: "legend-item" }, el("span", { class: "swatch store" }),
        "object store use")),
    el("div", { class: "load-cards", id: "load-pane" }, ...cards), more);
  }

  // ?critical=<object id>: the chain of runs and moves that took longest, in red on the
  // picture and step by step here.
  function renderCriticalPath(box, info) {
    if (!query.get("critical")) return;
    box.hidden = false;
    if (info.critical_problem) {
      box.replaceChildren(el("div", { class: "note warn", id: "critical-problem",
        text: `No critical path: ${info.critical_problem}` }));
      return;
    }
    const path = info.critical_path;
    if (!path) return;
    const columns = [
      { title: "step", render: s => s.kind },
      { title: "what", render: s => (s.kind === "task" || s.kind === "actor-call") ? s.name
        : `object …${s.name.slice(-8)} (${bytes(s.nbytes)})` },
      { title: "worker", mono: true, render: s => s.worker ? s.worker.slice(0, 8) : "–" },
      { title: "started", render: s => clock(s.start) },
      { title: "took", num: true, render: s => seconds(s.duration) },
    ];
    box.replaceChildren(
      el("h2", { text: "Critical path" }),
      el("p", { id: "critical-summary", text: `${path.steps.length} steps took ` +
        `${seconds(path.total)} in all (${seconds(path.wall)} from the first start to ` +
        `the last end); shown in red in the graph.` }),
      table(columns, path.steps.map(s => ({ data: s, attrs: { class: "critical-step" } })),
        "no steps"));
  }

  const PAGES = {
    overview: { url: () => apiUrl(api, []), render: renderOverview },
    status: { load: loadStatus, render: renderStatus, pollMs: STREAM_MS },
    workers: { url: () => apiUrl(api, ["limit"]), render: renderWorkers },
    tasks: { url: () => apiUrl(api, ["limit", "state", "failures"]), render: renderTasks },
    objects: { url: () => apiUrl(api, ["limit"]), render: renderObjects },
    actors: { url: () => apiUrl(api, ["limit"]), render: renderActors },
    graph: {
      url: () => { const q = new URLSearchParams({ limit: query.get("limit") || "100" });
        if (query.get("critical")) q.set("critical", query.get("critical"));
        return `${api}?${q}`; },
      render: renderGraph,
    },
  };

  // -- polling ------------------------------------------------------------------------
  let polls = 0;

  async function poll() {
    const spec = PAGES[page];
    try {
      const data = spec.load ? await spec.load() : await fetchJson(spec.url());
      const nodes = spec.render(data);
      if (nodes) content.replaceChildren(...nodes);
      polls += 1;
      body.dataset.polls = String(polls);
      statusLine.classList.remove("stale");
      statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      statusLine.classList.add("stale");
      statusLine.textContent = `cannot reach the scheduler (${error.message}); retrying`;
    }
    const every = spec.pollMs || POLL_MS;
    window.setTimeout(poll, document.hidden ? every * 5 : every);
  }

  if (PAGES[page]) poll();
}());
