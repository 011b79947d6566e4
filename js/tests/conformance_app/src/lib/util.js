// Module-level state: must start from scratch in every request.
export let counter = 0;
export function bump() {
  counter += 1;
  return counter;
}
export function twice(x) {
  return x + x;
}
export function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}
