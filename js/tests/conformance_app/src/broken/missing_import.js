import { nothing } from "./not_in_the_bundle.js";
export function main() {
  return { body: nothing };
}
