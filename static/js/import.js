/* Import page: drag-and-drop onto the file input, and an upload with a progress bar.
   Without this script the form still works: the file input is a normal one and the form posts. */
(function () {
  "use strict";

  var form = document.getElementById("import-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;

  var zone = document.getElementById("dropzone");
  var input = document.getElementById("id_files");
  var list = document.getElementById("file-list");
  var summary = document.getElementById("file-summary");
  var count = document.getElementById("file-count");
  var clear = document.getElementById("clear-files");
  var errors = document.getElementById("import-errors");
  var upload = document.getElementById("upload");
  var bar = document.getElementById("upload-progress");
  var state = document.getElementById("upload-state");
  var bytes = document.getElementById("upload-bytes");
  var submit = document.getElementById("import-submit");
  var cancel = document.getElementById("upload-cancel");
  var existing = document.getElementById("id_dataset");
  var fresh = document.getElementById("id_new_dataset");
  var maxFiles = parseInt(form.dataset.maxFiles || "100", 10);
  var accepted = (input.getAttribute("accept") || "").split(",");
  var xhr = null;

  zone.classList.add("js");

  function human(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot).toLowerCase();
  }

  function showErrors(messages) {
    errors.replaceChildren();
    messages.forEach(function (text) {
      var p = document.createElement("p");
      p.textContent = text;
      errors.appendChild(p);
    });
    errors.hidden = messages.length === 0;
    if (messages.length) errors.scrollIntoView({ block: "nearest" });
  }

  function render() {
    var files = Array.prototype.slice.call(input.files || []);
    list.replaceChildren();
    var total = 0;
    files.forEach(function (file) {
      total += file.size;
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.className = "name";
      name.textContent = file.name;
      var size = document.createElement("span");
      size.className = "size muted";
      size.textContent = human(file.size);
      li.append(name, size);
      if (accepted.indexOf(extension(file.name)) < 0) {
        li.className = "bad";
        li.title = "not an image or .zip file";
      }
      list.appendChild(li);
    });
    list.hidden = summary.hidden = files.length === 0;
    count.textContent = files.length + " file" + (files.length === 1 ? "" : "s") + " · " + human(total);
    zone.classList.toggle("has-files", files.length > 0);
  }

  function setFiles(files) {
    var transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    render();
  }

  input.addEventListener("change", render);
  clear.addEventListener("click", function () { setFiles([]); });

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("over");
    });
  });
  zone.addEventListener("dragleave", function (event) {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    var seen = {};
    var merged = [];
    Array.prototype.slice.call(input.files || []).concat(
      Array.prototype.slice.call(event.dataTransfer.files || [])
    ).forEach(function (file) {
      var key = file.name + "/" + file.size;
      if (!seen[key]) { seen[key] = true; merged.push(file); }
    });
    setFiles(merged);
  });

  // one dataset at a time: picking an existing one clears the new name, and the other way round
  existing.addEventListener("change", function () { if (existing.value) fresh.value = ""; });
  fresh.addEventListener("input", function () { if (fresh.value) existing.value = ""; });

  function busy(on) {
    submit.disabled = on;
    cancel.hidden = !on;
    form.classList.toggle("busy", on);
  }

  function progress(loaded, total) {
    var percent = total ? Math.floor((100 * loaded) / total) : 0;
    bar.firstElementChild.style.width = percent + "%";
    bar.setAttribute("aria-valuenow", String(percent));
    bytes.textContent = total ? human(loaded) + " of " + human(total) + " · " + percent + "%" : "";
  }

  cancel.addEventListener("click", function () { if (xhr) xhr.abort(); });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var problems = [];
    var files = input.files || [];
    if (!existing.value && !fresh.value.trim()) problems.push("Choose a dataset or type a name for a new one.");
    if (!files.length) problems.push("No files were chosen: add images (PNG, JPEG, TIFF) or .zip files.");
    var refused = Array.prototype.filter.call(files, function (f) { return accepted.indexOf(extension(f.name)) < 0; });
    if (refused.length) {
      problems.push("Not an image or .zip file: " + refused.map(function (f) { return f.name; }).join(", ") +
        ". Remove it (Clear) and choose again.");
    }
    if (files.length > maxFiles) {
      problems.push(files.length + " files is more than " + maxFiles + " per upload: put them in a .zip file.");
    }
    showErrors(problems);
    if (problems.length) return;

    xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) progress(e.loaded, e.total);
    });
    xhr.upload.addEventListener("load", function () {
      state.textContent = "Upload complete. Starting the import…";
    });
    xhr.addEventListener("load", function () {
      var data = null;
      try { data = JSON.parse(xhr.responseText); } catch (ignored) { data = null; }
      if (xhr.status >= 200 && xhr.status < 300 && data && data.job_url) {
        state.textContent = "Upload complete. Opening the import job…";
        window.location.assign(data.job_url);
        return;
      }
      busy(false);
      upload.hidden = true;
      if (data && data.errors) showErrors(data.errors);
      else if (/\/login\//.test(xhr.responseURL || "")) showErrors(["Your session has expired: reload the page and log in again."]);
      else if (xhr.status === 403) showErrors(["Not allowed (403): your session may have expired. Reload the page and log in again."]);
      else showErrors(["The upload failed: the server answered " + xhr.status + " " + xhr.statusText + "."]);
    });
    xhr.addEventListener("error", function () {
      busy(false);
      upload.hidden = true;
      showErrors(["The upload failed: the server could not be reached."]);
    });
    xhr.addEventListener("abort", function () {
      busy(false);
      upload.hidden = true;
      showErrors(["Upload cancelled."]);
    });

    state.textContent = "Uploading…";
    progress(0, 0);
    upload.hidden = false;
    busy(true);
    xhr.send(new FormData(form));
  });

  render();
})();
