// The matdx dashboard: reads the service's JSON and draws it with Chart.js (window.Chart).
// Every value from the store is written as text (never as HTML). It polls every ?every=S
// seconds (2 by default); a token given as #token=... is kept for this tab only.
"use strict";

const STATES = ["WAITING", "READY", "RUNNING", "ERRORED", "COMPLETED", "FAILED", "CANCELLED"];
const PLOTTED = ["eos-fit", "elastic-fit", "phonon", "bands", "md-analysis"];
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"];
const EV_PER_A3_PER_GPA = 1 / 160.21766208;
const VOIGT = ["xx", "yy", "zz", "yz", "xz", "xy"];

const params = new URLSearchParams(window.location.search);
const dashboard = {
  campaign: params.get("campaign"),
  record: null,
  every: Math.max(0.5, Number(params.get("every") || 2)) * 1000,
  charts: {},
  refreshes: 0,
};
window.matdxDashboard = dashboard; // for people and tests inspecting the page

if (window.location.hash.startsWith("#token=")) {
  sessionStorage.setItem("matdx-token", decodeURIComponent(window.location.hash.slice(7)));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

function token() {
  return sessionStorage.getItem("matdx-token") || "";
}

async function api(path) {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(path, { headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${body.detail || response.statusText}`);
  }
  return body;
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function chart(key, canvas, config) {
  if (dashboard.charts[key]) dashboard.charts[key].destroy();
  dashboard.charts[key] = new Chart(canvas, config);
  return dashboard.charts[key];
}

function axes(xTitle, yTitle, extraX = {}) {
  return {
    x: { type: "linear", title: { display: true, text: xTitle }, ...extraX },
    y: { type: "linear", title: { display: true, text: yTitle } },
  };
}

function line(label, points, colour, extra = {}) {
  return {
    label, data: points, borderColor: colour, backgroundColor: colour, showLine: true,
    pointRadius: 0, borderWidth: 1.5, spanGaps: false, ...extra,
  };
}

function dots(label, points, colour) {
  return { label, data: points, borderColor: colour, backgroundColor: colour, showLine: false,
    pointRadius: 4 };
}

// ---- campaigns -----------------------------------------------------------------------

function progressBar(status) {
  const done = status.counts.COMPLETED || 0;
  const width = status.total ? (100 * done) / status.total : 0;
  return el("span", {}, el("span", { class: "bar" }, el("span", { style: `width:${width}%` })),
    ` ${done}/${status.total}`);
}

function stateText(counts) {
  return STATES.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`).join(", ");
}

function showCampaigns(campaigns) {
  if (!dashboard.campaign && campaigns.length) {
    dashboard.campaign = campaigns[campaigns.length - 1].id;
  }
  fill(document.querySelector("#campaigns tbody"), campaigns.map((c) => el("tr", {
    class: c.id === dashboard.campaign ? "selectable selected" : "selectable",
    "data-id": c.id,
    onclick: () => { dashboard.campaign = c.id; dashboard.record = null; refresh(); },
  }, el("td", {}, c.name), el("td", {}, c.owner), el("td", {}, c.access),
  el("td", {}, progressBar(c)), el("td", {}, stateText(c.counts)))));
}

function showCounts(status) {
  document.getElementById("campaign-name").textContent =
    `${status.name}${status.done ? " — done" : ""}`;
  const parts = STATES.map((s) => el("span", {},
    `${s.toLowerCase()} `, el("b", { id: `count-${s}` }, status.counts[s] || 0)));
  parts.push(el("span", {}, "total ", el("b", { id: "count-total" }, status.total)));
  if (status.blocked) parts.push(el("span", {}, "blocked ", el("b", {}, status.blocked)));
  document.getElementById("counts").replaceChildren(...parts);
}

function showTimeline(timeline) {
  const start = timeline.t.length ? timeline.t[0] : 0;
  const datasets = timeline.categories.map((name, i) => line(name,
    timeline.t.map((t, j) => ({ x: t - start, y: timeline.counts[name][j] })), COLOURS[i],
    { stepped: "before", borderWidth: 2 }));
  const existing = dashboard.charts.timeline;
  if (existing) {
    existing.data.datasets.forEach((dataset, i) => { dataset.data = datasets[i].data; });
    existing.update("none");
    return;
  }
  chart("timeline", document.getElementById("timeline"), {
    type: "scatter",
    data: { datasets },
    options: {
      animation: false, maintainAspectRatio: false,
      scales: axes("time since submission (s)", "jobs"),
      plugins: { title: { display: true, text: "jobs by state over time" } },
    },
  });
}

function showFailures(attempts) {
  const rows = attempts.map((a) => {
    const c = a.correction;
    const applied = c ? `${c.handler}: ${c.description || (c.actions || []).map((x) => JSON.stringify(x)).join("; ")}`
      : "none (rerun unchanged or failed for good)";
    return el("tr", {}, el("td", {}, a.job), el("td", {}, a.attempt),
      el("td", {}, a.kind || a.state), el("td", {}, a.reason), el("td", {}, applied),
      el("td", {}, a.job_state));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6 }, "no failed attempts")));
  fill(document.querySelector("#failures tbody"), rows);
}

