// The medseg review page: a case list, NiiVue showing each scan with its mask, and the reviewer's
// decisions sent to the server (which keeps them in OUT/review.csv). Plain JavaScript; NiiVue is
// the bundled /static/niivue.umd.js.
(function () {
  "use strict";
  const PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
    [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]];
  const MARKS = { "accepted": "\u2713 accepted", "rejected": "\u2717 rejected", "needs-edit": "\u270E needs edit" };
  const list = document.getElementById("case-list");
  const flaggedOnly = document.getElementById("flagged-only");
  const message = document.getElementById("viewer-message");
  const note = document.getElementById("note");
  const saved = document.getElementById("saved");
  let cases = [];
  let labels = [];
  let current = -1;
  let loading = 0;

  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], crosshairColor: [0.3, 0.8, 1, 0.8], crosshairWidth: 1, show3Dcrosshair: false,
    isColorbar: false, dragAndDropEnabled: false, loadingText: "", multiplanarShowRender: 0,  // slices only: no 3D render
  });
  const canvas = document.getElementById("gl");
  const ready = nv.attachToCanvas(canvas);

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
  }
  function caseUrl(c, what) { return "/api/cases/" + encodeURIComponent(c.case) + "/" + what; }

  function renderList() {
    list.innerHTML = cases.map((c, i) => {
      if (flaggedOnly.checked && !c.flagged && i !== current) return "";
      const mark = c.review ? '<span class="mark ' + esc(c.review.decision) + '">' + esc(MARKS[c.review.decision] || c.review.decision) + "</span>" : "";
      const cls = (i === current ? "current " : "") + (c.status === "failed" ? "failed" : "");
      return '<li data-index="' + i + '" data-case="' + esc(c.case) + '" class="' + cls + '"' + (c.flagged ? ' data-flagged="1"' : "") +
        '><span class="flag" title="flagged">' + (c.flagged ? "\u2691" : "") + '</span><span class="name">' + esc(c.case) + "</span>" + mark + "</li>";
    }).join("");
    const reviewed = cases.filter((c) => c.review).length;
    const flagged = cases.filter((c) => c.flagged).length;
    document.getElementById("progress").textContent = reviewed + " of " + cases.length + " reviewed; " + flagged + " flagged";
  }

  function renderFacts(c) {
    const items = [];
    for (const f of c.flags) items.push('<li class="flag">' + esc(f) + "</li>");
    for (const f of c.batchFlags) items.push('<li class="batch-flag">' + esc(f) + "</li>");
    for (const w of c.warnings) items.push('<li class="warning">' + esc(w) + "</li>");
    if (c.message) items.push("<li>" + esc(c.message) + "</li>");
    const volumes = Object.keys(c.volumes).map((k) => esc(k) + " " + Number(c.volumes[k]).toFixed(1) + " mL").join(", ");
    const confidence = c.confidence === null ? "" : "; confidence " + Number(c.confidence).toFixed(2);
    document.getElementById("facts").innerHTML = "<div>" + esc(c.status) + (volumes ? "; " + volumes : "") + confidence +
      "</div>" + (items.length ? "<ul>" + items.join("") + "</ul>" : "");
    for (const button of document.querySelectorAll("#decide button")) {
      button.classList.toggle("chosen", Boolean(c.review && c.review.decision === button.dataset.decision));
    }
    note.value = c.review ? c.review.note : "";
    saved.textContent = c.review ? "saved " + c.review.time : "";
  }

  function labelColormap() {
    const n = Math.max(labels.length + 1, PALETTE.length);
    const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
    for (let i = 0; i < n; i++) {
      const rgb = PALETTE[i % PALETTE.length];
      cm.R.push(rgb[0]); cm.G.push(rgb[1]); cm.B.push(rgb[2]); cm.A.push(i === 0 ? 0 : 255); cm.I.push(i);
      cm.labels.push(i === 0 ? "" : labels[i - 1] || "label " + i);
    }
    return cm;
  }

  async function show(index) {
    if (index < 0 || index >= cases.length) return;
    current = index;
    const c = cases[index];
    document.getElementById("case-name").textContent = c.case;
    document.body.dataset.loaded = "";
    renderList();
    renderFacts(c);
    const item = list.querySelector('li[data-index="' + index + '"]');
    if (item) item.scrollIntoView({ block: "nearest" });
    const token = ++loading;
    await ready;
    if (token !== loading) return;
    canvas.style.visibility = c.hasMask ? "visible" : "hidden";
    if (!c.hasMask) {  // a failed case: its scan is often what failed, so only the reason is shown
      message.textContent = c.case + ": no mask (" + c.status + ")" + (c.message ? ": " + c.message : "");
      document.body.dataset.loaded = c.case;
      return;
    }
    message.textContent = "loading " + c.case + " ...";
    const volumes = [
      { url: caseUrl(c, "scan.nii.gz"), name: "scan.nii.gz" },
      { url: caseUrl(c, "mask.nii.gz"), name: "mask.nii.gz", opacity: Number(document.getElementById("opacity").value) },
    ];
    try {
      await nv.loadVolumes(volumes);
    } catch (error) {
      if (token === loading) message.textContent = c.case + ": the scan could not be shown (" + error + ")";
      return;
    }
    if (token !== loading) return;
    if (nv.volumes.length > 1) nv.volumes[1].setColormapLabel(labelColormap());
    applyWindow();
    message.textContent = "";
    document.body.dataset.loaded = c.case;
  }

  function applyWindow() {
    if (!nv.volumes.length) return;
    const scan = nv.volumes[0];
    const choice = document.getElementById("window").value;
    if (choice === "auto") {
      scan.cal_min = scan.robust_min; scan.cal_max = scan.robust_max;
    } else {
      const [width, level] = choice.split(",").map(Number);
      scan.cal_min = level - width / 2; scan.cal_max = level + width / 2;
    }
    nv.updateGLVolume();
  }

  function setView(view) {
    const types = { axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal, multi: nv.sliceTypeMultiplanar };
    nv.setSliceType(types[view]);
    for (const b of document.querySelectorAll("[data-view]")) b.classList.toggle("active", b.dataset.view === view);
  }

  async function decide(decision) {
    const c = cases[current];
    if (!c) return;
    saved.textContent = "saving ...";
    const response = await fetch(caseUrl(c, "review"), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ decision: decision, note: note.value }),
    });
    if (!response.ok) { saved.textContent = "not saved: " + (await response.text()); return; }
    c.review = await response.json();
    renderList();
    renderFacts(c);
  }

  function step(direction, flaggedOnlyStep) {
    for (let i = current + direction; i >= 0 && i < cases.length; i += direction) {
      if ((!flaggedOnlyStep && !flaggedOnly.checked) || cases[i].flagged) { show(i); return; }
    }
  }

  list.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-index]");
    if (item) show(Number(item.dataset.index));
  });
  flaggedOnly.addEventListener("change", renderList);
  document.getElementById("opacity").addEventListener("input", (event) => {
    if (nv.volumes.length > 1) nv.setOpacity(1, Number(event.target.value));
  });
  document.getElementById("window").addEventListener("change", applyWindow);
  for (const b of document.querySelectorAll("[data-view]")) b.addEventListener("click", () => setView(b.dataset.view));
  for (const b of document.querySelectorAll("[data-decision]")) b.addEventListener("click", () => decide(b.dataset.decision));
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      j: () => step(1, false), k: () => step(-1, false), f: () => step(1, true),
      a: () => decide("accepted"), r: () => decide("rejected"), e: () => decide("needs-edit"),
      1: () => setView("axial"), 2: () => setView("coronal"), 3: () => setView("sagittal"), 4: () => setView("multi"),
    };
    const action = actions[event.key];
    if (action) { event.preventDefault(); action(); }
  });

  fetch("/api/cases").then((r) => r.json()).then((data) => {
    cases = data.cases;
    labels = data.labels;
    document.title = "medseg review: " + data.folder;
    renderList();
    ready.then(() => setView("multi"));
    const first = cases.findIndex((c) => c.hasMask);
    if (first >= 0) show(first); else message.textContent = "no case has a mask to show";
  });
})();
