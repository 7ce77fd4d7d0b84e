// Dashboard: switch the embedding map between colouring by label and by source.
(() => {
  "use strict";
  const map = document.getElementById("embedding-map");
  if (!map) return;
  document.querySelectorAll("[data-map]").forEach((button) =>
    button.addEventListener("click", () => {
      document.querySelectorAll("[data-map]").forEach((b) => b.classList.toggle("on", b === button));
      map.src = `/ui/charts/embedding.png?color_by=${button.dataset.map}&v=${map.dataset.v}`;
    }));
})();
