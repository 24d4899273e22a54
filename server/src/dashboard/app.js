// The netrev dashboard: the stats table, the Cohort LTV chart, visitor lookup and Settings
// (tracking links, webhooks, postback URLs), all through the query API. Money arrives as exact decimal strings and is only ever rounded as
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

/**
 * A request with the API key, if one is entered: the answer, or an Error saying why there is
 * none. A request that changes something (`change`) is sent as JSON, and its errors name the
 * field at fault first.
 */
async function request(method, path, body, change) {
  const headers = {};
  const key = store.get("key", "");
  if (key) headers.Authorization = "Bearer " + key;
  if (change) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) throw new Error("This server needs an API key: enter it at the top.");
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try {
      const b = await r.json();
      if (b.error) msg = (change && b.field && b.field !== "body" ? b.field + ": " : "") + b.error;
    } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

async function api(path, { raw = false } = {}) {
  const r = await request("GET", path);
  return raw ? r : r.json();
}

/** A request that changes something: JSON body, the answer's JSON (null for 204). */
async function send(method, path, body) {
  const r = await request(method, path, body, true);
  return r.status === 204 ? null : r.json();
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

// ---- settings: links ---------------------------------------------------------------------

/** A table cell with `text`, or with the given child nodes. */
function cell(content, cls) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "–";
  if (cls) td.className = cls;
  return td;
}