function showAllocation(usage) {
  const percent = (u) => (u === null || u === undefined ? "–" : `${(100 * u).toFixed(1)} %`);
  document.getElementById("allocation-summary").textContent =
    `${usage.batches.length} batch job(s); utilisation ${percent(usage.utilisation)}; ` +
    `${number(usage.busy_core_s)} of ${number(usage.allocated_core_s)} core-s busy; ` +
    `queue wait ${number(usage.queue_wait_s)} s; ` +
    `${number(usage.throughput_per_hour, 0)} tasks/h`;
  fill(document.querySelector("#allocation tbody"), usage.batches.map((b) => el("tr", {},
    el("td", {}, b.scheduler_id || b.batch.slice(0, 8)), el("td", {}, b.executor),
    el("td", {}, b.state), el("td", {}, b.slots), el("td", {}, b.tasks),
    el("td", {}, b.completed), el("td", {}, percent(b.utilisation)),
    el("td", {}, number(b.queue_wait_s)), el("td", {}, number(b.run_s)))));
}

function showRecords(records) {
  const list = document.getElementById("records");
  const items = records.map((r) => el("li", {}, el("button", {
    "data-record": r.record_id, "data-calculation": r.calculation,
    onclick: () => { dashboard.record = r.record_id; showPlot(r.record_id); },
  }, `${r.formula || "?"} ${r.calculation} ${r.record_id.slice(0, 8)}`)));
  if (!items.length) items.push(el("li", { class: "muted" }, "none yet"));
  list.replaceChildren(...items);
}

// ---- per-record plots ----------------------------------------------------------------

function birchMurnaghan(volume, e0, v0, b0, bp) {
  const eta = (v0 / volume) ** (2 / 3);
  return e0 + (9 * v0 * b0 / 16) * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta));
}

function pathTicks(positions) {
  // x-axis ticks at the labelled points of a path: positions is [[x, label], ...]
  const labels = new Map();
  for (const [x, label] of positions) {
    const key = Number(x.toFixed(6));
    const previous = labels.get(key);
    labels.set(key, previous && previous !== label ? `${previous}|${label}` : label);
  }
  return {
    afterBuildTicks: (axis) => { axis.ticks = [...labels.keys()].map((value) => ({ value })); },
    ticks: { callback: (value) => labels.get(Number(Number(value).toFixed(6))) ?? "" },
    grid: { color: "#bbb" },
  };
}

function panel(kind = "") {
  const canvas = el("canvas");
  document.getElementById("plot-panels").append(el("div", { class: `chart ${kind}` }, canvas));
  return canvas;
}

