// Small progressive enhancement: pages work without it.
// - forms with data-confirm ask before they submit;
// - pages whose <main> has data-refresh="N" reload every N seconds while nobody is typing in a form.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

(function () {
  var main = document.querySelector("main[data-refresh]");
  if (!main) { return; }
  var seconds = parseFloat(main.getAttribute("data-refresh"));
  if (!(seconds > 0)) { return; }
  var touched = false;
  document.addEventListener("input", function () { touched = true; });
  window.setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT");
    if (!touched && !typing && document.visibilityState === "visible") {
      window.location.reload();
    }
  }, seconds * 1000);
})();
