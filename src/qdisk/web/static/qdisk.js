// qdisk's page: the VM list, a VM's hardware and the disk editor, over /api2/json.
// Every check of a value is the server's (the preview endpoint); the page only shows it.
// On a Proxmox VE host (`qdisk serve --pve`, state.pve) the page is the audit of the
// node's disks instead, and the editor changes only a disk's qcow2 cache settings.
"use strict";

const API = "/api2/json";
const state = { csrf: null, node: null, pve: false, vmid: null, running: false, digest: null,
                cacheOptions: {}, cacheDisks: [], settings: {}, storages: [], mayChange: true };
// Proxmox VE's own interface, where a visitor of `qdisk serve --pve` logs in.
const PVE_PORT = 8006;

// --- small helpers ----------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      element.append(child instanceof Node ? child : String(child));
    }
  }
  return element;
}

function formatBytes(size) {
  const units = [["TiB", 40], ["GiB", 30], ["MiB", 20], ["KiB", 10]];
  for (const [unit, shift] of units) {
    const scale = 2 ** shift;
    if (size >= scale) {
      const value = size / scale;
      return `${Number.isInteger(value) ? value : value.toFixed(1)} ${unit}`;
    }
  }
  return `${size} B`;
}

class ApiFailure extends Error {
  constructor(status, message, errors) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.errors = errors || {};
  }
}

async function call(method, path, parameters) {
  const options = { method, headers: {}, credentials: "same-origin" };
  let url = API + path;
  if (method === "GET") {
    if (parameters) url += "?" + new URLSearchParams(parameters);
  } else {
    options.headers.CSRFPreventionToken = state.csrf || "";
    if (parameters) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(parameters);
    }
  }
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (ignored) { body = null; }
  if (!response.ok) {
    const failure = new ApiFailure(response.status, body && body.message, body && body.errors);
    if (response.status === 401 && path !== "/access/ticket") showLogin(failure.message);
    throw failure;
  }
  return body;
}

function nodePath(suffix) {
  return `/nodes/${encodeURIComponent(state.node)}${suffix}`;
}

function vmPath(suffix = "", vmid = state.vmid) {
  return nodePath(`/qemu/${vmid}${suffix}`);
}

// --- login ------------------------------------------------------------------------------

function showLogin(message) {
  state.csrf = null;
  $("#main-view").hidden = true;
  $("#logout").hidden = true;
  $("#user-name").textContent = "";
  if ($("#disk-editor").open) $("#disk-editor").close();
  $("#login-view").hidden = false;
  // On a Proxmox VE host the login is Proxmox VE's: its cookie opens this page too.
  $("#login-form").hidden = state.pve;
  $("#pve-login").hidden = !state.pve;
  $(state.pve ? "#pve-login-error" : "#login-error").textContent = message || "";
  if (state.pve) {
    $("#pve-login-link").href = `https://${location.hostname}:${PVE_PORT}/`;
    $("#pve-login-https").hidden = location.protocol === "https:";
  } else {
    $("#token-input").focus();
  }
}

async function startSession(session) {
  state.csrf = session.CSRFPreventionToken;
  $("#user-name").textContent = session.username + (session["read-only"] ? " (read-only)" : "");
  $("#login-view").hidden = true;
  // A Proxmox VE login ends in Proxmox VE's interface.
  $("#logout").hidden = state.pve;
  $("#main-view").hidden = false;
  const [nodes, version] = await Promise.all([call("GET", "/nodes"), call("GET", "/version")]);
  state.node = nodes.data[0].node;
  state.pve = version.data.mode === "pve";
  document.body.classList.toggle("pve", state.pve);
  for (const element of document.querySelectorAll(".home-only")) element.hidden = state.pve;
  $("#audit-view").hidden = !state.pve;
  $("#node-name").textContent = `${state.pve ? "Proxmox VE node" : "node"} ${state.node}`;
  await (state.pve ? loadAudit() : loadVmList());
}

