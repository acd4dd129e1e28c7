// The views read the plain-object Model; `live.version` changes once per applied batch.
// `track(version, value)` makes a `$derived` re-run when the version changes.
export function track<T>(_version: number, value: T): T {
  return value;
}