const DRAW = {
  eos(d) {
    const b0 = d.B0_GPa_full_range * EV_PER_A3_PER_GPA;
    const low = Math.min(...d.volumes_A3);
    const high = Math.max(...d.volumes_A3);
    const fit = Array.from({ length: 200 }, (_, i) => {
      const v = low + ((high - low) * i) / 199;
      return { x: v, y: birchMurnaghan(v, d.E0_eV, d.V0_A3, b0, d.B0_prime) - d.E0_eV };
    });
    const points = d.volumes_A3.map((v, i) => ({ x: v, y: d.energies_eV[i] - d.E0_eV }));
    chart("plot0", panel("wide"), {
      type: "scatter",
      data: { datasets: [line("Birch–Murnaghan fit", fit, COLOURS[0]),
        dots("calculations", points, COLOURS[1])] },
      options: { animation: false, maintainAspectRatio: false,
        scales: axes("volume (Å³)", "E − E0 (eV)") },
    });
    return `B0 = ${d.B0_GPa.toFixed(2)} ± ${d.B0_GPa_err.toFixed(2)} GPa, ` +
      `B0′ = ${d.B0_prime.toFixed(2)}, V0 = ${d.V0_A3.toFixed(3)} Å³`;
  },
  elastic(d) {
    const datasets = [];
    const low = Math.min(...d.strains);
    const high = Math.max(...d.strains);
    [...new Set(d.components)].sort().forEach((j, n) => {
      const mine = d.components.map((c, i) => [c, i]).filter(([c]) => c === j).map(([, i]) => i);
      const points = mine.map((i) => ({ x: d.strains[i], y: d.stresses_GPa[i][j] }));
      const slope = d.C_GPa[j][j];
      const offset = points.reduce((s, p) => s + p.y - slope * p.x, 0) / points.length;
      datasets.push(dots(`σ_${VOIGT[j]} vs e_${VOIGT[j]}`, points, COLOURS[n % 7]));
      datasets.push(line(`C_${j + 1}${j + 1} fit`, [{ x: low, y: slope * low + offset },
        { x: high, y: slope * high + offset }], COLOURS[n % 7]));
    });
    chart("plot0", panel("wide"), { type: "scatter", data: { datasets },
      options: { animation: false, maintainAspectRatio: false,
        scales: axes("Voigt strain", "stress (GPa, tension +)") } });
    const c = d.C_GPa;
    return `C11 = ${c[0][0].toFixed(1)}, C12 = ${c[0][1].toFixed(1)}, C44 = ${c[3][3].toFixed(1)} GPa`;
  },
  phonon(d) {
    const branches = d.band_frequencies_THz[0].length;
    const datasets = [];
    for (let b = 0; b < branches; b += 1) {
      const points = [];
      for (const [first, last] of d.band_segments) {
        for (let q = first; q <= last; q += 1) {
          points.push({ x: d.band_distances[q], y: d.band_frequencies_THz[q][b] });
        }
        points.push({ x: d.band_distances[last], y: null }); // break between segments
      }
      datasets.push(line(b === 0 ? "branches" : `branch ${b + 1}`, points, COLOURS[0]));
    }
    const ticks = d.band_segments.flatMap(([first, last], s) => [
      [d.band_distances[first], d.band_labels[s][0]],
      [d.band_distances[last], d.band_labels[s][1]]]);
    chart("plot0", panel("wide"), { type: "scatter", data: { datasets },
      options: { animation: false, maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: axes("", "frequency (THz)", pathTicks(ticks)) } });
    chart("plot1", panel("narrow"), { type: "scatter", data: { datasets: [line("DOS",
      d.dos_frequencies_THz.map((f, i) => ({ x: d.dos_states_per_THz[i], y: f })), COLOURS[1])] },
      options: { animation: false, maintainAspectRatio: false,
        scales: axes("DOS (states/THz)", "frequency (THz)") } });
    return "phonon dispersion and DOS";
  },
  bands(d) {
    const k = d.kpoints;
    const distances = [0];
    for (let i = 1; i < k.length; i += 1) {
      distances.push(distances[i - 1] + Math.hypot(k[i][0] - k[i - 1][0],
        k[i][1] - k[i - 1][1], k[i][2] - k[i - 1][2]));
    }
    const datasets = [];
    d.eigenvalues_eV.forEach((spin, s) => {
      for (let b = 0; b < spin[0].length; b += 1) {
        datasets.push(line(`spin ${s} band ${b + 1}`, spin.map((row, i) => ({
          x: distances[i], y: row[b] - d.fermi_level_eV })), COLOURS[s]));
      }
    });
    const ticks = [];
    for (const [label, point] of Object.entries(d.special_points)) {
      k.forEach((kp, i) => {
        if (Math.hypot(kp[0] - point[0], kp[1] - point[1], kp[2] - point[2]) < 1e-6) {
          ticks.push([distances[i], label]);
        }
      });
    }
    chart("plot0", panel("wide"), { type: "scatter", data: { datasets },
      options: { animation: false, maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: axes("", "E − E_F (eV)", pathTicks(ticks)) } });
    const dos = Array.isArray(d.dos_states_per_eV[0]) ? d.dos_states_per_eV : [d.dos_states_per_eV];
    chart("plot1", panel("narrow"), { type: "scatter", data: { datasets: dos.map((spin, s) =>
      line(`DOS spin ${s}`, d.dos_energies_eV.map((e, i) => ({ x: spin[i], y: e - d.fermi_level_eV })),
        COLOURS[s + 1])) },
      options: { animation: false, maintainAspectRatio: false,
        scales: axes("DOS (states/eV)", "E − E_F (eV)") } });
    return `band structure, gap ${d.band_gap_eV.toFixed(3)} eV`;
  },
  "md-analysis"(d) {
    if (d.r_A) {
      chart("plot0", panel(), { type: "scatter", data: { datasets: [line("g(r)",
        d.r_A.map((r, i) => ({ x: r, y: d.g_r[i] })), COLOURS[0])] },
        options: { animation: false, maintainAspectRatio: false, scales: axes("r (Å)", "g(r)") } });
    }
    if (d.time_fs) {
      const points = d.time_fs.map((t, i) => ({ x: t, y: d.msd_A2[i] }));
      const datasets = [line("MSD", points, COLOURS[0])];
      if (d.fit_window_fs) {
        const [a, b] = d.fit_window_fs;
        datasets.push(line("fit window", points.filter((p) => p.x >= a && p.x <= b), COLOURS[1],
          { borderWidth: 4 }));
      }
      chart("plot1", panel(), { type: "scatter", data: { datasets },
        options: { animation: false, maintainAspectRatio: false,
          scales: axes("time (fs)", "MSD (Å²)") } });
    }
    const diffusion = d.D_cm2_per_s === null || d.D_cm2_per_s === undefined ? ""
      : `, D = ${d.D_cm2_per_s.toExponential(2)} ± ${(d.D_cm2_per_s_err || 0).toExponential(1)} cm²/s`;
    return `${d.ensemble || "MD"} at ${d.temperature_K} K${diffusion}`;
  },
};