async function login(event) {
  event.preventDefault();
  try {
    const answer = await call("POST", "/access/ticket", { token: $("#token-input").value.trim() });
    $("#token-input").value = "";
    await startSession(answer.data);
  } catch (failure) {
    $("#login-error").textContent = failure.message;
  }
}

async function logout() {
  try { await call("DELETE", "/access/ticket"); } finally { showLogin(""); }
}

// --- the VM list and a VM's hardware ----------------------------------------------------

async function loadVmList() {
  const answer = await call("GET", nodePath("/qemu"));
  const body = $("#vm-table tbody");
  body.replaceChildren(...answer.data.map((item) => h("tr",
    { class: item.vmid === state.vmid ? "selected" : "", "data-vmid": item.vmid },
    h("td", {}, item.vmid),
    h("td", {}, item.problem
      ? h("span", { class: "problem" }, `VM ${item.vmid}: ${item.problem}`)
      : h("a", { href: "#", onclick: (event) => { event.preventDefault(); openVm(item.vmid); } },
          item.name || `VM ${item.vmid}`)),
    h("td", {}, h("span", { class: `status ${item.status}` }, item.status)),
    h("td", {}, item.status === "running"
      ? h("button", { type: "button", class: "small", onclick: () => lifecycle(item.vmid, "stop") }, "Stop")
      : h("button", { type: "button", class: "small", onclick: () => lifecycle(item.vmid, "start") }, "Start")))));
}

function showMessage(text, kind = "info") {
  const message = $(state.pve ? "#audit-message" : "#vm-message");
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = !text;
}

async function lifecycle(vmid, action) {
  const shown = state.vmid === vmid;
  try {
    await call("POST", vmPath(`/status/${action}`, vmid));
    if (shown) showMessage(`VM ${vmid} ${action === "start" ? "started" : "stopped"}`);
  } catch (failure) {
    if (shown) showMessage(failure.message, "error");
  }
  await loadVmList();
  if (shown) await openVm(vmid, { keepMessage: true });
}

const DRIVE_BUSES = ["ide", "sata", "scsi", "virtio", "efidisk", "tpmstate", "unused"];
const EDITABLE_BUSES = ["ide", "sata", "scsi", "virtio"];
const KEY_LABELS = { name: "Name", memory: "Memory (MiB)", cores: "Cores", sockets: "Sockets",
                     scsihw: "SCSI Controller", machine: "Machine", ostype: "OS type",
                     boot: "Boot Order", bootdisk: "Boot disk", description: "Notes" };

function driveKeyParts(key) {
  const match = /^([a-z]+)(\d+)$/.exec(key);
  return match && DRIVE_BUSES.includes(match[1]) ? { bus: match[1], index: Number(match[2]) } : null;
}

function isCdrom(value) {
  return /(^|,)media=cdrom(,|$)/.test(value || "") || /^cdrom(,|$)/.test(value || "");
}

function keyLabel(key, value) {
  const drive = driveKeyParts(key);
  if (!drive) return KEY_LABELS[key] || key;
  if (drive.bus === "unused") return `Unused Disk ${drive.index}`;
  if (drive.bus === "efidisk") return "EFI Disk";
  if (drive.bus === "tpmstate") return "TPM State";
  return `${isCdrom(value) ? "CD/DVD Drive" : "Hard Disk"} (${key})`;
}

function hardwareOrder(key) {
  const drive = driveKeyParts(key);
  const known = Object.keys(KEY_LABELS).indexOf(key);
  if (!drive) return [known === -1 ? 50 : known, 0, key];
  return [100 + DRIVE_BUSES.indexOf(drive.bus), drive.index, key];
}

function compareOrder(first, second) {
  for (let position = 0; position < first.length; position += 1) {
    if (first[position] < second[position]) return -1;
    if (first[position] > second[position]) return 1;
  }
  return 0;
}

// Pending values as Proxmox VE's hardware view shows them: the new value in red under the
// applied one, a pending deletion struck through.
function valueCell(item) {
  const cell = h("td", { class: "value" });
  if ("value" in item) {
    cell.append(h("div", { class: item.delete ? "current pending-delete" : "current" }, item.value));
  }
  if ("pending" in item) cell.append(h("div", { class: "pending" }, item.pending));
  return cell;
}

