import { greet, swap } from "./swap2.js";

export function swapped() {
  const before = greet();
  swap();
  return { body: { before, after: greet() } };
}
