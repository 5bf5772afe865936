// The demo page: send one photo to POST /predict, then draw each face's box and label on a
// canvas, list the faces with an age check for the chosen threshold, and show the raw JSON. No
// framework, no network beyond this server.
"use strict";

(() => {
  // Keep in step with tests/test_demo_page.py, which looks for this colour on the canvas.
  const BOX_COLOUR = "#ffd400";
  const LABEL_TEXT_COLOUR = "#111111";
  const PREFERRED_DETECT_MODE = "auto";
  // An age check passes when P(age >= T) is at least this (age_checks.DECISION_P on the server).
  const AGE_CHECK_PASS_P = 0.5;
  // The face detectors an answer's `models` may name (FACEDEMO_DETECTOR on the server).
  const DETECTOR_NAMES = { retinaface: "RetinaFace", mtcnn: "MTCNN" };

  const page = {
    body: document.body,
    file: document.getElementById("file"),
    dropzone: document.getElementById("dropzone"),
    detect: document.getElementById("detect"),
    ageOver: document.getElementById("age-over"),
    apiKeyField: document.getElementById("api-key-field"),
    apiKey: document.getElementById("api-key"),
    status: document.getElementById("status"),
    error: document.getElementById("error"),
    errorTitle: document.getElementById("error-title"),
    errorDetail: document.getElementById("error-detail"),
    result: document.getElementById("result"),
    canvas: document.getElementById("photo"),
    faceRows: document.getElementById("face-rows"),
    raw: document.getElementById("raw"),
    json: document.getElementById("json"),
  };

  let lastFile = null;
  // Each prediction's number: a slower, older answer never replaces a newer one.
  let latestRequest = 0;

  function setState(state, message) {
    page.body.dataset.state = state;
    page.status.textContent = message;
  }

  function showError(title, detail) {
    page.errorTitle.textContent = title;
    page.errorDetail.textContent = detail || "";
    page.error.hidden = false;
    setState("error", "Something went wrong; see below.");
  }

  function showJson(value) {
    page.json.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
    page.raw.hidden = false;
  }

  // The server's face-finding modes, from its OpenAPI document: the page then works with servers
  // that have a detector (auto) and with those that only take face crops (skip).
  async function loadDetectModes() {
    let modes = ["skip"];
    let serverDefault = "skip";
    try {
      const response = await fetch("openapi.json");
      const openapi = await response.json();
      const parameter = openapi.paths["/predict"].post.parameters.find(
        (candidate) => candidate.name === "detect",
      );
      const schema = resolveSchema(openapi, parameter.schema);
      if (Array.isArray(schema.enum) && schema.enum.length > 0) {
        modes = schema.enum;
      }
      serverDefault = parameter.schema.default || schema.default || modes[0];
    } catch (error) {
      console.warn("could not read the detect modes from /openapi.json", error);
    }
    const requested = new URLSearchParams(window.location.search).get("detect");
    let chosen = modes.includes(PREFERRED_DETECT_MODE) ? PREFERRED_DETECT_MODE : serverDefault;
    if (requested && modes.includes(requested)) {
      chosen = requested;
    }
    page.detect.replaceChildren(
      ...modes.map((mode) => new Option(mode, mode, mode === chosen, mode === chosen)),
    );
    page.body.dataset.detectModes = modes.join(",");
  }

  function resolveSchema(openapi, schema) {
    let current = schema;
    for (let depth = 0; depth < 5 && current; depth += 1) {
      if (current.$ref) {
        const name = current.$ref.split("/").pop();
        current = openapi.components.schemas[name];
      } else if (Array.isArray(current.allOf) && current.allOf.length === 1) {
        current = current.allOf[0];
      } else {
        break;
      }
    }
    return current || {};
  }

  async function predict(file) {
    lastFile = file;
    latestRequest += 1;
    const request = latestRequest;
    page.error.hidden = true;
    page.result.hidden = true;
    page.canvas.dataset.boxes = "0";
    setState("busy", `Estimating ages and genders in ${file.name || "the photo"}…`);

    const form = new FormData();
    form.append("file", file, file.name || "photo");
    const threshold = page.ageOver.value;
    const query = new URLSearchParams({ detect: page.detect.value, age_over: threshold });
    const url = `predict?${query}`;
    let response;
    let body;
    try {
      const key = page.apiKey.value.trim();
      const headers = key ? { "X-API-Key": key } : {};
      response = await fetch(url, { method: "POST", body: form, headers });
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    } catch (error) {
      if (request === latestRequest) {
        showError("The server could not be reached", String(error));
      }
      return;
    }
    if (request !== latestRequest) {
      return;
    }
    showJson(body);
    if (response.status === 401) {
      // The server was started with FACEDEMO_API_KEYS: ask for one, then the photo can be resent.
      page.apiKeyField.hidden = false;
    }
    if (!response.ok) {
      // Errors are RFC 9457 problem details: a title for people, a detail for this request.
      const title = (body && body.title) || `HTTP ${response.status}`;
      const detail = body && body.detail ? body.detail : "";
      showError(title, detail);
      return;
    }
    await showPrediction(file, body, threshold, request);
  }

  async function showPrediction(file, prediction, threshold, request) {
    let bitmap = null;
    try {
      // Boxes are in pixels of the EXIF-rotated image, so draw the photo rotated the same way.
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (error) {
      console.warn("the browser cannot draw this image", error);
    }
    if (request !== latestRequest) {
      if (bitmap) {
        bitmap.close();
      }
      return;
    }
    const width = bitmap ? bitmap.width : prediction.image.width;
    const height = bitmap ? bitmap.height : prediction.image.height;
    page.canvas.width = width;
    page.canvas.height = height;
    const context = page.canvas.getContext("2d");
    if (bitmap) {
      context.drawImage(bitmap, 0, 0);
      bitmap.close();
    } else {
      context.fillStyle = "#dddddd";
      context.fillRect(0, 0, width, height);
    }
    const scale = width / prediction.image.width;
    prediction.faces.forEach((face, index) => drawFace(context, face, index, scale));
    page.canvas.dataset.boxes = String(prediction.faces.length);
    fillTable(prediction.faces, threshold);
    page.result.hidden = false;
    const count = prediction.faces.length;
    const noun = count === 1 ? "face" : "faces";
    // With detect=auto the answer names the detector among its models; skip runs none.
    const detector = (prediction.models || []).find((model) => model.name in DETECTOR_NAMES);
    const foundBy = detector ? `, found by ${DETECTOR_NAMES[detector.name]}` : "";
    setState(
      "done",
      `${count} ${noun} in ${prediction.image.width}×${prediction.image.height} px${foundBy} ` +
        `(${Math.round(prediction.timings_ms.total)} ms on the server).`,
    );
  }

  // "18 or older: 93% (likely)": P(age >= T) from the answer's age.over, keyed by T as a string.
  function ageCheck(face, threshold) {
    const over = face.age.over || {};
    const probability = over[String(threshold)];
    if (typeof probability !== "number") {
      return { text: `${threshold} or older: not in the answer`, classes: ["age-check-result"] };
    }
    const passed = probability >= AGE_CHECK_PASS_P;
    const verdict = passed ? "likely" : `likely under ${threshold}`;
    return {
      text: `${threshold} or older: ${Math.round(probability * 100)}% (${verdict})`,
      // Colour by class, not element.style: the page's policy allows only its own stylesheet.
      classes: ["age-check-result", passed ? "passed" : "not-passed"],
    };
  }

  function describe(face) {
    const age = face.age;
    const gender = face.gender;
    const interval = `${age.interval.low.toFixed(0)}–${age.interval.high.toFixed(0)}`;
    return {
      age: `${age.years.toFixed(1)} years`,
      interval: `${interval} (${Math.round(age.interval.level * 100)}%)`,
      bucket: age.bucket,
      gender: `${gender.label} ${Math.round(gender.confidence * 100)}%`,
      short: `${Math.round(age.years)} y (${interval}) · ${gender.label} ` +
        `${Math.round(gender.confidence * 100)}%`,
    };
  }

  function drawFace(context, face, index, scale) {
    const x = Math.round(face.box.x * scale);
    const y = Math.round(face.box.y * scale);
    const w = Math.round(face.box.width * scale);
    const h = Math.round(face.box.height * scale);
    const shortest = Math.min(context.canvas.width, context.canvas.height);
    // An even, whole line width drawn inside the box fills whole pixels: a crisp, exact colour.
    const lineWidth = 2 * Math.max(1, Math.round(shortest / 250));
    context.strokeStyle = BOX_COLOUR;
    context.lineWidth = lineWidth;
    context.strokeRect(x + lineWidth / 2, y + lineWidth / 2, w - lineWidth, h - lineWidth);

    const fontSize = Math.max(11, Math.round(shortest / 28));
    const label = `${index + 1}: ${describe(face).short}`;
    context.font = `600 ${fontSize}px system-ui, sans-serif`;
    context.textBaseline = "top";
    const padding = Math.round(fontSize / 4);
    const labelWidth = Math.min(
      context.measureText(label).width + 2 * padding,
      context.canvas.width - x,
    );
    const labelHeight = fontSize + 2 * padding;
    // Above the box when there is room, else just inside its top edge.
    const labelY = y - labelHeight >= 0 ? y - labelHeight : y + lineWidth;
    context.fillStyle = BOX_COLOUR;
    context.fillRect(x, labelY, labelWidth, labelHeight);
    context.fillStyle = LABEL_TEXT_COLOUR;
    context.fillText(label, x + padding, labelY + padding, labelWidth - 2 * padding);
  }

  function fillTable(faces, threshold) {
    const rows = faces.map((face, index) => {
      const text = describe(face);
      const check = ageCheck(face, threshold);
      const row = document.createElement("tr");
      row.className = "face";
      const box = face.box;
      const cells = [
        { text: String(index + 1) },
        { text: text.age },
        { text: text.interval },
        { text: text.bucket },
        check,
        { text: text.gender },
        { text: `${box.x}, ${box.y}, ${box.width}, ${box.height}` },
      ];
      for (const { text: value, classes = [] } of cells) {
        const cell = document.createElement("td");
        cell.textContent = value;
        cell.classList.add(...classes);
        row.append(cell);
      }
      return row;
    });
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = page.faceRows.closest("table").tHead.rows[0].cells.length;
      cell.textContent = "No face found.";
      row.append(cell);
      rows.push(row);
    }
    page.faceRows.replaceChildren(...rows);
  }

  page.file.addEventListener("change", () => {
    const [file] = page.file.files;
    if (file) {
      predict(file);
    }
  });

  // A new threshold, face-finding mode or key sends the last photo again.
  for (const control of [page.detect, page.ageOver, page.apiKey]) {
    control.addEventListener("change", () => {
      if (lastFile) {
        predict(lastFile);
      }
    });
  }

  for (const name of ["dragenter", "dragover"]) {
    page.dropzone.addEventListener(name, (event) => {
      event.preventDefault();
      page.dropzone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    page.dropzone.addEventListener(name, () => page.dropzone.classList.remove("dragging"));
  }
  page.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    const [file] = event.dataTransfer.files;
    if (file) {
      predict(file);
    }
  });

  loadDetectModes().finally(() => {
    page.body.dataset.ready = "true";
  });
})();