function hardwareRow(item) {
  const shown = "pending" in item ? item.pending : item.value;
  const drive = driveKeyParts(item.key);
  const editable = drive && EDITABLE_BUSES.includes(drive.bus) && !isCdrom(shown) && !item.delete;
  return h("tr", { "data-key": item.key },
    h("th", {}, keyLabel(item.key, shown)),
    valueCell(item),
    h("td", { class: "actions" }, editable
      ? h("button", { type: "button", class: "small", "data-edit": item.key,
                      onclick: () => openEditor(item.key) }, "Edit")
      : null));
}

async function openVm(vmid, { keepMessage = false } = {}) {
  state.vmid = vmid;
  if (!keepMessage) showMessage("");
  const [config, pending, status, cachePlan] = await Promise.all([
    call("GET", vmPath("/config")), call("GET", vmPath("/pending")),
    call("GET", vmPath("/status/current")), call("GET", vmPath("/qcow2-cache"))]);
  state.digest = config.data.digest;
  state.config = config.data;
  state.running = status.data.status === "running";
  state.cacheOptions = cachePlan.data.options;
  state.cacheDisks = cachePlan.data.disks;
  $("#vm-detail").hidden = false;
  $("#vm-title").textContent = `VM ${vmid}${config.data.name ? ` (${config.data.name})` : ""}`;
  $("#vm-status").textContent = status.data.status;
  $("#vm-status").className = `status ${status.data.status}`;
  $("#vm-start").disabled = state.running;
  $("#vm-stop").disabled = !state.running;
  const items = pending.data.slice().sort((first, second) =>
    compareOrder(hardwareOrder(first.key), hardwareOrder(second.key)));
  $("#hardware tbody").replaceChildren(...items.map(hardwareRow));
  for (const row of document.querySelectorAll("#vm-table tbody tr")) {
    row.classList.toggle("selected", Number(row.dataset.vmid) === vmid);
  }
}

// --- the disk editor --------------------------------------------------------------------

// The qcow2 options come from the server's descriptors (state.cacheOptions, in the drive
// schema's order): the boolean one is the "size based on disk" checkbox, the others fields.
function qcow2Options(wanted) {
  return Object.entries(state.cacheOptions).filter(([, option]) => wanted(option));
}
const autoKey = () => qcow2Options((option) => option.type === "boolean")[0][0];
const sizeKeys = () => qcow2Options((option) => option["replaced-by-auto-size"]).map(([key]) => key);
const BANDWIDTH_FIELDS = [
  ["mbps_rd", "Read limit (MB/s)"], ["mbps_wr", "Write limit (MB/s)"],
  ["iops_rd", "Read limit (ops/s)"], ["iops_wr", "Write limit (ops/s)"],
];
const BURST_FIELDS = [
  ["mbps_rd_max", "Read max burst (MB)"], ["mbps_wr_max", "Write max burst (MB)"],
  ["iops_rd_max", "Read max burst (ops)"], ["iops_wr_max", "Write max burst (ops)"],
];
// What each bus offers (qemu-server's drive schemas).
const BUS_KEYS = { ide: ["ssd"], sata: ["ssd"], scsi: ["ssd", "iothread", "ro"], virtio: ["iothread", "ro"] };
const BUS_SLOTS = { ide: 4, sata: 6, scsi: 31, virtio: 16 };

const editor = { key: null, isNew: false, base: {}, format: null, timer: null, sequence: 0 };

function textField(key, label, hint) {
  return h("div", { class: "field" },
    h("label", { for: `field-${key}` }, label),
    h("input", { id: `field-${key}`, type: "text", inputmode: "numeric", "data-key": key,
                 autocomplete: "off", placeholder: "default" }),
    hint ? h("span", { class: "unit" }, hint) : null,
    h("p", { class: "field-error", id: `error-${key}` }));
}

