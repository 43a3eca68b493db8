// The submission form, built from GET /kinds: one field per property of the kind's params
// JSON Schema (numbers, dates, choices, switches, lists of ids), so a kind added on the
// server appears here without a change to the page.

import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";

export class SubmitForm {
  constructor(api, { onSubmitted }) {
    this.api = api;
    this.onSubmitted = onSubmitted;
    this.form = document.getElementById("submit-form");
    this.kindSelect = document.getElementById("submit-kind");
    this.params = document.getElementById("submit-params");
    this.help = document.getElementById("submit-kind-help");
    this.error = document.getElementById("submit-error");
    this.kinds = [];
    this.kindSelect.addEventListener("change", () => this.showKind());
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
  }

  async load() {
    this.kinds = (await this.api.kinds()).kinds;
    replace(this.kindSelect, this.kinds.map((kind) => h("option", { value: kind.name }, kind.name)));
    if (this.kinds.some((kind) => kind.name === "demo")) this.kindSelect.value = "demo";
    this.showKind();
    return this.kinds;
  }

  get kind() {
    return this.kinds.find((kind) => kind.name === this.kindSelect.value);
  }

  showKind() {
    const kind = this.kind;
    replace(this.error);
    if (!kind) return replace(this.params);
    replace(this.help, kind.description || "");
    const schema = resolve(kind.params_schema, kind.params_schema);
    const required = new Set(schema.required || []);
    replace(this.params, Object.entries(schema.properties || {}).map(
      ([name, property]) => field(kind.name, name, resolve(kind.params_schema, property), required.has(name)),
    ));
  }

  async submit() {
    replace(this.error);
    const kind = this.kind;
    if (!kind) return;
    const invalid = [...this.params.querySelectorAll("input, select, textarea")].find((input) => !input.checkValidity());
    if (invalid) {
      replace(this.error, `${invalid.labels[0]?.textContent || invalid.name}: ${invalid.validationMessage}`);
      invalid.focus();
      return;
    }
    const button = this.form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const job = await this.api.submit(kind.name, this.values());
      this.onSubmitted(job);
    } catch (error) {
      replace(this.error, error instanceof ApiError ? `${error.message}` : String(error));
    } finally {
      button.disabled = false;
    }
  }

  values() {
    const params = {};
    for (const input of this.params.querySelectorAll("[data-param]")) {
      const value = read(input);
      if (value !== undefined) params[input.dataset.param] = value;
    }
    return params;
  }
}

// msgspec's schemas put each Struct under $defs and point at it with $ref; nullable fields
// are anyOf [T, null].
function resolve(root, schema) {
  if (schema.$ref) return resolve(root, root.$defs[schema.$ref.split("/").pop()]);
  if (schema.anyOf) {
    const real = schema.anyOf.filter((option) => option.type !== "null");
    if (real.length === 1) return { ...resolve(root, real[0]), default: schema.default, nullable: true };
  }
  return schema;
}

function field(kindName, name, schema, required) {
  const id = `param-${kindName}-${name}`.replace(/[^A-Za-z0-9_-]/g, "-");
  const label = name.replace(/_/g, " ");
  const attrs = { id, name, dataset: { param: name, kind: schemaKind(schema) }, required };
  let input;
  if (schema.enum) {
    input = h("select", attrs, schema.enum.map((value) => h("option", { value, selected: value === schema.default }, value)));
  } else if (schema.type === "boolean") {
    input = h("input", { ...attrs, type: "checkbox", checked: schema.default === true, required: false });
    return h("div", { class: "field check" }, input, h("label", { for: id }, label));
  } else if (schema.type === "integer" || schema.type === "number") {
    input = h("input", {
      ...attrs, type: "number", inputmode: "numeric", min: schema.minimum, max: schema.maximum,
      step: schema.type === "integer" ? "1" : "any", value: schema.default ?? null,
      placeholder: schema.nullable ? "none" : null,
    });
  } else if (schema.type === "array") {
    input = h("textarea", { ...attrs, rows: "2", placeholder: "one per line" });
  } else {
    input = h("input", {
      ...attrs, type: schema.format === "date" ? "date" : "text", minlength: schema.minLength,
      maxlength: schema.maxLength, value: schema.default ?? (schema.format === "date" ? today(name) : null),
    });
  }
  return h("div", { class: "field" }, h("label", { for: id }, label, required ? " (required)" : ""), input);
}

function schemaKind(schema) {
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "array") return "list";
  return "string";
}

// Dates default to the last 30 days, so export.pdf submits as it comes.
function today(name) {
  const day = new Date();
  if (name.startsWith("start")) day.setDate(day.getDate() - 30);
  return day.toISOString().slice(0, 10);
}

function read(input) {
  switch (input.dataset.kind) {
    case "boolean": return input.checked;
    case "number": return input.value === "" ? undefined : Number(input.value);
    case "list": {
      const items = input.value.split(/[\s,]+/).filter(Boolean);
      return items.length ? items : undefined;
    }
    default: return input.value === "" ? undefined : input.value;
  }
}