async function showPlot(recordId) {
  try {
    const record = await api(`/records/${encodeURIComponent(recordId)}`);
    const data = record.results && record.results.data;
    for (const key of ["plot0", "plot1"]) {
      if (dashboard.charts[key]) { dashboard.charts[key].destroy(); delete dashboard.charts[key]; }
    }
    document.getElementById("plot-panels").replaceChildren();
    document.getElementById("plot").hidden = false;
    const formula = record.system ? record.system.chemical_formula_reduced : "";
    document.getElementById("plot-title").textContent = `${formula} ${record.calculation || ""} ${recordId}`;
    const subtitle = document.getElementById("plot-subtitle");
    if (!data || !DRAW[data.kind]) {
      subtitle.textContent = "this record holds no recipe data to plot";
      return;
    }
    subtitle.textContent = DRAW[data.kind](data);
    document.getElementById("plot").dataset.kind = data.kind;
  } catch (error) {
    report(error);
  }
}

// ---- polling -------------------------------------------------------------------------

function report(error) {
  document.getElementById("error").textContent = error ? String(error.message || error) : "";
}

async function refresh() {
  try {
    const campaigns = await api("/campaigns");
    showCampaigns(campaigns);
    const selected = campaigns.find((c) => c.id === dashboard.campaign);
    document.getElementById("campaign").hidden = !selected;
    if (selected) {
      const id = encodeURIComponent(selected.id);
      const [timeline, attempts, usage, records] = await Promise.all([
        api(`/campaigns/${id}/timeline`), api(`/campaigns/${id}/attempts`),
        api(`/campaigns/${id}/allocation`),
        api(`/records?campaign=${id}&calculation=${PLOTTED.join(",")}&limit=100`),
      ]);
      showCounts(selected);
      showTimeline(timeline);
      showFailures(attempts);
      showAllocation(usage);
      showRecords(records.items);
    }
    dashboard.refreshes += 1;
    document.getElementById("updated").textContent =
      `updated ${new Date().toLocaleTimeString()} (every ${dashboard.every / 1000} s)`;
    report(null);
  } catch (error) {
    report(error);
  }
}

async function poll() {
  await refresh();
  window.setTimeout(poll, dashboard.every);
}

document.getElementById("signed-in").textContent = token() ? "signed in with a token" : "anonymous";
if (typeof Chart === "undefined") {
  report(new Error("Chart.js did not load from /dashboard/static/chart.js"));
} else {
  poll();
}
