// A form from an elicitation's requested schema (MCP's restricted JSON Schema: a flat object of
// strings, numbers, integers, booleans, single-select enums and multi-select arrays), and the
// answer's content read back from what the person entered, checked the way the gateway checks
// it (so that mistakes are shown next to the field before anything is sent).
// Plain TypeScript: unit-tested, used by the dashboard and the desktop's elicitation window.

export type Option = { value: string; label: string };

export type Field = {
  name: string;
  label: string;
  description?: string;
  required: boolean;
} & (
  | { kind: 'text'; format?: 'email' | 'uri' | 'date' | 'date-time'; minLength?: number; maxLength?: number; default?: string }
  | { kind: 'number'; integer: boolean; minimum?: number; maximum?: number; default?: number }
  | { kind: 'boolean'; default?: boolean }
  | { kind: 'select'; options: Option[]; default?: string }
  | { kind: 'multiselect'; options: Option[]; minItems?: number; maxItems?: number; default?: string[] }
);

/**
 * What the inputs hold: text, a number (a bound number input holds one, or null when empty),
 * a flag, a choice, or choices.
 */
export type Value = string | number | null | boolean | string[];
export type Values = Record<string, Value>;

type Schema = Record<string, unknown>;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The options of `oneOf`/`anyOf` (titled `const`s), or of a plain `enum` (with legacy `enumNames`). */
function options(s: Schema): Option[] | null {
  const titled = (s.oneOf ?? s.anyOf) as unknown;
  if (Array.isArray(titled)) {
    const out: Option[] = [];
    for (const o of titled) {
      const value = str((o as Schema)?.const);
      if (value === undefined) return null;
      out.push({ value, label: str((o as Schema).title) ?? value });
    }
    return out;
  }
  if (Array.isArray(s.enum)) {
    const names = Array.isArray(s.enumNames) ? (s.enumNames as unknown[]) : [];
    const out: Option[] = [];
    for (const [i, v] of s.enum.entries()) {
      if (typeof v !== 'string') return null;
      out.push({ value: v, label: str(names[i]) ?? v });
    }
    return out;
  }
  return null;
}

/** The form's fields in the schema's order; throws on a field a form cannot show. */
export function buildForm(schema: unknown): Field[] {
  const s = (schema ?? {}) as Schema;
  if (s.type !== 'object') throw new Error('the requested schema is not an object');
  const props = (s.properties ?? {}) as Record<string, Schema>;
  const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
  return Object.entries(props).map(([name, p]) => {
    const base = { name, label: str(p.title) ?? name, description: str(p.description), required: required.has(name) };
    switch (p.type) {
      case 'string': {
        const opts = options(p);
        if (opts) return { ...base, kind: 'select', options: opts, default: str(p.default) };
        if (p.enum !== undefined || p.oneOf !== undefined) throw new Error(`field ${name}: an enum needs string values`);
        const format = ['email', 'uri', 'date', 'date-time'].includes(p.format as string) ? (p.format as 'email') : undefined;
        return { ...base, kind: 'text', format, minLength: num(p.minLength), maxLength: num(p.maxLength), default: str(p.default) };
      }
      case 'number':
      case 'integer':
        return { ...base, kind: 'number', integer: p.type === 'integer', minimum: num(p.minimum), maximum: num(p.maximum), default: num(p.default) };
      case 'boolean':
        return { ...base, kind: 'boolean', default: typeof p.default === 'boolean' ? p.default : undefined };
      case 'array': {
        const opts = options((p.items ?? {}) as Schema);
        if (!opts) throw new Error(`field ${name}: an array must be a multi-select of string values`);
        const def = Array.isArray(p.default) ? (p.default as unknown[]).filter((v): v is string => typeof v === 'string') : undefined;
        return { ...base, kind: 'multiselect', options: opts, minItems: num(p.minItems), maxItems: num(p.maxItems), default: def };
      }
      default:
        throw new Error(`field ${name}: type ${JSON.stringify(p.type)} cannot be shown in a form`);
    }
  });
}

/** What the inputs start with: the schema's defaults, else empty. */
export function initialValues(fields: Field[]): Values {
  const v: Values = {};
  for (const f of fields) {
    switch (f.kind) {
      case 'text':
        v[f.name] = f.default ?? '';
        break;
      case 'number':
        v[f.name] = f.default === undefined ? '' : String(f.default);
        break;
      case 'boolean':
        v[f.name] = f.default ?? false;
        break;
      case 'select':
        v[f.name] = f.default ?? '';
        break;
      case 'multiselect':
        v[f.name] = [...(f.default ?? [])];
        break;
    }
  }
  return v;
}

const EMAIL = /^[^\s@]+@[^\s@.][^\s@]*\.[^\s@]*[^\s@.]$/;
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function validDate(s: string): boolean {
  if (!DATE.test(s)) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s;
}

/**
 * The answer's content from `values`, or the problem of each field that does not fit. An
 * empty optional field is left out; a boolean is always sent (a checkbox always has a value).
 */
export function collect(fields: Field[], values: Values): { content: Record<string, unknown> } | { errors: Record<string, string> } {
  const content: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const f of fields) {
    const v = values[f.name];
    const missing = () => {
      if (f.required) errors[f.name] = 'Required';
    };
    switch (f.kind) {
      case 'text': {
        const s = typeof v === 'string' ? v : '';
        if (s === '') {
          missing();
          break;
        }
        const len = [...s].length;
        if (f.minLength !== undefined && len < f.minLength) errors[f.name] = `At least ${f.minLength} characters`;
        else if (f.maxLength !== undefined && len > f.maxLength) errors[f.name] = `At most ${f.maxLength} characters`;
        else if (f.format === 'email' && !EMAIL.test(s)) errors[f.name] = 'An email address';
        else if (f.format === 'uri' && !URI.test(s)) errors[f.name] = 'A URI (scheme:…)';
        else if (f.format === 'date' && !validDate(s)) errors[f.name] = 'A date (YYYY-MM-DD)';
        else if (f.format === 'date-time' && (!DATE_TIME.test(s) || Number.isNaN(Date.parse(s)))) errors[f.name] = 'A date and time (RFC 3339)';
        else content[f.name] = s;
        break;
      }
      case 'number': {
        const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : '';
        if (s === '') {
          missing();
          break;
        }
        const n = Number(s);
        if (!Number.isFinite(n)) errors[f.name] = 'A number';
        else if (f.integer && !Number.isInteger(n)) errors[f.name] = 'A whole number';
        else if (f.minimum !== undefined && n < f.minimum) errors[f.name] = `At least ${f.minimum}`;
        else if (f.maximum !== undefined && n > f.maximum) errors[f.name] = `At most ${f.maximum}`;
        else content[f.name] = n;
        break;
      }
      case 'boolean':
        content[f.name] = v === true;
        break;
      case 'select': {
        const s = typeof v === 'string' ? v : '';
        if (s === '') missing();
        else if (!f.options.some((o) => o.value === s)) errors[f.name] = 'Choose one of the options';
        else content[f.name] = s;
        break;
      }
      case 'multiselect': {
        const list = Array.isArray(v) ? v.filter((x) => f.options.some((o) => o.value === x)) : [];
        if (list.length === 0) {
          missing();
          break;
        }
        if (f.minItems !== undefined && list.length < f.minItems) errors[f.name] = `Choose at least ${f.minItems}`;
        else if (f.maxItems !== undefined && list.length > f.maxItems) errors[f.name] = `Choose at most ${f.maxItems}`;
        else content[f.name] = list;
        break;
      }
    }
  }
  return Object.keys(errors).length ? { errors } : { content };
}
