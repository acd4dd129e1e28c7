import { describe, expect, it } from 'vitest';
import { buildForm, collect, initialValues, type Values } from './elicitform';

const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', title: 'Your name', description: 'As on the badge', minLength: 2, maxLength: 5, default: 'Ada' },
    email: { type: 'string', format: 'email' },
    site: { type: 'string', format: 'uri' },
    born: { type: 'string', format: 'date' },
    at: { type: 'string', format: 'date-time' },
    age: { type: 'integer', minimum: 0, maximum: 150, default: 36 },
    score: { type: 'number', maximum: 1.5 },
    ok: { type: 'boolean', default: true },
    color: { type: 'string', enum: ['red', 'green'], enumNames: ['Red', 'Green'] },
    size: { type: 'string', oneOf: [{ const: 's', title: 'Small' }, { const: 'l', title: 'Large' }], default: 'l' },
    tags: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'string', enum: ['a', 'b', 'c'] }, default: ['a'] },
    pets: { type: 'array', items: { anyOf: [{ const: 'cat', title: 'Cat' }, { const: 'dog', title: 'Dog' }] } },
  },
  required: ['name', 'tags'],
};

describe('buildForm', () => {
  it('makes a field of every kind, in order, with titles, options and defaults', () => {
    const f = buildForm(schema);
    expect(f.map((x) => [x.name, x.kind])).toEqual([
      ['name', 'text'],
      ['email', 'text'],
      ['site', 'text'],
      ['born', 'text'],
      ['at', 'text'],
      ['age', 'number'],
      ['score', 'number'],
      ['ok', 'boolean'],
      ['color', 'select'],
      ['size', 'select'],
      ['tags', 'multiselect'],
      ['pets', 'multiselect'],
    ]);
    expect(f[0]).toMatchObject({ label: 'Your name', description: 'As on the badge', required: true, minLength: 2, maxLength: 5 });
    expect(f[1]).toMatchObject({ label: 'email', required: false, format: 'email' });
    expect(f[5]).toMatchObject({ integer: true, minimum: 0, maximum: 150 });
    expect(f[6]).toMatchObject({ integer: false, maximum: 1.5 });
    expect(f[8]).toMatchObject({ options: [{ value: 'red', label: 'Red' }, { value: 'green', label: 'Green' }] });
    expect(f[9]).toMatchObject({ options: [{ value: 's', label: 'Small' }, { value: 'l', label: 'Large' }] });
    expect(f[11]).toMatchObject({ options: [{ value: 'cat', label: 'Cat' }, { value: 'dog', label: 'Dog' }] });
    expect(initialValues(f)).toEqual({
      name: 'Ada', email: '', site: '', born: '', at: '', age: '36', score: '', ok: true, color: '', size: 'l', tags: ['a'], pets: [],
    });
  });

  it('refuses what a form cannot show', () => {
    expect(() => buildForm({ type: 'string' })).toThrow(/not an object/);
    expect(() => buildForm({ type: 'object', properties: { x: { type: 'object' } } })).toThrow(/x/);
    expect(() => buildForm({ type: 'object', properties: { x: { type: 'array', items: { type: 'number' } } } })).toThrow(/multi-select/);
    expect(() => buildForm({ type: 'object', properties: { x: { type: 'string', enum: [1, 2] } } })).toThrow(/string values/);
    expect(buildForm({ type: 'object' })).toEqual([]);
  });
});

describe('collect', () => {
  const fields = buildForm(schema);
  const filled = (over: Values): Values => ({ ...initialValues(fields), ...over });

  it('reads the content: numbers as numbers, empty optional fields left out, booleans always', () => {
    const got = collect(fields, filled({ email: 'a@b.io', site: 'https://x.y', born: '1815-12-10', at: '2026-01-01T10:00:00Z', score: '1.25', color: 'green', pets: ['dog'] }));
    expect(got).toEqual({
      content: { name: 'Ada', email: 'a@b.io', site: 'https://x.y', born: '1815-12-10', at: '2026-01-01T10:00:00Z', age: 36, score: 1.25, ok: true, color: 'green', size: 'l', tags: ['a'], pets: ['dog'] },
    });
    expect(collect(fields, filled({ age: '', ok: false }))).toEqual({ content: { name: 'Ada', ok: false, size: 'l', tags: ['a'] } });
    // a bound number input holds a number, or null when emptied
    expect(collect(fields, filled({ age: 7, score: null }))).toEqual({ content: { name: 'Ada', age: 7, ok: true, size: 'l', tags: ['a'] } });
  });

  it('names each field that does not fit', () => {
    const cases: [Values, string, RegExp][] = [
      [{ name: '' }, 'name', /Required/],
      [{ name: 'A' }, 'name', /At least 2/],
      [{ name: 'Adalovelace' }, 'name', /At most 5/],
      [{ email: 'nope' }, 'email', /email/],
      [{ site: 'not a uri' }, 'site', /URI/],
      [{ born: '1815-13-40' }, 'born', /date/],
      [{ at: 'tomorrow' }, 'at', /date and time/],
      [{ age: '36.5' }, 'age', /whole/],
      [{ age: '-1' }, 'age', /At least 0/],
      [{ age: 'old' }, 'age', /number/],
      [{ age: 7.5 }, 'age', /whole/],
      [{ score: '2' }, 'score', /At most 1.5/],
      [{ tags: [] }, 'tags', /Required/],
      [{ tags: ['a', 'b', 'c'] }, 'tags', /at most 2/],
      [{ color: 'blue' }, 'color', /options/],
    ];
    for (const [over, field, why] of cases) {
      const got = collect(fields, filled(over));
      expect('errors' in got, JSON.stringify(over)).toBe(true);
      if ('errors' in got) {
        expect(Object.keys(got.errors)).toEqual([field]);
        expect(got.errors[field]).toMatch(why);
      }
    }
  });
});
