// The annotate page around the embedded editor (templates/annotation/annotate.html).
//
// Talks to the editor <iframe> (static/js/annotate-editor.js) with postMessage, same origin only:
// the side panel's Submit button and the hotkeys 1..6 / Ctrl+Enter pressed outside the iframe are
// passed to the editor; when the editor reports a successful submit, the page asks the server for
// the next image of the queue (a POST: it claims the image) and follows its redirect.
(function () {
  "use strict";

  const frame = document.getElementById("editor");
  const submitButton = document.getElementById("submit-annotation");
  const state = document.getElementById("annotate-state");
  const nextForm = document.getElementById("next-form");
  const origin = window.location.origin;
  const labels = {};
  document.querySelectorAll("#classes [data-hotkey]").forEach((row) => {
    labels[row.dataset.hotkey] = row.dataset.label;
  });

  function send(type, extra) {
    frame.contentWindow.postMessage({ source: "cytoloop-annotate", type, ...extra }, origin);
  }

  function say(text, isError) {
    state.textContent = text;
    state.classList.toggle("error", Boolean(isError));
    state.classList.toggle("muted", !isError);
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== origin || event.source !== frame.contentWindow) return;
    const message = event.data || {};
    if (message.source !== "cytoloop-editor") return;
    if (message.type === "ready") {
      submitButton.disabled = false;
      say("Choose a class (1–6), then drag a box around each cluster. Submit when done.");
      frame.contentWindow.focus();
    } else if (message.type === "saving") {
      submitButton.disabled = true;
      say(`Saving ${message.boxes} box${message.boxes === 1 ? "" : "es"}…`);
    } else if (message.type === "error") {
      submitButton.disabled = false;
      say(message.message || "Not saved.", true);
    } else if (message.type === "submitted") {
      say(`Saved ${message.boxes} box${message.boxes === 1 ? "" : "es"}. Opening your next image…`);
      nextForm.submit();
    }
  });

  submitButton.addEventListener("click", () => send("submit"));

  // keys pressed while the focus is on the page (not in the editor) still reach the editor
  document.addEventListener("keydown", (event) => {
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    const plain = !event.ctrlKey && !event.altKey && !event.metaKey;
    if (plain && labels[event.key]) {
      event.preventDefault();
      send("label", { label: labels[event.key] });
      frame.contentWindow.focus();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !submitButton.disabled) {
      event.preventDefault();
      send("submit");
    }
  });
})();
