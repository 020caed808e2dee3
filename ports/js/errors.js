// The one error type the port throws for bad input (a port of tinydact/errors.py): a file, a
// checkpoint, an option, a text. classify.js prints its message as one line, `Error: ...`, and
// exits 1; any other exception is a bug in the port and keeps its stack trace.

export class TinydactError extends Error {
  constructor(message) {
    super(message);
    this.name = "TinydactError";
  }
}

/** A value as Python's repr shows it in tinydact's messages: strings in single quotes. */
export function repr(value) {
  return typeof value === "string" ? `'${value}'` : String(value);
}

/** `value` if it is one of `choices`, else the error tinydact/options.py's check_choice raises. */
export function checkChoice(value, choices, what) {
  if (!choices.includes(value)) throw new TinydactError(`${what} must be one of ${choices.join(", ")}, got ${repr(value)}`);
  return value;
}
