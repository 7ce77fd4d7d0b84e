// The review queue, driven by the keyboard: a accept, r reject, c or a digit correct,
// j/k move, ? help. Decisions are POSTed one at a time with the session's CSRF token.
(() => {
  "use strict";
  const filter = document.getElementById("label-filter");
  if (filter) filter.addEventListener("change", () => filter.form.submit());
  const root = document.getElementById("review");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const shortcuts = JSON.parse(document.getElementById("shortcuts").textContent);
  const labelOfKey = Object.fromEntries(shortcuts.filter(([, k]) => k).map(([l, k]) => [k, l]));
  const details = [...document.querySelectorAll(".detail")];
  const rows = [...document.querySelectorAll(".qitem")];
  const picker = document.getElementById("picker");
  const pickerFilter = document.getElementById("picker-filter");
  const pickerItems = [...document.querySelectorAll("#picker-list li")];
  const help = document.getElementById("help");
  const toastBox = document.getElementById("toast");
  const offset = Number(root.dataset.offset);
  const limit = Number(root.dataset.limit);
  let current = 0;
  let decided = 0;
  let busy = false;

  function toast(text, isError = false) {
    toastBox.textContent = text;
    toastBox.className = "show" + (isError ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (toastBox.className = ""), isError ? 4000 : 1600);
  }

  function keepInView(row) {
    // Scroll the queue list only (scrollIntoView would scroll the whole page too).
    const list = row.parentElement;
    if (row.offsetTop < list.scrollTop) list.scrollTop = row.offsetTop;
    else if (row.offsetTop + row.offsetHeight > list.scrollTop + list.clientHeight) {
      list.scrollTop = row.offsetTop + row.offsetHeight - list.clientHeight;
    }
  }

  function focusItem(i) {
    if (i < 0 || i >= details.length) return;
    current = i;
    details.forEach((d, j) => (d.hidden = j !== i));
    rows.forEach((r, j) => r.classList.toggle("focused", j === i));
    keepInView(rows[i]);
    const proposed = details[i].dataset.proposed;
    document.querySelectorAll(".lab").forEach((el) =>
      el.classList.toggle("current", el.dataset.label === proposed));
  }

  function isOpen(i) { return details[i].dataset.state !== "accepted" && details[i].dataset.state !== "rejected"; }

  function nextOpen(from) {
    for (let k = 1; k <= details.length; k++) {
      const j = (from + k) % details.length;
      if (isOpen(j)) return j;
    }
    return -1;
  }

  function pageDone() {
    toast("Page done: loading the next items…");
    const params = new URLSearchParams(location.search);
    params.set("offset", String(offset));  // decided items left the queue: same offset
    setTimeout(() => location.assign("/ui/review?" + params.toString()), 700);
  }

  function fixNextLink() {
    // Decided items leave the open queue, so the next page starts `decided` items earlier.
    const link = document.getElementById("next-page");
    if (!link) return;
    const url = new URL(link.href);
    url.searchParams.set("offset", String(Math.max(0, offset + limit - decided)));
    link.href = url.toString();
  }

  async function decide(decision, label) {
    if (busy || details.length === 0) return;
    const item = details[current];
    if (!isOpen(current)) { toast("Already decided: j/k to move", true); return; }
    busy = true;
    try {
      const response = await fetch(`/ui/review/${item.dataset.id}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
        body: JSON.stringify(label === undefined ? { decision } : { decision, label }),
        credentials: "same-origin",
      });
      if (response.status === 401) {
        location.assign("/ui/login?reason=expired&next=" + encodeURIComponent(location.pathname + location.search));
        return;
      }
      const body = await response.json();
      if (!response.ok) { toast(body.error ? body.error.message : `error ${response.status}`, true); return; }
      const text = body.state === "accepted" ? `✓ ${body.decided_label}` : "✗ rejected";
      item.dataset.state = body.state;
      item.querySelector(".decided").textContent = text;
      rows[current].dataset.state = body.state;
      rows[current].querySelector(".qstate").textContent = text;
      decided += 1;
      fixNextLink();
      toast(body.state === "accepted" ? `Labeled ${body.decided_label} (human)` : "Rejected");
      const next = nextOpen(current);
      if (next === -1) pageDone(); else focusItem(next);
    } catch (err) {
      toast(`Network error: ${err}`, true);
    } finally {
      busy = false;
    }
  }

  function correctTo(label) {
    if (label === details[current].dataset.proposed) decide("accept");
    else decide("correct", label);
  }

  // --- the label picker (c) ---------------------------------------------------------------
  let pick = 0;
  function visiblePicks() { return pickerItems.filter((li) => !li.hidden); }
  function markPick() {
    const vis = visiblePicks();
    pickerItems.forEach((li) => li.classList.remove("sel"));
    if (vis.length) { pick = Math.min(Math.max(pick, 0), vis.length - 1); vis[pick].classList.add("sel"); vis[pick].scrollIntoView({ block: "nearest" }); }
  }
  function openPicker() {
    if (!isOpen(current)) { toast("Already decided: j/k to move", true); return; }
    pickerFilter.value = "";
    pickerItems.forEach((li) => (li.hidden = false));
    const proposed = details[current].dataset.proposed;
    pick = Math.max(0, pickerItems.findIndex((li) => li.dataset.label !== proposed));
    markPick();
    picker.showModal();
    pickerFilter.focus();
  }
  function choosePick() {
    const vis = visiblePicks();
    if (!vis.length) return;
    const label = vis[pick].dataset.label;
    picker.close();
    correctTo(label);
  }
  pickerFilter.addEventListener("input", () => {
    const q = pickerFilter.value.trim().toLowerCase();
    pickerItems.forEach((li) => (li.hidden = q !== "" && !li.dataset.label.toLowerCase().includes(q)));
    pick = 0;
    markPick();
  });
  pickerFilter.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { pick += 1; markPick(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { pick -= 1; markPick(); e.preventDefault(); }
    else if (e.key === "Enter") { e.preventDefault(); choosePick(); }
  });
  pickerItems.forEach((li) => li.addEventListener("click", () => {
    pick = visiblePicks().indexOf(li);
    choosePick();
  }));

  // --- keys and clicks --------------------------------------------------------------------
  document.addEventListener("keydown", (e) => {
    if (picker.open || help.open || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") return;
    const key = e.key;
    if (key === "a") decide("accept");
    else if (key === "r") decide("reject");
    else if (key === "c") { e.preventDefault(); openPicker(); }
    else if (key === "j" || key === "ArrowDown") focusItem(Math.min(current + 1, details.length - 1));
    else if (key === "k" || key === "ArrowUp") focusItem(Math.max(current - 1, 0));
    else if (key === "?") help.showModal();
    else if (labelOfKey[key] !== undefined) correctTo(labelOfKey[key]);
    else return;
    e.preventDefault();
  });
  rows.forEach((row, i) => row.addEventListener("click", () => focusItem(i)));
  details.forEach((d) => d.querySelectorAll("button[data-act]").forEach((b) =>
    b.addEventListener("click", () => {
      const act = b.dataset.act;
      if (act === "correct") openPicker(); else decide(act);
    })));
  document.getElementById("help-button").addEventListener("click", () => help.showModal());
  focusItem(0);
})();