function splitColumns(fields) {
  const half = Math.ceil(fields.length / 2);
  return [h("div", { class: "column" }, fields.slice(0, half)), h("div", { class: "column" }, fields.slice(half))];
}

function checkboxField(key, label) {
  return h("div", { class: "field check" },
    h("input", { id: `field-${key}`, type: "checkbox", "data-key": key, "data-on": "1" }),
    h("label", { for: `field-${key}` }, label),
    h("p", { class: "field-error", id: `error-${key}` }));
}

function buildEditorFields() {
  const [auto, autoOption] = qcow2Options((option) => option.type === "boolean")[0];
  $("#qcow2-auto").replaceChildren(checkboxField(auto, autoOption.label));
  const qcow2 = qcow2Options((option) => option.type !== "boolean").map(([key, option]) => {
    const range = option.minimum !== undefined && option.minimum !== null
      ? `${option.unit}, ${option.minimum}–${option.maximum}` : option.unit;
    const powerOfTwo = option.description.includes("power of two") ? ", a power of two" : "";
    return textField(key, option.label, `${range}${powerOfTwo}`);
  });
  $("#qcow2-fields").replaceChildren(...splitColumns(qcow2));
  $("#bandwidth-fields").replaceChildren(...splitColumns(BANDWIDTH_FIELDS.map(([key, label]) => textField(key, label))));
  $("#burst-fields").replaceChildren(...splitColumns(BURST_FIELDS.map(([key, label]) => textField(key, label))));
}

function fieldsWithKeys() {
  return document.querySelectorAll("#disk-form [data-key]");
}

function fillFields(values) {
  for (const field of fieldsWithKeys()) {
    const value = values[field.dataset.key];
    if (field.type === "checkbox") {
      if (field.dataset.on !== undefined) field.checked = value === field.dataset.on;
      else field.checked = value !== field.dataset.off;
    } else {
      field.value = value === undefined ? "" : value;
    }
  }
}

function storageOf(file) {
  const match = /^([a-z][a-z0-9\-_.]*[a-z0-9]):/i.exec(file || "");
  return match ? match[1] : "";
}

function fillStorages(selected) {
  const usable = state.storages.filter((item) => item.active && item.content.split(",").includes("images"));
  const names = usable.map((item) => item.storage);
  if (selected && !names.includes(selected)) names.unshift(selected);
  $("#field-storage").replaceChildren(...names.map((name) => h("option", { value: name }, name)));
  if (selected) $("#field-storage").value = selected;
}

function freeIndex(bus) {
  for (let index = 0; index < BUS_SLOTS[bus]; index += 1) {
    if (!(`${bus}${index}` in state.config)) return index;
  }
  return 0;
}

async function openEditor(key) {
  editor.key = key;
  editor.isNew = key === null;
  editor.base = {};
  editor.format = null;
  if (!state.pve && !state.storages.length) state.storages = (await call("GET", nodePath("/storage"))).data;
  buildEditorFields();
  clearErrors();
  const form = $("#disk-form");
  form.querySelector("#field-bus").disabled = !editor.isNew;
  form.querySelector("#field-index").disabled = !editor.isNew;
  form.querySelector("#field-storage").disabled = !editor.isNew;
  form.querySelector("#field-format").disabled = !editor.isNew;
  $("#row-volume").hidden = editor.isNew;
  $("#row-size").hidden = !editor.isNew;
  if (editor.isNew) {
    $("#field-bus").value = "scsi";
    $("#field-index").value = freeIndex("scsi");
    $("#field-format").value = "qcow2";
    fillStorages(state.storages.length ? state.storages[0].storage : "");
    fillFields({});
    $("#editor-title").textContent = "Add: Hard Disk";
  } else {
    const parts = driveKeyParts(key);
    $("#field-bus").value = parts.bus;
    $("#field-index").value = parts.index;
    const answer = await preview(key, state.pve ? state.settings[key] || "" : state.config[key]);
    editor.base = answer.data.values || {};
    fillStorages(storageOf(editor.base.file));
    $("#field-volume").value = editor.base.file || (state.pve ? "" : state.config[key]);
    $("#field-format").value = answer.data.format || "raw";
    fillFields(editor.base);
    $("#editor-title").textContent = `Hard Disk (${key})${state.pve ? ` of VM ${state.vmid}` : ""}`;
    showPreview(answer.data);
  }
  $("#pve-hint").hidden = !state.pve;
  const readOnly = state.pve && !state.mayChange;
  $("#readonly-hint").hidden = !readOnly;
  $("#readonly-hint").textContent = readOnly
    ? `Read-only: changing the qcow2 cache of VM ${state.vmid} needs VM.Config.Disk on /vms/${state.vmid}.` : "";
  $("#editor-ok").disabled = readOnly;
  $("#advanced").checked = false;
  $("#disk-form .advanced").hidden = true;
  $("#bandwidth-advanced").checked = Boolean(BURST_FIELDS.some(([name]) => editor.base[name]));
  $("#burst-fields").hidden = !$("#bandwidth-advanced").checked;
  selectTab("disk");
  updateEnabled();
  $("#disk-editor").showModal();
  if (editor.isNew) schedulePreview(0);
}

