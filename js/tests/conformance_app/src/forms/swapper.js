import { greet, swap } from "./swap.js";

export function swapped() {
  const before = greet();
  swap();
  return { body: { before, after: greet() } };
}
