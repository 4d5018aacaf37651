// The Batches view: plain JS, no build. Data comes only from this app's JSON endpoints (same origin,
// Airflow's session cookie); every value is put into the page as text, never as HTML.
"use strict";

const KINDS = ["succeeded", "errored", "canceled", "expired", "processing"];
const UI_BASE = "../";
const REFRESH_MS = 30000; // the Airflow UI, relative to this app's mount point
const PALETTE = ["#1c7ed6", "#ae3ec9", "#0ca678", "#f76707", "#d6336c", "#5c940d", "#1098ad", "#7048e8"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function usd(value) {
  if (value === null || value === undefined) return "–";
  return "$" + Number(value).toFixed(Math.abs(value) < 1 ? 4 : 2);
}

function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function shortWhen(value) {
  return el("span", { title: when(value), text: value ? when(value).slice(5, 16) : "–" });
}

function shortPath(uri) {
  return uri.length > 36 ? "…" + uri.slice(-35) : uri;
}

function stateBadge(state) {
  return el("span", { class: `state state-${state || "none"}`, text: state || "–" });
}

function progressBar(counts, total) {
  const sum = total || KINDS.reduce((acc, kind) => acc + (counts[kind] || 0), 0) || 1;
  const bar = el("div", {
    class: "bar",
    "data-counts": JSON.stringify(counts),
    title: KINDS.map((kind) => `${kind} ${counts[kind] || 0}`).join(", "),
  });
  for (const kind of KINDS) {
    if (counts[kind]) bar.append(el("span", { class: `seg-${kind}`, style: `width:${(100 * counts[kind]) / sum}%` }));
  }
  return bar;
}

function countsText(counts) {
  return KINDS.filter((kind) => counts[kind]).map((kind) => `${counts[kind]} ${kind}`).join(" · ") || "0";
}

function consoleLink(url, label) {
  return url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: label }) : null;
}

function taskInstanceLink(job) {
  return el("a", { href: UI_BASE + job.task_instance_url, target: "_top", text: "Task instance" });
}

function jobViewHref(job) {
  const query = new URLSearchParams({
    dag_id: job.dag_id, run_id: job.run_id, task_id: job.task_id, map_index: String(job.map_index),
  });
  return `job?${query}`;
}

function jobLabel(job) {
  const task = job.map_index >= 0 ? `${job.task_id} [${job.map_index}]` : job.task_id;
  return [el("strong", { text: job.dag_id }), el("br"), el("span", { class: "muted", text: job.run_id }), el("br"), task];
}

function batchesCell(job) {
  const cell = el("div");
  for (const round of job.rounds) {
    for (const batch of round.batches) {
      cell.append(el("div", { class: "batch", "data-batch-id": batch.batch_id || "" },
        el("code", { text: `R${round.number}${batch.wave > 1 ? " W" + batch.wave : ""} ${batch.batch_id || "(not created)"}` }),
        progressBar(batch.counts, batch.request_count)));
    }
  }
  return cell;
}

function jobRow(job) {
  const rounds = job.rounds.length;
  const key = [job.dag_id, job.run_id, job.task_id, job.map_index].join("|");
  return el("tr", { class: "job", "data-job-key": key },
    el("td", {}, jobLabel(job)),
    el("td", { class: "job-state" }, stateBadge(job.state), el("br"), el("span", { class: "muted", text: `task ${job.ti_state || "–"}` })),
    el("td", { class: "job-rounds", "data-rounds": rounds, "data-waves": job.waves || 0,
      text: `${rounds} round${rounds === 1 ? "" : "s"} · ${job.waves || 0} wave${job.waves === 1 ? "" : "s"}` }),
    el("td", {}, batchesCell(job)),
    el("td", { class: "num job-counts", "data-counts": JSON.stringify(job.counts || {}) },
      String(job.request_count ?? "–"), el("br"), el("span", { class: "muted", text: job.counts ? countsText(job.counts) : "" })),
    el("td", { class: "nowrap" }, shortWhen(job.created_at), el("br"), shortWhen(job.ended_at)),
    el("td", { class: "num" },
      el("span", { class: "job-cost-estimated", "data-usd": job.estimated_cost_usd ?? "", text: `est. ≤ ${usd(job.estimated_cost_usd)}` }),
      el("br"),
      el("span", { class: "job-cost-actual", "data-usd": job.actual_cost_usd ?? "", text: usd(job.actual_cost_usd) })),
    el("td", { class: "job-results" }, job.results ? el("code", { title: job.results.destination, "data-destination": job.results.destination, text: shortPath(job.results.destination) }) : "–"),
    el("td", {}, el("a", { href: jobViewHref(job), text: "Job" }), el("br"), taskInstanceLink(job), el("br"),
      consoleLink(job.console_url, "Console")),
  );
}

