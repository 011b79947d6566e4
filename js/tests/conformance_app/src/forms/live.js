// Imports a `let` its exporter reassigns: a live binding, which the
// factory rewrite cannot give (V8 runs this graph as real modules).
import { counter, bump } from "./counter.js";

export function live() {
  bump();
  bump();
  return { body: { counter } };
}
