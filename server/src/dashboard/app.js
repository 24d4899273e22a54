// The netrev dashboard: the stats table, the Cohort LTV chart and visitor lookup, all read
// from the query API. Money arrives as exact decimal strings and is only ever rounded as
// decimal text here (half-even, 2 places); numbers are used only to draw the chart.
"use strict";

const COLUMNS = [
  ["clicks", "Clicks", "count"],
  ["conversions", "Conversions", "count"],
  ["cr", "CR", "percent"],
  ["cost", "Cost", "money"],
  ["gross_revenue", "Gross Revenue", "money"],
  ["refunds", "Refunds", "count"],
  ["refund_amount", "Refund Amount", "money"],
  ["refund_rate", "Refund Rate", "percent"],
  ["chargebacks", "Chargebacks", "count"],
  ["net_revenue", "Net Revenue", "money"],
  ["profit", "Profit", "money"],
  ["roi", "ROI", "percent"],
  ["epc", "EPC", "money"],
];
const DEFAULT_COLUMNS = ["clicks", "conversions", "gross_revenue", "refunds", "refund_amount",
  "refund_rate", "net_revenue", "profit", "roi"];
const KIND = Object.fromEntries(COLUMNS.map(([k, , kind]) => [k, kind]));
const LABEL = Object.fromEntries(COLUMNS.map(([k, label]) => [k, label]));

const $ = (id) => document.getElementById(id);
const store = {
  get(k, d) { try { const v = localStorage.getItem("netrev." + k); return v === null ? d : JSON.parse(v); } catch { return d; } },
  set(k, v) { try { localStorage.setItem("netrev." + k, JSON.stringify(v)); } catch { /* private mode */ } },
};

// ---- exact decimal text ----------------------------------------------------------------

/** "1234.5678" → BigInt of the value in 1/10000 units (money has at most 4 decimals). */
function units(s) {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(s));
  if (!m) return 0n;
  const frac = (m[3] || "").padEnd(4, "0").slice(0, 4);
  const v = BigInt(m[2]) * 10000n + BigInt(frac);
  return m[1] ? -v : v;
}