function spendChart(spend) {
  const days = spend.days;
  const colors = Object.fromEntries(spend.dags.map((dag, index) => [dag, PALETTE[index % PALETTE.length]]));
  const perDay = (series, day) => Object.values(series[day] || {}).reduce((a, b) => a + b, 0);
  const top = Math.max(1e-9, ...days.map((day) => Math.max(perDay(spend.actual, day), perDay(spend.estimated, day))));
  const slot = 22, height = 140, left = 56, bottom = 22;
  const width = left + slot * days.length + 8;
  const y = (value) => height - (value / top) * (height - 10);
  const chart = svg("svg", { class: "chart-svg", id: "spend-svg", width, height: height + bottom, role: "img",
    "aria-label": "Actual and estimated spend per day" });
  chart.append(svg("text", { x: 0, y: 12 }, usd(top)), svg("text", { x: 0, y: height }, "$0"));
  chart.append(svg("line", { x1: left - 4, x2: width, y1: height, y2: height, stroke: "currentColor", "stroke-opacity": 0.3 }));
  days.forEach((day, index) => {
    const x = left + index * slot;
    let base = height;
    for (const dag of spend.dags) {
      const value = (spend.actual[day] || {})[dag];
      if (!value) continue;
      const top_ = base - (height - y(value));
      const rect = svg("rect", { class: "actual", x: x + 3, y: top_, width: slot - 6, height: base - top_, fill: colors[dag],
        "data-day": day, "data-dag": dag, "data-usd": value });
      rect.append(svg("title", {}, `${day} ${dag}: actual ${usd(value)}`));
      chart.append(rect);
      base = top_;
    }
    const estimate = perDay(spend.estimated, day);
    if (estimate) {
      const mark = svg("rect", { class: "estimate", x: x + 1, y: y(estimate), width: slot - 2, height: height - y(estimate),
        "data-day": day, "data-usd": estimate });
      mark.append(svg("title", {}, `${day}: estimated at most ${usd(estimate)}`));
      chart.append(mark);
    }
    if (index % 7 === days.length % 7 || index === days.length - 1) {
      chart.append(svg("text", { x, y: height + 14 }, day.slice(5)));
    }
  });
  const legend = spend.dags.map((dag) => el("span", {}, el("i", { style: `background:${colors[dag]}` }), dag));
  legend.push(el("span", {}, el("i", { style: "border:1px dashed currentColor" }), "estimated (upper bound)"));
  return { chart, legend };
}

function showList(body) {
  const jobs = body.jobs;
  document.getElementById("status").textContent = jobs.length
    ? `${jobs.length} job${jobs.length === 1 ? "" : "s"} in the last ${body.days} days.`
    : `No batch jobs in the last ${body.days} days in the DAGs you can read.`;
  const { chart, legend } = spendChart(body.spend);
  document.getElementById("spend-chart").replaceChildren(chart);
  document.getElementById("spend-legend").replaceChildren(...legend);
  document.getElementById("spend-total").textContent =
    `actual ${usd(body.spend.total_actual_usd)} · estimated ≤ ${usd(body.spend.total_estimated_usd)}`;
  document.querySelector("#jobs tbody").replaceChildren(...jobs.map(jobRow));
  document.getElementById("spend-section").hidden = false;
  document.getElementById("jobs-section").hidden = false;
}

