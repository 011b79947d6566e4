// Records the order modules are evaluated in; fresh in every request.
const seen = [];
export function log(name) {
  if (name !== undefined) seen.push(name);
  return seen.slice();
}