/** Money text rounded half-even to 2 decimals, with thousands separators: "1,234.57". */
function money(s) {
  if (s === null || s === undefined) return "–";
  let v = units(s);
  const neg = v < 0n;
  if (neg) v = -v;
  let cents = v / 100n;
  const rest = v % 100n;
  if (rest > 50n || (rest === 50n && cents % 2n === 1n)) cents += 1n;
  const whole = (cents / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const frac = (cents % 100n).toString().padStart(2, "0");
  return (neg && cents !== 0n ? "-" : "") + whole + "." + frac;
}

/** Percentages come rounded to 2 decimals by the server; shown with exactly 2. */
function percent(v) {
  if (v === null || v === undefined) return "–";
  const [i, f = ""] = String(v).split(".");
  return i + "." + (f + "00").slice(0, 2) + "%";
}

function count(v) {
  return v === null || v === undefined ? "–" : String(v).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function show(key, v) {
  return { money, percent, count }[KIND[key]](v);
}

/** A sort key that orders exactly: BigInt units for money and percentages, text otherwise. */
function sortKey(key, v) {
  if (v === null || v === undefined) return null;
  if (KIND[key]) return units(v);
  return String(v);
}

// ---- API -----------------------------------------------------------------------------

async function api(path, { raw = false } = {}) {
  const headers = {};
  const key = store.get("key", "");
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(path, { headers });
  if (r.status === 401) throw new Error("This server needs an API key: enter it at the top.");
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { const body = await r.json(); if (body.error) msg = body.error; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return raw ? r : r.json();
}

function setStatus(id, text, error = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", error);
}

// ---- stats table -----------------------------------------------------------------------

let chosen = store.get("columns", DEFAULT_COLUMNS).filter((c) => KIND[c]);
let sort = store.get("sort", { key: null, dir: "descending" });
let lastStats = null;

function renderColumnPicker() {
  const box = $("columns");
  for (const [key, label] of COLUMNS) {
    const l = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.value = key;
    cb.id = "col-" + key;
    cb.checked = chosen.includes(key);
    cb.addEventListener("change", () => {
      chosen = COLUMNS.map(([k]) => k).filter((k) => $("col-" + k).checked);
      store.set("columns", chosen);
      renderStats();
    });
    l.append(cb, " " + label);
    box.append(l);
  }
}

function statsQuery(format) {
  const p = new URLSearchParams({
    from: $("from").value, to: $("to").value, tz: $("tz").value.trim() || "UTC",
    group_by: $("group-by").value,
    // Refund rate is always asked for: it marks rows for review even when not shown.
    columns: COLUMNS.map(([k]) => k).join(","),
  });
  if (format) p.set("format", format);
  return "/api/stats?" + p;
}

async function loadStats() {
  try {
    const data = await api(statsQuery());
    lastStats = { group: $("group-by").value, ...data };
    renderStats();
    setStatus("stats-status", data.rows.length ? "Updated " + new Date().toLocaleTimeString() : "No clicks in this range.");
  } catch (e) {
    setStatus("stats-status", e.message, true);
  }
}

function renderStats() {
  if (!lastStats) return;
  const { group, rows, totals } = lastStats;
  const threshold = Number($("threshold").value);
  const table = $("stats");
  const cols = [group, ...chosen];
  const head = document.createElement("tr");
  for (const c of cols) {
    const th = document.createElement("th");
    th.scope = "col";
    if (c !== group) th.className = "num";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c === group ? group[0].toUpperCase() + group.slice(1) : LABEL[c];
    b.dataset.col = c;
    b.addEventListener("click", () => {
      sort = { key: c, dir: sort.key === c && sort.dir === "descending" ? "ascending" : "descending" };
      store.set("sort", sort);
      renderStats();
    });
    if (sort.key === c) th.setAttribute("aria-sort", sort.dir);
    th.append(b);
    head.append(th);
  }
  table.tHead.replaceChildren(head);

  const sorted = [...rows];
  if (sort.key && cols.includes(sort.key)) {
    const k = sort.key;
    const sign = sort.dir === "ascending" ? 1 : -1;
    sorted.sort((a, b) => {
      const x = sortKey(k === group ? null : k, a[k]);
      const y = sortKey(k === group ? null : k, b[k]);
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
  }
  const body = sorted.map((row) => {
    const tr = document.createElement("tr");
    const review = row.refund_rate !== null && row.refund_rate !== undefined && Number(row.refund_rate) > threshold;
    if (review) tr.classList.add("review");
    for (const c of cols) {
      const td = document.createElement("td");
      if (c === group) {
        td.textContent = row[c] ?? "(none)";
        if (review) {
          const flag = document.createElement("span");
          flag.className = "flag";
          flag.textContent = "review: refund rate above " + threshold + "%";
          td.append(flag);
        }
      } else {
        td.className = "num" + (c === "refund_rate" ? " review-rate" : "");
        td.textContent = show(c, row[c]);
      }
      td.dataset.col = c;
      tr.append(td);
    }
    return tr;
  });
  table.tBodies[0].replaceChildren(...body);
  const foot = document.createElement("tr");
  for (const c of cols) {
    const td = document.createElement("td");
    td.dataset.col = c;
    if (c === group) td.textContent = "Total";
    else { td.className = "num"; td.textContent = show(c, totals[c]); }
    foot.append(td);
  }
  table.tFoot.replaceChildren(foot);
}

async function downloadCsv() {
  try {
    const r = await api(statsQuery("csv"), { raw: true });
    const blob = await r.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `netrev-stats-${$("group-by").value}-${$("from").value}-${$("to").value}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(a.href);
  } catch (e) {
    setStatus("stats-status", e.message, true);
  }
}

// ---- cohort chart ----------------------------------------------------------------------

let plot = null;
const PALETTE = ["#2457c5", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6a9f", "#2e4057", "#c05805"];

async function loadSources() {
  try {
    const p = new URLSearchParams({ from: $("from").value, to: $("to").value, group_by: "source", columns: "clicks" });
    const data = await api("/api/stats?" + p);
    const select = $("cohort-source");
    const current = select.value;
    const options = [new Option("All sources", "")];
    for (const row of data.rows) if (row.source !== null) options.push(new Option(row.source, row.source));
    select.replaceChildren(...options);
    select.value = current;
  } catch { /* the stats table shows the error */ }
}

async function loadCohorts() {
  const p = new URLSearchParams({ granularity: $("granularity").value, max_age: $("max-age").value });
  if ($("cohort-source").value) p.set("source", $("cohort-source").value);
  try {
    const data = await api("/api/cohorts?" + p);
    renderCohorts(data.cohorts);
    setStatus("cohort-status", data.cohorts.length ? "" : "No cohorts yet: they appear after the first recompute with clicks.");
  } catch (e) {
    setStatus("cohort-status", e.message, true);
  }
}

function renderCohorts(cohorts) {
  const maxAge = Math.max(0, ...cohorts.flatMap((c) => c.points.map((p) => p.age)));
  const ages = Array.from({ length: maxAge + 1 }, (_, i) => i);
  const showGross = $("show-gross").checked;
  const data = [ages];
  const text = [null];
  const series = [{ label: "Age (days)" }];
  cohorts.forEach((c, i) => {
    const color = PALETTE[i % PALETTE.length];
    const byAge = Object.fromEntries(c.points.map((p) => [p.age, p]));
    const lines = [["ltv", `${c.cohort} net`, []]];
    if (showGross) lines.push(["gross_ltv", `${c.cohort} gross`, [6, 4]]);
    for (const [field, label, dash] of lines) {
      data.push(ages.map((a) => (byAge[a] ? Number(byAge[a][field]) : null)));
      text.push(ages.map((a) => (byAge[a] ? byAge[a][field] : null)));
      series.push({
        label, stroke: color, width: field === "ltv" ? 2 : 1.5, dash,
        value: (u, v, s, idx) => (idx === null || text[s][idx] === null ? "–" : money(text[s][idx])),
      });
    }
  });
  const el = $("chart");
  if (plot) { plot.destroy(); plot = null; }
  el.replaceChildren();
  if (cohorts.length) {
    plot = new uPlot({
      width: Math.max(320, el.clientWidth),
      height: 320,
      scales: {
        x: { time: false },
        // From zero, so a refund's drop is seen at its true size.
        y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { label: "Age (days)", incrs: [1, 2, 5, 7, 14, 30, 60, 90, 180, 365], values: (u, vals) => vals.map((v) => String(v)) },
        { label: "LTV per visitor", values: (u, vals) => vals.map((v) => v.toFixed(2)) },
      ],
      series,
    }, data, el);
  }
  const rows = cohorts.map((c) => {
    const last = c.points[c.points.length - 1] || {};
    const tr = document.createElement("tr");
    for (const [v, cls] of [[c.cohort, ""], [count(c.size), "num"], [count(last.age), "num"],
      [money(last.gross_ltv), "num"], [money(last.ltv), "num"], [money(last.refunds), "num"]]) {
      const td = document.createElement("td");
      td.textContent = v;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  });
  $("cohort-table").tBodies[0].replaceChildren(...rows);
}

// ---- visitor -----------------------------------------------------------------------------

async function loadVisitor(e) {
  e.preventDefault();
  const vid = $("vid").value.trim();
  const out = $("visitor");
  out.replaceChildren();
  try {
    const v = await api("/api/visitors/" + encodeURIComponent(vid));
    const dl = document.createElement("dl");
    dl.className = "profile";
    const fields = [["First seen", v.first_seen], ["Last seen", v.last_seen], ["Clicks", count(v.clicks)],
      ["Conversions", count(v.conversions)], ["Gross revenue", money(v.gross_revenue)],
      ["Refunds", count(v.refunds)], ["Refund amount", money(v.refund_amount)],
      ["Chargebacks", count(v.chargebacks)], ["Net revenue", money(v.net_revenue)]];
    for (const [k, val] of fields) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = val;
      dl.append(dt, dd);
    }
    out.append(dl);
    const history = v.refund_history || [];
    if (!history.length) {
      const p = document.createElement("p"); p.textContent = "No refunds."; out.append(p);
    } else {
      const t = document.createElement("table");
      t.innerHTML = "<caption>Refund history</caption><thead><tr><th scope=col>Time</th><th scope=col>Click</th>" +
        "<th scope=col>Type</th><th scope=col class=num>Amount</th><th scope=col>Refunded sale</th></tr></thead><tbody></tbody>";
      for (const r of history) {
        const tr = document.createElement("tr");
        for (const [val, cls] of [[r.ts, ""], [r.cid, ""], [r.type, ""], [money(r.amount), "num"],
          [r.conversion_txid ? `${r.conversion_txid} (${money(r.conversion_amount)})` : "–", ""]]) {
          const td = document.createElement("td"); td.textContent = val; if (cls) td.className = cls; tr.append(td);
        }
        t.tBodies[0].append(tr);
      }
      out.append(t);
    }
    setStatus("visitor-status", "");
  } catch (err) {
    setStatus("visitor-status", err.message.includes("404") || /no visitor/i.test(err.message)
      ? `No visitor ${vid} (visitors appear after the next recompute).` : err.message, true);
  }
}

// ---- wiring ------------------------------------------------------------------------------

function isoDay(d) { return d.toISOString().slice(0, 10); }

function init() {
  const today = new Date();
  $("to").value = store.get("to", isoDay(today));
  $("from").value = store.get("from", isoDay(new Date(today.getTime() - 29 * 86400000)));
  $("tz").value = store.get("tz", "UTC");
  $("group-by").value = store.get("group", "source");
  $("threshold").value = store.get("threshold", 10);
  $("api-key").value = store.get("key", "");
  renderColumnPicker();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    store.set("key", $("api-key").value);
    loadStats(); loadSources(); loadCohorts();
  });
  $("stats-form").addEventListener("submit", (e) => {
    e.preventDefault();
    store.set("from", $("from").value); store.set("to", $("to").value);
    store.set("tz", $("tz").value); store.set("group", $("group-by").value);
    loadStats();
  });
  $("group-by").addEventListener("change", () => { store.set("group", $("group-by").value); loadStats(); });
  $("threshold").addEventListener("input", () => { store.set("threshold", $("threshold").value); renderStats(); });
  $("csv").addEventListener("click", downloadCsv);
  $("cohort-form").addEventListener("submit", (e) => { e.preventDefault(); loadCohorts(); });
  $("show-gross").addEventListener("change", loadCohorts);
  $("visitor-form").addEventListener("submit", loadVisitor);
  setInterval(() => { if ($("auto").checked && !document.hidden) loadStats(); }, 5000);
  loadStats();
  loadSources();
  loadCohorts();
}

init();
