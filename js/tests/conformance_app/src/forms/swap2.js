// Reassigned by destructuring only.
export function greet() {
  return "old";
}
export function swap() {
  [greet] = [() => "new"];
}
