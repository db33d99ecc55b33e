// The "Game day" panel of Locust's web UI (workloads/webui.py serves it).
//
// Draws the cluster (AZ / rack / process, up / down / paused, partition leaders), the per-AZ
// canaries, the fault catalog with inject and heal, and the events timeline, from
// gameday/api/state once a second. Inside Locust's page it shows under the "Game day" tab
// (?tab=gameday); on /gameday it is the whole page. Every text goes in as textContent.
(function () {
  "use strict";
  const script = document.currentScript;
  const api = new URL("../api/", script ? script.src : location.href);
  let token = null;
  let catalog = [];
  let state = null;
  let busy = false;

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "className") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const pct = (r) => (r === null || r === undefined ? "–" : (100 * r).toFixed(r >= 0.995 && r < 1 ? 1 : 0) + "%");
  const level = (r) => (r === null || r === undefined ? "none" : r >= 0.99 ? "good" : r >= 0.5 ? "warn" : "bad");

  async function call(path, body) {
    const init = body === undefined ? { cache: "no-store" } : {
      method: "POST",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Gameday-Token": token },
      body: JSON.stringify(body),
    };
    const resp = await fetch(new URL(path, api), init);
    let data = {};
    try { data = await resp.json(); } catch (e) { data = { error: resp.statusText }; }
    return { ok: resp.ok, status: resp.status, data };
  }

  // --- the panel's parts ------------------------------------------------------------------------

  const root = h("div", { id: "gameday-panel", className: "gd" });
  const head = h("div", { className: "gd-head" });
  const message = h("div", { className: "gd-message", role: "status" });
  const topo = h("div", { className: "gd-topology" });
  const canary = h("div", { className: "gd-card" });
  const groups = h("div", { className: "gd-card" });
  const faults = h("div", { className: "gd-card" });
  const timeline = h("div", { className: "gd-card" });
  const form = h("form", { className: "gd-form", onsubmit: (e) => { e.preventDefault(); inject(); } });
  const kind = h("select", { name: "kind", id: "gd-kind", onchange: () => drawParams() });
  const params = h("span", { className: "gd-params" });
  const hold = h("input", { name: "hold", id: "gd-hold", value: "60s", size: 5, title: "heal after this long" });
  const suggestions = h("datalist", { id: "gd-targets" });
  form.append(
    h("label", {}, "Fault ", kind), params,
    h("label", {}, "hold ", hold),
    h("button", { type: "submit", id: "gd-inject", className: "gd-danger" }, "Inject"),
    suggestions,
  );
  root.append(
    head, message,
    h("div", { className: "gd-grid" },
      h("div", { className: "gd-col" }, h("h3", {}, "Topology"), topo, h("h3", {}, "Partitions"), groups),
      h("div", { className: "gd-col" },
        h("h3", {}, "Canary availability, per client AZ and router (last 5 s)"), canary,
        h("h3", {}, "Faults"), h("div", { className: "gd-card" }, form, faults),
        h("h3", {}, "Events"), timeline)));

  function say(text, kindOf) {
    message.textContent = text || "";
    message.className = "gd-message" + (kindOf ? " gd-" + kindOf : "");
  }

  function drawParams() {
    const entry = catalog.find((f) => f.kind === kind.value);
    params.replaceChildren();
    if (!entry) return;
    kind.title = entry.description;
    for (const p of entry.parameters) {
      const input = h("input", {
        name: p.name, "data-param": p.name, size: p.type === "str" ? 12 : 6,
        placeholder: p.required ? p.name : `${p.name} (${p.default})`,
        list: /target|side|node|sides/.test(p.name) ? "gd-targets" : null,
        title: p.help || `${p.name}: ${p.type}`, required: p.required,
      });
      params.append(h("label", {}, p.name + " ", input));
    }
  }

  function drawHead() {
    const s = state;
    const active = s.faults.filter((f) => f.state === "active").length;
    const radius = Object.entries(s.blast_radius).filter(([, v]) => v !== null)
      .map(([k, v]) => `${k.replace("max_", "")} ≤ ${v}`).join(", ") || "none";
    head.replaceChildren(
      h("strong", {}, "Game day"),
      h("span", {}, `session ${Math.floor(s.now)} s`),
      h("span", {}, `${active} active fault${active === 1 ? "" : "s"}`),
      h("span", { title: "the most the session may take down at once" }, `blast radius: ${radius}`),
      h("button", {
        type: "button", id: "gd-heal-all", disabled: active === 0 || busy,
        onclick: () => heal({ all: true }),
      }, "Heal all"),
    );
    if (s.problem) say(s.problem, "bad");
  }

  function drawTopology() {
    const { azs, processes, groups: gs } = state.cluster;
    const leads = {};
    for (const g of gs) if (g.leader) (leads[g.leader] = leads[g.leader] || []).push(g.group);
    topo.replaceChildren(...azs.map((az) => {
      const mine = processes.filter((p) => p.az === az);
      const down = mine.filter((p) => p.state !== "up").length;
      const azState = down === 0 ? "up" : down === mine.length ? "down" : "degraded";
      const racks = [...new Set(mine.filter((p) => p.rack).map((p) => p.rack))].sort();
      const proc = (p) => h("li", { className: "gd-proc gd-" + p.state, "data-process": p.id, "data-state": p.state },
        h("span", { className: "gd-dot" }), p.id, " ", h("small", {}, p.state),
        leads[p.id] ? h("small", { className: "gd-leads", title: "leads " + leads[p.id].join(", ") }, ` leads ${leads[p.id].length}`) : null);
      return h("section", { className: "gd-az gd-" + azState, "data-az": az, "data-state": azState },
        h("header", {}, h("strong", {}, az), h("small", {}, azState),
          h("button", {
            type: "button", className: "gd-small", disabled: busy || azState === "down",
            title: `power off every process in ${az}`,
            onclick: () => inject({ kind: "power_off_az", params: { target: az } }),
          }, "power off")),
        ...racks.map((rack) => h("div", { className: "gd-rack" }, h("small", {}, "rack " + rack.split("/").pop()),
          h("ul", {}, ...mine.filter((p) => p.rack === rack).map(proc)))),
        h("ul", { className: "gd-services" }, ...mine.filter((p) => !p.rack).map(proc)));
    }));
    groups.replaceChildren(h("table", { className: "gd-table" },
      h("tr", {}, h("th", {}, "partition"), h("th", {}, "leader"), h("th", {}, "replicas")),
      ...gs.map((g) => h("tr", {}, h("td", {}, g.group),
        h("td", { className: g.leader ? "" : "gd-bad" }, g.leader || "none"), h("td", {}, g.members.join(" "))))));
    const names = [...azs, ...new Set(processes.map((p) => p.rack).filter(Boolean)), ...processes.map((p) => p.id)];
    suggestions.replaceChildren(...names.map((n) => h("option", { value: n })));
  }

  function spark(series) {
    const w = 120, hgt = 22;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", w); svg.setAttribute("height", hgt); svg.setAttribute("class", "gd-spark");
    const step = w / Math.max(1, series.length);
    series.forEach((r, i) => {
      if (r === null) return;
      const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const y = hgt - Math.max(1, r * hgt);
      bar.setAttribute("x", (i * step).toFixed(1)); bar.setAttribute("width", Math.max(1, step - 0.5).toFixed(1));
      bar.setAttribute("y", y.toFixed(1)); bar.setAttribute("height", (hgt - y).toFixed(1));
      bar.setAttribute("class", "gd-" + level(r));
      svg.append(bar);
    });
    return svg;
  }

  function drawCanaries() {
    const c = state.canaries;
    const cell = (r, attrs) => h("td", { className: "gd-cell gd-" + level(r), ...attrs }, pct(r));
    canary.replaceChildren(h("table", { className: "gd-table gd-canaries" },
      h("tr", {}, h("th", {}, "client AZ"), h("th", {}, "all routers"),
        ...c.routers.map((r) => h("th", {}, `${r.id} (${r.az})`)), h("th", {}, "last 60 s")),
      ...c.azs.map((az) => h("tr", { "data-canary-az": az },
        h("th", {}, az), cell(c.by_az[az], { "data-ratio": c.by_az[az] }),
        ...c.routers.map((r) => cell(c.matrix[az][r.id], { "data-router": r.id, "data-ratio": c.matrix[az][r.id] })),
        h("td", {}, spark(c.series[az] || [])))),
      h("tr", {}, h("th", {}, "by router"), h("td", {}),
        ...c.routers.map((r) => cell(c.by_router[r.id], { "data-router-total": r.id, "data-ratio": c.by_router[r.id] })),
        h("td", {}))));
  }

  function drawFaults() {
    const rows = state.faults.slice().reverse();
    faults.replaceChildren(rows.length === 0 ? h("p", { className: "gd-muted" }, "no faults injected in this session") :
      h("table", { className: "gd-table" },
        h("tr", {}, h("th", {}, "id"), h("th", {}, "fault"), h("th", {}, "state"), h("th", {}, "since"), h("th", {}, "evidence / reason"), h("th", {})),
        ...rows.map((f) => h("tr", { "data-fault": f.fault_id, "data-state": f.state },
          h("td", {}, f.fault_id), h("td", { title: JSON.stringify(f.params) }, f.description || f.kind),
          h("td", { className: "gd-state-" + f.state }, f.state),
          h("td", {}, f.started === null ? "" : `${f.started.toFixed(1)} s` + (f.ended === null ? ` (hold ${f.hold_s} s)` : ` → ${f.ended.toFixed(1)} s`)),
          h("td", { className: "gd-evidence" }, f.reason || (f.evidence ? JSON.stringify(f.evidence) : "")),
          h("td", {}, f.state === "active" ? h("button", { type: "button", className: "gd-heal", disabled: busy, onclick: () => heal({ fault_id: f.fault_id }) }, "Heal") : null)))));
  }

  function drawTimeline() {
    const events = state.events.slice().reverse().slice(0, 25);
    timeline.replaceChildren(events.length === 0 ? h("p", { className: "gd-muted" }, "no events yet") :
      h("ol", { className: "gd-events" }, ...events.map((e) => {
        const extra = e.reason || (e.targets ? e.targets.join(", ") : "") || (e.drift !== undefined ? `drift ${e.drift} s` : "");
        return h("li", { className: "gd-ev-" + e.event }, h("code", {}, `${Number(e.time).toFixed(1)} s`), " ",
          h("strong", {}, e.event), " ", e.fault_id || "", " ", e.fault || "", extra ? h("small", {}, " " + extra) : null);
      })));
  }

  function draw() {
    if (!state) return;
    drawHead(); drawTopology(); drawCanaries(); drawFaults(); drawTimeline();
  }

  // --- actions ----------------------------------------------------------------------------------

  async function inject(spec) {
    if (busy) return;
    if (!spec) {
      const values = {};
      for (const input of params.querySelectorAll("input[data-param]")) if (input.value.trim()) values[input.dataset.param] = input.value.trim();
      spec = { kind: kind.value, params: values };
    }
    busy = true; draw();
    say(`injecting ${spec.kind} ${Object.values(spec.params || {}).join(" ")} … (planned, checked against the blast radius, confirmed)`, "info");
    try {
      const r = await call("inject", { ...spec, hold: hold.value.trim() || "60s" });
      if (r.ok) say(`${r.data.fault.fault_id}: ${r.data.fault.description} — ${r.data.fault.state}`, "good");
      else say(r.data.fault ? `${r.data.fault.fault_id} ${r.data.fault.state}: ${r.data.fault.reason}` :
        `${r.data.param ? r.data.param + ": " : ""}${r.data.error || r.status}`, "bad");
    } catch (e) { say(`inject failed: ${e}`, "bad"); }
    busy = false; refresh();
  }

  async function heal(body) {
    if (busy) return;
    busy = true; draw(); say("healing …", "info");
    try {
      const r = await call("heal", body);
      say(r.ok ? `healed ${r.data.healed.join(", ") || "nothing"}` : r.data.error, r.ok ? "good" : "bad");
    } catch (e) { say(`heal failed: ${e}`, "bad"); }
    busy = false; refresh();
  }

  async function refresh() {
    try {
      const r = await call("state");
      if (r.ok) { state = r.data; draw(); } else say(r.data.error || `state: HTTP ${r.status}`, "bad");
    } catch (e) { say(`no answer from the web UI: ${e}`, "bad"); }
  }

  async function init() {
    const t = await call("token");
    if (!t.ok) { say(t.data.error || "no token", "bad"); return; }
    token = t.data.token;
    const c = await call("catalog");
    catalog = c.ok ? c.data.faults : [];
    kind.replaceChildren(...catalog.map((f) => h("option", { value: f.kind, title: f.description }, f.kind)));
    kind.value = catalog.some((f) => f.kind === "power_off_az") ? "power_off_az" : kind.value;
    drawParams();
    await refresh();
    setInterval(() => { if (!busy) refresh(); }, 1000);
  }

  // --- where the panel goes ---------------------------------------------------------------------

  function place() {
    const standalone = document.getElementById("gameday-root");
    if (standalone) {
      if (!root.isConnected) standalone.append(root);
      return;
    }
    const onTab = new URLSearchParams(location.search).get("tab") === "gameday";
    const tabs = document.querySelector(".MuiTabs-root");
    const bar = tabs && tabs.parentElement;
    if (onTab && bar && bar.parentElement && root.previousElementSibling !== bar) bar.after(root);
    root.hidden = !(onTab && bar);
  }

  init();
  place();
  setInterval(place, 200);
})();
