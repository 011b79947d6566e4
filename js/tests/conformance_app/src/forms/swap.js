// A function declaration its own module later assigns to: importers of a
// real module see the new function.
export function greet() {
  return "old";
}
export function swap() {
  greet = () => "new";
}