function showJob(job) {
  document.getElementById("title").textContent = `Batch job · ${job.dag_id} / ${job.task_id}`;
  document.getElementById("subtitle").textContent = "One task instance's batch job, from Airflow's own records. Read-only.";
  document.getElementById("status").textContent = "";
  const section = document.getElementById("job-section");
  const facts = [
    ["DAG", job.dag_id], ["Run", job.run_id], ["Task", job.task_id], ["Map index", job.map_index],
    ["State", stateBadge(job.state)], ["Task instance", job.ti_state || "–"], ["Requests", job.request_count ?? "–"],
    ["Final counts", job.counts ? countsText(job.counts) : "not final yet"], ["Rounds", job.rounds.length],
    ["Waves", job.waves || 0], ["Created", when(job.created_at)], ["Ended", when(job.ended_at)],
    ["Estimated cost", job.estimated_cost_usd === null ? "–" : `at most ${usd(job.estimated_cost_usd)}`],
    ["Actual cost", usd(job.actual_cost_usd) + (job.unpriced_models && job.unpriced_models.length ? ` + unpriced ${job.unpriced_models.join(", ")}` : "")],
    ["Results", job.results ? job.results.destination : "not transferred yet"], ["Record kept in", job.store],
  ];
  const list = el("dl", { id: "job-facts" }, facts.map(([name, value]) => [el("dt", { text: name }), el("dd", {}, value)]));
  const links = el("p", {}, taskInstanceLink(job), " · ", consoleLink(job.console_url, "Anthropic Console"), " · ",
    el("a", { href: "./", text: "All jobs" }));
  const rounds = job.rounds.map((round) => el("div", { class: "round", "data-round": round.number },
    el("h3", { text: `Round ${round.number}: ${round.request_count} requests, ${round.batches.length} batch${round.batches.length === 1 ? "" : "es"}` +
      (round.held_back ? `, ${round.held_back} held back` : "") +
      (Object.keys(round.redriven).length ? ` · re-driven: ${countsText(round.redriven)}` : "") }),
    el("table", {}, el("thead", {}, el("tr", {}, ["Batch", "Wave", "Created", "Progress", "Counts", ""].map((name) => el("th", { text: name })))),
      el("tbody", {}, round.batches.map((batch) => el("tr", { "data-batch-id": batch.batch_id || "" },
        el("td", {}, el("code", { text: batch.batch_id || "(not created)" })),
        el("td", { class: "num", text: batch.wave || "–" }),
        el("td", { text: when(batch.created_at) }),
        el("td", {}, progressBar(batch.counts, batch.request_count)),
        el("td", { text: countsText(batch.counts) + (batch.ended ? "" : " (not ended)") }),
        el("td", {}, consoleLink(batch.console_url, "Console"))))))));
  const errors = job.error_types.length
    ? el("ol", { id: "error-types" }, job.error_types.map((entry) =>
        el("li", { "data-type": entry.type, "data-count": entry.count },
          `${entry.type}: ${entry.count}`,
          el("span", { class: "muted", text: entry.source === "re-driven" ? " (re-driven to a later round)" :
            ` (final, round ${entry.rounds.join(", ") || "?"})` }),
          entry.example ? [el("br"), el("q", { class: "muted", text: entry.example })] : null)))
    : el("p", { id: "error-types", class: "muted", text: "No failed requests recorded." });
  const files = job.results
    ? el("ul", {}, job.results.files.map((file) => el("li", {}, el("code", { text: file.uri }), ` ${file.results} results, ${file.bytes} bytes`)))
    : null;
  section.replaceChildren(list, links, el("h2", { text: "Rounds and batches" }), ...rounds,
    el("h2", { text: "Top failure types" }), errors, files ? el("h2", { text: "Result files" }) : null, files);
  section.hidden = false;
}

function showProblem(error) {
  const status = document.getElementById("status");
  if (error && error.status === 401) {
    const next = encodeURIComponent(window.top === window ? location.href : top.location.href);
    status.replaceChildren("Sign in to Airflow to see batch jobs: ",
      el("a", { href: `${UI_BASE}auth/login?next=${next}`, target: "_top", text: "sign in" }));
  } else {
    status.textContent = error && error.message ? error.message : "Could not load the batch jobs.";
  }
  status.classList.add("problem");
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).detail || message; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status });
  }
  return response.json();
}

// The query as sent: Airflow 3.1's task instance tab puts the run id in unencoded, and a "+" in it
// (every timestamped run id has one) is a plus, not the space URLSearchParams would make of it.
function rawParams(search) {
  const params = new Map();
  for (const part of search.replace(/^\?/, "").split("&")) {
    if (!part) continue;
    const cut = part.indexOf("=");
    const name = decodeURIComponent(cut < 0 ? part : part.slice(0, cut));
    params.set(name, cut < 0 ? "" : decodeURIComponent(part.slice(cut + 1)));
  }
  return params;
}

async function main() {
  const params = rawParams(location.search);
  try {
    let jobs;
    if (location.pathname.endsWith("/job")) {
      const query = new URLSearchParams();
      for (const name of ["dag_id", "run_id", "task_id", "map_index"]) if (params.has(name)) query.set(name, params.get(name));
      const job = await getJSON(`api/job?${query}`);
      showJob(job);
      jobs = [job];
    } else {
      const body = await getJSON(`api/jobs?days=${encodeURIComponent(params.get("days") || "28")}`);
      showList(body);
      jobs = body.jobs;
    }
    document.body.dataset.loaded = "true";
    // Read Airflow's records again while a job is in flight (no API call: the view makes none).
    if (jobs.some((job) => job.state === "processing")) setTimeout(main, REFRESH_MS);
  } catch (error) {
    showProblem(error);
    document.body.dataset.loaded = "error";
  }
}

main();
