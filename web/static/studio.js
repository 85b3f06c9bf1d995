// keyart studio: multi-file upload with per-file progress and errors (through the editor
// API, with the session's CSRF token), and the focal-point picker. Without JavaScript the
// forms still work, one file at a time.
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (form) {
    var input = document.getElementById("upload-file");
    var zone = document.getElementById("dropzone");
    var list = document.getElementById("uploads");
    var pending = 0;

    var uploadOne = function (file) {
      var item = document.createElement("li");
      var name = document.createElement("span");
      name.textContent = file.name;
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute("aria-label", "Uploading " + file.name);
      item.appendChild(name);
      item.appendChild(bar);
      list.appendChild(item);
      var say = function (cls, text) {
        var line = document.createElement("span");
        line.className = cls;
        line.textContent = text;
        item.appendChild(line);
      };
      var data = new FormData();
      data.append("file", file, file.name);
      // Without a label, a variant is named after its file.
      data.append("label", form.elements["upload-label"].value || file.name.replace(/\.[^.]*$/, ""));
      data.append("tags", form.elements["upload-tags"].value);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.url);
      xhr.setRequestHeader("X-CSRFToken", form.dataset.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      };
      pending += 1;
      var finish = function () {
        pending -= 1;
        // Once every file has its answer, show the gallery with the new variants (the
        // errors stay listed until then).
        if (pending === 0 && list.querySelector(".done")) {
          var errors = list.querySelectorAll(".error").length;
          if (!errors) window.location.reload();
          else {
            var again = document.createElement("li");
            var link = document.createElement("a");
            link.href = window.location.pathname;
            link.textContent = "Show the new variants";
            again.appendChild(link);
            list.appendChild(again);
          }
        }
      };
      xhr.onload = function () {
        bar.value = 100;
        if (xhr.status === 201) {
          say("done", "Uploaded.");
        } else {
          var message = "failed (" + xhr.status + ")";
          try {
            message = JSON.parse(xhr.responseText).error.message;
          } catch (ignored) { /* not JSON: keep the status */ }
          item.classList.add("failed");
          say("error", "Error: " + message);
        }
        finish();
      };
      xhr.onerror = function () {
        say("error", "Error: the upload did not reach the server.");
        finish();
      };
      xhr.send(data);
    };

    var uploadAll = function (files) {
      list.textContent = "";
      for (var i = 0; i < files.length; i += 1) uploadOne(files[i]);
    };

    form.addEventListener("submit", function (e) {
      if (!input.files.length) return;
      e.preventDefault();
      uploadAll(input.files);
      input.value = "";
    });
    input.addEventListener("change", function () {
      if (input.files.length) {
        uploadAll(input.files);
        input.value = "";
      }
    });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (e) {
        e.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function (e) {
        e.preventDefault();
        zone.classList.remove("over");
      });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) uploadAll(e.dataTransfer.files);
    });
  }

  // Click the whole picture to set the focal point: fill the variant's focus form and send
  // it; the crops come back cut around the new point.
  document.querySelectorAll(".picker").forEach(function (picker) {
    var img = picker.querySelector("img");
    var focusForm = document.getElementById(picker.dataset.focusForm);
    img.addEventListener("click", function (e) {
      var box = img.getBoundingClientRect();
      var x = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
      var y = Math.min(1, Math.max(0, (e.clientY - box.top) / box.height));
      focusForm.elements["focus-x"].value = x.toFixed(3);
      focusForm.elements["focus-y"].value = y.toFixed(3);
      focusForm.requestSubmit();
    });
  });
})();