function selectTab(name) {
  for (const button of document.querySelectorAll(".tab-button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  $("#tab-disk").hidden = name !== "disk";
  $("#tab-bandwidth").hidden = name !== "bandwidth";
}

function currentKey() {
  return editor.isNew ? `${$("#field-bus").value}${$("#field-index").value.trim()}` : editor.key;
}

// A field's value as its key's text; null drops the key (empty, unchecked or disabled).
function fieldValue(field) {
  if (field.disabled) return null;
  if (field.type === "checkbox") {
    if (field.dataset.on !== undefined) return field.checked ? field.dataset.on : null;
    return field.checked ? null : field.dataset.off;
  }
  return field.value.trim() || null;
}

// The values of the form as a drive string: the drive's other keys (serial, wwn, ...) are
// kept as they were; a field left empty or unchecked drops its key.
function composeDrive() {
  const values = { ...editor.base };
  if (editor.isNew) {
    values.file = `${$("#field-storage").value}:${$("#field-size").value.trim()}`;
    values.format = $("#field-format").value;
  }
  for (const field of fieldsWithKeys()) {
    const value = fieldValue(field);
    if (value === null) delete values[field.dataset.key];
    else values[field.dataset.key] = value;
  }
  const file = values.file || "";
  delete values.file;
  const head = file.includes("=") ? `file=${file}` : file;
  return [head, ...Object.entries(values).map(([key, value]) => `${key}=${value}`)].join(",");
}

// The qcow2 cache section as a drive's settings on a Proxmox VE host (empty: none).
function composeSettings() {
  return [...document.querySelectorAll("#qcow2-cache [data-key]")]
    .map((field) => [field.dataset.key, fieldValue(field)])
    .filter(([, value]) => value !== null)
    .map(([key, value]) => `${key}=${value}`).join(",");
}

// The preview of what is being edited: a drive string, or on a Proxmox VE host its settings.
function preview(key, text) {
  return state.pve
    ? call("POST", vmPath("/qdisk/cache/preview"), { disk: key, settings: text })
    : call("POST", vmPath("/qcow2-cache/preview"), { disk: key, drive: text });
}

function updateEnabled() {
  const bus = editor.isNew ? $("#field-bus").value : driveKeyParts(editor.key).bus;
  for (const name of ["ssd", "iothread", "ro"]) {
    const field = $(`#field-${name}`);
    field.disabled = !BUS_KEYS[bus].includes(name);
    if (field.disabled) field.checked = false;
  }
  const format = editor.format;
  const qcow2 = format === "qcow2";
  $("#qcow2-cache").disabled = !qcow2 || (state.pve && !state.mayChange);
  $("#qcow2-cache").classList.toggle("off", !qcow2);
  $("#qcow2-hint").textContent = qcow2
    ? "Per qcow2 image: leave a field empty for QEMU's default."
    : `The volume is ${format || "not known yet"}: the qcow2 cache applies to qcow2 volumes only.`;
  const auto = $(`#field-${autoKey()}`).checked;
  for (const key of sizeKeys()) {
    $(`#field-${key}`).disabled = !qcow2 || auto;
  }
  // On a Proxmox VE host its own interface edits the rest of the disk.
  if (state.pve) {
    for (const field of fieldsWithKeys()) {
      if (!field.closest("#qcow2-cache")) field.disabled = true;
    }
  }
}

function clearErrors() {
  for (const element of document.querySelectorAll("#disk-form .field-error")) element.textContent = "";
}

// Errors by drive property, each under its field; those without a field under the form.
function showErrors(errors) {
  clearErrors();
  const general = [];
  for (const [name, message] of Object.entries(errors)) {
    const target = document.getElementById(`error-${name}`);
    if (target && target.closest("[hidden]") === null) target.textContent = message;
    else general.push(name === "drive" ? message : `${name}: ${message}`);
  }
  $("#error-drive").textContent = general.join("\n");
}

function schedulePreview(delay = 200) {
  clearTimeout(editor.timer);
  editor.timer = setTimeout(runPreview, delay);
}

async function runPreview() {
  const sequence = ++editor.sequence;
  const key = currentKey();
  try {
    const answer = await preview(key, state.pve ? composeSettings() : composeDrive());
    if (sequence === editor.sequence) showPreview(answer.data);
  } catch (failure) {
    if (sequence === editor.sequence) showErrors(failure.errors.disk ? { key: failure.errors.disk } : { drive: failure.message });
  }
}

function showPreview(preview) {
  if (preview.format) editor.format = preview.format;
  updateEnabled();
  showErrors(preview.errors);
  renderGauge(preview);
}

function layerName(layer) {
  const name = layer.filename.split("/").pop();
  return layer.depth === 0 ? name : `${name} (backing image ${layer.depth})`;
}

function coverageBar(percent) {
  const fill = h("div", { class: "fill", "data-coverage": percent });
  fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return h("div", { class: "bar" }, fill);
}

function gaugeRow(kind, label, view) {
  const row = h("div", { class: `gauge-row ${kind}`, "data-kind": kind });
  row.append(h("span", { class: "gauge-label" }, label));
  if (!view || view.error) {
    row.append(h("div", { class: "bar" }), h("span", { class: "gauge-text" },
      view ? `QEMU refuses: ${view.error}` : "—"));
    return row;
  }
  row.append(coverageBar(view["coverage-percent"]), h("span", { class: "gauge-text" },
    `covers ${formatBytes(view["l2-coverage"])} (${view["coverage-percent"]}%), memory ${formatBytes(view.memory)}`));
  return row;
}

// Per layer: the part of the disk the L2 cache covers now (the running VM's, else what the
// config gives) and with the edited values, and the memory each takes.
function renderGauge(preview) {
  const disk = state.cacheDisks.find((item) => item.key === editor.key);
  const nowLayers = disk && !editor.isNew ? disk.layers : [];
  const gauge = $("#gauge");
  if (!preview.layers.length && !nowLayers.length) {
    gauge.replaceChildren();
    return;
  }
  const layers = preview.layers.length ? preview.layers : nowLayers;
  gauge.replaceChildren(...layers.map((layer) => {
    const now = nowLayers.find((item) => item.filename === layer.filename);
    // On a Proxmox VE host the audit says what the disk has now.
    const nowView = !now ? null : state.pve ? now.now
      : state.running && now.applied ? now.applied : now.configured;
    const edited = preview.layers.find((item) => item.filename === layer.filename);
    return h("div", { class: "gauge-layer", "data-depth": layer.depth },
      h("div", { class: "gauge-head" },
        h("span", { class: "gauge-name" }, layerName(layer)),
        h("span", { class: "muted" }, `${formatBytes(layer["virtual-size"])} disk, ` +
          `${formatBytes(layer["cluster-size"])} clusters; QEMU's default covers ` +
          `${layer.default["coverage-percent"]}%, the size based on disk is ${formatBytes(layer.auto["cache-size"])}`)),
      editor.isNew ? null : gaugeRow("now", state.running ? "now (running)" : "now", nowView),
      gaugeRow("edited", "edited", Object.keys(preview.errors).length ? null : edited && edited.edited));
  }));
}

async function saveEditor(event) {
  event.preventDefault();
  const key = currentKey();
  try {
    await (state.pve ? saveSettings(key) : saveDrive(key));
  } catch (failure) {
    showSaveErrors(key, failure);
  }
}

async function saveDrive(key) {
  const answer = await call("PUT", vmPath("/config"), { [key]: composeDrive(), digest: state.digest });
  $("#disk-editor").close();
  const result = answer.result || {};
  const pending = (result.pending || []).includes(key);
  let text = `${key}: saved`;
  if (state.running) {
    text = pending ? `${key}: saved, pending until the next start (the VM runs; this change cannot be applied live)`
                   : `${key}: applied live to the running VM`;
  }
  const notes = [...(result.notes || []), ...(result.warnings || [])];
  showMessage(notes.length ? `${text}. ${notes.join("; ")}` : text, pending ? "pending" : "info");
  await openVm(state.vmid, { keepMessage: true });
}

// On a Proxmox VE host: the drive's settings replaced (none: removed), as `qdisk pve set`.
async function saveSettings(key) {
  const settings = composeSettings();
  const answer = await call("PUT", vmPath("/qdisk/cache"), settings ? { [key]: settings } : { delete: key });
  $("#disk-editor").close();
  const result = answer.result || {};
  const drive = (result.drives || {})[key];
  const stored = (result.stored || []).includes(key)
    ? `${key}: stored in ${result.file}` : `${key}: the stored settings are unchanged`;
  const lines = [...(drive ? drive.messages : []), ...(result.notes || []), ...(result.warnings || []), stored];
  showMessage(lines.join("\n"), drive && drive.outcome === "left" ? "pending" : "info");
  await loadAudit();
}

// A refused save: each problem under its field (`scsi0.qcow2-l2-cache-size: ...`), the
// others under the form.
function showSaveErrors(key, failure) {
  const errors = {};
  for (const [name, message] of Object.entries(failure.errors)) {
    if (name !== key) {
      errors[name === "digest" ? "drive" : name] = message;
      continue;
    }
    for (const line of message.split("\n")) {
      const match = new RegExp(`^${key}\\.([A-Za-z0-9_-]+): (.*)$`).exec(line);
      if (match) errors[match[1]] = match[2];
      else errors.drive = line;
    }
  }
  if (!Object.keys(errors).length) errors.drive = failure.message;
  showErrors(errors);
}

// --- a Proxmox VE host: the audit of the node's disks --------------------------------------

const CACHE_SOURCES = { default: "QEMU's default", settings: "its settings, from its next start",
                        applied: "its settings, applied", "not applied": "QEMU's default: its settings are not applied" };

async function loadAudit() {
  const answer = await call("GET", nodePath("/qdisk/audit"));
  const node = answer.data;
  $("#audit-table tbody").replaceChildren(...node.vms.flatMap(auditRows));
  // The node's totals come only with Sys.Audit on the node.
  $("#audit-total").textContent = node.memory === undefined
    ? `The node's totals need Sys.Audit on /nodes/${state.node}.`
    : `${formatBytes(node.memory)} now, ${formatBytes(node["auto-memory"])} to cover every disk whole`;
}

function auditRows(vm) {
  const head = h("td", { rowspan: Math.max(1, vm.disks.length) },
    h("div", {}, `${vm.vmid}${vm.name ? ` (${vm.name})` : ""}`),
    h("span", { class: `status ${vm.running ? "running" : "stopped"}` }, vm.running ? "running" : "not running here"),
    vm.lock ? h("div", { class: "pending" }, `locked (${vm.lock})`) : null,
    settingsState(vm["settings-state"]));
  if (vm.problem || !vm.disks.length) {
    return [h("tr", { class: "vm-first", "data-vmid": vm.vmid }, head,
      h("td", { colspan: 7, class: "muted" }, vm.problem || "no disks"))];
  }
  return vm.disks.map((disk, position) => {
    const qcow2 = disk.readable && disk.format === "qcow2";
    return h("tr", { class: position === 0 ? "vm-first" : "", "data-vmid": vm.vmid, "data-key": disk.key },
      position === 0 ? head : null,
      h("td", {}, disk.key),
      h("td", { class: "volume" }, disk.volume, h("div", { class: "muted" }, disk.format || "")),
      h("td", { class: "value" }, disk.settings || "—"),
      h("td", {}, CACHE_SOURCES[disk["cache-source"]] || disk["cache-source"],
        disk["settings-problem"] ? h("div", { class: "field-error" }, disk["settings-problem"]) : null),
      coverageCell(disk),
      h("td", {}, qcow2 ? `${formatBytes(disk.memory)} / ${formatBytes(disk["auto-memory"])}` : ""),
      h("td", { class: "actions" }, qcow2
        ? h("button", { type: "button", class: "small", onclick: () => openHostDisk(vm.vmid, disk.key) }, "Edit")
        : null));
  });
}

// Where the VM's settings stand in the cluster, from the node agents' records: applied,
// pending on a node, failing (and why), stopped (applied at its next start), or none.
function settingsState(settings) {
  if (!settings) return null;
  const where = settings.node ? ` on ${settings.node}` : "";
  return h("div", { class: "settings-state", "data-state": settings.state },
    h("span", { class: "state" }, `settings ${settings.state}${where}`),
    ...settings.reasons.map((reason) => h("div", { class: "reason" }, reason)));
}

// The disk's gauge: how much of it its top image's L2 cache covers (its backing images' after).
function coverageCell(disk) {
  if (!disk.readable) return h("td", { class: "muted" }, disk.reason);
  const layers = disk.layers.filter((layer) => layer["coverage-percent"] !== null);
  if (!layers.length) return h("td", { class: "muted" }, `${disk.format}: no qcow2 cache`);
  const below = layers.slice(1).map((layer) => `${layer["coverage-percent"]}%`);
  return h("td", { class: "coverage" }, coverageBar(layers[0]["coverage-percent"]),
    `${layers[0]["coverage-percent"]}%${below.length ? `; backing images ${below.join(", ")}` : ""}`);
}

async function openHostDisk(vmid, key) {
  state.vmid = vmid;
  const answer = await call("GET", vmPath("/qdisk/cache"));
  state.running = answer.data.running;
  state.cacheOptions = answer.data.options;
  state.cacheDisks = answer.data.disks;
  state.settings = answer.data.settings;
  state.mayChange = answer.data["may-change"];
  await openEditor(key);
}

// --- wiring -----------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#vm-start").addEventListener("click", () => lifecycle(state.vmid, "start"));
  $("#vm-stop").addEventListener("click", () => lifecycle(state.vmid, "stop"));
  $("#add-disk").addEventListener("click", () => openEditor(null));
  $("#disk-form").addEventListener("submit", saveEditor);
  $("#editor-cancel").addEventListener("click", () => $("#disk-editor").close());
  $("#disk-form").addEventListener("input", () => schedulePreview());
  $("#disk-form").addEventListener("change", (event) => {
    if (event.target.id === "advanced") $("#disk-form .advanced").hidden = !event.target.checked;
    if (event.target.id === "bandwidth-advanced") $("#burst-fields").hidden = !event.target.checked;
    if (event.target.id === "field-bus") $("#field-index").value = freeIndex(event.target.value);
    if (event.target.id === "field-format") editor.format = event.target.value;
    updateEnabled();
    schedulePreview(0);
  });
  for (const button of document.querySelectorAll(".tab-button")) {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
  }
}

async function start() {
  state.pve = document.body.dataset.mode === "pve";
  wire();
  try {
    const session = await call("GET", "/access/ticket");
    await startSession(session.data);
  } catch (failure) {
    // Without a ticket the page says where to log in; a refused one says why.
    showLogin(failure.status === 401 && (!state.pve || failure.message.startsWith("No ticket"))
      ? "" : failure.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
