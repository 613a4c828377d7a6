// The cases table of the medseg report: built from the JSON in #case-data, sortable, filterable,
// and the flagged cases exported as CSV. Plain JavaScript, nothing fetched.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("case-data").textContent);
  const cases = data.cases;
  const columns = [
    { key: "case", title: "case", value: (c) => c.case },
    { key: "status", title: "status", value: (c) => c.status },
    { key: "flags", title: "flags", value: (c) => c.flags.length + c.batchFlags.length, html: flagsCell },
    { key: "confidence", title: "confidence", num: true, value: (c) => c.confidence, digits: 3 },
  ];
  for (const label of data.labels) {
    columns.push({ key: "vol:" + label, title: label + " mL", num: true, value: (c) => valueOf(c.volumes, label), digits: 1 });
  }
  for (const label of data.scoreLabels) {
    columns.push({ key: "dice:" + label, title: label + " Dice", num: true, value: (c) => valueOf(c.dice, label), digits: 3 });
    columns.push({ key: "hd95:" + label, title: label + " HD95 mm", num: true, value: (c) => valueOf(c.hd95, label), digits: 1 });
  }
  columns.push({ key: "warnings", title: "warnings", value: (c) => c.warnings.join("; ") + " " + c.message, html: notesCell });
  columns.push({ key: "seconds", title: "seconds", num: true, value: (c) => c.seconds, digits: 1 });
  columns.push({ key: "preview", title: "preview", value: () => null, html: thumbCell, unsortable: true });

  const table = document.getElementById("cases");
  const body = table.tBodies[0];
  const filter = document.getElementById("filter");
  const flaggedOnly = document.getElementById("flagged-only");
  const shown = document.getElementById("shown");
  let sortKey = null;
  let sortDir = 1;

  function valueOf(map, key) { return map && Object.prototype.hasOwnProperty.call(map, key) ? map[key] : null; }
  function esc(text) {
    return String(text).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
  }
  function list(items, cls) { return items.map((t) => '<li class="' + cls + '">' + esc(t) + "</li>").join(""); }
  function flagsCell(c) {
    const items = list(c.flags, "flag") + list(c.batchFlags, "batch-flag");
    return items ? "<ul>" + items + "</ul>" : "";
  }
  function notesCell(c) {
    const items = list(c.warnings, "warning") + (c.message ? list([c.message], "message") : "");
    return items ? "<ul>" + items + "</ul>" : "";
  }
  function thumbCell(c) {
    return c.thumb ? '<img class="thumb" loading="lazy" alt="preview of ' + esc(c.case) + '" src="' + c.thumb + '">'
                   : '<div class="no-preview">no preview</div>';
  }
  function cell(column, c) {
    if (column.html) return "<td>" + column.html(c) + "</td>";
    const v = column.value(c);
    if (column.num) return '<td class="num">' + (v === null || v === undefined ? "" : Number(v).toFixed(column.digits)) + "</td>";
    return "<td>" + esc(v === null || v === undefined ? "" : v) + "</td>";
  }
  function searchable(c) {
    return [c.case, c.status, c.input, c.message].concat(c.flags, c.batchFlags, c.warnings).join("\n").toLowerCase();
  }
  const haystack = cases.map(searchable);

  function render() {
    const needle = filter.value.trim().toLowerCase();
    let rows = cases.map((c, i) => i).filter((i) => (!flaggedOnly.checked || cases[i].flagged) &&
                                                    (!needle || haystack[i].includes(needle)));
    if (sortKey !== null) {
      const column = columns.find((col) => col.key === sortKey);
      rows.sort((a, b) => compare(column.value(cases[a]), column.value(cases[b]), column.num) * sortDir || a - b);
    }
    body.innerHTML = rows.map((i) => {
      const c = cases[i];
      const cls = (c.flagged ? "flagged " : "") + (c.status === "failed" ? "failed" : "");
      return '<tr data-case="' + esc(c.case) + '" class="' + cls + '">' + columns.map((col) => cell(col, c)).join("") + "</tr>";
    }).join("");
    shown.textContent = rows.length + " of " + cases.length + " case(s) shown";
  }
  function compare(a, b, numeric) {
    const missingA = a === null || a === undefined || a === "";
    const missingB = b === null || b === undefined || b === "";
    if (missingA || missingB) return missingA === missingB ? 0 : missingA ? sortDir : -sortDir;  // blanks last
    if (numeric) return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  table.tHead.innerHTML = "<tr>" + columns.map((col) => '<th data-key="' + esc(col.key) + '"' +
    (col.num ? ' class="num"' : "") + ">" + esc(col.title) + "</th>").join("") + "</tr>";
  table.tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    const column = th && columns.find((col) => col.key === th.dataset.key);
    if (!column || column.unsortable) return;
    sortDir = sortKey === column.key ? -sortDir : 1;
    sortKey = column.key;
    for (const other of table.tHead.querySelectorAll("th")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
    render();
  });
  filter.addEventListener("input", render);
  flaggedOnly.addEventListener("change", render);
  for (const dot of document.querySelectorAll("svg.strip circle[data-case]")) {
    dot.addEventListener("click", () => { filter.value = dot.dataset.case; render(); });
  }

  function csvField(value) {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function flaggedCsv() {
    const header = ["case", "status", "flags", "batch_flags", "confidence", "volumes_ml", "input"];
    const lines = [header.join(",")];
    for (const c of cases.filter((x) => x.flagged)) {
      const volumes = Object.keys(c.volumes).map((k) => k + "=" + c.volumes[k]).join(";");
      lines.push([c.case, c.status, c.flags.join(";"), c.batchFlags.join(";"), c.confidence, volumes, c.input]
        .map(csvField).join(","));
    }
    return lines.join("\n") + "\n";
  }
  document.getElementById("export-flagged").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([flaggedCsv()], { type: "text/csv" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = "flagged-cases.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });

  render();
  document.body.dataset.ready = "1";
})();
