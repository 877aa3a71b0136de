// ifu-extract QA report: sort the table by a column, filter rows by status or text.
// Inlined in index.html; the page works without it (plain table in catalogue order).
(function () {
  "use strict";
  var table = document.getElementById("objects");
  if (!table || !table.tBodies.length) { return; }
  // One <tbody> per object: its data row, then its figures' row.
  var objects = Array.prototype.slice.call(table.tBodies);
  var heads = table.tHead.rows[0].cells;
  function key(obj, col, kind) {
    var cell = obj.rows[0].cells[col];
    var v = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (kind === "num") { var x = parseFloat(v); return isNaN(x) ? null : x; }
    return v === "" ? null : v.toLowerCase();
  }
  function sortBy(col, kind, desc) {
    var rows = objects.slice();
    rows.sort(function (a, b) {
      var ka = key(a, col, kind), kb = key(b, col, kind);
      if (ka === null || kb === null) { return (ka === null) - (kb === null); }  // blanks last
      var c = kind === "num" ? ka - kb : (ka < kb ? -1 : (ka > kb ? 1 : 0));
      return desc ? -c : c;
    });
    rows.forEach(function (r) { table.appendChild(r); });
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    var kind = th.getAttribute("data-sort");
    if (!kind) { return; }
    th.addEventListener("click", function () {
      var desc = th.classList.contains("asc");
      Array.prototype.forEach.call(heads, function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(desc ? "desc" : "asc");
      sortBy(col, kind, desc);
    });
  });
  var controls = document.getElementById("controls");
  var group = document.getElementById("group-filter");
  var text = document.getElementById("text-filter");
  var shown = document.getElementById("shown");
  function filter() {
    var g = group.value, t = text.value.trim().toLowerCase(), n = 0;
    objects.forEach(function (r) {
      var rg = r.getAttribute("data-group");
      var ok = (!g || rg === g || (g === "problem" && rg !== "ok")) &&
               (!t || r.textContent.toLowerCase().indexOf(t) >= 0);
      r.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = n + " of " + objects.length + " shown";
  }
  if (controls && group && text) {
    controls.hidden = false;
    group.addEventListener("change", filter);
    text.addEventListener("input", filter);
    filter();
  }
}());
