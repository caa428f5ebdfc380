// kawal console: the only script. Shows a password only while its button is held (G045 AU-2-2);
// everything else works without JavaScript.
"use strict";
document.querySelectorAll("button.reveal").forEach(function (button) {
  var input = document.getElementById(button.getAttribute("data-reveal"));
  if (!input) { return; }
  button.hidden = false;
  function show() { input.type = "text"; }
  function hide() { input.type = "password"; }
  button.addEventListener("pointerdown", show);
  ["pointerup", "pointerleave", "pointercancel", "blur"].forEach(function (e) { button.addEventListener(e, hide); });
  button.addEventListener("keydown", function (e) { if (e.key === " " || e.key === "Enter") { show(); } });
  button.addEventListener("keyup", hide);
  input.form.addEventListener("submit", hide);
});
