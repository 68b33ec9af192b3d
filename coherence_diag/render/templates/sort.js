"use strict";
// Optional: sort the index table by a column. The table is already sorted worst first without it.
document.querySelectorAll("table[data-sortable] th[data-sort]").forEach(function (th, _, all) {
  var button = document.createElement("button");
  button.type = "button";
  button.textContent = th.textContent;
  th.textContent = "";
  th.appendChild(button);
  button.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    all.forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = th.dataset.sort === "number";
    var key = function (row) {
      var v = row.cells[col].dataset.key, n = parseFloat(v);
      return numeric ? (isNaN(n) ? Infinity : n) : v;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), c = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
