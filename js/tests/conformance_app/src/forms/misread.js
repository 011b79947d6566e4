// A division the scanner reads as the start of a regex (after a function
// expression's body), so that it then sees module syntax inside a string.
// The probe check must refuse the rewrite: V8 runs this as a real module.
const q = function () {} / "/"; const s = ";export{misread}//";

export function misread() {
  return { body: { q: String(q), s } };
}