function button(label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

async function copy(text, statusId) {
  try {
    await navigator.clipboard.writeText(text);
    setStatus(statusId, "Copied.");
  } catch {
    setStatus(statusId, "Copy it by hand: " + text);
  }
}

let links = [];

/** Where ads and networks reach this server: the address the operator gave, else this page's. */
function publicBase() {
  return (store.get("public", "") || location.origin).replace(/\/+$/, "");
}

async function loadLinks() {
  try {
    links = (await api("/api/links")).links;
    renderLinks();
  } catch (err) {
    setStatus("links-status", err.message, true);
  }
}

function renderLinks() {
  const rows = links.map((l) => {
    const tr = document.createElement("tr");
    tr.dataset.slug = l.slug;
    const url = publicBase() + l.path;
    const tracking = document.createElement("span");
    const code = document.createElement("code");
    code.className = "tracking-url";
    code.textContent = url;
    tracking.append(code, " ", button("Copy", () => copy(url, "links-status")));
    const actions = document.createElement("span");
    actions.append(
      button("Edit", () => editLink(l), "edit"),
      button(l.enabled ? "Disable" : "Enable", () => setLink(l.slug, { enabled: !l.enabled }), "toggle"),
      button("Delete", () => deleteLink(l.slug), "delete"),
    );
    tr.append(cell(l.slug), cell(tracking), cell(l.url), cell(l.source), cell(l.campaign),
      cell(money(l.cost), "num"), cell(l.enabled ? "Enabled" : "Disabled", "link-state"), cell(actions));
    return tr;
  });
  $("links").tBodies[0].replaceChildren(...rows);
  if (!links.length) setStatus("links-status", "No links yet.");
}

function editLink(l) {
  const form = $("link-form");
  form.dataset.editing = l.slug;
  $("link-slug").value = l.slug;
  $("link-slug").disabled = true;
  $("link-url").value = l.url;
  $("link-source").value = l.source ?? "";
  $("link-campaign").value = l.campaign ?? "";
  $("link-cost").value = l.cost;
  for (let i = 1; i <= 5; i++) $("link-sub" + i).value = l["sub" + i] ?? "";
  $("link-save").textContent = "Save link";
  $("link-cancel").hidden = false;
}

function resetLinkForm() {
  const form = $("link-form");
  form.reset();
  delete form.dataset.editing;
  $("link-slug").disabled = false;
  $("link-save").textContent = "Create link";
  $("link-cancel").hidden = true;
}

async function saveLink(e) {
  e.preventDefault();
  const editing = $("link-form").dataset.editing;
  const text = (id) => $(id).value.trim() || null;
  const body = { url: $("link-url").value.trim(), source: text("link-source"), campaign: text("link-campaign"),
    cost: text("link-cost") ?? "0" };
  for (let i = 1; i <= 5; i++) body["sub" + i] = text("link-sub" + i);
  try {
    if (editing) {
      await send("PATCH", "/api/links/" + encodeURIComponent(editing), body);
      setStatus("links-status", `Saved link ${editing}.`);
    } else {
      const slug = text("link-slug");
      if (slug) body.slug = slug;
      const l = await send("POST", "/api/links", body);
      setStatus("links-status", `Created link ${l.slug}: ${publicBase() + l.path}`);
    }
    resetLinkForm();
    await loadLinks();
  } catch (err) {
    setStatus("links-status", err.message, true);
  }
}

async function setLink(slug, change) {
  try {
    await send("PATCH", "/api/links/" + encodeURIComponent(slug), change);
    await loadLinks();
  } catch (err) {
    setStatus("links-status", err.message, true);
  }
}

async function deleteLink(slug) {
  if (!confirm(`Delete link ${slug}? Its clicks stay; visits to it will be 404.`)) return;
  try {
    await send("DELETE", "/api/links/" + encodeURIComponent(slug));
    await loadLinks();
  } catch (err) {
    setStatus("links-status", err.message, true);
  }
}

// ---- settings: webhooks --------------------------------------------------------------------

let hooks = [];
let shownDeliveries = null;

async function loadHooks() {
  try {
    hooks = (await api("/api/webhooks")).webhooks;
    renderHooks();
  } catch (err) {
    setStatus("hooks-status", err.message, true);
  }
}

function renderHooks() {
  const rows = hooks.map((h) => {
    const tr = document.createElement("tr");
    tr.dataset.id = h.id;
    const box = (event) => {
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = h.events.includes(event);
      cb.className = "event-" + event;
      cb.setAttribute("aria-label", `${event} events to ${h.url}`);
      cb.addEventListener("change", () => {
        const events = ["conversion", "refund"].filter((ev) => tr.querySelector(".event-" + ev).checked);
        if (!events.length) {
          cb.checked = true;
          setStatus("hooks-status", "An endpoint needs at least one event; delete it instead.", true);
          return;
        }
        setHook(h.id, { events });
      });
      return cb;
    };
    const actions = document.createElement("span");
    actions.append(button("Deliveries", () => loadDeliveries(h.id), "deliveries"));
    if (h.disabled) actions.append(button("Enable", () => setHook(h.id, { enabled: true }), "enable"));
    actions.append(button("Delete", () => deleteHook(h.id), "delete"));
    tr.append(cell(h.url), cell(box("conversion")), cell(box("refund")), cell(h.description),
      cell(h.disabled ? "Disabled (answered 410)" : "Active"), cell(actions));
    return tr;
  });
  $("hooks").tBodies[0].replaceChildren(...rows);
  if (!hooks.length) setStatus("hooks-status", "No webhook endpoints yet.");
}

async function createHook(e) {
  e.preventDefault();
  const events = ["conversion", "refund"].filter((ev) => $("hook-" + ev).checked);
  if (!events.length) {
    setStatus("hooks-status", "Choose at least one event.", true);
    return;
  }
  const body = { url: $("hook-url").value.trim(), events };
  const description = $("hook-description").value.trim();
  if (description) body.description = description;
  try {
    const h = await send("POST", "/api/webhooks", body);
    $("hook-secret-value").textContent = h.secret;
    $("hook-secret").hidden = false;
    $("hook-form").reset();
    setStatus("hooks-status", `Added endpoint ${h.id}.`);
    await loadHooks();
  } catch (err) {
    setStatus("hooks-status", err.message, true);
  }
}

async function setHook(id, change) {
  try {
    await send("PATCH", "/api/webhooks/" + encodeURIComponent(id), change);
    setStatus("hooks-status", "Saved.");
    await loadHooks();
  } catch (err) {
    setStatus("hooks-status", err.message, true);
    await loadHooks();
  }
}

async function deleteHook(id) {
  if (!confirm("Delete this webhook endpoint? Its pending deliveries stop.")) return;
  try {
    await send("DELETE", "/api/webhooks/" + encodeURIComponent(id));
    if (shownDeliveries === id) { shownDeliveries = null; $("deliveries-box").hidden = true; }
    await loadHooks();
  } catch (err) {
    setStatus("hooks-status", err.message, true);
  }
}

async function loadDeliveries(id) {
  shownDeliveries = id;
  try {
    const d = await api("/api/webhooks/" + encodeURIComponent(id) + "/deliveries?limit=20");
    $("deliveries-title").textContent = "Recent deliveries to " + d.endpoint.url;
    const rows = d.deliveries.map((m) => {
      const tr = document.createElement("tr");
      tr.dataset.id = m.id;
      const last = m.attempts[m.attempts.length - 1];
      const answer = last ? (last.status ?? last.error ?? "–") : "–";
      tr.append(cell(m.created), cell(m.type, "type"), cell(m.status, "delivery-status"), cell(count(m.attempts.length), "num"),
        cell(String(answer)), cell(m.next_attempt),
        cell(button("Retry now", () => retryDelivery(id, m.id), "retry")));
      return tr;
    });
    $("deliveries").tBodies[0].replaceChildren(...rows);
    $("deliveries-box").hidden = false;
    if (!rows.length) setStatus("hooks-status", "No deliveries yet.");
  } catch (err) {
    setStatus("hooks-status", err.message, true);
  }
}

async function retryDelivery(id, message) {
  try {
    await send("POST", `/api/webhooks/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(message)}/retry`);
    setStatus("hooks-status", "Retrying.");
    setTimeout(() => loadDeliveries(id), 1000);
  } catch (err) {
    setStatus("hooks-status", err.message, true);
  }
}

// ---- settings: postback URL builder -------------------------------------------------------

/** Each network's parameter for the tracker's click ID. */
const NETWORKS = { clickbank: "tid", jvzoo: "tid", warriorplus: "sid", digistore24: "cid", custom: "subid" };

function setNetwork() {
  const param = NETWORKS[$("pb-network").value];
  $("pb-param").value = param;
  $("pb-macro").value = "{" + param + "}";
  renderBuilder();
}

function renderBuilder() {
  const network = $("pb-network").value;
  const param = $("pb-param").value.trim() || "subid";
  const macro = $("pb-macro").value.trim();
  const token = $("pb-token").value.trim();
  const tail = token ? "&token=" + encodeURIComponent(token) : "";
  const base = publicBase();
  $("pb-offer").textContent = `&${param}={cid}`;
  $("pb-conversion").textContent =
    `${base}/api/conversion?cid=${macro}&amount=${$("pb-amount").value.trim()}&txid=${$("pb-txid").value.trim()}${tail}`;
  $("pb-refund").textContent =
    `${base}/api/conversion/refund?cid=${macro}&amount=${$("pb-amount").value.trim()}&ref=${$("pb-txid").value.trim()}${tail}`;
  $("pb-ipn").textContent = network === "custom" ? "–" : `${base}/api/ipn/${network}`;
}

function initSettings() {
  // Examples as placeholders, set here: the page itself names no other origin (its test).
  $("public-base").placeholder = "https://track.example.com";
  $("link-url").placeholder = "https://offer.example/?clickid={cid}";
  $("hook-url").placeholder = "https://crm.example.com/hooks";
  $("public-base").value = store.get("public", "");
  $("public-form").addEventListener("submit", (e) => {
    e.preventDefault();
    store.set("public", $("public-base").value.trim());
    renderLinks();
    renderBuilder();
  });
  $("link-form").addEventListener("submit", saveLink);
  $("link-cancel").addEventListener("click", resetLinkForm);
  $("hook-form").addEventListener("submit", createHook);
  $("hook-secret-copy").addEventListener("click", () => copy($("hook-secret-value").textContent, "hooks-status"));
  $("pb-network").addEventListener("change", setNetwork);
  for (const id of ["pb-param", "pb-macro", "pb-amount", "pb-txid", "pb-token"]) {
    $(id).addEventListener("input", renderBuilder);
  }
  for (const b of document.querySelectorAll("button.copy")) {
    b.addEventListener("click", () => copy($(b.dataset.copy).textContent, "links-status"));
  }
  setNetwork();
  loadLinks();
  loadHooks();
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
    loadStats(); loadSources(); loadCohorts(); loadLinks(); loadHooks();
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
  initSettings();
}

init();
